"""Group-relative advantage estimators (GRPO family), pure and jittable.

Rewards arrive as float32[N] with the G samples of one prompt contiguous (rows g*G .. g*G+G-1),
the layout `rj.generate(..., num_samples=G)` produces. Each estimator maps rewards_PG
[num_prompts, G] to advantages of the same shape; `compute_advantages` does the reshaping and
the checks. Formulas (docs/DESIGN.md):

  grpo          (r - mean_g) / (std_g + 1e-6), std_g the unbiased (ddof=1) group std
  dr_grpo       r - mean_g                                  (Dr. GRPO: no std division)
  rloo          r - mean of the OTHER G-1 members of the group (leave-one-out baseline)
  reinforce_pp  r - mean_g, then whitened over the whole batch: (x - mean) * rsqrt(var + 1e-8),
                var the unbiased batch variance (verl's `masked_whiten`, REINFORCE++-baseline)

group_size 1 (no group to compare with): the group baseline is the reward itself, so grpo,
dr_grpo and rloo give 0 advantages (the ddof=1 std and the leave-one-out mean are undefined and
taken as 0) instead of NaN; reinforce_pp then whitens zeros, which stays 0. A batch of one row
has batch variance 0. Groups whose rewards are all equal get exactly 0 advantage under grpo,
dr_grpo and rloo (no float residue that grpo's near-zero std would amplify), and 0 up to float
rounding of the batch mean under reinforce_pp.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

GRPO_EPS = 1e-6
WHITEN_EPS = 1e-8

Estimator = Callable[[jax.Array], jax.Array]


def _group_mean(r_PG: jax.Array) -> jax.Array:
  return jnp.mean(r_PG, axis=1, keepdims=True)


def _centered(r_PG: jax.Array) -> jax.Array:
  """r - mean_g, exactly 0 in groups whose rewards are all equal (no float rounding residue,
  which grpo's division by a near-zero std would otherwise blow up)."""
  constant = jnp.all(r_PG == r_PG[:, :1], axis=1, keepdims=True)
  return jnp.where(constant, 0.0, r_PG - _group_mean(r_PG))


def _group_std_unbiased(centered_PG: jax.Array) -> jax.Array:
  g = centered_PG.shape[1]
  if g < 2:
    return jnp.zeros_like(centered_PG[:, :1])
  return jnp.sqrt(jnp.sum(centered_PG * centered_PG, axis=1, keepdims=True) / (g - 1))


def grpo(r_PG: jax.Array) -> jax.Array:
  """(r - mean_g) / (std_g + 1e-6) with the unbiased group std."""
  centered = _centered(r_PG)
  return centered / (_group_std_unbiased(centered) + GRPO_EPS)


def dr_grpo(r_PG: jax.Array) -> jax.Array:
  """r - mean_g."""
  return _centered(r_PG)


def rloo(r_PG: jax.Array) -> jax.Array:
  """r minus the mean of the other G-1 members of its group (0 when G == 1).

  Computed as G/(G-1) * (r - mean_g), the same quantity: r - (S - r)/(G-1) = (G r - S)/(G-1).
  """
  g = r_PG.shape[1]
  if g < 2:
    return jnp.zeros_like(r_PG)
  return _centered(r_PG) * (g / (g - 1))


def reinforce_pp(r_PG: jax.Array) -> jax.Array:
  """r - mean_g, then whitened over the whole batch with the unbiased batch variance."""
  x = _centered(r_PG).reshape(-1)
  n = x.shape[0]
  mean = jnp.mean(x)
  var = jnp.sum((x - mean) ** 2) / (n - 1) if n > 1 else jnp.zeros((), x.dtype)
  return ((x - mean) * jax.lax.rsqrt(var + WHITEN_EPS)).reshape(r_PG.shape)


ADVANTAGE_ESTIMATORS: dict[str, Estimator] = {
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "rloo": rloo,
    "reinforce_pp": reinforce_pp,
}


def _check_groups(rewards: jax.Array, group_size, where: str) -> int:
  if getattr(rewards, "ndim", None) != 1:
    raise ValueError(f"{where}: rewards must be a 1-D array float32[N], got shape "
                     f"{getattr(rewards, 'shape', None)}")
  if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
    raise ValueError(f"{where}: group_size must be a positive Python int (static), got "
                     f"{group_size!r}")
  n = rewards.shape[0]
  if n % group_size:
    raise ValueError(f"{where}: the batch of {n} rewards does not divide into groups of "
                     f"group_size={group_size}; make the number of samples a multiple of the "
                     f"group size (samples of one prompt contiguous)")
  return n // group_size


def compute_advantages(rewards: jax.Array, group_size: int, estimator: str = "grpo") -> jax.Array:
  """Advantages float32[N] from rewards float32[N] (groups of `group_size` contiguous rows).

  `group_size` and `estimator` are static (Python values); the checks run at trace time, so a bad
  name or a group size that does not divide N fails before anything compiles.
  """
  if estimator not in ADVANTAGE_ESTIMATORS:
    raise ValueError(f"unknown advantage estimator {estimator!r}; choose one of "
                     f"{sorted(ADVANTAGE_ESTIMATORS)}")
  rewards = jnp.asarray(rewards, jnp.float32)
  num_prompts = _check_groups(rewards, group_size, "compute_advantages")
  r_PG = rewards.reshape(num_prompts, group_size)
  return ADVANTAGE_ESTIMATORS[estimator](r_PG).reshape(-1)


def nonzero_variance_mask(rewards: jax.Array, group_size: int) -> jax.Array:
  """float32[N]: 1.0 for rows whose group has rewards that are not all equal, else 0.0.

  For dynamic sampling: multiply the loss mask by this to drop zero-variance groups, and
  `1 - mean(mask)` is `reward/zero_var_frac`.
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  num_prompts = _check_groups(rewards, group_size, "nonzero_variance_mask")
  r_PG = rewards.reshape(num_prompts, group_size)
  varied = jnp.any(r_PG != r_PG[:, :1], axis=1, keepdims=True)
  return jnp.broadcast_to(varied, r_PG.shape).reshape(-1).astype(jnp.float32)
