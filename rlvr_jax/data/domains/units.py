r"""`units`: unit-conversion and formula problems (the paper's SCIENCE, in small).

"A car has a speed of 12 m/s. It moves for 5 min. What is its distance in m?"
  Step 1: time = 5 * 60 = 300 s
  Step 2: distance = 12 * 300 = 3600 m
  So the answer is \boxed{3600}.

Four small worlds of product laws z = x * y: motion (distance = speed * time), matter
(mass = density * volume), electric (voltage = current * resistance, power = voltage * current,
energy = power * time, charge = current * time) and mechanics (work = force * distance,
work = power * time, distance = speed * time). A problem gives some quantities (possibly in a
larger unit: km, min, h, kg, L, kV, kohm, kW, kJ, kN) and asks for another, possibly in a larger
unit. The steps convert each given to its base unit (`q = v * 60 = ...`), apply one law per step
(`z = x * y` or `x = z / y`), then convert the result (`q = v / 1000 = ...`). Level L has L + 1
steps (one law at level 1, up to three at level 5). Answers are integers, and at levels 4-5 may
be exact decimals (a final division by 1000). Conversion factors (60, 1000) are the only numbers a
step may use besides the problem's numbers and earlier results.
"""
from __future__ import annotations

import random
from fractions import Fraction

from rlvr_jax.data.domains import base

# quantity -> (base unit, ladder upwards: [(unit, how many of the unit below make one)],
#              a smaller unit: (unit, how many of it make one base unit) or None)
QUANTITIES = {
    "distance": ("m", [("km", 1000)], ("cm", 100)),
    "time": ("s", [("min", 60), ("h", 60)], None),
    "mass": ("g", [("kg", 1000)], None),
    "volume": ("mL", [("L", 1000)], None),
    "speed": ("m/s", [], ("cm/s", 100)),
    "density": ("g/mL", [], None),
    "voltage": ("V", [("kV", 1000)], ("mV", 1000)),
    "current": ("A", [], ("mA", 1000)),
    "resistance": ("ohm", [("kohm", 1000)], None),
    "power": ("W", [("kW", 1000)], ("mW", 1000)),
    "energy": ("J", [("kJ", 1000)], ("mJ", 1000)),
    "charge": ("C", [], ("mC", 1000)),
    "force": ("N", [("kN", 1000)], None),
    "work": ("J", [("kJ", 1000)], None),
}
CONSTANTS = frozenset(Fraction(f) for _, ladder, down in QUANTITIES.values()
                      for _, f in ladder + ([down] if down else []))
WORLDS = {
    "motion": dict(objects=("car", "bike", "train", "boat", "runner"), verb="moves",
                   laws=[("distance", "speed", "time")], free=("speed", "time")),
    "matter": dict(objects=("block", "stone", "bar", "brick"), verb="rests",
                   laws=[("mass", "density", "volume")], free=("density", "volume")),
    "electric": dict(objects=("lamp", "heater", "motor", "radio", "fan"), verb="runs",
                     laws=[("voltage", "current", "resistance"), ("power", "voltage", "current"),
                           ("energy", "power", "time"), ("charge", "current", "time")],
                     free=("current", "resistance", "time")),
    "mechanics": dict(objects=("crane", "robot", "cart", "winch"), verb="works",
                      laws=[("distance", "speed", "time"), ("work", "force", "distance"),
                            ("work", "power", "time")],
                      free=("force", "speed", "time")),
}
LAWS_BY_LEVEL = {1: (1,), 2: (1, 2), 3: (2,), 4: (2, 3), 5: (3,)}
MAX_VALUE = {1: 10 ** 4, 2: 10 ** 4, 3: 10 ** 5, 4: 10 ** 6, 5: 10 ** 6}  # any number shown


def _small_range(q: str, level: int) -> tuple[int, int]:
  return {"speed": (2, 5 + 3 * level), "time": (2, 5 + 2 * level), "current": (1, 2 + level),
          "resistance": (2, 4 + 3 * level), "density": (1, 3 + 2 * level),
          "volume": (2, 5 + 5 * level), "force": (2, 5 + 5 * level)}[q]


def _world_values(world: str, level: int, rng: random.Random) -> dict[str, int]:
  """Integer base-unit values of every quantity of a world, consistent with its laws."""
  values = {}
  for q in WORLDS[world]["free"]:
    lo, hi = _small_range(q, level)
    ladder = QUANTITIES[q][1]
    mult = 1
    for _, f in ladder[:rng.randint(0, len(ladder))]:
      mult *= f
    values[q] = rng.randint(lo, hi) * mult
  changed = True
  while changed:
    changed = False
    for z, x, y in WORLDS[world]["laws"]:
      if z not in values and x in values and y in values:
        values[z] = values[x] * values[y]
        changed = True
      for a, b in ((x, y), (y, x)):
        if a not in values and z in values and b in values and values[z] % values[b] == 0:
          values[a] = values[z] // values[b]
          changed = True
  return values


def _factor(q: str, hops: int) -> int | Fraction:
  """How many base units one display unit `hops` away holds (hops < 0: the smaller unit)."""
  if hops < 0:
    return Fraction(1, QUANTITIES[q][2][1])
  f = 1
  for _, step in QUANTITIES[q][1][:hops]:
    f *= step
  return f


def _unit(q: str, hops: int) -> str:
  """The unit `hops` ladder steps above the base unit of q (-1: its smaller unit)."""
  base_unit, ladder, down = QUANTITIES[q]
  if hops < 0:
    return down[0]
  return base_unit if hops == 0 else ladder[hops - 1][0]


def _eq(label: str, a, op: str, b, c, unit: str) -> dict:
  a, b, c = base.fmt(a), base.fmt(b), base.fmt(c)
  return {"kind": "eq", "label": label, "op": op, "args": [a, b], "result": c, "unit": unit,
          "text": f"{label} = {a} {op} {b} = {c} {unit}"}


def _article(word: str) -> str:
  return "an" if word[0] in "aeiou" else "a"


def _chains(laws, target: str, k: int):
  """Every chain of `k` laws that ends by computing `target`: ([(out, law), ...], [input, ...])
  where each law after the first takes the previous law's output as one input."""
  for law in laws:
    if target not in law:
      continue
    others = [q for q in law if q != target]
    if k == 1:
      yield [(target, law)], others
      continue
    for derived, given in ((others[0], others[1]), (others[1], others[0])):
      for steps, givens in _chains(laws, derived, k - 1):
        yield steps + [(target, law)], givens + [given]


def _derivations(laws, target: str, k: int):
  """The chains of `_chains` that compute each quantity once and never compute a given; a
  given may feed several laws (current in voltage = current * resistance and
  power = voltage * current). Givens are listed once each."""
  for steps, givens in _chains(laws, target, k):
    outs = [out for out, _ in steps]
    if len(set(outs)) == len(outs) and not set(outs) & set(givens):
      yield steps, list(dict.fromkeys(givens))


# k -> every (world, target, laws in order, givens) with k laws
PLANS = {k: [(w, q, steps, givens) for w in sorted(WORLDS)
             for q in sorted({q for law in WORLDS[w]["laws"] for q in law})
             for steps, givens in _derivations(WORLDS[w]["laws"], q, k)]
         for k in (1, 2, 3)}


def _hop_options(q: str, value: int, level: int, output: bool) -> tuple[int, bool]:
  """(most ladder steps up value can be written with, whether the smaller unit exists).

  Up steps must divide exactly, except for the final answer at levels >= 4, which may become an
  exact decimal >= 1 (a division by 1000)."""
  up = 0
  for h in range(1, len(QUANTITIES[q][1]) + 1):
    f = _factor(q, h)
    decimal = output and level >= 4 and value >= f and QUANTITIES[q][1][h - 1][1] == 1000
    if value % f == 0 or decimal:
      up = h
    else:
      break
  return up, QUANTITIES[q][2] is not None


def make_problem(rng: random.Random, level: int) -> base.Problem:
  """One units problem of difficulty `level` (level + 1 steps)."""
  for _ in range(10000):
    k = rng.choice(LAWS_BY_LEVEL[level])
    world, target, laws, givens = rng.choice(PLANS[k])
    values = _world_values(world, level, rng)
    involved = set(givens) | {out for out, _ in laws}
    if not involved <= set(values) or max(values[q] for q in involved) > MAX_VALUE[level]:
      continue
    slots = givens + ["@out"]
    options = {g: _hop_options(g, values[g], level, False) for g in givens}
    options["@out"] = _hop_options(target, values[target], level, True)
    caps = {g: max(up, int(down)) for g, (up, down) in options.items()}
    need = level + 1 - k
    if sum(caps.values()) < need:
      continue
    count = dict.fromkeys(slots, 0)
    for _ in range(need):
      count[rng.choice([g for g in slots if count[g] < caps[g]])] += 1
    hops = {}
    for g in slots:  # one conversion: up or down; more: up the ladder
      up, down = options[g]
      if count[g] == 1:
        hops[g] = rng.choice(([1] if up >= 1 else []) + ([-1] if down else []))
      else:
        hops[g] = count[g]
    # numbers written in a smaller unit grow by its factor
    shown = [values[q] * QUANTITIES[q][2][1] for q, h in
             [(target, hops["@out"])] + [(g, hops[g]) for g in givens] if h < 0]
    if max(shown, default=0) > MAX_VALUE[level]:
      continue
    out_hops = hops.pop("@out")
    return _render(rng, world, givens, hops, laws, target, out_hops, values)
  raise RuntimeError(f"units: could not make a level {level} problem")


def _render(rng, world, givens, hops, laws, target, out_hops, values) -> base.Problem:
  spec = WORLDS[world]
  order = [g for g in givens if g != "time"]
  rng.shuffle(order)
  if "time" in givens:
    order.append("time")
  steps: list[dict] = []
  shown = {}
  for g in order:  # convert each given to its base unit
    shown[g] = Fraction(values[g]) / _factor(g, hops[g])
    v = shown[g]
    if hops[g] < 0:
      f = QUANTITIES[g][2][1]
      steps.append(_eq(g, v, "/", f, v / f, _unit(g, 0)))
    for h in range(hops[g], 0, -1):
      f = QUANTITIES[g][1][h - 1][1]
      steps.append(_eq(g, v, "*", f, v * f, _unit(g, h - 1)))
      v *= f
  for out, (z, x, y) in laws:  # one law per step
    if out == z:
      steps.append(_eq(z, values[x], "*", values[y], values[z], _unit(z, 0)))
    else:
      other = y if out == x else x
      steps.append(_eq(out, values[z], "/", values[other], values[out], _unit(out, 0)))
  v = Fraction(values[target])  # convert the answer to the unit asked for
  if out_hops < 0:
    f = QUANTITIES[target][2][1]
    steps.append(_eq(target, v, "*", f, v * f, _unit(target, -1)))
    v *= f
  for h in range(1, out_hops + 1):
    f = QUANTITIES[target][1][h - 1][1]
    steps.append(_eq(target, v, "/", f, v / f, _unit(target, h)))
    v /= f
  obj = rng.choice(spec["objects"])
  phrases = [f"{_article(g)} {g} of {base.fmt(shown[g])} {_unit(g, hops[g])}"
             for g in order if g != "time"]
  listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
  text = f"A {obj} has {listed}."
  if "time" in givens:
    text += f" It {spec['verb']} for {base.fmt(shown['time'])} {_unit('time', hops['time'])}."
  text += f" What is its {target} in {_unit(target, out_hops)}?"
  meta = {"world": world, "target": target, "unit": _unit(target, out_hops),
          "givens": {g: [base.fmt(shown[g]), _unit(g, hops[g])] for g in order}}
  return base.Problem(text, steps, base.fmt(v), meta)


def check_steps(example: base.Example, statements: list[str]) -> list:
  """Each `q = a op b = c unit` must be true, a and b numbers of the problem, conversion factors
  or earlier results (labels and units are not checked)."""
  return base.check_equation_steps(statements, base.numbers_in(example.problem) | CONSTANTS)


def perturb_step(example: base.Example, index: int, rng: random.Random) -> str:
  """Step `index` with one operand changed (result kept), so the equation is false."""
  step = example.steps[index - 1]
  args = list(step["args"])
  j = rng.randrange(2)
  value = Fraction(args[j])
  args[j] = base.fmt(value + rng.choice([-2, -1, 1, 2]) if value > 2 else value + rng.randint(1, 3))
  return f"{step['label']} = {args[0]} {step['op']} {args[1]} = {step['result']} {step['unit']}"


def foreign_ok(example: base.Example, other: base.Example) -> bool:
  """`other`'s first step uses a number that `example`'s problem does not have."""
  have = base.numbers_in(example.problem) | CONSTANTS
  return any(Fraction(a) not in have for a in other.steps[0]["args"])


def _conversions() -> list[tuple[str, int, str]]:
  """(larger unit, factor, smaller unit) for every neighbouring pair of units."""
  pairs = []
  for unit, ladder, down in QUANTITIES.values():
    below = unit
    for up, f in ladder:
      pairs.append((up, f, below))
      below = up
    if down:
      pairs.append((unit, down[1], down[0]))
  return sorted(set(pairs))


def _rules() -> list[str]:
  rules = []
  for up, f, below in _conversions():
    rules += [f"To convert {up} to {below}, multiply by {f}.",
              f"To convert {below} to {up}, divide by {f}.", f"1 {up} = {f} {below}."]
  for spec in WORLDS.values():
    for z, x, y in spec["laws"]:
      rules += [f"{z} = {x} * {y}.", f"{x} = {z} / {y}.", f"{y} = {z} / {x}."]
  return sorted(set(rules))


_RULES = _rules()


def fact_doc(rng: random.Random) -> str:
  """Conversion and formula rules, with a few worked instances."""
  lines = rng.sample(_RULES, 4)
  up, f, below = rng.choice(_conversions())
  v = rng.randint(2, 12)
  lines.append(f"{v} {up} = {v * f} {below}.")
  world = WORLDS[rng.choice(sorted(WORLDS))]
  z, x, y = rng.choice(world["laws"])
  vx, vy = rng.randint(2, 12), rng.randint(2, 12)
  lines.append(f"{_article(x).capitalize()} {x} of {vx} {_unit(x, 0)} and {_article(y)} {y} of "
               f"{vy} {_unit(y, 0)} give {_article(z)} {z} of {vx * vy} {_unit(z, 0)}.")
  return "\n".join(lines)


SPEC = base.DomainSpec(name="units", make_problem=make_problem, check_steps=check_steps,
                       perturb_step=perturb_step, foreign_ok=foreign_ok, fact_doc=fact_doc)
DOMAIN = base.Domain(SPEC)
generate = DOMAIN.generate
corrupt = DOMAIN.corrupt
verify_answer = DOMAIN.verify_answer
verify_steps = DOMAIN.verify_steps
corpus = DOMAIN.corpus
