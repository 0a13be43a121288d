"""The packed update (rl.pack_update, rlvr_jax/rl/packing.py): the plan's bins hold every row
without overlap, the packed log-probs and updates equal the padded ones up to f32 rounding on
one device and on sharded meshes with minibatches and microbatches, and the run loop's packed
phase mode trains on the same rollout as the padded one."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlvr_jax as rj
from rlvr_jax import sharding, specs
from rlvr_jax.rl import loop as rl_loop
from rlvr_jax.rl import packing
from rlvr_jax.rl import step as S
from rlvr_jax.train import state as state_lib

from test_rl_step import (CFG, EOS, F32_EPS, PAD, SGD_SPEC, V, assert_metrics_close,
                          assert_steps_close, host)
from test_rl_loop import _run_mode, read_metrics, tiny_config

P, M, G, B = 6, 10, 4, 8          # prompt block, response block, group, prompts
N = G * B


def ragged_rollout(seed: int):
  """B prompts of 1..P tokens and N responses of 1..M/2 tokens or (a quarter) the full M, with
  sampler log-probs near the model's, advantages and a loss mask that drops one group."""
  rng = np.random.default_rng(seed)
  plens = rng.integers(1, P + 1, B).astype(np.int32)
  prompts = rng.integers(3, V, (B, P)).astype(np.int32)
  prompts[np.arange(P)[None] >= plens[:, None]] = PAD
  lengths = np.where(rng.random(N) < 0.25, M, rng.integers(1, M // 2 + 1, N)).astype(np.int32)
  tokens = rng.integers(3, V, (N, M)).astype(np.int32)
  past = np.arange(M)[None] >= lengths[:, None]
  tokens[past] = PAD
  tokens[np.arange(N), lengths - 1] = EOS
  logprobs = np.where(past, 0.0, -np.log(V) + 0.1 * rng.standard_normal((N, M)))
  rollout = S.Rollout(tokens=tokens, lengths=lengths, logprobs=logprobs.astype(np.float32))
  adv = rng.standard_normal(N).astype(np.float32)
  adv -= np.repeat(adv.reshape(B, G).mean(1), G)
  mask = (~past).astype(np.float32)
  mask[:G] = 0.0                                     # a dropped (zero-variance) group
  scored = S.Scored(rewards=np.zeros(N, np.float32), advantages=adv,
                    loss_mask=mask)
  return prompts, plens, rollout, scored


def test_plan_places_every_row_in_its_group_without_overlap():
  rng = np.random.default_rng(0)
  for trial in range(50):
    n, chunks, shards = 64, (1, 2, 4)[trial % 3], (1, 2, 8)[trial % 3 - 1]
    cap = 40
    plens = rng.integers(1, 9, n)
    rlens = np.minimum(rng.geometric(0.05, n), cap - plens)
    pk = packing.plan(plens, rlens, capacity=cap, chunks=chunks, shards=shards)
    per_group = n // chunks // pk.groups
    assert pk.groups == (shards if (n // chunks) % shards == 0 else 1)
    length = plens + rlens
    used = {}
    for r in range(n):
      group = (r % chunks, (r // chunks) // per_group)
      assert 0 <= pk.row_bin[r] < pk.bins_per_group
      assert 0 <= pk.row_start[r] and pk.row_start[r] + length[r] <= cap
      cells = used.setdefault((group, int(pk.row_bin[r])), np.zeros(cap, int))
      cells[pk.row_start[r]:pk.row_start[r] + length[r]] += 1
    assert all(c.max() <= 1 for c in used.values()), "two rows share a position"
    # first-fit decreasing uses at most 11/9 OPT + 6/9 bins (Dosa 2007), OPT >= ceil(sum / cap);
    # then rounded up to the bucket step
    step = math.ceil(per_group / packing.BIN_BUCKETS)
    worst = 0
    for c in range(chunks):
      for g in range(pk.groups):
        rows = [r for r in range(n) if r % chunks == c and (r // chunks) // per_group == g]
        worst = max(worst, math.ceil(length[rows].sum() / cap))
    assert pk.bins_per_group <= step * math.ceil((11 / 9 * worst + 6 / 9) / step) + step


def test_plan_compiles_a_bounded_number_of_shapes():
  rng = np.random.default_rng(1)
  seen = set()
  for _ in range(300):
    rlens = np.minimum(rng.geometric(rng.uniform(0.002, 0.05), 128), 256)
    seen.add(packing.plan(np.full(128, 32), rlens, capacity=288, chunks=1,
                          shards=1).bins_per_group)
  assert len(seen) <= packing.BIN_BUCKETS


def test_plan_rejects_rows_longer_than_a_bin():
  with pytest.raises(ValueError, match=r"row lengths must lie in \[1, 10\]"):
    packing.plan(np.array([4, 4]), np.array([3, 7]), capacity=10, chunks=1, shards=1)


def test_packed_logprobs_equal_padded_ones():
  params = rj.init_params(CFG, jax.random.key(3))
  prompts, plens, rollout, _ = ragged_rollout(0)
  rows_p, rows_pl = np.repeat(prompts, G, 0), np.repeat(plens, G)
  want, want_ent = S.response_logprobs(CFG, params, rows_p, rows_pl, rollout.tokens)
  pk = packing.plan(rows_pl, rollout.lengths, capacity=P + M, chunks=1, shards=1)
  assert pk.bins_per_group < N                       # rows really share bins
  got, got_ent = S.packed_response_logprobs(
      CFG, params, rows_p, rows_pl, rollout.tokens, rollout.lengths, pk.row_bin, pk.row_start,
      bins_per_group=pk.bins_per_group, groups=pk.groups)
  valid = np.arange(M)[None] < rollout.lengths[:, None]
  # the same dot products over the same keys, summed in another order (attention over P + M
  # positions, D = 32 features): a few ulps of log V
  tol = (P + M + CFG.hidden_size) * F32_EPS * np.log(V)
  np.testing.assert_allclose(np.where(valid, got, 0), np.where(valid, want, 0), atol=tol)
  np.testing.assert_allclose(np.where(valid, got_ent, 0), np.where(valid, want_ent, 0), atol=tol)


SETTINGS = {
    "one update": dict(minibatches=1, microbatches=1),
    "minibatches x microbatches": dict(minibatches=2, microbatches=2),
    "trainer old log-probs + tis": dict(minibatches=2, microbatches=1, old_logprobs="trainer",
                                        tis="token", tis_cap=2.0, agg="seq-mean-token-mean"),
}


@pytest.mark.parametrize("shape", [(1, 1, 1), (4, 2, 1), (2, 1, 1)])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_packed_update_equals_padded_update(shape, name):
  """The same rollout through update_phase padded and packed (SGD, as in test_rl_step, so the
  parameter steps compare element by element) on one mesh: the same metrics and steps up to
  f32 rounding (the tolerances of test_rl_step, derived from the longest sums)."""
  settings = dataclasses.replace(SGD_SPEC.settings, group_size=G, max_new_tokens=M,
                                **SETTINGS[name])
  spec = dataclasses.replace(SGD_SPEC, settings=settings)
  mesh = sharding.make_mesh(shape, jax.devices()[:int(np.prod(shape))])
  shard = state_lib.state_shardings(CFG, spec.optimizer, mesh)
  phases = S.jit_rl_phases(spec, mesh, shard)
  params = host(rj.init_params(CFG, jax.random.key(4)))
  prompts, plens, rollout, scored = ragged_rollout(1)
  chunks = settings.minibatches * settings.microbatches
  pk = packing.plan(np.repeat(plens, G), rollout.lengths, capacity=P + M, chunks=chunks,
                    shards=shape[0] * shape[1])
  if pk.groups == 1 and chunks == 1:   # small groups of long rows may need a bin each
    assert pk.groups * pk.bins_per_group < N // chunks, "nothing packed"

  def run(packed: bool):
    state = state_lib.create_train_state(CFG, spec.optimizer, mesh, jax.random.key(0),
                                         jax.tree.map(jnp.asarray, params))
    ref = jax.device_put(params, shard.params)
    if packed:
      state, metrics = phases.update_packed(state, ref, rollout, scored, prompts, plens, pk)
    else:
      state, metrics = phases.update(state, ref, rollout, scored, prompts, plens)
    return host(state.params), host(metrics)

  padded_params, padded_metrics = run(False)
  packed_params, packed_metrics = run(True)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  n_tokens = float(scored.loss_mask.sum())
  assert padded_metrics["grad_norm"] > 1e-3
  assert_metrics_close(packed_metrics, padded_metrics, f"{name} {shape}", n_params, n_tokens)
  assert_steps_close(packed_params, padded_params, params, f"{name} {shape}")


def test_loop_packed_phase_mode_trains_on_the_same_rollout(init_dir, tmp_path, monkeypatch):
  """One RL step of the tiny config, phases padded vs phases packed (rl.pack_update): the same
  rollout (sampled before any update) and the same update up to f32 rounding; the packed run
  logs how full its bins were, and prompts of the toy data leave much of the 96-token prompt
  block empty, so the bins are fuller than one row per P + M positions."""
  c = tiny_config(init_dir)
  c.steps, c.eval_every, c.eval_at_end = 1, 0, False
  calls = []
  padded, padded_params = _run_mode(c, str(tmp_path / "padded"), False, 8, monkeypatch, calls)
  c.rl.pack_update = True
  assert not rl_loop.use_fused_step(c)
  packed, packed_params = _run_mode(c, str(tmp_path / "packed"), False, 8, monkeypatch, calls)
  assert calls == []                       # no wait beyond reading the lengths
  n_eps = 16 * (96 + 6) * F32_EPS           # rows x positions, as test_rl_loop's
  assert sorted(packed[1]) == sorted(padded[1])
  for k, a in padded[1].items():
    b = packed[1][k]
    if a is None or b is None:
      assert a is None and b is None, k
      continue
    np.testing.assert_allclose(b, a, rtol=n_eps, atol=n_eps, err_msg=k)
  for x, y in zip(jax.tree.leaves(packed_params), jax.tree.leaves(padded_params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=n_eps, atol=n_eps)
  fill = [r["perf/pack_fill"] for r in read_metrics(str(tmp_path / "packed"))
          if "perf/pack_fill" in r]
  plain_fill = [r for r in read_metrics(str(tmp_path / "padded")) if "perf/pack_fill" in r]
  assert fill and not plain_fill
  assert 0 < fill[0] <= 1


def test_pack_update_needs_the_phase_mode():
  c = tiny_config("unused")
  c.rl.pack_update, c.rl.fused_step = True, True
  with pytest.raises(specs.ConfigError, match="rl.pack_update"):
    specs.validate(specs.parse(c), None, None)
