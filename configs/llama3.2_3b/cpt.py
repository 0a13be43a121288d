"""Llama-3.2-3B continual pre-training on a domain corpus (PROTOCOL.md §Interventions).

1 epoch, seq 2048, 128 sequences per batch, lr 2e-5 cosine with 5% warmup, AdamW weight decay
0.01, gradient clipping 1.0. For a TPU slice (e.g. v5p-32); bf16 compute, f32 master weights.

rlvr-jax cpt --config=configs/llama3.2_3b/cpt.py --workdir=gs://BUCKET/runs/llama3b_cpt \
    --config.init.from_hf=/path/to/Llama-3.2-3B --config.data.train=/path/to/corpus.jsonl
"""
from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.stage = "cpt"                      # cpt | sft (recorded in config.json; the loss is the same)
  c.model = ConfigDict()
  c.model.size = "llama-3.2-3b"        # named size; the HF directory's config.json wins when set
  c.model.vocab_size = 0               # 0 = from the HF config / size
  c.model.max_seq_len = placeholder(int)  # None = the model's value
  c.model.dtype = "bfloat16"           # compute dtype
  c.model.param_dtype = "float32"      # master-weight dtype
  c.model.remat = "full"               # none | full | dots | dots_no_batch (activation memory)

  c.mesh = ConfigDict()
  c.mesh.data = 1                      # data-parallel axis
  c.mesh.fsdp = -1                     # parameter-sharded data-parallel axis (-1 = all devices)
  c.mesh.tensor = 1                    # tensor-parallel axis (heads / mlp / vocab)

  c.optim = ConfigDict()
  c.optim.lr = 2e-5                    # peak learning rate (paper: 2e-5)
  c.optim.schedule = "warmup_cosine"   # constant | warmup_cosine | warmup_linear
  c.optim.warmup = 0.05                # warmup: fraction of steps if < 1, else steps (paper: 5%)
  c.optim.final_lr_frac = 0.0          # final lr as a fraction of the peak (cosine to 0)
  c.optim.b1 = 0.9                     # Adam beta1
  c.optim.b2 = 0.999                   # Adam beta2
  c.optim.eps = 1e-8                   # Adam epsilon
  c.optim.weight_decay = 0.01          # AdamW decay (matrices only; not norms / biases)
  c.optim.clip_norm = 1.0              # global-norm gradient clipping (paper: 1.0)

  c.steps = 2000                       # updates: set to corpus tokens / (128·2048) for 1 epoch
  c.batch_size = 128                   # global batch (sequences; paper: 128)
  c.seq_len = 2048                     # tokens per packed sequence (paper: 2048)
  c.microbatches = 1                   # gradient-accumulation microbatches per step
  c.z_loss = 0.0                       # z-loss coefficient on logsumexp² (0 = off)
  c.seed = 0                           # data-order seed
  c.log_every = 10                     # steps between metrics.jsonl records
  c.eval_every = 200                   # steps between held-out evaluations (0 = never)
  c.eval_batches = 8                   # held-out batches per evaluation
  c.checkpoint_every = 500             # steps between checkpoints (0 = only at the end)
  c.keep_checkpoints = 2               # most recent checkpoints kept
  c.keep_best = 1                      # best-by-eval/loss checkpoints kept besides (0 = none)
  c.max_nonfinite_steps = 10           # stop after this many skipped updates in a row (0 = never)
  c.progress_bar = True                # tqdm bar with loss and tokens/s

  c.init = ConfigDict()
  c.init.from_hf = "models/Llama-3.2-3B"  # HF directory of meta-llama/Llama-3.2-3B (base)
  c.init.from_checkpoint = ""          # run dir or params dir to start from, PATH[:STEP]

  c.data = ConfigDict()
  c.data.domains = ""                  # synthetic domains ('' = use data.train)
  c.data.train = ""                    # domain corpus (JSONL / Parquet / ArrayRecord of text)
  c.data.eval = ""                     # held-out corpus ('' = none)
  c.data.n_train = 0                   # documents used (0 = all)
  c.data.n_eval = 0                    # held-out documents (0 = all)
  c.data.num_epochs = 1                # passes over the corpus (paper: 1)
  c.data.tokenizer = ""                # tokenizer path ('' = the HF directory's tokenizer)
  return c
