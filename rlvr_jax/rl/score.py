r"""The score phase of the RL step: rewards through the registry, advantages, the loss mask.

`score_phase` turns a Rollout of B * V rows into the B * G trained rows and their Scored
(rewards, advantages, loss mask): the one reward fn of `RewardSpec.build` (the weighted sum of
`RewardSpec.weights` over rl.REWARDS on all V samples of each prompt, so majority vote sees its
V votes; the host verifier's verdicts as a registry entry; the first G samples kept; the noise
model), the ground-truth reward `boxed_answer_match` against `true_answer_tokens`
(`reward_fidelity`), then rl.compute_advantages and the loss mask (valid tokens, times the
nonzero-variance mask of the groups with dynamic sampling). `select_groups` is dynamic
sampling's refill; `host_rewards` checks the boxed answers on the host (math-verify) for
batch["host_reward"].

Reward token ids: in-graph rewards compare token ids. BPE / sentencepiece vocabularies often
merge the closing brace with what follows ("}." in the toy tokenizer, "}$" in Qwen's); every id
in `RewardSpec.close_ids` is mapped to the first one (`Rollout.map_close_ids`, once) before the
rewards see the tokens; the rewards get that same Rollout type, the update the unmapped one.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rlvr_jax.rl import advantages as adv_lib
from rlvr_jax.rl import losses
from rlvr_jax.rl import rewards as rewards_lib
from rlvr_jax.rl.spec import (Batch, Metrics, RLSettings, RLSpec, Rollout, Scored,
                              first_samples)


def _check_rows(n: int, b: int, s: RLSettings) -> None:
  v = s.samples_per_prompt
  if n % v or n // v != b:
    raise ValueError(f"the rollout has {n} rows but the batch has {b} prompts and "
                     f"vote_samples/group_size gives {v} samples per prompt: the group size "
                     f"must divide the rollout into one group per prompt")


def score_phase(rollout: Rollout, batch: Batch, key, *, spec: RLSpec
                ) -> tuple[Rollout, Scored, Metrics]:
  """Rewards, ground-truth reward, advantages and loss mask of a Rollout (B * V rows).

  Returns (the rollout of the B * G trained rows, Scored, metrics). Shapes and names are checked
  at trace time: a group size that does not split the rows into one group per prompt, or a
  label reward without `answer_tokens`, fails before anything compiles.
  """
  s, rs = spec.settings, spec.rewards
  b = batch["prompt_tokens"].shape[0]
  n_all = rollout.tokens.shape[0]
  _check_rows(n_all, b, s)
  v, g = s.samples_per_prompt, s.group_size
  labels_BA = batch.get("answer_tokens")
  if rs.needs_labels and labels_BA is None:
    raise ValueError(f"reward(s) {[n for n in rs.names if n in rewards_lib.LABEL_REWARDS]} "
                     f"compare with labels but the batch has no 'answer_tokens': the dataset "
                     f"has no labels; use a labelled dataset or a proxy reward (majority_vote, "
                     f"self_certainty, neg_entropy, seq_loglik)")
  view_all = rollout.map_close_ids(rs.close_ids)
  kept = jax.tree.map(lambda x: first_samples(x, v, g), rollout)
  view = jax.tree.map(lambda x: first_samples(x, v, g), view_all)
  reward_fn = rs.build(v, g, host_reward=batch.get("host_reward"))
  labels_RA = None if labels_BA is None else jnp.repeat(jnp.asarray(labels_BA, jnp.int32), v, 0)
  rewards_N = reward_fn(view_all, labels_RA, key)

  advantages_N = adv_lib.compute_advantages(rewards_N, g, s.estimator)
  varied_N = adv_lib.nonzero_variance_mask(rewards_N, g)
  valid_NM = kept.valid_mask()
  loss_mask_NM = valid_NM * varied_N[:, None] if s.dynamic_sampling != "none" else valid_NM

  f32 = jnp.float32
  nan = jnp.asarray(jnp.nan, f32)
  metrics = {"reward/mean": jnp.mean(rewards_N), "reward/std": jnp.std(rewards_N),
             "reward/zero_var_frac": jnp.mean(1.0 - varied_N),
             "response/length_mean": jnp.mean(kept.lengths.astype(f32)),
             "response/clip_frac": jnp.mean(_clipped(kept, s).astype(f32)),
             "policy/entropy": losses.aggregate(kept.entropy, valid_NM, "token-mean"),
             **{name: nan for name in FIDELITY_METRICS}}
  true_BA = batch.get("true_answer_tokens")
  if batch.get("host_true_reward") is not None:
    true_N = first_samples(jnp.asarray(batch["host_true_reward"], jnp.float32), v, g)
    metrics.update(reward_fidelity(rewards_N, true_N, g))
  elif true_BA is not None:
    opts = {name: val for name, val in rs.options
            if name in ("boxed_ids", "close_id", "open_brace_id")}
    if "boxed_ids" in opts and "close_id" in opts:
      true_N = rewards_lib.boxed_answer_match(view, jnp.repeat(jnp.asarray(true_BA, jnp.int32),
                                                               g, 0), **opts)
      metrics.update(reward_fidelity(rewards_N, true_N, g))
  return kept, Scored(rewards=rewards_N, advantages=advantages_N, loss_mask=loss_mask_NM), metrics


FIDELITY_METRICS = ("reward/true_mean", "reward/agreement", "reward/true_corr",
                    "reward/true_group_corr")


def _pearson(x_N, y_N) -> jax.Array:
  """Pearson correlation of two float vectors; NaN when either is constant."""
  xc_N, yc_N = x_N - jnp.mean(x_N), y_N - jnp.mean(y_N)
  den = jnp.sqrt(jnp.sum(xc_N * xc_N) * jnp.sum(yc_N * yc_N))
  return jnp.where(den > 0, jnp.sum(xc_N * yc_N) / jnp.where(den > 0, den, 1.0), jnp.nan)


def reward_fidelity(rewards_N, true_N, group_size: int) -> dict[str, jax.Array]:
  """How faithful the training reward is to the ground truth, over N = groups * group_size rows:
  true_mean; agreement (share of rows where reward > 0.5 equals truth > 0.5: for binary rewards,
  label accuracy); true_corr (Pearson of reward and truth over the batch); true_group_corr
  (Pearson after centring both within each group: what a group-relative advantage sees, so a
  proxy that only tells easy prompts from hard ones scores 0 here). The correlations are what
  to read for continuous proxy rewards (self-certainty, entropy), where agreement means little."""
  r_N, t_N = rewards_N.astype(jnp.float32), true_N.astype(jnp.float32)
  centre = lambda x: (x.reshape(-1, group_size)
                      - jnp.mean(x.reshape(-1, group_size), axis=1, keepdims=True)).reshape(-1)
  return {"reward/true_mean": jnp.mean(t_N),
          "reward/agreement": jnp.mean(((r_N > 0.5) == (t_N > 0.5)).astype(jnp.float32)),
          "reward/true_corr": _pearson(r_N, t_N),
          "reward/true_group_corr": _pearson(centre(r_N), centre(t_N))}


def _clipped(rollout: Rollout, s: RLSettings) -> jax.Array:
  """bool[N]: the row used all max_new_tokens without ending on a stop token."""
  m = rollout.tokens.shape[1]
  last = jnp.take_along_axis(rollout.tokens, jnp.clip(rollout.lengths - 1, 0, m - 1)[:, None],
                             axis=1)[:, 0]
  stopped = jnp.isin(last, jnp.asarray(s.eos_ids or (-1,), jnp.int32))
  return (rollout.lengths >= m) & ~stopped


def select_groups(rounds, group_index_B, *, group_size: int):
  """Dynamic sampling's refill: `rounds` is a tuple of (kept Rollout, Scored, prompts_BP,
  prompt_lengths_B) of equal shapes, one per sampled prompt batch; group_index_B int32[B] picks
  B groups from their concatenation (group j of round r is r * B + j). Returns the picked
  (Rollout, Scored, prompts, prompt_lengths), each group's G rows kept together."""
  cat = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *rounds)
  rollout, scored, prompts_BP, prompt_lengths_B = cat
  rows_N = (group_index_B[:, None] * group_size + jnp.arange(group_size)[None, :]).reshape(-1)
  take_rows = lambda x: jnp.take(x, rows_N, axis=0)   # noqa: E731
  return (jax.tree.map(take_rows, rollout), jax.tree.map(take_rows, scored),
          jnp.take(prompts_BP, group_index_B, axis=0),
          jnp.take(prompt_lengths_B, group_index_B, axis=0))


def host_rewards(tokenizer, tokens_NM, lengths_N, labels, true_labels, samples_per_prompt: int,
                 verify_fn=None) -> tuple[np.ndarray, np.ndarray]:
  """(reward, true reward), float32[N] each, of decoded responses checked on the host with
  rewards.host_verifier_reward (math-verify equivalence when installed): the same contract as
  the in-graph boxed_answer_match, for answers a token comparison cannot judge (\\frac{1}{2} vs
  0.5, BPE merges). tokens_NM / lengths_N: host arrays of the rollout rows (B * V, samples of a
  prompt contiguous); labels / true_labels: B strings. Feed the results to `score_phase` as
  batch["host_reward"] / batch["host_true_reward"]."""
  texts = tokenizer.decode_batch(np.asarray(tokens_NM), np.asarray(lengths_N))
  rep = lambda xs: [str(x) for x in xs for _ in range(samples_per_prompt)]  # noqa: E731
  reward = rewards_lib.host_verifier_reward(texts, rep(labels), verify_fn)
  same = [str(a) == str(b) for a, b in zip(labels, true_labels)]
  if all(same):
    return reward, reward
  return reward, rewards_lib.host_verifier_reward(texts, rep(true_labels), verify_fn)


__all__ = ["score_phase", "reward_fidelity", "FIDELITY_METRICS", "select_groups", "host_rewards"]
