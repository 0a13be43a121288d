"""Data protocols of docs/PROTOCOL.md that need no model; solve counts and wrong answers are inputs.

  difficulty_filter(solve_counts, num_samples=16)        keep problems solved 1..15 of 16 times
  solve_count_bins(solve_counts, num_bins=15)            bin kept problems by solve count
  stratified_subset(solve_counts, n, seed)               round-robin N-subset over the bins
  upsample_indices(n, batch_size, seed)                  small-N upsampling to fill a batch
  replace_labels(records, wrong_answers, gamma, seed)    noisy labels: fixed per prompt
  heldout_split(ids, n_heldout | fraction, seed)         seeded held-out split
  hash_split(records, fraction, key, salt)               content-hash split (order independent)

The model-aware parts (solve counts from 16 samples, the most frequent wrong answer from 96)
come from the RL/eval code and are passed in as plain mappings keyed by example id.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _check_counts(solve_counts: Mapping[str, int], num_samples: int | None) -> None:
  for k, c in solve_counts.items():
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
      raise ValueError(f"solve count of {k!r} must be an int, got {type(c).__name__}")
    if c < 0 or (num_samples is not None and c > num_samples):
      raise ValueError(f"solve count of {k!r} is {c}, outside [0, {num_samples}]")


def difficulty_filter(solve_counts: Mapping[str, int], *, num_samples: int = 16,
                      min_solved: int = 1, max_solved: int | None = None) -> list[str]:
  """Ids whose solve count (of `num_samples` samples) is in [min_solved, max_solved].

  The paper keeps problems solved 1..15 times of 16 (max_solved defaults to num_samples - 1).
  Returns ids in the mapping's order.
  """
  _check_counts(solve_counts, num_samples)
  hi = num_samples - 1 if max_solved is None else max_solved
  return [k for k, c in solve_counts.items() if min_solved <= c <= hi]


def solve_count_bins(solve_counts: Mapping[str, int], *, num_bins: int = 15, min_solved: int = 1,
                     max_solved: int = 15) -> dict[int, list[str]]:
  """{bin: ids} of the problems with min_solved <= count <= max_solved (others are left out).

  The range [min_solved, max_solved] is cut into `num_bins` equal-width bins:
  bin = (count - min_solved) * num_bins // (max_solved - min_solved + 1). With the paper's
  defaults (counts 1..15, 15 bins) each solve count is its own bin (bin = count - 1). Ids keep
  the mapping's order within a bin; empty bins are absent.
  """
  _check_counts(solve_counts, None)
  width = max_solved - min_solved + 1
  if num_bins < 1 or width < 1:
    raise ValueError(f"need num_bins >= 1 and max_solved >= min_solved, got {num_bins}, "
                     f"[{min_solved}, {max_solved}]")
  bins: dict[int, list[str]] = {}
  for k, c in solve_counts.items():
    if min_solved <= c <= max_solved:
      bins.setdefault((c - min_solved) * num_bins // width, []).append(k)
  return dict(sorted(bins.items()))


def stratified_subset(solve_counts: Mapping[str, int], n: int, *, seed: int, num_bins: int = 15,
                      min_solved: int = 1, max_solved: int = 15,
                      bin_order: str = "shuffled") -> list[str]:
  """The protocol's stratified N-subset: exactly `n` distinct ids, in draw order.

  Kept problems (solve count in [min_solved, max_solved]) are binned by solve count
  (solve_count_bins). Each bin's ids are put in a seeded random order. Then passes are made
  over the non-empty bins, drawing one id (the next in that bin's order, without replacement)
  from each, until `n` ids are drawn. bin_order: "shuffled" visits the non-empty bins in a new
  seeded random order on every pass, so when the last pass is cut short no solve-count range
  is favoured; "ascending" visits them from the lowest solve count up (the hardest first).
  Raises ValueError when fewer than `n` problems are kept.
  """
  if bin_order not in ("shuffled", "ascending"):
    raise ValueError(f"bin_order must be 'shuffled' or 'ascending', got {bin_order!r}")
  bins = solve_count_bins(solve_counts, num_bins=num_bins, min_solved=min_solved,
                          max_solved=max_solved)
  total = sum(len(v) for v in bins.values())
  if n < 0 or n > total:
    raise ValueError(f"cannot draw n={n} problems: only {total} have a solve count in "
                     f"[{min_solved}, {max_solved}]")
  rng = np.random.default_rng(seed)
  queues = {b: [ids[j] for j in rng.permutation(len(ids))] for b, ids in bins.items()}
  heads = dict.fromkeys(queues, 0)
  picks: list[str] = []
  while len(picks) < n:
    live = [b for b in queues if heads[b] < len(queues[b])]
    order = live if bin_order == "ascending" else [live[j] for j in rng.permutation(len(live))]
    for b in order:
      if len(picks) == n:
        break
      picks.append(queues[b][heads[b]])
      heads[b] += 1
  return picks


def bin_histogram(ids: Sequence[str], solve_counts: Mapping[str, int], *, num_bins: int = 15,
                  min_solved: int = 1, max_solved: int = 15) -> dict[int, int]:
  """{bin: how many of `ids` fall in it} (bins as in solve_count_bins)."""
  width = max_solved - min_solved + 1
  out: dict[int, int] = {}
  for k in ids:
    b = (solve_counts[k] - min_solved) * num_bins // width
    out[b] = out.get(b, 0) + 1
  return dict(sorted(out.items()))


def upsample_indices(n: int, batch_size: int, seed: int) -> np.ndarray:
  """Indices into n prompts filling one batch of `batch_size` uniformly (small-N upsampling).

  When n >= batch_size: arange(n) (nothing to do). Otherwise every prompt appears
  batch_size // n times, and the batch_size % n leftover slots go to distinct prompts chosen
  with `seed` (so counts differ by at most one). Returns int64[max(n, batch_size)], sorted.
  """
  if n <= 0:
    raise ValueError(f"need at least one prompt to upsample, got n={n}")
  if n >= batch_size:
    return np.arange(n, dtype=np.int64)
  reps, extra = divmod(batch_size, n)
  chosen = np.random.default_rng(seed).choice(n, size=extra, replace=False)
  return np.sort(np.concatenate([np.repeat(np.arange(n), reps), chosen])).astype(np.int64)


def replace_labels(records: Sequence[Mapping[str, Any]], wrong_answers: Mapping[str, str], *,
                   gamma: float, seed: int, compare: Any = None
                   ) -> tuple[list[dict], dict[str, Any]]:
  """Noisy labels (γ): the label of a seeded γ fraction of prompts becomes a given wrong answer.

  Exactly k = floor(γ·n + 1/2) prompts are selected: the first k of a seeded permutation of the
  records' ids sorted (so the choice does not depend on record order). A selected prompt gets
  `answer = wrong_answers[id]` (its `true_answer` is kept, meta["label_replaced"] = True).
  A selected prompt with no usable wrong answer — absent from the table, empty, or equal to the
  true answer under `compare` (default answers.equivalent, the matcher of the rewards and eval,
  so a "wrong" answer that is the truth written another way is never used) — keeps its true
  label and is counted, so the realised noise rate replaced/n can fall below γ; the report says
  by how much.
  Unselected prompts are unchanged. This is label replacement fixed per prompt (the paper's
  protocol), not per-sample reward flips.

  Returns (new records, report) with report = {prompts, selected, replaced, no_wrong_answer,
  wrong_equals_true, realised_gamma, replaced_ids}.
  """
  if not 0.0 <= gamma <= 1.0:
    raise ValueError(f"gamma must be in [0, 1], got {gamma}")
  if compare is None:
    from rlvr_jax.data.answers import equivalent as compare
  ids = [str(r["id"]) for r in records]
  if len(set(ids)) != len(ids):
    raise ValueError("record ids must be unique to replace labels by id")
  n = len(records)
  k = int(np.floor(gamma * n + 0.5))
  order = sorted(ids)
  perm = np.random.default_rng(seed).permutation(n)
  selected = {order[j] for j in perm[:k]}
  out, replaced_ids = [], []
  no_wrong = equal = 0
  for r in records:
    r = dict(r)
    r.setdefault("true_answer", r["answer"])
    if r["id"] in selected:
      wrong = wrong_answers.get(r["id"])
      wrong = wrong.strip() if isinstance(wrong, str) else None
      if not wrong:
        no_wrong += 1
      elif compare(wrong, r["true_answer"]):
        equal += 1
      else:
        r["answer"] = wrong
        r["meta"] = {**r.get("meta", {}), "label_replaced": True}
        replaced_ids.append(r["id"])
    out.append(r)
  report = {"prompts": n, "selected": k, "replaced": len(replaced_ids),
            "no_wrong_answer": no_wrong, "wrong_equals_true": equal,
            "realised_gamma": len(replaced_ids) / n if n else 0.0, "replaced_ids": replaced_ids}
  return out, report


def heldout_split(ids: Sequence[str], *, seed: int, n_heldout: int | None = None,
                  fraction: float | None = None) -> tuple[list[str], list[str]]:
  """(train ids, held-out ids): a seeded random `n_heldout` (or round(fraction·n)) ids held out.

  Disjoint and covering; both lists keep the input order. The choice depends on the sorted
  ids, not on their order.
  """
  if (n_heldout is None) == (fraction is None):
    raise ValueError("pass exactly one of n_heldout or fraction")
  n = len(ids)
  if len(set(ids)) != n:
    raise ValueError("ids must be unique for a held-out split")
  k = n_heldout if n_heldout is not None else int(np.floor(fraction * n + 0.5))
  if not 0 <= k <= n:
    raise ValueError(f"cannot hold out {k} of {n} ids")
  order = sorted(ids)
  held = {order[j] for j in np.random.default_rng(seed).permutation(n)[:k]}
  return [i for i in ids if i not in held], [i for i in ids if i in held]


def content_hash(text: str, salt: str = "") -> str:
  """sha256 hex digest of salt + text (used for overlap checks and hash splits)."""
  return hashlib.sha256((salt + text).encode("utf-8")).hexdigest()


def hash_split(records: Sequence[Mapping[str, Any]], fraction: float, *, key: str = "problem",
               salt: str = "heldout") -> tuple[list[dict], list[dict]]:
  """(kept, held-out) records; a record is held out when the hash of its `key` text, read as a
  number in [0, 1), is below `fraction`. Depends only on content, so the same problem lands on
  the same side in every dataset and order; duplicates always land together."""
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"fraction must be in [0, 1], got {fraction}")
  kept, held = [], []
  for r in records:
    u = int(content_hash(str(r[key]), salt)[:13], 16) / float(16 ** 13)
    (held if u < fraction else kept).append(dict(r))
  return kept, held
