r"""Output diversity of a model's responses to one prompt, and averaged over prompts.

The paper's measure (docs/PROTOCOL.md, "Faithfulness and diversity"): the K responses of a
prompt are clustered greedily by "same strategy?" judgements, and the cluster shares give an
effective number of strategies and a normalised diversity score.

  greedy_clusters(responses, same) -> [cluster id per response]
  n_eff(cluster_ids)                  exp(entropy of the cluster shares)
  div_score(cluster_ids)              (N_eff − 1) / (K − 1), K the number of responses
  faithful_diversity(responses, faithfulness_labels, same)   N_eff over aligned responses only
  strategy_signature(text) / programmatic_same_strategy(a, b)  the synthetic domains' comparator
  distinct_n(responses, n)            unique n-grams / all n-grams (whitespace tokens)
  unique_answers(responses)           distinct final \boxed{} answers (answers.answer_groups)
  pass_at_k_curve(correct, ks)        unbiased pass@k for k = 1..K (eval.metrics.pass_at_k)
  prompt_diversity(...) -> PromptDiversity; diversity_report(...) -> DiversityReport (JSON-able)

Greedy clustering. Responses are taken in order; each is compared, in cluster order, with ONE
representative per existing cluster (the response that opened it) as `same(representative,
response)`, and joins the first cluster judged SAME, else opens a new one. Cluster ids are
0, 1, ... in order of opening. Deterministic for a deterministic comparator. A comparator with
a `compare_pairs([(a, b), ...])` method (judges.SameStrategyJudge) is asked about all the
(representative, response) pairs of one response in one call; the first SAME wins as before,
so the clusters are those of one-by-one calls (only the number of judge calls differs).

N_eff and Div. With cluster shares p_i, N_eff = exp(−Σ p_i ln p_i): 1 for one cluster, C for C
equal clusters. The protocol writes Div = (N_eff − 1) / (K − 1) "when K > 1, else 0". We read K
as the NUMBER OF RESPONSES (K = 16 rollouts in the paper), which puts Div in [0, 1] with 0 for a
single strategy and 1 only when all K responses are distinct strategies, so Div grows with the
number and evenness of strategies. (Reading K as the number of clusters also stays in [0, 1]
but measures only evenness: two equal clusters and sixteen singletons would both score 1; it is
available as div_score(ids, denominator="clusters").) Div is 0 with fewer than two responses or
a single cluster. The paper's score is the mean of Div over its 8 prompts.

Faithful diversity: the aligned responses (faithfulness label exactly 1.0; 0.5, 0.0 and None
are left out) are clustered on their own and their N_eff reported; 0.0 when none is aligned.

Same strategy on the synthetic domains (programmatic, no judge). A response's strategy signature
is the sequence of the forms of its `Step k:` statements, in order: every number replaced by
`#` (a unary minus dropped; comma-separated runs of numbers, as in `max(1, 4, 2)` or `(1,2)`,
become one `#`), words lower-cased and a plural `s` dropped (`1 cell` / `4 cells`), spacing
ignored; the labels, units, operators and button names are kept; a run of consecutive
identical forms counts once (listing 3 islands or 4 islands is the same procedure). The step
numbers and the final answer line are not part of it. So two responses use the same strategy
when they perform the same kinds of operations in the same order, whatever the numbers:
`3 * 5 = 15` then `15 - 11 = 4` matches `2 * 4 = 8` then `8 - 2 = 6`, but not `8 - 6 = 2` then
`2 + 4 = 6`; `voltage = 12000 / 1000 = 12 V` differs from `time = 9 * 60 = 540 s`; pressing
buttons B, C, B differs from A, B, B. A response without any step line gets a signature from
its text shape instead: its non-empty lines in the same form, with the content of \boxed{}
replaced by `#` (so `The answer is \boxed{6}.` and `The answer is \boxed{7}.` are one strategy,
answering directly). Equal signatures are SAME, an equivalence, so greedy clustering with it is
order-independent up to the cluster numbering.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rlvr_jax.data import answers as answers_lib
from rlvr_jax.data.domains.base import parse_steps
from rlvr_jax.eval import metrics as metrics_lib

__all__ = ["greedy_clusters", "n_eff", "div_score", "faithful_diversity", "strategy_signature",
           "programmatic_same_strategy", "distinct_n", "unique_answers", "pass_at_k_curve",
           "PromptDiversity", "DiversityReport", "prompt_diversity", "diversity_report",
           "DIV_DENOMINATORS"]

Comparator = Callable[[Any, Any], bool]
DIV_DENOMINATORS = ("responses", "clusters")


# ---------------------------------------------------------------------------------- clusters


def greedy_clusters(responses: Sequence[Any], same: Comparator) -> list[int]:
  """The cluster id of each response under greedy clustering (module docstring)."""
  responses = list(responses)
  compare_pairs = getattr(same, "compare_pairs", None)
  representatives: list[int] = []
  ids: list[int] = []
  for i, response in enumerate(responses):
    reps = [responses[r] for r in representatives]
    if compare_pairs is not None and reps:
      flags = [bool(x) for x in compare_pairs([(rep, response) for rep in reps])]
      cluster = next((c for c, ok in enumerate(flags) if ok), None)
    else:
      cluster = next((c for c, rep in enumerate(reps) if same(rep, response)), None)
    if cluster is None:
      representatives.append(i)
      cluster = len(representatives) - 1
    ids.append(cluster)
  return ids


def n_eff(cluster_ids: Sequence[Any]) -> float:
  """exp(entropy) of the cluster shares of `cluster_ids` (any hashable ids); 0.0 when empty."""
  counts = collections.Counter(list(cluster_ids)).values()
  total = sum(counts)
  if total == 0:
    return 0.0
  entropy = -math.fsum(c / total * math.log(c / total) for c in counts)
  return math.exp(entropy)


def div_score(cluster_ids: Sequence[Any], *, denominator: str = "responses") -> float:
  """Div = (N_eff − 1) / (K − 1) in [0, 1]; K the number of responses (the default reading,
  see the module docstring) or, with denominator="clusters", the number of clusters. 0.0 for
  fewer than two responses or a single cluster."""
  if denominator not in DIV_DENOMINATORS:
    raise ValueError(f"div_score: unknown denominator {denominator!r}; use one of "
                     f"{DIV_DENOMINATORS}")
  ids = list(cluster_ids)
  n_clusters = len(set(ids))
  if len(ids) < 2 or n_clusters < 2:
    return 0.0
  k = len(ids) if denominator == "responses" else n_clusters
  return min(1.0, max(0.0, (n_eff(ids) - 1.0) / (k - 1)))


def _aligned(label: Any) -> bool:
  return isinstance(label, (int, float)) and not isinstance(label, bool) and label == 1.0


def faithful_diversity(responses: Sequence[Any], faithfulness_labels: Sequence[Any],
                       same: Comparator) -> float:
  """N_eff of the greedy clusters of the aligned responses (label 1.0) only; 0.0 when none is
  aligned. ValueError when the two lists differ in length."""
  responses, labels = list(responses), list(faithfulness_labels)
  if len(responses) != len(labels):
    raise ValueError(f"faithful_diversity: {len(labels)} labels for {len(responses)} responses")
  aligned = [r for r, lab in zip(responses, labels) if _aligned(lab)]
  return n_eff(greedy_clusters(aligned, same)) if aligned else 0.0


# ----------------------------------------------------------- programmatic same-strategy check

_UNARY_MINUS = re.compile(r"(?<![\w)\]])-(?=\d)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_TOKEN = re.compile(r"#|[^\W\d_]+|\S")
_NUMBER_LIST = re.compile(r"#(?: , #)+")


def _form(text: str) -> str:
  """A statement with numbers abstracted (module docstring): e.g. "3 * 5 = 15" -> "# * # = #"."""
  s = _NUMBER.sub("#", _UNARY_MINUS.sub("", text))
  tokens = []
  for tok in _TOKEN.findall(s):
    tok = tok.lower()
    if len(tok) >= 4 and tok.endswith("s") and not tok.endswith("ss") and tok.isalpha():
      tok = tok[:-1]
    tokens.append(tok)
  return _NUMBER_LIST.sub("#", " ".join(tokens)).rstrip(" .")


def _collapse(forms: Sequence[str]) -> tuple[str, ...]:
  out: list[str] = []
  for f in forms:
    if not out or out[-1] != f:
      out.append(f)
  return tuple(out)


def _unbox(text: str) -> str:
  """`text` with the content of every \\boxed{} replaced by "#"."""
  spans = answers_lib.boxed_spans(text)
  for begin, end in reversed(spans):
    text = text[:begin] + "#" + text[end:]
  return text


def strategy_signature(text: Any) -> tuple[str, ...]:
  """The strategy signature of a response (module docstring): ("steps", form, ...) from its
  `Step k:` lines, else ("text", form, ...) from its non-empty lines."""
  text = "" if text is None else str(text)
  steps = parse_steps(text)
  if steps:
    return ("steps",) + _collapse([_form(s) for _, s in steps])
  lines = [_form(line) for line in _unbox(text).splitlines() if line.strip()]
  return ("text",) + _collapse(lines)


def programmatic_same_strategy(a: Any, b: Any) -> bool:
  """Whether two synthetic-domain responses use the same strategy: equal strategy signatures."""
  return strategy_signature(a) == strategy_signature(b)


# ------------------------------------------------------------------------ other diversity views


def distinct_n(responses: Sequence[Any], n: int) -> float:
  """Distinct-n: unique n-grams / all n-grams, over the whitespace tokens of every response
  (n-grams never span two responses; tokens compared as written). 0.0 when there is no n-gram."""
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"distinct_n: n={n!r} must be an integer >= 1")
  grams: set = set()
  total = 0
  for r in responses:
    tokens = ("" if r is None else str(r)).split()
    for i in range(len(tokens) - n + 1):
      grams.add(tuple(tokens[i:i + n]))
      total += 1
  return len(grams) / total if total else 0.0


def unique_answers(responses: Sequence[Any]) -> int:
  """How many different final answers (last \\boxed{}) the responses give, equivalent answers
  ("0.5", "1/2") counted once (answers.answer_groups); responses without one are not counted."""
  boxed = [answers_lib.extract_boxed(None if r is None else str(r)) for r in responses]
  return len({g for g in answers_lib.answer_groups(boxed) if g is not None})


def pass_at_k_curve(correct: Sequence[Any], ks: Sequence[int] | None = None) -> dict[int, float]:
  """{k: unbiased pass@k} of one prompt's n samples (c correct), 1 − C(n−c, k) / C(n, k)
  (eval.metrics.pass_at_k), for k = 1..n, or for the entries of `ks` that are <= n."""
  flags = [bool(x) for x in correct]
  n, c = len(flags), sum(flags)
  ks = metrics_lib.check_ks(range(1, n + 1) if ks is None else ks, n)
  return {k: metrics_lib.pass_at_k(n, c, k) for k in ks}


# -------------------------------------------------------------------------------- the report


@dataclasses.dataclass(frozen=True)
class PromptDiversity:
  """The diversity of one prompt's responses.

  cluster_ids: greedy clusters; n_eff, div: as in the module docstring; n_aligned and
  faithful_n_eff: None without faithfulness labels; distinct: {"distinct-n": value};
  unique_answers: distinct final answers; pass_at_k: {k: pass@k}, None without correctness.
  """
  n_responses: int
  cluster_ids: tuple[int, ...]
  n_clusters: int
  n_eff: float
  div: float
  n_aligned: int | None
  faithful_n_eff: float | None
  distinct: Mapping[str, float]
  unique_answers: int
  pass_at_k: Mapping[int, float] | None

  def to_dict(self) -> dict:
    """JSON-able: tuples as lists, pass@k keys as "pass@k" strings."""
    out = dataclasses.asdict(self)
    out["cluster_ids"] = list(self.cluster_ids)
    out["distinct"] = dict(self.distinct)
    out["pass_at_k"] = (None if self.pass_at_k is None else
                        {f"pass@{k}": v for k, v in self.pass_at_k.items()})
    return out


def _mean(values: Sequence[float | None]) -> float | None:
  kept = [float(v) for v in values if v is not None]
  return math.fsum(kept) / len(kept) if kept else None


@dataclasses.dataclass(frozen=True)
class DiversityReport:
  """Per-prompt diversity and its mean over prompts. `mean()["div"]` is the paper's diversity
  score (mean Div over prompts); `values(name)` lists one field over prompts (e.g. for a
  bootstrap confidence interval)."""
  prompts: tuple[PromptDiversity, ...]

  def values(self, name: str) -> list:
    return [getattr(p, name) for p in self.prompts]

  def mean(self) -> dict[str, float | None]:
    """Means over prompts: n_clusters, n_eff, div, unique_answers, every distinct-n, and
    faithful_n_eff / pass@k over the prompts that have them (None when none has)."""
    out: dict[str, float | None] = {
        name: _mean(self.values(name))
        for name in ("n_clusters", "n_eff", "div", "n_aligned", "faithful_n_eff",
                     "unique_answers")}
    for key in dict.fromkeys(k for p in self.prompts for k in p.distinct):
      out[key] = _mean([p.distinct.get(key) for p in self.prompts])
    ks = sorted({k for p in self.prompts if p.pass_at_k for k in p.pass_at_k})
    for k in ks:
      out[f"pass@{k}"] = _mean([(p.pass_at_k or {}).get(k) for p in self.prompts])
    return out

  def to_dict(self) -> dict:
    """JSON-able: {"n_prompts", "mean", "per_prompt"}."""
    return {"n_prompts": len(self.prompts), "mean": self.mean(),
            "per_prompt": [p.to_dict() for p in self.prompts]}


def prompt_diversity(responses: Sequence[Any], same: Comparator, *,
                     faithfulness: Sequence[Any] | None = None,
                     correct: Sequence[Any] | None = None, ns: Sequence[int] = (1, 2),
                     ks: Sequence[int] | None = None) -> PromptDiversity:
  """The diversity of one prompt's responses. `same`: the comparator (an LLM judge from
  judges.same_strategy_fn, or programmatic_same_strategy); faithfulness: one label per response
  (1.0 / 0.5 / 0.0 / None) for faithful_n_eff; correct: one bool per response for pass@k (ks as
  in pass_at_k_curve); ns: the distinct-n orders."""
  responses = list(responses)
  for name, values in (("faithfulness", faithfulness), ("correct", correct)):
    if values is not None and len(values) != len(responses):
      raise ValueError(f"prompt_diversity: {len(values)} {name} values for {len(responses)} "
                       f"responses")
  ids = greedy_clusters(responses, same)
  aligned = None if faithfulness is None else sum(_aligned(x) for x in faithfulness)
  return PromptDiversity(
      n_responses=len(responses), cluster_ids=tuple(ids), n_clusters=len(set(ids)),
      n_eff=n_eff(ids), div=div_score(ids), n_aligned=aligned,
      faithful_n_eff=(None if faithfulness is None
                      else faithful_diversity(responses, faithfulness, same)),
      distinct={f"distinct-{n}": distinct_n(responses, n) for n in ns},
      unique_answers=unique_answers(responses),
      pass_at_k=None if correct is None or not responses else pass_at_k_curve(correct, ks))


def diversity_report(response_groups: Sequence[Sequence[Any]],
                     same: Comparator | Sequence[Comparator], *,
                     faithfulness: Sequence[Sequence[Any]] | None = None,
                     correct: Sequence[Sequence[Any]] | None = None, ns: Sequence[int] = (1, 2),
                     ks: Sequence[int] | None = None) -> DiversityReport:
  """A DiversityReport of several prompts: `response_groups[p]` holds prompt p's responses,
  `faithfulness[p]` / `correct[p]` their labels. `same` is one comparator for all prompts or one
  per prompt (e.g. judges.same_strategy_fn(backend, problem) for each problem)."""
  groups = [list(g) for g in response_groups]
  sames = [same] * len(groups) if callable(same) else list(same)
  for name, values in (("comparators", sames), ("faithfulness", faithfulness),
                       ("correct", correct)):
    if values is not None and len(values) != len(groups):
      raise ValueError(f"diversity_report: {len(values)} {name} for {len(groups)} prompts")
  return DiversityReport(tuple(
      prompt_diversity(g, sames[p], faithfulness=None if faithfulness is None else faithfulness[p],
                       correct=None if correct is None else correct[p], ns=ns, ks=ks)
      for p, g in enumerate(groups)))
