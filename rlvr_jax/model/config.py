"""Model configuration: one frozen dataclass for the Llama 3.x and Qwen2/2.5 decoder families."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax.numpy as jnp

FAMILIES = ("llama", "qwen2")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
# The full-sequence attention's kernel (jax.nn.dot_product_attention's `implementation`):
# "auto" = cuDNN's fused (flash) attention on an NVIDIA GPU in bf16/f16, else XLA's.
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn")
# The fields that shape the weights (a checkpoint's arrays); qkv_bias follows the family.
SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                "num_kv_heads", "head_dim", "tie_embeddings", "qkv_bias")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama 3 frequency scaling of RoPE (`rope_type: llama3` in HF configs)."""
  factor: float = 8.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture and numerics of a decoder-only transformer.

  `param_dtype` is the storage dtype of the weights (f32 master weights by default);
  `dtype` is the compute dtype of activations and matmuls (bf16 on accelerators).
  """
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  family: str = "llama"
  rope_theta: float = 500000.0
  rope_scaling: RopeScaling | None = None
  rms_norm_eps: float = 1e-5
  tie_embeddings: bool = False
  qkv_bias: bool = False
  max_seq_len: int = 2048
  param_dtype: str = "float32"
  dtype: str = "float32"
  remat: str = "none"
  attention: str = "auto"
  # Layers per iteration of the layer scan (nn.scan's `unroll`); >= num_layers: no loop at all.
  # Unrolled, XLA fuses across layers and does not zero-fill the stacked residuals first (on
  # XLA:CPU a 3-layer RL update ran about 10% faster); compile time grows with it.
  scan_unroll: int = 1
  bos_id: int | None = None
  eos_id: int | None = None
  pad_id: int | None = None
  init_std: float = 0.02

  def __post_init__(self):
    problems = []
    if self.family not in FAMILIES:
      problems.append(f"family={self.family!r} is not one of {FAMILIES}")
    if self.remat not in REMAT_POLICIES:
      problems.append(f"remat={self.remat!r} is not one of {REMAT_POLICIES}")
    if self.attention not in ATTENTION_IMPLEMENTATIONS:
      problems.append(f"attention={self.attention!r} is not one of {ATTENTION_IMPLEMENTATIONS}")
    if self.scan_unroll < 1:
      problems.append(f"scan_unroll={self.scan_unroll} must be >= 1 (layers per scan iteration)")
    if self.num_heads % self.num_kv_heads:
      problems.append(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim"):
      if getattr(self, name) <= 0:
        problems.append(f"{name}={getattr(self, name)} must be positive")
    if self.head_dim % 2:
      problems.append(f"head_dim={self.head_dim} must be even for RoPE")
    for name in ("param_dtype", "dtype"):
      try:
        jnp.dtype(getattr(self, name))
      except TypeError:
        problems.append(f"{name}={getattr(self, name)!r} is not a dtype")
    if problems:
      raise ValueError("Invalid ModelConfig: " + "; ".join(problems))

  @property
  def jnp_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def jnp_param_dtype(self):
    return jnp.dtype(self.param_dtype)

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  def num_params(self, include_embeddings: bool = True) -> int:
    d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
    q = d * self.num_heads * self.head_dim
    kv = 2 * d * self.num_kv_heads * self.head_dim
    o = self.num_heads * self.head_dim * d
    bias = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim if self.qkv_bias else 0
    per_layer = q + kv + o + bias + 3 * d * f + 2 * d
    total = self.num_layers * per_layer + d
    if include_embeddings:
      total += v * d * (1 if self.tie_embeddings else 2)
    return total

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), incl. attention scores."""
    n = self.num_params(include_embeddings=False) + (self.vocab_size * self.hidden_size)
    attn = 2 * self.num_layers * seq_len * self.num_heads * self.head_dim  # qk^T and pv, causal avg
    return 6 * n + 6 * attn

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
    d = dict(d)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"Unknown ModelConfig fields {unknown}; known fields: {sorted(known)}")
    if isinstance(d.get("rope_scaling"), dict):
      d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
    return cls(**d)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2)
