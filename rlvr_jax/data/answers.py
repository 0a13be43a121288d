r"""Final-answer extraction and comparison, shared by the domain verifiers and the RL rewards.

Rules (user-facing; tests/test_answers.py pins each one):

extract_boxed(text) -> str | None
  The content of the LAST `\boxed{...}` or `\fbox{...}` in `text`, up to the brace that balances
  the opening one, so nested braces are kept: `\boxed{\frac{1}{2}}` -> `\frac{1}{2}`. Escaped
  braces `\{ \}` inside do not count. The brace-less form `\boxed 5` gives the text up to the
  next space or `$`. None when there is no `\boxed`/`\fbox`, or when the last one is never
  closed: a response cut off inside its final box has no answer, even if an earlier box exists
  (as verl's `last_boxed_only_string`).

extract_gsm8k(text) -> str | None
  The text after the LAST `####`, up to the end of that line, stripped, with `$` and thousands
  commas removed (`#### 1,234` -> `1234`). None when there is no `####` or nothing follows it.

extract_answer(text, style="auto") -> str | None
  style "boxed": extract_boxed; "gsm8k": extract_gsm8k; "auto": the boxed answer when there is
  one, else the gsm8k one. Any other style raises ValueError.

normalize_answer(s) -> str
  A canonical string, applied to both sides before comparing:
  1. `\$`, `$`, `\(`, `\)`, `\[`, `\]` are removed; `\text{X}`, `\textbf{X}`, `\mathrm{X}`,
     `\mbox{X}` become `X`; `\left`, `\right` and the spacing commands `\! \, \; \: \ ` go;
     `\dfrac`/`\tfrac` become `\frac`; `^\circ`, `^{\circ}`, `\%`, `%` and `{,}` (a LaTeX
     thousands separator, becomes `,`) are removed / replaced.
  2. all whitespace is removed, then trailing `.` characters, then one pair of braces that
     wraps the whole string (`{5}` -> `5`).
  3. a short left-hand side is dropped: `x=5` -> `5` (at most 2 characters before a single `=`).
  4. `\frac12` -> `\frac{1}{2}`.
  5. numbers are canonicalised exactly (rational arithmetic, no float tolerance): integers,
     decimals, `a/b`, `\frac{a}{b}`, `-\frac{a}{b}`, with an optional sign and thousands commas
     (`1,234`, only in groups of three digits) all become the reduced form: an integer `3`
     ("3.0", "03", "+3", "6/2" all give "3") or `p/q` ("0.5", "1/2", "\frac{2}{4}" give "1/2").
     Anything else (expressions, tuples like `(1,2)`, words) is kept as the string of step 2-4.

  normalize_answer is a display / legacy canonical form; answers are NOT matched by it.

equivalent(pred, label) -> bool   (answers_match is the same function under its old name)
  THE answer matcher: RL rewards (rl.rewards), eval (pass/avg/maj), the data protocols (label
  replacement) and the synthetic domains all call it, so they can never disagree.
  1. False when either side has no answer (None, or only spaces / `$` / braces / empty `\text{}`).
  2. prenormalize both sides: strip, drop one trailing sentence period (`7.`), join thin-space
     thousands groups (`1\,000`, `1 000` -> `1000`): forms math-verify misreads.
  3. fast path (fast_decision), only where certain to agree with math-verify: True for
     identical strings, for identical light forms (`$`, `\left`/`\right` dropped, `\dfrac`/
     `\tfrac` -> `\frac`, spaces next to brackets/operators dropped), or for equal exact
     numbers (`0.5` = `.5` = `0.50` = `1/2` = `\frac{1}{2}`, `1,000` = `1000`); False only for
     two different integers/fractions without a decimal point (math-verify compares those
     exactly too). Anything else goes on.
  4. a roster set `\{1,2\}` is never a tuple/interval `(1,2)` (math-verify says it is).
  5. math-verify (`verify(parse(label), parse(pred))`, label as gold, cached): sympy
     equivalence, so `2x+1` = `1+2x`, `\sqrt{8}` = `2\sqrt{2}`, `(1,2]` = `(1, 2]`, `5 cm` = `5`
     (units are ignored), `50\%` = `50` = `0.5`, decimals equal when they agree to 6 places
     (`0.333333` = `1/3`, `0.333` != `1/3`). Errors, timeouts, answers over 300 characters and
     ones sympy may never finish on (power towers, huge exponents/factorials) count as not
     equivalent. The timeout is signal based, so it is used on the main thread only; other
     threads run without one (math-verify raises otherwise).

answer_groups(answers) -> list[int | None] / majority_group(answers) -> int | None
  Grouping by equivalence (maj@k, the most frequent wrong answer): each answer joins the first
  earlier group whose first member it is `equivalent` to; its key is that member's index (None
  without an answer). majority_group is the key of the largest group, ties to the earliest.
"""
from __future__ import annotations

import collections
import functools
import re
import threading
from collections.abc import Sequence
from fractions import Fraction

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def _boxed_content_span(text: str, start: int, cmd: str) -> tuple[int, int] | None:
  """[begin, end) of the content of the box command `cmd` found at text[start]; None when the
  box never closes."""
  i = start + len(cmd)
  j = i
  while j < len(text) and text[j] == " ":
    j += 1
  if j < len(text) and text[j] == "{":
    depth = 0
    k = j
    while k < len(text):
      ch = text[k]
      if ch == "\\":  # skip the escaped character (\{, \}, \\)
        k += 2
        continue
      if ch == "{":
        depth += 1
      elif ch == "}":
        depth -= 1
        if depth == 0:
          return j + 1, k
      k += 1
    return None
  if j > i:  # "\boxed 5": up to the next space or "$"
    m = re.match(r"[^\s$]+", text[j:])
    return (j, j + m.end()) if m else None
  return None


def boxed_spans(text: str | None) -> list[tuple[int, int]]:
  """[begin, end) character spans of the contents of every `\\boxed{...}` / `\\fbox{...}` of
  `text`, in order (the last one is what `extract_boxed` returns)."""
  spans: list[tuple[int, int]] = []
  pos = 0
  while text:
    hits = [(i, c) for c in _BOX_COMMANDS if (i := text.find(c, pos)) >= 0]
    if not hits:
      break
    start, cmd = min(hits)
    span = _boxed_content_span(text, start, cmd)
    if span is not None:
      spans.append(span)
    pos = start + len(cmd)
  return spans


def extract_boxed(text: str | None) -> str | None:
  """The content of the last `\\boxed{...}` / `\\fbox{...}` of `text` (rules in the docstring)."""
  if not text:
    return None
  start, cmd = max((text.rfind(c), c) for c in _BOX_COMMANDS)
  if start < 0:
    return None
  span = _boxed_content_span(text, start, cmd)
  return None if span is None else text[span[0]:span[1]]


def extract_gsm8k(text: str | None) -> str | None:
  """The GSM8K final answer: the text after the last `####` on its line (rules in docstring)."""
  if not text or "####" not in text:
    return None
  tail = text[text.rfind("####") + 4:].split("\n", 1)[0]
  tail = tail.replace("$", "").strip()
  if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", tail):
    tail = tail.replace(",", "")
  return tail or None


def extract_answer(text: str | None, style: str = "auto") -> str | None:
  """The final answer of `text` by `style` in {"boxed", "gsm8k", "auto"}."""
  if style == "boxed":
    return extract_boxed(text)
  if style == "gsm8k":
    return extract_gsm8k(text)
  if style == "auto":
    boxed = extract_boxed(text)
    return boxed if boxed is not None else extract_gsm8k(text)
  raise ValueError(f"extract_answer: unknown style {style!r}; use 'boxed', 'gsm8k' or 'auto'")


_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_FRAC = re.compile(r"([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}")
_SLASH = re.compile(r"([+-]?\d+)/([+-]?\d+)")


def parse_number(s: str) -> Fraction | None:
  """An exact rational for an integer, decimal, `a/b` or `\\frac{a}{b}` string, else None."""
  s = s.strip()
  if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", s):
    s = s.replace(",", "")
  try:
    if _NUMBER.fullmatch(s):
      return Fraction(s.rstrip(".") if s.endswith(".") else s)
    m = _SLASH.fullmatch(s)
    if m:
      return Fraction(int(m.group(1)), int(m.group(2)))
    m = _FRAC.fullmatch(s)
    if m:
      value = Fraction(int(m.group(2)), int(m.group(3)))
      return -value if m.group(1) == "-" else value
  except ZeroDivisionError:
    return None
  return None


def format_number(x: Fraction) -> str:
  """The canonical string of an exact rational: "3", "-3", "1/2"."""
  x = Fraction(x)
  return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _strip_outer_braces(s: str) -> str:
  if len(s) >= 2 and s[0] == "{" and s[-1] == "}":
    depth = 0
    for k, ch in enumerate(s):
      depth += ch == "{"
      depth -= ch == "}"
      if depth == 0 and k < len(s) - 1:
        return s  # the first brace closes before the end: "{a}{b}"
    return s[1:-1]
  return s


def normalize_answer(s: str | None) -> str:
  """The canonical form of an answer string (rules in the module docstring); "" for None."""
  if s is None:
    return ""
  s = str(s)
  for token in ("\\$", "$", "\\(", "\\)", "\\[", "\\]"):
    s = s.replace(token, "")
  prev = None
  while prev != s:
    prev, s = s, _WRAPPERS.sub(r"\1", s)
  s = re.sub(r"\\left(?![a-zA-Z])|\\right(?![a-zA-Z])", "", s)
  s = re.sub(r"\\[!,;: ]", "", s)
  s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
  for token in ("^{\\circ}", "^\\circ", "\\%", "%"):
    s = s.replace(token, "")
  s = s.replace("{,}", ",")
  s = re.sub(r"\s+", "", s).rstrip(".")
  s = _strip_outer_braces(s)
  if s.count("=") == 1:
    lhs, rhs = s.split("=")
    if len(lhs) <= 2 and rhs:
      s = rhs
  s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
  value = parse_number(s)
  return format_number(value) if value is not None else s


def answers_match(pred: str | None, label: str | None) -> bool:
  """Whether `pred` and `label` are the same answer: `equivalent(pred, label)` (kept as a name
  for callers written before `equivalent`; there is one matcher)."""
  return equivalent(pred, label)


# ------------------------------------------------------------------------ answer equivalence
_VERIFY_TIMEOUT_S = 5        # math-verify's signal timeout, main thread only
_MAX_VERIFY_CHARS = 300      # longer answers are not handed to sympy
_MAX_FAST_DIGITS = 15        # exact-number fast path: beyond this a float could round
_EMPTY_PARTS = re.compile(r"\\(?:text|textbf|mathrm|mbox|boxed)\s*\{\s*\}|\\[,;:! ]|[\s${}]")
_SPACED_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:(?:,\\!|\\[,!; ]|\{,\}| )\d{3})+(?:\.\d+)?")
_THOUSANDS_SEP = re.compile(r",\\!|\\[,!; ]|\{,\}| ")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])\s*")
_SMALL_FRAC = re.compile(r"\\[dt]frac(?![A-Za-z])")
_PUNCT = r"()\[\]{}+\-=^_/*<>|"
_PUNCT_SPACE = re.compile(rf"(?<!\\)\s+(?=[{_PUNCT}])|(?<=[{_PUNCT}])\s+")
_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.\d+|\.\d+)")
_GROUPED = re.compile(r"[+-]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
_RATIO = re.compile(r"([+-]?)(?:(\d+)/(\d+)|\\frac\{(\d+)\}\{(\d+)\}|\\frac(\d)(\d))")
# Inputs sympy may never finish on (no timeout is possible off the main thread): power towers,
# exponents of 6+ digits, and factorials in answers holding a power or a 5+ digit number.
_RUNAWAY = re.compile(r"\^\s*\{[^{}]*\^|\^\s*\{?\s*\d{6,}|(?=.*!)(?=.*(?:\^|\d{5}))")


def prenormalize(s: str) -> str:
  """The form both sides take before any comparison, fixing what math-verify misreads: strip
  spaces, drop one trailing sentence period (`7.` -> `7`; math-verify cannot parse it), and join
  a number's thin-space thousands groups (`1\\,000`, `1 000` -> `1000`; math-verify reads a
  product)."""
  s = str(s).strip()
  if s.endswith(".") and not s.endswith(".."):
    s = s[:-1].rstrip()
  if _SPACED_THOUSANDS.fullmatch(s):
    s = _THOUSANDS_SEP.sub("", s)
  return s


def has_answer(s: str | None) -> bool:
  """Whether `s` holds an answer at all: not None and something is left once spaces, `$`,
  braces, spacing commands and empty `\\text{}` / `\\boxed{}` are removed."""
  return s is not None and bool(_EMPTY_PARTS.sub("", prenormalize(s)))


def _light_form(s: str) -> str:
  """Purely notational rewrites that cannot change an answer's meaning: `$` and `\\$` go,
  `\\left` / `\\right` go, `\\dfrac` / `\\tfrac` become `\\frac`, and spaces next to brackets
  and operators go (spaces between words, digits or after a command are kept: `\\pi r`,
  `5 cm`, `1 2`)."""
  s = s.replace("\\$", "").replace("$", "")
  s = _LEFT_RIGHT.sub("", s)
  s = _SMALL_FRAC.sub(r"\\frac", s)
  return _PUNCT_SPACE.sub("", s).strip()


def _exact_number(s: str) -> tuple[Fraction, bool] | None:
  """(value, exact) for an integer, decimal, thousands-grouped number, `a/b` or `\\frac{a}{b}`
  of at most 15 digits; exact is False for decimals (math-verify reads those as floats and
  compares them rounded). None for anything else."""
  if sum(ch.isdigit() for ch in s) > _MAX_FAST_DIGITS:
    return None
  if _INTEGER.fullmatch(s):
    return Fraction(int(s)), True
  if _DECIMAL.fullmatch(s) or _GROUPED.fullmatch(s):
    return Fraction(s.replace(",", "")), "." not in s
  m = _RATIO.fullmatch(s)
  if m:
    num, den = [int(g) for g in m.groups()[1:] if g is not None]
    if den == 0:
      return None
    value = Fraction(num, den)
    return (-value if m.group(1) == "-" else value), True
  return None


def fast_decision(pred: str, label: str) -> bool | None:
  """Equivalence of two prenormalised answers when it is certain without math-verify, else
  None. True: identical strings, identical `_light_form`s, or equal exact numbers. False: only
  two different integers / fractions (no decimal point), which math-verify also compares
  exactly (sympy Integer / Rational equality). Everything else is left to math-verify."""
  if pred == label:
    return True
  p, q = _light_form(pred), _light_form(label)
  if p == q:
    return True
  a, b = _exact_number(p), _exact_number(q)
  if a is None or b is None:
    return None
  if a[0] == b[0]:
    return True
  return False if a[1] and b[1] else None


def _is_roster_set(s: str) -> bool:
  return s.startswith("\\{") and s.endswith("\\}") and not re.search(r"\||\\mid|:", s)


def _is_bracketed(s: str) -> bool:
  return s[:1] in "([" and s[-1:] in ")]" and "," in s


def _set_versus_tuple(pred: str, label: str) -> bool:
  """Whether one side is a roster set `\\{a, b\\}` and the other a tuple or interval `(a, b)`.
  They are never the same answer, but math-verify matches a set with an open interval of the
  same two numbers (it reads `(1,2)` as maybe a pair), so this is decided here."""
  p, q = _light_form(pred), _light_form(label)
  return (_is_roster_set(p) and _is_bracketed(q)) or (_is_roster_set(q) and _is_bracketed(p))


def _verify_timeout() -> int | None:
  """math-verify's timeouts use signal.alarm, which only works on the main thread (elsewhere it
  raises): a timeout there, None (no timeout) on other threads."""
  return _VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=1 << 14)
def _parsed(s: str) -> tuple:
  """math-verify's parse of `\\boxed{s}` (cached: eval meets the same strings many times)."""
  from math_verify import parse
  return tuple(parse("\\boxed{" + s + "}", parsing_timeout=_verify_timeout()))


@functools.lru_cache(maxsize=1 << 16)
def math_verify_equivalent(pred: str, label: str) -> bool:
  """math-verify's verdict on two prenormalised answers, `label` as the gold side (cached).
  Any error or timeout counts as not equivalent; answers over 300 characters or that could make
  sympy run away (`_RUNAWAY`) are not handed to it and count as not equivalent."""
  if any(len(s) > _MAX_VERIFY_CHARS or _RUNAWAY.search(s) for s in (pred, label)):
    return False
  from math_verify import verify
  from math_verify.errors import TimeoutException
  try:
    gold, target = _parsed(label), _parsed(pred)
    return bool(gold and target and verify(list(gold), list(target),
                                           timeout_seconds=_verify_timeout()))
  except (Exception, TimeoutException):  # TimeoutException is a BaseException
    return False  # garbage can make math-verify raise: not shown equal


def equivalent(pred: str | None, label: str | None) -> bool:
  """Whether answer `pred` is the same answer as `label` (rules in the module docstring): the
  one matcher of rewards, eval, the data protocols and the domains. False when either side has
  no answer; else the certain fast path (`fast_decision`), else the set-versus-tuple rule, else
  math-verify."""
  if not (has_answer(pred) and has_answer(label)):
    return False
  p, q = prenormalize(pred), prenormalize(label)
  decided = fast_decision(p, q)
  if decided is not None:
    return decided
  if _set_versus_tuple(p, q):
    return False
  return math_verify_equivalent(p, q)


def answer_groups(answers: Sequence[str | None]) -> list[int | None]:
  """For each answer, the index of the first answer of its group (its canonical key); None for
  one without an answer. An answer joins the first earlier group whose representative (first
  member) it is `equivalent` to, else starts its own: deterministic, and `0.5`, `1/2` and
  `\\frac{1}{2}` land in one group though no string form is shared."""
  representatives: list[int] = []
  groups: list[int | None] = []
  for i, a in enumerate(answers):
    group = None
    if has_answer(a):
      group = next((r for r in representatives if equivalent(a, answers[r])), None)
      if group is None:
        representatives.append(i)
        group = i
    groups.append(group)
  return groups


def majority_group(answers: Sequence[str | None]) -> int | None:
  """The index of the first answer of the largest group of `answer_groups`; ties go to the group
  seen first. None when no answer has content."""
  counts = collections.Counter(g for g in answer_groups(answers) if g is not None)
  if not counts:
    return None
  return min(counts, key=lambda g: (-counts[g], g))
