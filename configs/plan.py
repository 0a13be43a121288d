"""Plan another config: memory per device, step FLOPs and time on a target (rlvr_jax/plan.py).

rlvr-jax plan --config=configs/plan.py:configs/qwen2.5_math_1.5b/rl.py \
    --config.plan.accelerator=v5p --config.plan.chips=8 [--config.mesh.fsdp=8 ...]

The text after ':' is the planned config (a cpt / sft / rl / eval / pipeline config file,
relative to the current directory or to the repository); its fields keep their names
(--config.batch_size=..., --config.rl.microbatches=...) and `plan.*` is added. The same with
plain flags: python -m rlvr_jax.plan --accelerator=v5p --chips=8 --config=PLANNED [...]
"""
import os

from ml_collections import ConfigDict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _planned(path: str) -> ConfigDict:
  """The planned config: PATH as given, else relative to the repository."""
  from rlvr_jax.cli import load_config_module
  if not os.path.isfile(path) and os.path.isfile(os.path.join(REPO, path)):
    path = os.path.join(REPO, path)
  return load_config_module(path).get_config()


def get_config(planned: str = "configs/toy/sft.py") -> ConfigDict:
  c = _planned(planned)
  c.plan = ConfigDict()
  c.plan.config = planned              # the planned config file (PATH after ':')
  c.plan.accelerator = ""              # v5e | v5p | v6e | H100 | H200 ('' = a verdict for each)
  c.plan.chips = 0                     # devices (a -1 mesh axis takes the rest; 0 = fixed axes)
  c.plan.headroom = 0.9                # usable share of each chip's HBM
  c.plan.mfu = 0.4                     # model FLOPs utilisation of the ideal step time
  c.plan.eval_prompt_len = 256         # prompt block of an eval config (it does not fix one)
  return c
