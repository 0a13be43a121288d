r"""`chain`: short chains of single-digit additions and subtractions (a domain for tiny models).

"Mia has 3 coins. Mia gets 2 more coins. Mia gives away 4 coins. How many coins does Mia have
now?" -> Step 1: 3 + 2 = 5 / Step 2: 5 - 4 = 1 / So the answer is \boxed{1}.

Every count stays in 0..MAX_VALUE (5) and every change is 1..MAX_VALUE, so each step `a op b = c`
is one lookup in a table of 30 single-digit facts (15 sums a + b <= 5, 15 differences a - b >= 0),
with the operation read off the verb, b off the problem in order and a the previous result
(check_steps holds every step to exactly that, so the faithfulness labels are exact). The
answer itself needs all the steps composed: written out step by step it is easy for a small
model, in one forward pass harder (toy-1m, level 2: 0.71 avg@8 with traces, 0.29 without).
MAX_VALUE = 9 (90 facts) puts the direct answer at chance but makes the lookups hard too. Level L
has L + 1 steps (changes): levels 1-3 in-domain, 4-5 (5-6 steps) out of domain.
"""
from __future__ import annotations

import random

from rlvr_jax.data.domains import arith, base

NAMES = ("Ali", "Ben", "Mia", "Sam", "Lea", "Tom", "Ana", "Max")
ITEMS = ("apples", "pens", "books", "cards", "eggs", "coins", "shells", "stamps")
MAX_VALUE = 5
CONSTANTS: frozenset = frozenset()  # no numbers beyond the problem's own
_GAIN = ("{n} gets {c} more {item}.", "{n} finds {c} more {item}.", "{n} buys {c} more {item}.")
_LOSS = ("{n} gives away {c} {item}.", "{n} loses {c} {item}.", "{n} sells {c} {item}.")


_eq = base.equation_step


def make_problem(rng: random.Random, level: int) -> base.Problem:
  """One chain of level + 1 single-digit changes; every count stays in 0..MAX_VALUE."""
  name = rng.choice(NAMES)
  item = rng.choice(ITEMS)
  value = rng.randint(0, MAX_VALUE)
  sentences = [f"{name} has {value} {item}."]
  steps = []
  for _ in range(level + 1):
    kinds = [k for k, ok in (("add", value < MAX_VALUE), ("sub", value > 0)) if ok]
    kind = rng.choice(kinds)
    if kind == "add":
      c = rng.randint(1, MAX_VALUE - value)
      sentences.append(rng.choice(_GAIN).format(n=name, c=c, item=item))
      steps.append(_eq(value, "+", c, value + c))
      value += c
    else:
      c = rng.randint(1, value)
      sentences.append(rng.choice(_LOSS).format(n=name, c=c, item=item))
      steps.append(_eq(value, "-", c, value - c))
      value -= c
  sentences.append(f"How many {item} does {name} have now?")
  return base.Problem(" ".join(sentences), steps, str(value), {"template": "chain"})


def check_steps(example: base.Example, statements: list[str]) -> list:
  """Statement k checks when it is a true `a op b = c` AND it is step k of the chain: a the
  previous result (the start value for k = 1), op and b the k-th change of the problem, in
  order. A chain has one faithful trace, so a true equation with the wrong operation (the
  verb says subtract) or the changes out of order is a wrong step."""
  true_eqs = base.check_equation_steps(statements, base.numbers_in(example.problem) | CONSTANTS)
  out = []
  for k, (st, (ok, result)) in enumerate(zip(statements, true_eqs)):
    expected = example.steps[k]["text"] if k < len(example.steps) else None
    ok = ok and expected is not None and " ".join(st.split()) == expected
    out.append((ok, result))
  return out


def perturb_step(example: base.Example, index: int, rng: random.Random) -> str:
  """Step `index` with its result changed by 1 or 2, so `a op b = c` is false."""
  step = example.steps[index - 1]
  c = int(step["result"])
  wrong = rng.choice([v for v in (c - 2, c - 1, c + 1, c + 2) if 0 <= v <= 2 * MAX_VALUE])
  return f"{step['args'][0]} {step['op']} {step['args'][1]} = {wrong}"


# `other`'s first step uses a number that `example`'s problem does not have (as in arith; neither
# domain has constants beyond the problem's own numbers).
foreign_ok = arith.foreign_ok


def fact_doc(rng: random.Random) -> str:
  """Rules of the domain and a few true single-digit facts."""
  rules = [
      "When someone gets, finds or buys more, add.",
      "When someone gives away, loses or sells some, subtract.",
      "Go through the changes in order, one step for each change.",
      "Each step starts from the result of the step before.",
  ]
  lines = rng.sample(rules, 2)
  for _ in range(6):
    a = rng.randint(0, MAX_VALUE)
    if rng.random() < 0.5 and a < MAX_VALUE:
      b = rng.randint(1, MAX_VALUE - a)
      lines.append(f"{a} + {b} = {a + b}.")
    elif a > 0:
      b = rng.randint(1, a)
      lines.append(f"{a} - {b} = {a - b}.")
    else:
      lines.append(f"{a} + 1 = {a + 1}.")
  return "\n".join(lines)


SPEC = base.DomainSpec(name="chain", make_problem=make_problem, check_steps=check_steps,
                       perturb_step=perturb_step, foreign_ok=foreign_ok, fact_doc=fact_doc)
DOMAIN = base.Domain(SPEC)
