r"""Sampling-based accuracy metrics: pass@k (unbiased), avg@k, maj@k; per prompt and aggregated.

Every function here is pure Python / numpy on host values.

pass_at_k(n, c, k)
  The unbiased estimator of the probability that at least one of k samples drawn without
  replacement from n samples (c of them correct) is correct: 1 − C(n−c, k) / C(n, k)
  (Chen et al. 2021), computed in the numerically stable product form
  1 − Π_{i=n−c+1..n} (1 − k/i); 1.0 when c > n − k (every k-subset holds a correct sample).

avg_at_k(correct, k)
  The mean correctness of a prompt's first k samples (avg@16 of docs/PROTOCOL.md).

majority_vote(answers, k) / maj_at_k(answers, label, k)
  Majority voting over the first k samples' extracted final answers. Answers are grouped by
  answers.equivalent (answers.answer_groups: "0.5", "1/2", "\frac{1}{2}" are one answer, a
  sample joining the first earlier group whose first answer it is equivalent to); samples
  without an answer (None, "", only spaces) do not vote. Ties are broken by first occurrence:
  among the groups with the most votes, the one whose earliest sample comes first wins
  (deterministic, and independent of hashing). The majority answer is that earliest sample's
  answer as written. With no votes at all there is no majority answer and maj@k is 0. maj_at_k
  is 1.0 when the majority answer is equivalent to `label` (answers.equivalent), else 0.0.

summarize(correct_PK, ks, ...)
  Aggregates per-prompt correctness [P, K] into the dataset metrics: avg@K (mean over prompts of
  avg_at_k), pass@k for every k in `ks` with k ≤ K (mean over prompts of pass_at_k(K, c_p, k)).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rlvr_jax.data import answers as answers_lib

__all__ = ["pass_at_k", "pass_at_k_per_prompt", "avg_at_k", "majority_vote", "maj_at_k",
           "summarize", "check_ks"]


def _is_int(x) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k of one prompt with n samples of which c are correct (module docstring).

  Needs integers 0 <= c <= n and 1 <= k <= n; ValueError otherwise.
  """
  if not (_is_int(n) and _is_int(c) and _is_int(k)):
    raise ValueError(f"pass_at_k takes integers, got n={n!r}, c={c!r}, k={k!r}")
  if not 0 <= c <= n:
    raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
  if not 1 <= k <= n:
    raise ValueError(f"pass_at_k: need 1 <= k <= n (k samples out of n), got n={n}, k={k}")
  if c > n - k:
    return 1.0
  i = np.arange(n - c + 1, n + 1, dtype=np.float64)
  return float(1.0 - np.prod(1.0 - k / i))


def pass_at_k_per_prompt(correct_PK: Any, k: int) -> np.ndarray:
  """float64[P]: pass_at_k(K, c_p, k) for each prompt row of a bool/0-1 matrix [P, K]."""
  correct_PK = np.asarray(correct_PK)
  if correct_PK.ndim != 2:
    raise ValueError(f"correct_PK must be [prompts, samples], got shape {correct_PK.shape}")
  n = correct_PK.shape[1]
  counts_P = np.count_nonzero(correct_PK, axis=1)
  return np.array([pass_at_k(n, int(c), k) for c in counts_P], np.float64)


def avg_at_k(correct: Sequence[Any], k: int | None = None) -> float:
  """Mean correctness of the first k samples of one prompt (all of them when k is None)."""
  correct = list(correct)
  k = len(correct) if k is None else k
  if not _is_int(k) or not 1 <= k <= len(correct):
    raise ValueError(f"avg_at_k: need 1 <= k <= {len(correct)} samples, got k={k!r}")
  return float(np.mean(np.asarray(correct[:k], dtype=np.float64)))


def majority_vote(answers: Sequence[str | None], k: int | None = None
                  ) -> tuple[str | None, int | None]:
  """(majority answer as its first sample wrote it, index of that sample) over the first k
  answers, grouped by answers.equivalent; (None, None) when none of them has an answer. Ties:
  the answer seen first wins (module docstring)."""
  answers = list(answers)
  k = len(answers) if k is None else k
  if not _is_int(k) or not 1 <= k <= len(answers):
    raise ValueError(f"majority_vote: need 1 <= k <= {len(answers)} answers, got k={k!r}")
  first = answers_lib.majority_group(answers[:k])
  return (None, None) if first is None else (answers[first], first)


def maj_at_k(answers: Sequence[str | None], label: str | None, k: int | None = None) -> float:
  """1.0 when the majority answer of the first k samples is equivalent to `label`, else 0.0."""
  best, _ = majority_vote(answers, k)
  return float(best is not None and answers_lib.equivalent(best, label))


def check_ks(ks: Sequence[int], k: int) -> tuple[int, ...]:
  """The pass@ k values of `ks` that can be estimated from k samples (those <= k), sorted and
  deduplicated; ValueError for a non-positive or non-integer entry or k < 1."""
  if not _is_int(k) or k < 1:
    raise ValueError(f"k={k!r} (samples per prompt) must be an integer >= 1")
  ks = tuple(ks)
  bad = [x for x in ks if not _is_int(x) or x < 1]
  if bad:
    raise ValueError(f"ks={ks!r}: every pass@k value must be an integer >= 1 (bad: {bad})")
  return tuple(sorted({int(x) for x in ks if x <= k}))


def summarize(correct_PK: Any, ks: Sequence[int] = (1, 4, 8, 16)) -> dict[str, float]:
  """{"avg@K": ..., "pass@k": ... for k in ks with k <= K} of a correctness matrix [P, K]
  (P >= 1 prompts, K samples each), averaged over prompts."""
  correct_PK = np.asarray(correct_PK)
  if correct_PK.ndim != 2 or correct_PK.shape[0] < 1 or correct_PK.shape[1] < 1:
    raise ValueError(f"correct_PK must be a non-empty [prompts, samples] matrix, got shape "
                     f"{correct_PK.shape}")
  n = correct_PK.shape[1]
  out = {f"avg@{n}": float(np.mean(correct_PK.astype(np.float64)))}
  for k in check_ks(ks, n):
    out[f"pass@{k}"] = float(np.mean(pass_at_k_per_prompt(correct_PK, k)))
  return out
