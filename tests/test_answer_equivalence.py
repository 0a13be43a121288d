r"""One answer matcher for rewards, eval and the data protocols (rlvr_jax.data.answers.equivalent).

The table's expectations are what a grader should say; where the function deliberately differs
from pure mathematics (or from raw math-verify), the row says so in its note, and
MATH_VERIFY_DISAGREES pins what raw math-verify says on those rows.
"""
import concurrent.futures
import time
from fractions import Fraction

import pytest

from rlvr_jax.data import answers as A
from rlvr_jax.data import protocols as data_protocols
from rlvr_jax.data.domains import DOMAINS
from rlvr_jax.eval import harness
from rlvr_jax.eval import metrics as M
from rlvr_jax.rl import noise, rewards

# (pred, label, equivalent?, note). A note marks a row where the verdict is a decision, not
# plain mathematics, or where raw math-verify is corrected.
TABLE = [
    # integers
    ("3", "3", True, ""),
    ("3.0", "3", True, ""),
    ("03", "3", True, ""),
    ("+3", "3", True, ""),
    ("-3", "-3", True, ""),
    ("-0", "0", True, ""),
    ("-3", "3", False, ""),
    ("3", "4", False, ""),
    ("123456789012345678", "123456789012345679", False, ""),
    # fractions
    ("1/2", r"\frac{1}{2}", True, ""),
    (r"\dfrac{1}{2}", r"\frac{1}{2}", True, ""),
    (r"\tfrac12", "1/2", True, ""),
    (r"\frac{2}{4}", "1/2", True, ""),
    ("6/2", "3", True, ""),
    (r"-\frac{3}{4}", "-0.75", True, ""),
    ("1/3", "1/4", False, ""),
    ("2/3", "3/2", False, ""),
    # decimals
    ("0.5", r"\frac{1}{2}", True, ""),
    (".5", "0.5", True, ""),
    ("0.50", "0.5", True, ""),
    ("-.5", "-1/2", True, ""),
    ("1.5", "3/2", True, ""),
    ("0.333", "1/3", False, ""),
    ("0.76", "3/4", False, ""),
    ("0.333333", "1/3", True,
     "math: 0.333333 != 1/3. Decision: keep math-verify's tolerance (decimals equal when they "
     "agree to 6 places), the usual way a rounded non-terminating answer is accepted"),
    # percent
    ("50%", "0.5", True, ""),
    (r"50\%", "50%", True, ""),
    (r"50\%", "50", True,
     "math: 50% = 0.5, not 50. Decision: keep math-verify (labels are often written without "
     r"the \%, so `50\%` must match a label `50`)"),
    (r"50\%", "5", False, ""),
    # units
    ("5 cm", "5", True, ""),
    (r"5\text{ cm}", "5", True, ""),
    (r"5\,\text{cm}", r"5\text{ cm}", True, ""),
    (r"5\mbox{ cm}", "5", True, ""),
    ("5 cm", "6", False, ""),
    ("5 cm", "5 m", True,
     "math: 5 cm != 5 m. Decision: keep math-verify, units are ignored (not compared)"),
    (r"5\text{ m}", r"500\text{ cm}", False,
     "math: 5 m = 500 cm. Decision: keep math-verify, units are ignored, not converted"),
    # thousands separators
    ("1,000", "1000", True, ""),
    ("1{,}000", "1000", True, ""),
    (r"10,\!000", "10000", True, ""),
    ("1,234,567", "1234567", True, ""),
    (r"\$1,000", "1000", True, ""),
    ("$1,000.00$", "1000", True, ""),
    (r"10\,000", "10000", True,
     r"raw math-verify: False (reads 10\,000 as 10*000); prenormalize joins the groups"),
    ("1 000", "1000", True, "raw math-verify: False (reads a product); prenormalize joins"),
    ("12", "1,2", False, ""),
    # intervals
    ("(1,2]", "(1, 2]", True, ""),
    (r"\left( 1, 2 \right]", "(1,2]", True, ""),
    (r"(-\infty,3)", r"(-\infty, 3)", True, ""),
    ("[1,2]", "(1,2)", False, ""),
    ("[1,2)", "[1,2]", False, ""),
    (r"(-\infty,3]", r"(-\infty,3)", False, ""),
    # sets and tuples
    (r"\{1,2\}", r"\{2,1\}", True, ""),
    (r"\{1,2,3\}", r"\{3,2,1\}", True, ""),
    (r"\{ 1,2 \}", r"\{1,2\}", True, ""),
    ("(1,2,3)", "(1, 2, 3)", True, ""),
    (r"\{1,2\}", r"\{1,3\}", False, ""),
    ("(1,2,3)", "(3,2,1)", False, ""),
    (r"\{1,2\}", "[1,2]", False, ""),
    (r"\{1,2\}", "(1,2)", False,
     "raw math-verify: True (an open interval (a,b) may be a pair, compared with the set's "
     "sorted elements); a set is never a tuple or interval: the set-versus-tuple rule"),
    ("(1,2)", r"\{1,2\}", False, "as above, the other way round"),
    ("(2,1)", r"\{1,2\}", False, "raw math-verify: True (a set gold takes a tuple in any order)"),
    # spacing and \left \right
    (" 3 ", "3", True, ""),
    (r"\left(1,2\right)", "(1, 2)", True, ""),
    ("x - 1", "x-1", True, ""),
    (r"\frac {1}{2}", r"\frac{1}{2}", True, ""),
    # square roots
    (r"2\sqrt{2}", r"\sqrt{8}", True, ""),
    (r"\sqrt 2", r"\sqrt{2}", True, ""),
    (r"\sqrt{2}/2", r"\frac{\sqrt2}{2}", True, ""),
    (r"\sqrt{3}/3", r"\frac{1}{\sqrt{3}}", True, ""),
    (r"\sqrt{2}", "1.414", False, ""),
    (r"\sqrt{2}", r"\sqrt{3}", False, ""),
    # pi
    (r"2\pi", r"\pi \cdot 2", True, ""),
    (r"\frac{\pi}{2}", r"\pi/2", True, ""),
    (r"\pi r^2", r"r^2\pi", True, ""),
    (r"\pi", "3.14", False, ""),
    (r"\pi", "3.14159", False, ""),
    # expressions and equations
    ("2x+1", "1+2x", True, ""),
    ("x^2-1", "(x-1)(x+1)", True, ""),
    (r"\frac{x+1}{2}", r"\frac{1}{2}x+\frac{1}{2}", True, ""),
    ("2x+1", "2x-1", False, ""),
    ("x=5", "5", True, ""),
    ("5", "x=5", True, ""),
    ("y=2x+1", "2x+1", True, ""),
    ("2^{10}", "1024", True, ""),
    ("5!", "120", True, ""),
    (r"e^{i\pi}", "-1", False,
     "math: e^{i pi} = -1. Decision: keep math-verify, which reads i as a plain symbol here"),
    ("2^{2^{2^{2}}}", "65536", False,
     "math (and raw math-verify): True. Decision: power towers are never handed to sympy, which "
     "can run forever on them and has no timeout off the main thread"),
    # other notation
    ("7.", "7", True, "raw math-verify: False (cannot parse `7.`); prenormalize drops the period"),
    (r"10^\circ", "10", True, ""),
    (r"\text{(B)}", "B", True, ""),
    ("A", "B", False, ""),
    (r"\infty", r"\infty", True, ""),
    (r"-\infty", r"\infty", False, ""),
    # no answer
    (None, "3", False, ""),
    ("3", None, False, ""),
    (None, None, False, ""),
    ("", "", False, ""),
    ("", "3", False, ""),
    ("  ", "3", False, ""),
    (r"\text{}", r"\text{}", False, "an empty \\text{} is no answer"),
]

# Rows where raw math-verify (no prenormalisation, no rules) says the opposite of TABLE.
MATH_VERIFY_DISAGREES = [
    (r"10\,000", "10000"), ("1 000", "1000"), ("7.", "7"), (r"\{1,2\}", "(1,2)"),
    ("(1,2)", r"\{1,2\}"), ("(2,1)", r"\{1,2\}"), ("2^{2^{2^{2}}}", "65536"),
]

IDS = [f"{p!r}~{q!r}" for p, q, _, _ in TABLE]


def raw_math_verify(pred: str, label: str) -> bool:
  """math-verify alone, label as gold, as its README uses it (main thread, with timeouts)."""
  from math_verify import parse, verify
  return bool(verify(parse("\\boxed{" + label + "}"), parse("\\boxed{" + pred + "}")))


def boxed(pred):
  return "no final answer" if pred is None else "So the answer is \\boxed{" + pred + "}."


def test_table_is_large_and_covers_both_verdicts():
  assert len(TABLE) >= 50
  assert sum(t for _, _, t, _ in TABLE) >= 20 and sum(not t for _, _, t, _ in TABLE) >= 20
  assert len({(p, q) for p, q, _, _ in TABLE}) == len(TABLE)


@pytest.mark.parametrize("pred, label, expected, note", TABLE, ids=IDS)
def test_equivalence_table(pred, label, expected, note):
  assert A.equivalent(pred, label) is expected, note
  assert A.answers_match(pred, label) is expected


@pytest.mark.parametrize("pred, label, expected, note", TABLE, ids=IDS)
def test_every_matcher_agrees(pred, label, expected, note):
  """Eval (harness verifier, maj@k), the RL rewards, the data protocols, the noisy-label helper
  and the domains all reach the same verdict: they call the same function."""
  text = boxed(pred)
  assert A.extract_boxed(text) == pred
  verdicts = {
      "eval.default_verifier": harness.default_verifier({"answer": label}, text),
      "eval.maj_at_k": M.maj_at_k([pred], label) == 1.0,
      "rl.math_verify_match": rewards.math_verify_match(text, label),
      "rl.boxed_answers_match": rewards.boxed_answers_match(text, label),
      "rl.default_verifier": rewards.default_verifier()(text, label),
      "noise.most_frequent_wrong_answer":
          A.has_answer(pred) and noise.most_frequent_wrong_answer([pred], label) is None,
      "domains.verify_answer": DOMAINS["arith"].verify_answer(label, text) if label is not None
                               else False,
  }
  record = {"id": "p", "answer": label, "true_answer": label, "meta": {}}
  _, report = data_protocols.replace_labels([record], {"p": pred}, gamma=1.0, seed=0)
  verdicts["data.replace_labels"] = report["wrong_equals_true"] == 1
  if label is not None:
    reward = rewards.host_verifier_reward([text], [label])
    verdicts["rl.host_verifier_reward"] = bool(reward[0] == 1.0)
  assert verdicts == {name: expected for name in verdicts}, note


@pytest.mark.parametrize("pred, label, expected, note", TABLE, ids=IDS)
def test_fast_path_agrees_with_math_verify(pred, label, expected, note):
  """Whenever the fast path decides, math-verify (on the same prenormalised strings) agrees."""
  if not (A.has_answer(pred) and A.has_answer(label)):
    return
  p, q = A.prenormalize(pred), A.prenormalize(label)
  decided = A.fast_decision(p, q)
  if decided is not None:
    assert decided is raw_math_verify(p, q), (p, q)


def _numbers() -> list[str]:
  """Many spellings of a few rationals (and some near misses) for the fast-path sweep."""
  out = []
  for num, den in [(0, 1), (3, 1), (-3, 1), (1, 2), (-3, 4), (2, 4), (1000, 1), (1234567, 1),
                   (5, 3), (1, 3)]:
    x = Fraction(num, den)
    sign = "-" if x < 0 else ""
    a, b = abs(num), den
    out += [f"{num}/{den}", f"{sign}\\frac{{{a}}}{{{b}}}", f"{sign}\\dfrac{{{a}}}{{{b}}}"]
    if x.denominator == 1:
      out += [str(x.numerator), f"+{x.numerator}" if x >= 0 else f"{x.numerator}",
              f"{x.numerator:,}", f"{x.numerator}.0"]
    elif 10 ** 6 % x.denominator == 0:
      out += [f"{float(x)}", f"{float(x)}0", f"{sign}.{str(float(abs(x))).split('.')[1]}"]
    else:
      out += [f"{float(x):.3f}", f"{float(x):.6f}"]
  return sorted(set(out))


def test_fast_path_agrees_with_math_verify_on_number_spellings():
  numbers = _numbers()
  decided = 0
  for p in numbers:
    for q in numbers:
      d = A.fast_decision(A.prenormalize(p), A.prenormalize(q))
      if d is not None:
        decided += 1
        assert d is raw_math_verify(p, q), (p, q)
  assert decided > len(numbers) ** 2 // 2  # the sweep really exercises the fast path


@pytest.mark.parametrize("pred, label", MATH_VERIFY_DISAGREES)
def test_documented_math_verify_disagreements_are_real(pred, label):
  """The rows whose note says raw math-verify differs: it does (else the note is stale)."""
  expected = next(t for p, q, t, _ in TABLE if (p, q) == (pred, label))
  assert raw_math_verify(pred, label) is not expected
  assert A.equivalent(pred, label) is expected


def test_results_are_cached():
  A.math_verify_equivalent.cache_clear()
  assert A.equivalent("x^2+2x+1", "(x+1)^2")
  misses = A.math_verify_equivalent.cache_info().misses
  assert A.equivalent("x^2+2x+1", "(x+1)^2")
  info = A.math_verify_equivalent.cache_info()
  assert info.misses == misses and info.hits >= 1


def test_works_from_threads_and_on_garbage():
  pairs = [(p, q) for p, q, _, _ in TABLE]
  A.math_verify_equivalent.cache_clear()
  A._parsed.cache_clear()
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    in_threads = list(pool.map(lambda pq: A.equivalent(*pq), pairs))
  assert in_threads == [t for _, _, t, _ in TABLE]
  garbage = ["\\frac{1}{", "}{", "\\left(", "^^^", "\\begin{matrix}", "a" * 1000,
             "10^{10^{10^{10}}}", "(10^{10})!", "10^{1234567}", "\\sqrt{", "$$$"]
  start = time.monotonic()
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    got = list(pool.map(lambda g: A.equivalent(g, "1"), garbage))
  assert got == [False] * len(garbage)
  assert time.monotonic() - start < 30  # the runaway inputs never reach sympy off the main thread
  assert [A.equivalent(g, "1") for g in garbage] == [False] * len(garbage)  # main thread too


# ---------------------------------------------------------------------------------- grouping
def test_answer_groups_by_equivalence():
  answers = ["3", "0.5", None, r"\frac{1}{2}", "3.0", "", r"2\sqrt{2}", r"\sqrt{8}", "1/2"]
  assert A.answer_groups(answers) == [0, 1, None, 1, 0, None, 6, 6, 1]
  assert A.majority_group(answers) == 1
  assert A.majority_group(["4", "3", "3", "4"]) == 0   # tie: the group seen first
  assert A.majority_group([None, "", "  "]) is None


def test_maj_at_k_groups_equivalent_answers():
  votes = ["3", "0.5", "3", r"\frac{1}{2}", "1/2"]
  assert M.majority_vote(votes) == ("0.5", 1)
  assert M.maj_at_k(votes, r"\frac{1}{2}") == 1.0 and M.maj_at_k(votes, "3") == 0.0
  # only equivalence (no shared normalised string) makes the sqrt forms one answer: 3 votes to 2
  votes = [r"\sqrt{8}", "3", r"2\sqrt{2}", "3", r"2\sqrt2"]
  assert M.majority_vote(votes) == (r"\sqrt{8}", 0)
  assert M.maj_at_k(votes, r"2\sqrt{2}") == 1.0
  assert M.maj_at_k(votes, "3") == 0.0
  assert M.maj_at_k(votes, "3", k=4) == 0.0    # 2 against 2: the sqrt group came first


# ------------------------------------------------------------------------- label replacement
TRUTH_WRITTEN_OTHERWISE = {
    "p0": ("1/2", "0.5"), "p1": ("3", "3.0"), "p2": ("(1,2]", "(1, 2]"), "p3": ("2x+1", "1+2x"),
    "p4": ("1000", r"10^3"), "p5": ("7", "7."), "p6": (r"2\sqrt{2}", r"\sqrt{8}"),
    "p7": ("10000", r"10\,000"), "p8": (r"\{1,2\}", r"\{2,1\}"), "p9": ("50", r"50\%"),
}


def test_label_replacement_never_uses_an_equivalent_answer():
  records = [{"id": i, "answer": t, "true_answer": t, "meta": {}}
             for i, (t, _) in TRUTH_WRITTEN_OTHERWISE.items()]
  table = {i: w for i, (_, w) in TRUTH_WRITTEN_OTHERWISE.items()}
  new, report = data_protocols.replace_labels(records, table, gamma=1.0, seed=0)
  assert report["replaced"] == 0 and report["wrong_equals_true"] == len(records)
  assert [r["answer"] for r in new] == [r["answer"] for r in records]
  # really wrong answers are used
  wrong = {i: "9" for i in table}
  new, report = data_protocols.replace_labels(records, wrong, gamma=1.0, seed=0)
  assert report["replaced"] == len(records) and all(r["answer"] == "9" for r in new)


def test_most_frequent_wrong_answer_skips_the_truth_written_otherwise():
  answers = ["4"] + ["0.5"] * 5 + [r"\frac{1}{2}"] * 3 + ["3", r"\sqrt{9}"]
  assert noise.most_frequent_wrong_answer(answers, "1/2") == "3"   # 3 and \sqrt{9}: 2 votes
  assert noise.most_frequent_wrong_answer(["0.5", r"\dfrac12", "1/2"], r"\frac{1}{2}") is None
  for truth, written in TRUTH_WRITTEN_OTHERWISE.values():
    assert noise.most_frequent_wrong_answer([written] * 9 + ["8"], truth) == "8"


def test_rl_wrong_answer_table_skips_the_truth_written_otherwise(monkeypatch):
  """rl.protocols.wrong_answer_table (sampler replaced by canned extracted answers)."""
  from rlvr_jax.rl import protocols as rl_protocols
  records = [{"id": i, "answer": t, "true_answer": t}
             for i, (t, _) in TRUTH_WRITTEN_OTHERWISE.items()]

  def canned(cfg, params, tok, recs, **_):
    rows = []
    for r in recs:
      written = TRUTH_WRITTEN_OTHERWISE[r["id"]][1]
      rows += [{"prompt_id": r["id"], "extracted": written}] * 5
      rows += [{"prompt_id": r["id"], "extracted": "-1"}] * (r["id"] != "p0")
    return rows

  monkeypatch.setattr(rl_protocols, "_sample_rows", canned)
  table = rl_protocols.wrong_answer_table(None, None, None, records)
  assert table == {i: "-1" for i in TRUTH_WRITTEN_OTHERWISE if i != "p0"}
