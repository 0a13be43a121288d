"""The optimizer: optax AdamW (no decay on norms and biases), LR schedules, global-norm clipping.

Built from the `optim` block of a run config:

  optim.lr            peak learning rate
  optim.schedule      "constant" | "warmup_cosine" | "warmup_linear"
  optim.warmup        warmup length: a fraction of `steps` when < 1, else a number of steps
  optim.final_lr_frac end value of the decay as a fraction of lr (cosine / linear; 0 = decay to 0)
  optim.b1, b2, eps   Adam moments
  optim.weight_decay  decoupled weight decay (AdamW), applied to matrices only
  optim.clip_norm     global-norm clipping threshold (0 = off)

Every schedule warms up linearly from 0 to `lr` over W steps (the HF convention: the first
update uses lr·0/W = 0 when W > 0), then holds (constant) or decays over the remaining
`steps - W` updates.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "warmup_cosine", "warmup_linear")
NO_DECAY_NAMES = ("scale", "bias")   # RMSNorm scales and attention biases


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optax transformation and the learning-rate schedule it applies (update count -> lr)."""
  tx: optax.GradientTransformation
  schedule: Callable[[Any], Any]

  def learning_rate(self, opt_state) -> jax.Array:
    """The learning rate the next update of `opt_state` will use."""
    return self.schedule(schedule_count(opt_state))


def warmup_steps(warmup: float, total_steps: int) -> int:
  """`warmup` < 1 is a fraction of `total_steps` (rounded); otherwise a number of steps."""
  if warmup < 0:
    raise ValueError(f"optim.warmup={warmup} must be >= 0 (a fraction < 1 or a step count)")
  w = int(round(warmup * total_steps)) if warmup < 1 else int(warmup)
  if w > total_steps:
    raise ValueError(f"optim.warmup={warmup} gives {w} warmup steps, more than steps="
                     f"{total_steps}; lower optim.warmup or raise steps")
  return w


def make_schedule(name: str, lr: float, total_steps: int, warmup: float = 0.0,
                  final_lr_frac: float = 0.0) -> optax.Schedule:
  """update count -> learning rate, for `total_steps` updates."""
  if name not in SCHEDULES:
    raise ValueError(f"optim.schedule={name!r} is not one of {SCHEDULES}")
  if total_steps <= 0:
    raise ValueError(f"steps={total_steps} must be positive")
  w = warmup_steps(warmup, total_steps)
  end = lr * final_lr_frac
  warm = optax.linear_schedule(0.0, lr, max(w, 1))
  if name == "constant":
    after = optax.constant_schedule(lr)
  elif name == "warmup_cosine":
    after = optax.cosine_decay_schedule(lr, max(total_steps - w, 1), alpha=final_lr_frac)
  else:
    after = optax.linear_schedule(lr, end, max(total_steps - w, 1))
  if w == 0:
    return after
  return optax.join_schedules([warm, after], [w])


def decay_mask(params: Any) -> Any:
  """True for leaves that get weight decay: matrices (ndim >= 2) not named scale/bias.

  Works on plain and on logically-boxed (nn.LogicallyPartitioned) parameter trees; the stacked
  layer axis makes norm scales 2-D, hence the name test.
  """
  def decays(path, x) -> bool:
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return bool(names) and names[-1] not in NO_DECAY_NAMES and len(x.shape) >= 2
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(optim_cfg: Any, total_steps: int) -> Optimizer:
  """AdamW with global-norm clipping from an `optim` config block (see module docstring).

  The chain is clip → scale_by_adam → add_decayed_weights(mask) → scale_by_learning_rate, i.e.
  exactly optax.adamw after clipping, with the schedule exposed for logging.
  """
  c = optim_cfg
  for name in ("lr", "b1", "b2", "eps", "weight_decay", "clip_norm", "final_lr_frac"):
    v = float(c[name])
    if not math.isfinite(v) or v < 0:
      raise ValueError(f"optim.{name}={c[name]} must be a finite number >= 0")
  if not (0 <= c.b1 < 1 and 0 <= c.b2 < 1):
    raise ValueError(f"optim.b1={c.b1} and optim.b2={c.b2} must lie in [0, 1)")
  schedule = make_schedule(c.schedule, float(c.lr), total_steps, float(c.warmup),
                           float(c.final_lr_frac))
  parts = []
  if c.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(c.clip_norm)))
  parts += [
      optax.scale_by_adam(b1=float(c.b1), b2=float(c.b2), eps=float(c.eps)),
      optax.add_decayed_weights(float(c.weight_decay), mask=decay_mask),
      optax.scale_by_learning_rate(schedule),
  ]
  return Optimizer(optax.chain(*parts), schedule)


def schedule_count(opt_state: Any) -> jax.Array:
  """The update count of the ScaleByScheduleState inside an optimizer state (0 when absent)."""
  found = [s.count for s in jax.tree_util.tree_leaves(
      opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState))
           if isinstance(s, optax.ScaleByScheduleState)]
  if not found:
    return jnp.zeros((), jnp.int32)
  return found[-1]
