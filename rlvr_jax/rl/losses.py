"""The clipped policy-gradient loss (PPO / GRPO family) with KL and entropy terms (pure, jittable).

Formulas (docs/DESIGN.md), per valid token (mask 1):
  ratio = exp(logp - old_logp)
  pg    = max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))
          with dual clip c (> 1): pg = min(pg, -A * c) where A < 0
  kl    k1: logp - ref;  k2: (logp - ref)^2 / 2;  k3: exp(ref - logp) - (ref - logp) - 1, clamped
        to [-10, 10]
  loss  = agg(w * pg) + kl_coef * agg(kl) - entropy_coef * agg(entropy)
        w: optional importance weights (`is_weights`, e.g. truncated IS against the sampler's
        log-probs, see `tis_weights`), constants applied to the pg term only; w = 1 without them

Aggregations over the valid tokens of x[N, T]:
  token-mean               sum(x * mask) / num_valid_tokens
  seq-mean-token-mean      mean over rows of each row's token mean
  seq-mean-token-sum       mean over rows of each row's token sum
  seq-mean-token-sum-norm  sum(x * mask) / (N * T), T the padded length (Dr. GRPO's constant)
"Mean over rows" counts only rows with at least one valid token: a row without valid tokens (an
empty response, or a group dropped by dynamic sampling) contributes nothing, and a batch without
any valid token gives loss 0 with zero gradients, never NaN.

Sums and denominators (tunix's algo_core style): each aggregation is a (numerator, denominator)
pair of sums over rows (`AGG_SUMS`), agg = numerator / max(denominator, 1). `policy_loss_sums`
returns the loss that way, so a loss over several microbatches or devices is
Σ numerators / max(Σ denominators, 1) exactly, with no renormalising; `policy_loss` is that
ratio on one batch.

Numerical guards (inactive for ordinary inputs, so the values equal the formulas above): masked
positions are zeroed before any exp, so garbage there (-inf logprobs of padding) never reaches the
loss or its gradient; the log-ratio is clamped to [-20, 20] as in verl, so exp never overflows;
for k3 `ref - logp` is clamped to [-20, 20] before the exp, which leaves the clamped k3 value
unchanged (it is already at its +10 bound there).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

LOG_RATIO_CLAMP = 20.0
K3_CLAMP = 10.0


def _token_sum(x_NT, mask_NT):
  """token-mean: (Σ x over valid tokens, number of valid tokens)."""
  return jnp.sum(x_NT * mask_NT), jnp.sum(mask_NT)


def _row_count(mask_NT):
  """Rows with at least one valid token (the "mean over rows" denominator, unclamped)."""
  return jnp.sum((jnp.sum(mask_NT, axis=1) > 0).astype(jnp.float32))


def _seq_token_mean_sum(x_NT, mask_NT):
  """seq-mean-token-mean: (Σ over rows of each row's token mean, rows with a valid token)."""
  row_mean_N = jnp.sum(x_NT * mask_NT, axis=1) / jnp.maximum(jnp.sum(mask_NT, axis=1), 1.0)
  return jnp.sum(row_mean_N), _row_count(mask_NT)


def _seq_token_sum_sum(x_NT, mask_NT):
  """seq-mean-token-sum: (Σ over rows of each row's token sum, rows with a valid token)."""
  return jnp.sum(x_NT * mask_NT), _row_count(mask_NT)


def _seq_token_sum_norm_sum(x_NT, mask_NT):
  """seq-mean-token-sum-norm: (Σ x over valid tokens, N * T) (Dr. GRPO's constant)."""
  n, t = mask_NT.shape
  return jnp.sum(x_NT * mask_NT), jnp.full((), float(n * t), jnp.float32)


# Each aggregation as (numerator, denominator): both are sums over rows, so the aggregate over a
# union of disjoint row sets (microbatches, devices) is Σ numerators / max(Σ denominators, 1).
AGG_SUMS: dict[str, Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]] = {
    "token-mean": _token_sum,
    "seq-mean-token-mean": _seq_token_mean_sum,
    "seq-mean-token-sum": _seq_token_sum_sum,
    "seq-mean-token-sum-norm": _seq_token_sum_norm_sum,
}


def _mean(sum_and_denom) -> jax.Array:
  total, denom = sum_and_denom
  return total / jnp.maximum(denom, 1.0)


def _token_mean(x_NT, mask_NT):
  return _mean(_token_sum(x_NT, mask_NT))


AGGREGATIONS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    name: (lambda fn: lambda x_NT, mask_NT: _mean(fn(x_NT, mask_NT)))(fn)
    for name, fn in AGG_SUMS.items()}


def _k1(logp, ref):
  return logp - ref


def _k2(logp, ref):
  return 0.5 * (logp - ref) ** 2


def _k3(logp, ref):
  d = jnp.clip(ref - logp, -2 * K3_CLAMP, 2 * K3_CLAMP)
  return jnp.clip(jnp.exp(d) - d - 1.0, -K3_CLAMP, K3_CLAMP)


KL_ESTIMATORS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "k1": _k1,
    "k2": _k2,
    "k3": _k3,
}


def _check_agg(agg: str) -> None:
  if agg not in AGG_SUMS:
    raise ValueError(f"unknown loss aggregation {agg!r}; choose one of {sorted(AGG_SUMS)}")


def aggregate(x_NT: jax.Array, mask_NT: jax.Array, agg: str = "token-mean") -> jax.Array:
  """Scalar aggregate of x[N, T] over the tokens where mask is 1 (see the module docstring)."""
  _check_agg(agg)
  return AGGREGATIONS[agg](x_NT, mask_NT)


def aggregate_sums(x_NT: jax.Array, mask_NT: jax.Array, agg: str = "token-mean"
                   ) -> tuple[jax.Array, jax.Array]:
  """(numerator, denominator) of `aggregate`: additive over disjoint row sets."""
  _check_agg(agg)
  return AGG_SUMS[agg](x_NT, mask_NT)


TIS_LEVELS = ("none", "token", "sequence")


def tis_weights(trainer_logprobs: jax.Array, sampler_logprobs: jax.Array, mask: jax.Array, *,
                level: str, cap: float) -> jax.Array:
  """Truncated importance-sampling weights of the sampler's tokens (Yao et al. 2025, "Your
  Efficient RL Framework Secretly Brings You Off-Policy RL Training"; verl's TIS / rollout_is).

  The sampler (its kernels, KV cache, bf16) is not exactly the policy the trainer computes: the
  rows were drawn from pi_sampler, the PPO ratio is taken against pi_trainer_old. Weighting each
  policy-gradient term by pi_trainer_old / pi_sampler, truncated at `cap` to bound the variance,
  corrects for that:
    level "token":    w[n, t] = min(exp(trainer[n, t] - sampler[n, t]), cap)      float32[N, T]
    level "sequence": w[n] = min(exp(sum_t mask * (trainer - sampler)[n, t]), cap)  float32[N]
  Masked positions count as a log-ratio of 0 (their token weight is 1 and never used). The
  weights are constants (stop-gradient): pass them to `policy_loss(..., is_weights=w)`.
  """
  if level not in TIS_LEVELS[1:]:
    raise ValueError(f"unknown TIS level {level!r}; choose one of {TIS_LEVELS[1:]}")
  if not cap > 0:
    raise ValueError(f"the TIS cap must be > 0, got {cap!r}")
  f32 = jnp.float32
  valid_NT = jnp.asarray(mask, f32) > 0
  log_w_NT = jnp.where(valid_NT, jnp.asarray(trainer_logprobs, f32)
                       - jnp.asarray(sampler_logprobs, f32), 0.0)
  log_w = log_w_NT if level == "token" else jnp.sum(log_w_NT, axis=1)
  # exp may overflow to inf for a huge log-ratio; the min with the cap makes it `cap` again.
  return jax.lax.stop_gradient(jnp.minimum(jnp.exp(log_w), cap))


def _check_shapes(logprobs, old_logprobs, advantages, mask, ref_logprobs, entropy,
                  is_weights=None):
  shape = getattr(logprobs, "shape", None)
  if shape is None or len(shape) != 2:
    raise ValueError(f"policy_loss: logprobs must be float32[N, T], got shape {shape}")
  for name, x in (("old_logprobs", old_logprobs), ("mask", mask), ("ref_logprobs", ref_logprobs),
                  ("entropy", entropy)):
    if x is not None and tuple(x.shape) != tuple(shape):
      raise ValueError(f"policy_loss: {name} has shape {tuple(x.shape)} but logprobs has "
                       f"{tuple(shape)}; all token tensors must be [N, T]")
  if tuple(advantages.shape) not in ((shape[0],), tuple(shape)):
    raise ValueError(f"policy_loss: advantages must be [N]={shape[0]} or [N, T]={tuple(shape)}, "
                     f"got {tuple(advantages.shape)}")
  if is_weights is not None and tuple(is_weights.shape) not in ((shape[0],), tuple(shape)):
    raise ValueError(f"policy_loss: is_weights must be [N]={shape[0]} (per sequence) or "
                     f"[N, T]={tuple(shape)} (per token), got {tuple(is_weights.shape)}")


def policy_loss_sums(logprobs: jax.Array, old_logprobs: jax.Array, advantages: jax.Array,
                     mask: jax.Array, *, clip_low: float = 0.2, clip_high: float = 0.2,
                     dual_clip: float | None = None, ref_logprobs: jax.Array | None = None,
                     kl_coef: float = 0.0, kl_estimator: str = "k3", agg: str = "token-mean",
                     entropy: jax.Array | None = None, entropy_coef: float = 0.0,
                     is_weights: jax.Array | None = None
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The clipped policy-gradient loss of `policy_loss` as sums over these rows.

  Arguments as `policy_loss`. Returns (loss_sum, sums): loss_sum = pg + kl_coef * kl_agg -
  entropy_coef * entropy_agg, the numerator of the loss (differentiate it; the loss is
  loss_sum / max(denom, 1)); sums (constants, no gradient), each additive over disjoint row sets
  (microbatches, devices) except the two maxima:
    denom        the aggregation's denominator (`AGG_SUMS`; unclamped)
    pg, kl_agg, entropy_agg   the aggregation numerators of the pg, KL and entropy terms
    tokens       Σ mask (valid tokens)
    kl, entropy, clip, dual_clip, ratio   token sums over valid tokens of the KL estimate, the
                 entropy, the clipped and dual-clip indicators and the ratio (the metrics are
                 these / max(tokens, 1))
    ratio_max, ratio_dev   max over valid tokens of ratio and of |ratio - 1| (0 when none)
  """
  _check_agg(agg)
  if kl_estimator not in KL_ESTIMATORS:
    raise ValueError(f"unknown KL estimator {kl_estimator!r}; choose one of "
                     f"{sorted(KL_ESTIMATORS)}")
  if dual_clip is not None and not dual_clip > 1.0:
    raise ValueError(f"dual_clip must be None or > 1.0 (the paper uses 3.0), got {dual_clip!r}")
  if isinstance(kl_coef, (int, float)) and kl_coef != 0.0 and ref_logprobs is None:
    raise ValueError(f"kl_coef={kl_coef} needs ref_logprobs (log-probs under the frozen "
                     f"reference model); pass them or set kl_coef=0")
  if isinstance(entropy_coef, (int, float)) and entropy_coef != 0.0 and entropy is None:
    raise ValueError(f"entropy_coef={entropy_coef} needs the per-token entropy [N, T]")
  _check_shapes(logprobs, old_logprobs, advantages, mask, ref_logprobs, entropy, is_weights)

  f32 = jnp.float32
  mask_NT = jnp.asarray(mask, f32)
  valid_NT = mask_NT > 0
  logp_NT = jnp.asarray(logprobs, f32)
  old_NT = jax.lax.stop_gradient(jnp.asarray(old_logprobs, f32))
  adv = jnp.asarray(advantages, f32)
  adv_NT = jnp.broadcast_to(adv[:, None] if adv.ndim == 1 else adv, logp_NT.shape)
  adv_NT = jnp.where(valid_NT, adv_NT, 0.0)

  log_ratio_NT = jnp.where(valid_NT, logp_NT - old_NT, 0.0)
  ratio_NT = jnp.exp(jnp.clip(log_ratio_NT, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
  pg1_NT = -adv_NT * ratio_NT
  pg2_NT = -adv_NT * jnp.clip(ratio_NT, 1.0 - clip_low, 1.0 + clip_high)
  pg_NT = jnp.maximum(pg1_NT, pg2_NT)
  clipped_NT = pg2_NT > pg1_NT
  if dual_clip is not None:
    pg3_NT = -adv_NT * dual_clip
    dual_active_NT = (adv_NT < 0) & (pg3_NT < pg_NT)
    pg_NT = jnp.where(adv_NT < 0, jnp.minimum(pg_NT, pg3_NT), pg_NT)
  else:
    dual_active_NT = jnp.zeros_like(clipped_NT)
  if is_weights is not None:
    w = jax.lax.stop_gradient(jnp.asarray(is_weights, f32))
    w_NT = jnp.broadcast_to(w[:, None] if w.ndim == 1 else w, logp_NT.shape)
    pg_NT = pg_NT * jnp.where(valid_NT, w_NT, 0.0)   # garbage weights on padding never count

  token_sum = lambda x_NT: jnp.sum(x_NT * mask_NT)   # noqa: E731
  zero = jnp.zeros((), f32)
  pg, denom = AGG_SUMS[agg](pg_NT, mask_NT)
  out = {"denom": denom, "pg": pg, "kl_agg": zero, "entropy_agg": zero,
         "tokens": jnp.sum(mask_NT), "kl": zero, "entropy": zero}
  if ref_logprobs is not None:
    ref_NT = jax.lax.stop_gradient(jnp.asarray(ref_logprobs, f32))
    # Zero both inputs on masked positions: every estimator is then 0 there, with finite grads.
    kl_NT = KL_ESTIMATORS[kl_estimator](jnp.where(valid_NT, logp_NT, 0.0),
                                        jnp.where(valid_NT, ref_NT, 0.0))
    out["kl_agg"] = AGG_SUMS[agg](kl_NT, mask_NT)[0]
    out["kl"] = token_sum(kl_NT)
  if entropy is not None:
    ent_NT = jnp.where(valid_NT, jnp.asarray(entropy, f32), 0.0)
    out["entropy_agg"] = AGG_SUMS[agg](ent_NT, mask_NT)[0]
    out["entropy"] = token_sum(ent_NT)

  ratio_sg_NT = jax.lax.stop_gradient(ratio_NT)
  out["clip"] = jax.lax.stop_gradient(token_sum(clipped_NT.astype(f32)))
  out["dual_clip"] = jax.lax.stop_gradient(token_sum(dual_active_NT.astype(f32)))
  out["ratio"] = token_sum(ratio_sg_NT)
  out["ratio_max"] = jnp.max(jnp.where(valid_NT, ratio_sg_NT, 0.0), initial=0.0)
  out["ratio_dev"] = jnp.max(jnp.where(valid_NT, jnp.abs(ratio_sg_NT - 1.0), 0.0), initial=0.0)
  loss_sum = out["pg"]
  if ref_logprobs is not None:
    loss_sum = loss_sum + kl_coef * out["kl_agg"]
  if entropy is not None:
    loss_sum = loss_sum - entropy_coef * out["entropy_agg"]
  return loss_sum, jax.lax.stop_gradient(out)


def policy_loss(logprobs: jax.Array, old_logprobs: jax.Array, advantages: jax.Array,
                mask: jax.Array, **options) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Clipped policy-gradient loss and its metrics.

  Args (all but the first four keyword-only `options`, with policy_loss_sums's defaults):
    logprobs: float32[N, T] log-probs of the taken tokens under the policy being trained.
    old_logprobs: float32[N, T] log-probs under the rollout policy (the sampler's), treated as
      constants (no gradient flows into them).
    advantages: float32[N] (one per sequence) or float32[N, T].
    mask: {0, 1}[N, T], 1 on response tokens that count.
    clip_low, clip_high: ratio clip range [1 - clip_low, 1 + clip_high].
    dual_clip: None, or c > 1: for A < 0 the per-token loss is capped at -A * c.
    ref_logprobs: float32[N, T] under the frozen reference model; needed when kl_coef != 0.
    kl_coef, kl_estimator: weight and estimator ("k1", "k2", "k3") of the KL penalty in the loss.
    agg: one of AGGREGATIONS.
    entropy, entropy_coef: per-token entropy [N, T] of the policy and the bonus weight.
    is_weights: None, or float32[N, T] (per token) or float32[N] (per sequence, every token of
      the row) importance weights, e.g. `tis_weights` (truncated IS of the rollout rows against
      the sampler that drew them). Each token's pg term (after the clip and the dual clip) is
      multiplied by its weight before aggregation; the KL and entropy terms are not weighted,
      and the aggregation (its normaliser included) is unchanged. Constants (no gradient);
      masked positions are ignored.
  Returns:
    (loss scalar, metrics): pg_loss (the aggregated pg term, weighted with is_weights), kl and
    entropy (means over valid tokens; 0 when not given), clip_frac (share of valid tokens
    where the clipped branch is active), ratio_mean, ratio_max, dual_clip_frac (share of valid
    tokens where the dual clip bound is active). Metrics are 0 when no token is valid.
  All keyword options are static Python values; errors in them are raised at trace time.
  The loss is `policy_loss_sums`'s loss_sum / max(denom, 1).
  """
  loss_sum, sums = policy_loss_sums(logprobs, old_logprobs, advantages, mask, **options)
  denom, tokens = jnp.maximum(sums["denom"], 1.0), jnp.maximum(sums["tokens"], 1.0)
  metrics = {"pg_loss": sums["pg"] / denom, "kl": sums["kl"] / tokens,
             "entropy": sums["entropy"] / tokens, "clip_frac": sums["clip"] / tokens,
             "dual_clip_frac": sums["dual_clip"] / tokens, "ratio_mean": sums["ratio"] / tokens,
             "ratio_max": sums["ratio_max"]}
  return loss_sum / denom, metrics


def token_logprobs_and_entropy(logits_BTV: jax.Array, tokens_BT: jax.Array,
                               temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """Log-prob of each token and the entropy of each position under softmax(logits / temperature).

  `logits_BTV[b, t]` must be the logits that produced `tokens_BT[b, t]` (shift model outputs by
  one before calling). This is the sampler's definition (`out.logprobs` of `rj.generate`), so at
  the rollout parameters the recomputed log-probs equal the sampler's and the first PPO ratio is
  1. Computed in float32. Returns (logp_BT, entropy_BT), both float32[B, T].
  """
  if isinstance(temperature, (int, float)) and not temperature > 0:
    raise ValueError(f"temperature must be > 0 to recompute log-probs (greedy sampling has no "
                     f"log-probs), got {temperature!r}")
  z_BTV = jnp.asarray(logits_BTV, jnp.float32) / temperature
  logp_BTV = jax.nn.log_softmax(z_BTV, axis=-1)
  logp_BT = jnp.take_along_axis(logp_BTV, tokens_BT[..., None].astype(jnp.int32), axis=-1)[..., 0]
  # Masked-out vocabulary entries (logits -inf) have p = 0 and contribute 0, not 0 * -inf = NaN.
  finite_logp_BTV = jnp.where(jnp.isfinite(logp_BTV), logp_BTV, 0.0)
  entropy_BT = -jnp.sum(jnp.exp(logp_BTV) * finite_logp_BTV, axis=-1)
  return logp_BT, entropy_BT
