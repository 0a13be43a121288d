"""Verdicts on the paper's three findings, from a study's aggregated numbers (pure numpy).

Every verdict is read from the sign of a statistic's 95% interval only (no tuned
thresholds): "reproduced" when the interval lies on the paper's side of 0, "not reproduced"
when it lies on the other side, "inconclusive" otherwise (the interval contains 0, is undefined,
or the study has too few points). A finding whose inputs the study does not have at all is
"inconclusive — not measured in this study (<what is missing>)".

Inputs (the report builds them; see rlvr_jax.study.report):
  runs    one dict per usable RL run: condition, setting, kind (the setting's kind; "true" = full
          supervision, every other kind is weak supervision), cpt, sft, pre_saturation_length,
          delta_sat, delta_post and gain (in-domain held-out metric; None when not measured)
  points  one dict per pre-RL condition with diagnostics (`condition_points`): faithfulness
          (share of aligned traces), n_eff (output diversity), delta_sat (mean over the
          condition's weak-supervision runs)

Findings:
  1 (saturation dynamics)  Spearman ρ between the pre-saturation length and Δ_sat over all
      weak-supervision runs, bootstrap over runs. Reproduced: CI above 0; not reproduced: CI
      below 0. Details: mean Δ_post and the share of the total gain made before t_sat.
  2 (faithfulness)  over conditions, ρ_faith = ρ(faithfulness, Δ_sat) and
      ρ_div = ρ(n_eff, Δ_sat). Reproduced: ρ_faith CI above 0 and ρ_div CI contains 0; not
      reproduced: ρ_faith CI below 0, or ρ_faith CI contains 0 while ρ_div CI excludes 0;
      fewer than 3 conditions: inconclusive.
  3 (thinking SFT)  (a) necessity: mean in-domain gain of thinking-SFT runs minus that of runs
      without traces (sft none / nothink); (b) amplification: CPT+think minus no-CPT think.
      Each difference is stratified by setting (the mean over the settings both groups ran of
      the per-setting difference of means; Welch t interval, as runs are a few seeds per
      group x setting). Reproduced: (a)
      CI above 0 and (b) CI above 0 (or (b) not computable: no CPT / no-CPT pair); not
      reproduced: (a) or (b) CI below 0.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlvr_jax.diagnostics import stats

__all__ = ["REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "NAMES", "LEVEL", "MIN_POINTS",
           "is_finite", "is_weak", "ci_side", "interval_text", "mean_difference_ci",
           "condition_points", "finding1", "finding2", "finding3", "all_verdicts",
           "not_measured", "format_verdict"]

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
NAMES = {1: "saturation dynamics", 2: "faithfulness", 3: "thinking SFT"}
LEVEL = 0.95
MIN_POINTS = 3          # a rank correlation over fewer points carries no information
TRUE_KIND = "true"      # the setting kind of full supervision; every other kind is weak
THINK = "think"
NO_TRACES = ("none", "nothink")


# ---------------------------------------------------------------------------------- helpers
def is_finite(x: Any) -> bool:
  """A real number (not bool) that is neither NaN nor infinite."""
  return (isinstance(x, (int, float, np.number)) and not isinstance(x, (bool, np.bool_))
          and math.isfinite(x))


def _json_float(x: Any) -> float | None:
  return float(x) if is_finite(x) else None


def is_weak(run: Mapping[str, Any]) -> bool:
  """A run under weak supervision: its setting's kind is not "true"."""
  return run.get("kind") != TRUE_KIND


def ci_side(low: float | None, high: float | None) -> str:
  """Where an interval lies relative to 0: "above", "below", "contains" or "undefined"."""
  if not (is_finite(low) and is_finite(high)):
    return "undefined"
  if low > 0:
    return "above"
  if high < 0:
    return "below"
  return "contains"


def _num(x: Any, digits: int = 3) -> str:
  return f"{x:.{digits}f}" if is_finite(x) else "n/a"


def interval_text(value: Any, low: Any, high: Any, digits: int = 3) -> str:
  """"0.123 [95% CI 0.050, 0.200]"; "n/a" for a missing value, no interval when undefined."""
  if not is_finite(value):
    return "n/a"
  if not (is_finite(low) and is_finite(high)):
    return _num(value, digits)
  return f"{_num(value, digits)} [{LEVEL:.0%} CI {_num(low, digits)}, {_num(high, digits)}]"


def _verdict(finding: int, verdict: str, statistic: str, value: Any, ci: Sequence[Any], n: int,
             details: Mapping[str, Any] | None = None, note: str = "") -> dict[str, Any]:
  return {"finding": finding, "name": NAMES[finding], "verdict": verdict,
          "statistic": statistic, "value": _json_float(value),
          "ci": [_json_float(ci[0]), _json_float(ci[1])], "n": int(n),
          "details": dict(details or {}), "note": note}


def not_measured(finding: int, what: str) -> dict[str, Any]:
  """The verdict of a finding whose inputs are absent from the study."""
  return _verdict(finding, INCONCLUSIVE, "", None, (None, None), 0, {"not_measured": what})


def _estimate_dict(value: float, low: float, high: float, n: int) -> dict[str, Any]:
  return {"value": _json_float(value), "low": _json_float(low), "high": _json_float(high),
          "n": int(n)}


def _estimate_text(est: Mapping[str, Any]) -> str:
  return interval_text(est["value"], est["low"], est["high"])


def _spearman(x: Sequence[float], y: Sequence[float], n_boot: int, seed: int
              ) -> dict[str, Any]:
  rho, low, high = stats.spearman_ci(x, y, n_boot=n_boot, level=LEVEL, seed=seed)
  return _estimate_dict(rho, low, high, len(x))


def _ratio_of_means(pairs_N2: np.ndarray) -> float:
  """mean(column 0) / mean(column 1); NaN when the second mean is 0."""
  denom = float(np.mean(pairs_N2[:, 1]))
  return float(np.mean(pairs_N2[:, 0])) / denom if abs(denom) > 1e-12 else math.nan


def mean_difference_ci(a: Sequence[float], a_strata: Sequence[Any], b: Sequence[float],
                       b_strata: Sequence[Any]) -> dict[str, Any] | None:
  """The mean of a minus the mean of b, stratified: the average over the S strata both groups
  have of (mean of a in the stratum − mean of b in it), with Welch's t interval: variance
  Σ_s (var(a_s)/n_a_s + var(b_s)/n_b_s) / S² (sample variances), degrees of freedom by
  Welch–Satterthwaite. Runs are seeds, a handful per cell, where a bootstrap interval is too
  narrow (stats.mean_ci_over_seeds); with one stratum this is the textbook Welch interval. A
  cell with fewer than 2 values leaves the interval undefined (NaN: no spread to estimate).
  Returns {value, low, high, n (values used), strata}; None when the groups share no stratum."""
  common = sorted(set(a_strata) & set(b_strata), key=str)
  if not common:
    return None
  cells = []    # (values of a, values of b) per common stratum
  for c in common:
    cells.append(tuple(np.asarray([v for v, s in zip(values, strata) if s == c], float)
                       for values, strata in ((a, a_strata), (b, b_strata))))
  value = float(np.mean([x.mean() - y.mean() for x, y in cells]))
  n = sum(len(x) + len(y) for x, y in cells)
  sizes = [len(v) for cell in cells for v in cell]
  if min(sizes) < 2:
    return {**_estimate_dict(value, math.nan, math.nan, n), "strata": [str(c) for c in common]}
  # each term: the variance of one cell's mean, weighted by 1/S² (the average over strata)
  terms = [float(np.var(v, ddof=1)) / len(v) / len(common) ** 2 for cell in cells for v in cell]
  variance = sum(terms)
  if variance <= 0:
    low = high = value
  else:
    df = variance ** 2 / sum(t ** 2 / (len(v) - 1) for t, v in
                             zip(terms, [v for cell in cells for v in cell]))
    half = stats.t_quantile((1 + LEVEL) / 2, df) * math.sqrt(variance)
    low, high = value - half, value + half
  return {**_estimate_dict(value, low, high, n), "strata": [str(c) for c in common]}


def _weak_runs(runs: Sequence[Mapping[str, Any]], *keys: str) -> list[Mapping[str, Any]]:
  """The weak-supervision runs with a finite value of every key."""
  return [r for r in runs if is_weak(r) and all(is_finite(r.get(k)) for k in keys)]


def condition_points(runs: Sequence[Mapping[str, Any]],
                     diagnostics: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
  """One point per condition with diagnostics: its faithfulness (and partial share), n_eff and
  div, with the mean Δ_sat, pre-saturation length and gain of its weak-supervision runs (None
  when it has none) and how many runs they average."""
  points = []
  for condition, diag in diagnostics.items():
    mine = _weak_runs([r for r in runs if r.get("condition") == condition], "delta_sat")
    point = {"condition": condition, **{k: diag.get(k) for k in
                                        ("faithfulness", "partial", "n_eff", "div")},
             "runs": len(mine)}
    for key in ("delta_sat", "pre_saturation_length", "gain"):
      values = [r[key] for r in mine if is_finite(r.get(key))]
      point[key] = float(np.mean(values)) if values else None
    points.append(point)
  return points


# ---------------------------------------------------------------------------------- finding 1
def finding1(runs: Sequence[Mapping[str, Any]], *, n_boot: int = 2000, seed: int = 0
             ) -> dict[str, Any]:
  """Finding 1: longer pre-saturation phases come with larger held-out gains before t_sat."""
  weak = _weak_runs(runs, "pre_saturation_length", "delta_sat")
  if not weak:
    return not_measured(1, "no weak-supervision run with a training reward and an in-domain "
                           "evaluation")
  rho = _spearman([r["pre_saturation_length"] for r in weak], [r["delta_sat"] for r in weak],
                  n_boot, seed)
  post = [r["delta_post"] for r in weak if is_finite(r.get("delta_post"))]
  mean_post = (_estimate_dict(*stats.bootstrap_ci(post, n_boot=n_boot, level=LEVEL, seed=seed),
                              len(post)) if post else _estimate_dict(math.nan, math.nan,
                                                                     math.nan, 0))
  gained = [(r["delta_sat"], r["gain"]) for r in weak if is_finite(r.get("gain"))]
  share = (_estimate_dict(*stats.bootstrap_ci(np.asarray(gained), _ratio_of_means,
                                              n_boot=n_boot, level=LEVEL, seed=seed),
                          len(gained)) if gained else _estimate_dict(math.nan, math.nan,
                                                                     math.nan, 0))
  details = {"rho": rho, "delta_post": mean_post, "share_of_gain_before_t_sat": share,
             "censored": sum(bool(r.get("censored")) for r in weak)}
  note = (f"mean Δ_post = {_estimate_text(mean_post)} (n={mean_post['n']}); share of the gain "
          f"made before t_sat = {_estimate_text(share)}")
  if len(weak) < MIN_POINTS:
    verdict = INCONCLUSIVE
    note = f"too few runs ({len(weak)} < {MIN_POINTS}); " + note
  else:
    verdict = {"above": REPRODUCED, "below": NOT_REPRODUCED}.get(
        ci_side(rho["low"], rho["high"]), INCONCLUSIVE)
  return _verdict(1, verdict, "Spearman ρ(pre-saturation length, Δ_sat)", rho["value"],
                  (rho["low"], rho["high"]), len(weak), details, note)


# ---------------------------------------------------------------------------------- finding 2
def _finding2_verdict(faith_side: str, div_side: str) -> str:
  if faith_side == "above" and div_side == "contains":
    return REPRODUCED
  if faith_side == "below" or (faith_side == "contains" and div_side in ("above", "below")):
    return NOT_REPRODUCED
  return INCONCLUSIVE


def finding2(points: Sequence[Mapping[str, Any]], *, n_boot: int = 2000, seed: int = 0
             ) -> dict[str, Any]:
  """Finding 2: the pre-RL model's faithfulness predicts Δ_sat, its output diversity does not."""
  if not points:
    return not_measured(2, "no diagnose stage with a diagnose.json")
  usable = [p for p in points
            if all(is_finite(p.get(k)) for k in ("faithfulness", "n_eff", "delta_sat"))]
  if not usable:
    return not_measured(2, "no condition has faithfulness, diversity and a weak-supervision "
                           "run with Δ_sat")
  dsat = [p["delta_sat"] for p in usable]
  faith = _spearman([p["faithfulness"] for p in usable], dsat, n_boot, seed)
  div = _spearman([p["n_eff"] for p in usable], dsat, n_boot, seed)
  details = {"rho_faith": faith, "rho_div": div, "conditions": [p["condition"] for p in usable]}
  note = f"ρ(diversity n_eff, Δ_sat) = {_estimate_text(div)}"
  if len(usable) < MIN_POINTS:
    verdict = INCONCLUSIVE
    note = f"too few conditions with diagnostics ({len(usable)} < {MIN_POINTS}); " + note
  else:
    verdict = _finding2_verdict(ci_side(faith["low"], faith["high"]),
                                ci_side(div["low"], div["high"]))
  return _verdict(2, verdict, "Spearman ρ(faithfulness, Δ_sat)", faith["value"],
                  (faith["low"], faith["high"]), len(usable), details, note)


# ---------------------------------------------------------------------------------- finding 3
def _gain_difference(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]
                     ) -> dict[str, Any] | None:
  """mean_difference_ci of the gains of runs a minus runs b, stratified by setting; None when
  either side has fewer than 2 runs (no spread to estimate) or they share no setting."""
  if len(a) < 2 or len(b) < 2:
    return None
  return mean_difference_ci([r["gain"] for r in a], [r["setting"] for r in a],
                            [r["gain"] for r in b], [r["setting"] for r in b])


def _finding3_verdict(necessity: Mapping[str, Any], amplification: Mapping[str, Any] | None
                      ) -> str:
  a_side = ci_side(necessity["low"], necessity["high"])
  b_side = None if amplification is None else ci_side(amplification["low"],
                                                      amplification["high"])
  if a_side == "below" or b_side == "below":
    return NOT_REPRODUCED
  if a_side == "above" and b_side in (None, "above"):
    return REPRODUCED
  return INCONCLUSIVE


def finding3(runs: Sequence[Mapping[str, Any]], *, n_boot: int = 2000, seed: int = 0
             ) -> dict[str, Any]:
  """Finding 3: thinking SFT is necessary for generalization under weak supervision, and CPT
  amplifies it. (n_boot, seed: unused; its intervals are Welch's, see mean_difference_ci.)"""
  del n_boot, seed
  weak = _weak_runs(runs, "gain")
  think = [r for r in weak if r.get("sft") == THINK]
  plain = [r for r in weak if r.get("sft") in NO_TRACES]
  absent = [what for what, group in (("thinking-SFT", think), ("no-trace (none/nothink)", plain))
            if not group]
  if absent:
    return not_measured(3, f"no weak-supervision runs of {' or '.join(absent)} conditions")
  necessity = _gain_difference(think, plain)
  statistic = "gain(think) − gain(no traces)"
  if necessity is None:
    return _verdict(3, INCONCLUSIVE, statistic, None, (None, None), len(think) + len(plain),
                    note="too few runs (fewer than 2 in a group, or no setting in common)")
  cpt_think = [r for r in think if r.get("cpt")]
  base_think = [r for r in think if not r.get("cpt")]
  amplification = (_gain_difference(cpt_think, base_think)
                   if cpt_think and base_think else None)
  if amplification is not None:
    note = (f"amplification gain(CPT+think) − gain(think) = {_estimate_text(amplification)} "
            f"(n={amplification['n']})")
  elif cpt_think and base_think:
    note = ("amplification not computed: too few CPT+think or no-CPT think runs in a common "
            "setting (verdict from necessity alone)")
  else:
    note = ("amplification not computed: the study has no CPT / no-CPT pair of thinking-SFT "
            "conditions (verdict from necessity alone)")
  details = {"necessity": necessity, "amplification": amplification}
  return _verdict(3, _finding3_verdict(necessity, amplification), statistic, necessity["value"],
                  (necessity["low"], necessity["high"]), necessity["n"], details, note)


# ---------------------------------------------------------------------------------- together
def all_verdicts(runs: Sequence[Mapping[str, Any]], points: Sequence[Mapping[str, Any]], *,
                 n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
  """The three verdicts, in order."""
  return [finding1(runs, n_boot=n_boot, seed=seed), finding2(points, n_boot=n_boot, seed=seed),
          finding3(runs, n_boot=n_boot, seed=seed)]


def format_verdict(v: Mapping[str, Any]) -> str:
  """`Finding 1 (saturation dynamics): reproduced — <statistic> = <value> [95% CI lo, hi]
  (n=...)`, then `; <note>` when the verdict has one; a finding not measured reads
  `Finding k (name): inconclusive — not measured in this study (<what is missing>)`."""
  head = f"Finding {v['finding']} ({v['name']}): {v['verdict']} — "
  missing = (v.get("details") or {}).get("not_measured")
  if missing:
    return head + f"not measured in this study ({missing})"
  value = interval_text(v["value"], *v["ci"])
  line = head + f"{v['statistic']} = {value} (n={v['n']})"
  return line + (f"; {v['note']}" if v.get("note") else "")
