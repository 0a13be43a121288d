"""Toy RL, scarce data: N = 8 training problems (difficulty-filtered, stratified by solve count,
repeated to fill each batch), true rewards.

rlvr-jax rl --config=configs/toy/rl_scarce_n8.py --workdir=/tmp/toy_rl_n8 --config.init.from_checkpoint=/tmp/toy_sft
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "_toy_rl_config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "rl.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)


def get_config():
  c = base.get_config()
  c.data.difficulty_filter = True      # keep problems the initial model solves 1..15 of 16 times
  c.data.n_pool = 64                   # synthetic problems per domain in the pool
  c.data.n_train = 8                   # N: stratified subset size
  return c
