"""The built-in end-to-end job on CPU, no download: toy domains -> CPT -> SFT -> RL -> eval.

rlvr-jax pipeline --config=configs/toy/pipeline.py --workdir=runs/toy [--config.sft.steps=...]
Each stage's fields are those of its own config file (configs/toy/{cpt,sft,rl,eval}.py).
"""
from ml_collections import ConfigDict

from rlvr_jax.config_utils import load_config_file


def _load(name):
  return load_config_file(__file__, f"{name}.py")


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.stages = "cpt,sft,rl,eval"         # stages in order (cpt, sft, rl, eval); each resumes
  c.resume_overrides = False           # let every stage resume with a changed config
  domains = "arith"                    # synthetic domain trained and evaluated on
  c.cpt = _load("cpt")                 # continual pre-training (configs/toy/cpt.py)
  c.sft = _load("sft")                 # thinking SFT from cpt (configs/toy/sft.py)
  c.rl = _load("rl")                   # GRPO with true rewards from sft (configs/toy/rl.py)
  c.eval = _load("eval")               # evaluation of every trained stage (configs/toy/eval.py)
  c.cpt.data.domains = c.sft.data.domains = c.eval.eval.domains = domains
  c.rl.data.domains = c.rl.eval.domains = domains
  c.eval.eval.difficulty = c.rl.eval.difficulty  # in-domain eval at the RL pool's level (1)
  c.eval.eval.n = 64                   # problems per eval set
  c.eval.eval.k = 8                    # samples per problem (avg@8, pass@1/4/8)
  c.eval.eval.ks = (1, 4, 8)
  c.eval.eval.max_new_tokens = 96      # toy traces are < 80 tokens at the trained levels
  return c
