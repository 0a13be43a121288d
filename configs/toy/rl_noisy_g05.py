"""Toy RL, noisy labels: γ = 0.5 of the training prompts get the initial model's most frequent
wrong answer as their label (label replacement, fixed per prompt); validation uses true labels.

rlvr-jax rl --config=configs/toy/rl_noisy_g05.py --workdir=/tmp/toy_rl_g05 --config.init.from_checkpoint=/tmp/toy_sft
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "_toy_rl_config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "rl.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)


def get_config():
  c = base.get_config()
  c.data.n_pool = 64                   # synthetic problems per domain in the pool
  c.data.n_train = 32                  # N: random subset of the pool (no difficulty filter)
  c.data.label_noise = 0.5             # γ: fraction of prompts whose label is replaced
  c.data.label_noise_samples = 32      # samples per prompt for the wrong answer (the paper: 96)
  return c
