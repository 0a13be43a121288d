"""Toy continual pre-training: a tiny Llama on packed documents of the synthetic domains (CPU).

rlvr-jax cpt --config=configs/toy/cpt.py --workdir=/tmp/toy_cpt [--config.steps=50 ...]
"""
from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder

from rlvr_jax.run.guard import config_fields as guard_fields


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.stage = "cpt"                      # cpt | sft (recorded in config.json; the loss is the same)
  c.model = ConfigDict()
  c.model.size = "toy-1m"              # named size (rlvr_jax/model/sizes.py)
  c.model.vocab_size = 0               # 0 = the tokenizer's vocabulary size
  c.model.hidden_size = placeholder(int)        # None = the size's value
  c.model.intermediate_size = placeholder(int)  # None = the size's value
  c.model.num_layers = placeholder(int)         # None = the size's value
  c.model.num_heads = placeholder(int)          # None = the size's value
  c.model.num_kv_heads = placeholder(int)       # None = the size's value
  c.model.head_dim = placeholder(int)           # None = the size's value
  c.model.max_seq_len = placeholder(int)        # None = the size's value
  c.model.dtype = "float32"            # compute dtype (bfloat16 on accelerators)
  c.model.param_dtype = "float32"      # master-weight dtype
  c.model.remat = "none"               # none | full | dots | dots_no_batch
  c.model.attention = "auto"           # auto (cuDNN on an NVIDIA GPU in bf16) | xla | cudnn
  c.model.scan_unroll = 4              # layers per layer-scan iteration; >= num_layers: no loop (~10% faster update on a CPU)

  c.mesh = ConfigDict()
  c.mesh.data = -1                     # data-parallel axis (-1 = the remaining devices)
  c.mesh.fsdp = 1                      # parameter-sharded data-parallel axis
  c.mesh.tensor = 1                    # tensor-parallel axis (heads / mlp / vocab)

  c.optim = ConfigDict()
  c.optim.lr = 3e-3                    # peak learning rate
  c.optim.schedule = "warmup_cosine"   # constant | warmup_cosine | warmup_linear
  c.optim.warmup = 0.05                # warmup: fraction of steps if < 1, else steps
  c.optim.final_lr_frac = 0.1          # final lr as a fraction of the peak
  c.optim.b1 = 0.9                     # Adam beta1
  c.optim.b2 = 0.95                    # Adam beta2
  c.optim.eps = 1e-8                   # Adam epsilon
  c.optim.weight_decay = 0.01          # AdamW decay (matrices only; not norms / biases)
  c.optim.clip_norm = 1.0              # global-norm gradient clipping (0 = off)

  c.steps = 200                        # optimizer updates
  c.batch_size = 16                    # global batch (sequences); divides over data×fsdp
  c.seq_len = 128                      # tokens per packed sequence
  c.microbatches = 1                   # gradient-accumulation microbatches per step
  c.z_loss = 0.0                       # z-loss coefficient on logsumexp² (0 = off)
  c.seed = 0                           # init / data-order seed
  c.log_every = 10                     # steps between metrics.jsonl records
  c.eval_every = 50                    # steps between held-out evaluations (0 = never)
  c.eval_batches = 4                   # held-out batches per evaluation
  c.checkpoint_every = 50              # steps between checkpoints (0 = only at the end)
  c.keep_checkpoints = 2               # most recent checkpoints kept
  c.keep_best = 1                      # best-by-eval/loss checkpoints kept besides (0 = none)
  c.max_nonfinite_steps = 10           # stop after this many skipped updates in a row (0 = never)
  c.progress_bar = True                # tqdm bar with loss and tokens/s
  c.resume_overrides = False           # resume with a changed config (recorded in config.json)
  c.guard = guard_fields()             # blow-up guard: guard.max_update_ratio, .loss_spike_nats, .window

  c.init = ConfigDict()
  c.init.from_hf = ""                  # HF directory to start from ('' = random init)
  c.init.from_checkpoint = ""          # run dir or params dir to start from, PATH[:STEP]

  c.data = ConfigDict()
  c.data.domains = "arith"             # comma-separated synthetic domains
  c.data.n_train = 20000               # training documents generated
  c.data.n_eval = 256                  # held-out documents
  c.data.files = ""                    # comma-separated text / JSONL `text` corpus files ('' = none)
  c.data.layout = "auto"               # record layout of data.files (sft: auto | verl | gsm8k | math | qa)
  c.data.tokenizer = ""                # tokenizer path ('' = init's tokenizer, else the built-in toy one)
  return c
