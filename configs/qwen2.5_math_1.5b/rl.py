"""Qwen2.5-Math-1.5B, RLVR with true rewards: the paper's recipe (docs/PROTOCOL.md §RL recipe).

GRPO, 64 prompts x 8 samples per step, one update per step, lr 1e-6 constant, AdamW wd 0.01,
clip 1.0, PPO clip 0.2 with dual clip 3.0, KL 0.001 (k3) to the initial model, no entropy
bonus, T = 1, responses up to 2048 tokens, 496 steps, validation (greedy) every 25 steps,
checkpoints every 50. Training problems: the model-aware difficulty filter (16 samples, keep
1..15 solved) and a stratified subset of N = 2048 (rl_n8.py: N = 8).

rlvr-jax rl --config=configs/qwen2.5_math_1.5b/rl.py --workdir=gs://.../qwen_math_rl \
  --config.init.from_hf=/path/to/Qwen2.5-Math-1.5B \
  --config.data.files=/path/to/skywork_or1_math.parquet \
  --config.eval.files=math500=/path/to/math500.jsonl,amc=/path/to/amc.jsonl
"""
from rlvr_jax.config_utils import load_config_file



def get_config():
  c = load_config_file(__file__, "../toy/rl.py")
  c.model.size = "qwen2.5-math-1.5b"   # named size (the HF directory's config wins)
  c.model.dtype = "bfloat16"           # compute dtype
  c.model.param_dtype = "float32"      # master weights
  c.model.remat = "full"               # rematerialise each layer in the backward pass
  c.model.attention = "auto"           # auto (cuDNN on an NVIDIA GPU in bf16) | xla | cudnn
  c.model.scan_unroll = 1              # layers per layer-scan iteration (>= num_layers: no loop, longer compile)
  c.mesh.data = 1                      # data-parallel axis
  c.mesh.fsdp = -1                     # shard params / optimizer state over every device

  c.optim.lr = 1e-6                    # constant learning rate
  c.optim.schedule = "constant"        # no warmup, no decay
  c.optim.b2 = 0.999                   # Adam beta2 (verl default)
  c.optim.weight_decay = 0.01          # AdamW decay
  c.optim.clip_norm = 1.0              # gradient clipping

  c.steps = 496                        # updates per run
  c.batch_size = 64                    # prompts per step
  c.eval_every = 25                    # greedy validation every 25 steps
  c.checkpoint_every = 50              # checkpoints every 50 steps
  c.keep_checkpoints = 11              # keep them all (saturation analysis reloads them)
  c.log_every = 1                      # every step

  c.rl.group_size = 8                  # samples per prompt
  c.rl.max_new_tokens = 2048           # response budget
  c.rl.temperature = 1.0               # rollout temperature, top-p 1
  c.rl.estimator = "grpo"              # (r - mean) / (std + 1e-6), unbiased std
  c.rl.clip_low = 0.2                  # PPO clip
  c.rl.clip_high = 0.2                 # PPO clip
  c.rl.dual_clip = 3.0                 # dual clip for negative advantages
  c.rl.kl_coef = 0.001                 # KL loss to the initial model
  c.rl.kl_estimator = "k3"             # low-variance KL estimator
  c.rl.agg = "token-mean"              # the released code (the paper text: seq-mean-token-mean)
  c.rl.entropy_coef = 0.0              # no entropy bonus
  c.rl.minibatches = 1                 # one update per step
  c.rl.microbatches = 64               # 8 rollout rows per forward/backward (memory)
  c.rl.dynamic_sampling = "none"       # the paper trains on every group (the toy config resamples)
  c.rl.old_logprobs = "sampler"        # the paper's; trainer + tis=token fixes bf16 drift
  c.rl.tis = "none"                    # truncated IS: none | token | sequence (needs trainer)
  c.rl.tis_cap = 2.0                   # TIS weight cap (verl / Yao et al. 2025: 2.0)
  c.rl.log_mismatch = True             # mismatch/* every step (free here: minibatches = 1)
  c.rl.cache_segments = 0              # decode over a growing KV cache (0 = auto; 1 = least memory)

  c.reward.weights.boxed_answer_match = 1.0   # binary verifier reward, no format reward
  c.reward.host_verifier = True        # math-verify equivalence on decoded text (BPE-safe)

  c.data.domains = ""                  # real data only
  c.data.files = ""                    # Skywork-OR1 math problems (JSONL / Parquet), required
  c.data.layout = "auto"               # verl parquet / MATH / GSM8K / problem-answer JSONL
  c.data.difficulty_filter = True      # sample 16, keep problems solved 1..15 times
  c.data.filter_samples = 16           # samples per problem for the filter
  c.data.n_train = 2048                # N: stratified subset
  c.data.protocol_batch_size = 64      # prompts per sampler call in the protocols
  c.data.max_prompt_len = 2048         # max prompt tokens
  c.data.max_answer_len = 32           # label tokens (longer labels are dropped)
  c.data.template = "chatml"           # Qwen chat format
  c.data.system_prompt = "default"     # "Please reason step by step, and put your final answer within \\boxed{}."

  c.eval.domains = ""                  # real held-out sets via eval.files
  c.eval.files = ""                    # e.g. math500=PATH,amc=PATH,aime24=PATH
  c.eval.k = 4                         # samples per prompt during training (avg@16 at the end: rlvr-jax eval)
  c.eval.ks = (1, 4)                   # pass@k values
  c.eval.max_new_tokens = 2048         # response budget
  c.eval.batch_size = 64               # prompts per sampler call
  c.eval.greedy = True                 # greedy validation accuracy
  c.eval.template = "chatml"           # Qwen chat format
  return c
