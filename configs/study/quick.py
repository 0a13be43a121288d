"""The quick study (the README's main command): findings 1 and 3 on the toy, 2 seeds, < 30 min
on 2 CPU cores.

rlvr-jax study --config=configs/study/quick.py --workdir=runs/study_quick

A subset of configs/study/toy.py: pre-RL conditions cpt+nothink, cpt+think and base+think (is
SFT on traces necessary; does CPT amplify it), the scarce-data setting (N = 8), seeds 0 and 1,
no pre-RL diagnostics (finding 2 needs the full study's eight conditions).
"""
from rlvr_jax.config_utils import load_config_file


def get_config():
  c = load_config_file(__file__, "toy.py")
  c.name = "quick"                     # the study's name (report title)
  c.conditions = "cpt+nothink,cpt+think,base+think"  # pre-RL conditions PRE+SFT
  c.settings = "scarce"                # RL settings (sections setting.NAME)
  c.large_setting = ""                 # no large-N run (no gap G)
  c.seeds = 2                          # seeds 0..seeds-1 of every RL setting
  c.diagnose_conditions = False        # no pre-RL diagnostics
  c.rl.eval.domains = "chain"          # held-out chain problems: levels 2 (in-domain) and 4-5
  return c
