"""Llama-3.2-3B thinking SFT: loss on the `<think>` trace plus the solution (PROTOCOL.md
§Interventions). ~43.5K math prompts with correct traces (< 8192 tokens), 3 epochs, lr 1.5e-5
cosine with 10% warmup, the llama3 chat template, batch 256 (the released config; the paper's
text says 16).

Base → SFT:  --config.init.from_hf=/path/to/Llama-3.2-3B
CPT → SFT:   --config.init.from_hf='' --config.init.from_checkpoint=gs://BUCKET/runs/llama3b_cpt
"""
from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.stage = "sft"                      # cpt | sft (recorded in config.json; the loss is the same)
  c.model = ConfigDict()
  c.model.size = "llama-3.2-3b"        # named size; the init source's config wins when set
  c.model.vocab_size = 0               # 0 = from the HF config / size
  c.model.max_seq_len = placeholder(int)  # None = the model's value
  c.model.dtype = "bfloat16"           # compute dtype
  c.model.param_dtype = "float32"      # master-weight dtype
  c.model.remat = "full"               # none | full | dots | dots_no_batch (8K-token rows)

  c.mesh = ConfigDict()
  c.mesh.data = 1                      # data-parallel axis
  c.mesh.fsdp = -1                     # parameter-sharded data-parallel axis (-1 = all devices)
  c.mesh.tensor = 1                    # tensor-parallel axis (heads / mlp / vocab)

  c.optim = ConfigDict()
  c.optim.lr = 1.5e-5                  # peak learning rate (paper: 1.5e-5, tuned in [1e-5, 5e-5])
  c.optim.schedule = "warmup_cosine"   # constant | warmup_cosine | warmup_linear
  c.optim.warmup = 0.1                 # warmup: fraction of steps if < 1, else steps (paper: 10%)
  c.optim.final_lr_frac = 0.0          # final lr as a fraction of the peak (cosine to 0)
  c.optim.b1 = 0.9                     # Adam beta1
  c.optim.b2 = 0.999                   # Adam beta2
  c.optim.eps = 1e-8                   # Adam epsilon
  c.optim.weight_decay = 0.01          # AdamW decay (matrices only; not norms / biases)
  c.optim.clip_norm = 1.0              # global-norm gradient clipping

  c.steps = 510                        # updates: 3 epochs × 43.5K examples / 256
  c.batch_size = 256                   # global batch (examples; released config 256, paper 16)
  c.seq_len = 8192                     # padded example length (traces < 8192 tokens)
  c.microbatches = 4                   # gradient-accumulation microbatches per step
  c.z_loss = 0.0                       # z-loss coefficient on logsumexp² (0 = off)
  c.seed = 0                           # data-order seed
  c.log_every = 5                      # steps between metrics.jsonl records
  c.eval_every = 50                    # steps between held-out evaluations (0 = never)
  c.eval_batches = 4                   # held-out batches per evaluation
  c.checkpoint_every = 100             # steps between checkpoints (0 = only at the end)
  c.keep_checkpoints = 2               # most recent checkpoints kept
  c.keep_best = 1                      # best-by-eval/loss checkpoints kept besides (0 = none)
  c.max_nonfinite_steps = 10           # stop after this many skipped updates in a row (0 = never)
  c.progress_bar = True                # tqdm bar with loss and tokens/s

  c.init = ConfigDict()
  c.init.from_hf = "models/Llama-3.2-3B"  # HF directory of the base model ('' with from_checkpoint)
  c.init.from_checkpoint = ""          # CPT run dir (or params dir) to start from, PATH[:STEP]

  c.data = ConfigDict()
  c.data.domains = ""                  # synthetic domains ('' = use data.train)
  c.data.train = ""                    # SFT records with reasoning traces (JSONL / Parquet)
  c.data.eval = ""                     # held-out records ('' = none)
  c.data.n_train = 0                   # records used (0 = all, ~43.5K)
  c.data.n_eval = 256                  # held-out records
  c.data.num_epochs = 3                # passes over the records (paper: 3)
  c.data.thinking = True               # train on <think>trace</think> + solution
  c.data.template = "llama3"           # chat template
  c.data.max_trace_tokens = 8192       # drop examples longer than this
  c.data.tokenizer = ""                # tokenizer path ('' = the HF directory's tokenizer)
  return c
