"""The RL step (rlvr_jax.rl.step): ratio 1 on the first minibatch, the loss gradient against a
hand-built reference, sharded == single device, rewards of the score phase against host
references, errors before compiling, and RL actually learning on a tiny synthetic task.

Token task used throughout (vocabulary 32): 0 pad, 1 bos, 2 eos, 3 "\\boxed{", 4 "}",
5..14 the digits 0..9, 15..31 filler. A prompt is [bos, digit, filler, filler]; the right
response is [\\boxed{, the same digit, }, eos].
"""
import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import rlvr_jax as rj
from rlvr_jax import sharding
from rlvr_jax.rl import rewards as rewards_lib
from rlvr_jax.rl import step as S
from rlvr_jax.train import optim, state as state_lib, steps as train_steps

PAD, BOS, EOS, BOX, CLOSE, D0, F0, V = 0, 1, 2, 3, 4, 5, 15, 32
CFG = rj.get_model_config("toy-1m", vocab_size=V, num_layers=2, hidden_size=32,
                          intermediate_size=64, num_heads=2, num_kv_heads=1, head_dim=16,
                          max_seq_len=16)
OPTIONS = {"boxed_ids": (BOX,), "close_id": CLOSE}


def optim_config(lr, clip=1.0):
  return ml_collections.ConfigDict(dict(lr=lr, schedule="constant", warmup=0, final_lr_frac=0.0,
                                        b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0,
                                        clip_norm=clip))


def make_prompts(n, seed):
  r = np.random.default_rng(seed)
  d = r.integers(0, 10, n)
  f = r.integers(F0, V, (n, 2))
  p = np.stack([np.full(n, BOS), D0 + d, f[:, 0], f[:, 1]], 1).astype(np.int32)
  return p, d


def labels_of(digits, width=2):
  a = np.full((len(digits), width), -1, np.int32)
  a[:, 0] = D0 + np.asarray(digits)
  return a


def host(tree):
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


# ---------------------------------------------------------------------------------- fixtures
def sft_batch(r, b, p_correct):
  """SFT data where only a p_correct share of the targets copy the prompt's digit."""
  p, d = make_prompts(b, int(r.integers(1 << 30)))
  wrong = (d + r.integers(1, 10, b)) % 10
  target = np.where(r.random(b) < p_correct, d, wrong)
  resp = np.stack([np.full(b, BOX), D0 + target, np.full(b, CLOSE), np.full(b, EOS)], 1)
  tokens = np.concatenate([p, resp], 1).astype(np.int32)
  mask = np.zeros(tokens.shape, np.float32)
  mask[:, 3:7] = 1                       # positions 3..6 predict the response tokens
  return {"tokens": tokens, "loss_mask": mask}


@pytest.fixture(scope="module")
def sft_params():
  """A tiny model SFT'd on data that copies the digit only 30% of the time (RL has headroom)."""
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  opt = optim.make_optimizer(optim_config(5e-3), 1000)
  state = state_lib.create_train_state(CFG, opt, mesh, jax.random.key(0))
  step = train_steps.jit_train_step(CFG, opt, mesh, state_lib.state_shardings(CFG, opt, mesh))
  r = np.random.default_rng(0)
  for _ in range(200):
    state, _ = step(state, sft_batch(r, 64, 0.3))
  return host(state.params)


GROUP, PROMPTS = 8, 16
RL_OPT = optim.make_optimizer(optim_config(3e-3), 1000)
RL_SPEC = S.RLSpec(CFG, RL_OPT, S.RLSettings(group_size=GROUP, max_new_tokens=4, pad_id=PAD,
                                             eos_ids=(EOS,), kl_coef=0.01, dual_clip=3.0),
                   S.RewardSpec.make({"boxed_answer_match": 1.0}, OPTIONS))


@functools.lru_cache(maxsize=None)
def fused_step(n_devices: int):
  """(jitted rl_step, state shardings, mesh) of RL_SPEC on the first n_devices devices."""
  mesh = sharding.make_mesh((-1, 1, 1), jax.devices()[:n_devices])
  shard = state_lib.state_shardings(CFG, RL_OPT, mesh)
  return S.jit_rl_step(RL_SPEC, mesh, shard), shard, mesh


def rl_batch(prompts, label_digits, true_digits, lengths=None):
  return {"prompt_tokens": prompts,
          "prompt_lengths": np.full(len(prompts), 4, np.int32) if lengths is None else lengths,
          "answer_tokens": labels_of(label_digits), "true_answer_tokens": labels_of(true_digits)}


# ---------------------------------------------------------------------------------- sharding
# The sharded == single-device check compares deterministic functions of the same inputs: one
# rollout is sampled once (1 device) and fed to the score and update phases on 1 device and on
# the 8-device mesh. (Re-sampling with updated params would compare trajectories: one token
# flipped by rounding changes everything after it.) The update uses SGD, whose step is lr x the
# gradient: Adam divides by sqrt(v), so an element whose gradient is rounding-sized (GRPO
# advantages cancel within a group) moves by up to lr either way, and its params could not be
# compared by any tolerance that still means something.
SGD_LR = 1.0
SGD_OPT = optim.Optimizer(optax.sgd(SGD_LR), lambda count: SGD_LR)
SGD_SPEC = dataclasses.replace(RL_SPEC, optimizer=SGD_OPT)

# Tolerances from f32 rounding. Summing n terms x_i in f32 errs by at most (n - 1) u sum|x_i|
# (u = eps / 2; Higham, Accuracy and Stability of Numerical Algorithms, eq. 4.4), so two
# summation orders (one device; per-device partial sums + all-reduce) differ by at most
# n eps sum|x_i|, i.e. by n eps cond relative to the sum (cond = sum|x_i| / |sum x_i|). The
# longest sums are the weight gradients' over the batch's rows x positions, n = 128 x 8 = 1024:
# n eps = 1.2e-4, a worst case (rounding errors tend to add up like sqrt(n)): the differences
# seen on x86 CPUs are 20-1000x below the tolerances built from it.
# rtol = n eps covers values with cond ~ 1; atol = n eps x the size of the summed terms covers
# the ones that cancel (a GRPO loss or gradient element sums terms A_i x ... with sum A_i = 0
# per group). A sharding bug (a missing all-reduce, a normaliser off by the device count) is
# off by O(1) relative and fails either way.
F32_EPS = float(np.finfo(np.float32).eps)
N_TERMS = PROMPTS * GROUP * (4 + 4)                     # rows x (prompt + response positions)
REL_TOL = N_TERMS * F32_EPS
# Metrics are token means (sum / count), off by n eps x the mean size of their terms:
# advantages have unit std within each group (mean |A| <= 1), the ratios stay near 1, KL terms
# and fractions are <= 1, so 3 bounds that mean size: atol = 3 REL_TOL. Norms (grad_norm,
# param_norm, update_ratio) sum squares (cond = 1) over all the parameters: rtol = 2 n_params
# eps (update_ratio is a quotient of two norms; the gradient itself is compared element by
# element, through the SGD steps). A clip fraction also counts the tokens whose ratio lies
# within rounding of a clip boundary, each of which may count on one mesh only: 1 / (loss
# tokens) more.
METRIC_TERM_SIZE = 3.0
NORM_KEYS = ("grad_norm", "param_norm", "update_ratio")


def assert_metrics_close(got, want, what, n_params, n_tokens):
  assert got.keys() == want.keys(), what
  for key in want:
    rtol = 2 * n_params * F32_EPS if key in NORM_KEYS else REL_TOL
    atol = REL_TOL * METRIC_TERM_SIZE + (1.0 / n_tokens if key.endswith("clip_frac") else 0.0)
    np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=atol,
                               err_msg=f"{what}: {key}")


def assert_steps_close(params_got, params_want, params_before, what):
  """The SGD steps (before - after = lr x gradient) agree per element to rtol REL_TOL and an atol
  of REL_TOL x the tensor's largest step (the size taken for the summed terms), plus one ulp of
  the param (<= eps x |param|: after - before rounds to the nearest float on each mesh)."""
  def check(path, got, want, before):
    step_got = before.astype(np.float64) - got
    step_want = before.astype(np.float64) - want
    atol = REL_TOL * np.abs(step_want).max() + F32_EPS * np.abs(before).max()
    np.testing.assert_allclose(step_got, step_want, rtol=REL_TOL, atol=atol,
                               err_msg=f"{what}: {jax.tree_util.keystr(path)}")
  jax.tree_util.tree_map_with_path(check, params_got, params_want, params_before)


def sgd_phases(shape: tuple[int, int, int], cfg=CFG):
  """(jitted phases of SGD_SPEC for `cfg`, state shardings, mesh) on a (data, fsdp, tensor)
  mesh of the first data * fsdp * tensor devices."""
  mesh = sharding.make_mesh(shape, jax.devices()[:int(np.prod(shape))])
  shard = state_lib.state_shardings(cfg, SGD_OPT, mesh)
  return S.jit_rl_phases(dataclasses.replace(SGD_SPEC, cfg=cfg), mesh, shard), shard, mesh


def as_two_kv_heads(params):
  """The same function with its single key/value head stored twice (GQA 2:1 -> MHA), so that
  kv_heads can be split over tensor = 2."""
  def widen(path, x):
    name = jax.tree_util.keystr(path)
    if ("k_proj" in name or "v_proj" in name) and x.ndim >= 3 and x.shape[-2] == 1:
      return np.repeat(np.asarray(x), 2, axis=-2)
    return np.asarray(x)
  return jax.tree_util.tree_map_with_path(widen, params)


def test_sharded_update_equals_single_device_and_first_ratio_is_one(sft_params):
  """One sampled rollout, scored and then trained on twice (two SGD updates) on several meshes
  and on 1 device: rewards, advantages, metrics and parameter steps agree to f32 rounding.
  Meshes: data-parallel 8, and (data, fsdp, tensor) = (2, 2, 2) for the same model with its
  key/value head stored twice (tensor = 2 needs 2 kv heads). In the first update the ratio
  (recomputed log-probs / sampler log-probs) is 1 and the KL to the reference (the same params)
  0; in the second, from the updated params, neither."""
  prompts, digits = make_prompts(PROMPTS, 0)
  lengths = np.where(np.arange(PROMPTS) % 3 == 1, 3, 4).astype(np.int32)   # ragged prompts
  batch = rl_batch(prompts, digits, digits, lengths)
  k_sample, k_reward = S.step_keys(jax.random.key(5))
  phases, shard, _ = sgd_phases((1, 1, 1))
  rollout = host(phases.sample(jax.device_put(sft_params, shard.params), prompts, lengths,
                               k_sample))
  assert rollout.tokens.shape == (PROMPTS * GROUP, 4)
  mha = CFG.replace(num_kv_heads=2)
  variants = {"gqa": (CFG, sft_params, ((8, 1, 1),)),
              "mha": (mha, as_two_kv_heads(sft_params), ((2, 2, 2),))}
  n_params = sum(x.size for x in jax.tree.leaves(sft_params))
  for name, (cfg, params, shapes) in variants.items():
    scores, updates = {}, {}
    for shape in ((1, 1, 1), *shapes):
      phases, shard, mesh = sgd_phases(shape, cfg)
      scores[shape] = host(phases.score(rollout, batch, k_reward))
      kept, scored, _ = scores[(1, 1, 1)]           # every mesh trains on the same inputs
      state = state_lib.create_train_state(cfg, SGD_OPT, mesh, jax.random.key(0),
                                           jax.tree.map(jnp.asarray, params))
      ref = jax.device_put(params, shard.params)
      state, metrics1 = phases.update(state, ref, kept, scored, prompts, lengths)
      params1 = host(state.params)
      state, metrics2 = phases.update(state, ref, kept, scored, prompts, lengths)
      updates[shape] = (params1, host(metrics1), host(state.params), host(metrics2))

    kept1, scored1, m_score1 = scores[(1, 1, 1)]
    n_tokens = float(scored1.loss_mask.sum())
    assert 0 < m_score1["reward/mean"] < 1
    p1, m1, q1, n1 = updates[(1, 1, 1)]
    assert n1["policy/ratio_dev_first"] > 1e-3 and n1["policy/kl"] > 1e-6   # not after update 1
    assert m1["grad_norm"] > 1e-3
    for shape in ((1, 1, 1), *shapes):
      what = f"{name} {shape}"
      kept_n, scored_n, m_score_n = scores[shape]
      jax.tree.map(np.testing.assert_array_equal, kept_n, kept1)
      np.testing.assert_array_equal(scored_n.rewards, scored1.rewards)
      np.testing.assert_array_equal(scored_n.loss_mask, scored1.loss_mask)
      # advantages (r - group mean) / group std: sums of G = 8 terms of size <= 1 (G eps each),
      # then a square root and a division (an eps or two more): 4 G eps, relative and absolute
      np.testing.assert_allclose(scored_n.advantages, scored1.advantages,
                                 rtol=4 * GROUP * F32_EPS, atol=4 * GROUP * F32_EPS)
      assert_metrics_close(m_score_n, m_score1, f"score {what}", n_params, n_tokens)
      p_n, m_n, q_n, nn = updates[shape]
      assert m_n["policy/ratio_dev_first"] < 1e-5   # sampler log-probs == recomputed ones
      assert abs(m_n["policy/kl"]) < 1e-6           # policy == reference before update 1
      for m in (m_n, nn):
        assert m["num_updates"] == 1 and m["skipped"] == 0
      assert_metrics_close(m_n, m1, f"update 1, {what}", n_params, n_tokens)
      assert_metrics_close(nn, n1, f"update 2, {what}", n_params, n_tokens)
      assert_steps_close(p_n, p1, params, f"update 1, {what}")
      assert_steps_close(q_n, q1, params, f"updates 1 + 2, {what}")


# ---------------------------------------------------------------------------------- gradient
def contiguous_rows(prompts, plens, tokens, lengths):
  """Each row as one contiguous sequence prompt[:L] + response[:n], right-padded: (seq int32[N,
  Tmax], index int32[N, M] of the logits predicting response token t = L - 1 + t)."""
  n, m = tokens.shape
  t_max = int(max(plens) + m)
  seq = np.zeros((n, t_max), np.int32)
  for i in range(n):
    L, k = int(plens[i]), int(lengths[i])
    seq[i, :L + k] = np.concatenate([prompts[i, :L], tokens[i, :k]])
  index = np.minimum(plens[:, None] - 1 + np.arange(m)[None, :], t_max - 1).astype(np.int32)
  return seq, index


def contiguous_logprobs(params, seq, index, tokens):
  logits = rj.forward(CFG, params, seq)        # causal: the right padding is inert
  logp = jax.nn.log_softmax(jnp.take_along_axis(logits, index[..., None], axis=1), axis=-1)
  return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]


def reference_loss(params, seq, index, tokens, mask, old, ref, adv, *, kl_coef, clip=0.2,
                   dual=3.0):
  """The loss built by hand: PPO clip + dual clip (A < 0) + k3 KL per token, averaged over each
  row's tokens, then over the rows that have any (seq-mean-token-mean)."""
  logp = contiguous_logprobs(params, seq, index, tokens)
  ratio = jnp.exp(logp - old)
  a = adv[:, None]
  pg = jnp.maximum(-a * ratio, -a * jnp.clip(ratio, 1 - clip, 1 + clip))
  pg = jnp.where(a < 0, jnp.minimum(pg, -a * dual), pg)
  d = ref - logp
  kl = jnp.exp(d) - d - 1
  per_token = jnp.where(mask > 0, pg + kl_coef * kl, 0.0)
  rows = mask.sum(1) > 0
  row_mean = per_token.sum(1) / jnp.maximum(mask.sum(1), 1)
  loss = jnp.sum(jnp.where(rows, row_mean, 0.0)) / rows.sum()
  return loss, jnp.sum(jnp.where(mask > 0, kl, 0.0)) / mask.sum()


def test_update_gradient_equals_hand_built_reference():
  """One SGD(lr=1) update of update_phase (2 accumulated microbatches, clipping and the dual
  clip active, one row dropped from the loss) moves the params by exactly minus the gradient of
  the hand-built loss."""
  b, g, m = 4, 2, 5
  n = b * g
  r = np.random.default_rng(0)
  prompts, _ = make_prompts(b, 1)
  plens = np.array([4, 2, 3, 4], np.int32)
  tokens = r.integers(3, V, (n, m)).astype(np.int32)
  lengths = np.array([5, 3, 1, 5, 4, 2, 5, 3], np.int32)
  tokens[np.arange(m)[None, :] >= lengths[:, None]] = PAD
  params = host(sharding.init_params(CFG, jax.random.key(1),
                                    sharding.make_mesh((1, 1, 1), jax.devices()[:1])))
  ref_params = jax.tree.map(lambda x: x + 0.02 * np.random.default_rng(2).standard_normal(
      x.shape).astype(np.float32), params)
  rows_p = np.repeat(prompts, g, 0)
  rows_l = np.repeat(plens, g, 0)
  seq, index = contiguous_rows(rows_p, rows_l, tokens, lengths)
  logprobs = jax.jit(contiguous_logprobs)
  true_logp = np.asarray(logprobs(params, seq, index, tokens))   # to build off-policy "old"
  ref_logp = np.asarray(logprobs(ref_params, seq, index, tokens))
  old = true_logp + r.normal(0, 0.3, (n, m)).astype(np.float32)
  old[0, :2] -= 2.0                                   # ratio e^2 > 3: dual clip on row 0
  adv = np.array([-1.0, 1.0, 0.5, -0.5, 2.0, -2.0, 0.3, -0.3], np.float32)
  keep = np.array([1, 1, 1, 1, 0, 1, 1, 1], bool)     # row 4 dropped (dynamic sampling)
  valid = (np.arange(m)[None, :] < lengths[:, None]).astype(np.float32)
  mask = valid * keep[:, None]

  sgd = optim.Optimizer(optax.sgd(1.0), lambda count: 1.0)
  settings = S.RLSettings(group_size=g, max_new_tokens=m, pad_id=PAD, eos_ids=(EOS,),
                          kl_coef=0.1, dual_clip=3.0, agg="seq-mean-token-mean", microbatches=2)
  spec = S.RLSpec(CFG, sgd, settings, S.RewardSpec.make({"boxed_answer_match": 1.0}, OPTIONS))
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                 opt_state=sgd.tx.init(params),
                                 rng=jax.random.key_data(jax.random.key(0)))
  rollout = S.Rollout(tokens=tokens, lengths=lengths, logprobs=old,
                      entropy=np.zeros((n, m), np.float32),
                      self_certainty=np.zeros((n, m), np.float32))
  scored = S.Scored(rewards=np.zeros(n, np.float32), advantages=adv, loss_mask=mask)
  update = jax.jit(functools.partial(S.update_phase, spec=spec))
  new_state, metrics = update(state, ref_params, rollout, scored, prompts, plens)

  (loss, kl), grads = jax.jit(jax.value_and_grad(
      functools.partial(reference_loss, kl_coef=0.1), has_aux=True))(
          params, seq, index, tokens, mask, old, ref_logp, adv)
  step_taken = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), params,
                            host(new_state.params))
  jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6),
               step_taken, host(grads))
  np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(metrics["policy/kl"]), float(kl), rtol=1e-4, atol=1e-6)
  assert 0 < float(metrics["policy/clip_frac"]) < 1
  assert float(metrics["policy/dual_clip_frac"]) > 0
  assert int(new_state.step) == 1 and int(metrics["skipped"]) == 0

  # non-finite guard: a NaN advantage skips the update (params unchanged), the step advances
  bad = S.Scored(rewards=scored.rewards, advantages=np.where(np.arange(n) == 1, np.nan, adv),
                 loss_mask=mask)
  skipped_state, skipped_metrics = update(new_state, ref_params, rollout, bad, prompts, plens)
  assert int(skipped_metrics["skipped"]) == 1 and int(skipped_state.step) == 2
  jax.tree.map(np.testing.assert_array_equal, host(skipped_state.params), host(new_state.params))


def test_response_logprobs_equal_forward_on_contiguous_rows():
  """The [prompt block | response] layout with gathered hidden states gives the log-probs and
  entropies of rj.forward on each row as one contiguous sequence (numpy log-softmax)."""
  prompts, _ = make_prompts(3, 4)
  plens = np.array([4, 2, 3], np.int32)
  resp = np.random.default_rng(5).integers(3, V, (3, 4)).astype(np.int32)
  params = sharding.init_params(CFG, jax.random.key(2), sharding.make_mesh((1, 1, 1),
                                                                          jax.devices()[:1]))
  logp, ent = jax.jit(functools.partial(S.response_logprobs, CFG))(params, prompts, plens, resp)
  seq, index = contiguous_rows(prompts, plens, resp, np.full(3, 4))
  logits = np.asarray(jax.jit(functools.partial(rj.forward, CFG))(params, seq), np.float64)
  z = np.take_along_axis(logits, index[..., None], axis=1)               # [3, 4, V]
  lp = z - z.max(-1, keepdims=True)
  lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
  np.testing.assert_allclose(np.asarray(logp), np.take_along_axis(lp, resp[..., None], -1)[..., 0],
                             atol=2e-5)
  np.testing.assert_allclose(np.asarray(ent), -(np.exp(lp) * lp).sum(-1), atol=2e-5)


# ---------------------------------------------------------------------------------- rewards
def rollout_of(rows, m=6):
  """Rollout from token lists (each row ends with eos)."""
  n = len(rows)
  tokens = np.full((n, m), PAD, np.int32)
  for i, r in enumerate(rows):
    tokens[i, :len(r)] = r
  z = np.zeros((n, m), np.float32)
  return S.Rollout(tokens=tokens, lengths=np.array([len(r) for r in rows], np.int32),
                   logprobs=z, entropy=z + 0.5, self_certainty=z)


def answer(d, close=CLOSE):
  return [BOX, D0 + d, close, EOS]


def test_score_phase_rewards_against_host_references():
  """True and noisy-label rewards, agreement, the "}." close token, majority vote over V > G
  against a Counter, V == G equal to the registry's majority_vote, dynamic-sampling mask."""
  b, g = 2, 3
  prompts, _ = make_prompts(b, 0)
  lengths = np.full(b, 4, np.int32)
  close_dot = 30                                   # a merged "}." token
  rows = [answer(1), answer(1, close_dot), answer(2), answer(7), [BOX, D0 + 7, EOS], answer(3)]
  batch = {"prompt_tokens": prompts, "prompt_lengths": lengths,
           "answer_tokens": labels_of([1, 3]), "true_answer_tokens": labels_of([2, 3])}
  settings = S.RLSettings(group_size=g, max_new_tokens=6, pad_id=PAD, eos_ids=(EOS,),
                          dynamic_sampling="mask")
  spec = S.RLSpec(CFG, None, settings, S.RewardSpec.make({"boxed_answer_match": 1.0}, OPTIONS,
                                                          close_ids=(CLOSE, close_dot)))
  kept, scored, m = jax.jit(functools.partial(S.score_phase, spec=spec))(
      rollout_of(rows), batch, jax.random.key(0))
  want = np.array([1, 1, 0, 0, 0, 1], np.float32)          # label 1 for prompt 0, 3 for prompt 1
  truth = np.array([0, 0, 1, 0, 0, 1], np.float32)
  np.testing.assert_array_equal(np.asarray(scored.rewards), want)
  np.testing.assert_allclose(float(m["reward/mean"]), want.mean())
  np.testing.assert_allclose(float(m["reward/true_mean"]), truth.mean())
  np.testing.assert_allclose(float(m["reward/agreement"]), np.mean(want == truth))
  np.testing.assert_allclose(float(m["reward/true_corr"]), np.corrcoef(want, truth)[0, 1],
                             atol=1e-6)
  # Within groups the reward is perfectly wrong on prompt 0 and right on prompt 1: they cancel.
  np.testing.assert_allclose(float(m["reward/true_group_corr"]), 0.0, atol=1e-6)
  assert float(m["reward/zero_var_frac"]) == 0.0
  np.testing.assert_allclose(float(m["policy/entropy"]), 0.5)
  np.testing.assert_allclose(float(m["response/length_mean"]), 23 / 6)

  # all-equal group -> dropped from the loss under dynamic_sampling="mask"
  rows2 = [answer(5), answer(5), answer(5), answer(3), answer(4), answer(3)]
  _, scored2, m2 = jax.jit(functools.partial(S.score_phase, spec=spec))(
      rollout_of(rows2), batch, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(scored2.loss_mask).sum(1), [0, 0, 0, 4, 4, 4])
  np.testing.assert_allclose(float(m2["reward/zero_var_frac"]), 0.5)
  np.testing.assert_array_equal(np.asarray(scored2.advantages)[:3], 0.0)

  # majority vote: V = 5 votes, train on G = 3
  v = 5
  votes = [[4, 4, 6, 6, 6], [2, 9, 9, 2, 1]]
  rows3 = [answer(d) for p in votes for d in p]
  settings3 = S.RLSettings(group_size=g, vote_samples=v, max_new_tokens=6, pad_id=PAD,
                           eos_ids=(EOS,))
  spec3 = S.RLSpec(CFG, None, settings3, S.RewardSpec.make({"majority_vote": 1.0}, OPTIONS))
  kept3, scored3, m3 = jax.jit(functools.partial(S.score_phase, spec=spec3))(
      rollout_of(rows3), {**batch, "true_answer_tokens": labels_of([6, 1])}, jax.random.key(0))
  expect = []
  for p in votes:
    counts = collections.Counter(p)
    top = max(counts.values())
    winner = next(d for d in p if counts[d] == top)      # ties: first seen
    expect += [float(d == winner) for d in p[:g]]
  np.testing.assert_array_equal(np.asarray(scored3.rewards), expect)
  np.testing.assert_array_equal(np.asarray(kept3.tokens)[:, 1], [D0 + d for p in votes
                                                                 for d in p[:g]])
  np.testing.assert_allclose(float(m3["reward/true_mean"]), np.mean([0, 0, 1, 0, 0, 0]))

  # V == G: votes within the group, as the registry's majority_vote reward
  settings4 = S.RLSettings(group_size=g, max_new_tokens=6, pad_id=PAD, eos_ids=(EOS,))
  spec4 = S.RLSpec(CFG, None, settings4, S.RewardSpec.make({"majority_vote": 1.0}, OPTIONS))
  rows4 = rows + []
  _, scored4, _ = jax.jit(functools.partial(S.score_phase, spec=spec4))(
      rollout_of(rows4), batch, jax.random.key(0))
  ro = rollout_of(rows4)
  registry = rewards_lib.majority_vote_reward(
      rewards_lib.RolloutBatch(tokens=ro.tokens, lengths=ro.lengths), None, None, group_size=g,
      **OPTIONS)
  np.testing.assert_array_equal(np.asarray(scored4.rewards), np.asarray(registry))


def test_reward_fidelity_reads_continuous_proxies_within_groups():
  rng = np.random.default_rng(0)
  g = 4
  truth = rng.integers(0, 2, (8, g)).astype(np.float32)
  ease = np.repeat(rng.normal(0, 3, (8, 1)), g, 1)          # a per-prompt offset only
  faithful = truth + 0.1 * rng.normal(size=(8, g)) + ease     # continuous, tracks the truth
  m = jax.jit(S.reward_fidelity, static_argnums=2)(jnp.asarray(faithful.ravel()),
                                                  jnp.asarray(truth.ravel()), g)
  centred = lambda x: (x - x.mean(1, keepdims=True)).ravel()
  np.testing.assert_allclose(float(m["reward/true_group_corr"]),
                             np.corrcoef(centred(faithful), centred(truth))[0, 1], rtol=1e-5)
  np.testing.assert_allclose(float(m["reward/true_corr"]),
                             np.corrcoef(faithful.ravel(), truth.ravel())[0, 1], rtol=1e-5)
  assert float(m["reward/true_group_corr"]) > 0.95
  assert float(m["reward/true_corr"]) < 0.5                  # hidden by the prompt offsets
  prompt_only = jax.jit(S.reward_fidelity, static_argnums=2)(
      jnp.asarray(ease.ravel() + truth.mean(1, keepdims=True).repeat(g, 1).ravel()),
      jnp.asarray(truth.ravel()), g)
  assert np.isnan(float(prompt_only["reward/true_group_corr"]))  # constant within every group
  constant = S.reward_fidelity(jnp.ones(8 * g), jnp.asarray(truth.ravel()), g)
  assert np.isnan(float(constant["reward/true_corr"]))


def test_host_verifier_rewards_replace_the_token_match():
  """host_rewards decodes and checks answers by value (\\frac{1}{2} == 1/2); score_phase trains on
  batch["host_reward"] instead of the token comparison and reports host_true_reward."""
  texts = ["so \\boxed{\\frac{1}{2}}", "\\boxed{2}", "\\boxed{3}", "\\boxed{4}"]

  class Tok:
    def decode_batch(self, tokens, lengths):
      return [texts[int(t[0])] for t in tokens]

  tokens = np.arange(4, dtype=np.int32)[:, None].repeat(6, 1)
  reward, truth = S.host_rewards(Tok(), tokens, np.full(4, 6), ["1/2", "3"], ["1/2", "4"], 2)
  np.testing.assert_array_equal(reward, [1, 0, 1, 0])
  np.testing.assert_array_equal(truth, [1, 0, 0, 1])

  g = 2
  prompts, _ = make_prompts(2, 0)
  spec = S.RLSpec(CFG, None, S.RLSettings(group_size=g, max_new_tokens=6, pad_id=PAD,
                                          eos_ids=(EOS,)),
                  S.RewardSpec.make({"boxed_answer_match": 1.0}, OPTIONS, host_verifier=True))
  rows = [answer(9)] * 4                                   # token match would give 0 everywhere
  batch = {"prompt_tokens": prompts, "prompt_lengths": np.full(2, 4, np.int32),
           "answer_tokens": labels_of([1, 3]), "host_reward": reward, "host_true_reward": truth}
  _, scored, m = jax.jit(functools.partial(S.score_phase, spec=spec))(
      rollout_of(rows), batch, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(scored.rewards), reward)
  np.testing.assert_allclose(float(m["reward/true_mean"]), 0.5)
  np.testing.assert_allclose(float(m["reward/agreement"]), 0.5)
  with pytest.raises(ValueError, match="has no 'host_reward'"):
    jax.eval_shape(functools.partial(S.score_phase, spec=spec), rollout_of(rows),
                   {k: v for k, v in batch.items() if k != "host_reward"}, jax.random.key(0))


def _former_rewards(rollout, labels_BA, host_R, key, *, weights, v, g, close_ids, noise="",
                    noise_params=(), host=False):
  """score_phase's rewards as they were computed before majority vote, the host verifier and
  noise went through the registry (special cases one after the other): the reference the
  registry path must reproduce bit for bit."""
  b = labels_BA.shape[0]
  keep = lambda x: x.reshape(b, v, *x.shape[1:])[:, :g].reshape(b * g, *x.shape[1:])
  tokens = jnp.where(jnp.isin(rollout.tokens, jnp.asarray(close_ids[1:])), close_ids[0],
                     rollout.tokens)
  view_all = rewards_lib.RolloutBatch(tokens=tokens, lengths=rollout.lengths,
                                      logprobs=rollout.logprobs, entropy=rollout.entropy,
                                      self_certainty=rollout.self_certainty)
  view = jax.tree.map(keep, view_all)
  k_plain, k_noise = jax.random.split(key)
  total = jnp.zeros((b * g,), jnp.float32)
  if host:
    total = total + weights["boxed_answer_match"] * keep(jnp.asarray(host_R, jnp.float32))
  plain = {n: w for n, w in sorted(weights.items())
           if n != "majority_vote" and not (host and n == "boxed_answer_match")}
  if plain:
    opts = OPTIONS if any(n == "boxed_answer_match" for n in plain) else {}
    fn = rewards_lib.combine_rewards(plain, **opts)
    total = total + fn(view, jnp.repeat(jnp.asarray(labels_BA), g, 0), k_plain)
  if "majority_vote" in weights:
    answers, ok = rewards_lib.extract_boxed_tokens(view_all.tokens, view_all.lengths,
                                                   max_answer_len=32, **OPTIONS)
    pseudo = rewards_lib.majority_vote_labels(answers.reshape(b, v, -1), ok.reshape(b, v))
    total = total + weights["majority_vote"] * rewards_lib.boxed_answer_match(
        view, jnp.repeat(pseudo, g, 0), **OPTIONS)
  if noise:
    params = dict(noise_params)
    if noise == "group_flip":
      params.setdefault("group_size", g)
    total = rj.rl.apply_noise(noise, total, k_noise, **params)
  return total


def test_registry_rewards_equal_the_former_special_cases():
  """Majority vote over V > G, the host verifier's verdicts and every noise model, now registry
  entries and wrappers bound by RewardSpec.build, give score_phase the rewards (and the
  reward/* metrics) the former special cases gave, on a fixed rollout, bit for bit."""
  b, v, g = 4, 5, 3
  close_dot = 30
  r = np.random.default_rng(7)
  digits = r.integers(0, 3, (b, v))
  rows = [answer(int(d), close_dot if (i + j) % 3 == 0 else CLOSE)
          for i, p in enumerate(digits) for j, d in enumerate(p)]
  rows[3] = [BOX, D0 + 1, EOS]                             # an unclosed box: no vote
  rollout = rollout_of(rows)
  stats = r.normal(size=rollout.tokens.shape).astype(np.float32)
  rollout = rollout.replace(self_certainty=stats, entropy=np.abs(stats), logprobs=-np.abs(stats))
  prompts, _ = make_prompts(b, 1)
  labels = labels_of(r.integers(0, 3, b))
  host_R = r.integers(0, 2, b * v).astype(np.float32)
  batch = {"prompt_tokens": prompts, "prompt_lengths": np.full(b, 4, np.int32),
           "answer_tokens": labels, "true_answer_tokens": labels_of(digits[:, 0]),
           "host_reward": host_R}
  noises = (("", {}), ("symmetric_flip", {"p": 0.3}), ("group_flip", {"p": 0.5}),
            ("asymmetric_flip", {"fp_rate": 0.2, "fn_rate": 0.4}), ("bernoulli", {"q": 0.6}))
  cases = [({"majority_vote": 1.0, "self_certainty": 0.25, "seq_loglik": 0.1}, False),
           ({"majority_vote": 0.5, "boxed_answer_match": 1.0}, False),
           ({"boxed_answer_match": 1.0, "neg_entropy": 0.3}, True),
           ({"boxed_answer_match": 2.0, "majority_vote": 1.0}, True)]
  checked = 0
  for weights, host in cases:
    vc = v if "majority_vote" in weights else g            # V > G only with majority vote
    first = lambda x: np.asarray(x).reshape(b, v, *np.shape(x)[1:])[:, :vc].reshape(
        b * vc, *np.shape(x)[1:])
    ro, host_c = jax.tree.map(first, rollout), first(host_R)
    batch_c = {**batch, "host_reward": host_c}
    for noise, params in noises:
      settings = S.RLSettings(group_size=g, vote_samples=vc, max_new_tokens=6, pad_id=PAD,
                              eos_ids=(EOS,))
      rspec = S.RewardSpec.make(weights, OPTIONS, noise=noise, noise_params=params,
                                close_ids=(CLOSE, close_dot), host_verifier=host)
      spec = S.RLSpec(CFG, None, settings, rspec)
      score = jax.jit(functools.partial(S.score_phase, spec=spec))     # compiled once per case
      former = jax.jit(functools.partial(
          _former_rewards, weights=weights, v=vc, g=g, close_ids=(CLOSE, close_dot),
          noise=noise, noise_params=tuple(params.items()), host=host))
      for seed in (0, 1):
        key = jax.random.key(seed)
        _, scored, m = score(ro, batch_c, key)
        want = former(ro, labels, host_c, key)
        np.testing.assert_array_equal(np.asarray(scored.rewards), np.asarray(want),
                                      err_msg=f"{weights} host={host} noise={noise!r}")
        # the metrics are reduced inside another compiled graph: equal up to f32 rounding
        np.testing.assert_allclose(float(m["reward/mean"]), float(jnp.mean(want)), rtol=1e-6)
        np.testing.assert_allclose(float(m["reward/std"]), float(jnp.std(want)), rtol=1e-6)
        checked += 1
  assert checked == len(cases) * len(noises) * 2


def test_rewards_receive_the_samplers_rollout_with_close_ids_mapped(monkeypatch):
  """One rollout type: a reward gets the sampler's Rollout itself (rl.RolloutBatch is that
  class), with every merged close-brace id mapped to "}" and nothing else changed; the update
  still gets the sampled tokens."""
  assert rj.rl.RolloutBatch is S.Rollout
  seen = []

  def spy(batch, labels=None, key=None):
    seen.append(batch)
    return jnp.zeros((batch.tokens.shape[0],), jnp.float32)

  monkeypatch.setitem(rewards_lib.REWARDS, "spy", spy)
  close_dot, g = 30, 2
  rows = [answer(1), answer(1, close_dot), answer(2, close_dot), answer(3)]
  rollout = rollout_of(rows)
  r = np.random.default_rng(0)
  rollout = rollout.replace(logprobs=r.normal(size=rollout.tokens.shape).astype(np.float32))
  spec = S.RLSpec(CFG, None, S.RLSettings(group_size=g, max_new_tokens=6, pad_id=PAD,
                                          eos_ids=(EOS,)),
                  S.RewardSpec.make({"spy": 1.0}, close_ids=(CLOSE, close_dot)))
  prompts, _ = make_prompts(2, 0)
  kept, _, _ = S.score_phase(rollout, {"prompt_tokens": prompts,
                                       "prompt_lengths": np.full(2, 4, np.int32)},
                             jax.random.key(0), spec=spec)
  (got,) = seen
  assert type(got) is S.Rollout
  want_tokens = np.where(rollout.tokens == close_dot, CLOSE, rollout.tokens)
  assert (want_tokens != rollout.tokens).sum() == 2
  np.testing.assert_array_equal(np.asarray(got.tokens), want_tokens)
  for field in ("lengths", "logprobs", "entropy", "self_certainty"):
    np.testing.assert_array_equal(np.asarray(getattr(got, field)),
                                  np.asarray(getattr(rollout, field)), err_msg=field)
  np.testing.assert_array_equal(np.asarray(kept.tokens), rollout.tokens)   # unmapped


# ---------------------------------------------------------------------------------- errors
def test_select_groups_keeps_each_groups_rows_together():
  """Dynamic sampling's refill picks whole groups (G rows, their rewards, advantages and mask,
  their prompt) out of several sampled batches, in the order asked."""
  b, g, m = 2, 3, 4

  def batch_round(offset):
    n = b * g
    rows = np.arange(n, dtype=np.int32) + offset
    rollout = S.Rollout(tokens=np.tile(rows[:, None], (1, m)), lengths=rows,
                        logprobs=np.tile(rows[:, None], (1, m)).astype(np.float32),
                        entropy=np.zeros((n, m), np.float32),
                        self_certainty=np.zeros((n, m), np.float32))
    scored = S.Scored(rewards=rows.astype(np.float32), advantages=-rows.astype(np.float32),
                      loss_mask=np.ones((n, m), np.float32))
    prompts = np.arange(b, dtype=np.int32)[:, None] + offset + np.zeros((1, 5), np.int32)
    return rollout, scored, prompts, np.arange(b, dtype=np.int32) + offset
  rounds = (batch_round(0), batch_round(100))
  # groups: 0, 1 of round 0 (rows 0-2, 3-5), 2, 3 of round 1 (rows 100-102, 103-105)
  rollout, scored, prompts, plens = S.select_groups(rounds, np.array([3, 0], np.int32),
                                                    group_size=g)
  np.testing.assert_array_equal(rollout.lengths, [103, 104, 105, 0, 1, 2])
  np.testing.assert_array_equal(rollout.tokens[:, 0], [103, 104, 105, 0, 1, 2])
  np.testing.assert_array_equal(scored.advantages, [-103, -104, -105, 0, -1, -2])
  np.testing.assert_array_equal(prompts[:, 0], [101, 0])
  np.testing.assert_array_equal(plens, [101, 0])


def test_bad_inputs_fail_before_compiling():
  with pytest.raises(ValueError, match="unknown reward 'exact_match'"):
    S.RewardSpec.make({"exact_match": 1.0}, OPTIONS)
  with pytest.raises(ValueError, match="unknown reward noise model"):
    S.RewardSpec.make({"boxed_answer_match": 1.0}, OPTIONS, noise="flip")
  with pytest.raises(ValueError, match=r"p=1.5 must lie in \[0, 1\]"):
    S.RewardSpec.make({"boxed_answer_match": 1.0}, OPTIONS, noise="symmetric_flip",
                      noise_params={"p": 1.5})
  with pytest.raises(ValueError, match=r"needs option\(s\) \['close_id'\]"):
    S.RewardSpec.make({"boxed_answer_match": 1.0}, {"boxed_ids": (BOX,)})
  for bad, match in ((dict(group_size=0), "group_size=0"),
                     (dict(estimator="ppo"), "estimator='ppo'"),
                     (dict(agg="mean"), "agg='mean'"),
                     (dict(dual_clip=0.5), "dual_clip=0.5"),
                     (dict(dynamic_sampling="refill"), "dynamic_sampling='refill'"),
                     (dict(resample_rounds=-1), "resample_rounds=-1"),
                     (dict(vote_samples=2, group_size=4), "vote_samples=2")):
    kw = dict(group_size=4, max_new_tokens=4, pad_id=PAD)
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
      S.RLSettings(**kw)

  # a group size that does not split the rollout into one group per prompt: a trace-time error
  # (jax.eval_shape traces without compiling)
  settings = S.RLSettings(group_size=4, max_new_tokens=6, pad_id=PAD, eos_ids=(EOS,))
  spec = S.RLSpec(CFG, None, settings, S.RewardSpec.make({"boxed_answer_match": 1.0}, OPTIONS))
  prompts, digits = make_prompts(2, 0)
  batch = {"prompt_tokens": prompts, "prompt_lengths": np.full(2, 4, np.int32),
           "answer_tokens": labels_of(digits)}
  six_rows = rollout_of([answer(1)] * 6)
  with pytest.raises(ValueError, match="group size must divide the rollout"):
    jax.eval_shape(functools.partial(S.score_phase, spec=spec), six_rows, batch,
                   jax.random.key(0))
  # a label reward on a batch without labels
  no_labels = {k: v for k, v in batch.items() if k != "answer_tokens"}
  with pytest.raises(ValueError, match="has no labels"):
    jax.eval_shape(functools.partial(S.score_phase, spec=spec), rollout_of([answer(1)] * 8),
                   no_labels, jax.random.key(0))
  with pytest.raises(ValueError, match="only makes sense with the majority_vote"):
    S.RLSpec(CFG, None, S.RLSettings(group_size=2, vote_samples=4, max_new_tokens=4, pad_id=0),
             S.RewardSpec.make({"boxed_answer_match": 1.0}, OPTIONS))


# ---------------------------------------------------------------------------------- learning
def test_rl_raises_heldout_accuracy_and_gamma_one_labels_do_not(sft_params):
  """GRPO with the true reward on 16 training prompts raises the accuracy on 64 held-out prompts
  by a clear margin; with γ = 1 label replacement (every label := the prompt's most frequent
  wrong answer) the ground-truth reward does not rise and the held-out accuracy gains under a
  fifth of what the true labels give. Accuracy is exact: the probability of
  sampling [\\boxed{, the prompt's digit, }] (recomputed log-probs), not a sampled estimate."""
  logprobs = jax.jit(functools.partial(S.response_logprobs, CFG))

  def answer_probs(params, prompts):
    """P(response starts [\\boxed{, digit, }]) for each prompt and digit: float[P, 10]."""
    n = len(prompts)
    resp = np.stack([np.full((n, 10), BOX), D0 + np.tile(np.arange(10), (n, 1)),
                     np.full((n, 10), CLOSE)], -1).reshape(n * 10, 3).astype(np.int32)
    lp, _ = logprobs(params, np.repeat(prompts, 10, 0), np.full(n * 10, 4, np.int32), resp)
    return np.exp(np.asarray(lp).sum(-1)).reshape(n, 10)

  train_p, train_d = make_prompts(PROMPTS, 1)
  held_p, held_d = make_prompts(64, 2)
  held_acc = lambda params: float(np.mean(                      # noqa: E731
      answer_probs(params, held_p)[np.arange(64), held_d]))
  step, shard, mesh = fused_step(1)      # the fused step (sample + score + update), 1 device
  ref = jax.device_put(sft_params, shard.params)

  def run_rl(label_digits, n_steps=15, seed=0):
    st = state_lib.create_train_state(CFG, RL_OPT, mesh, jax.random.key(0),
                                      jax.tree.map(jnp.asarray, sft_params))
    batch = rl_batch(train_p, label_digits, train_d)
    true_rewards = []
    for i in range(n_steps):
      st, m = step(st, ref, batch, jax.random.key(1000 * seed + 100 + i))
      true_rewards.append(float(m["reward/true_mean"]))
    return st.params, np.array(true_rewards)

  before = held_acc(sft_params)
  assert 0.15 < before < 0.45            # the SFT model is right only some of the time
  params, true_curve = run_rl(train_d)
  after = held_acc(params)
  assert after > before + 0.2, (before, after, true_curve)
  assert true_curve[-5:].mean() > true_curve[:5].mean() + 0.15, true_curve

  probs = answer_probs(sft_params, train_p)
  probs[np.arange(PROMPTS), train_d] = -1.0
  wrong = probs.argmax(1)                 # the most frequent wrong answer (in expectation)
  # One RL run is a chaotic trajectory (one flipped sample changes the rest), so the wrong-label
  # runs are judged on the mean of three sampling seeds. Their held-out accuracy may move a
  # little (RL on wrong rewards can still sharpen a model's prior; and how far depends on the SFT
  # fixture's own 200-step trajectory: +0.00 on one draw, +0.03 on another at f32-equal math),
  # but far less than the true labels move it.
  noisy = [run_rl(wrong, seed=seed) for seed in range(3)]
  true_noisy = np.mean([curve for _, curve in noisy], axis=0)
  assert true_noisy[-5:].mean() <= true_noisy[:5].mean() + 0.02, true_noisy
  held_noisy = [held_acc(p) for p, _ in noisy]
  assert np.mean(held_noisy) - before < 0.2 * (after - before), (before, after, held_noisy)
