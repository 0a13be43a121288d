"""Diversity diagnostics: N_eff and Div against hand computations, greedy-clustering order
semantics, the programmatic same-strategy comparator on the synthetic domains' traces,
distinct-n, unique answers, pass@k curves and the JSON-able report."""
import json
import math
import random
import re

import pytest

from rlvr_jax.data.domains import get_domain
from rlvr_jax.diagnostics import diversity as D
from rlvr_jax.diagnostics import judges as J

# ---------------------------------------------------------------------------- N_eff and Div


def test_n_eff_and_div_by_hand():
  ids = [0] * 8 + [1] * 4 + [2] * 4                 # shares 1/2, 1/4, 1/4 of K = 16
  entropy = 0.5 * math.log(2) + 2 * 0.25 * math.log(4)   # = 1.5 ln 2
  assert D.n_eff(ids) == pytest.approx(2 ** 1.5)
  assert D.n_eff(ids) == pytest.approx(math.exp(entropy))
  assert D.div_score(ids) == pytest.approx((2 ** 1.5 - 1) / 15)
  assert D.div_score(ids, denominator="clusters") == pytest.approx((2 ** 1.5 - 1) / 2)
  halves = ["a"] * 8 + ["b"] * 8                    # any hashable ids
  assert D.n_eff(halves) == pytest.approx(2.0)
  assert D.div_score(halves) == pytest.approx(1 / 15)
  assert D.div_score(halves, denominator="clusters") == pytest.approx(1.0)
  skewed = [0] * 15 + [1]
  h = -(15 / 16 * math.log(15 / 16) + 1 / 16 * math.log(1 / 16))
  assert D.n_eff(skewed) == pytest.approx(math.exp(h))
  assert D.div_score(skewed) == pytest.approx((math.exp(h) - 1) / 15)


def test_div_extremes_and_degenerate_inputs():
  assert D.n_eff(list(range(16))) == pytest.approx(16.0)
  assert D.div_score(list(range(16))) == pytest.approx(1.0)
  assert D.n_eff([3] * 16) == pytest.approx(1.0) and D.div_score([3] * 16) == 0.0
  assert D.n_eff([]) == 0.0 and D.div_score([]) == 0.0
  assert D.n_eff([7]) == pytest.approx(1.0) and D.div_score([7]) == 0.0
  assert D.div_score([0, 1]) == pytest.approx(1.0)
  with pytest.raises(ValueError):
    D.div_score([0, 1], denominator="prompts")
  rng = random.Random(0)
  for _ in range(50):
    ids = [rng.randrange(rng.randint(1, 16)) for _ in range(rng.randint(1, 16))]
    for denominator in D.DIV_DENOMINATORS:
      assert 0.0 <= D.div_score(ids, denominator=denominator) <= 1.0


# ---------------------------------------------------------------------------- greedy clusters


class Recorder:
  """A comparator that logs its calls."""

  def __init__(self, fn):
    self.fn, self.calls = fn, []

  def __call__(self, a, b):
    self.calls.append((a, b))
    return self.fn(a, b)


def test_greedy_clusters_compare_with_one_representative_per_cluster_in_order():
  # not transitive: 2 is near 1 (a member) but not near 0 (the representative)
  near = Recorder(lambda a, b: abs(a - b) <= 1)
  assert D.greedy_clusters([0, 1, 2, 3], near) == [0, 0, 1, 1]
  assert near.calls == [(0, 1), (0, 2), (0, 3), (2, 3)]
  # the first matching cluster wins, and the search stops there
  wide = Recorder(lambda a, b: abs(a - b) <= 3)
  assert D.greedy_clusters([0, 5, 3, 9], wide) == [0, 1, 0, 2]
  assert wide.calls == [(0, 5), (0, 3), (0, 9), (5, 9)]
  # the result depends on the order of the responses, deterministically
  assert D.greedy_clusters([2, 1, 0, 3], near) == [0, 0, 1, 0]
  assert D.greedy_clusters([], near) == []


def test_greedy_clusters_by_first_letter():
  first = lambda a, b: a[0] == b[0]   # noqa: E731
  assert D.greedy_clusters(["a1", "b1", "a2", "c1", "b2", "a3"], first) == [0, 1, 0, 2, 1, 0]


def test_greedy_clusters_with_an_llm_judge_batches_the_representatives():
  calls = []

  class Backend:
    """Says SAME when the two responses start with the same letter; 'z' gets gibberish."""

    def complete(self, prompts):
      calls.append(len(prompts))
      out = []
      for p in prompts:
        a = re.search(r"<response_a>\n(.*?)\n</response_a>", p, re.S).group(1)
        b = re.search(r"<response_b>\n(.*?)\n</response_b>", p, re.S).group(1)
        out.append("hmm" if "z" in (a[0], b[0]) else
                   f"Verdict: {'SAME' if a[0] == b[0] else 'DIFFERENT'}")
      return out

  responses = ["a1", "b1", "a2", "c1", "z1", "z2", "b2"]
  same = J.same_strategy_fn(Backend())
  ids = D.greedy_clusters(responses, same)
  # z2 never matches z1: the unparsed verdict counts as DIFFERENT
  assert ids == [0, 1, 0, 2, 3, 4, 1]
  first = lambda a, b: a[0] == b[0] and a[0] != "z"   # noqa: E731
  assert ids == D.greedy_clusters(responses, first)
  # one backend call per newcomer, asking about every representative at once
  assert calls == [1, 2, 2, 3, 4, 5]
  # parsed: b1 (1), a2 (2), c1 (2), b2 vs a, b, c (3); every pair with a z is unparsed
  assert same.count_dict() == {"parsed": 8, "unparsed": 9, "failed": 0}


def test_faithful_diversity_clusters_only_the_aligned_responses():
  first = lambda a, b: a[0] == b[0]   # noqa: E731
  responses = ["a1", "a2", "b1", "c1", "c2", "d1", "b2"]
  labels = [1.0, 1.0, 1.0, 0.5, 0.0, None, 1]
  # aligned: a1, a2, b1, b2 -> shares 1/2, 1/2
  assert D.faithful_diversity(responses, labels, first) == pytest.approx(2.0)
  assert D.faithful_diversity(responses, [0.5] * 7, first) == 0.0
  assert D.faithful_diversity(responses, [True] * 7, first) == 0.0   # a bool is not a label
  with pytest.raises(ValueError):
    D.faithful_diversity(responses, labels[:-1], first)


# ---------------------------------------------------------------- programmatic same strategy


def other_numbers(text, shift=7):
  """The same text with every number in the step lines changed."""
  head, _, tail = text.rpartition("\nSo the answer")
  head = re.sub(r"\d+", lambda m: str(int(m.group()) + shift), head)
  return head + "\nSo the answer" + tail


@pytest.mark.parametrize("domain", ["arith", "units", "graph"])
def test_same_trace_with_other_numbers_is_the_same_strategy(domain):
  dom = get_domain(domain)
  for ex in dom.generate("train", 6, seed=1):
    changed = other_numbers(ex.thinking)
    assert changed != ex.thinking
    assert D.programmatic_same_strategy(ex.thinking, changed)
    # a wrong step or a wrong final answer keeps the strategy
    for kind in ("corrupted_step", "unsupported_answer"):
      if kind == "corrupted_step" and len(ex.steps) < 2:
        continue
      text, _ = dom.corrupt(ex, kind, rng=0)
      assert D.programmatic_same_strategy(ex.thinking, text), (kind, text)


def test_foreign_steps_of_another_template_are_a_different_strategy():
  # arith: a story problem (multiply, then subtract) with the steps of an inverse problem
  dom = get_domain("arith")
  ex = dom.generate("train", 1, seed=0)[0]
  text, info = dom.corrupt(ex, "foreign_steps", rng=0)
  assert "thinks of a number" in info["foreign_problem"] and "thinks" not in ex.problem
  assert not D.programmatic_same_strategy(ex.thinking, text)
  # units (the asked quantity differs) and graph (island vs lock): every such pair differs
  checked = 0
  for name, template in (("units", lambda p: re.search(r"What is its (\w+) in (\S+)\?", p)
                          .groups()),
                         ("graph", lambda p: "island" in p)):
    dom = get_domain(name)
    for ex in dom.generate("train", 12, seed=2):
      for seed in range(3):
        text, info = dom.corrupt(ex, "foreign_steps", rng=seed)
        if template(ex.problem) != template(info["foreign_problem"]):
          assert not D.programmatic_same_strategy(ex.thinking, text), (ex.problem, text)
          checked += 1
  assert checked >= 10


def test_signature_details():
  sig = D.strategy_signature
  assert sig("Step 1: 2*4=8\nStep 2: 8 - 2 = 6\nSo the answer is \\boxed{6}.") == \
      sig("  Step 1:  3 * 5 = 15\nStep 2: 15 - 11 = 4\nthus \\boxed{4}") == \
      ("steps", "# * # = #", "# - # = #")
  assert sig("Step 1: 2 * 4 = 8") != sig("Step 1: 2 + 4 = 6")
  assert sig("Step 1: 2 * 4 = 8\nStep 2: 8 - 2 = 6") != sig("Step 1: 8 - 2 = 6\nStep 2: 6 * 4 = 24")
  # one island or three: the same procedure; "cell" / "cells" and coordinates abstracted
  one = "Step 1: island at (1,1) has 9 cells\nStep 2: largest = max(9) = 9"
  three = ("Step 1: island at (1,2) has 1 cell\nStep 2: island at (1, 4) has 1 cell\n"
           "Step 3: island at (3,1) has 5 cells\nStep 4: largest = max(1, 1, 5) = 5")
  assert sig(one) == sig(three)
  # a unary minus is part of the number, a binary minus is an operation
  assert sig("Step 1: press A: 0 - 1 = -1, light green") == \
      sig("Step 1: press A: 5 - 1 = 4, light green")
  assert sig("Step 1: press A: 0 - 1 = -1, light green") != \
      sig("Step 1: press B: 0 - 1 = -1, light green")
  # no step lines: the text shape, with the boxed answer abstracted
  assert D.programmatic_same_strategy("The answer is \\boxed{6}.", "The answer is \\boxed{7}.")
  assert not D.programmatic_same_strategy("The answer is \\boxed{6}.", "I guess \\boxed{6}.")
  assert not D.programmatic_same_strategy("The answer is \\boxed{6}.",
                                          "Step 1: 2 * 3 = 6\nThe answer is \\boxed{6}.")
  assert D.programmatic_same_strategy("", None) and sig("") == ("text",)


def test_programmatic_clusters_of_a_mixed_group():
  dom = get_domain("arith")
  ex = dom.generate("train", 1, seed=0)[0]
  foreign, _ = dom.corrupt(ex, "foreign_steps", rng=0)
  group = [ex.thinking, other_numbers(ex.thinking), foreign, "The answer is \\boxed{6}.",
           other_numbers(foreign, 3), "The answer is \\boxed{5}."]
  assert D.greedy_clusters(group, D.programmatic_same_strategy) == [0, 0, 1, 2, 1, 2]


# ---------------------------------------------------------------------- other diversity views


def test_distinct_n_by_hand():
  responses = ["a b a b", "a b c"]
  assert D.distinct_n(responses, 1) == pytest.approx(3 / 7)   # a b a b a b c
  assert D.distinct_n(responses, 2) == pytest.approx(3 / 5)   # ab ba ab | ab bc
  assert D.distinct_n(responses, 3) == pytest.approx(3 / 3)   # aba bab | abc
  assert D.distinct_n(responses, 5) == 0.0
  assert D.distinct_n(["x  y\n x", None, ""], 1) == pytest.approx(2 / 3)
  assert D.distinct_n(["same text"] * 4, 2) == pytest.approx(1 / 4)
  for bad in (0, -1, 1.5, True):
    with pytest.raises(ValueError):
      D.distinct_n(responses, bad)


def test_unique_answers_groups_equivalent_answers():
  responses = ["so \\boxed{1/2}", "\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{2}",
               "no answer here", None, "\\boxed{}", "first \\boxed{7} then \\boxed{2}"]
  assert D.unique_answers(responses) == 2          # {1/2, 0.5, \frac12} and {2}
  assert D.unique_answers(["\\boxed{3}", "\\boxed{4}", "\\boxed{5}"]) == 3
  assert D.unique_answers([]) == 0 and D.unique_answers(["nothing"]) == 0


def test_pass_at_k_curve_by_hand():
  curve = D.pass_at_k_curve([True, False, False, True])           # n = 4, c = 2
  assert curve == pytest.approx({1: 2 / 4, 2: 1 - 1 / 6, 3: 1.0, 4: 1.0})
  assert list(curve) == [1, 2, 3, 4]
  # n = 5, c = 1: pass@k = k / 5
  assert D.pass_at_k_curve([0, 0, 1, 0, 0]) == pytest.approx({k: k / 5 for k in range(1, 6)})
  assert D.pass_at_k_curve([False] * 3) == {1: 0.0, 2: 0.0, 3: 0.0}
  assert D.pass_at_k_curve([True, False, False, True], ks=(8, 2, 1)) == \
      pytest.approx({1: 0.5, 2: 5 / 6})
  with pytest.raises(ValueError):
    D.pass_at_k_curve([])


# ------------------------------------------------------------------------------ the report


def test_diversity_report_per_prompt_and_mean():
  first = lambda a, b: a[0] == b[0]   # noqa: E731
  groups = [["a \\boxed{1}", "a \\boxed{1}", "b \\boxed{2}", "c \\boxed{2}"],
            ["x \\boxed{5}"] * 4]
  report = D.diversity_report(groups, first, faithfulness=[[1.0, 1.0, 1.0, 0.0], [None] * 4],
                              correct=[[True, False, False, False], [True] * 4], ns=(1,))
  p0, p1 = report.prompts
  assert p0.cluster_ids == (0, 0, 1, 2) and p0.n_clusters == 3
  n_eff0 = math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
  assert p0.n_eff == pytest.approx(n_eff0) and p0.div == pytest.approx((n_eff0 - 1) / 3)
  assert p0.n_aligned == 3 and p0.faithful_n_eff == pytest.approx(
      math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))))
  assert p0.unique_answers == 2 and p0.distinct == {"distinct-1": pytest.approx(5 / 8)}
  assert p0.pass_at_k == pytest.approx({1: 0.25, 2: 0.5, 3: 0.75, 4: 1.0})
  assert p1.n_clusters == 1 and p1.div == 0.0 and p1.faithful_n_eff == 0.0
  assert p1.n_aligned == 0 and p1.pass_at_k == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
  mean = report.mean()
  assert mean["div"] == pytest.approx(((n_eff0 - 1) / 3) / 2)
  assert mean["n_clusters"] == 2.0 and mean["unique_answers"] == 1.5
  assert mean["pass@1"] == pytest.approx(0.625) and mean["pass@4"] == 1.0
  assert report.values("div") == [p0.div, 0.0]
  d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
  assert d["n_prompts"] == 2 and d["per_prompt"][0]["cluster_ids"] == [0, 0, 1, 2]
  assert d["per_prompt"][0]["pass_at_k"]["pass@2"] == pytest.approx(0.5)
  assert d["mean"]["div"] == pytest.approx(mean["div"])


def test_diversity_report_options_and_errors():
  first = lambda a, b: a[0] == b[0]   # noqa: E731
  never = lambda a, b: False          # noqa: E731
  report = D.diversity_report([["a", "a"], ["a", "a"]], [first, never])
  assert [p.n_clusters for p in report.prompts] == [1, 2]
  assert report.prompts[0].faithful_n_eff is None and report.prompts[0].pass_at_k is None
  assert report.mean()["faithful_n_eff"] is None and "pass@1" not in report.mean()
  with pytest.raises(ValueError):
    D.diversity_report([["a"], ["b"]], [first])
  with pytest.raises(ValueError):
    D.prompt_diversity(["a", "b"], first, correct=[True])
