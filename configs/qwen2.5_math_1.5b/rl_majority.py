"""Qwen2.5-Math-1.5B, majority-vote proxy reward: 16 votes per prompt, pseudo-label = most common
final answer, GRPO on 8 of the 16 (reward = match with the pseudo-label), two updates per step
with minibatch 32 prompts. No labels in training; validation uses the true labels.

rlvr-jax rl --config=configs/qwen2.5_math_1.5b/rl_majority.py --workdir=DIR --config.init.from_hf=QWEN_DIR --config.data.files=SKYWORK
"""
from rlvr_jax.config_utils import load_config_file



def get_config():
  c = load_config_file(__file__, "rl.py")
  c.reward.weights.boxed_answer_match = 0.0   # labels unused in training
  c.reward.weights.majority_vote = 1.0        # match with the majority of the V votes
  c.rl.vote_samples = 16               # V: votes per prompt
  c.rl.group_size = 8                  # G: samples trained on
  c.rl.minibatches = 2                 # two updates per step (minibatch 32 prompts)
  c.rl.microbatches = 32               # 8 rows per forward/backward
  return c
