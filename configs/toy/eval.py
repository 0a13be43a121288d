"""Toy evaluation: avg@k / pass@k / maj@k / greedy accuracy of a checkpoint on the synthetic domains.

rlvr-jax eval --config=configs/toy/eval.py --workdir=/tmp/toy_eval --config.init.from_checkpoint=/tmp/toy_sft
rlvr-jax eval --config=configs/toy/eval.py --workdir=/tmp/hf_eval --config.init.from_hf=DIR --config.eval.template=chatml
"""
from ml_collections import ConfigDict


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0                           # PRNG seed of the samples

  c.init = ConfigDict()
  c.init.from_checkpoint = ""          # run dir or params dir to evaluate, PATH[:STEP] (latest step when omitted)
  c.init.from_hf = ""                  # HF directory to evaluate instead (set exactly one of the two)
  c.tokenizer = ""                     # tokenizer path ('' = the HF dir / the run's data.tokenizer / a tokenizer file in the run dir)

  c.model = ConfigDict()
  c.model.dtype = ""                   # compute dtype ('' = the checkpoint's; bfloat16 on accelerators)

  c.mesh = ConfigDict()
  c.mesh.data = -1                     # data-parallel axis (-1 = the remaining devices)
  c.mesh.fsdp = 1                      # parameter-sharded data-parallel axis
  c.mesh.tensor = 1                    # tensor-parallel axis (heads / mlp / vocab)

  c.eval = ConfigDict()
  c.eval.domains = "arith"             # comma-separated synthetic domains ('' = none; then eval.files)
  c.eval.splits = "eval,ood"           # comma-separated splits per domain: eval (in-domain levels), ood
  c.eval.n = 64                        # problems per synthetic eval set
  c.eval.seed = 0                      # seed of the synthetic problems
  c.eval.difficulty = 0                # level 1-5 of the in-domain eval sets (0 = 1-3; ood stays 4-5)
  c.eval.files = ""                    # comma-separated [NAME=]PATH of JSONL / Parquet problem files
  c.eval.layout = "auto"               # record layout of eval.files (auto | verl | gsm8k | math | qa)
  c.eval.limit = 0                     # records read per file (0 = all)
  c.eval.k = 16                        # samples per prompt (avg@k, maj@k)
  c.eval.ks = (1, 4, 8, 16)            # pass@k values reported (those <= k)
  c.eval.temperature = 1.0             # sampling temperature of the k samples
  c.eval.top_k = 0                     # top-k filter of the k samples (0 = off)
  c.eval.top_p = 1.0                   # nucleus filter of the k samples (1.0 = off)
  c.eval.max_new_tokens = 128          # response budget in tokens
  c.eval.batch_size = 16               # prompts per sampler call (rows = batch_size * k); divides over data×fsdp
  c.eval.greedy = True                 # also a temperature-0 pass (eval/<set>/greedy_acc)
  c.eval.template = "toy"              # chat template: toy | plain | llama3 | chatml
  c.eval.system_prompt = "default"     # system prompt ('default' = the paper's, '' = none)
  c.eval.prompt_suffix = ""            # text after the generation prompt (e.g. '<think>\n' for thinking models)
  c.eval.write_samples = True          # write per-sample JSONL under WORKDIR/eval/<tag>/
  c.eval.name = ""                     # output tag ('' = the checkpoint step, 'params' or 'hf')
  return c
