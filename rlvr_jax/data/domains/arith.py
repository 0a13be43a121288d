r"""`arith`: multi-step arithmetic and linear-equation word problems (the paper's MATH, in small).

Two templates, drawn 50/50:
  story    "Mia has 3 bags with 4 pens in each bag. Mia gives 5 pens to Tom. How many pens does
           Mia have now?" -> Step 1: 3 * 4 = 12 / Step 2: 12 - 5 = 7;
  inverse  "Ben thinks of a number, multiplies it by 3 and then adds 4. The result is 19. What is
           the number?" -> Step 1: 19 - 4 = 15 / Step 2: 15 / 3 = 5 (undo the operations).
Level L has L + 1 steps; numbers grow with the level (factors up to 5..12, addends up to
9..50). Every step is `a op b = c` with a, b numbers of the problem or results of earlier steps;
all answers are positive integers.
"""
from __future__ import annotations

import random
from fractions import Fraction

from rlvr_jax.data.domains import base

NAMES = ("Ali", "Ben", "Mia", "Sam", "Lea", "Tom", "Ana", "Max")
ITEMS = ("apples", "pens", "books", "cards", "eggs", "coins", "shells", "stamps")
CONTAINERS = (("box", "boxes"), ("bag", "bags"), ("pack", "packs"), ("jar", "jars"))
# level -> (largest factor, largest addend, largest secret number)
RANGES = {1: (5, 9, 9), 2: (6, 12, 12), 3: (9, 20, 20), 4: (12, 30, 30), 5: (12, 50, 50)}
CONSTANTS: frozenset = frozenset()  # no numbers beyond the problem's own
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


_eq = base.equation_step


def _story(rng: random.Random, level: int) -> base.Problem:
  fmax, amax, _ = RANGES[level]
  name, other = rng.sample(NAMES, 2)
  item = rng.choice(ITEMS)
  sg, pl = rng.choice(CONTAINERS)
  a, b = rng.randint(2, fmax), rng.randint(2, fmax)
  value = a * b
  sentences = [f"{name} has {a} {pl} with {b} {item} in each {sg}."]
  steps = [_eq(a, "*", b, value)]
  question = f"How many {item} does {name} have now?"
  remaining = level
  last = None
  while remaining > 0:
    kinds = [k for k in ("add", "sub") if k != last or remaining == 1]
    if remaining >= 2:
      kinds.append("group")
    divisors = [d for d in range(2, fmax + 1) if value % d == 0 and d < value]
    if remaining == 1 and divisors:
      kinds.append("share")
    kind = rng.choice(kinds)
    if kind == "sub" and value <= 1:
      continue
    if kind == "add":
      c = rng.randint(1, amax)
      sentences.append(rng.choice([f"{name} buys {c} more {item}.",
                                   f"{name} finds {c} more {item}.",
                                   f"{other} gives {name} {c} more {item}."]))
      steps.append(_eq(value, "+", c, value + c))
      value += c
    elif kind == "sub":
      c = rng.randint(1, min(amax, value - 1))
      sentences.append(rng.choice([f"{name} gives {c} {item} to {other}.",
                                   f"{name} loses {c} {item}.", f"{name} sells {c} {item}."]))
      steps.append(_eq(value, "-", c, value - c))
      value -= c
    elif kind == "group":
      c, d = rng.randint(2, fmax), rng.randint(2, fmax)
      sentences.append(f"{name} buys {c} more {pl} with {d} {item} in each {sg}.")
      steps.append(_eq(c, "*", d, c * d))
      steps.append(_eq(value, "+", c * d, value + c * d))
      value += c * d
    else:  # share
      d = rng.choice(divisors)
      question = (f"{name} shares the {item} equally among {d} friends. How many {item} does "
                  f"each friend get?")
      steps.append(_eq(value, "/", d, value // d))
      value //= d
    remaining -= 2 if kind == "group" else 1
    last = kind
  return base.Problem(" ".join(sentences + [question]), steps, str(value),
                      {"template": "story"})


def _inverse(rng: random.Random, level: int) -> base.Problem:
  fmax, amax, xmax = RANGES[level]
  name = rng.choice(NAMES)
  x = rng.randint(2, xmax)
  value, ops, last = x, [], None
  while len(ops) < level + 1:
    kinds = ["mul", "add"]
    if value > 1:
      kinds.append("sub")
    divisors = [d for d in range(2, 10) if value % d == 0 and d < value]
    if divisors:
      kinds.append("div")
    kind = rng.choice([k for k in kinds if k != last] or kinds)
    if kind == "mul":
      k = rng.randint(2, min(fmax, 5) if value > 20 else fmax)
      value *= k
    elif kind == "add":
      k = rng.randint(1, amax)
      value += k
    elif kind == "sub":
      k = rng.randint(1, min(amax, value - 1))
      value -= k
    else:
      k = rng.choice(divisors)
      value //= k
    ops.append((kind, k))
    last = kind
  phrase = {"mul": "multiplies it by {}", "add": "adds {}", "sub": "subtracts {}",
            "div": "divides it by {}"}
  parts = [phrase[kind].format(k) for kind, k in ops]
  text = (f"{name} thinks of a number, {', '.join(parts[:-1])} and then {parts[-1]}. "
          f"The result is {value}. What is the number?")
  steps, cur = [], value
  for kind, k in reversed(ops):
    if kind == "mul":
      steps.append(_eq(cur, "/", k, cur // k))
      cur //= k
    elif kind == "add":
      steps.append(_eq(cur, "-", k, cur - k))
      cur -= k
    elif kind == "sub":
      steps.append(_eq(cur, "+", k, cur + k))
      cur += k
    else:
      steps.append(_eq(cur, "*", k, cur * k))
      cur *= k
  assert cur == x
  return base.Problem(text, steps, str(x), {"template": "inverse",
                                            "ops": [[kind, k] for kind, k in ops]})


def make_problem(rng: random.Random, level: int) -> base.Problem:
  """One arith problem of difficulty `level` (level + 1 steps)."""
  return _story(rng, level) if rng.random() < 0.5 else _inverse(rng, level)


def check_steps(example: base.Example, statements: list[str]) -> list:
  """Each statement `a op b = c` must be true, a and b numbers of the problem or earlier results."""
  return base.check_equation_steps(statements, base.numbers_in(example.problem) | CONSTANTS)


def perturb_step(example: base.Example, index: int, rng: random.Random) -> str:
  """Step `index` with one operand changed (the result kept), so `a op b = c` is false."""
  step = example.steps[index - 1]
  args = list(step["args"])
  j = rng.randrange(2)
  args[j] = str(base.nearby(int(args[j]), rng))
  return f"{args[0]} {step['op']} {args[1]} = {step['result']}"


def foreign_ok(example: base.Example, other: base.Example) -> bool:
  """`other`'s first step uses a number that `example`'s problem does not have."""
  have = base.numbers_in(example.problem) | CONSTANTS
  return any(Fraction(a) not in have for a in other.steps[0]["args"])


def fact_doc(rng: random.Random) -> str:
  """Rules of the domain and a few true arithmetic facts."""
  rules = [
      "To find the total in equal groups, multiply the number of groups by the number in each "
      "group.",
      "When someone buys or finds more, add.",
      "When someone gives away, loses or sells some, subtract.",
      "To share equally among friends, divide the total by the number of friends.",
      "To find a number from the result, undo each operation from the last to the first.",
      "To undo multiplying, divide. To undo dividing, multiply.",
      "To undo adding, subtract. To undo subtracting, add.",
  ]
  lines = rng.sample(rules, 2)
  for _ in range(6):
    a, b = rng.randint(2, 20), rng.randint(2, 12)
    op = rng.choice("+-*/")
    if op == "+":
      lines.append(f"{a} + {b} = {a + b}.")
    elif op == "-":
      lines.append(f"{a + b} - {b} = {a}.")
    elif op == "*":
      lines.append(f"{a} * {b} = {a * b}.")
    else:
      lines.append(f"{a * b} / {b} = {a}.")
  return "\n".join(lines)


SPEC = base.DomainSpec(name="arith", make_problem=make_problem, check_steps=check_steps,
                       perturb_step=perturb_step, foreign_ok=foreign_ok, fact_doc=fact_doc)
DOMAIN = base.Domain(SPEC)
generate = DOMAIN.generate
corrupt = DOMAIN.corrupt
verify_answer = DOMAIN.verify_answer
verify_steps = DOMAIN.verify_steps
corpus = DOMAIN.corpus
