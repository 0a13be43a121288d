"""Reward noise models (pure, jittable, key-driven) and the host-side label-replacement helper.

The in-graph models act on binary rewards float32[N] in {0, 1} (a verifier's output); a flip maps
r to 1 - r. Rates may be Python floats or traced scalars (a Python float outside [0, 1] is
rejected at trace time).

  symmetric_flip(r, key, p)              each sample flipped independently with probability p
  group_flip(r, key, p, group_size)      each group of group_size contiguous samples (one prompt)
                                         flipped as a whole with probability p
  asymmetric_flip(r, key, fp_rate, fn_rate)
                                         0 -> 1 with probability fp_rate (false positive),
                                         1 -> 0 with probability fn_rate (false negative)
  bernoulli_reward(r, key, q)            ignores r: 1 with probability q, else 0

`with_noise(reward_fn, name, **rates)` wraps a reward of the registry's signature so its output
passes through one of them; RewardSpec.build uses it for reward.noise (the trained reward).

The paper's main noise setting is not one of these: it replaces a prompt's label, once, with the
model's most frequent wrong answer (`most_frequent_wrong_answer`, used by the data protocols).
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp


def _check_rate(name: str, value) -> None:
  if isinstance(value, (int, float)) and not 0.0 <= value <= 1.0:
    raise ValueError(f"noise rate {name}={value!r} must lie in [0, 1]")


def _as_rewards(rewards) -> jax.Array:
  r = jnp.asarray(rewards, jnp.float32)
  if r.ndim != 1:
    raise ValueError(f"noise models take rewards float32[N], got shape {r.shape}")
  return r


def symmetric_flip(rewards: jax.Array, key: jax.Array, p: float) -> jax.Array:
  """Flip each binary reward independently with probability p. float32[N]."""
  _check_rate("p", p)
  r = _as_rewards(rewards)
  flip = jax.random.bernoulli(key, p, r.shape)
  return jnp.where(flip, 1.0 - r, r)


def group_flip(rewards: jax.Array, key: jax.Array, p: float, group_size: int) -> jax.Array:
  """Flip all rewards of a group (group_size contiguous rows, static) with probability p."""
  _check_rate("p", p)
  r = _as_rewards(rewards)
  if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1 \
      or r.shape[0] % group_size:
    raise ValueError(f"group_flip: group_size={group_size!r} must be a positive int dividing the "
                     f"batch size {r.shape[0]}")
  flip_P = jax.random.bernoulli(key, p, (r.shape[0] // group_size,))
  flip = jnp.repeat(flip_P, group_size)
  return jnp.where(flip, 1.0 - r, r)


def asymmetric_flip(rewards: jax.Array, key: jax.Array, fp_rate: float, fn_rate: float
                    ) -> jax.Array:
  """0 -> 1 with probability fp_rate, 1 -> 0 with probability fn_rate (r > 0.5 counts as 1)."""
  _check_rate("fp_rate", fp_rate)
  _check_rate("fn_rate", fn_rate)
  r = _as_rewards(rewards)
  u = jax.random.uniform(key, r.shape)
  positive = r > 0.5
  flip = jnp.where(positive, u < fn_rate, u < fp_rate)
  return jnp.where(flip, 1.0 - r, r)


def bernoulli_reward(rewards: jax.Array, key: jax.Array, q: float) -> jax.Array:
  """Random reward: 1.0 with probability q, else 0.0, independent of the true reward."""
  _check_rate("q", q)
  r = _as_rewards(rewards)
  return jax.random.bernoulli(key, q, r.shape).astype(jnp.float32)


NOISE_MODELS: dict[str, Callable[..., jax.Array]] = {
    "symmetric_flip": symmetric_flip,
    "group_flip": group_flip,
    "asymmetric_flip": asymmetric_flip,
    "bernoulli": bernoulli_reward,
}


def apply_noise(name: str, rewards: jax.Array, key: jax.Array, **params: Any) -> jax.Array:
  """NOISE_MODELS[name](rewards, key, **params), with a clear error for an unknown name."""
  if name not in NOISE_MODELS:
    raise ValueError(f"unknown reward noise model {name!r}; choose one of {sorted(NOISE_MODELS)}")
  return NOISE_MODELS[name](rewards, key, **params)


def with_noise(reward_fn: Callable[..., jax.Array], name: str, **params: Any
               ) -> Callable[..., jax.Array]:
  """Wrap fn(batch, labels, key) so its output passes through noise model `name`: `key` splits
  into (the reward's key, the noise key)."""
  if name not in NOISE_MODELS:
    raise ValueError(f"unknown reward noise model {name!r}; choose one of {sorted(NOISE_MODELS)}")

  def noisy(batch, labels=None, key=None):
    if key is None:
      raise ValueError(f"noise model {name!r} needs a PRNG key")
    reward_key, noise_key = jax.random.split(key)
    return NOISE_MODELS[name](reward_fn(batch, labels, reward_key), noise_key, **params)

  return noisy


def most_frequent_wrong_answer(answers: Sequence[str | None], true_label: str,
                               normalize: Callable[[str], str] | None = None) -> str | None:
  """The most frequent answer among `answers` that is not the true answer.

  answers: the final answers extracted from S sampled responses (None where none was found;
  those are skipped). By default answers are compared with rlvr_jax.data.answers.equivalent,
  the matcher of the rewards and eval: every answer equivalent to `true_label` is dropped (so
  the chosen "wrong" label is never the truth written another way), and the rest are grouped by
  answers.answer_groups (`0.5` and `\\frac{1}{2}` are one answer). normalize: str -> str, when
  given, replaces that with string keys (answers equal when their keys are). Ties go to the
  answer seen first. Returns that answer as it first appeared, or None when every extracted
  answer is correct or none was extracted.
  """
  if normalize is None:
    return _most_frequent_inequivalent(answers, true_label)
  truth = normalize(true_label)
  counts: collections.Counter[str] = collections.Counter()
  first_raw: dict[str, str] = {}
  for a in answers:
    if a is None:
      continue
    key = normalize(a)
    if not key or key == truth:
      continue
    counts[key] += 1
    first_raw.setdefault(key, a)
  if not counts:
    return None
  best = max(counts.values())
  for key, raw in first_raw.items():  # insertion order = order of first appearance
    if counts[key] == best:
      return raw
  return None


def _most_frequent_inequivalent(answers: Sequence[str | None], true_label: str) -> str | None:
  """most_frequent_wrong_answer by answers.equivalent: drop the answers equivalent to the truth
  (each one checked, so none can slip in through a group), then take the largest group."""
  from rlvr_jax.data import answers as answers_lib
  wrong = [a for a in answers
           if answers_lib.has_answer(a) and not answers_lib.equivalent(a, true_label)]
  best = answers_lib.majority_group(wrong)
  return None if best is None else wrong[best]
