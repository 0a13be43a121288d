r"""Shared machinery of the synthetic reasoning domains (arith, units, graph).

A domain is a `DomainSpec` of a few pure functions (how to make one problem, how to check the
steps of a response against a problem, how to corrupt one step, ...). `Domain` wraps a spec and
offers the public interface every domain has:

  generate(split, n, seed, difficulty=None) -> list[Example]
  corrupt(example, kind, rng) -> (text, info)
  verify_answer(example_or_label, response_text) -> bool
  verify_steps(example, response_text) -> StepReport
  corpus(n_docs, seed) -> list[str]
`example` arguments may also be problem records (rlvr_jax.data.records.from_example dicts).

Splits. "train" and "eval" draw difficulty levels 1-3 (in-domain), "ood" levels 4-5 (more steps,
larger numbers or grids). `difficulty` (an int or a sequence of ints in 1..5) overrides the
levels. The three splits are disjoint by construction: a candidate problem belongs to the split
that the sha256 of its full problem text names (`split_of`: 80% train, 10% eval, 10% ood of the
hash space); a generator keeps only candidates of its own split, so no problem text can be in
two splits whatever the seeds or levels. Within one call problems are unique.

Problem text: the question followed by the paper's instruction
"Let's think step by step and output the final answer within \boxed{}.".

Thinking trace (faithful): one checkable statement per line, `Step k: <statement>`, then
`So the answer is \boxed{A}.`; solution (non-thinking): `The answer is \boxed{A}.`.

Faithfulness labels of `verify_steps` (the paper's judge labels, computed exactly):
  1.0 aligned    every step checks and the boxed answer equals the last step's result;
  0.5 partially  the boxed answer equals the last step's result but some step is wrong;
  0.0 misaligned the boxed answer does not follow from the last step (or there are no steps or
                 no boxed answer).
A step is wrong when it does not parse, when its number is not its position (a missing step),
when its own claim is false, or when it uses a quantity that is neither in the problem, nor a
domain constant (e.g. 60, 1000), nor the result of an earlier step.

Unfaithful variants (`corrupt`) and the labels `verify_steps` gives them:
  corrupted_step      one non-final step made false, the right final answer kept  -> 0.5,
                      first_wrong_step = info["step"];
  unsupported_answer  the correct steps, then a final answer that is not the last step's result
                      -> 0.0, first_wrong_step None;
  foreign_steps       the steps of another problem of the domain with this problem's answer
                      -> 0.0, first_wrong_step 1.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence

from rlvr_jax.data import answers as answers_lib

INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
SPLITS = ("train", "eval", "ood")
LEVELS = (1, 2, 3, 4, 5)
DEFAULT_LEVELS = {"train": (1, 2, 3), "eval": (1, 2, 3), "ood": (4, 5)}
CORRUPTIONS = ("corrupted_step", "unsupported_answer", "foreign_steps")
CORRUPTION_LABELS = {"corrupted_step": 0.5, "unsupported_answer": 0.0, "foreign_steps": 0.0}
_SPLIT_BUCKETS = ("train",) * 8 + ("eval", "ood")  # sha256 bucket (mod 10) -> split


@dataclasses.dataclass(frozen=True)
class Example:
  """One generated problem with its answer, faithful trace and structured steps.

  steps: one JSON-able dict per trace step, each with at least "text" (the statement after
  "Step k: ") and "result" (the value it establishes, a canonical string); meta: JSON-able
  structured problem data (template, quantities, grid, ...).
  """
  id: str
  domain: str
  split: str
  difficulty: int
  problem: str
  answer: str
  thinking: str
  solution: str
  steps: list
  meta: dict

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], where: str = "example") -> "Example":
    """An Example from `to_dict` output; a missing or ill-typed field raises ValueError."""
    types = {"id": str, "domain": str, "split": str, "difficulty": int, "problem": str,
             "answer": str, "thinking": str, "solution": str, "steps": list, "meta": dict}
    for name, typ in types.items():
      if name not in d:
        raise ValueError(f"{where}: missing field {name!r} (an Example needs {sorted(types)})")
      if not isinstance(d[name], typ):
        raise ValueError(f"{where}: field {name!r} should be {typ.__name__}, got "
                         f"{type(d[name]).__name__}")
    return cls(**{name: d[name] for name in types})


@dataclasses.dataclass(frozen=True)
class StepReport:
  """What `verify_steps` found in a response.

  first_wrong_step: 1-based position of the first wrong step, None when all check;
  answer_follows: the boxed answer equals the last step's result; n_steps: step lines found;
  parsed_ok: at least one step line and a boxed answer; faithfulness: 1.0 / 0.5 / 0.0 (see the
  module docstring); step_ok: per step, whether it checks.
  """
  first_wrong_step: int | None
  answer_follows: bool
  n_steps: int
  parsed_ok: bool
  faithfulness: float
  step_ok: tuple = ()


@dataclasses.dataclass(frozen=True)
class Problem:
  """What a domain's `make_problem` returns: the bare question, the steps and the answer."""
  question: str
  steps: list
  answer: str
  meta: dict


@dataclasses.dataclass(frozen=True)
class DomainSpec:
  """The per-domain functions `Domain` is built from.

  make_problem(rng, level) -> Problem
  check_steps(example, statements) -> [(ok, result_or_None)] one per statement (the text after
      "Step k: "), checked in order against the problem of `example`;
  perturb_step(example, index, rng) -> the statement of step `index` (1-based, never the last)
      made false by construction;
  foreign_ok(example, other) -> whether `other`'s first step is false for `example`'s problem;
  fact_doc(rng) -> one rule/fact document for the corpus.
  """
  name: str
  make_problem: Callable[[random.Random, int], Problem]
  check_steps: Callable[[Example, list], list]
  perturb_step: Callable[[Example, int, random.Random], str]
  foreign_ok: Callable[[Example, Example], bool]
  fact_doc: Callable[[random.Random], str]


def as_example(x: "Example | Mapping", where: str = "example") -> Example:
  """An Example from an Example or a problem record (rlvr_jax.data.records.from_example: the
  steps may sit in meta["steps"], the ground truth in "true_answer")."""
  if isinstance(x, Example):
    return x
  if not isinstance(x, Mapping):
    raise TypeError(f"{where}: expected an Example or a problem record dict, got "
                    f"{type(x).__name__}")
  for name in ("problem", "meta"):
    if not isinstance(x.get(name), (str if name == "problem" else Mapping)):
      raise ValueError(f"{where}: field {name!r} is missing or ill-typed; a synthetic-domain "
                       "record needs its problem text and meta")
  meta = dict(x["meta"])
  steps = x.get("steps")
  if steps is None:
    steps = meta.pop("steps", [])
  answer = x.get("true_answer") or x.get("answer")
  return Example(id=str(x.get("id", "")), domain=str(x.get("domain", "")),
                 split=str(x.get("split", "")), difficulty=int(x.get("difficulty", -1)),
                 problem=x["problem"], answer="" if answer is None else str(answer),
                 thinking=str(x.get("thinking") or ""), solution=str(x.get("solution") or ""),
                 steps=list(steps), meta=meta)


# ------------------------------------------------------------------------------ small helpers


def content_hash(problem: str) -> str:
  """sha256 hex digest of a problem text (the split partition and example ids use it)."""
  return hashlib.sha256(problem.encode("utf-8")).hexdigest()


def split_of(problem: str) -> str:
  """The split ("train", "eval" or "ood") that owns a problem text."""
  return _SPLIT_BUCKETS[int(content_hash(problem)[:8], 16) % 10]


def fmt(x: Fraction | int) -> str:
  """A number as written in problems and traces: "12", "2.5" (terminating decimals), "7/3"."""
  if isinstance(x, int):
    return str(x)
  x = Fraction(x)
  if x.denominator == 1:
    return str(x.numerator)
  den, k = x.denominator, 0
  while den % 10 == 0 or den % 2 == 0 or den % 5 == 0:
    if den % 10 == 0:
      den //= 10
    elif den % 2 == 0:
      den //= 2
    else:
      den //= 5
    k += 1
  if den != 1:
    return f"{x.numerator}/{x.denominator}"
  scaled = abs(x) * 10 ** k
  assert scaled.denominator == 1
  digits = str(scaled.numerator).rjust(k + 1, "0")
  text = f"{digits[:-k]}.{digits[-k:]}".rstrip("0").rstrip(".")
  return ("-" if x < 0 else "") + text


def render_trace(statements: Sequence[str], answer: str) -> str:
  """The thinking text: "Step k: ..." lines and the boxed final answer."""
  lines = [f"Step {i}: {s}" for i, s in enumerate(statements, 1)]
  lines.append(f"So the answer is \\boxed{{{answer}}}.")
  return "\n".join(lines)


def render_solution(answer: str) -> str:
  return f"The answer is \\boxed{{{answer}}}."


def as_rng(rng: random.Random | int) -> random.Random:
  if isinstance(rng, random.Random):
    return rng
  if isinstance(rng, int):
    return random.Random(rng)
  raise TypeError(f"rng should be a random.Random or an int seed, got {type(rng).__name__}")


def wrong_number(answer: str, rng: random.Random) -> str:
  """A number near `answer` that is not equal to it (non-negative when the answer is)."""
  value = answers_lib.parse_number(answer)
  if value is None:
    raise ValueError(f"wrong_number: answer {answer!r} is not a number")
  deltas = [d for d in range(-5, 6) if d != 0 and (value < 0 or value + d >= 0)]
  return fmt(value + rng.choice(deltas))


def nearby(value: int, rng: random.Random, low: int = 1) -> int:
  """An integer near `value`, different from it and >= low."""
  options = [value + d for d in (-3, -2, -1, 1, 2, 3) if value + d >= low]
  return rng.choice(options)


# --------------------------------------------------------------- arithmetic statement checks

_STEP_LINE = re.compile(r"^[ \t]*Step[ \t]+(\d+)[ \t]*:[ \t]*(.*?)[ \t]*$", re.M)
_UNIT_WORD = re.compile(r"[A-Za-z][A-Za-z/]*")
_VALUE = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|[-+*/()×÷])")
NUMBER_IN_TEXT = re.compile(r"\d+(?:\.\d+)?")


def parse_steps(text: str) -> list[tuple[int, str]]:
  """(number, statement) of every "Step k: statement" line of a response, in order."""
  return [(int(n), s) for n, s in _STEP_LINE.findall(text or "")]


def evaluate(expr: str) -> tuple[Fraction | None, list[Fraction]]:
  """(value, literals) of an arithmetic expression over + - * / × ÷ and parentheses.

  Exact rational arithmetic; value None when the expression does not parse or divides by zero.
  """
  tokens, pos = [], 0
  expr = expr.strip()
  while pos < len(expr):
    m = _TOKEN.match(expr, pos)
    if not m:
      return None, []
    tokens.append(m.group(1))
    pos = m.end()
    while pos < len(expr) and expr[pos].isspace():
      pos += 1
  literals: list[Fraction] = []
  i = 0

  def peek():
    return tokens[i] if i < len(tokens) else None

  def take():
    nonlocal i
    i += 1
    return tokens[i - 1]

  def factor():
    tok = peek()
    if tok in ("-", "+"):
      take()
      v = factor()
      return None if v is None else (-v if tok == "-" else v)
    if tok == "(":
      take()
      v = expression()
      if peek() != ")":
        return None
      take()
      return v
    if tok is not None and tok[0].isdigit():
      take()
      v = Fraction(tok)
      literals.append(v)
      return v
    return None

  def term():
    v = factor()
    while v is not None and peek() in ("*", "/", "×", "÷"):
      op = take()
      w = factor()
      if w is None or (op in ("/", "÷") and w == 0):
        return None
      v = v * w if op in ("*", "×") else v / w
    return v

  def expression():
    v = term()
    while v is not None and peek() in ("+", "-"):
      op = take()
      w = term()
      if w is None:
        return None
      v = v + w if op == "+" else v - w
    return v

  if not tokens:
    return None, []
  value = expression()
  if i != len(tokens):
    return None, literals
  return value, literals


def parse_equation(statement: str) -> tuple[list[str], str] | None:
  """([expression, ...], value) of "[label =] expr [= expr ...] = value [unit]", else None.

  Unit words (m, km/h, g/mL, ohm, ...) are dropped; a leading part without digits is a label.
  """
  s = statement.strip().rstrip(".").strip()
  parts = [p.strip() for p in s.split("=")]
  if len(parts) >= 2 and not re.search(r"\d", parts[0]):
    parts = parts[1:]
  if len(parts) < 2:
    return None
  parts = [_UNIT_WORD.sub(" ", p).strip() for p in parts]
  value = parts[-1]
  if not _VALUE.fullmatch(value) or not all(parts[:-1]):
    return None
  return parts[:-1], value


def equation_step(a, op: str, b, c) -> dict:
  """One structured trace step `a op b = c` (the steps of arith and chain)."""
  return {"kind": "eq", "op": op, "args": [str(a), str(b)], "result": str(c),
          "text": f"{a} {op} {b} = {c}"}


def check_equation_steps(statements: Sequence[str], known: set) -> list[tuple[bool, str | None]]:
  """Check "expr = value" statements in order.

  A statement checks when every expression equals the value exactly and every number literal in
  the expressions is in `known` (the problem's quantities and domain constants) or is the value
  of an earlier statement. Returns (ok, canonical value or None) per statement.
  """
  known = set(known)
  out: list[tuple[bool, str | None]] = []
  for st in statements:
    parsed = parse_equation(st)
    if parsed is None:
      out.append((False, None))
      continue
    exprs, value_str = parsed
    value = answers_lib.parse_number(value_str)
    if value is None:
      out.append((False, None))
      continue
    ok = True
    for e in exprs:
      v, lits = evaluate(e)
      ok = ok and v is not None and v == value and all(x in known for x in lits)
    out.append((ok, fmt(value)))
    known.add(value)
  return out


def numbers_in(text: str) -> set:
  """The numbers written in a text, as Fractions."""
  return {Fraction(t) for t in NUMBER_IN_TEXT.findall(text)}


# ------------------------------------------------------------------------------------ Domain


def _levels(split: str, difficulty) -> tuple[int, ...]:
  if difficulty is None:
    return DEFAULT_LEVELS[split]
  levels = (difficulty,) if isinstance(difficulty, int) else tuple(difficulty)
  if not levels or any(not isinstance(l, int) or l not in LEVELS for l in levels):
    raise ValueError(f"difficulty should be an int or a sequence of ints in {LEVELS}, "
                     f"got {difficulty!r}")
  return levels


@dataclasses.dataclass(frozen=True)
class Domain:
  """The public interface of one synthetic domain, built from a DomainSpec."""
  spec: DomainSpec

  @property
  def name(self) -> str:
    return self.spec.name

  def _example(self, prob: Problem, split: str, level: int) -> Example:
    problem = f"{prob.question} {INSTRUCTION}"
    statements = [s["text"] for s in prob.steps]
    return Example(
        id=f"{self.name}-{split}-{content_hash(problem)[:12]}", domain=self.name, split=split,
        difficulty=level, problem=problem, answer=prob.answer,
        thinking=render_trace(statements, prob.answer), solution=render_solution(prob.answer),
        steps=[dict(s) for s in prob.steps], meta=dict(prob.meta, question=prob.question))

  def generate(self, split: str, n: int, seed: int, difficulty=None) -> list[Example]:
    """`n` distinct examples of `split` ("train", "eval", "ood"), deterministic in `seed`.

    difficulty: None (the split's default levels), an int or a sequence of ints in 1..5; each
    example draws its level uniformly from them.
    """
    if split not in SPLITS:
      raise ValueError(f"{self.name}.generate: unknown split {split!r}; use one of {SPLITS}")
    if not isinstance(n, int) or n < 0:
      raise ValueError(f"{self.name}.generate: n should be a non-negative int, got {n!r}")
    if not isinstance(seed, int):
      raise ValueError(f"{self.name}.generate: seed should be an int, got {seed!r}")
    levels = _levels(split, difficulty)
    return self._draw(split, n, levels, f"{split}/{seed}/{levels}")

  def _draw(self, split: str, n: int, levels: tuple[int, ...], stream: str) -> list[Example]:
    """`n` distinct problems owned by `split`, from the random stream named `stream`."""
    rng = random.Random(f"rlvr_jax.domains/{self.name}/{stream}")
    out: list[Example] = []
    seen: set[str] = set()
    attempts, max_attempts = 0, 100 * n + 1000
    while len(out) < n:
      attempts += 1
      if attempts > max_attempts:
        raise RuntimeError(
            f"{self.name}.generate: found only {len(out)} distinct {split} problems of {n} at "
            f"levels {levels} after {max_attempts} tries; ask for fewer or use harder levels")
      level = rng.choice(levels)
      prob = self.spec.make_problem(rng, level)
      problem = f"{prob.question} {INSTRUCTION}"
      if split_of(problem) != split or problem in seen:
        continue
      seen.add(problem)
      out.append(self._example(prob, split, level))
    return out

  def verify_answer(self, example_or_label, response_text: str) -> bool:
    """Whether the last \\boxed{} of the response matches the label: an Example's or a record's
    "answer", or a label string."""
    if isinstance(example_or_label, Example):
      label = example_or_label.answer
    elif isinstance(example_or_label, Mapping):
      label = str(example_or_label.get("answer"))
    else:
      label = str(example_or_label)
    return answers_lib.equivalent(answers_lib.extract_boxed(response_text), label)

  def verify_steps(self, example: Example, response_text: str) -> StepReport:
    """Check every "Step k:" line of a response against the problem of `example` (an Example
    or a problem record); labels as in the module docstring."""
    example = as_example(example)
    lines = parse_steps(response_text)
    boxed = answers_lib.extract_boxed(response_text)
    checks = self.spec.check_steps(example, [s for _, s in lines]) if lines else []
    ok = tuple(bool(c[0]) and num == i for i, ((num, _), c) in enumerate(zip(lines, checks), 1))
    first_wrong = next((i for i, o in enumerate(ok, 1) if not o), None)
    last_result = checks[-1][1] if checks else None
    follows = boxed is not None and last_result is not None and \
        answers_lib.equivalent(boxed, last_result)
    faithfulness = 0.0 if not follows else (1.0 if first_wrong is None else 0.5)
    return StepReport(first_wrong_step=first_wrong, answer_follows=follows, n_steps=len(lines),
                      parsed_ok=bool(lines) and boxed is not None, faithfulness=faithfulness,
                      step_ok=ok)

  def corrupt(self, example: Example, kind: str, rng: random.Random | int
              ) -> tuple[str, dict]:
    """An unfaithful trace of `example` and what was changed.

    kind "corrupted_step": a random non-final step made false (info["step"] is it), the right
    final answer kept; "unsupported_answer": the faithful steps with a wrong final answer
    (info["step"] None, info["answer"] the new answer); "foreign_steps": the steps of another
    problem of this domain with this problem's answer (info["step"] 1, info["foreign_problem"]).
    info["label"] is the faithfulness verify_steps should give the text.
    """
    rng = as_rng(rng)
    example = as_example(example)
    statements = [s["text"] for s in example.steps]
    info: dict[str, Any] = {"kind": kind, "label": CORRUPTION_LABELS.get(kind)}
    if kind == "corrupted_step":
      if len(statements) < 2:
        raise ValueError(f"{example.id}: corrupted_step needs at least 2 steps")
      index = rng.randrange(1, len(statements))
      new = self.spec.perturb_step(example, index, rng)
      info.update(step=index, original=statements[index - 1], corrupted=new)
      statements[index - 1] = new
      return render_trace(statements, example.answer), info
    if kind == "unsupported_answer":
      wrong = wrong_number(example.answer, rng)
      info.update(step=None, answer=wrong)
      return render_trace(statements, wrong), info
    if kind == "foreign_steps":
      for _ in range(1000):
        prob = self.spec.make_problem(rng, example.difficulty)
        other = self._example(prob, example.split, example.difficulty)
        if (other.problem != example.problem
            and not answers_lib.equivalent(other.answer, example.answer)
            and self.spec.foreign_ok(example, other)):
          info.update(step=1, foreign_problem=other.problem, foreign_answer=other.answer)
          return render_trace([s["text"] for s in other.steps], example.answer), info
      raise RuntimeError(f"{example.id}: found no foreign problem to borrow steps from")
    raise ValueError(f"corrupt: unknown kind {kind!r}; use one of {CORRUPTIONS}")

  def corpus(self, n_docs: int, seed: int) -> list[str]:
    """`n_docs` documents for continual pre-training, deterministic in `seed`: about 60% worked
    examples (problem + thinking trace; train-split problems at levels 1-3, never eval or ood
    ones) and 40% rule/fact text."""
    if not isinstance(n_docs, int) or n_docs < 0:
      raise ValueError(f"{self.name}.corpus: n_docs should be a non-negative int, got {n_docs!r}")
    rng = random.Random(f"rlvr_jax.domains/{self.name}/corpus/{seed}")
    kinds = ["example" if rng.random() < 0.6 else "facts" for _ in range(n_docs)]
    # train-split problems (never eval/ood) from a stream of their own, so that a corpus does
    # not hold the traces of exactly the problems generate("train", n, seed) gives for RL
    examples = iter(self._draw("train", kinds.count("example"), DEFAULT_LEVELS["train"],
                               f"corpus/{seed}"))
    docs = []
    for kind in kinds:
      if kind == "example":
        ex = next(examples)
        docs.append(f"{ex.problem}\n{ex.thinking}")
      else:
        docs.append(self.spec.fact_doc(rng))
    return docs
