"""Named model sizes: toy sizes for CPU and the real architectures of docs/PROTOCOL.md.

`get_model_config("toy-10m", vocab_size=..., ...)` returns a ModelConfig; keyword overrides replace
fields (e.g. the vocab size of the tokenizer a toy model is trained with).
"""
from __future__ import annotations

from rlvr_jax.model.config import ModelConfig, RopeScaling

_LLAMA = dict(family="llama", rms_norm_eps=1e-5, rope_theta=500000.0, qkv_bias=False)
_QWEN = dict(family="qwen2", rms_norm_eps=1e-6, rope_theta=1000000.0, qkv_bias=True)

SIZES: dict[str, dict] = {
    # ---- toy sizes: Llama architecture, run on CPU -----------------------------------------
    "toy-1m": dict(_LLAMA, vocab_size=2048, hidden_size=128, intermediate_size=384, num_layers=4,
                   num_heads=4, num_kv_heads=2, head_dim=32, rope_theta=10000.0, max_seq_len=1024,
                   tie_embeddings=False),
    "toy-7m": dict(_LLAMA, vocab_size=8192, hidden_size=256, intermediate_size=768, num_layers=4,
                   num_heads=8, num_kv_heads=4, head_dim=32, rope_theta=10000.0, max_seq_len=2048),
    "toy-10m": dict(_LLAMA, vocab_size=8192, hidden_size=256, intermediate_size=768, num_layers=8,
                    num_heads=8, num_kv_heads=4, head_dim=32, rope_theta=10000.0, max_seq_len=2048),
    "toy-50m": dict(_LLAMA, vocab_size=8192, hidden_size=512, intermediate_size=2048, num_layers=12,
                    num_heads=8, num_kv_heads=4, head_dim=64, rope_theta=10000.0, max_seq_len=2048),
    # ---- Llama 3.x ---------------------------------------------------------------------------
    "llama-3.2-1b": dict(_LLAMA, vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                         num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64,
                         rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192), tie_embeddings=True,
                         max_seq_len=131072, bos_id=128000, eos_id=128001),
    "llama-3.2-3b": dict(_LLAMA, vocab_size=128256, hidden_size=3072, intermediate_size=8192,
                         num_layers=28, num_heads=24, num_kv_heads=8, head_dim=128,
                         rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192), tie_embeddings=True,
                         max_seq_len=131072, bos_id=128000, eos_id=128001),
    "llama-3.1-8b": dict(_LLAMA, vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                         num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128,
                         rope_scaling=RopeScaling(8.0, 1.0, 4.0, 8192), tie_embeddings=False,
                         max_seq_len=131072, bos_id=128000, eos_id=128001),
    # ---- Qwen2.5 -----------------------------------------------------------------------------
    "qwen2.5-0.5b": dict(_QWEN, vocab_size=151936, hidden_size=896, intermediate_size=4864,
                         num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64,
                         tie_embeddings=True, max_seq_len=32768, eos_id=151643),
    "qwen2.5-1.5b": dict(_QWEN, vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                         num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128,
                         tie_embeddings=True, max_seq_len=131072, eos_id=151643),
    "qwen2.5-3b": dict(_QWEN, vocab_size=151936, hidden_size=2048, intermediate_size=11008,
                       num_layers=36, num_heads=16, num_kv_heads=2, head_dim=128,
                       tie_embeddings=True, max_seq_len=32768, eos_id=151643),
    "qwen2.5-7b": dict(_QWEN, vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                       num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
                       tie_embeddings=False, max_seq_len=131072, eos_id=151643),
    "qwen2.5-math-1.5b": dict(_QWEN, vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                              num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128,
                              rope_theta=10000.0, tie_embeddings=True, max_seq_len=4096,
                              eos_id=151643),
    "qwen2.5-math-7b": dict(_QWEN, vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                            num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
                            rope_theta=10000.0, tie_embeddings=False, max_seq_len=4096,
                            eos_id=151643),
}


def get_model_config(name: str, **overrides) -> ModelConfig:
  if name not in SIZES:
    raise ValueError(f"Unknown model size {name!r}; choose one of {sorted(SIZES)}")
  fields = dict(SIZES[name])
  fields.update({k: v for k, v in overrides.items() if v is not None})
  return ModelConfig(**fields)
