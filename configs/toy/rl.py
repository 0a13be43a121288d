"""Toy RL with true rewards (GRPO, binary boxed-answer reward) from a toy SFT checkpoint (CPU).

rlvr-jax rl --config=configs/toy/rl.py --workdir=/tmp/toy_rl --config.init.from_checkpoint=/tmp/toy_sft

The weak-supervision variants override this file: rl_scarce_n8.py (N = 8 problems),
rl_noisy_g05.py (γ = 0.5 label replacement), rl_majority.py (majority-vote proxy reward),
rl_self_certainty.py (self-certainty proxy reward).
"""
from ml_collections import ConfigDict, FieldReference
from ml_collections.config_dict import placeholder

from rlvr_jax.diagnostics.saturation import monitor_config_fields as saturation_fields
from rlvr_jax.run.guard import config_fields as guard_fields


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.stage = "rl"                       # recorded in config.json
  c.model = ConfigDict()
  c.model.size = "toy-1m"              # named size, used only without init.* (random init)
  c.model.vocab_size = 0               # 0 = the tokenizer's vocabulary size (random init only)
  c.model.max_seq_len = placeholder(int)  # None = the checkpoint's value
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
  c.optim.lr = 2e-4                    # learning rate (the paper: 1e-6; the toy model needs far more)
  c.optim.schedule = "constant"        # constant | warmup_cosine | warmup_linear
  c.optim.warmup = 0                   # warmup: fraction of updates if < 1, else updates
  c.optim.final_lr_frac = 0.0          # final lr as a fraction of the peak (decaying schedules)
  c.optim.b1 = 0.9                     # Adam beta1
  c.optim.b2 = 0.999                   # Adam beta2
  c.optim.eps = 1e-8                   # Adam epsilon
  c.optim.weight_decay = 0.01          # AdamW decay (matrices only)
  c.optim.clip_norm = 1.0              # global-norm gradient clipping (0 = off)

  c.steps = 24                         # RL steps (rollout + updates); the paper: 496
  c.batch_size = 8                     # prompts per step; divides over data×fsdp (the paper: 64)
  c.seed = 0                           # init / data-order / sampling seed
  c.log_every = 1                      # steps between metrics.jsonl records
  c.eval_every = 12                    # steps between held-out evaluations (0 = never)
  c.eval_at_end = True                 # also evaluate after the last step
  c.checkpoint_every = 12              # steps between checkpoints (0 = only at the end)
  c.keep_checkpoints = 2               # most recent checkpoints kept
  c.max_nonfinite_steps = 5            # stop after this many steps in a row with a skipped update
  c.progress_bar = True                # tqdm bar with reward and tokens/s
  c.resume_overrides = False           # resume with a changed config (recorded in config.json)
  c.guard = guard_fields()             # blow-up guard: guard.max_update_ratio, .loss_spike_nats, .window
  c.saturation = saturation_fields()   # online saturation monitor: epsilon, warmup, patience, tolerance, window, min_r_max

  c.init = ConfigDict()
  c.init.from_checkpoint = ""          # SFT / CPT run dir or params dir, PATH[:STEP]
  c.init.from_hf = ""                  # HF directory to start from instead

  c.rl = ConfigDict()
  c.rl.group_size = 8                  # G: samples per prompt trained on
  c.rl.vote_samples = 0                # V >= G samples per prompt for majority vote (0 = G)
  c.rl.max_new_tokens = 96             # response budget (the paper: 2048)
  c.rl.temperature = 1.0               # rollout temperature
  c.rl.top_k = 0                       # rollout top-k (0 = off)
  c.rl.top_p = 1.0                     # rollout nucleus (1.0 = off)
  c.rl.estimator = "grpo"              # grpo | dr_grpo | rloo | reinforce_pp
  c.rl.clip_low = 0.2                  # ratio clip 1 - clip_low
  c.rl.clip_high = 0.2                 # ratio clip 1 + clip_high
  c.rl.dual_clip = 3.0                 # dual clip bound for negative advantages (0 = off)
  c.rl.kl_coef = 0.001                 # KL-to-reference coefficient in the loss
  c.rl.kl_estimator = "k3"             # k1 | k2 | k3
  c.rl.agg = "token-mean"              # token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm
  c.rl.entropy_coef = 0.0              # entropy bonus
  c.rl.minibatches = 1                 # optimizer updates per rollout (per epoch)
  c.rl.epochs = 1                      # passes over the rollout
  c.rl.microbatches = 1                # gradient-accumulation chunks per minibatch
  c.rl.dynamic_sampling = "resample"   # none | mask (drop zero-reward-variance groups from the loss) | resample (refill them with new prompts)
  c.rl.resample_rounds = 3             # resample: at most this many extra prompt batches per step
  c.rl.stop_after_saturation = 0       # end the run this many steps after the training reward saturates (0 = never)
  c.rl.log_kl = True                   # compute policy/kl even when kl_coef is 0
  c.rl.old_logprobs = "sampler"        # PPO old log-probs: sampler | trainer (recomputed)
  c.rl.tis = "none"                    # truncated IS: none | token | sequence (needs trainer)
  c.rl.tis_cap = 2.0                   # TIS weight cap: min(pi_trainer_old / pi_sampler, tis_cap)
  c.rl.log_mismatch = True             # mismatch/* even at an extra forward (minibatches > 1)
  c.rl.cache_segments = 0              # decode over a growing KV cache (0 = auto; 1 = least memory)
  c.rl.fused_step = FieldReference("auto", field_type=object)  # auto (fused unless the host must act: host_verifier, resample, profile_phases) | True (one fused jit per step) | False (sample, score, update as three jits)
  c.rl.pack_update = False             # the update on the rows packed by their sampled lengths (no padding computed; the host reads the lengths between score and update, so phase mode)
  c.rl.profile_phases = False          # wait for each phase to log perf/sample_s, perf/reward_s, perf/update_s (stalls the host; phase mode only)

  c.reward = ConfigDict()
  c.reward.weights = ConfigDict()      # reward trained on: sum of weight * reward (0 = unused)
  c.reward.weights.boxed_answer_match = 1.0   # 1 when the last \\boxed{} equals the label
  c.reward.weights.format = 0.0               # <think>...</think> then a boxed answer
  c.reward.weights.majority_vote = 0.0        # match with the majority answer of the V votes
  c.reward.weights.self_certainty = 0.0       # mean token self-certainty of the rollout
  c.reward.weights.neg_entropy = 0.0          # minus the mean token entropy (RENT)
  c.reward.weights.seq_loglik = 0.0           # sequence log-likelihood
  c.reward.host_verifier = False       # boxed_answer_match checked on the host (math-verify) instead of token ids
  c.reward.noise = ""                  # '' | symmetric_flip | group_flip | asymmetric_flip | bernoulli
  c.reward.noise_p = 0.0               # flip rate of symmetric_flip / group_flip
  c.reward.noise_fp_rate = 0.0         # asymmetric_flip: 0 -> 1 rate
  c.reward.noise_fn_rate = 0.0         # asymmetric_flip: 1 -> 0 rate
  c.reward.noise_q = 0.5               # bernoulli: P(reward = 1)

  c.data = ConfigDict()
  c.data.domains = "arith"             # comma-separated synthetic domains of the training pool
  c.data.files = ""                    # comma-separated JSONL / Parquet problem files ('' = none)
  c.data.layout = "auto"               # record layout of data.files
  c.data.pool_limit = 0                # records read per data.files entry (0 = all)
  c.data.difficulty = 1                # synthetic level of the pool (0 = the split default, 1-3)
  c.data.n_pool = 256                  # synthetic problems per domain in the pool
  c.data.difficulty_filter = False     # keep problems the initial model solves 1..15 of 16 times
  c.data.filter_samples = 16           # samples per problem for the difficulty filter
  c.data.n_train = 0                   # N: stratified subset size (0 = the whole pool)
  c.data.label_noise = 0.0             # γ: fraction of prompts whose label is replaced
  c.data.label_noise_samples = 96      # samples per prompt to find the most frequent wrong answer
  c.data.protocol_seed = 0             # seed of the protocols (subset, γ selection, samples)
  c.data.protocol_batch_size = 16      # prompts per sampler call in the protocols
  c.data.max_prompt_len = 96           # prompt block width (longer prompts are dropped)
  c.data.max_answer_len = 16           # label width in tokens (longer labels are dropped)
  c.data.tokenizer = ""                # '' = the init run's tokenizer (or the built-in toy one)
  c.data.template = "toy"              # chat template: toy | plain | llama3 | chatml
  c.data.system_prompt = "default"     # system prompt ('default' = the paper's, '' = none)
  c.data.prompt_suffix = ""            # text after the generation prompt (e.g. '<think>\\n')

  c.eval = ConfigDict()
  c.eval.domains = "arith"             # held-out synthetic eval sets ('' = none)
  c.eval.splits = "eval"               # splits per domain: eval (in-domain), ood
  c.eval.n = 32                        # problems per eval set
  c.eval.seed = 0                      # seed of the eval problems
  c.eval.difficulty = 1                # level 1-5 of the in-domain eval sets (0 = 1-3; ood stays 4-5): the pool's level
  c.eval.files = ""                    # [NAME=]PATH problem files
  c.eval.layout = "auto"               # record layout of eval.files
  c.eval.limit = 0                     # records per file (0 = all)
  c.eval.k = 4                         # samples per prompt (avg@k); the paper: 16
  c.eval.ks = (1, 4)                   # pass@k values
  c.eval.temperature = 1.0             # sampling temperature of the k samples
  c.eval.top_k = 0                     # eval top-k (0 = off)
  c.eval.top_p = 1.0                   # eval nucleus (1.0 = off)
  c.eval.max_new_tokens = 96           # eval response budget
  c.eval.batch_size = 16               # prompts per sampler call
  c.eval.greedy = True                 # greedy accuracy too (the paper's validation)
  c.eval.template = "toy"              # chat template of the eval prompts
  c.eval.system_prompt = "default"     # eval system prompt
  c.eval.prompt_suffix = ""            # eval prompt suffix
  c.eval.write_samples = True          # per-sample rows under WORKDIR/eval/<step>/
  c.eval.name = ""                     # unused by rl (the step is the tag)
  return c
