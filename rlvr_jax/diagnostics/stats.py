"""Small statistics for the diagnostics: bootstrap intervals, agreement, rank correlation.

Numpy only (and the standard library), so the diagnostics never need scipy.

  bootstrap_ci(values, statistic=np.mean, cluster_ids=None) -> (estimate, low, high)
  cohens_kappa(a, b, categories=None, weighted=False)        -> float
  confusion_matrix(a, b, categories)                         -> int64[C, C]
  spearman(x, y), spearman_ci(x, y)                          -> rho, (rho, low, high)
  t_quantile(p, df), mean_ci_over_seeds(values)              -> float, (mean, low, high)
  estimate(values, cluster_ids=None)                         -> Estimate (value, low, high, n)

Why clusters. The faithfulness protocol draws 16 rollouts for each of 8 prompts; rollouts of
one prompt are correlated (same problem, same difficulty), so a bootstrap that resamples rows
treats 128 rows as 128 independent draws and gives intervals that are too narrow. With
`cluster_ids` (the prompt of each row) `bootstrap_ci` resamples whole prompts with replacement
and recomputes the statistic on all rows of the drawn prompts (the cluster bootstrap).

Empty input gives NaN everywhere rather than an exception: a diagnostic over a subgroup that
happens to be empty (no correct answers, say) should still produce a report.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

__all__ = ["Estimate", "estimate", "bootstrap_ci", "cohens_kappa", "confusion_matrix",
           "rankdata", "spearman", "spearman_ci", "t_quantile", "mean_ci_over_seeds"]

_NAN3 = (math.nan, math.nan, math.nan)


# ---------------------------------------------------------------------------------- bootstrap
def _check_level(level: float) -> None:
  if not isinstance(level, (int, float)) or not 0 < level < 1:
    raise ValueError(f"level={level!r} must lie in (0, 1), e.g. 0.95")


def bootstrap_ci(values: Any, statistic: Callable[[np.ndarray], float] = np.mean, *,
                 n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                 cluster_ids: Sequence[Hashable] | None = None) -> tuple[float, float, float]:
  """(estimate, low, high): `statistic(values)` and its percentile-bootstrap `level` interval.

  values: an array whose first axis indexes rows (a 1-D array of per-row values, or [N, 2]
  pairs for a statistic of two columns); `statistic` receives a resampled array of the same
  kind and returns a float. cluster_ids: one hashable per row (e.g. the prompt id); when given,
  whole clusters are resampled (see the module docstring), else rows. The interval is the
  (1 - level) / 2 and (1 + level) / 2 percentiles of `n_boot` resampled statistics (NaN draws
  are ignored). Empty input -> (nan, nan, nan); a single row or cluster -> (est, est, est)
  when the statistic is defined for it. Deterministic in `seed`.
  """
  _check_level(level)
  if not isinstance(n_boot, int) or n_boot < 1:
    raise ValueError(f"n_boot={n_boot!r} must be an integer >= 1")
  values = np.asarray(values, dtype=float)
  n = values.shape[0] if values.ndim else 0
  if n == 0:
    return _NAN3
  estimate = float(statistic(values))
  rng = np.random.default_rng(seed)
  if cluster_ids is None:
    idx_BN = rng.integers(0, n, size=(n_boot, n))
    boot = np.array([statistic(values[idx]) for idx in idx_BN], dtype=float)
  else:
    cluster_ids = list(cluster_ids)
    if len(cluster_ids) != n:
      raise ValueError(f"cluster_ids has {len(cluster_ids)} entries for {n} rows")
    members: dict[Hashable, list[int]] = {}
    for i, c in enumerate(cluster_ids):
      members.setdefault(c, []).append(i)
    groups = [np.asarray(rows) for rows in members.values()]
    draws = rng.integers(0, len(groups), size=(n_boot, len(groups)))
    boot = np.array([statistic(values[np.concatenate([groups[g] for g in d])]) for d in draws],
                    dtype=float)
  boot = boot[~np.isnan(boot)]
  if boot.size == 0:
    return estimate, math.nan, math.nan
  low, high = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
  return estimate, float(low), float(high)


def _json_float(x: float) -> float | None:
  """A float for strict JSON: NaN and infinities become None."""
  return float(x) if math.isfinite(x) else None


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A statistic with its bootstrap interval: `value` in [low, high] at `level`, computed over
  `n` rows drawn from `n_clusters` clusters (prompts; = n when rows were resampled). An empty
  subgroup has n = 0 and NaN value and bounds."""
  value: float
  low: float
  high: float
  n: int
  n_clusters: int
  level: float = 0.95

  def to_dict(self) -> dict:
    """JSON-able: NaN becomes None."""
    return {"value": _json_float(self.value), "low": _json_float(self.low),
            "high": _json_float(self.high), "n": self.n, "n_clusters": self.n_clusters,
            "level": self.level}

  def format(self, digits: int = 3) -> str:
    """The estimate as text, e.g. "0.812 [0.700, 0.910]"; "-" when there is no value."""
    if not math.isfinite(self.value):
      return "-"
    if not (math.isfinite(self.low) and math.isfinite(self.high)):
      return f"{self.value:.{digits}f}"
    return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def estimate(values: Any, cluster_ids: Sequence[Hashable] | None = None, *,
             statistic: Callable[[np.ndarray], float] = np.mean, n_boot: int = 2000,
             level: float = 0.95, seed: int = 0) -> Estimate:
  """`bootstrap_ci` packed as an Estimate (with the row and cluster counts)."""
  values = np.asarray(values, dtype=float)
  n = values.shape[0] if values.ndim else 0
  value, low, high = bootstrap_ci(values, statistic, n_boot=n_boot, level=level, seed=seed,
                                  cluster_ids=cluster_ids)
  n_clusters = n if cluster_ids is None else len(set(cluster_ids))
  return Estimate(value, low, high, n, n_clusters, level)


# ---------------------------------------------------------------------------------- agreement
def _categories(a: Sequence, b: Sequence, categories: Sequence | None) -> list:
  if categories is not None:
    return list(categories)
  return sorted(set(a) | set(b))


def confusion_matrix(labels_a: Sequence, labels_b: Sequence, categories: Sequence
                     ) -> np.ndarray:
  """int64[C, C] counts: entry [i, j] is how many items rater a put in categories[i] and rater
  b in categories[j]. A label outside `categories` raises ValueError."""
  labels_a, labels_b = list(labels_a), list(labels_b)
  if len(labels_a) != len(labels_b):
    raise ValueError(f"the raters labelled {len(labels_a)} and {len(labels_b)} items; they must "
                     "label the same items")
  index = {c: i for i, c in enumerate(categories)}
  if len(index) != len(categories):
    raise ValueError(f"categories {list(categories)} repeat a category")
  counts_CC = np.zeros((len(index), len(index)), np.int64)
  for x, y in zip(labels_a, labels_b):
    if x not in index or y not in index:
      raise ValueError(f"label {x if x not in index else y!r} is not one of the categories "
                       f"{list(categories)}")
    counts_CC[index[x], index[y]] += 1
  return counts_CC


def cohens_kappa(labels_a: Sequence, labels_b: Sequence, categories: Sequence | None = None,
                 *, weighted: bool = False) -> float:
  """Cohen's kappa of two raters' labels of the same items.

  kappa = (p_o - p_e) / (1 - p_e): observed agreement p_o against the agreement p_e expected
  from the raters' marginal label frequencies. categories: the label set in order (default:
  the sorted union of both raters' labels; pass it to fix the order of ordinal labels such as
  (0, 0.5, 1)). weighted=True: linearly weighted kappa for ordinal labels,
  1 - sum(w * observed) / sum(w * expected) with disagreement weights w_ij = |i - j| / (C - 1)
  over the positions in `categories` (a 0-vs-1 disagreement costs twice a 0-vs-0.5 one).

  Degenerate cases: no items -> nan. Expected agreement 1 (both raters put every item in one
  and the same category, so chance already explains all agreement and the ratio is 0/0) ->
  1.0, because the raters do agree on every item; a caller that must tell this apart from
  chance-corrected agreement can check the confusion matrix.
  """
  cats = _categories(labels_a, labels_b, categories)
  counts_CC = confusion_matrix(labels_a, labels_b, cats).astype(float)
  n = counts_CC.sum()
  if n == 0:
    return math.nan
  observed_CC = counts_CC / n
  expected_CC = np.outer(observed_CC.sum(1), observed_CC.sum(0))
  c = len(cats)
  if weighted and c > 1:
    pos = np.arange(c)
    w_CC = np.abs(pos[:, None] - pos[None, :]) / (c - 1)
  else:
    w_CC = 1.0 - np.eye(c)
  disagree_expected = float((w_CC * expected_CC).sum())
  if disagree_expected <= 1e-15:
    return 1.0
  return 1.0 - float((w_CC * observed_CC).sum()) / disagree_expected


# ---------------------------------------------------------------------------------- ranks
def rankdata(x: Sequence[float]) -> np.ndarray:
  """1-based ranks of `x`, ties given the average of the ranks they span (float64[N])."""
  x = np.asarray(x, dtype=float)
  order = np.argsort(x, kind="stable")
  ranks = np.empty(len(x), float)
  sorted_x = x[order]
  i = 0
  while i < len(x):
    j = i
    while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
      j += 1
    ranks[order[i:j + 1]] = (i + j) / 2 + 1
    i = j + 1
  return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman's rank correlation: the Pearson correlation of the average ranks (so ties are
  handled exactly). nan for fewer than 2 pairs or when either side is constant."""
  x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"spearman takes two 1-D sequences of equal length, got {x.shape} and "
                     f"{y.shape}")
  if len(x) < 2:
    return math.nan
  rx, ry = rankdata(x), rankdata(y)
  rx, ry = rx - rx.mean(), ry - ry.mean()
  denom = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
  return math.nan if denom == 0 else float((rx * ry).sum() / denom)


def spearman_ci(x: Sequence[float], y: Sequence[float], *, n_boot: int = 2000,
                level: float = 0.95, seed: int = 0,
                cluster_ids: Sequence[Hashable] | None = None) -> tuple[float, float, float]:
  """(rho, low, high): spearman(x, y) with a percentile-bootstrap interval over (x, y) pairs
  (or over clusters of pairs); resamples where a side is constant are skipped."""
  x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"spearman_ci takes two 1-D sequences of equal length, got {x.shape} and "
                     f"{y.shape}")
  pairs_N2 = np.stack([x, y], axis=1)
  return bootstrap_ci(pairs_N2, lambda p: spearman(p[:, 0], p[:, 1]), n_boot=n_boot,
                      level=level, seed=seed, cluster_ids=cluster_ids)


# ---------------------------------------------------------------------------------- t interval
def _betacf(a: float, b: float, x: float) -> float:
  """Continued fraction of the incomplete beta function (modified Lentz)."""
  tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
  c, d = 1.0, 1.0 - qab * x / qap
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, 500):
    m2 = 2 * m
    aa = m * (b - m) * x / ((qam + m2) * (a + m2))
    d = 1.0 + aa * d
    d = 1.0 / (d if abs(d) > tiny else tiny)
    c = 1.0 + aa / c
    c = c if abs(c) > tiny else tiny
    h *= d * c
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
    d = 1.0 + aa * d
    d = 1.0 / (d if abs(d) > tiny else tiny)
    c = 1.0 + aa / c
    c = c if abs(c) > tiny else tiny
    delta = d * c
    h *= delta
    if abs(delta - 1.0) < 1e-15:
      break
  return h


def _betainc(a: float, b: float, x: float) -> float:
  """The regularized incomplete beta function I_x(a, b)."""
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
               + b * math.log1p(-x))
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) * _betacf(a, b, x) / a
  return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
  tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
  return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
  """The p-quantile of Student's t with `df` degrees of freedom (df > 0, may be fractional).

  Computed without scipy: the t CDF through the regularized incomplete beta function
  (I_{df/(df+t^2)}(df/2, 1/2), continued fraction), inverted by bisection to ~1e-12. Agrees
  with scipy.stats.t.ppf to a relative 1e-8 (tests/test_diag_stats.py), e.g.
  t_quantile(0.975, 2) = 4.3027, t_quantile(0.975, 4) = 2.7764.
  """
  if not 0 < p < 1:
    raise ValueError(f"p={p!r} must lie in (0, 1)")
  if not df > 0:
    raise ValueError(f"df={df!r} must be > 0")
  if p == 0.5:
    return 0.0
  if p < 0.5:
    return -t_quantile(1.0 - p, df)
  hi = 1.0
  while _t_cdf(hi, df) < p:
    hi *= 2.0
    if hi > 1e15:
      return math.inf
  lo = 0.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if _t_cdf(mid, df) < p:
      lo = mid
    else:
      hi = mid
    if hi - lo <= 1e-13 * max(1.0, hi):
      break
  return 0.5 * (lo + hi)


def mean_ci_over_seeds(values: Sequence[float], level: float = 0.95
                       ) -> tuple[float, float, float]:
  """(mean, low, high): the mean of per-seed results with the t-distribution interval
  mean -/+ t_{(1+level)/2, n-1} * sd / sqrt(n) (sd with n - 1). For a handful of seeds this is
  the right interval (a bootstrap over 3 values is not). n = 0 -> nans; n = 1 -> (v, nan, nan):
  one seed says nothing about seed variance. NaN values are an error (drop failed seeds
  explicitly)."""
  _check_level(level)
  x = np.asarray(values, dtype=float).reshape(-1)
  if np.isnan(x).any():
    raise ValueError("mean_ci_over_seeds got NaN values; drop the failed seeds first")
  n = len(x)
  if n == 0:
    return _NAN3
  mean = float(x.mean())
  if n == 1:
    return mean, math.nan, math.nan
  half = t_quantile((1 + level) / 2, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
  return mean, mean - half, mean + half
