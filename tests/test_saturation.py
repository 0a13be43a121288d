"""Saturation statistics (t_sat, Δ_sat, Δ_post, G), the online monitor and the plots.

Every expected value is worked out by hand in the comments next to it, never by calling the code
under test.
"""
import json
import math

import numpy as np
import pytest

from rlvr_jax.diagnostics import plots
from rlvr_jax.diagnostics import saturation as sat
from rlvr_jax.diagnostics.saturation import (MonitorParams, SaturationMonitor, SaturationParams,
                                             analyze_run, large_small_gap, metric_at,
                                             read_metrics, saturation_point)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_jsonl(path, records):
  with open(path, "w") as f:
    for r in records:
      f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
  return path


def _metrics(reward: dict, **evals) -> dict:
  out = {"reward/mean": dict(reward)}
  for name, series in evals.items():
    out[f"eval/{name}/avg@8"] = dict(series)
  return out


# ------------------------------------------------------------------------------ t_sat offline
def test_step_function():
  # 0.2 before step 40, 0.795 on 40..59, 0.8 from 60 on; T = 200, margin 50 -> t <= 150.
  steps = list(range(1, 201))
  rewards = [0.2 if t < 40 else 0.795 if t < 60 else 0.8 for t in steps]
  res = saturation_point(steps, rewards, SaturationParams())
  # r_max = 0.8, bar = 0.99 * 0.8 = 0.792; 0.795 >= 0.792 first at t = 40.
  assert res.r_max == pytest.approx(0.8)
  assert res.threshold == pytest.approx(0.792)
  assert res.T == 200 and res.first_step == 1
  assert res.t_sat == 40
  assert res.pre_saturation_length == 39          # 40 - 1
  assert res.reason is None
  # epsilon 0.995: bar = 0.796 > 0.795, so the first step at 0.8 (t = 60) is t_sat.
  assert saturation_point(steps, rewards, SaturationParams(epsilon=0.995)).t_sat == 60


def test_linear_ramp_and_r_max_over():
  # r_t = t / 100 for t = 0..100, then 1.0 up to T = 300.
  steps = list(range(0, 301))
  rewards = [min(t / 100, 1.0) for t in steps]
  res = saturation_point(steps, rewards, SaturationParams(margin=50))
  # bar = 0.99: first t with t/100 >= 0.99 is 99; the curve starts at step 0.
  assert res.t_sat == 99 and res.pre_saturation_length == 99
  # margin 250: only t <= 50 may count, and t/100 <= 0.5 < 0.99 there -> None.
  res = saturation_point(steps, rewards, SaturationParams(margin=250))
  assert res.t_sat is None and res.pre_saturation_length is None
  assert "250" in res.reason or "50" in res.reason
  # r_max over t <= 50 only: r_max = 0.5, bar 0.495, first t/100 >= 0.495 is t = 50.
  res = saturation_point(steps, rewards, SaturationParams(margin=250, r_max_over="pre_margin"))
  assert res.r_max == pytest.approx(0.5)
  assert res.t_sat == 50


def _noisy_plateau():
  # 0.5 on 1..20; from 21 alternating 0.88 (odd t) / 0.92 (even t), one spike 0.99 at t = 60.
  steps = list(range(1, 101))
  rewards = []
  for t in steps:
    r = 0.5 if t <= 20 else (0.88 if t % 2 else 0.92)
    rewards.append(0.99 if t == 60 else r)
  return steps, rewards


def test_noisy_plateau_raw():
  steps, rewards = _noisy_plateau()
  res = saturation_point(steps, rewards, SaturationParams(epsilon=0.95, margin=20))
  # r_max = 0.99 (the spike), bar = 0.9405: only the spike reaches it -> t_sat = 60.
  assert res.r_max == pytest.approx(0.99)
  assert res.t_sat == 60


def test_noisy_plateau_moving_average():
  steps, rewards = _noisy_plateau()
  res = saturation_point(steps, rewards, SaturationParams(epsilon=0.95, margin=20, window=4))
  curve = dict(zip(res.steps.tolist(), res.curve.tolist()))
  # trailing mean of 4: t=21 (0.5*3 + 0.88)/4 = 0.595; t=23 (0.5+0.88+0.92+0.88)/4 = 0.795;
  # t=24 (0.88+0.92)*2/4 = 0.9; the windows holding the spike (t=60..63): 3.67/4 = 0.9175.
  assert curve[20] == pytest.approx(0.5)
  assert curve[21] == pytest.approx(0.595)
  assert curve[23] == pytest.approx(0.795)
  assert curve[24] == pytest.approx(0.9)
  assert curve[63] == pytest.approx(0.9175)
  assert curve[64] == pytest.approx(0.9)
  # r_max = 0.9175, bar = 0.95 * 0.9175 = 0.871625: first smoothed value above it is t = 24.
  assert res.r_max == pytest.approx(0.9175)
  assert res.t_sat == 24
  assert res.pre_saturation_length == 23


def test_moving_average_by_hand():
  # trailing window 3: 1, (1+2)/2, (1+2+3)/3, (2+3+4)/3, (3+4+5)/3
  np.testing.assert_allclose(sat.moving_average([1, 2, 3, 4, 5], 3), [1, 1.5, 2, 3, 4])
  np.testing.assert_allclose(sat.moving_average([1, 2, 3], None), [1, 2, 3])


def test_never_saturates_within_margin():
  # r_t = t / 200 climbs to the end: r_max = 1.0 at t = 200, bar 0.99 needs t >= 198 > 150.
  steps = list(range(1, 201))
  res = saturation_point(steps, [t / 200 for t in steps], SaturationParams(margin=50))
  assert res.t_sat is None
  assert res.reason and "150" in res.reason
  # A toy run shorter than the margin: T = 24 - 50 < first step.
  res = saturation_point(range(1, 25), [1.0] * 24, SaturationParams(margin=50))
  assert res.t_sat is None and "margin" in res.reason
  # ... and the analysis reports None deltas.
  doc = analyze_run(_metrics({t: t / 200 for t in steps}, set={0: 0.1, 100: 0.3, 200: 0.5}))
  assert doc["t_sat"] is None and doc["pre_saturation_length"] is None
  assert doc["delta_sat"] == {"eval/set/avg@8": None}
  assert doc["delta_post"] == {"eval/set/avg@8": None}


def test_negative_proxy_reward():
  # r_t = -2 + t/50 up to t = 50 (-1.0), then -1.0; T = 100, margin 0.
  steps = list(range(1, 101))
  rewards = [-2 + min(t, 50) / 50 for t in steps]
  res = saturation_point(steps, rewards, SaturationParams(margin=0))
  # bar = -1 - 0.01 * 1 = -1.01: -2 + t/50 >= -1.01 <=> t >= 49.5 -> t_sat = 50.
  # (a literal 0.99 * r_max = -0.99 would be above the max and give None.)
  assert res.threshold == pytest.approx(-1.01)
  assert res.t_sat == 50


def test_params_are_checked():
  for bad in ({"epsilon": 0}, {"epsilon": 1.5}, {"margin": -1}, {"window": 0},
              {"r_max_over": "last"}):
    with pytest.raises(ValueError):
      SaturationParams(**bad)
  with pytest.raises(ValueError, match="twice"):
    saturation_point([1, 2, 2], [0.1, 0.2, 0.3])
  with pytest.raises(ValueError):
    saturation_point([], [])


# --------------------------------------------------------------------------- M at a step
def test_metric_at_interpolates_and_reports_bracket():
  steps, values = [0, 10, 20, 30], [0.1, 0.3, 0.5, 0.45]
  # t = 14: 0.3 + (0.5 - 0.3) * 4 / 10 = 0.38 between evaluations 10 and 20.
  v = metric_at(steps, values, 14)
  assert v.value == pytest.approx(0.38) and v.interpolated and v.bracket == (10, 20)
  v = metric_at(steps, values, 20)
  assert v.value == pytest.approx(0.5) and not v.interpolated and v.bracket == (20, 20)
  assert metric_at(steps, values, 31) == (None, False, None)
  assert metric_at(steps, values, -1) == (None, False, None)
  assert metric_at(steps, values, None) == (None, False, None)
  # a non-finite evaluation is skipped: 10 -> 30 is the bracket of 14, 0.3 + 0.15 * 4/20.
  v = metric_at(steps, [0.1, 0.3, float("nan"), 0.45], 14)
  assert v.value == pytest.approx(0.33) and v.bracket == (10, 30)


def test_deltas_with_interpolation():
  # reward 0.1 before 14, 0.6 from 14 on; T = 30, margin 10 -> t_sat = 14.
  reward = {t: (0.1 if t < 14 else 0.6) for t in range(1, 31)}
  m = _metrics(reward, set={0: 0.1, 10: 0.3, 20: 0.5, 30: 0.45})
  doc = analyze_run(m, SaturationParams(margin=10))
  key = "eval/set/avg@8"
  assert doc["t_sat"] == 14 and doc["T"] == 30 and doc["pre_saturation_length"] == 13
  assert doc["interpolated"] == {key: True}
  assert doc["bracket"] == {key: [10, 20]}
  # M(14) = 0.38; delta_sat = 0.38 - 0.1 = 0.28; delta_post = max(0.38, 0.5, 0.45) - 0.38 = 0.12
  assert doc["metric_at_t_sat"][key] == pytest.approx(0.38)
  assert doc["delta_sat"][key] == pytest.approx(0.28)
  assert doc["delta_post"][key] == pytest.approx(0.12)
  # t_sat on an evaluation step (reward jumps at 20): exact, delta_post = max(0.5, 0.45) - 0.5.
  reward = {t: (0.1 if t < 20 else 0.6) for t in range(1, 31)}
  doc = analyze_run(_metrics(reward, set={0: 0.1, 10: 0.3, 20: 0.5, 30: 0.45}),
                    SaturationParams(margin=10))
  assert doc["t_sat"] == 20 and doc["interpolated"] == {key: False}
  assert doc["delta_sat"][key] == pytest.approx(0.4)   # 0.5 - 0.1
  assert doc["delta_post"][key] == pytest.approx(0.0)
  # without a step-0 evaluation there is no M(0): delta_sat None, delta_post still defined.
  doc = analyze_run(_metrics(reward, set={10: 0.3, 20: 0.5, 30: 0.55}),
                    SaturationParams(margin=10))
  assert doc["delta_sat"][key] is None
  assert doc["delta_post"][key] == pytest.approx(0.05)   # 0.55 - 0.5


def test_analysis_document_keys_and_true_reward():
  reward = {t: (0.2 if t < 30 else 0.9) for t in range(1, 101)}
  true = {t: (0.1 if t < 45 else 0.5) for t in range(1, 101)}
  m = _metrics(reward, set={0: 0.2, 50: 0.4, 100: 0.6})
  m["reward/true_mean"] = true
  doc = analyze_run(m)
  for key in ("t_sat", "r_max", "T", "pre_saturation_length", "delta_sat", "delta_post",
              "interpolated", "params", "true_reward"):
    assert key in doc
  assert doc["t_sat"] == 30 and doc["r_max"] == pytest.approx(0.9) and doc["T"] == 100
  assert doc["params"] == {"epsilon": 0.99, "margin": 50, "window": None,
                           "reward_key": "reward/mean", "r_max_over": "all"}
  # the true reward's own statistics: 0.5 from step 45 -> t_sat 45, r_max 0.5.
  assert doc["true_reward"]["t_sat"] == 45
  assert doc["true_reward"]["r_max"] == pytest.approx(0.5)
  assert doc["true_reward"]["params"]["reward_key"] == "reward/true_mean"
  # M(45) = 0.2 + 0.2 * 45/50 = 0.38 -> true-reward delta_sat = 0.18.
  assert doc["true_reward"]["delta_sat"]["eval/set/avg@8"] == pytest.approx(0.18)
  json.dumps(doc)   # the saturation.json document is plain JSON
  with pytest.raises(ValueError, match="reward/mean"):
    analyze_run({"eval/set/avg@8": {0: 0.1}})


# ------------------------------------------------------------------------- metrics.jsonl
def _resumed_run(tmp_path):
  return _write_jsonl(tmp_path / "metrics.jsonl", [
    {"step": 0, "eval/x/avg@8": 0.2},
    {"step": 1, "reward/mean": 0.1},
    {"step": 2, "reward/mean": 0.2},
    {"step": 3, "reward/mean": 0.3, "eval/x/avg@8": 0.4},   # checkpoint at 3
    {"step": 4, "reward/mean": 0.95},                       # preempted attempt
    '{"step": 5, "reward/mean": NaN, "policy/kl": 0.5}',
    '{"step": 6, "rew',                                     # write cut short
    {"step": 4, "reward/mean": 0.4},                        # the resumed run logs 4.. again
    {"step": 5, "reward/mean": 0.9, "policy/kl": None},
    {"step": 6, "reward/mean": 0.5, "eval/x/avg@8": 0.6, "note": "text"},
  ])


def test_read_metrics_last_record_wins_and_nulls(tmp_path):
  path = _resumed_run(tmp_path)
  for source in (path, tmp_path, str(tmp_path)):   # the file or the run directory
    m = read_metrics(source)
    assert m["reward/mean"] == {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4, 5: 0.9, 6: 0.5}
    assert m["eval/x/avg@8"] == {0: 0.2, 3: 0.4, 6: 0.6}
    assert "policy/kl" not in m      # its only value was overridden by a later null
    assert "note" not in m           # not a number
  with pytest.raises(FileNotFoundError):
    read_metrics(tmp_path / "nothing")
  _write_jsonl(tmp_path / "bad.jsonl", [{"reward/mean": 0.1}])
  with pytest.raises(ValueError, match="bad.jsonl:1"):
    read_metrics(tmp_path / "bad.jsonl")


def test_analysis_of_a_resumed_run(tmp_path):
  _resumed_run(tmp_path)
  doc = analyze_run(tmp_path, SaturationParams(margin=0))
  # rewards 0.1 0.2 0.3 0.4 0.9 0.5: r_max 0.9, bar 0.891 -> t_sat 5 (the preempted attempt's
  # 0.95 at step 4 would have made it 4).
  assert doc["t_sat"] == 5 and doc["r_max"] == pytest.approx(0.9)
  # M(5) = 0.4 + (0.6 - 0.4) * 2/3 = 0.5333; delta_sat = 0.3333; delta_post = 0.6 - 0.5333.
  key = "eval/x/avg@8"
  assert doc["bracket"][key] == [3, 6] and doc["interpolated"][key] is True
  assert doc["delta_sat"][key] == pytest.approx(1 / 3)
  assert doc["delta_post"][key] == pytest.approx(0.2 / 3)
  assert doc["source"].endswith("metrics.jsonl")


# ----------------------------------------------------------------------------------- G
def test_large_small_gap():
  # small run: 0.2 -> 0.9 at step 20 (T = 100, margin 50) -> t_sat_small = 20.
  small = _metrics({t: (0.2 if t < 20 else 0.9) for t in range(1, 101)},
                   set={0: 0.1, 10: 0.2, 30: 0.3, 100: 0.3})
  large = _metrics({t: t / 100 for t in range(1, 101)}, set={0: 0.1, 20: 0.45, 40: 0.6})
  gap = large_small_gap(small, large)["eval/set/avg@8"]
  # small at 20: 0.2 + 0.1 * 10/20 = 0.25 (interpolated); large at 20: 0.45 (exact).
  assert gap["t_sat_small"] == 20
  assert gap["small_value"] == pytest.approx(0.25)
  assert gap["large_value"] == pytest.approx(0.45)
  assert gap["G"] == pytest.approx(0.2)
  assert gap["interpolated"] is True
  assert gap["bracket_small"] == [10, 30] and gap["bracket_large"] == [20, 20]
  # a small run that never saturates within T - margin has no G.
  never = _metrics({t: t / 100 for t in range(1, 101)}, set={0: 0.1, 100: 0.3})
  gap = large_small_gap(never, large)["eval/set/avg@8"]
  assert gap["t_sat_small"] is None and gap["G"] is None


# ------------------------------------------------------------------------------ the monitor
def _run_monitor(monitor, rewards):
  return {t: monitor.update(t, r) for t, r in rewards.items()}


def _early_curve():
  # t/20 up to 0.95 at t = 19; 1.0 from 20 (one dip to 0.9 at 40); 1.2 from 100.
  return {t: (t / 20 if t < 20 else 0.9 if t == 40 else 1.0 if t < 100 else 1.2)
          for t in range(1, 121)}


def test_monitor_saturates_early_and_stops():
  mon = SaturationMonitor(MonitorParams(warmup=10, patience=5, tolerance=0.01))
  seen = {}
  stop = {}
  for t, r in _early_curve().items():
    seen[t] = mon.update(t, r)
    stop[t] = mon.should_stop(10)
    if t == 24:
      assert mon.message and "step 20" in mon.message
  # The climb raises the running max by 0.05 (> 1% of it) every step, restarting the plateau;
  # at 1.0 it starts at t = 20 and lasts 5 steps (20..24) at t = 24.
  assert seen[10]["saturation/ratio"] == pytest.approx(1.0)   # new max: ratio 1, not saturated
  assert seen[23]["saturation/saturated"] == 0.0 and seen[23]["saturation/steps_since"] == 0.0
  assert seen[24]["saturation/saturated"] == 1.0
  assert seen[24]["saturation/just_saturated"] == 1.0
  assert seen[24]["saturation/steps_since"] == 4.0             # 24 - 20
  assert seen[25]["saturation/just_saturated"] == 0.0
  # the dip at 40: ratio 0.9 / 1.0, still saturated (dips are allowed once saturated).
  assert seen[40]["saturation/ratio"] == pytest.approx(0.9)
  assert seen[40]["saturation/saturated"] == 1.0 and seen[40]["saturation/steps_since"] == 20.0
  assert seen[50]["saturation/r_max"] == pytest.approx(1.0)
  # should_stop(10): 10 steps after the saturation point 20, i.e. from t = 30.
  assert not stop[29] and stop[30] and stop[99]
  # at 100 the max rises 20% above the plateau: not saturated, a new plateau 100..104.
  assert seen[100]["saturation/saturated"] == 0.0 and seen[100]["saturation/r_max"] == 1.2
  assert not stop[100] and not stop[103]
  assert seen[104]["saturation/saturated"] == 1.0 and seen[104]["saturation/just_saturated"]
  assert seen[104]["saturation/steps_since"] == 4.0            # 104 - 100
  assert mon.t_sat == 100
  assert not mon.should_stop(0)                                # 0 = never


def test_monitor_warmup_and_flat_curves():
  flat = {t: 0.7 for t in range(1, 31)}
  mon = SaturationMonitor(MonitorParams(warmup=10, patience=5))
  seen = _run_monitor(mon, flat)
  # plateaus may start only after step 10: 11..15 -> declared at 15, saturation point 11.
  assert seen[14]["saturation/saturated"] == 0.0 and seen[15]["saturation/just_saturated"]
  assert mon.t_sat == 11
  mon = SaturationMonitor(MonitorParams(warmup=0, patience=5))
  seen = _run_monitor(mon, flat)
  assert seen[5]["saturation/just_saturated"] == 1.0 and mon.t_sat == 1
  # a reward stuck at 0 is no plateau (running max 0 is not above min_r_max = 0); ratio 1, no NaN
  mon = SaturationMonitor(MonitorParams(warmup=0, patience=2))
  seen = _run_monitor(mon, {t: 0.0 for t in range(1, 21)})
  assert all(m["saturation/saturated"] == 0.0 for m in seen.values())
  assert all(m["saturation/ratio"] == 1.0 for m in seen.values())


def test_monitor_climbing_reward_is_not_saturated():
  # r_t = t / 200: every step is its own running max (ratio 1 >= 0.99), but the max rises by
  # 0.005 per step, more than 1% of the anchor (<= 0.01) within at most 2 steps, so no plateau
  # lasts 5 steps.
  mon = SaturationMonitor(MonitorParams(warmup=0, patience=5, tolerance=0.01))
  seen = _run_monitor(mon, {t: t / 200 for t in range(1, 201)})
  assert all(m["saturation/ratio"] == pytest.approx(1.0) for m in seen.values())
  assert all(m["saturation/saturated"] == 0.0 for m in seen.values())


def test_monitor_rejects_going_back_and_skips_nan():
  mon = SaturationMonitor(MonitorParams(warmup=0, patience=3))
  mon.update(1, 0.5)
  m = mon.update(2, float("nan"))
  assert math.isnan(m["saturation/ratio"]) and m["saturation/r_max"] == 0.5
  with pytest.raises(ValueError, match="increase"):
    mon.update(2, 0.5)
  with pytest.raises(ValueError):
    MonitorParams(patience=0)
  with pytest.raises(ValueError):
    mon.should_stop(-1)


def _resume_curve():
  # 0.02 t up to 0.70 at t = 35, then a plateau alternating 0.80 / 0.82 (window 3 smooths it).
  return {t: (0.02 * t if t <= 35 else 0.80 if t % 2 else 0.82) for t in range(1, 81)}


def test_resumed_monitor_matches_uninterrupted(tmp_path):
  params = MonitorParams(warmup=10, patience=5, window=3)
  rewards = _resume_curve()
  straight = SaturationMonitor(params)
  expected = _run_monitor(straight, rewards)
  declared = [t for t, m in expected.items() if m["saturation/just_saturated"]]
  # the plateau starts before the checkpoint at 40 and is declared after it, so the rebuilt
  # state (moving-average buffer, plateau start, anchor) matters.
  assert declared and declared[0] > 40 and straight.t_sat < 40

  # first attempt: steps 1..50 logged, checkpoint at 40, preempted at 50.
  path = tmp_path / "metrics.jsonl"
  first = SaturationMonitor(params)
  records = [{"step": t, "reward/mean": rewards[t], **first.update(t, rewards[t])}
             for t in range(1, 51)]
  # the resume rebuilds from the records up to the checkpoint; steps 41..50 come again.
  _write_jsonl(path, records)
  resumed = SaturationMonitor.from_metrics(tmp_path, up_to_step=40, params=params)
  assert resumed.state.last_step == 40
  for t in range(41, 81):
    assert resumed.update(t, rewards[t]) == expected[t], f"step {t}"
  assert resumed.state == straight.state

  # the checkpointed state_dict gives the same, through JSON.
  first = SaturationMonitor(params)
  _run_monitor(first, {t: rewards[t] for t in range(1, 41)})
  again = SaturationMonitor.from_state(json.loads(json.dumps(first.state_dict())), params)
  for t in range(41, 81):
    assert again.update(t, rewards[t]) == expected[t], f"step {t}"

  # rebuilding past the checkpoint (the preempted attempt's steps) is refused at the next step.
  too_far = SaturationMonitor.from_metrics(path, params=params)
  with pytest.raises(ValueError, match="increase"):
    too_far.update(41, rewards[41])


# --------------------------------------------------------------------------------- plots
def _check_png(path):
  data = path.read_bytes()
  assert data[:8] == PNG_SIGNATURE
  assert len(data) > 1024
  assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_plot_run_writes_png(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  records = [{"step": 0, "eval/x/avg@8": 0.1, "eval/x/length_mean": 50.0}]
  for t in range(1, 101):
    rec = {"step": t, "reward/mean": min(t / 40, 1.0), "reward/true_mean": min(t / 60, 0.8)}
    if t % 20 == 0:
      rec.update({"eval/x/avg@8": 0.1 + t / 400, "eval/x/length_mean": 50.0})
    records.append(rec)
  _write_jsonl(run / "metrics.jsonl", records)
  out = plots.plot_run(run, tmp_path / "figs" / "run.png", title="toy",
                       params=SaturationParams(margin=20))
  _check_png(tmp_path / "figs" / "run.png")
  assert out.endswith("run.png")
  # from the analysis document (it names its metrics file), overwriting the PNG.
  doc = json.loads(json.dumps(analyze_run(run, SaturationParams(margin=20))))
  plots.plot_run(doc, tmp_path / "figs" / "run.png")
  _check_png(tmp_path / "figs" / "run.png")
  # an analysis of a mapping holds no curves: a clear error, no file.
  with pytest.raises(ValueError, match="no curves"):
    plots.plot_run(analyze_run(read_metrics(run)), tmp_path / "other.png")
  assert not (tmp_path / "other.png").exists()


def test_plot_runs_with_seeds_writes_png(tmp_path):
  def run(rate, offset):
    reward = {t: min(1.0, t * rate + offset) for t in range(1, 121)}
    return _metrics(reward, set={t: 0.1 + t * rate / 3 for t in range(0, 121, 20)})
  conditions = {"N=8": [run(0.05, 0.0), run(0.04, 0.02), run(0.06, 0.01)],
                "N=2048": [run(0.01, 0.0), run(0.012, 0.0)]}
  path = tmp_path / "seeds.png"
  plots.plot_runs_with_seeds(conditions, path, ["reward/mean", "eval/set/avg@8"],
                             params=SaturationParams(margin=20))
  _check_png(path)
  plots.plot_runs_with_seeds(conditions, tmp_path / "sd.png", ["reward/mean"], band="sd")
  _check_png(tmp_path / "sd.png")
  with pytest.raises(ValueError, match="band"):
    plots.plot_runs_with_seeds(conditions, tmp_path / "x.png", ["reward/mean"], band="iqr")
