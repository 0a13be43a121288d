"""The study report (rlvr_jax.study.report) and the verdicts on the paper's findings
(rlvr_jax.study.verdicts) on synthetic study directories whose curves have a known shape.

Every RL run of the synthetic studies has a pre-saturation length L (its condition's L_c plus
10 x (seed - 1)): the training reward ramps linearly from 0.2 to 0.8 and jumps to 0.9 at step L
(t_sat = L with epsilon 0.99), the held-out metric climbs linearly from 0.3 by `gain_of(L)` up
to step L and stays flat after it (Δ_sat = gain, Δ_post = 0), the OOD metric by half as much.
Runs of the large setting (true reward) never saturate (censored) and climb 0.006 per step, so
G = 0.006 L - gain. Evaluations every 10 steps, 100 steps.
"""
import json
import math
import os

import numpy as np
import pytest

from rlvr_jax.study import report as report_lib
from rlvr_jax.study import verdicts as V

METRIC = "eval/arith_eval/avg@4"
OOD = "eval/arith_ood/avg@4"
T = 100
T_975 = {1: 12.706204736174707, 2: 4.302652729749464}   # Student t quantiles (scipy)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# name -> (cpt, sft, L_c, faithfulness, n_eff); faithfulness rises with L_c, n_eff does not.
CONDITIONS = {
    "base+nothink": (False, "nothink", 20, 0.05, 5.0),
    "base+none": (False, "none", 30, 0.10, 2.0),
    "base+unfaithful": (False, "unfaithful", 40, 0.30, 6.0),
    "cpt+nothink": (True, "nothink", 50, 0.40, 1.0),
    "base+think": (False, "think", 60, 0.60, 4.0),
    "cpt+think": (True, "think", 80, 0.80, 3.0),
}
SETTINGS = {"scarce": "scarce", "noisy": "noisy", "large": "true"}


def rising(L):
  """Held-out gain growing with the pre-saturation length: 0 for L = 10 (memorisation)."""
  return 0.005 * (L - 10)


def falling(L):
  """The reversed world: the longer the pre-saturation phase, the smaller the gain."""
  return 0.45 - 0.005 * L


def run_records(L, gain, *, censored=False, true_reward=False, last_step=T):
  """metrics.jsonl records of one run (module docstring)."""
  records = []
  for t in range(last_step + 1):
    if censored:
      reward, frac = 0.2 + 0.7 * t / T, t / T
    else:
      reward, frac = (0.2 + 0.6 * t / L if t < L else 0.9), min(t, L) / L
    rec = {"step": t, "reward/mean": reward}
    if true_reward:
      rec["reward/true_mean"] = 0.8 * reward
    if t % 10 == 0:
      rec[METRIC] = 0.3 + gain * frac
      rec[OOD] = 0.2 + 0.5 * gain * frac
    records.append(rec)
  return records


def write_json(path, doc):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(doc, f)


def write_run(run_dir, records, status):
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  write_json(os.path.join(run_dir, "status.json"), {"status": status, "step": records[-1]["step"]})


def diagnose_doc(faithfulness, n_eff):
  share = lambda v: {"value": v, "low": max(0.0, v - 0.1), "high": min(1.0, v + 0.1)}  # noqa
  return {"faithfulness": {"programmatic": {"shares": {"all": {
              "aligned": share(faithfulness), "partial": share(0.5 * (1 - faithfulness)),
              "misaligned": share(0.5 * (1 - faithfulness))}}}},
          "diversity": {"mean": {"n_eff": n_eff, "div": n_eff / 16}}, "step": 10}


def run_L(condition, seed, conditions=CONDITIONS):
  return conditions[condition][2] + 10 * (seed - 1)


def make_study(root, *, gain_of=rising, conditions=CONDITIONS, settings=SETTINGS,
               large="large", seeds=(0, 1, 2), diagnose=True, failed=(), absent=(),
               no_diagnose_file=(), large_saturates=False):
  """Writes a synthetic study directory at `root`; returns its study.json document."""
  stages, cond_doc = [], {}
  for name, (cpt, sft, *_) in conditions.items():
    pre = f"sft/{name}" if sft != "none" else ("cpt" if cpt else "base")
    cond_doc[name] = {"cpt": cpt, "sft": sft, "pre_rl_dir": pre}
  stages.append({"name": "base", "kind": "cpt", "dir": "base", "deps": []})
  write_json(os.path.join(root, "base", "status.json"), {"status": "completed", "step": 1})
  for name, (cpt, sft, _, faith, n_eff) in conditions.items():
    if sft != "none":
      sft_dir = f"sft/{name}"
      stages.append({"name": sft_dir, "kind": "sft", "dir": sft_dir, "condition": name})
      write_json(os.path.join(root, sft_dir, "status.json"), {"status": "completed"})
    if diagnose:
      diag_dir = f"diag/{name}"
      stages.append({"name": diag_dir, "kind": "diagnose", "dir": diag_dir, "condition": name})
      if name not in no_diagnose_file:
        write_json(os.path.join(root, diag_dir, "diagnose.json"), diagnose_doc(faith, n_eff))
  for name in conditions:
    for setting, kind in settings.items():
      for seed in seeds:
        stage = f"rl/{name}/{setting}/s{seed}"
        stages.append({"name": stage, "kind": "rl", "dir": stage, "condition": name,
                       "setting": setting, "seed": seed, "deps": []})
        if stage in absent:
          continue
        L = run_L(name, seed, conditions)
        if kind == "true" and large_saturates:
          records = run_records(L, 0.006 * L)
        elif kind == "true":
          records = run_records(T, 0.006 * T, censored=True)
        else:
          records = run_records(L, gain_of(L), true_reward=kind == "noisy")
        if stage in failed:
          write_run(os.path.join(root, stage), records[:31], "failed")
        else:
          write_run(os.path.join(root, stage), records, "completed")
  doc = {"name": "toy", "metric": METRIC, "ood_metrics": [OOD],
         "saturation": {"epsilon": 0.99, "margin": 5, "window": None, "r_max_over": "all"},
         "conditions": cond_doc,
         "settings": {s: {"kind": k, "label": f"label-{s}"} for s, k in settings.items()},
         "large_setting": large, "seeds": list(seeds), "stages": stages}
  write_json(os.path.join(root, "study.json"), doc)
  return doc


def strict_json(path):
  def no_constants(name):
    raise ValueError(f"{path} holds {name}")
  with open(path) as f:
    return json.loads(f.read(), parse_constant=no_constants)


def by_stage(report):
  return {r["stage"]: r for r in report["runs"]}


def group(report, condition, setting):
  (g,) = [g for g in report["table"] if g["condition"] == condition and g["setting"] == setting]
  return g


def t_interval(values):
  """Mean and 95% t-interval of a few values, by hand."""
  x = np.asarray(values, float)
  half = T_975[len(x) - 1] * x.std(ddof=1) / math.sqrt(len(x))
  return x.mean(), x.mean() - half, x.mean() + half


# ---------------------------------------------------------------------------------- full study
FAILED = "rl/base+think/scarce/s2"
ABSENT = "rl/cpt+nothink/noisy/s1"


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("reproduced"))
  make_study(root, failed=(FAILED,), absent=(ABSENT,))
  return root, report_lib.write_report(root)


def test_report_files_exist_and_plots_are_pngs(reproduced):
  root, report = reproduced
  assert strict_json(os.path.join(root, "report.json")) == report
  assert set(report) >= {"runs", "table", "section4", "verdicts", "missing", "plots"}
  names = {os.path.basename(p) for p in report["plots"]}
  assert {"faithfulness_vs_delta_sat.png", "faithfulness_vs_t_sat.png",
          "diversity_vs_delta_sat.png", "curves_cpt_think_noisy.png"} <= names
  assert len([n for n in names if n.startswith("curves_")]) == len(CONDITIONS) * len(SETTINGS)
  for rel in report["plots"]:
    with open(os.path.join(root, rel), "rb") as f:
      data = f.read()
    assert data[:8] == PNG_MAGIC and len(data) > 1000, rel
  md = open(os.path.join(root, "report.md")).read()
  lines = md.splitlines()
  assert lines[0] == "# Study report: toy"
  first_verdict = next(i for i, line in enumerate(lines) if line.startswith("- Finding 1"))
  assert first_verdict < next(i for i, line in enumerate(lines) if line.startswith("| "))
  for line in report_lib.verdict_lines(report):
    assert f"- {line}" in md
  for rel in report["plots"]:
    assert f"]({rel})" in md


def test_failed_and_absent_runs_are_listed_and_left_out(reproduced):
  root, report = reproduced
  missing = {m["stage"]: m for m in report["missing"]}
  assert set(missing) == {FAILED, ABSENT}
  assert missing[FAILED]["state"] == "failed"
  assert missing[ABSENT]["state"] == "missing"
  assert FAILED not in by_stage(report) and ABSENT not in by_stage(report)
  assert len(report["runs"]) == len(CONDITIONS) * len(SETTINGS) * 3 - 2
  g = group(report, "base+think", "scarce")
  assert (g["planned"], g["n"]) == (3, 2)
  md = open(os.path.join(root, "report.md")).read()
  missing_section = md.split("## Missing / failed stages")[1]
  assert f"`{FAILED}` (rl): failed" in missing_section and f"`{ABSENT}` (rl): missing" in md


def test_per_run_values_match_the_curves(reproduced):
  _, report = reproduced
  rows = by_stage(report)
  memorising = rows["rl/base+nothink/scarce/s0"]           # L = 10: quick saturation, flat
  assert (memorising["t_sat"], memorising["censored"]) == (10, False)
  assert memorising["delta_sat"] == pytest.approx(0.0, abs=1e-12)
  assert memorising["gain"] == pytest.approx(0.0, abs=1e-12)
  long_run = rows["rl/cpt+think/noisy/s2"]                  # L = 90
  assert long_run["t_sat"] == 90 and long_run["pre_saturation_length"] == 90
  assert long_run["r_max"] == pytest.approx(0.9)
  assert long_run["true_t_sat"] == 90
  assert long_run["delta_sat"] == pytest.approx(rising(90))
  assert long_run["delta_post"] == pytest.approx(0.0, abs=1e-12)
  assert long_run["gain"] == pytest.approx(rising(90))
  assert long_run[f"gain:{OOD}"] == pytest.approx(0.5 * rising(90))
  assert long_run["G"] == pytest.approx(0.006 * 90 - rising(90))
  large = rows["rl/cpt+think/large/s2"]
  assert large["censored"] and large["t_sat"] == T and large["kind"] == "true"
  assert large["delta_sat"] == pytest.approx(0.6) and large["gain"] == pytest.approx(0.6)
  assert large["delta_post"] is None and large["G"] is None


def test_condition_setting_table_matches_hand_computation(reproduced):
  _, report = reproduced
  g = group(report, "cpt+think", "noisy")                  # L = 70, 80, 90
  mean, low, high = t_interval([70, 80, 90])
  assert (g["t_sat"]["value"], g["t_sat"]["low"], g["t_sat"]["high"]) == pytest.approx(
      (mean, low, high))
  mean, low, high = t_interval([rising(L) for L in (70, 80, 90)])
  assert (g["delta_sat"]["value"], g["delta_sat"]["low"], g["delta_sat"]["high"]) == \
      pytest.approx((mean, low, high))
  assert g["delta_post"]["value"] == pytest.approx(0.0, abs=1e-12)
  mean, low, high = t_interval([0.006 * L - rising(L) for L in (70, 80, 90)])
  assert (g["G"]["value"], g["G"]["low"], g["G"]["high"]) == pytest.approx((mean, low, high))
  g = group(report, "base+think", "scarce")                # seed 2 failed: L = 50, 60
  mean, low, high = t_interval([50, 60])
  assert (g["t_sat"]["value"], g["t_sat"]["low"], g["t_sat"]["high"]) == pytest.approx(
      (mean, low, high))
  assert g["t_sat"]["n"] == 2
  assert g["G"]["value"] == pytest.approx(np.mean([0.006 * L - rising(L) for L in (50, 60)]))
  g = group(report, "base+none", "large")
  assert g["censored"] == 3 and g["gain"]["value"] == pytest.approx(0.6)
  assert g["G"]["n"] == 0 and g["G"]["value"] is None


def test_section4_rows_and_generalizes_marks(reproduced):
  root, report = reproduced
  rows = [(r["row"], r["condition"]) for r in report["section4"]]
  assert rows == [("no CPT, non-thinking", "base+nothink"), ("no CPT, thinking", "base+think"),
                  ("CPT, non-thinking", "cpt+nothink"), ("CPT, thinking", "cpt+think")]
  cells = {r["condition"]: r["cells"] for r in report["section4"]}
  nothink = cells["base+nothink"]["scarce"]                # gains 0, 0.05, 0.10
  mean, low, high = t_interval([0.0, 0.05, 0.10])
  assert (nothink["value"], nothink["low"], nothink["high"]) == pytest.approx((mean, low, high))
  assert low < 0 and not nothink["generalizes"]
  think = cells["cpt+think"]["scarce"]                     # gains 0.30, 0.35, 0.40
  assert think["value"] == pytest.approx(0.35) and think["generalizes"]
  assert not cells["base+think"]["scarce"]["generalizes"]  # 2 seeds left: t_{0.975,1} is wide
  md = open(os.path.join(root, "report.md")).read()
  section4 = md.split("## §4")[1].split("## ")[0]
  assert "label-scarce" in section4 and "0.350 [" in section4 and "✓" in section4


def test_reproduced_verdicts(reproduced):
  _, report = reproduced
  v1, v2, v3 = report["verdicts"]
  assert [v["verdict"] for v in (v1, v2, v3)] == [V.REPRODUCED] * 3
  assert v1["value"] == pytest.approx(1.0) and v1["n"] == len(CONDITIONS) * 2 * 3 - 2
  assert v1["details"]["delta_post"]["value"] == pytest.approx(0.0, abs=1e-12)
  assert v1["details"]["share_of_gain_before_t_sat"]["value"] == pytest.approx(1.0)
  assert v2["value"] == pytest.approx(1.0) and v2["n"] == len(CONDITIONS)
  div = v2["details"]["rho_div"]
  assert div["low"] <= 0 <= div["high"]
  assert v3["details"]["necessity"]["low"] > 0 and v3["details"]["amplification"]["low"] > 0
  line = report_lib.verdict_lines(report)[0]
  assert line.startswith("Finding 1 (saturation dynamics): reproduced — Spearman "
                         "ρ(pre-saturation length, Δ_sat) = 1.000 [95% CI 1.000, 1.000] (n=34)")


def test_reversed_study_is_not_reproduced(tmp_path):
  make_study(str(tmp_path), gain_of=falling)
  report = report_lib.write_report(str(tmp_path), plots=False)
  assert [v["verdict"] for v in report["verdicts"]] == [V.NOT_REPRODUCED] * 3
  assert report["verdicts"][0]["ci"][1] < 0
  assert report["verdicts"][2]["details"]["necessity"]["high"] < 0
  assert report["plots"] == [] and not os.path.exists(tmp_path / "plots")
  assert report["missing"] == []


def test_missing_inputs(tmp_path):
  conditions = {k: CONDITIONS[k] for k in ("base+nothink", "base+think")}
  make_study(str(tmp_path), conditions=conditions, settings={"scarce": "scarce"}, large="",
             no_diagnose_file=tuple(conditions))
  report = report_lib.write_report(str(tmp_path))
  v1, v2, v3 = report["verdicts"]
  assert v1["verdict"] == V.REPRODUCED and v1["n"] == 6
  assert v2["verdict"] == V.INCONCLUSIVE
  assert report_lib.verdict_lines(report)[1] == (
      "Finding 2 (faithfulness): inconclusive — not measured in this study (no diagnose stage "
      "with a diagnose.json)")
  assert v3["verdict"] == V.REPRODUCED and v3["details"]["amplification"] is None
  assert "no CPT / no-CPT pair" in report_lib.verdict_lines(report)[2]
  assert {m["stage"] for m in report["missing"]} == {f"diag/{c}" for c in conditions}
  assert all(r["G"] is None for r in report["runs"])
  names = {os.path.basename(p) for p in report["plots"]}
  assert "faithfulness_vs_delta_sat.png" not in names and "t_sat_vs_delta_sat.png" in names


def test_gap_to_a_saturating_large_run(tmp_path):
  conditions = {"base+think": CONDITIONS["base+think"]}
  make_study(str(tmp_path), conditions=conditions, settings={"scarce": "scarce", "big": "true"},
             large="big", diagnose=False, large_saturates=True)
  rows = by_stage(report_lib.write_report(str(tmp_path), plots=False))
  for seed in (0, 1, 2):
    L = run_L("base+think", seed)
    assert rows[f"rl/base+think/scarce/s{seed}"]["G"] == pytest.approx(0.006 * L - rising(L))
    big = rows[f"rl/base+think/big/s{seed}"]
    assert big["G"] is None and not big["censored"] and big["t_sat"] == L


def test_no_runs_at_all_gives_a_report(tmp_path):
  conditions = {"base+think": CONDITIONS["base+think"]}
  doc = make_study(str(tmp_path), conditions=conditions, settings={"scarce": "scarce"},
                   large="", diagnose=False, seeds=(0,))
  for stage in doc["stages"]:
    if stage["kind"] == "rl":
      os.remove(tmp_path / stage["dir"] / "status.json")
  report = report_lib.write_report(str(tmp_path))
  assert report["runs"] == [] and len(report["missing"]) == 1
  assert report["missing"][0]["state"] == "no status.json"
  assert [v["details"].get("not_measured") is not None for v in report["verdicts"]] == [True] * 3
  assert group(report, "base+think", "scarce")["n"] == 0
  assert "No usable run." in open(tmp_path / "report.md").read()


def test_missing_study_json_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="study.json"):
    report_lib.write_report(str(tmp_path))


def test_censored_run_changes_by_hand():
  series = {0: 0.3, 10: 0.4, 20: 0.45}
  assert report_lib.metric_changes(series, 25, censored=True) == pytest.approx(
      {"delta_sat": 0.15, "delta_post": None, "gain": 0.15})
  out = report_lib.metric_changes(series, 5, censored=False)    # M(5) interpolated: 0.35
  assert out == pytest.approx({"delta_sat": 0.05, "delta_post": 0.10, "gain": 0.15})
  assert report_lib.metric_changes({}, 5, censored=False)["gain"] is None


# ---------------------------------------------------------------------------------- verdicts
def weak_run(x, y, **extra):
  return {"kind": "scarce", "setting": "scarce", "pre_saturation_length": x, "delta_sat": y,
          "delta_post": 0.0, "gain": y, **extra}


def test_finding1_inconclusive_on_noise_and_on_too_few_runs():
  x = [10, 20, 30, 40, 50, 60, 70, 80]
  noise = [0.12, 0.02, 0.20, 0.05, 0.15, 0.01, 0.18, 0.08]
  v = V.finding1([weak_run(a, b) for a, b in zip(x, noise)])
  assert v["verdict"] == V.INCONCLUSIVE
  assert v["ci"][0] <= 0 <= v["ci"][1]
  v = V.finding1([weak_run(10, 0.0), weak_run(50, 0.3)])
  assert v["verdict"] == V.INCONCLUSIVE and "too few runs (2 < 3)" in v["note"]
  full = {**weak_run(10, 0.1), "kind": "true"}
  v = V.finding1([full])
  assert v["verdict"] == V.INCONCLUSIVE and v["details"]["not_measured"]


def point(condition, faith, n_eff, dsat):
  return {"condition": condition, "faithfulness": faith, "n_eff": n_eff, "delta_sat": dsat}


def test_finding2_rules():
  dsat = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
  names = list("abcdef")
  flat = [3.0, 1.0, 5.0, 6.0, 2.0, 4.0]       # ρ with dsat near 0
  up = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
  pts = lambda faith, div: [point(*p) for p in zip(names, faith, div, dsat)]  # noqa
  assert V.finding2(pts(up, flat))["verdict"] == V.REPRODUCED
  assert V.finding2(pts(up[::-1], flat))["verdict"] == V.NOT_REPRODUCED
  assert V.finding2(pts(flat, up))["verdict"] == V.NOT_REPRODUCED   # diversity predicts instead
  assert V.finding2(pts(up, up))["verdict"] == V.INCONCLUSIVE       # both predict
  assert V.finding2(pts(flat, flat))["verdict"] == V.INCONCLUSIVE
  v = V.finding2(pts(up, flat)[:2])
  assert v["verdict"] == V.INCONCLUSIVE and "too few conditions" in v["note"]
  v = V.finding2([])
  assert V.format_verdict(v).endswith("not measured in this study (no diagnose stage with a "
                                      "diagnose.json)")


def gain_run(sft, cpt, setting, gain):
  return {"kind": "scarce", "sft": sft, "cpt": cpt, "setting": setting, "gain": gain}


def test_finding3_rules():
  base = [gain_run("nothink", False, s, g) for s in ("a", "b") for g in (0.0, 0.05, 0.1)]
  think = [gain_run("think", False, s, g) for s in ("a", "b") for g in (0.3, 0.35, 0.4)]
  cpt_think = [gain_run("think", True, s, g) for s in ("a", "b") for g in (0.5, 0.55, 0.6)]
  worse_cpt = [gain_run("think", True, s, g) for s in ("a", "b") for g in (0.0, 0.02, 0.04)]
  noisy_think = [gain_run("think", False, s, g) for s in ("a", "b") for g in (-0.2, 0.05, 0.3)]
  assert V.finding3(base + think + cpt_think)["verdict"] == V.REPRODUCED
  assert V.finding3(base + think + worse_cpt)["verdict"] == V.NOT_REPRODUCED
  assert V.finding3(base + noisy_think)["verdict"] == V.INCONCLUSIVE
  v = V.finding3(think)
  assert v["verdict"] == V.INCONCLUSIVE and "no-trace" in v["details"]["not_measured"]
  full = [{**r, "kind": "true"} for r in base + think]
  assert V.finding3(full)["details"]["not_measured"]


def test_mean_difference_is_stratified_by_setting():
  # setting a: 1.0 vs 0.0; setting b: 3.0 vs 2.5 (b has one value per group: no spread).
  out = V.mean_difference_ci([1.0, 1.0, 3.0], ["a", "a", "b"], [0.0, 0.0, 2.5, 9.0],
                             ["a", "a", "b", "c"])
  assert out["value"] == pytest.approx((1.0 + 0.5) / 2)
  assert out["low"] is None and out["high"] is None     # a single-value cell: undefined
  assert out["n"] == 6 and out["strata"] == ["a", "b"]
  assert V.mean_difference_ci([1.0], ["a"], [0.0], ["b"]) is None


def test_mean_difference_interval_is_welchs():
  """One stratum: scipy's Welch interval. Two strata: the mean of the per-stratum differences,
  whose variance is (the sum of the four cells' mean variances) / 2², with Welch-Satterthwaite
  degrees of freedom: two identical strata give the same value with a narrower interval."""
  from scipy import stats as sps
  a, b = [0.31, 0.40, 0.22], [0.10, 0.05]
  out = V.mean_difference_ci(a, ["s"] * 3, b, ["s"] * 2)
  ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
  assert out["value"] == pytest.approx(np.mean(a) - np.mean(b), abs=1e-12)
  assert (out["low"], out["high"]) == pytest.approx((ci.low, ci.high), abs=1e-9)
  twice = V.mean_difference_ci(a + a, ["s"] * 3 + ["t"] * 3, b + b, ["s"] * 2 + ["t"] * 2)
  assert twice["value"] == pytest.approx(out["value"], abs=1e-12)
  half_width = (twice["high"] - twice["low"]) / 2
  var = (np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 2) / 2       # 2 x (cell variances) / 2²
  terms = [np.var(a, ddof=1) / 3 / 4, np.var(b, ddof=1) / 2 / 4] * 2
  df = var ** 2 / sum(t ** 2 / (n - 1) for t, n in zip(terms, [3, 2, 3, 2]))
  assert half_width == pytest.approx(sps.t.ppf(0.975, df) * np.sqrt(var), rel=1e-9)
  assert half_width < (out["high"] - out["low"]) / 2
  # no spread in any cell: a point interval
  flat = V.mean_difference_ci([1.0, 1.0], ["s", "s"], [0.5, 0.5], ["s", "s"])
  assert (flat["low"], flat["value"], flat["high"]) == pytest.approx((0.5, 0.5, 0.5))


def test_format_verdict_exact():
  v = {"finding": 1, "name": "saturation dynamics", "verdict": V.REPRODUCED,
       "statistic": "Spearman ρ(pre-saturation length, Δ_sat)", "value": 0.61234,
       "ci": [0.2, 0.85], "n": 12, "details": {}, "note": ""}
  assert V.format_verdict(v) == ("Finding 1 (saturation dynamics): reproduced — Spearman "
                                 "ρ(pre-saturation length, Δ_sat) = 0.612 [95% CI 0.200, "
                                 "0.850] (n=12)")
  assert V.format_verdict({**v, "note": "x"}).endswith("(n=12); x")
  assert V.format_verdict({**v, "value": None, "ci": [None, None]}).endswith("= n/a (n=12)")
