"""Toy RL, scarce data: N = 8 training problems (difficulty-filtered, stratified by solve count,
repeated to fill each batch), true rewards.

rlvr-jax rl --config=configs/toy/rl_scarce_n8.py --workdir=/tmp/toy_rl_n8 --config.init.from_checkpoint=/tmp/toy_sft
"""
from rlvr_jax.config_utils import load_config_file



def get_config():
  c = load_config_file(__file__, "rl.py")
  c.data.difficulty_filter = True      # keep problems the initial model solves 1..15 of 16 times
  c.data.n_pool = 64                   # synthetic problems per domain in the pool
  c.data.n_train = 8                   # N: stratified subset size
  return c
