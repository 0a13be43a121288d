"""RL algorithms: rewards, advantage estimators and policy losses (all pure and jittable).

  rl.compute_advantages(rewards, group_size, estimator) -> float32[N]      (advantages.py)
  rl.policy_loss(logprobs, old_logprobs, advantages, mask, ...) -> (loss, metrics)  (losses.py)
  rl.policy_loss_sums(...) -> (loss_sum, sums): the same loss as sums over rows and a
    denominator (sums over microbatches / devices add up exactly)
  rl.tis_weights(trainer_logp, sampler_logp, mask, level=, cap=) -> truncated IS weights
  rl.token_logprobs_and_entropy(logits_BTV, tokens_BT, temperature) -> (logp_BT, entropy_BT)
  rl.RolloutBatch (= rollout.Rollout), rl.REWARDS, rl.combine_rewards, rl.host_verified,
    rl.host_verifier_reward                                                    (rewards.py)
  rl.NOISE_MODELS, rl.apply_noise, rl.most_frequent_wrong_answer               (noise.py)
"""
from rlvr_jax.rl.advantages import (ADVANTAGE_ESTIMATORS, compute_advantages,
                                    nonzero_variance_mask)
from rlvr_jax.rl.losses import (AGG_SUMS, AGGREGATIONS, KL_ESTIMATORS, TIS_LEVELS, aggregate,
                                aggregate_sums, policy_loss, policy_loss_sums, tis_weights,
                                token_logprobs_and_entropy)
from rlvr_jax.rl.noise import (NOISE_MODELS, apply_noise, asymmetric_flip, bernoulli_reward,
                               group_flip, most_frequent_wrong_answer, symmetric_flip, with_noise)
from rlvr_jax.rl.rewards import (LABEL_REWARDS, REWARDS, RolloutBatch, boxed_answer_match,
                                 build_rewards, combine_rewards, default_verifier,
                                 extract_boxed_tokens, format_reward, get_reward,
                                 host_verified, host_verifier_reward, last_boxed_span,
                                 majority_vote_labels, majority_vote_reward, math_verify_match,
                                 neg_entropy_reward, self_certainty_reward, seq_loglik_reward,
                                 valid_mask)

__all__ = [
    "ADVANTAGE_ESTIMATORS", "compute_advantages", "nonzero_variance_mask",
    "AGGREGATIONS", "KL_ESTIMATORS", "aggregate", "policy_loss", "token_logprobs_and_entropy",
    "AGG_SUMS", "aggregate_sums", "policy_loss_sums",
    "TIS_LEVELS", "tis_weights",
    "NOISE_MODELS", "apply_noise", "asymmetric_flip", "bernoulli_reward", "group_flip",
    "most_frequent_wrong_answer", "symmetric_flip", "with_noise",
    "LABEL_REWARDS", "REWARDS", "RolloutBatch", "boxed_answer_match", "build_rewards",
    "combine_rewards", "default_verifier", "extract_boxed_tokens", "format_reward", "get_reward",
    "host_verified", "host_verifier_reward", "last_boxed_span", "majority_vote_labels",
    "majority_vote_reward",
    "math_verify_match", "neg_entropy_reward", "self_certainty_reward", "seq_loglik_reward",
    "valid_mask",
]
