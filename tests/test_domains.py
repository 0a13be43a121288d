"""Synthetic reasoning domains: determinism, split disjointness, answers checked by independent
solvers, the step verifier on faithful, hand-written and corrupted traces, the corpus."""
import hashlib
import itertools
import random
import re
from fractions import Fraction

import pytest

from rlvr_jax.data.domains import DOMAINS, Example, all_corpus_text, get_domain

NAMES = ("arith", "units", "graph", "chain")
LABELS = {"corrupted_step": 0.5, "unsupported_answer": 0.0, "foreign_steps": 0.0}


def sha(text):
  return hashlib.sha256(text.encode()).hexdigest()


def question(ex):
  return ex.meta["question"]


# ------------------------------------------------------------------ independent answer solvers


def solve_arith(q):
  m = re.fullmatch(r"\w+ thinks of a number, (.*)\. The result is (\d+)\. What is the number\?", q)
  if m:
    ops = re.findall(r"(multiplies it by|adds|subtracts|divides it by) (\d+)", m.group(1))
    result = int(m.group(2))

    def forward(x):
      for op, k in ops:
        k = int(k)
        if op == "divides it by":
          if x % k:
            return None  # the number must stay whole
          x //= k
        else:
          x = x * k if op == "multiplies it by" else x + k if op == "adds" else x - k
      return x

    hits = [x for x in range(0, 1000) if forward(x) == result]
    assert len(hits) == 1, q
    return hits[0]
  total = None
  for sentence in re.split(r"(?<=[.?]) ", q):
    if m := re.search(r"buys (\d+) more \w+ with (\d+) \w+ in each", sentence):
      total += int(m.group(1)) * int(m.group(2))
    elif m := re.search(r"has (\d+) \w+ with (\d+) \w+ in each", sentence):
      total = int(m.group(1)) * int(m.group(2))
    elif m := re.search(r"(?:buys|finds) (\d+) more", sentence):
      total += int(m.group(1))
    elif m := re.search(r"gives \w+ (\d+) more", sentence):
      total += int(m.group(1))
    elif m := re.search(r"(?:gives|loses|sells) (\d+)", sentence):
      total -= int(m.group(1))
    elif m := re.search(r"among (\d+) friends", sentence):
      assert total % int(m.group(1)) == 0
      total //= int(m.group(1))
  return total


SI = {"m": 1, "km": 1000, "cm": Fraction(1, 100), "s": 1, "min": 60, "h": 3600, "g": 1, "kg": 1000,
      "mL": 1, "L": 1000, "m/s": 1, "cm/s": Fraction(1, 100), "g/mL": 1, "V": 1, "kV": 1000,
      "mV": Fraction(1, 1000), "A": 1, "mA": Fraction(1, 1000), "ohm": 1, "kohm": 1000, "W": 1,
      "kW": 1000, "mW": Fraction(1, 1000), "J": 1, "kJ": 1000, "mJ": Fraction(1, 1000), "C": 1,
      "mC": Fraction(1, 1000), "N": 1, "kN": 1000}
LAWS = [("distance", "speed", "time"), ("mass", "density", "volume"),
        ("voltage", "current", "resistance"), ("power", "voltage", "current"),
        ("energy", "power", "time"), ("charge", "current", "time"), ("work", "force", "distance"),
        ("work", "power", "time")]


def solve_units(q):
  known = {name: Fraction(v) * SI[u]
           for name, v, u in re.findall(r"an? (\w+) of (\d+(?:\.\d+)?) ([A-Za-z/]+)", q)}
  if m := re.search(r"for (\d+) (\w+)\.", q):
    known["time"] = Fraction(m.group(1)) * SI[m.group(2)]
  target, unit = re.search(r"What is its (\w+) in ([A-Za-z/]+)\?", q).groups()
  while target not in known:
    before = len(known)
    for z, x, y in LAWS:
      if x in known and y in known and z not in known:
        known[z] = known[x] * known[y]
      elif z in known and x in known and y not in known:
        known[y] = known[z] / known[x]
      elif z in known and y in known and x not in known:
        known[x] = known[z] / known[y]
    assert len(known) > before, q
  return known[target] / SI[unit]


def island_sizes(grid):
  """Union-find over land cells (not the generator's flood fill)."""
  rows, cols = len(grid), len(grid[0])
  parent = {(r, c): (r, c) for r in range(rows) for c in range(cols) if grid[r][c]}

  def find(a):
    while parent[a] != a:
      a = parent[a]
    return a

  for (r, c) in list(parent):
    for nb in ((r + 1, c), (r, c + 1)):
      if nb in parent:
        parent[find(nb)] = find((r, c))
  sizes = {}
  for cell in parent:
    sizes[find(cell)] = sizes.get(find(cell), 0) + 1
  return sorted(sizes.values())


def lock_fewest(buttons, target, limit=8):
  """Fewest presses by trying every button sequence of length 1, 2, ... (brute force)."""
  for n in range(1, limit + 1):
    for seq in itertools.product(range(len(buttons)), repeat=n):
      x, light, ok = 0, "red", True
      for i in seq:
        op, arg, cond = buttons[i]
        if cond not in ("any", light):
          ok = False
          break
        x = x + arg if op == "+" else x - arg if op == "-" else x * arg
        light = "green" if light == "red" else "red"
      if ok and x == target:
        return n
  return None


def solve_chain(text: str) -> Fraction:
  """Reads the start count and each change off the sentences (gets/finds/buys more: add;
  gives away/loses/sells: subtract)."""
  value = None
  for sentence in text.split(". "):
    numbers = [int(t) for t in re.findall(r"\d+", sentence)]
    if not numbers:
      continue
    if value is None and " has " in sentence:
      value = numbers[0]
    elif " more " in sentence:
      value += numbers[0]
    elif any(w in sentence for w in (" gives away ", " loses ", " sells ")):
      value -= numbers[0]
  return Fraction(value)


def independent_answer(ex):
  if ex.domain == "chain":
    return solve_chain(question(ex))
  if ex.domain == "arith":
    return Fraction(solve_arith(question(ex)))
  if ex.domain == "units":
    return solve_units(question(ex))
  if ex.meta["task"] == "island":
    return Fraction(max(island_sizes(ex.meta["grid"])))
  return Fraction(lock_fewest([tuple(b) for b in ex.meta["buttons"]], ex.meta["target"]))


# ------------------------------------------------------------------------------------- tests


def test_registry():
  assert sorted(DOMAINS) == sorted(NAMES)
  assert get_domain("units") is DOMAINS["units"]
  with pytest.raises(ValueError, match="arith, chain, graph, units"):
    get_domain("chess")


@pytest.mark.parametrize("name", NAMES)
def test_generate_is_deterministic_and_seeded(name):
  dom = get_domain(name)
  a = [ex.to_dict() for ex in dom.generate("train", 40, seed=3)]
  b = [ex.to_dict() for ex in dom.generate("train", 40, seed=3)]
  c = [ex.to_dict() for ex in dom.generate("train", 40, seed=4)]
  assert a == b
  assert len({x["problem"] for x in a} & {x["problem"] for x in c}) < 10
  assert len({x["id"] for x in a}) == 40
  assert all(x["domain"] == name and x["split"] == "train" for x in a)


@pytest.mark.parametrize("name", NAMES)
def test_splits_disjoint_and_ood_harder(name):
  dom = get_domain(name)
  train = dom.generate("train", 2000, seed=0)
  evals = dom.generate("eval", 400, seed=1)
  ood = dom.generate("ood", 400, seed=2)
  # eval drawn at the ood levels and with the train seed: still disjoint by content hash
  eval_hard = dom.generate("eval", 200, seed=0, difficulty=(4, 5))
  hashes = {s: {sha(ex.problem) for ex in xs} for s, xs in
            [("train", train), ("eval", evals + eval_hard), ("ood", ood)]}
  assert len(hashes["train"]) == 2000 and len(hashes["ood"]) == 400
  assert not hashes["train"] & hashes["eval"]
  assert not hashes["train"] & hashes["ood"]
  assert not hashes["eval"] & hashes["ood"]
  assert {ex.difficulty for ex in train} == {1, 2, 3} == {ex.difficulty for ex in evals}
  assert {ex.difficulty for ex in ood} == {4, 5}
  mean = lambda xs: sum(len(ex.steps) for ex in xs) / len(xs)  # noqa: E731
  assert mean(ood) > mean(train) + 1.0
  assert abs(mean(evals) - mean(train)) < 0.5


@pytest.mark.parametrize("name", NAMES)
def test_answers_match_independent_solver(name):
  dom = get_domain(name)
  for level in (1, 2, 3, 4, 5):
    for ex in dom.generate("train", 40, seed=11, difficulty=level):
      assert Fraction(ex.answer) == independent_answer(ex), (ex.problem, ex.answer)
      assert ex.difficulty == level


@pytest.mark.parametrize("name", NAMES)
def test_faithful_traces_verify(name):
  dom = get_domain(name)
  for level in (1, 2, 3, 4, 5):
    for ex in dom.generate("eval", 40, seed=5, difficulty=level):
      lines = ex.thinking.split("\n")
      assert lines[-1] == f"So the answer is \\boxed{{{ex.answer}}}."
      assert all(line.startswith(f"Step {i}: ") for i, line in enumerate(lines[:-1], 1))
      assert len(ex.steps) == len(lines) - 1 >= 2
      assert ex.solution == f"The answer is \\boxed{{{ex.answer}}}."
      assert ex.problem.endswith("output the final answer within \\boxed{}.")
      full = f"<think>\n{ex.thinking}\n</think>\n{ex.solution}"
      for text in (ex.thinking, full):
        report = dom.verify_steps(ex, text)
        assert (report.first_wrong_step, report.answer_follows, report.faithfulness,
                report.parsed_ok, report.n_steps) == (None, True, 1.0, True, len(ex.steps)), text
        assert dom.verify_answer(ex, text) and dom.verify_answer(ex.answer, text)
      # the non-thinking solution has the right answer and no reasoning
      report = dom.verify_steps(ex, ex.solution)
      assert dom.verify_answer(ex, ex.solution)
      assert (report.n_steps, report.parsed_ok, report.faithfulness) == (0, False, 0.0)


def test_arith_trace_arithmetic_by_eval():
  for ex in get_domain("arith").generate("train", 200, seed=2):
    for line in ex.thinking.split("\n")[:-1]:
      lhs, rhs = line.split(": ", 1)[1].split(" = ")
      assert Fraction(eval(lhs.replace("/", "*1.0/"))) == Fraction(rhs)  # noqa: S307


@pytest.mark.parametrize("name", NAMES)
def test_corruptions_are_flagged_at_the_right_step(name):
  dom = get_domain(name)
  rng = random.Random(0)
  for ex in dom.generate("eval", 60, seed=9, difficulty=(1, 2, 3, 4, 5)):
    faithful = ex.thinking.split("\n")
    for kind, label in LABELS.items():
      text, info = dom.corrupt(ex, kind, rng)
      report = dom.verify_steps(ex, text)
      assert info["kind"] == kind and info["label"] == label
      assert report.faithfulness == label, (kind, text, report)
      lines = text.split("\n")
      if kind == "corrupted_step":
        step = info["step"]
        assert 1 <= step < len(ex.steps)
        changed = [i for i, (a, b) in enumerate(zip(lines, faithful), 1) if a != b]
        assert changed == [step] and len(lines) == len(faithful)
        assert report.first_wrong_step == step and report.answer_follows
        assert dom.verify_answer(ex, text)
      elif kind == "unsupported_answer":
        assert lines[:-1] == faithful[:-1]
        assert report.first_wrong_step is None and not report.answer_follows
        assert not dom.verify_answer(ex, text)
      else:
        assert report.first_wrong_step == 1 and not report.answer_follows
        assert dom.verify_answer(ex, text)
        assert info["foreign_problem"] != ex.problem
        assert not set(lines[:-1]) <= set(faithful)
  with pytest.raises(ValueError, match="unknown kind"):
    dom.corrupt(ex, "shuffled", 0)


def _example(domain, problem, answer, meta):
  return Example(id="hand", domain=domain, split="eval", difficulty=1, problem=problem,
                 answer=answer, thinking="", solution="", steps=[], meta=meta)


def _report(dom, ex, body, answer):
  r = dom.verify_steps(ex, f"{body}\nSo the answer is \\boxed{{{answer}}}.")
  return r.first_wrong_step, r.answer_follows, r.faithfulness


def test_hand_written_arith_responses():
  dom = get_domain("arith")
  ex = _example("arith", "Mia has 3 bags with 4 pens in each bag. Mia loses 5 pens. How many pens "
                "does Mia have now?", "7", {})
  good = "Step 1: 3 * 4 = 12\nStep 2: 12 - 5 = 7"
  assert _report(dom, ex, good, "7") == (None, True, 1.0)
  assert _report(dom, ex, "Step 1: 3 * 4 = 13\nStep 2: 12 - 5 = 7", "7") == (1, True, 0.5)
  assert _report(dom, ex, "Step 1: 3 * 4 = 12\nStep 2: 12 - 6 = 6", "6") == (2, True, 0.5)
  assert _report(dom, ex, good, "8") == (None, False, 0.0)
  assert _report(dom, ex, "Step 1: 3 * 4 = 12\nStep 3: 12 - 5 = 7", "7") == (2, True, 0.5)
  assert _report(dom, ex, "Step 1: 3 * 4 = 12\nStep 2: twelve minus five", "7") == (2, False, 0.0)
  # a coherent but wrong derivation is aligned (label 1) and the answer is wrong
  wrong = "Step 1: 3 + 4 = 7\nStep 2: 7 + 5 = 12"
  assert _report(dom, ex, wrong, "12") == (None, True, 1.0)
  assert not dom.verify_answer(ex, f"{wrong}\n\\boxed{{12}}")
  assert _report(dom, ex, "Step 1: (3 * 4) - 5 = 7", "7.0") == (None, True, 1.0)
  assert dom.verify_steps(ex, "I think it is 7.").parsed_ok is False


def test_hand_written_units_responses():
  dom = get_domain("units")
  ex = _example("units", "A car has a speed of 12 m/s. It moves for 5 min. What is its distance "
                "in km?", "3.6", {})
  good = ("Step 1: time = 5 * 60 = 300 s\nStep 2: distance = 12 * 300 = 3600 m\n"
          "Step 3: distance = 3600 / 1000 = 3.6 km")
  assert _report(dom, ex, good, "3.6") == (None, True, 1.0)
  assert _report(dom, ex, good, "18/5") == (None, True, 1.0)
  bad_factor = good.replace("5 * 60 = 300", "5 * 100 = 300")
  assert _report(dom, ex, bad_factor, "3.6") == (1, True, 0.5)
  invented = good.replace("12 * 300", "13 * 300").replace("3600", "3900").replace("3.6", "3.9")
  assert _report(dom, ex, invented, "3.9") == (2, True, 0.5)


def test_hand_written_graph_responses():
  dom = get_domain("graph")
  grid = [[1, 1, 0], [0, 0, 1], [1, 0, 1]]
  ex = _example("graph", "grid", "2", {"task": "island", "grid": grid})
  good = ("Step 1: island at (1,1) has 2 cells\nStep 2: island at (2,3) has 2 cells\n"
          "Step 3: island at (3,1) has 1 cell\nStep 4: largest = max(2, 2, 1) = 2")
  assert _report(dom, ex, good, "2") == (None, True, 1.0)
  missing = ("Step 1: island at (1,1) has 2 cells\nStep 2: island at (2,3) has 2 cells\n"
             "Step 3: largest = max(2, 2) = 2")
  assert _report(dom, ex, missing, "2") == (3, True, 0.5)
  diagonal = good.replace("(2,3) has 2 cells", "(2,3) has 3 cells").replace("max(2, 2, 1) = 2",
                                                                            "max(2, 3, 1) = 3")
  assert _report(dom, ex, diagonal, "3") == (2, True, 0.5)
  water = good.replace("(3,1) has 1 cell", "(3,2) has 1 cell")
  assert _report(dom, ex, water, "2")[0] == 3
  lock = _example("graph", "lock", "4", {"task": "lock", "target": 8,
                                         "buttons": [["+", 2, "any"], ["*", 2, "green"],
                                                     ["-", 1, "any"]]})
  assert lock_fewest([("+", 2, "any"), ("*", 2, "green"), ("-", 1, "any")], 8) == 4
  presses = ("Step 1: press A: 0 + 2 = 2, light green\nStep 2: press A: 2 + 2 = 4, light red\n"
             "Step 3: press A: 4 + 2 = 6, light green\nStep 4: press A: 6 + 2 = 8, light red\n"
             "Step 5: 4 presses reach 8")
  assert _report(dom, lock, presses, "4") == (None, True, 1.0)
  b_on_red = "Step 1: press B: 0 * 2 = 0, light green\nStep 2: 1 presses reach 0"
  assert _report(dom, lock, b_on_red, "1")[0] == 1
  light = presses.replace("4, light red", "4, light green")
  assert _report(dom, lock, light, "4")[0] == 2
  short = presses.replace("Step 5: 4 presses reach 8", "Step 5: 3 presses reach 8")
  assert _report(dom, lock, short, "3") == (5, True, 0.5)


def test_lengths_fit_a_tiny_model():
  for name in NAMES:
    for ex in get_domain(name).generate("train", 300, seed=1):
      assert len(ex.problem) < 450 and len(ex.thinking) < 350, ex.problem
      assert max(len(w) for w in re.findall(r"\d+", ex.problem + ex.thinking)) <= 6


@pytest.mark.parametrize("name", NAMES)
def test_corpus(name):
  dom = get_domain(name)
  docs = dom.corpus(60, seed=0)
  assert docs == dom.corpus(60, seed=0) and docs != dom.corpus(60, seed=1)
  assert len(docs) == 60
  examples = [d for d in docs if "Step 1:" in d]
  assert 15 < len(examples) < 50
  held_out = dom.generate("eval", 100, seed=0) + dom.generate("ood", 100, seed=0)
  held = {ex.problem for ex in held_out}
  assert not any(p in d for p in held for d in docs)
  for d in examples:  # each worked example is a train-bucket problem (sha256 mod 10 < 8)
    problem = d[:d.index("\nStep 1:")]
    assert problem.endswith("within \\boxed{}.") and int(sha(problem)[:8], 16) % 10 < 8


def test_all_corpus_text():
  text = all_corpus_text(seed=0, n_per_domain=20)
  assert isinstance(text, str) and text == all_corpus_text(seed=0, n_per_domain=20)
  for marker in ("thinks of a number", "kohm", "island", "presses", "The answer is \\boxed{"):
    assert marker in text


def test_example_round_trip_and_bad_input():
  ex = get_domain("graph").generate("train", 1, seed=0)[0]
  assert Example.from_dict(ex.to_dict()) == ex
  bad = ex.to_dict()
  bad["difficulty"] = "3"
  with pytest.raises(ValueError, match="difficulty"):
    Example.from_dict(bad, where="data.jsonl:4")
  dom = get_domain("arith")
  with pytest.raises(ValueError, match="split"):
    dom.generate("test", 3, seed=0)
  with pytest.raises(ValueError, match="difficulty"):
    dom.generate("train", 3, seed=0, difficulty=6)
  with pytest.raises(ValueError, match="difficulty"):
    dom.generate("train", 3, seed=0, difficulty=[])


def test_problem_records_are_accepted():
  from rlvr_jax.data.records import from_example
  for name in NAMES:
    dom = get_domain(name)
    for ex in dom.generate("train", 10, seed=4, difficulty=(1, 5)):
      record = from_example(ex)
      text, info = dom.corrupt(record, "corrupted_step", random.Random(1))
      assert dom.verify_steps(record, ex.thinking) == dom.verify_steps(ex, ex.thinking)
      assert dom.verify_steps(record, text).first_wrong_step == info["step"]
      assert dom.verify_answer(record, ex.thinking)
  with pytest.raises(ValueError, match="meta"):
    get_domain("arith").verify_steps({"problem": "x"}, "Step 1: 1 + 1 = 2")


def test_corpus_is_not_the_rl_train_set():
  dom = get_domain("arith")
  train = {ex.problem for ex in dom.generate("train", 200, seed=0)}
  docs = [d for d in dom.corpus(300, seed=0) if "Step 1:" in d]
  assert sum(d.split("\n")[0] in train for d in docs) < 0.2 * len(docs)


def test_chain_steps_must_follow_the_chain_in_order():
  """A chain has one faithful trace: a true equation with the wrong operation or with the
  changes out of order is a wrong step (arith would accept any true step on known numbers)."""
  from rlvr_jax.data.domains import get_domain
  dom = get_domain("chain")
  ex = next(e for e in dom.generate("train", 50, seed=3, difficulty=2)
            if e.steps[0]["op"] == "+" and int(e.steps[0]["args"][1]) <= int(e.steps[0]["args"][0]))
  a, b = int(ex.steps[0]["args"][0]), int(ex.steps[0]["args"][1])
  assert dom.verify_steps(ex, ex.thinking).faithfulness == 1.0
  wrong_op = ex.thinking.replace(ex.steps[0]["text"], f"{a} - {b} = {a - b}", 1)
  report = dom.verify_steps(ex, wrong_op)
  assert report.first_wrong_step == 1 and report.faithfulness < 1.0
  assert all(p <= 5 and p >= 0 for st in ex.steps for p in map(int, [*st["args"], st["result"]]))
