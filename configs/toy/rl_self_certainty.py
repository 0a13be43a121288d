"""Toy RL with the self-certainty proxy reward (mean over tokens of logsumexp(z) - mean(z) under
the rollout policy, group-normalised by GRPO); no labels in training.

rlvr-jax rl --config=configs/toy/rl_self_certainty.py --workdir=/tmp/toy_rl_sc --config.init.from_checkpoint=/tmp/toy_sft
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "_toy_rl_config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "rl.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)


def get_config():
  c = base.get_config()
  c.reward.weights.boxed_answer_match = 0.0   # no labels in training
  c.reward.weights.self_certainty = 1.0       # mean token self-certainty of the rollout
  return c
