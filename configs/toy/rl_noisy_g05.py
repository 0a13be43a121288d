"""Toy RL, noisy labels: γ = 0.5 of the training prompts get the initial model's most frequent
wrong answer as their label (label replacement, fixed per prompt); validation uses true labels.

rlvr-jax rl --config=configs/toy/rl_noisy_g05.py --workdir=/tmp/toy_rl_g05 --config.init.from_checkpoint=/tmp/toy_sft
"""
from rlvr_jax.config_utils import load_config_file



def get_config():
  c = load_config_file(__file__, "rl.py")
  c.data.n_pool = 64                   # synthetic problems per domain in the pool
  c.data.n_train = 32                  # N: random subset of the pool (no difficulty filter)
  c.data.label_noise = 0.5             # γ: fraction of prompts whose label is replaced
  c.data.label_noise_samples = 32      # samples per prompt for the wrong answer (the paper: 96)
  return c
