"""Sampler/trainer log-prob mismatch (rlvr_jax.rl.step, rlvr_jax.rl.losses): importance weights in
the policy loss against a numpy reference, the mismatch/* metrics against hand-computed values
over all rows, old_logprobs="trainer" (first ratio 1 whatever the sampler said) with truncated
IS equal to explicit weights, and the config check before compiling.

The "sampler" log-probs are the trainer's own (recomputed with S.response_logprobs) plus a
known per-token delta, so the measured gap is -delta up to f32 rounding (~1e-6 here).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlvr_jax import rl, sharding
from rlvr_jax.rl import loop as rl_loop
from rlvr_jax.rl import losses
from rlvr_jax.rl import step as S
from rlvr_jax.train import optim, state as state_lib
from test_rl_step import CFG, EOS, OPTIONS, PAD, V, host, make_prompts

AGGS = sorted(rl.AGGREGATIONS)


# ---------------------------------------------------------------------------------- references
def np_tis_weights(trainer_NT, sampler_NT, mask_NT, level, cap):
  """min(exp(log-ratio), cap) per token, or per row of the summed valid log-ratios (float64)."""
  d_NT = np.where(mask_NT > 0, trainer_NT.astype(np.float64) - sampler_NT, 0.0)
  x = d_NT if level == "token" else d_NT.sum(1)
  return np.minimum(np.exp(x), cap)


def np_aggregate(x_NT, mask_NT, agg):
  x_NT = np.where(mask_NT > 0, x_NT, 0.0)
  rows_N = mask_NT.sum(1) > 0
  n_rows = max(rows_N.sum(), 1)
  if agg == "token-mean":
    return x_NT.sum() / max(mask_NT.sum(), 1)
  if agg == "seq-mean-token-mean":
    return sum(x_NT[i].sum() / mask_NT[i].sum() for i in range(len(x_NT)) if rows_N[i]) / n_rows
  if agg == "seq-mean-token-sum":
    return x_NT.sum() / n_rows
  assert agg == "seq-mean-token-sum-norm"
  return x_NT.sum() / x_NT.size


def np_policy_loss(logp, old, adv_N, mask, w, *, clip, dual, ref, kl_coef, ent, ent_coef, agg):
  """PPO clip + dual clip, the pg term weighted by w ([N] or [N, T]); k3 KL, entropy unweighted."""
  logp, old, ref, ent = (np.asarray(x, np.float64) for x in (logp, old, ref, ent))
  valid = mask > 0
  ratio = np.exp(np.where(valid, logp - old, 0.0))
  a = adv_N[:, None].astype(np.float64)
  pg = np.maximum(-a * ratio, -a * np.clip(ratio, 1 - clip, 1 + clip))
  pg = np.where(a < 0, np.minimum(pg, -a * dual), pg)
  w_NT = np.broadcast_to(w[:, None] if w.ndim == 1 else w, pg.shape)
  pg = np.where(valid, pg * np.where(valid, w_NT, 0.0), 0.0)
  d = np.where(valid, ref - logp, 0.0)
  kl = np.clip(np.exp(d) - d - 1, -10, 10)
  return (np_aggregate(pg, mask, agg) + kl_coef * np_aggregate(kl, mask, agg)
          - ent_coef * np_aggregate(ent, mask, agg))


# ---------------------------------------------------------------------------------- policy_loss
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("agg", AGGS)
def test_policy_loss_is_weights_match_numpy(agg, level):
  """is_weights (token [N, T] and sequence [N], some capped) weight the pg term only, with the
  aggregation unchanged, for every agg; rows without valid tokens (and NaN weights on padding)
  contribute nothing. The gradient is the weighted one: with no KL / entropy term, token
  weights scale each token's gradient."""
  r = np.random.default_rng(len(agg) + len(level))
  n, t, cap = 6, 5, 1.5
  logp = r.normal(-1.5, 0.5, (n, t)).astype(np.float32)
  old = (logp + r.normal(0, 0.3, (n, t))).astype(np.float32)
  sampler = old + r.normal(0, 0.4, (n, t))
  sampler[0] -= 0.6                                    # ratios > cap: capped (token and row)
  sampler[1] += 0.6                                    # ratios < 1
  sampler = sampler.astype(np.float32)
  ref = (logp + r.normal(0, 0.2, (n, t))).astype(np.float32)
  ent = r.uniform(0, 2, (n, t)).astype(np.float32)
  adv = np.array([1.0, -1.0, 0.5, -2.0, 1.5, -0.7], np.float32)
  mask = (r.random((n, t)) < 0.75).astype(np.float32)
  mask[2] = 0.0                                        # a row without valid tokens
  mask[:2, :3] = 1.0
  w_np = np_tis_weights(old, sampler, mask, level, cap)
  w_valid = w_np[mask > 0] if level == "token" else w_np[mask.sum(1) > 0]
  assert np.any(w_valid == cap) and np.any(w_valid < 1.0)
  w = losses.tis_weights(old, sampler, mask, level=level, cap=cap)
  np.testing.assert_allclose(np.asarray(w), w_np, rtol=1e-6)
  w_in = np.array(w)
  if level == "token":
    w_in[mask == 0] = np.nan                           # garbage on padding never counts
  else:
    w_in[2] = np.nan
  opts = dict(clip_low=0.2, clip_high=0.2, dual_clip=3.0, kl_coef=0.05, kl_estimator="k3",
              agg=agg, entropy_coef=0.01)
  loss, metrics = rl.policy_loss(logp, old, adv, mask, ref_logprobs=ref, entropy=ent,
                                 is_weights=w_in, **opts)
  want = np_policy_loss(logp, old, adv, mask, w_np, clip=0.2, dual=3.0, ref=ref, kl_coef=0.05,
                        ent=ent, ent_coef=0.01, agg=agg)
  unweighted = np_policy_loss(logp, old, adv, mask, np.ones(n), clip=0.2, dual=3.0, ref=ref,
                              kl_coef=0.05, ent=ent, ent_coef=0.01, agg=agg)
  assert abs(want - unweighted) > 1e-3                 # the weights change the loss
  np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(metrics["pg_loss"]),
                             np_policy_loss(logp, old, adv, mask, w_np, clip=0.2, dual=3.0,
                                            ref=ref, kl_coef=0.0, ent=ent, ent_coef=0.0,
                                            agg=agg), rtol=1e-5, atol=1e-6)

  pg_only = functools.partial(rl.policy_loss, old_logprobs=old, advantages=adv, mask=mask,
                              dual_clip=3.0, agg=agg)
  g_w = jax.grad(lambda lp: pg_only(lp, is_weights=w_in)[0])(logp)
  g_1 = jax.grad(lambda lp: pg_only(lp)[0])(logp)
  w_NT = np.broadcast_to(w_np[:, None] if level == "sequence" else w_np, (n, t))
  np.testing.assert_allclose(np.asarray(g_w), np.where(mask > 0, w_NT, 0.0) * np.asarray(g_1),
                             rtol=1e-5, atol=1e-7)
  assert np.all(np.isfinite(g_w)) and np.all(np.asarray(g_w)[2] == 0.0)

  with pytest.raises(ValueError, match="is_weights must be"):
    rl.policy_loss(logp, old, adv, mask, is_weights=np.ones((n, t + 1), np.float32))


# ---------------------------------------------------------------------------------- update fixtures
B, G, M = 4, 2, 5
N = B * G
SGD = optim.Optimizer(optax.sgd(1.0), lambda count: 1.0)
LENGTHS = np.array([5, 3, 0, 5, 4, 2, 5, 3], np.int32)        # row 2: no valid token
# Per-token delta added to the sampler's log-probs (valid tokens; rows 1, 3, 5, 7 are the
# second minibatch of the strided split with minibatches=2: they hold the largest values).
DELTA = np.array([[0.02, -0.05, 0.03, 0.00, 0.01],
                  [0.50, -0.30, 0.04, 9.00, 9.00],
                  [9.00, 9.00, 9.00, 9.00, 9.00],
                  [-0.80, 0.20, -0.01, 0.06, -0.30],
                  [0.00, 0.05, -0.04, 0.02, 9.00],
                  [-0.25, 0.03, 9.00, 9.00, 9.00],
                  [0.01, -0.02, 0.00, 0.04, -0.03],
                  [0.30, -0.60, -0.05, 9.00, 9.00]], np.float32)   # 9: padding garbage
VALID = (np.arange(M)[None, :] < LENGTHS[:, None]).astype(np.float32)
KEEP = np.array([1, 1, 1, 1, 1, 1, 0, 1], np.float32)             # row 6 out of the loss


@functools.lru_cache(maxsize=None)
def fixture():
  """(params, ref params, prompts, prompt lengths, tokens, the trainer's log-probs)."""
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  params = host(sharding.init_params(CFG, jax.random.key(1), mesh))
  ref_params = jax.tree.map(lambda x: x + 0.02 * np.random.default_rng(2).standard_normal(
      x.shape).astype(np.float32), params)
  prompts, _ = make_prompts(B, 1)
  plens = np.array([4, 2, 3, 4], np.int32)
  tokens = np.random.default_rng(0).integers(3, V, (N, M)).astype(np.int32)
  tokens[VALID == 0] = PAD
  logp = np.asarray(jax.jit(functools.partial(S.response_logprobs, CFG))(
      params, np.repeat(prompts, G, 0), np.repeat(plens, G, 0), tokens)[0])
  return params, ref_params, prompts, plens, tokens, logp


def run_update(settings, sampler_logp, adv):
  params, ref_params, prompts, plens, tokens, _ = fixture()
  spec = S.RLSpec(CFG, SGD, settings, S.RewardSpec.make({"boxed_answer_match": 1.0}, OPTIONS))
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               opt_state=SGD.tx.init(params),
                               rng=jax.random.key_data(jax.random.key(0)))
  rollout = S.Rollout(tokens=tokens, lengths=LENGTHS, logprobs=sampler_logp,
                      entropy=np.zeros((N, M), np.float32),
                      self_certainty=np.zeros((N, M), np.float32))
  scored = S.Scored(rewards=np.zeros(N, np.float32), advantages=adv,
                    loss_mask=VALID * KEEP[:, None])
  new_state, metrics = jax.jit(functools.partial(S.update_phase, spec=spec))(
      state, ref_params, rollout, scored, prompts, plens)
  return host(new_state.params), host(metrics)


def settings_of(**kw):
  base = dict(group_size=G, max_new_tokens=M, pad_id=PAD, eos_ids=(EOS,), kl_coef=0.1,
              dual_clip=3.0)
  return S.RLSettings(**{**base, **kw})


ADV = np.array([-1.0, 1.0, 0.5, -0.5, 2.0, -2.0, 0.3, -0.3], np.float32)


def hand_mismatch():
  """mismatch/* of the gap d = trainer - (trainer + DELTA) = -DELTA, over all valid tokens."""
  valid = VALID > 0
  d = np.where(valid, -DELTA.astype(np.float64), 0.0)
  ratio = np.exp(d)
  rows = valid.any(1)
  return {"mismatch/logp_abs_mean": np.abs(d)[valid].mean(),
          "mismatch/logp_abs_max": np.abs(d)[valid].max(),
          "mismatch/ratio_out_frac": ((ratio < 0.9) | (ratio > 1.1))[valid].mean(),
          "mismatch/seq_logratio_abs_mean": np.abs(d.sum(1))[rows].mean()}


# ---------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("minibatches", [2, 1])
def test_mismatch_metrics_over_all_rows(minibatches):
  """With the sampler's log-probs off by DELTA, mismatch/* equal the hand-computed values over
  every row's valid tokens: with minibatches=2 from the extra all-rows forward (the second
  minibatch holds the largest gaps, so first-minibatch-only numbers would differ), with
  minibatches=1 from the update's own forward. Loss-masked rows count; padding does not."""
  *_, logp = fixture()
  _, m = run_update(settings_of(minibatches=minibatches), logp + DELTA, ADV)
  want = hand_mismatch()
  first = np.arange(N) % minibatches == 0
  first_only = np.abs(DELTA)[(VALID > 0) & first[:, None]].max()
  if minibatches == 2:
    assert want["mismatch/logp_abs_max"] > first_only + 0.1    # the test can tell them apart
  assert set(k for k in m if k.startswith("mismatch/")) == set(want)   # tis off: no tis keys
  for k, v in want.items():
    np.testing.assert_allclose(m[k], v, rtol=1e-5, atol=1e-5, err_msg=k)
  assert 0.2 < want["mismatch/ratio_out_frac"] < 0.6
  # ratio_dev_first (kept for compatibility): the first minibatch's loss tokens only
  dev = np.abs(np.exp(-DELTA) - 1.0)[(VALID * KEEP[:, None] > 0) & first[:, None]].max()
  np.testing.assert_allclose(m["policy/ratio_dev_first"], dev, rtol=1e-4, atol=1e-5)


def test_mismatch_metrics_need_log_mismatch_with_minibatches():
  """log_mismatch=False with minibatches > 1 skips the extra forward: mismatch/* are NaN."""
  *_, logp = fixture()
  _, m = run_update(settings_of(minibatches=2, log_mismatch=False), logp + DELTA, ADV)
  assert np.isnan(m["mismatch/logp_abs_mean"]) and np.isfinite(m["loss"])


# ---------------------------------------------------------------------------------- old = trainer
def reference_params(level, minibatches, cap):
  """SGD(lr=1) steps built by hand: minibatch i (rows i, i + k, ...) in order, each at the params
  the previous one left, the ratio against the trainer's PRE-update log-probs and the pg term
  weighted by explicit numpy TIS weights (rl.policy_loss(..., is_weights=w))."""
  params, ref_params, prompts, plens, tokens, logp = fixture()
  rows_p, rows_l = np.repeat(prompts, G, 0), np.repeat(plens, G, 0)
  ref_logp = np.asarray(jax.jit(functools.partial(S.response_logprobs, CFG))(
      ref_params, rows_p, rows_l, tokens)[0])
  w = np_tis_weights(logp, logp + DELTA, VALID, level, cap).astype(np.float32)
  mask = VALID * KEEP[:, None]
  rows_p, rows_l, toks, old, adv, mask, ref_logp, w_j = (
      jnp.asarray(x) for x in (rows_p, rows_l, tokens, logp, ADV, mask, ref_logp, w))

  @jax.jit
  def grads(p, idx):
    def loss_fn(p):
      lp, _ = S.response_logprobs(CFG, p, rows_p[idx], rows_l[idx], toks[idx])
      return rl.policy_loss(lp, old[idx], adv[idx], mask[idx], dual_clip=3.0,
                            ref_logprobs=ref_logp[idx], kl_coef=0.1, is_weights=w_j[idx])[0]
    return jax.grad(loss_fn)(p)

  for i in range(minibatches):
    g = grads(params, np.arange(i, N, minibatches))
    params = jax.tree.map(lambda p, d: np.asarray(p) - np.asarray(d), params, g)
  return params, w


@pytest.mark.parametrize("level,minibatches,microbatches",
                         [("token", 2, 1), ("sequence", 1, 2)])
def test_trainer_old_logprobs_and_tis_equal_explicit_weights(level, minibatches, microbatches):
  """old_logprobs="trainer": the first update's ratio is 1 up to f32 rounding although the
  sampler's log-probs are off by up to 0.8 nats, and the update with tis equals the hand-built
  one with explicit weights (minibatches=2: the second minibatch keeps the PRE-update trainer
  log-probs as old; minibatches=1: the update's own forward supplies them)."""
  *_, logp = fixture()
  cap = 2.0
  settings = settings_of(minibatches=minibatches, microbatches=microbatches,
                         old_logprobs="trainer", tis=level, tis_cap=cap)
  got, m = run_update(settings, logp + DELTA, ADV)
  assert m["policy/ratio_dev_first"] < 1e-5
  want, w = reference_params(level, minibatches, cap)
  before = fixture()[0]
  jax.tree.map(lambda g, r, b: np.testing.assert_allclose(b - g, b - r, rtol=2e-4, atol=2e-6),
               got, want, before)
  assert max(np.abs(b - g).max() for g, b in zip(jax.tree.leaves(got),
                                                  jax.tree.leaves(before))) > 1e-3
  for k, v in hand_mismatch().items():                 # measured the same way as with "sampler"
    np.testing.assert_allclose(m[k], v, rtol=1e-5, atol=1e-5, err_msg=k)
  # tis metrics: over valid tokens ("token") or rows with a valid token ("sequence")
  valid = VALID > 0
  counted = w[valid] if level == "token" else w[valid.any(1)]
  np.testing.assert_allclose(m["mismatch/tis_weight_mean"], counted.mean(), rtol=1e-5)
  np.testing.assert_allclose(m["mismatch/tis_clipped_frac"], np.mean(counted >= cap - 1e-6),
                             rtol=1e-6)
  assert 0 < m["mismatch/tis_clipped_frac"] < 1


# ---------------------------------------------------------------------------------- config checks
def test_tis_without_trainer_old_logprobs_fails_before_compiling(tmp_path, monkeypatch):
  def no_compile(*a, **k):
    raise AssertionError("nothing may be jitted for a bad config")
  monkeypatch.setattr(rl_loop.step_lib, "jit_rl_phases", no_compile)
  monkeypatch.setattr(rl_loop.step_lib, "jit_rl_step", no_compile)
  from test_rl_loop import load_config
  c = load_config()
  c.rl.tis = "token"                                   # rl.old_logprobs stays "sampler"
  with pytest.raises(ValueError, match=r"rl\.tis='token' needs rl\.old_logprobs='trainer'"):
    rl_loop.run(c, str(tmp_path / "a"))

  # the same combination built in code fails at trace time (eval_shape compiles nothing)
  settings = settings_of(tis="sequence")
  spec = S.RLSpec(CFG, SGD, settings, S.RewardSpec.make({"boxed_answer_match": 1.0}, OPTIONS))
  params, ref_params, prompts, plens, tokens, logp = fixture()
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               opt_state=SGD.tx.init(params),
                               rng=jax.random.key_data(jax.random.key(0)))
  rollout = S.Rollout(tokens=tokens, lengths=LENGTHS, logprobs=logp, entropy=logp,
                      self_certainty=logp)
  scored = S.Scored(rewards=np.zeros(N, np.float32), advantages=ADV, loss_mask=VALID)
  with pytest.raises(ValueError, match=r"tis='sequence' needs old_logprobs='trainer'"):
    jax.eval_shape(functools.partial(S.update_phase, spec=spec), state, ref_params, rollout,
                   scored, prompts, plens)
  for bad, match in ((dict(old_logprobs="rollout"), "old_logprobs='rollout'"),
                     (dict(tis="seq"), "tis='seq'"),
                     (dict(tis_cap=0.0), "tis_cap=0.0")):
    with pytest.raises(ValueError, match=match):
      settings_of(**bad)
