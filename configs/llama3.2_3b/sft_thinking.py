"""Llama-3.2-3B thinking SFT: loss on the `<think>` trace plus the solution (docs/PROTOCOL.md
§Interventions). ~43.5K math prompts with correct traces (< 8192 tokens), 3 epochs, lr 1.5e-5
cosine with 10% warmup, the llama3 chat template, batch 256 (the released config; the paper's
text says 16).

Base → SFT:  --config.init.from_hf=/path/to/Llama-3.2-3B
Data:        --config.data.files=/path/to/sft_traces.jsonl (problem / answer / thinking / solution)
CPT → SFT:   --config.init.from_hf='' --config.init.from_checkpoint=gs://BUCKET/runs/llama3b_cpt
"""
from ml_collections import ConfigDict

from rlvr_jax.config_utils import load_config_file


def get_config() -> ConfigDict:
  c = load_config_file(__file__, "../toy/sft.py")   # every field and its comment live there
  c.model.size = "llama-3.2-3b"        # named size; the HF config wins when init.from_hf is set
  c.model.dtype = "bfloat16"           # compute dtype
  c.model.remat = "full"               # rematerialise each layer (8K-token rows)
  c.model.attention = "auto"           # auto (cuDNN on an NVIDIA GPU in bf16) | xla | cudnn
  c.model.scan_unroll = 1              # layers per layer-scan iteration (>= num_layers: no loop, longer compile)
  c.mesh.data, c.mesh.fsdp = 1, -1     # FSDP over every device
  c.optim.lr = 1.5e-5                  # paper: 1.5e-5, tuned in [1e-5, 5e-5]
  c.optim.warmup = 0.1                 # paper: 10% warmup
  c.optim.final_lr_frac = 0.0          # cosine to 0
  c.optim.b2 = 0.999                   # Adam beta2
  c.steps = 510                        # updates: 3 epochs × 43.5K examples / 256
  c.batch_size = 256                   # global batch (examples; released config 256, paper 16)
  c.seq_len = 8192                     # padded example length (longer traces are dropped)
  c.microbatches = 4                   # gradient-accumulation microbatches per step
  c.log_every = 5                      # steps between metrics.jsonl records
  c.eval_every = 50                    # steps between held-out evaluations
  c.checkpoint_every = 100             # steps between checkpoints
  c.init.from_hf = "models/Llama-3.2-3B"  # HF directory of the base model ('' with from_checkpoint)
  c.data.domains = ""                  # no synthetic data: records come from data.files
  c.data.n_train, c.data.n_eval = 0, 0  # (synthetic problems per domain: unused)
  c.data.template = "llama3"           # the paper's llama3 chat template
  return c
