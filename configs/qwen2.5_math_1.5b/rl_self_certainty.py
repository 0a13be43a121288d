"""Qwen2.5-Math-1.5B, self-certainty proxy reward: per response the mean over tokens of
logsumexp(z) - mean(z) under the rollout policy, group-normalised by GRPO. No labels in training.

rlvr-jax rl --config=configs/qwen2.5_math_1.5b/rl_self_certainty.py --workdir=DIR --config.init.from_hf=QWEN_DIR --config.data.files=SKYWORK
"""
from rlvr_jax.config_utils import load_config_file



def get_config():
  c = load_config_file(__file__, "rl.py")
  c.reward.weights.boxed_answer_match = 0.0   # labels unused in training
  c.reward.weights.self_certainty = 1.0       # self-certainty of the rollout
  return c
