r"""Reward-saturation dynamics of an RL run (docs/PROTOCOL.md, "Saturation dynamics").

Pure numpy on host values; nothing here imports JAX, so `rlvr-jax diagnose` and notebooks can
analyse runs on any machine, and the RL loop can call the online monitor between steps.

Definitions (Rahman et al. 2026), for a run whose training reward r̄_t is logged at steps t:

  r̄_max     max_t r̄_t, over all T steps (`r_max_over="all"`, the paper) or only the steps
             t ≤ T − margin (`"pre_margin"`). T is the last step with a reward.
  t_sat      the first t ≤ T − margin with r̄_t ≥ ε·r̄_max; None when no step qualifies (the run
             never saturates within T − margin, or is shorter than the margin). For a negative
             r̄_max (proxy rewards such as neg_entropy) the threshold generalises to
             r̄_max − (1 − ε)·|r̄_max|, which equals ε·r̄_max whenever r̄_max ≥ 0.
  pre-saturation phase   t < t_sat; its length is t_sat − (first step with a reward).
  Δ_sat      M(t_sat) − M(0) for a held-out metric M (an `eval/<set>/<metric>` key).
  Δ_post     max_{t ≥ t_sat} M(t) − M(t_sat), the maximum taken over M(t_sat) and every
             evaluation after t_sat (so Δ_post ≥ 0).
  G          M^large(t_sat^small) − M^small(t_sat^small): a larger-N run's metric read at the
             small run's saturation time, minus the small run's metric there.

M is observed only at evaluation steps. M(t) at any other step is linearly interpolated between
the two evaluations around it (`metric_at`); every result says whether it was and names the
bracketing steps. M(0) is the step-0 evaluation (None when the run has none). Values are in the
units logged (avg@k is a fraction in [0, 1]; the paper quotes percentage points).

Smoothing (`window`): an optional trailing moving average over the last `window` logged points
(fewer at the start), for noisy toy curves. It is causal, like the online monitor: the smoothed
value at t uses nothing after t; the price is a lag of about (window − 1) / 2 steps on a ramp.
t_sat and r̄_max are then read on the smoothed curve.

Online (`SaturationMonitor`), r̄_max is only the running max m_t = max_{s ≤ t} r̄_s, and every
step that sets a new maximum trivially satisfies r̄_t ≥ ε·m_t, so "near the max" alone means
nothing while the reward still climbs. The monitor's definition:

  a step t is *near* when r̄_t ≥ ε·m_t (generalised as above) and *eligible* when t > warmup
  and m_t > min_r_max. A *plateau* starts at an eligible near step s with anchor m_s and goes
  on while every following step is eligible and near and the running max stays within
  m_s + tolerance·|m_s|. The run is **saturated** once a plateau has lasted `patience` steps
  (t − s + 1 ≥ patience); its online saturation point is s, the plateau's first step (the
  analogue of the offline first crossing). Once saturated, dips below ε·m_t are allowed (the
  offline t_sat ignores them too), but a running max rising above the anchor's tolerance ends
  saturation: the reward is climbing again, and a new plateau has to form.

metrics.jsonl: one JSON object per line with "step"; the last record of a step wins (a resume
logs again the steps after its checkpoint); null (non-finite) values are dropped.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = [
  "REWARD_KEY", "TRUE_REWARD_KEY", "EVAL_PREFIX", "R_MAX_OVER",
  "read_metrics", "eval_keys", "SaturationParams", "SaturationResult", "saturation_point",
  "threshold", "moving_average", "MetricAt", "metric_at", "analyze_run", "large_small_gap",
  "MonitorParams", "MonitorState", "monitor_step", "SaturationMonitor",
]

log = logging.getLogger(__name__)

REWARD_KEY = "reward/mean"
TRUE_REWARD_KEY = "reward/true_mean"
EVAL_PREFIX = "eval/"
R_MAX_OVER = ("all", "pre_margin")

Metrics = dict[str, dict[int, float]]

# Comparisons with the threshold forgive float rounding (0.99 * 0.9 != 0.891 in binary).
_SLACK = 1e-12


# ---------------------------------------------------------------------------------- reading
def _metrics_file(path_or_run_dir: str | os.PathLike):
  from etils import epath
  path = epath.Path(path_or_run_dir)
  if path.is_dir():
    path = path / "metrics.jsonl"
  return path


def read_metrics(path_or_run_dir: str | os.PathLike) -> Metrics:
  """{key: {step: value}} of a metrics.jsonl (a run directory or the file; `gs://` works).

  The last record of a step wins for each key it holds (a resumed run logs the steps after its
  checkpoint again); null, non-finite and non-numeric values are dropped. A line that is not
  JSON (a write cut short by a crash) is skipped with a warning naming it; a record without an
  integer "step" is a ValueError naming the file and line.
  """
  path = _metrics_file(path_or_run_dir)
  if not path.exists():
    raise FileNotFoundError(f"no metrics file {path} (a run directory holds metrics.jsonl)")
  out: Metrics = {}
  with path.open("r") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        log.warning("%s:%d: not JSON (a write cut short?); line skipped", path, lineno)
        continue
      step = record.get("step") if isinstance(record, dict) else None
      if not _is_int(step):
        raise ValueError(f"{path}:{lineno}: a metrics record needs an integer 'step', "
                         f"got {line.strip()[:80]!r}")
      for key, value in record.items():
        if key == "step":
          continue
        value = _finite(value)
        if value is None:
          out.get(key, {}).pop(int(step), None)   # a later null overrides an earlier value
        else:
          out.setdefault(key, {})[int(step)] = value
  return {k: dict(sorted(v.items())) for k, v in out.items() if v}


def _is_int(x) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _finite(value) -> float | None:
  if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def _as_metrics(run) -> tuple[Metrics, str | None]:
  """(metrics, source file or None) of a run directory, a metrics.jsonl path or a metrics
  mapping {key: {step: value}} (copied, non-finite values dropped)."""
  if isinstance(run, (str, os.PathLike)):
    return read_metrics(run), os.fspath(_metrics_file(run))
  if not isinstance(run, Mapping):
    raise TypeError(f"expected a run directory, a metrics.jsonl path or a {{key: {{step: "
                    f"value}}}} mapping, got {type(run).__name__}")
  out: Metrics = {}
  for key, series in run.items():
    if not isinstance(series, Mapping):
      raise ValueError(f"metrics[{key!r}] must map step -> value, got {type(series).__name__} "
                       f"(an analysis document holds no curves: pass the run or its metrics)")
    clean = {int(s): v for s, v in ((s, _finite(v)) for s, v in series.items()) if v is not None}
    if clean:
      out[key] = dict(sorted(clean.items()))
  return out, None


def eval_keys(metrics: Mapping[str, Any]) -> list[str]:
  """The held-out metric keys (`eval/...`) of a metrics mapping, sorted."""
  return sorted(k for k in metrics if k.startswith(EVAL_PREFIX))


def _series(steps: Iterable, values: Iterable, what: str) -> tuple[np.ndarray, np.ndarray]:
  """int64 steps (sorted, unique) and float64 values with the non-finite points dropped."""
  steps = np.asarray(list(steps) if not isinstance(steps, np.ndarray) else steps)
  values = np.asarray(list(values) if not isinstance(values, np.ndarray) else values,
                      dtype=np.float64)
  if steps.ndim != 1 or steps.shape != values.shape:
    raise ValueError(f"{what}: steps and values must be 1-D of one length, got shapes "
                     f"{steps.shape} and {values.shape}")
  if steps.size and not np.all(np.equal(np.mod(steps, 1), 0)):
    raise ValueError(f"{what}: steps must be integers, got {steps[:5]}")
  steps = steps.astype(np.int64)
  keep = np.isfinite(values)
  steps, values = steps[keep], values[keep]
  order = np.argsort(steps, kind="stable")
  steps, values = steps[order], values[order]
  if steps.size > 1 and np.any(np.diff(steps) == 0):
    dup = int(steps[:-1][np.diff(steps) == 0][0])
    raise ValueError(f"{what}: step {dup} appears twice (read_metrics keeps the last record of "
                     f"a step)")
  return steps, values


def _curve(metrics: Metrics, key: str) -> tuple[np.ndarray, np.ndarray]:
  series = metrics.get(key, {})
  return _series(list(series), list(series.values()), key)


# ------------------------------------------------------------------------------- offline t_sat
@dataclass(frozen=True)
class SaturationParams:
  """Settings of the offline saturation statistics.

  epsilon     t_sat needs r̄_t ≥ epsilon·r̄_max (the paper: 0.99); in (0, 1].
  margin      t_sat must be ≤ T − margin, so that at least `margin` steps follow it (the paper:
              50 updates; scale it down for short toy runs).
  window      trailing moving-average window over logged points, applied to the reward before
              r̄_max and t_sat are read; None (the paper) = the raw curve.
  reward_key  the metrics.jsonl key of r̄_t: "reward/mean" (the reward trained on) or
              "reward/true_mean" (the ground-truth reward under noisy labels / proxy rewards).
  r_max_over  "all": r̄_max over all T steps (the paper); "pre_margin": only over t ≤ T − margin,
              so that a late rise in the last `margin` steps does not raise the bar.
  """
  epsilon: float = 0.99
  margin: int = 50
  window: int | None = None
  reward_key: str = REWARD_KEY
  r_max_over: str = "all"

  def __post_init__(self):
    problems = []
    if not (isinstance(self.epsilon, (int, float)) and 0 < self.epsilon <= 1):
      problems.append(f"epsilon must be in (0, 1], got {self.epsilon!r}")
    if not (_is_int(self.margin) and self.margin >= 0):
      problems.append(f"margin must be an integer >= 0, got {self.margin!r}")
    if self.window is not None and not (_is_int(self.window) and self.window >= 1):
      problems.append(f"window must be None or an integer >= 1, got {self.window!r}")
    if not isinstance(self.reward_key, str) or not self.reward_key:
      problems.append(f"reward_key must be a metrics key, got {self.reward_key!r}")
    if self.r_max_over not in R_MAX_OVER:
      problems.append(f"r_max_over must be one of {', '.join(R_MAX_OVER)}, "
                      f"got {self.r_max_over!r}")
    if problems:
      raise ValueError("SaturationParams: " + "; ".join(problems))


@dataclass(frozen=True, eq=False)
class SaturationResult:
  """The saturation point of one reward curve.

  t_sat                  first qualifying step, or None (see `reason`)
  r_max                  r̄_max of the curve used (smoothed when params.window is set)
  threshold              the bar r̄_t had to reach: ε·r̄_max (generalised for r̄_max < 0)
  T                      the last step with a reward
  first_step             the first step with a reward
  pre_saturation_length  t_sat − first_step, or None
  steps, curve           the steps and the (smoothed) reward values the statistics were read on
  params                 the settings used
  reason                 why t_sat is None (one sentence), else None
  """
  t_sat: int | None
  r_max: float
  threshold: float
  T: int
  first_step: int
  pre_saturation_length: int | None
  steps: np.ndarray
  curve: np.ndarray
  params: SaturationParams
  reason: str | None = None


def threshold(r_max: float, epsilon: float) -> float:
  """The bar of saturation: epsilon·r_max for r_max ≥ 0, r_max − (1 − epsilon)·|r_max| in
  general (within a (1 − epsilon) fraction of |r_max| below the max, for negative rewards)."""
  return float(r_max - (1.0 - epsilon) * abs(r_max))


def _reaches(value, bar: float, r_max: float):
  return value >= bar - _SLACK * max(1.0, abs(r_max))


def moving_average(values: Sequence[float], window: int | None) -> np.ndarray:
  """Trailing mean over the last `window` points (the first ones average what there is);
  None or 1 returns the values unchanged (float64)."""
  values = np.asarray(values, dtype=np.float64)
  if window is None or window == 1 or values.size == 0:
    return values.copy()
  c = np.concatenate([[0.0], np.cumsum(values)])
  i = np.arange(1, values.size + 1)
  lo = np.maximum(i - window, 0)
  return (c[i] - c[lo]) / (i - lo)


def saturation_point(steps: Sequence[int], rewards: Sequence[float],
                     params: SaturationParams = SaturationParams()) -> SaturationResult:
  """t_sat, r̄_max and the pre-saturation length of a reward curve (module docstring).

  `steps` are the logged steps (any spacing; sorted here), `rewards` r̄_t at those steps;
  non-finite rewards are dropped. A repeated step or an empty curve is a ValueError.
  """
  steps, rewards = _series(steps, rewards, params.reward_key)
  if steps.size == 0:
    raise ValueError(f"{params.reward_key}: no finite reward values to analyse")
  curve = moving_average(rewards, params.window)
  T, first = int(steps[-1]), int(steps[0])
  limit = T - params.margin
  eligible = steps <= limit
  pool = curve[eligible] if params.r_max_over == "pre_margin" and eligible.any() else curve
  r_max = float(np.max(pool))
  bar = threshold(r_max, params.epsilon)
  hits = np.flatnonzero(eligible & _reaches(curve, bar, r_max))
  reason = None
  if not eligible.any():
    t_sat = None
    reason = (f"the run (steps {first}..{T}) is not longer than margin {params.margin}: no step "
              f"t <= T - margin = {limit} (lower the margin or run more steps)")
  elif hits.size == 0:
    t_sat = None
    reason = (f"no step t <= T - margin = {limit} reaches {bar:.6g} "
              f"(epsilon {params.epsilon} of r_max {r_max:.6g})")
  else:
    t_sat = int(steps[hits[0]])
  return SaturationResult(
    t_sat=t_sat, r_max=r_max, threshold=bar, T=T, first_step=first,
    pre_saturation_length=None if t_sat is None else t_sat - first,
    steps=steps, curve=curve, params=params, reason=reason)


# ------------------------------------------------------------------------ reading M at a step
class MetricAt(NamedTuple):
  """M(t): the value (None outside the evaluated range), whether it was interpolated, and the
  two evaluation steps it was read between ((t, t) for an exact hit, None when no value)."""
  value: float | None
  interpolated: bool
  bracket: tuple[int, int] | None


def metric_at(steps: Sequence[int], values: Sequence[float], t: int | None) -> MetricAt:
  """M(t) from evaluations (steps, values): exact at an evaluation step, linearly interpolated
  between the evaluations just before and after t, None before the first or after the last
  (never extrapolated) or when t is None. Non-finite values are dropped first."""
  steps, values = _series(steps, values, "metric")
  if t is None or steps.size == 0 or t < steps[0] or t > steps[-1]:
    return MetricAt(None, False, None)
  i = int(np.searchsorted(steps, t))
  if steps[i] == t:
    return MetricAt(float(values[i]), False, (int(t), int(t)))
  lo, hi = int(steps[i - 1]), int(steps[i])
  v_lo, v_hi = float(values[i - 1]), float(values[i])
  return MetricAt(v_lo + (v_hi - v_lo) * (t - lo) / (hi - lo), True, (lo, hi))


def _metric_at_key(metrics: Metrics, key: str, t: int | None) -> MetricAt:
  steps, values = _curve(metrics, key)
  return metric_at(steps, values, t)


# --------------------------------------------------------------------------------- analysis
def _deltas(metrics: Metrics, t_sat: int | None, keys: Sequence[str]) -> dict[str, Any]:
  delta_sat, delta_post, interpolated, bracket, at_sat, at_0 = {}, {}, {}, {}, {}, {}
  for key in keys:
    steps, values = _curve(metrics, key)
    m0 = metric_at(steps, values, 0).value
    ms = metric_at(steps, values, t_sat)
    at_0[key], at_sat[key] = m0, ms.value
    interpolated[key] = ms.interpolated
    bracket[key] = list(ms.bracket) if ms.bracket else None
    if ms.value is None:
      delta_sat[key] = delta_post[key] = None
      continue
    delta_sat[key] = None if m0 is None else ms.value - m0
    later = values[steps > t_sat]
    delta_post[key] = max([ms.value, *later.tolist()]) - ms.value
  return {"delta_sat": delta_sat, "delta_post": delta_post, "interpolated": interpolated,
          "bracket": bracket, "metric_at_t_sat": at_sat, "metric_at_0": at_0}


def _analysis(metrics: Metrics, params: SaturationParams, keys: Sequence[str]) -> dict[str, Any]:
  steps, rewards = _curve(metrics, params.reward_key)
  if steps.size == 0:
    have = sorted(k for k in metrics if k.startswith("reward/"))
    raise ValueError(f"no {params.reward_key!r} values in the metrics (reward keys present: "
                     f"{', '.join(have) or 'none'}); is this an RL run?")
  res = saturation_point(steps, rewards, params)
  doc = {"t_sat": res.t_sat, "r_max": res.r_max, "T": res.T,
         "pre_saturation_length": res.pre_saturation_length}
  doc.update(_deltas(metrics, res.t_sat, keys))
  doc.update({"params": dataclasses.asdict(params), "threshold": res.threshold,
              "first_step": res.first_step, "reason": res.reason})
  return doc


def analyze_run(run, params: SaturationParams = SaturationParams(), *,
                metric_keys: Sequence[str] | None = None) -> dict[str, Any]:
  """The `saturation.json` document of one run (a run directory, a metrics.jsonl path or a
  metrics mapping {key: {step: value}}); JSON-serialisable.

  Keys: t_sat (None when the run never saturates within T − margin), r_max, T,
  pre_saturation_length, delta_sat and delta_post ({metric key: value or None}), interpolated
  ({metric key: whether M(t_sat) was interpolated}), params (the SaturationParams as a dict);
  also bracket ({key: [lo, hi] evaluation steps around t_sat, or None}), metric_at_t_sat,
  metric_at_0, threshold, first_step, reason (why t_sat is None), source (the metrics file, or
  None for a mapping) and, when the run logs `reward/true_mean`, true_reward: the same analysis
  (its own t_sat, r_max and deltas) on the ground-truth reward. `metric_keys` defaults to every
  `eval/...` key of the run.
  """
  metrics, source = _as_metrics(run)
  keys = eval_keys(metrics) if metric_keys is None else list(metric_keys)
  doc = _analysis(metrics, params, keys)
  if params.reward_key != TRUE_REWARD_KEY and metrics.get(TRUE_REWARD_KEY):
    doc["true_reward"] = _analysis(
      metrics, dataclasses.replace(params, reward_key=TRUE_REWARD_KEY), keys)
  doc["source"] = source
  return doc


def large_small_gap(small, large, params: SaturationParams = SaturationParams(), *,
                    metric_keys: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
  """G = M^large(t_sat^small) − M^small(t_sat^small) for every metric key both runs log.

  `small` and `large` are run directories, metrics.jsonl paths or metrics mappings; t_sat of
  the small run is computed with `params`. Each entry: G, t_sat_small, small_value,
  large_value (None when t_sat_small is None or outside that run's evaluations), interpolated
  (either value was interpolated), bracket_small and bracket_large ([lo, hi] or None).
  """
  m_small, _ = _as_metrics(small)
  m_large, _ = _as_metrics(large)
  steps, rewards = _curve(m_small, params.reward_key)
  if steps.size == 0:
    raise ValueError(f"the small run has no {params.reward_key!r} values")
  t_sat = saturation_point(steps, rewards, params).t_sat
  if metric_keys is None:
    keys = sorted(set(eval_keys(m_small)) & set(eval_keys(m_large)))
  else:
    keys = list(metric_keys)
  out = {}
  for key in keys:
    s = _metric_at_key(m_small, key, t_sat)
    lg = _metric_at_key(m_large, key, t_sat)
    gap = None if s.value is None or lg.value is None else lg.value - s.value
    out[key] = {"G": gap, "t_sat_small": t_sat, "small_value": s.value, "large_value": lg.value,
                "interpolated": s.interpolated or lg.interpolated,
                "bracket_small": list(s.bracket) if s.bracket else None,
                "bracket_large": list(lg.bracket) if lg.bracket else None}
  return out


# ----------------------------------------------------------------------------- online monitor
@dataclass(frozen=True)
class MonitorParams:
  """Settings of the online saturation monitor (module docstring, "Online").

  epsilon     a step is near the max when r̄_t ≥ epsilon·(running max); in (0, 1].
  warmup      steps t ≤ warmup never start a plateau (the running max still tracks them): the
              first rewards are their own running max.
  patience    a plateau must last this many steps (t − start + 1) before the run counts as
              saturated; ≥ 1.
  tolerance   relative rise of the running max a plateau tolerates: it ends when the running
              max exceeds anchor + tolerance·|anchor|.
  window      trailing moving average of the reward over the last `window` updates (None: raw).
  min_r_max   saturation needs a running max above this, so a reward stuck at 0 is not a
              plateau (rewards ≥ 0 assumed; lower it for negative proxy rewards).
  reward_key  the metrics key the monitor reads when rebuilt from metrics.jsonl.
  """
  epsilon: float = 0.99
  warmup: int = 10
  patience: int = 20
  tolerance: float = 0.01
  window: int | None = None
  min_r_max: float = 0.0
  reward_key: str = REWARD_KEY

  def __post_init__(self):
    problems = []
    if not (isinstance(self.epsilon, (int, float)) and 0 < self.epsilon <= 1):
      problems.append(f"epsilon must be in (0, 1], got {self.epsilon!r}")
    if not (_is_int(self.warmup) and self.warmup >= 0):
      problems.append(f"warmup must be an integer >= 0, got {self.warmup!r}")
    if not (_is_int(self.patience) and self.patience >= 1):
      problems.append(f"patience must be an integer >= 1, got {self.patience!r}")
    if not (isinstance(self.tolerance, (int, float)) and self.tolerance >= 0):
      problems.append(f"tolerance must be >= 0, got {self.tolerance!r}")
    if self.window is not None and not (_is_int(self.window) and self.window >= 1):
      problems.append(f"window must be None or an integer >= 1, got {self.window!r}")
    if problems:
      raise ValueError("MonitorParams: " + "; ".join(problems))


@dataclass(frozen=True)
class MonitorState:
  """Everything the monitor remembers (JSON-serialisable through `as_dict`).

  last_step     the last step seen
  r_max         running max of the (smoothed) reward, None before the first finite reward
  recent        the last window − 1 raw rewards (for the moving average)
  streak_start  first step of the current plateau, None when there is none
  anchor        running max when that plateau started
  saturated_at  the online saturation point (first step of the plateau), None when not
                saturated
  """
  last_step: int | None = None
  r_max: float | None = None
  recent: tuple[float, ...] = ()
  streak_start: int | None = None
  anchor: float | None = None
  saturated_at: int | None = None

  def as_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["recent"] = list(self.recent)
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> MonitorState:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise ValueError(f"MonitorState: unknown fields {sorted(unknown)}")
    d = dict(d)
    d["recent"] = tuple(float(x) for x in d.get("recent", ()))
    return cls(**d)


def _ratio(r: float, m: float) -> float:
  """r̄_t relative to the running max: r/m for m > 0; 1 − (m − r)/|m| for m < 0 (so that
  ratio ≥ ε iff near); for m = 0: 1.0 when r = 0, else 0.0. Never inf or NaN for finite r."""
  if m > 0:
    return r / m
  if m < 0:
    return 1.0 - (m - r) / abs(m)
  return 1.0 if r == m else 0.0


def _rose(m: float, anchor: float, tolerance: float) -> bool:
  return m > anchor + tolerance * abs(anchor) + _SLACK * max(1.0, abs(anchor))


def monitor_step(state: MonitorState, step: int, reward: float,
                 params: MonitorParams) -> tuple[MonitorState, dict[str, float]]:
  """One update of the online monitor (pure): the new state and the metrics of this step.

  Metrics: saturation/r_max (running max; NaN before any finite reward), saturation/ratio
  (`_ratio` of the smoothed reward to the running max; NaN for a non-finite reward),
  saturation/steps_since (step − saturation point while saturated, else 0),
  saturation/saturated (1.0 / 0.0) and saturation/just_saturated (1.0 on the step saturation is
  declared). A non-finite reward changes nothing but last_step. Steps must increase.
  """
  if not _is_int(step):
    raise ValueError(f"monitor step must be an integer, got {step!r}")
  if state.last_step is not None and step <= state.last_step:
    raise ValueError(f"monitor steps must increase: got {step} after {state.last_step} (rebuild "
                     f"the monitor with SaturationMonitor.from_metrics(..., up_to_step=...))")
  reward = _finite(reward)
  if reward is None:
    new = dataclasses.replace(state, last_step=step)
    return new, _monitor_metrics(new, step, math.nan, just=False)
  window = params.window or 1
  recent = (*state.recent, reward)
  r = float(np.mean(recent[-window:]))
  recent = recent[-(window - 1):] if window > 1 else ()
  m = r if state.r_max is None else max(state.r_max, r)
  near = _reaches(r, threshold(m, params.epsilon), m)
  eligible = step > params.warmup and m > params.min_r_max
  start, anchor, saturated_at = state.streak_start, state.anchor, state.saturated_at
  if saturated_at is not None and _rose(m, anchor, params.tolerance):
    saturated_at = start = anchor = None       # climbing again: a new plateau has to form
  just = False
  if saturated_at is None:
    if not (eligible and near):
      start = anchor = None
    elif start is None or _rose(m, anchor, params.tolerance):
      start, anchor = step, m
    if start is not None and step - start + 1 >= params.patience:
      saturated_at, just = start, True
  new = MonitorState(last_step=step, r_max=m, recent=tuple(recent), streak_start=start,
                     anchor=anchor, saturated_at=saturated_at)
  return new, _monitor_metrics(new, step, _ratio(r, m), just=just)


def _monitor_metrics(state: MonitorState, step: int, ratio: float, *, just: bool):
  sat = state.saturated_at is not None
  return {"saturation/r_max": math.nan if state.r_max is None else state.r_max,
          "saturation/ratio": ratio,
          "saturation/steps_since": float(step - state.saturated_at) if sat else 0.0,
          "saturation/saturated": 1.0 if sat else 0.0,
          "saturation/just_saturated": 1.0 if just else 0.0}


class SaturationMonitor:
  """Online saturation of the training reward, for the RL loop (module docstring, "Online").

  `update(step, reward)` returns the `saturation/*` metrics of the step (all floats, ready for
  metrics.jsonl); when `metrics["saturation/just_saturated"]` is 1 the loop can print
  `monitor.message`. The whole state is `state` (a small frozen dataclass): save
  `state_dict()` with a checkpoint and restore it with `from_state`, or rebuild it from
  metrics.jsonl with `from_metrics(run, up_to_step=restored_step)`, which replays the logged
  rewards (exact when every step is logged, log_every = 1).
  """

  def __init__(self, params: MonitorParams = MonitorParams(), state: MonitorState | None = None):
    self.params = params
    self.state = state or MonitorState()
    self.message: str | None = None   # one line about the last update's saturation, or None

  def update(self, step: int, reward: float) -> dict[str, float]:
    """Feeds r̄ of `step`; returns the step's saturation/* metrics."""
    self.state, metrics = monitor_step(self.state, step, reward, self.params)
    self.message = None
    if metrics["saturation/just_saturated"]:
      p = self.params
      self.message = (
        f"training reward saturated at step {self.state.saturated_at} (declared at step {step}):"
        f" within epsilon={p.epsilon} of its running max {self.state.r_max:.4g} for "
        f"{step - self.state.saturated_at + 1} steps")
    return metrics

  @property
  def saturated(self) -> bool:
    return self.state.saturated_at is not None

  @property
  def t_sat(self) -> int | None:
    """The online saturation point, None when not saturated."""
    return self.state.saturated_at

  def steps_since(self) -> int:
    """Steps from the online saturation point to the last step seen (0 when not saturated)."""
    s = self.state
    return 0 if s.saturated_at is None else s.last_step - s.saturated_at

  def should_stop(self, stop_after: int) -> bool:
    """True once the run is saturated and `stop_after` steps have passed since its online
    saturation point (rl.stop_after_saturation; 0 = never). Counted from the plateau's first
    step, so with stop_after < patience it is True as soon as saturation is declared."""
    if not _is_int(stop_after) or stop_after < 0:
      raise ValueError(f"stop_after must be an integer >= 0, got {stop_after!r}")
    return stop_after > 0 and self.saturated and self.steps_since() >= stop_after

  def state_dict(self) -> dict[str, Any]:
    """The state as a JSON-serialisable dict (for a checkpoint)."""
    return self.state.as_dict()

  @classmethod
  def from_state(cls, state: Mapping[str, Any],
                 params: MonitorParams = MonitorParams()) -> SaturationMonitor:
    """A monitor continuing from `state_dict()` (the params are not part of the state)."""
    return cls(params, MonitorState.from_dict(state))

  @classmethod
  def from_metrics(cls, run, up_to_step: int | None = None,
                   params: MonitorParams = MonitorParams()) -> SaturationMonitor:
    """A monitor rebuilt by replaying `params.reward_key` of a run (a run directory, a
    metrics.jsonl path or a metrics mapping) over the steps ≤ up_to_step (all when None).
    After a resume pass the restored checkpoint's step: later records are the preempted
    attempt's and are logged again."""
    metrics, _ = _as_metrics(run)
    monitor = cls(params)
    steps, rewards = _curve(metrics, params.reward_key)
    for s, r in zip(steps.tolist(), rewards.tolist()):
      if up_to_step is not None and s > up_to_step:
        break
      monitor.update(s, r)
    monitor.message = None
    return monitor


MONITOR_HELP = {
    "saturation.epsilon": "a step is near saturation when r_t >= epsilon * running max",
    "saturation.warmup": "steps that never start a plateau (the first rewards are their own max)",
    "saturation.patience": "steps a plateau must last before the run counts as saturated",
    "saturation.tolerance": "relative rise of the running max that ends a plateau",
    "saturation.window": "trailing moving average of the reward (None = raw)",
    "saturation.min_r_max": "saturation needs a running max above this (a reward stuck at 0 is "
                            "no plateau)",
}


def monitor_config_fields():
  """The `saturation` section of an RL config: MonitorParams' defaults (the one place they are
  set) less reward_key (the loop monitors reward/mean and reward/true_mean)."""
  from ml_collections import ConfigDict
  from ml_collections.config_dict import placeholder
  out = ConfigDict()
  for f in dataclasses.fields(MonitorParams):
    if f.name == "reward_key":
      continue
    out[f.name] = placeholder(int) if f.name == "window" else f.default
  return out


def monitor_params_from_config(section, reward_key: str = REWARD_KEY) -> MonitorParams:
  """MonitorParams from a config's `saturation` section (missing fields: the defaults)."""
  kw = {}
  for f in dataclasses.fields(MonitorParams):
    if f.name == "reward_key" or section is None or f.name not in section:
      continue
    kw[f.name] = section[f.name]
  return MonitorParams(**kw, reward_key=reward_key)
