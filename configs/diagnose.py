"""`rlvr-jax diagnose`: the paper's diagnostics of a model or a run (CPU toy defaults).

Saturation dynamics of a run (reads RUN/metrics.jsonl; writes OUT/saturation.json + .png;
with --config.large_run=LARGER_N_RUN also the large-small gap G):
  rlvr-jax diagnose --config=configs/diagnose.py --workdir=OUT --config.run=RUN_DIR
Faithfulness (programmatic, judge, interventions) and diversity of a checkpoint's rollouts
(P prompts x K rollouts; writes OUT/diagnose.json + OUT/diagnose.md):
  rlvr-jax diagnose --config=configs/diagnose.py --workdir=OUT --config.init.from_checkpoint=RUN
The paper's sizes: --config.n_prompts=8 --config.k=16.
"""
from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.run = ""                           # run directory to analyse for saturation dynamics ('' = none)
  c.large_run = ""                     # a larger-N run of the same setting: the gap G at run's t_sat ('' = none)
  c.seed = 0                           # sampling / bootstrap seed

  c.saturation = ConfigDict()
  c.saturation.epsilon = 0.99          # t_sat: first t <= T - margin with r_t >= epsilon * r_max
  c.saturation.margin = 50             # steps at the end that cannot be t_sat (the paper: 50)
  c.saturation.window = placeholder(int)  # moving-average window of the reward (None = raw, as the paper)
  c.saturation.r_max_over = "all"      # r_max over "all" steps (the paper) or "pre_margin"
  c.saturation.reward_key = "reward/mean"  # the training reward's metrics.jsonl key

  c.init = ConfigDict()
  c.init.from_checkpoint = ""          # run dir or params dir to diagnose, PATH[:STEP]
  c.init.from_hf = ""                  # HF directory to diagnose instead
  c.tokenizer = ""                     # tokenizer path ('' = the HF dir's / the run's)

  c.model = ConfigDict()
  c.model.dtype = ""                   # compute dtype ('' = the checkpoint's)

  c.mesh = ConfigDict()
  c.mesh.data = -1                     # data-parallel axis (-1 = the remaining devices)
  c.mesh.fsdp = 1                      # parameter-sharded data-parallel axis
  c.mesh.tensor = 1                    # tensor-parallel axis

  c.data = ConfigDict()
  c.data.domains = "arith"             # synthetic domains of the prompts ('' = data.files only)
  c.data.split = "eval"                # split of the synthetic prompts: train | eval | ood
  c.data.difficulty = 1                # synthetic level 1-5 (0 = the split's default levels)
  c.data.files = ""                    # comma-separated JSONL / Parquet problem files
  c.data.layout = "auto"               # record layout of data.files
  c.n_prompts = 4                      # P prompts (the paper: 8), spread over the domains / files
  c.k = 8                              # K rollouts per prompt (the paper: 16)
  c.temperature = 1.0                  # rollout temperature (the paper: 1.0)
  c.max_new_tokens = 96                # response budget
  c.batch_size = 16                    # rows per sampler call
  c.template = "toy"                   # chat template: toy | plain | llama3 | chatml
  c.system_prompt = "default"          # system prompt ('default' = the paper's, '' = none)

  c.programmatic = True                # exact faithfulness labels on synthetic-domain prompts
  c.interventions = True               # early answering and mistake injection (greedy probes)
  c.interventions_max = 32             # responses probed (the first ones with a final answer)

  c.judge = ConfigDict()
  c.judge.backend = ""                 # '' (none) | local | http
  c.judge.path = ""                    # local: HF dir or run dir of the judge model
  c.judge.template = "chatml"          # local: the judge's chat template
  c.judge.max_new_tokens = 256         # local / http: judge response budget
  c.judge.base_url = ""                # http: OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1
  c.judge.model = ""                   # http: model name sent to the endpoint
  c.judge.api_key_env = ""             # http: environment variable holding the API key ('' = none)
  c.judge.timeout_s = 30.0             # http: per-request timeout
  c.judge.max_retries = 3              # http: retries of a failed request
  c.judge.diversity = False            # use the judge (not the step signature) for same-strategy
  return c
