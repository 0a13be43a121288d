"""diagnostics/stats.py against hand-computed values: Cohen's kappa on known confusion matrices,
Spearman with ties, the t quantile, and bootstrap intervals (coverage, clusters, edge cases)."""
import json
import math

import numpy as np
import pytest

from rlvr_jax.diagnostics import stats as S


def labels_from_matrix(matrix, categories):
  """Two raters' label lists whose confusion matrix is `matrix`."""
  a, b = [], []
  for i, row in enumerate(matrix):
    for j, count in enumerate(row):
      a += [categories[i]] * count
      b += [categories[j]] * count
  return a, b


# ---------------------------------------------------------------------------------- kappa
def test_kappa_classic_2x2():
  # yes/yes 20, yes/no 5, no/yes 10, no/no 15 (n = 50): p_o = 35/50 = 0.7; marginals a 25/25,
  # b 30/20: p_e = (25*30 + 25*20) / 50^2 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
  a, b = labels_from_matrix([[20, 5], [10, 15]], ["yes", "no"])
  assert S.cohens_kappa(a, b) == pytest.approx(0.4)
  assert S.confusion_matrix(a, b, ["yes", "no"]).tolist() == [[20, 5], [10, 15]]
  assert S.cohens_kappa(b, a) == pytest.approx(0.4)   # symmetric


def test_kappa_ordinal_3x3_unweighted_and_linear():
  cats = (0.0, 0.5, 1.0)
  a, b = labels_from_matrix([[2, 1, 0], [0, 2, 1], [1, 0, 3]], cats)
  # unweighted: p_o = 7/10; both marginals (.3, .3, .4): p_e = .09 + .09 + .16 = .34;
  # kappa = .36 / .66 = 6/11.
  assert S.cohens_kappa(a, b, cats) == pytest.approx(6 / 11)
  # linear weights w = |i - j| / 2: observed disagreement (.5 + .5 + 1) / 10 = .2; expected
  # 2 * (.5*.3*.3 + 1*.3*.4 + .5*.3*.4) = .45; kappa_w = 1 - .2 / .45 = 5/9.
  assert S.cohens_kappa(a, b, cats, weighted=True) == pytest.approx(5 / 9)


def test_kappa_degenerate_cases():
  assert S.cohens_kappa([1, 1, 1], [1, 1, 1]) == 1.0            # expected agreement 1
  assert S.cohens_kappa([1, 1, 1], [1, 1, 1], weighted=True) == 1.0
  assert math.isnan(S.cohens_kappa([], []))
  assert S.cohens_kappa([0, 1, 0.5, 1], [0, 1, 0.5, 1]) == pytest.approx(1.0)
  # all disagreements on a balanced 2x2: p_o = 0, p_e = .5 -> -1
  assert S.cohens_kappa([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
  with pytest.raises(ValueError):
    S.confusion_matrix([0, 2], [0, 1], [0, 1])
  with pytest.raises(ValueError):
    S.cohens_kappa([0, 1], [0])


# ---------------------------------------------------------------------------------- spearman
def test_spearman_with_ties_hand_value():
  # ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]; centred: dx = [-1.5, 0, 0, 1.5],
  # dy = [-1.5, .5, -.5, 1.5]; rho = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10).
  assert S.rankdata([1, 2, 2, 3]).tolist() == [1, 2.5, 2.5, 4]
  assert S.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
  assert S.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  assert math.isnan(S.spearman([1, 1, 1], [1, 2, 3]))
  assert math.isnan(S.spearman([1], [2]))


def test_spearman_matches_scipy_and_ci_contains_it():
  scipy_stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(0)
  x = rng.integers(0, 5, 30).astype(float)       # many ties
  y = x + rng.normal(0, 2, 30)
  assert S.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)
  rho, low, high = S.spearman_ci(x, y, n_boot=300)
  assert rho == S.spearman(x, y) and low <= rho <= high and high - low > 0


# ---------------------------------------------------------------------------------- t
def test_t_quantile_known_values():
  assert S.t_quantile(0.975, 2) == pytest.approx(4.303, abs=5e-4)
  assert S.t_quantile(0.975, 4) == pytest.approx(2.776, abs=5e-4)
  assert S.t_quantile(0.975, 1) == pytest.approx(12.706, abs=5e-4)
  assert S.t_quantile(0.975, 30) == pytest.approx(2.042, abs=5e-4)
  assert S.t_quantile(0.975, 1e6) == pytest.approx(1.960, abs=5e-4)
  assert S.t_quantile(0.025, 4) == pytest.approx(-2.776, abs=5e-4)
  assert S.t_quantile(0.5, 3) == 0.0


def test_t_quantile_matches_scipy():
  scipy_stats = pytest.importorskip("scipy.stats")
  for df in (1, 2, 3, 7, 29, 31, 120, 0.7):
    for p in (0.6, 0.9, 0.975, 0.995, 0.05):
      want = scipy_stats.t.ppf(p, df)
      assert S.t_quantile(p, df) == pytest.approx(want, rel=1e-7), (p, df)


def test_mean_ci_over_seeds():
  # mean 2, sd 1, n 3: half width t_{.975, 2} / sqrt(3) = 4.3027 / 1.7321 = 2.4841
  mean, low, high = S.mean_ci_over_seeds([1.0, 2.0, 3.0])
  assert mean == 2.0
  assert low == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
  assert high == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-5)
  one = S.mean_ci_over_seeds([0.5])
  assert one[0] == 0.5 and math.isnan(one[1]) and math.isnan(one[2])
  assert all(math.isnan(v) for v in S.mean_ci_over_seeds([]))
  with pytest.raises(ValueError):
    S.mean_ci_over_seeds([1.0, float("nan")])


# ---------------------------------------------------------------------------------- bootstrap
def test_bootstrap_edge_cases_and_determinism():
  assert all(math.isnan(v) for v in S.bootstrap_ci([]))
  assert S.bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)
  a = S.bootstrap_ci([0, 1, 1, 0, 1], n_boot=200, seed=3)
  assert a == S.bootstrap_ci([0, 1, 1, 0, 1], n_boot=200, seed=3)
  assert a[0] == pytest.approx(0.6) and a[1] <= 0.6 <= a[2]
  with pytest.raises(ValueError):
    S.bootstrap_ci([1, 2], cluster_ids=[0])
  with pytest.raises(ValueError):
    S.bootstrap_ci([1, 2], level=95)


def test_bootstrap_coverage_sanity():
  """The 95% interval of a mean covers the true mean in about 95% of datasets."""
  rng = np.random.default_rng(0)
  hits = 0
  for i in range(100):
    _, low, high = S.bootstrap_ci(rng.normal(1.0, 1.0, 40), n_boot=300, seed=i)
    hits += low <= 1.0 <= high
  assert 85 <= hits <= 99


def test_cluster_bootstrap_is_wider_for_correlated_rows():
  """8 prompts x 16 identical rollouts: only 8 independent values, so resampling prompts gives
  a much wider interval than resampling the 128 rows."""
  per_prompt = np.array([0, 1, 1, 0, 1, 1, 0, 1], float)
  values = np.repeat(per_prompt, 16)
  prompts = np.repeat(np.arange(8), 16)
  est_r, low_r, high_r = S.bootstrap_ci(values, n_boot=500)
  est_c, low_c, high_c = S.bootstrap_ci(values, n_boot=500, cluster_ids=prompts)
  assert est_r == est_c == pytest.approx(5 / 8)
  assert high_c - low_c > 2.5 * (high_r - low_r)


def test_estimate_is_json_able():
  e = S.estimate([], [])
  assert e.n == 0 and math.isnan(e.value) and e.format() == "-"
  assert json.loads(json.dumps(e.to_dict(), allow_nan=False))["value"] is None
  e = S.estimate([1, 0, 1, 1], ["a", "a", "b", "c"], n_boot=100)
  assert e.n == 4 and e.n_clusters == 3 and e.value == 0.75
  assert e.format(2).startswith("0.75 [")
