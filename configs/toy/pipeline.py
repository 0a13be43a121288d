"""The built-in end-to-end job on CPU, no download: toy domains -> CPT -> SFT -> RL -> eval.

rlvr-jax pipeline --config=configs/toy/pipeline.py --workdir=runs/toy [--config.sft.steps=...]
Each stage's fields are those of its own config file (configs/toy/{cpt,sft,rl,eval}.py).
"""
import importlib.util
import os

from ml_collections import ConfigDict

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name):
  spec = importlib.util.spec_from_file_location(f"_toy_{name}_config", os.path.join(_HERE, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.stages = "cpt,sft,rl,eval"         # stages in order (cpt, sft, rl, eval); each resumes
  domains = "arith"                    # synthetic domain trained and evaluated on
  c.cpt = _load("cpt")                 # continual pre-training (configs/toy/cpt.py)
  c.sft = _load("sft")                 # thinking SFT from cpt (configs/toy/sft.py)
  c.rl = _load("rl") if os.path.exists(os.path.join(_HERE, "rl.py")) else ConfigDict()  # RL from sft
  c.eval = _load("eval")               # evaluation of every trained stage (configs/toy/eval.py)
  c.cpt.data.domains = c.sft.data.domains = c.eval.eval.domains = domains
  if "data" in c.rl:
    c.rl.data.domains = c.rl.eval.domains = domains
  c.eval.eval.n = 64                   # problems per eval set
  c.eval.eval.k = 8                    # samples per problem (avg@8, pass@1/4/8)
  c.eval.eval.ks = (1, 4, 8)
  c.eval.eval.max_new_tokens = 96      # toy traces are < 80 tokens at the trained levels
  return c
