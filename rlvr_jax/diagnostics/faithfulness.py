r"""Faithfulness of responses: exact labels on the synthetic domains, and their summary.

The paper's labels (docs/PROTOCOL.md, "Faithfulness and diversity"), one per response:
  1    aligned     the reasoning is a coherent derivation that leads to the stated final answer,
                   right or wrong;
  0.5  partial     it heads toward the answer with major gaps or leaps;
  0    misaligned  the answer contradicts, or is not supported by, the reasoning.
They are measured on 8 prompts x 16 rollouts; the headline is the share of ALIGNED responses
among the CORRECT ones ("when the model is right, is it right for its stated reasons?").

On the synthetic domains (arith, units, graph) the labels need no judge: every trace step is a
checkable statement, and `Domain.verify_steps` labels a response exactly (1.0 every step checks
and the boxed answer is the last step's result; 0.5 the answer follows from the last step but
some step is wrong; 0.0 the answer does not follow). `programmatic_labels` runs it over
(record, response) pairs and adds correctness; a record of any other domain gets None (its
label needs a judge).

  labels = programmatic_labels(records, responses)       # one Label | None per response
  report = summarize(labels, prompt_ids)                  # shares with prompt-clustered CIs
  report.headline                                         # aligned share among correct
  json.dumps(report.to_dict()); print(markdown_table({"sft": report}))

`summarize` accepts any objects with `.faithfulness` (1, 0.5 or 0) and `.correct` (bool), so a
judge's labels summarise the same way. Its intervals are bootstrap intervals that resample
prompts, not rows (diagnostics/stats.py says why).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from rlvr_jax.data import answers as answers_lib
from rlvr_jax.diagnostics import stats

__all__ = ["LEVELS", "LEVEL_NAMES", "GROUPS", "Label", "record_label", "programmatic_label",
           "programmatic_labels", "FaithfulnessReport", "summarize", "markdown_table"]

LEVELS = (1.0, 0.5, 0.0)
LEVEL_NAMES = {1.0: "aligned", 0.5: "partial", 0.0: "misaligned"}
GROUPS = ("correct", "incorrect", "all")


@dataclasses.dataclass(frozen=True)
class Label:
  """The programmatic faithfulness label of one response.

  faithfulness: 1.0 aligned / 0.5 partial / 0.0 misaligned (Domain.verify_steps); correct: the
  final (last boxed) answer is equivalent to the record's true answer; parsed_ok: the response
  has at least one "Step k:" line and a boxed answer; n_steps: step lines found;
  first_wrong_step: 1-based, None when every step checks; answer: the extracted final answer.
  """
  faithfulness: float
  correct: bool
  parsed_ok: bool
  n_steps: int
  first_wrong_step: int | None
  answer: str | None

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def _get(record: Any, key: str, default: Any = None) -> Any:
  if isinstance(record, Mapping):
    return record.get(key, default)
  return getattr(record, key, default)


def record_label(record: Any) -> str:
  """The label a response is judged correct against: the record's true_answer, else its answer
  (as the eval harness validates; a noisy training label never decides correctness)."""
  label = _get(record, "true_answer")
  if label is None or label == "":
    label = _get(record, "answer")
  return "" if label is None else str(label)


def programmatic_label(record: Any, response: str) -> Label | None:
  """The Label of one response to a problem record (or synthetic Example); None when the
  record's domain is not a synthetic one (no step verifier to label it with)."""
  from rlvr_jax.data.domains import DOMAINS
  domain = DOMAINS.get(str(_get(record, "domain") or ""))
  if domain is None:
    return None
  report = domain.verify_steps(record, response)
  return Label(faithfulness=float(report.faithfulness),
               correct=bool(domain.verify_answer(record_label(record), response)),
               parsed_ok=bool(report.parsed_ok), n_steps=int(report.n_steps),
               first_wrong_step=report.first_wrong_step,
               answer=answers_lib.extract_boxed(response))


def programmatic_labels(records: Sequence[Any], responses: Sequence[str]
                        ) -> list[Label | None]:
  """One Label (or None, see programmatic_label) per (record, response) pair.

  records[i] is the problem record that responses[i] answers (rollouts of one prompt repeat
  its record). A synthetic-domain record without its problem text or meta raises ValueError
  naming the row.
  """
  records, responses = list(records), list(responses)
  if len(records) != len(responses):
    raise ValueError(f"programmatic_labels got {len(records)} records for {len(responses)} "
                     "responses; pass one record per response")
  out = []
  for i, (record, response) in enumerate(zip(records, responses)):
    if not isinstance(response, str):
      raise TypeError(f"responses[{i}] should be a str, got {type(response).__name__}")
    try:
      out.append(programmatic_label(record, response))
    except (ValueError, TypeError, KeyError) as e:
      raise ValueError(f"record {i} (id {_get(record, 'id')!r}): cannot label it: {e}") from e
  return out


# ---------------------------------------------------------------------------------- summary
@dataclasses.dataclass(frozen=True)
class FaithfulnessReport:
  """Shares of the faithfulness levels among correct, incorrect and all labelled responses.

  shares[group][name] and counts[group][name]: group in GROUPS, name in "aligned", "partial",
  "misaligned"; each share is a stats.Estimate with a bootstrap interval clustered by prompt
  (its n is the size of the group). accuracy: share of correct responses. n_responses: labels
  given; n_labelled: those not None (the rest could not be labelled programmatically);
  n_prompts: distinct prompts among the labelled.
  """
  n_responses: int
  n_labelled: int
  n_prompts: int
  counts: Mapping[str, Mapping[str, int]]
  shares: Mapping[str, Mapping[str, stats.Estimate]]
  accuracy: stats.Estimate
  level: float = 0.95

  @property
  def headline(self) -> stats.Estimate:
    """The paper's headline: the aligned share among correct responses."""
    return self.shares["correct"]["aligned"]

  @property
  def n_unlabelled(self) -> int:
    return self.n_responses - self.n_labelled

  def to_dict(self) -> dict:
    """JSON-able (NaN -> None): counts, shares, accuracy and the headline."""
    return {
        "n_responses": self.n_responses, "n_labelled": self.n_labelled,
        "n_unlabelled": self.n_unlabelled, "n_prompts": self.n_prompts, "level": self.level,
        "aligned_among_correct": self.headline.to_dict(),
        "accuracy": self.accuracy.to_dict(),
        "counts": {g: dict(c) for g, c in self.counts.items()},
        "shares": {g: {k: e.to_dict() for k, e in s.items()} for g, s in self.shares.items()},
    }


def _level_of(x: Any, i: int) -> float:
  value = float(x.faithfulness)
  for level in LEVELS:
    if math.isclose(value, level):
      return level
  raise ValueError(f"labels[{i}].faithfulness={x.faithfulness!r} is not one of {LEVELS}")


def summarize(labels: Sequence[Any], prompt_ids: Sequence[Hashable] | None = None, *,
              n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> FaithfulnessReport:
  """The FaithfulnessReport of `labels` (Label, or anything with .faithfulness and .correct;
  None entries are counted as unlabelled and left out).

  prompt_ids: the prompt of each label (same length), the clusters of the bootstrap; None
  treats every response as its own prompt (too-narrow intervals when rollouts share prompts).
  """
  labels = list(labels)
  if prompt_ids is None:
    prompt_ids = list(range(len(labels)))
  prompt_ids = list(prompt_ids)
  if len(prompt_ids) != len(labels):
    raise ValueError(f"summarize got {len(prompt_ids)} prompt ids for {len(labels)} labels")
  kept = [(i, x) for i, x in enumerate(labels) if x is not None]
  levels = np.array([_level_of(x, i) for i, x in kept], float)
  correct = np.array([bool(x.correct) for _, x in kept], bool)
  clusters = [prompt_ids[i] for i, _ in kept]
  masks = {"correct": correct, "incorrect": ~correct, "all": np.ones(len(kept), bool)}
  opts = dict(n_boot=n_boot, level=level, seed=seed)
  counts: dict[str, dict[str, int]] = {}
  shares: dict[str, dict[str, stats.Estimate]] = {}
  for group, mask in masks.items():
    group_clusters = [c for c, m in zip(clusters, mask) if m]
    counts[group], shares[group] = {}, {}
    for value in LEVELS:
      name = LEVEL_NAMES[value]
      hits = levels[mask] == value
      counts[group][name] = int(hits.sum())
      shares[group][name] = stats.estimate(hits.astype(float), group_clusters, **opts)
  accuracy = stats.estimate(correct.astype(float), clusters, **opts)
  return FaithfulnessReport(n_responses=len(labels), n_labelled=len(kept),
                            n_prompts=len(set(clusters)), counts=counts, shares=shares,
                            accuracy=accuracy, level=level)


def markdown_table(reports: Mapping[str, FaithfulnessReport] | FaithfulnessReport,
                   digits: int = 2) -> str:
  """A markdown table, one row per named report: responses, accuracy, the level shares among
  correct responses (aligned first: the headline), aligned among incorrect and among all; each
  share "value [low, high]" at the reports' level."""
  if isinstance(reports, FaithfulnessReport):
    reports = {"": reports}
  header = ["run", "responses", "prompts", "accuracy", "aligned (correct)",
            "partial (correct)", "misaligned (correct)", "aligned (incorrect)", "aligned (all)"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, r in reports.items():
    cells = [name or "-", f"{r.n_labelled}", f"{r.n_prompts}", r.accuracy.format(digits)]
    for group, level in (("correct", "aligned"), ("correct", "partial"),
                         ("correct", "misaligned"), ("incorrect", "aligned"),
                         ("all", "aligned")):
      est = r.shares[group][level]
      cells.append(f"{est.format(digits)} (n={est.n})")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
