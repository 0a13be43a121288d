"""Toy RL with the self-certainty proxy reward (mean over tokens of logsumexp(z) - mean(z) under
the rollout policy, group-normalised by GRPO); no labels in training.

rlvr-jax rl --config=configs/toy/rl_self_certainty.py --workdir=/tmp/toy_rl_sc --config.init.from_checkpoint=/tmp/toy_sft
"""
from rlvr_jax.config_utils import load_config_file



def get_config():
  c = load_config_file(__file__, "rl.py")
  c.reward.weights.boxed_answer_match = 0.0   # no labels in training
  c.reward.weights.self_certainty = 1.0       # mean token self-certainty of the rollout
  return c
