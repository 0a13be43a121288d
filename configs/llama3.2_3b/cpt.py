"""Llama-3.2-3B continual pre-training on a domain corpus (docs/PROTOCOL.md §Interventions).

1 epoch, seq 2048, 128 sequences per batch, lr 2e-5 cosine with 5% warmup, AdamW weight decay
0.01, gradient clipping 1.0. For a TPU slice (e.g. v5p-32); bf16 compute, f32 master weights.

rlvr-jax cpt --config=configs/llama3.2_3b/cpt.py --workdir=gs://BUCKET/runs/llama3b_cpt \
    --config.init.from_hf=/path/to/Llama-3.2-3B --config.data.files=/path/to/corpus.jsonl
"""
from ml_collections import ConfigDict

from rlvr_jax.config_utils import load_config_file


def get_config() -> ConfigDict:
  c = load_config_file(__file__, "../toy/cpt.py")   # every field and its comment live there
  c.model.size = "llama-3.2-3b"        # named size; the HF config wins when init.from_hf is set
  c.model.dtype = "bfloat16"           # compute dtype
  c.model.remat = "full"               # rematerialise each layer (2048-token rows, batch 128)
  c.model.attention = "auto"           # auto (cuDNN on an NVIDIA GPU in bf16) | xla | cudnn
  c.model.scan_unroll = 1              # layers per layer-scan iteration (>= num_layers: no loop, longer compile)
  c.mesh.data, c.mesh.fsdp = 1, -1     # FSDP over every device
  c.optim.lr = 2e-5                    # paper: 2e-5 cosine
  c.optim.warmup = 0.05                # paper: 5% warmup
  c.optim.final_lr_frac = 0.0          # cosine to 0
  c.optim.b2 = 0.999                   # Adam beta2
  c.steps = 2000                       # updates: set to corpus tokens / (128·2048) for 1 epoch
  c.batch_size = 128                   # global batch (sequences; paper: 128)
  c.seq_len = 2048                     # tokens per packed sequence (paper: 2048)
  c.eval_every = 200                   # steps between held-out evaluations
  c.eval_batches = 8                   # held-out batches per evaluation
  c.checkpoint_every = 500             # steps between checkpoints
  c.init.from_hf = "models/Llama-3.2-3B"  # HF directory of meta-llama/Llama-3.2-3B (base)
  c.data.domains = ""                  # no synthetic data: the corpus comes from data.files
  c.data.n_train, c.data.n_eval = 0, 0  # (synthetic documents per domain: unused)
  return c
