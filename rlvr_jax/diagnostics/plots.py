"""Figures of reward-saturation dynamics (PNG), for `rlvr-jax diagnose` and studies.

plot_run              one run: training reward (and the true reward) against the step with t_sat
                      marked, held-out metrics in a second panel
plot_runs_with_seeds  several conditions, each over seeds: mean curve with a min-max (or ±1 sd)
                      band per metric panel, and the seeds' t_sat marked

Matplotlib is used through its object API with the Agg canvas (no pyplot, no display, no global
backend switch), so plotting is safe in headless jobs and next to other matplotlib users. Files
are written atomically through etils.epath (a temporary sibling renamed over the target), so a
local path or a `gs://` URL never holds a half-written PNG.
"""
from __future__ import annotations

import dataclasses
import io
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlvr_jax.diagnostics import saturation as sat

__all__ = ["plot_run", "plot_runs_with_seeds", "default_plot_keys", "save_png"]

# eval/<set>/<metric> endings on another scale than accuracies: left out of the default panel.
_NOT_ACCURACY = ("length_mean", "clip_frac", "num_tokens", "answer_tokens", "loss",
                 "answer_loss")
_BANDS = ("minmax", "sd")


def default_plot_keys(metrics: Mapping[str, Any]) -> list[str]:
  """The eval/ keys of accuracy type (avg@k, pass@k, maj@k, greedy_acc, accuracy ...)."""
  return [k for k in sat.eval_keys(metrics) if k.rsplit("/", 1)[-1] not in _NOT_ACCURACY]


def save_png(fig, path: str | os.PathLike, *, dpi: int = 120) -> str:
  """Renders `fig` to PNG and writes it atomically to `path` (local or gs://); returns it."""
  from etils import epath
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
  try:
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise
  return os.fspath(path)


def _is_analysis(x) -> bool:
  return isinstance(x, Mapping) and "t_sat" in x and "delta_sat" in x


def _mark_t_sat(ax, t_sat: int | None, label: str | None, color: str, style: str = "--"):
  if t_sat is not None:
    ax.axvline(t_sat, color=color, linestyle=style, linewidth=1.2, label=label)


def plot_run(run, path: str | os.PathLike, *, title: str | None = None,
             params: sat.SaturationParams = sat.SaturationParams(),
             analysis: Mapping[str, Any] | None = None,
             metric_keys: Sequence[str] | None = None) -> str:
  """Plots one run and writes a PNG at `path`; returns the path.

  `run` is a run directory, a metrics.jsonl path, a metrics mapping, or an `analyze_run`
  document read from a file (its `source` names the metrics it came from). The top panel has
  `params.reward_key` and, when logged, `reward/true_mean` against the step (with the moving
  average the analysis used, if any), the threshold ε·r̄_max and a labelled vertical line at
  t_sat (dotted: the true reward's t_sat). The bottom panel has the held-out metrics
  (`metric_keys`, default: the accuracy-type eval/ keys) at their evaluation steps, with the
  same t_sat line. `analysis` defaults to analyze_run(run, params).
  """
  from matplotlib.figure import Figure
  if _is_analysis(run):
    analysis = run if analysis is None else analysis
    if not run.get("source"):
      raise ValueError("this analysis was made from a metrics mapping and holds no curves: "
                       "pass the run directory or the metrics, with analysis=...")
    run = run["source"]
  metrics, _ = sat._as_metrics(run)
  if analysis is None:
    analysis = sat.analyze_run(metrics, params)
  used = analysis.get("params") or dataclasses.asdict(params)
  reward_key, window = used.get("reward_key", params.reward_key), used.get("window")
  keys = default_plot_keys(metrics) if metric_keys is None else list(metric_keys)
  keys = [k for k in keys if metrics.get(k)]
  rows = 2 if keys else 1
  fig = Figure(figsize=(8, 3.2 * rows + 0.6))
  axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
  ax = axes[0]
  t_sat = analysis.get("t_sat")
  true = analysis.get("true_reward") or {}
  rewards = [reward_key] + [sat.TRUE_REWARD_KEY] * (reward_key != sat.TRUE_REWARD_KEY)
  for key, color in zip(rewards, ("C0", "C1")):
    series = metrics.get(key)
    if series:
      ax.plot(list(series), list(series.values()), color=color, linewidth=1.2, label=key,
              alpha=0.45 if window else 1.0)
      if window:
        ax.plot(list(series), sat.moving_average(list(series.values()), window), color=color,
                linewidth=1.4, label=f"{key} (moving average of {window})")
  if analysis.get("threshold") is not None:
    ax.axhline(analysis["threshold"], color="0.6", linewidth=0.8, linestyle=":",
               label=f"eps * r_max = {analysis['threshold']:.3g}")
  _mark_t_sat(ax, t_sat, f"t_sat = {t_sat}", "C3")
  _mark_t_sat(ax, true.get("t_sat"), f"t_sat (true reward) = {true.get('t_sat')}", "C1", ":")
  if t_sat is None:
    ax.text(0.99, 0.03, "no t_sat within T - margin", transform=ax.transAxes, ha="right",
            va="bottom", fontsize=8, color="C3")
  ax.set_ylabel("training reward")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="best")
  if keys:
    ax2 = axes[1]
    for i, key in enumerate(keys):
      series = metrics[key]
      ax2.plot(list(series), list(series.values()), marker="o", markersize=3, linewidth=1.2,
               color=f"C{(i + 4) % 10}", label=key)
    _mark_t_sat(ax2, t_sat, f"t_sat = {t_sat}", "C3")
    ax2.set_ylabel("held-out metric")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="best")
  axes[-1].set_xlabel("step")
  if title:
    fig.suptitle(title)
  return save_png(fig, path)


def _on_grid(series: Mapping[int, float], grid: np.ndarray) -> np.ndarray:
  """The series linearly interpolated onto `grid` inside its own range, NaN outside."""
  steps = np.asarray(list(series), dtype=np.float64)
  values = np.asarray(list(series.values()), dtype=np.float64)
  out = np.full(grid.shape, np.nan)
  if steps.size:
    inside = (grid >= steps[0]) & (grid <= steps[-1])
    out[inside] = np.interp(grid[inside], steps, values)
  return out


def _band(stack: np.ndarray, band: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean, low, high) over seeds (axis 0), ignoring seeds without a value at a point."""
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN columns stay NaN
    mean = np.nanmean(stack, axis=0)
    if band == "sd":
      sd = np.nanstd(stack, axis=0)
      return mean, mean - sd, mean + sd
    return mean, np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)


def plot_runs_with_seeds(runs_by_condition: Mapping[str, Sequence[Any]],
                         path: str | os.PathLike, metric_keys: Sequence[str], *,
                         params: sat.SaturationParams = sat.SaturationParams(),
                         band: str = "minmax", title: str | None = None) -> str:
  """One panel per metric key; per condition (a color) the mean over its seeds with a shaded
  band (min-max, or ±1 sd with band="sd"); each seed's t_sat (on params.reward_key) as a short
  tick at the panel's bottom and the mean t_sat of the saturated seeds as a dashed line.
  Seeds are aligned on the union of their steps by linear interpolation inside each seed's own
  range. Runs are run directories, metrics.jsonl paths or metrics mappings. Returns the path.
  """
  from matplotlib.figure import Figure
  if band not in _BANDS:
    raise ValueError(f"band must be one of {', '.join(_BANDS)}, got {band!r}")
  if not metric_keys:
    raise ValueError("metric_keys: name at least one metric to plot (e.g. reward/mean)")
  if not runs_by_condition:
    raise ValueError("runs_by_condition is empty")
  loaded: dict[str, list[sat.Metrics]] = {}
  t_sats: dict[str, list[int | None]] = {}
  for cond, runs in runs_by_condition.items():
    if isinstance(runs, (str, os.PathLike, Mapping)):
      raise ValueError(f"condition {cond!r}: give a list of runs (one per seed)")
    loaded[cond] = [sat._as_metrics(r)[0] for r in runs]
    if not loaded[cond]:
      raise ValueError(f"condition {cond!r} has no runs")
    t_sats[cond] = []
    for m in loaded[cond]:
      steps, rewards = sat._curve(m, params.reward_key)
      t_sats[cond].append(sat.saturation_point(steps, rewards, params).t_sat
                          if steps.size else None)
  fig = Figure(figsize=(8, 3.0 * len(metric_keys) + 0.6))
  axes = fig.subplots(len(metric_keys), 1, sharex=True, squeeze=False)[:, 0]
  for ax, key in zip(axes, metric_keys):
    for c, (cond, runs) in enumerate(loaded.items()):
      color = f"C{c % 10}"
      series = [m[key] for m in runs if m.get(key)]
      if series:
        grid = np.asarray(sorted(set().union(*series)), dtype=np.float64)
        stack = np.stack([_on_grid(s, grid) for s in series])
        mean, lo, hi = _band(stack, band)
        ax.plot(grid, mean, color=color, linewidth=1.3,
                label=f"{cond} ({len(series)} seed{'s' if len(series) != 1 else ''})")
        ax.fill_between(grid, lo, hi, color=color, alpha=0.2, linewidth=0)
      done = [t for t in t_sats[cond] if t is not None]
      for t in done:
        ax.axvline(t, ymin=0.0, ymax=0.06, color=color, linewidth=1.5)
      if done:
        ax.axvline(float(np.mean(done)), color=color, linestyle="--", linewidth=1.0,
                   label=f"{cond}: mean t_sat {np.mean(done):.0f} "
                         f"({len(done)}/{len(t_sats[cond])} saturated)")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
  axes[-1].set_xlabel("step")
  if title:
    fig.suptitle(title)
  return save_png(fig, path)
