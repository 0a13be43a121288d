"""Advantage estimators and the policy loss against independent numpy/loop references."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax import rl


# ------------------------------------------------------------------- reference: advantages
def ref_advantages(rewards, group_size, estimator):
  r = [float(x) for x in rewards]
  out = []
  for g0 in range(0, len(r), group_size):
    grp = r[g0:g0 + group_size]
    g = len(grp)
    mean = sum(grp) / g
    var = sum((x - mean) ** 2 for x in grp) / (g - 1) if g > 1 else 0.0
    for i, x in enumerate(grp):
      if estimator == "grpo":
        out.append((x - mean) / (math.sqrt(var) + 1e-6))
      elif estimator in ("dr_grpo", "reinforce_pp"):
        out.append(x - mean)
      elif estimator == "rloo":
        others = [y for j, y in enumerate(grp) if j != i]
        out.append(x - sum(others) / len(others) if others else 0.0)
  if estimator == "reinforce_pp":
    n = len(out)
    m = sum(out) / n
    v = sum((x - m) ** 2 for x in out) / (n - 1) if n > 1 else 0.0
    out = [(x - m) / math.sqrt(v + 1e-8) for x in out]
  return np.array(out)


ESTIMATORS = ["grpo", "dr_grpo", "rloo", "reinforce_pp"]


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("group_size", [1, 2, 4, 12])
def test_advantages_match_reference(estimator, group_size):
  rng = np.random.default_rng(group_size)
  binary = rng.integers(0, 2, 12).astype(np.float32)
  continuous = rng.normal(size=12).astype(np.float32)
  for rewards in (binary, continuous):
    got = jax.jit(rl.compute_advantages, static_argnums=(1, 2))(rewards, group_size, estimator)
    assert got.dtype == jnp.float32 and got.shape == (12,)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref_advantages(rewards, group_size, estimator),
                               rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_all_equal_groups_have_zero_advantage(estimator):
  # 0.1 is not representable: a float residue in r - mean must not be blown up by std + 1e-6.
  rewards = np.array([0.1] * 3 + [1.0] * 3 + [0.0] * 3, np.float32)
  got = rl.compute_advantages(rewards, 3, estimator)
  np.testing.assert_array_equal(got, np.zeros(9, np.float32))
  mixed = np.array([0.1] * 3 + [1.0, 0.0, 0.0], np.float32)
  got = np.asarray(rl.compute_advantages(mixed, 3, estimator))
  # reinforce_pp subtracts the batch mean (exactly 0 in exact arithmetic, a float residue here)
  np.testing.assert_allclose(got[:3], 0.0, atol=1e-6 if estimator == "reinforce_pp" else 0.0)
  np.testing.assert_allclose(got, ref_advantages(mixed, 3, estimator), rtol=2e-4, atol=2e-5)


def test_grpo_hand_example():
  # group [1, 0, 0, 0]: mean 0.25, unbiased std sqrt(0.25) = 0.5
  got = rl.compute_advantages(jnp.array([1.0, 0.0, 0.0, 0.0]), 4, "grpo")
  np.testing.assert_allclose(got, np.array([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-6), rtol=1e-6)


def test_advantage_errors_name_the_value_and_choices():
  with pytest.raises(ValueError, match=r"'ppo'.*dr_grpo.*grpo.*reinforce_pp.*rloo"):
    rl.compute_advantages(jnp.zeros(8), 4, "ppo")
  with pytest.raises(ValueError, match=r"10 rewards.*group_size=4"):
    rl.compute_advantages(jnp.zeros(10), 4, "grpo")
  with pytest.raises(ValueError, match="group_size"):
    rl.compute_advantages(jnp.zeros(8), 0, "grpo")
  with pytest.raises(ValueError, match="1-D"):
    rl.compute_advantages(jnp.zeros((2, 4)), 4, "grpo")
  # raised while tracing, i.e. before anything is compiled
  with pytest.raises(ValueError, match="group_size=3"):
    jax.jit(rl.compute_advantages, static_argnums=(1, 2)).lower(jnp.zeros(8), 3, "grpo")


def test_nonzero_variance_mask():
  rewards = jnp.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5])
  got = rl.nonzero_variance_mask(rewards, 2)
  np.testing.assert_array_equal(got, [0, 0, 1, 1, 0, 0, 0, 0])


# ----------------------------------------------------------------------- reference: loss
def ref_aggregate(x, mask, agg):
  n, t = x.shape
  total, count, row_vals = 0.0, 0, []
  for i in range(n):
    s, c = 0.0, 0
    for j in range(t):
      if mask[i, j]:
        s += x[i, j]
        c += 1
    total += s
    count += c
    if c:
      row_vals.append(s / c if agg == "seq-mean-token-mean" else s)
  if agg == "token-mean":
    return total / count if count else 0.0
  if agg in ("seq-mean-token-mean", "seq-mean-token-sum"):
    return sum(row_vals) / len(row_vals) if row_vals else 0.0
  if agg == "seq-mean-token-sum-norm":
    return total / (n * t)
  raise AssertionError(agg)


def ref_policy_loss(logp, old, adv, mask, *, clip_low, clip_high, dual_clip, ref, kl_coef,
                    kl_estimator, agg, entropy, entropy_coef):
  n, t = logp.shape
  pg = np.zeros((n, t))
  kl = np.zeros((n, t))
  clipped, dual_active, ratios = [], [], []
  for i in range(n):
    for j in range(t):
      if not mask[i, j]:
        continue
      a = float(adv[i] if adv.ndim == 1 else adv[i, j])
      ratio = math.exp(float(logp[i, j]) - float(old[i, j]))
      l1 = -a * ratio
      l2 = -a * min(max(ratio, 1 - clip_low), 1 + clip_high)
      loss = max(l1, l2)
      clipped.append(l2 > l1)
      if dual_clip is not None and a < 0:
        dual_active.append(-a * dual_clip < loss)
        loss = min(loss, -a * dual_clip)
      else:
        dual_active.append(False)
      pg[i, j] = loss
      ratios.append(ratio)
      d = float(logp[i, j]) - float(ref[i, j])
      if kl_estimator == "k1":
        kl[i, j] = d
      elif kl_estimator == "k2":
        kl[i, j] = d * d / 2
      else:
        kl[i, j] = min(max(math.exp(-d) + d - 1, -10.0), 10.0)
  total = (ref_aggregate(pg, mask, agg) + kl_coef * ref_aggregate(kl, mask, agg)
           - entropy_coef * ref_aggregate(entropy, mask, agg))
  nv = len(ratios)
  metrics = {
      "pg_loss": ref_aggregate(pg, mask, agg),
      "kl": ref_aggregate(kl, mask, "token-mean"),
      "entropy": ref_aggregate(entropy, mask, "token-mean"),
      "clip_frac": sum(clipped) / nv if nv else 0.0,
      "dual_clip_frac": sum(dual_active) / nv if nv else 0.0,
      "ratio_mean": sum(ratios) / nv if nv else 0.0,
      "ratio_max": max(ratios) if nv else 0.0,
  }
  return total, metrics


def make_inputs(seed, n=5, t=7, token_adv=False):
  rng = np.random.default_rng(seed)
  old = rng.normal(-1.5, 0.5, (n, t)).astype(np.float32)
  logp = (old + rng.normal(0.0, 0.6, (n, t))).astype(np.float32)  # ratios well outside [0.8, 1.2]
  ref = (old + rng.normal(0.0, 0.8, (n, t))).astype(np.float32)
  entropy = rng.uniform(0.0, 3.0, (n, t)).astype(np.float32)
  adv = rng.normal(0.0, 1.5, (n, t) if token_adv else (n,)).astype(np.float32)
  lengths = np.array([t, 0, t - 2, 2, t - 1])[:n]  # row 1 fully masked
  mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)
  # garbage on masked positions must not leak into loss, metrics or gradients
  logp = np.where(mask > 0, logp, 1e4).astype(np.float32)
  old = np.where(mask > 0, old, -1e4).astype(np.float32)
  ref = np.where(mask > 0, ref, -1e4).astype(np.float32)
  entropy = np.where(mask > 0, entropy, 1e4).astype(np.float32)
  return logp, old, adv, mask, ref, entropy


AGGS = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("kl_estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("dual_clip", [None, 1.5])
def test_policy_loss_matches_reference(agg, kl_estimator, dual_clip):
  logp, old, adv, mask, ref, entropy = make_inputs(seed=len(agg) + len(kl_estimator))
  opts = dict(clip_low=0.2, clip_high=0.28, dual_clip=dual_clip, kl_coef=0.05,
              kl_estimator=kl_estimator, agg=agg, entropy_coef=0.01)
  # eager (op-by-op) to keep the 24 cases fast; jit is covered by test_policy_loss_under_jit
  fn = functools.partial(rl.policy_loss, **opts)
  loss, metrics = fn(logp, old, adv, mask, ref_logprobs=ref, entropy=entropy)
  want, want_metrics = ref_policy_loss(logp, old, adv, mask, ref=ref, entropy=entropy, **opts)
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
  assert set(metrics) == set(want_metrics)
  for k, v in want_metrics.items():
    np.testing.assert_allclose(metrics[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
  if dual_clip is not None:
    assert want_metrics["dual_clip_frac"] > 0  # the dual clip branch is exercised
  assert 0 < want_metrics["clip_frac"] < 1

  grads = jax.grad(lambda lp: fn(lp, old, adv, mask, ref_logprobs=ref, entropy=entropy)[0])(logp)
  assert np.all(np.isfinite(grads))
  np.testing.assert_array_equal(np.asarray(grads)[mask == 0], 0.0)
  assert np.any(np.asarray(grads) != 0)


def test_policy_loss_under_jit():
  logp, old, adv, mask, ref, entropy = make_inputs(seed=8)
  opts = dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0, kl_coef=0.001, kl_estimator="k3",
              agg="seq-mean-token-mean", entropy_coef=0.0)
  fn = jax.jit(functools.partial(rl.policy_loss, **opts))
  loss, metrics = fn(logp, old, adv, mask, ref_logprobs=ref)
  want, want_metrics = ref_policy_loss(logp, old, adv, mask, ref=ref, entropy=entropy, **opts)
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["kl"], want_metrics["kl"], rtol=1e-5, atol=1e-6)


def test_policy_loss_token_level_advantages():
  logp, old, adv, mask, ref, entropy = make_inputs(seed=3, token_adv=True)
  for agg in AGGS:
    loss, metrics = rl.policy_loss(logp, old, adv, mask, agg=agg, dual_clip=3.0)
    want, want_metrics = ref_policy_loss(
        logp, old, adv, mask, clip_low=0.2, clip_high=0.2, dual_clip=3.0, ref=ref, kl_coef=0.0,
        kl_estimator="k3", agg=agg, entropy=entropy, entropy_coef=0.0)
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["clip_frac"], want_metrics["clip_frac"], rtol=1e-6)
    assert float(metrics["kl"]) == 0.0 and float(metrics["entropy"]) == 0.0


def test_first_minibatch_ratio_is_one():
  logp, _, adv, mask, _, _ = make_inputs(seed=4)
  loss, metrics = rl.policy_loss(logp, logp, adv, mask)
  valid = mask > 0
  want = -sum(adv[i] for i in range(adv.shape[0]) for j in range(mask.shape[1]) if valid[i, j])
  np.testing.assert_allclose(loss, want / valid.sum(), rtol=1e-6)
  assert float(metrics["clip_frac"]) == 0.0
  np.testing.assert_allclose([metrics["ratio_mean"], metrics["ratio_max"]], [1.0, 1.0])


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("kl_estimator", ["k1", "k2", "k3"])
def test_all_masked_batch_is_finite_with_zero_grads(agg, kl_estimator):
  logp, old, adv, _, ref, entropy = make_inputs(seed=5)
  mask = np.zeros_like(logp)
  logp[0, 0], old[0, 0] = np.nan, np.inf  # even NaN/inf garbage in masked positions

  def loss_fn(lp):
    return rl.policy_loss(lp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1,
                          kl_estimator=kl_estimator, agg=agg, entropy=entropy,
                          entropy_coef=0.1, dual_clip=3.0)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(logp)
  assert float(loss) == 0.0
  assert all(np.isfinite(v) for v in metrics.values())
  np.testing.assert_array_equal(grads, np.zeros_like(logp))


def test_extreme_log_ratios_keep_loss_and_grads_finite():
  logp, old, adv, mask, ref, entropy = make_inputs(seed=6)
  logp = logp + np.where(np.arange(logp.shape[1]) % 2, 80.0, -80.0).astype(np.float32)
  for est in ["k1", "k2", "k3"]:
    loss, grads = jax.value_and_grad(
        lambda lp: rl.policy_loss(lp, old, adv, mask, ref_logprobs=ref, kl_coef=1.0,
                                  kl_estimator=est, dual_clip=3.0)[0])(logp)
    assert np.isfinite(loss) and np.all(np.isfinite(grads))


def test_clip_frac_hand_example():
  ratios = np.array([[1.0, 1.3, 0.7, 1.1], [1.0, 1.3, 0.7, 0.5]], np.float32)
  old = np.full((2, 4), -2.0, np.float32)
  logp = old + np.log(ratios)
  mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], np.float32)
  adv = np.array([1.0, -1.0], np.float32)
  # A=+1: clipped branch active only for ratio 1.3 (> 1.2); A=-1: only for ratio 0.7 (< 0.8).
  loss, metrics = rl.policy_loss(logp, old, adv, mask)
  np.testing.assert_allclose(metrics["clip_frac"], 2 / 7, rtol=1e-6)
  per_token = [-1.0, -1.2, -0.7, -1.1, 1.0, 1.3, 0.8]
  np.testing.assert_allclose(loss, sum(per_token) / 7, rtol=1e-5)
  np.testing.assert_allclose(metrics["ratio_max"], 1.3, rtol=1e-5)
  # dual clip c=1.2 caps the A=-1, ratio 1.3 token at 1.2
  loss, metrics = rl.policy_loss(logp, old, adv, mask, dual_clip=1.2)
  np.testing.assert_allclose(metrics["dual_clip_frac"], 1 / 7, rtol=1e-6)
  per_token[5] = 1.2
  np.testing.assert_allclose(loss, sum(per_token) / 7, rtol=1e-5)


def test_policy_loss_errors():
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match=r"'mean'.*seq-mean-token-mean"):
    rl.policy_loss(x, x, jnp.zeros(2), x, agg="mean")
  with pytest.raises(ValueError, match=r"'k4'.*k1.*k2.*k3"):
    rl.policy_loss(x, x, jnp.zeros(2), x, kl_estimator="k4", ref_logprobs=x)
  with pytest.raises(ValueError, match="ref_logprobs"):
    rl.policy_loss(x, x, jnp.zeros(2), x, kl_coef=0.1)
  with pytest.raises(ValueError, match="dual_clip"):
    rl.policy_loss(x, x, jnp.zeros(2), x, dual_clip=0.5)
  with pytest.raises(ValueError, match="advantages"):
    rl.policy_loss(x, x, jnp.zeros(3), x)
  with pytest.raises(ValueError, match="mask"):
    rl.policy_loss(x, x, jnp.zeros(2), jnp.zeros((2, 4)))


def test_token_logprobs_and_entropy_match_numpy():
  rng = np.random.default_rng(7)
  logits = rng.normal(0, 2, (2, 3, 11)).astype(np.float32)
  logits[0, 0, 4] = -np.inf  # a banned vocabulary entry
  tokens = rng.integers(0, 11, (2, 3))
  tokens[0, 0] = 5
  temperature = 0.7
  logp, ent = jax.jit(rl.token_logprobs_and_entropy, static_argnums=2)(logits, tokens, temperature)
  for b in range(2):
    for t in range(3):
      z = logits[b, t].astype(np.float64) / temperature
      zmax = z[np.isfinite(z)].max()
      p = np.exp(z - zmax)
      p /= p.sum()
      np.testing.assert_allclose(logp[b, t], np.log(p[tokens[b, t]]), rtol=1e-5, atol=1e-5)
      want_ent = -sum(pi * math.log(pi) for pi in p if pi > 0)
      np.testing.assert_allclose(ent[b, t], want_ent, rtol=1e-5, atol=1e-5)
  grads = jax.grad(lambda z: jnp.sum(rl.token_logprobs_and_entropy(z, tokens)[1]))(logits)
  assert np.all(np.isfinite(grads))


# ------------------------------------------------------------- sums and denominators
def old_policy_loss(logprobs, old_logprobs, advantages, mask, *, clip_low=0.2, clip_high=0.2,
                    dual_clip=None, ref_logprobs=None, kl_coef=0.0, kl_estimator="k3",
                    agg="token-mean", entropy=None, entropy_coef=0.0, is_weights=None):
  """A copy of rl.policy_loss as it was before the loss became sums and denominators (each
  aggregation a mean, `_row_count` clamped inside): the new one must give the same values."""
  def masked_sum(x, m):
    return jnp.sum(x * m)

  def token_mean(x, m):
    return masked_sum(x, m) / jnp.maximum(jnp.sum(m), 1.0)

  def row_count(m):
    return jnp.maximum(jnp.sum((jnp.sum(m, axis=1) > 0).astype(jnp.float32)), 1.0)

  def seq_mean_token_mean(x, m):
    return jnp.sum(jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)) / row_count(m)

  aggs = {"token-mean": token_mean, "seq-mean-token-mean": seq_mean_token_mean,
          "seq-mean-token-sum": lambda x, m: jnp.sum(x * m) / row_count(m),
          "seq-mean-token-sum-norm": lambda x, m: masked_sum(x, m) / float(m.shape[0] * m.shape[1])}
  f32 = jnp.float32
  mask_NT = jnp.asarray(mask, f32)
  valid_NT = mask_NT > 0
  logp_NT = jnp.asarray(logprobs, f32)
  old_NT = jnp.asarray(old_logprobs, f32)
  adv = jnp.asarray(advantages, f32)
  adv_NT = jnp.where(valid_NT, jnp.broadcast_to(adv[:, None] if adv.ndim == 1 else adv,
                                                logp_NT.shape), 0.0)
  ratio_NT = jnp.exp(jnp.clip(jnp.where(valid_NT, logp_NT - old_NT, 0.0), -20.0, 20.0))
  pg1_NT = -adv_NT * ratio_NT
  pg2_NT = -adv_NT * jnp.clip(ratio_NT, 1.0 - clip_low, 1.0 + clip_high)
  pg_NT = jnp.maximum(pg1_NT, pg2_NT)
  clipped_NT = pg2_NT > pg1_NT
  dual_NT = jnp.zeros_like(clipped_NT)
  if dual_clip is not None:
    pg3_NT = -adv_NT * dual_clip
    dual_NT = (adv_NT < 0) & (pg3_NT < pg_NT)
    pg_NT = jnp.where(adv_NT < 0, jnp.minimum(pg_NT, pg3_NT), pg_NT)
  if is_weights is not None:
    w = jnp.asarray(is_weights, f32)
    pg_NT = pg_NT * jnp.where(valid_NT, jnp.broadcast_to(w[:, None] if w.ndim == 1 else w,
                                                         logp_NT.shape), 0.0)
  pg_loss = aggs[agg](pg_NT, mask_NT)
  loss, metrics = pg_loss, {"pg_loss": pg_loss, "kl": jnp.zeros((), f32),
                            "entropy": jnp.zeros((), f32)}
  if ref_logprobs is not None:
    kl_NT = rl.KL_ESTIMATORS[kl_estimator](jnp.where(valid_NT, logp_NT, 0.0),
                                           jnp.where(valid_NT, jnp.asarray(ref_logprobs), 0.0))
    loss = loss + kl_coef * aggs[agg](kl_NT, mask_NT)
    metrics["kl"] = token_mean(kl_NT, mask_NT)
  if entropy is not None:
    ent_NT = jnp.where(valid_NT, jnp.asarray(entropy, f32), 0.0)
    loss = loss - entropy_coef * aggs[agg](ent_NT, mask_NT)
    metrics["entropy"] = token_mean(ent_NT, mask_NT)
  metrics.update(clip_frac=token_mean(clipped_NT.astype(f32), mask_NT),
                 dual_clip_frac=token_mean(dual_NT.astype(f32), mask_NT),
                 ratio_mean=token_mean(ratio_NT, mask_NT),
                 ratio_max=jnp.where(jnp.any(valid_NT),
                                     jnp.max(jnp.where(valid_NT, ratio_NT, -jnp.inf)), 0.0))
  return loss, metrics


def _sum_inputs(seed, n=12, t=9):
  """make_inputs with more rows (two fully masked) and per-sequence TIS weights."""
  logp, old, adv, mask, ref, entropy = make_inputs(seed, n=5, t=t)
  rng = np.random.default_rng(seed)
  reps = -(-n // 5)
  tile = lambda x: np.concatenate([x] * reps)[:n]   # noqa: E731
  logp, old, adv, ref, entropy = (tile(x) + 0.1 * rng.standard_normal(tile(x).shape).astype(
      np.float32) for x in (logp, old, adv, ref, entropy))
  mask = tile(mask)
  w = rng.uniform(0.5, 2.0, (n,)).astype(np.float32)
  return logp, old, adv, mask, ref, entropy, w


@pytest.mark.parametrize("agg", AGGS)
def test_policy_loss_is_unchanged_and_microbatch_sums_add_up(agg):
  """policy_loss gives the old implementation's values (its metrics bit for bit, eager; the loss
  within f32 rounding of the sums), and splitting the rows into k microbatches and combining
  policy_loss_sums as Σ sums / Σ denominators gives the full-batch loss, pg_loss and token means
  within f32 rounding of the sums."""
  logp, old, adv, mask, ref, entropy, w = _sum_inputs(seed=11 + len(agg))
  opts = dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0, kl_coef=0.05, kl_estimator="k3",
              agg=agg, entropy_coef=0.01)
  args = dict(ref_logprobs=ref, entropy=entropy, is_weights=w)
  loss, metrics = rl.policy_loss(logp, old, adv, mask, **opts, **args)
  want, want_metrics = old_policy_loss(logp, old, adv, mask, **opts, **args)
  # f32 rounding of a sum of m terms is at most m * eps * Σ|terms|; here m <= the valid tokens
  # and each token's term is at most |A| * dual_clip * w + kl_coef * 10 + entropy_coef * H
  eps = float(np.finfo(np.float32).eps)
  m = float(mask.sum())
  term_max = (np.abs(adv).max() * 3.0 * w.max() + 0.05 * 10.0
              + 0.01 * np.abs(entropy[mask > 0]).max())
  denom_full = float(rl.policy_loss_sums(logp, old, adv, mask, **opts, **args)[1]["denom"])
  tol = 2 * m * eps * m * term_max / max(denom_full, 1.0)
  np.testing.assert_allclose(loss, want, rtol=0, atol=tol)   # the old one summed per term
  assert set(metrics) == set(want_metrics)
  for k, v in want_metrics.items():
    np.testing.assert_array_equal(metrics[k], v, err_msg=k)

  n = logp.shape[0]
  for k in (1, 2, 3, 4, 6):
    parts = [rl.policy_loss_sums(logp[i::k], old[i::k], adv[i::k], mask[i::k], **opts,
                                 ref_logprobs=ref[i::k], entropy=entropy[i::k],
                                 is_weights=w[i::k]) for i in range(k)]
    sums = {key: sum(float(p[1][key]) for p in parts) for key in parts[0][1]
            if key not in ("ratio_max", "ratio_dev")}
    loss_sum = sum(float(p[0]) for p in parts)
    denom = max(sums["denom"], 1.0)
    assert denom == max(denom_full, 1.0)
    np.testing.assert_allclose(loss_sum / denom, float(loss), rtol=0, atol=tol, err_msg=k)
    np.testing.assert_allclose(sums["pg"] / denom, float(metrics["pg_loss"]), rtol=0, atol=tol)
    tokens = max(sums["tokens"], 1.0)
    for key, name in (("kl", "kl"), ("clip", "clip_frac"), ("ratio", "ratio_mean")):
      np.testing.assert_allclose(sums[key] / tokens, float(metrics[name]), rtol=4 * n * eps,
                                 err_msg=f"{k} {key}")
    assert max(float(p[1]["ratio_max"]) for p in parts) == float(metrics["ratio_max"])
  # the denominators: valid tokens, rows with a valid token, or N * T
  want_denom = {"token-mean": mask.sum(), "seq-mean-token-mean": (mask.sum(1) > 0).sum(),
                "seq-mean-token-sum": (mask.sum(1) > 0).sum(),
                "seq-mean-token-sum-norm": mask.size}[agg]
  assert denom_full == want_denom


def test_policy_loss_sums_gradient_is_the_loss_gradient_times_the_denominator():
  logp, old, adv, mask, ref, entropy, w = _sum_inputs(seed=3)
  opts = dict(dual_clip=3.0, kl_coef=0.1, agg="seq-mean-token-mean", ref_logprobs=ref,
              entropy=entropy, entropy_coef=0.01)
  g_mean = jax.grad(lambda lp: rl.policy_loss(lp, old, adv, mask, **opts)[0])(logp)
  (loss_sum, sums), g_sum = jax.value_and_grad(
      lambda lp: rl.policy_loss_sums(lp, old, adv, mask, **opts), has_aux=True)(logp)
  np.testing.assert_allclose(np.asarray(g_sum) / float(sums["denom"]), g_mean, rtol=1e-5,
                             atol=1e-7)
