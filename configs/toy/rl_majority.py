"""Toy RL with the majority-vote proxy reward: V = 16 votes per prompt, GRPO on G = 8 of them
(reward = match with the most common boxed answer), two minibatch updates per rollout.

rlvr-jax rl --config=configs/toy/rl_majority.py --workdir=/tmp/toy_rl_maj --config.init.from_checkpoint=/tmp/toy_sft
"""
from rlvr_jax.config_utils import load_config_file



def get_config():
  c = load_config_file(__file__, "rl.py")
  c.reward.weights.boxed_answer_match = 0.0   # no labels in training
  c.reward.weights.majority_vote = 1.0        # match with the majority answer of the V votes
  c.rl.vote_samples = 16               # V: votes per prompt
  c.rl.group_size = 8                  # G: samples trained on per prompt
  c.rl.minibatches = 2                 # two updates per rollout (the paper's majority-vote runs)
  c.batch_size = 8                     # prompts per step (V x 8 = 128 samples drawn)
  return c
