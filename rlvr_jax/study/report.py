"""The report of a study directory: DIR/report.md, DIR/report.json and DIR/plots/*.png.

  write_report(study_dir) -> dict     reads DIR/study.json and the stage directories it names
  verdict_lines(report) -> [str]      one line per finding (verdicts.format_verdict)

Everything is regenerated from the directory alone (study.json: name, metric, ood_metrics,
saturation, conditions, settings, large_setting, stages). A stage that failed, is unfinished or
is missing is listed under "missing" and left out of every statistic; it never stops the report.

Per RL run (one row): t_sat with saturation.analyze_run and the study's `saturation` settings;
a run that never saturates within T − margin is *censored*: its t_sat is its last step T, its
whole curve counts as pre-saturation (Δ_sat = total gain) and its Δ_post is None (not observed).
pre_saturation_length = t_sat − the first step with a reward. For the in-domain metric (and
each OOD metric, as `<stat>:<key>`): delta_sat = M(t_sat) − M(first evaluation) (M between
evaluations linearly interpolated, as in saturation.metric_at), delta_post = max over M(t_sat)
and the evaluations after t_sat minus M(t_sat), gain = last evaluation − first evaluation. G:
saturation.large_small_gap against the `large_setting` run of the same condition and seed.

Per condition x setting: mean and 95% t-interval over seeds (stats.mean_ci_over_seeds) of
t_sat, Δ_sat, Δ_post, gain, G and the OOD gains. §4 table: {no CPT, CPT} x {non-thinking,
thinking} SFT conditions x settings, mean in-domain gain with its interval, "✓" (generalizes)
when the interval lies above 0. Verdicts: rlvr_jax.study.verdicts.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlvr_jax.diagnostics import saturation as sat
from rlvr_jax.diagnostics import stats
from rlvr_jax.run import files
from rlvr_jax.run import workdir as workdir_lib
from rlvr_jax.study import verdicts as verdicts_lib

__all__ = ["STUDY_FILE", "DIAGNOSE_FILE", "FINISHED_STATES", "write_report", "verdict_lines",
           "build_report", "read_study", "saturation_params", "run_row", "metric_changes",
           "diagnostics_summary", "group_table", "section4_table", "render_markdown"]

STUDY_FILE = "study.json"
DIAGNOSE_FILE = "diagnose.json"
PLOTS_DIR = "plots"
FINISHED_STATES = (*workdir_lib.FINISHED, "finished")
# (row key, header, digits) of the per-seed statistics of the condition x setting table.
GROUP_STATS = (("t_sat", "t_sat", 1), ("delta_sat", "Δ_sat", 3), ("delta_post", "Δ_post", 3),
               ("gain", "gain", 3), ("G", "G", 3))
SECTION4_ROWS = ((False, "nothink", "no CPT, non-thinking"), (False, "think", "no CPT, thinking"),
                 (True, "nothink", "CPT, non-thinking"), (True, "think", "CPT, thinking"))
GENERALIZES = "✓"


# ---------------------------------------------------------------------------------- reading
def _join(study_dir: str, rel: str) -> str:
  return os.fspath(files.as_path(study_dir) / rel)


def read_study(study_dir: str) -> dict[str, Any]:
  """DIR/study.json (FileNotFoundError naming it when absent)."""
  path = _join(study_dir, STUDY_FILE)
  if not files.exists(path):
    raise FileNotFoundError(f"no {path}: a study directory holds study.json (rlvr-jax study)")
  return json.loads(files.read_text(path))


def saturation_params(section: Mapping[str, Any] | None) -> sat.SaturationParams:
  """SaturationParams from study.json's `saturation` section (absent fields: the defaults)."""
  known = sat.SaturationParams.__dataclass_fields__
  return sat.SaturationParams(**{k: v for k, v in (section or {}).items() if k in known})


def _stage_dir(study_dir: str, stage: Mapping[str, Any]) -> str:
  return _join(study_dir, stage.get("dir") or stage["name"])


def _state(stage_dir: str) -> str:
  """The stage's status.json state ("status", or "state"), "missing" without a directory and
  "no status.json" without the file."""
  if not files.exists(stage_dir):
    return "missing"
  doc = workdir_lib.read_status(stage_dir)
  if doc is None:
    return "no status.json"
  return str(doc.get("status") or doc.get("state") or "unknown")


def _missing(stage: Mapping[str, Any], state: str, reason: str) -> dict[str, Any]:
  return {"stage": stage["name"], "kind": stage.get("kind"), "condition": stage.get("condition"),
          "setting": stage.get("setting"), "seed": stage.get("seed"), "state": state,
          "reason": reason}


def _dig(doc: Any, *keys: str) -> Any:
  for key in keys:
    if not isinstance(doc, Mapping) or key not in doc:
      return None
    doc = doc[key]
  return doc


def diagnostics_summary(doc: Mapping[str, Any]) -> dict[str, Any]:
  """The numbers of a diagnose.json the report uses: faithfulness (share of aligned traces,
  programmatic labels, all responses) with its interval, the partial share, and the mean
  diversity n_eff and div (None where the document lacks them)."""
  shares = _dig(doc, "faithfulness", "programmatic", "shares", "all")
  diversity = _dig(doc, "diversity", "mean")
  return {"faithfulness": _dig(shares, "aligned", "value"),
          "faithfulness_ci": [_dig(shares, "aligned", "low"), _dig(shares, "aligned", "high")],
          "partial": _dig(shares, "partial", "value"),
          "n_eff": _dig(diversity, "n_eff"), "div": _dig(diversity, "div")}


def _read_diagnose(study_dir: str, stage: Mapping[str, Any]
                   ) -> tuple[dict[str, Any] | None, str | None]:
  """(summary, None) of a diagnose stage, or (None, why it is unusable)."""
  path = _join(_stage_dir(study_dir, stage), DIAGNOSE_FILE)
  if not files.exists(path):
    return None, f"no {DIAGNOSE_FILE}"
  try:
    doc = json.loads(files.read_text(path))
  except ValueError as e:
    return None, f"unreadable {DIAGNOSE_FILE}: {e}"
  summary = diagnostics_summary(doc)
  if summary["faithfulness"] is None and summary["n_eff"] is None:
    return None, f"{DIAGNOSE_FILE} has neither faithfulness nor diversity"
  return summary, None


# ---------------------------------------------------------------------------------- one run
def metric_changes(series: Mapping[int, float] | None, t_sat: int, censored: bool
                   ) -> dict[str, float | None]:
  """delta_sat, delta_post and gain of one held-out metric's evaluations {step: value} for a
  run whose (effective) saturation step is t_sat (module docstring); all None without
  evaluations."""
  if not series:
    return {"delta_sat": None, "delta_post": None, "gain": None}
  steps, values = list(series), list(series.values())
  first, last = values[0], values[-1]
  at_sat = last if censored else sat.metric_at(steps, values, t_sat).value
  after = [v for s, v in series.items() if s > t_sat]
  return {"delta_sat": None if at_sat is None else at_sat - first,
          "delta_post": None if censored or at_sat is None else max([at_sat, *after]) - at_sat,
          "gain": last - first}


def run_row(stage: Mapping[str, Any], study: Mapping[str, Any], metrics: sat.Metrics,
            params: sat.SaturationParams) -> dict[str, Any]:
  """The report row of one usable RL run (G is filled in later by `_add_gaps`)."""
  analysis = sat.analyze_run(metrics, params, metric_keys=[])
  censored = analysis["t_sat"] is None
  t_sat = analysis["T"] if censored else analysis["t_sat"]
  condition = study["conditions"].get(stage.get("condition"), {})
  row = {"stage": stage["name"], "condition": stage.get("condition"),
         "setting": stage.get("setting"),
         "kind": (study["settings"].get(stage.get("setting")) or {}).get("kind"),
         "seed": stage.get("seed"), "cpt": bool(condition.get("cpt")),
         "sft": condition.get("sft"), "t_sat": t_sat, "censored": censored,
         "pre_saturation_length": t_sat - analysis["first_step"], "T": analysis["T"],
         "r_max": analysis["r_max"],
         "true_t_sat": (analysis.get("true_reward") or {}).get("t_sat"), "G": None}
  row.update(metric_changes(metrics.get(study["metric"]), t_sat, censored))
  for key in study.get("ood_metrics") or []:
    for stat, value in metric_changes(metrics.get(key), t_sat, censored).items():
      row[f"{stat}:{key}"] = value
  return row


def _read_rl(study_dir: str, stage: Mapping[str, Any], metric: str
             ) -> tuple[sat.Metrics | None, str, str | None]:
  """(metrics, state, None) of a usable RL run, or (None, state, why it is unusable)."""
  stage_dir = _stage_dir(study_dir, stage)
  state = _state(stage_dir)
  if state not in FINISHED_STATES:
    return None, state, f"the run is {state}, not finished"
  try:
    metrics = sat.read_metrics(stage_dir)
  except (OSError, ValueError) as e:
    return None, state, f"unreadable metrics: {e}"
  if not metrics.get(sat.REWARD_KEY):
    return None, state, f"no {sat.REWARD_KEY} in metrics.jsonl"
  if not metrics.get(metric):
    return None, state, f"no evaluations of {metric}"
  return metrics, state, None


def _add_gaps(rows: list[dict[str, Any]], metrics: Mapping[str, sat.Metrics],
              study: Mapping[str, Any], params: sat.SaturationParams) -> None:
  """Fills G of every row outside the large setting whose large-setting twin (same condition
  and seed) is usable; G stays None for a censored run (no t_sat to read it at)."""
  large = study.get("large_setting") or ""
  twins = {(r["condition"], r["seed"]): r["stage"] for r in rows if r["setting"] == large}
  for row in rows:
    twin = twins.get((row["condition"], row["seed"]))
    if not large or row["setting"] == large or twin is None or row["censored"]:
      continue
    gap = sat.large_small_gap(metrics[row["stage"]], metrics[twin], params,
                              metric_keys=[study["metric"]])
    row["G"] = gap[study["metric"]]["G"]


def _collect(study_dir: str, study: Mapping[str, Any], params: sat.SaturationParams):
  """(rows, metrics by stage, diagnostics by condition, missing) of every stage."""
  rows, metrics, diagnostics, missing = [], {}, {}, []
  for stage in study.get("stages") or []:
    kind = stage.get("kind")
    if kind == "rl":
      run_metrics, state, why = _read_rl(study_dir, stage, study["metric"])
      if why:
        missing.append(_missing(stage, state, why))
        continue
      metrics[stage["name"]] = run_metrics
      rows.append({**run_row(stage, study, run_metrics, params), "state": state})
    elif kind == "diagnose":
      summary, why = _read_diagnose(study_dir, stage)
      if why:
        missing.append(_missing(stage, _state(_stage_dir(study_dir, stage)), why))
      else:
        diagnostics[stage.get("condition")] = summary
    else:
      state = _state(_stage_dir(study_dir, stage))
      if state not in FINISHED_STATES and state != "no status.json":
        missing.append(_missing(stage, state, f"the {kind} stage is {state}, not finished"))
  _add_gaps(rows, metrics, study, params)
  return rows, metrics, diagnostics, missing


# ---------------------------------------------------------------------------------- tables
def _seed_estimate(values: Sequence[Any]) -> stats.Estimate:
  """Mean and t-interval over the finite values (stats.mean_ci_over_seeds)."""
  x = [float(v) for v in values if verdicts_lib.is_finite(v)]
  mean, low, high = stats.mean_ci_over_seeds(x)
  return stats.Estimate(mean, low, high, len(x), len(x))


def _group_stats(study: Mapping[str, Any]) -> list[tuple[str, str, int]]:
  ood = [(f"gain:{k}", f"gain {k.removeprefix('eval/')}", 3) for k in study.get("ood_metrics")
         or []]
  return [*GROUP_STATS, *ood]


def group_table(rows: Sequence[Mapping[str, Any]], study: Mapping[str, Any]
                ) -> list[dict[str, Any]]:
  """One entry per condition x setting with planned RL stages: planned, n (usable runs),
  censored, and per statistic (`_group_stats`) its seed estimate as a dict."""
  planned: dict[tuple[str, str], int] = {}
  for stage in study.get("stages") or []:
    if stage.get("kind") == "rl":
      key = (stage.get("condition"), stage.get("setting"))
      planned[key] = planned.get(key, 0) + 1
  order = {c: i for i, c in enumerate(study["conditions"])}
  order_s = {s: i for i, s in enumerate(study["settings"])}
  out = []
  for cond, setting in sorted(planned, key=lambda k: (order.get(k[0], 1e9),
                                                      order_s.get(k[1], 1e9))):
    mine = [r for r in rows if r["condition"] == cond and r["setting"] == setting]
    entry = {"condition": cond, "setting": setting,
             "kind": (study["settings"].get(setting) or {}).get("kind"),
             "planned": planned[(cond, setting)], "n": len(mine),
             "censored": sum(r["censored"] for r in mine)}
    for key, _, _ in _group_stats(study):
      entry[key] = _seed_estimate([r.get(key) for r in mine]).to_dict()
    out.append(entry)
  return out


def _estimate_cell(est: Mapping[str, Any], digits: int) -> str:
  return stats.Estimate(*(math.nan if est[k] is None else est[k]
                          for k in ("value", "low", "high")), est["n"], est["n"]).format(digits)


def section4_table(groups: Sequence[Mapping[str, Any]], study: Mapping[str, Any]
                   ) -> list[dict[str, Any]]:
  """The §4 rows ({no CPT, CPT} x {non-thinking, thinking} SFT conditions present in the study):
  per setting the mean in-domain gain over seeds with its interval and `generalizes` (the
  interval lies above 0)."""
  by_key = {(g["condition"], g["setting"]): g for g in groups}
  out = []
  for cpt, sft, label in SECTION4_ROWS:
    for cond, spec in study["conditions"].items():
      if bool(spec.get("cpt")) != cpt or spec.get("sft") != sft:
        continue
      cells = {}
      for setting in study["settings"]:
        group = by_key.get((cond, setting))
        if group is not None:
          gain = group["gain"]
          cells[setting] = {**gain, "generalizes": verdicts_lib.ci_side(
              gain["low"], gain["high"]) == "above"}
      out.append({"row": label, "condition": cond, "cpt": cpt, "sft": sft, "cells": cells})
  return out


# ---------------------------------------------------------------------------------- plots
def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))


def _curve_plots(study_dir: str, study: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                 metrics: Mapping[str, sat.Metrics], params: sat.SaturationParams) -> list[str]:
  """Per condition x setting: trained reward, true reward (when logged) and the held-out
  metrics against the step, seeds shaded, t_sat marked (plots.plot_runs_with_seeds)."""
  from rlvr_jax.diagnostics import plots
  out = []
  groups: dict[tuple[str, str], list[sat.Metrics]] = {}
  for row in rows:
    groups.setdefault((row["condition"], row["setting"]), []).append(metrics[row["stage"]])
  for (cond, setting), runs in groups.items():
    keys = [sat.REWARD_KEY, sat.TRUE_REWARD_KEY, study["metric"], *(study.get("ood_metrics")
                                                                      or [])]
    keys = [k for k in keys if any(m.get(k) for m in runs)]
    rel = f"{PLOTS_DIR}/curves_{_safe(cond)}_{_safe(setting)}.png"
    plots.plot_runs_with_seeds({f"{cond} / {setting}": runs}, _join(study_dir, rel), keys,
                               params=params, title=f"{cond}, {setting}")
    out.append(rel)
  return out


def _scatter(points: Sequence[Mapping[str, Any]], x_key: str, y_key: str, path: str, *,
             x_label: str, y_label: str, label_key: str | None) -> str | None:
  """A scatter of y against x over the points with finite values, Spearman ρ and its
  bootstrap interval in the title; None (nothing written) with fewer than 2 points."""
  from matplotlib.figure import Figure
  from rlvr_jax.diagnostics import plots
  pts = [p for p in points if verdicts_lib.is_finite(p.get(x_key))
         and verdicts_lib.is_finite(p.get(y_key))]
  if len(pts) < 2:
    return None
  xs, ys = [p[x_key] for p in pts], [p[y_key] for p in pts]
  rho, low, high = stats.spearman_ci(xs, ys)
  fig = Figure(figsize=(6, 4.4))
  ax = fig.subplots()
  ax.scatter(xs, ys, color="C0")
  for p in pts if label_key else []:
    ax.annotate(str(p[label_key]), (p[x_key], p[y_key]), fontsize=8, xytext=(3, 3),
                textcoords="offset points")
  ax.set_xlabel(x_label)
  ax.set_ylabel(y_label)
  ax.grid(alpha=0.3)
  ax.set_title(f"{y_label} vs {x_label}\nSpearman ρ = "
               f"{verdicts_lib.interval_text(rho, low, high)} (n={len(pts)})", fontsize=10)
  return plots.save_png(fig, path)


def _scatter_plots(study_dir: str, study: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                   points: Sequence[Mapping[str, Any]]) -> list[str]:
  """Faithfulness vs Δ_sat and vs the pre-saturation length, diversity vs Δ_sat (one point
  per condition), and the pre-saturation length vs Δ_sat over weak-supervision runs."""
  metric = study["metric"]
  weak = [r for r in rows if verdicts_lib.is_weak(r)]
  specs = [(points, "faithfulness", "delta_sat", "faithfulness_vs_delta_sat.png",
            "pre-RL faithfulness (aligned share)", f"mean Δ_sat of {metric}", "condition"),
           (points, "faithfulness", "pre_saturation_length", "faithfulness_vs_t_sat.png",
            "pre-RL faithfulness (aligned share)", "mean pre-saturation length (steps)",
            "condition"),
           (points, "n_eff", "delta_sat", "diversity_vs_delta_sat.png",
            "pre-RL diversity n_eff", f"mean Δ_sat of {metric}", "condition"),
           (weak, "pre_saturation_length", "delta_sat", "t_sat_vs_delta_sat.png",
            "pre-saturation length (steps)", f"Δ_sat of {metric}", None)]
  out = []
  for pts, x_key, y_key, name, x_label, y_label, label_key in specs:
    rel = f"{PLOTS_DIR}/{name}"
    if _scatter(pts, x_key, y_key, _join(study_dir, rel), x_label=x_label, y_label=y_label,
                label_key=label_key):
      out.append(rel)
  return out


# ---------------------------------------------------------------------------------- markdown
def _md_groups(groups: Sequence[Mapping[str, Any]], study: Mapping[str, Any]) -> str:
  from rlvr_jax.sweep import markdown_table
  stat_cols = _group_stats(study)
  md_rows = []
  for g in groups:
    md = {"condition": g["condition"], "setting": g["setting"],
          "runs": f"{g['n']}/{g['planned']}", "censored": str(g["censored"])}
    md.update({key: _estimate_cell(g[key], digits) for key, _, digits in stat_cols})
    md_rows.append(md)
  cols = ["condition", "setting", "runs", "censored", *(k for k, _, _ in stat_cols)]
  return markdown_table(md_rows, cols, ["condition", "setting", "runs", "censored",
                                        *(h for _, h, _ in stat_cols)])


def _md_section4(section4: Sequence[Mapping[str, Any]], study: Mapping[str, Any]) -> str:
  from rlvr_jax.sweep import markdown_table
  settings = list(study["settings"])
  md_rows = []
  for row in section4:
    md = {"row": row["row"], "condition": row["condition"]}
    for setting, cell in row["cells"].items():
      md[setting] = (_estimate_cell(cell, 3) + (f" {GENERALIZES}" if cell["generalizes"]
                                                else ""))
    md_rows.append(md)
  headers = [(study["settings"][s] or {}).get("label") or s for s in settings]
  return markdown_table(md_rows, ["row", "condition", *settings],
                        ["pre-RL", "condition", *headers])


def _md_points(points: Sequence[Mapping[str, Any]]) -> str:
  from rlvr_jax.sweep import markdown_table
  cols = ["condition", "faithfulness", "partial", "n_eff", "div", "runs", "delta_sat",
          "pre_saturation_length", "gain"]
  return markdown_table(points, cols, ["condition", "faithfulness (aligned)", "partial",
                                       "n_eff", "div", "weak runs", "mean Δ_sat",
                                       "mean pre-sat. length", "mean gain"])


def _md_runs(rows: Sequence[Mapping[str, Any]], study: Mapping[str, Any]) -> str:
  from rlvr_jax.sweep import markdown_table
  ood = [f"gain:{k}" for k in study.get("ood_metrics") or []]
  cols = ["stage", "state", "t_sat", "censored", "r_max", "delta_sat", "delta_post", "gain",
          "G", *ood]
  return markdown_table(rows, cols, ["stage", "state", "t_sat", "censored", "r_max", "Δ_sat",
                                     "Δ_post", "gain", "G",
                                     *(f"gain {k.removeprefix('gain:eval/')}" for k in ood)])


def render_markdown(report: Mapping[str, Any], study: Mapping[str, Any]) -> str:
  """report.md: the title, the verdict lines, the tables, the plots and the missing stages."""
  p = study.get("saturation") or {}
  ood = ", ".join(f"`{k}`" for k in study.get("ood_metrics") or []) or "none"
  planned = sum(s.get("kind") == "rl" for s in study.get("stages") or [])
  text = [f"# Study report: {study.get('name', '')}", "",
          f"In-domain metric `{study['metric']}`; out-of-domain: {ood}. Saturation: epsilon "
          f"{p.get('epsilon')}, margin {p.get('margin')}, window {p.get('window')}, r_max over "
          f"{p.get('r_max_over')}. {len(report['runs'])} of {planned} RL runs usable.", "",
          "## Verdicts", "", *(f"- {line}" for line in verdict_lines(report)), "",
          "## Condition × setting (mean [95% CI] over seeds)", "",
          "t_sat of a censored run (never saturated) is its last step.", "",
          _md_groups(report["table"], study), "",
          f"## §4: total in-domain gain (mean [95% CI] over seeds; {GENERALIZES} = generalizes: "
          "CI above 0)", ""]
  text += [_md_section4(report["section4"], study) if report["section4"]
           else "No non-thinking / thinking SFT conditions in this study.", ""]
  text += ["## Pre-RL diagnostics", ""]
  text += [_md_points(report["conditions"]) if report["conditions"]
           else "No diagnose stage finished.", ""]
  text += ["## Runs", "", _md_runs(report["runs"], study) if report["runs"] else "No usable run.",
           "", "## Plots", ""]
  text += [f"![{os.path.basename(p)}]({p})" for p in report["plots"]] or ["No plots."]
  text += ["", "## Missing / failed stages", ""]
  text += [f"- `{m['stage']}` ({m['kind']}): {m['state']} — {m['reason']}"
           for m in report["missing"]] or ["None."]
  return "\n".join(text) + "\n"


# ---------------------------------------------------------------------------------- top level
def _json_safe(x: Any) -> Any:
  """x with NaN / infinite floats as None and numpy scalars as Python numbers."""
  if isinstance(x, Mapping):
    return {str(k): _json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_safe(v) for v in x]
  if isinstance(x, np.generic):
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def build_report(study_dir: str, *, plots: bool = True) -> tuple[dict[str, Any], dict]:
  """(report, study) of a study directory; writes the PNGs when `plots` (nothing else)."""
  study = read_study(study_dir)
  params = saturation_params(study.get("saturation"))
  rows, metrics, diagnostics, missing = _collect(study_dir, study, params)
  groups = group_table(rows, study)
  points = verdicts_lib.condition_points(rows, diagnostics)
  report = {"name": study.get("name"), "metric": study["metric"],
            "ood_metrics": list(study.get("ood_metrics") or []), "runs": rows,
            "table": groups, "section4": section4_table(groups, study),
            "conditions": points, "diagnostics": diagnostics,
            "verdicts": verdicts_lib.all_verdicts(rows, points), "missing": missing,
            "plots": []}
  if plots:
    report["plots"] = (_curve_plots(study_dir, study, rows, metrics, params)
                       + _scatter_plots(study_dir, study, rows, points))
  return _json_safe(report), study


def write_report(study_dir: str, *, plots: bool = True) -> dict[str, Any]:
  """Writes DIR/report.md, DIR/report.json and DIR/plots/*.png (module docstring) from the
  study directory alone; returns the report dict (report.json's content)."""
  report, study = build_report(study_dir, plots=plots)
  files.write_json(_join(study_dir, "report.json"), report)
  files.write_text(_join(study_dir, "report.md"), render_markdown(report, study))
  return report


def verdict_lines(report: Mapping[str, Any]) -> list[str]:
  """One line per finding: verdicts.format_verdict of the report's verdicts."""
  return [verdicts_lib.format_verdict(v) for v in report["verdicts"]]
