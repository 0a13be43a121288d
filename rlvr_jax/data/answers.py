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

answers_match(pred, label) -> bool
  normalize_answer(pred) == normalize_answer(label); False when either is None or normalises
  to the empty string. "0.333" does not match "1/3" (exact comparison).
"""
from __future__ import annotations

import re
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
  """Whether `pred` and `label` are the same answer after normalize_answer (exact)."""
  if pred is None or label is None:
    return False
  a, b = normalize_answer(pred), normalize_answer(label)
  return bool(a) and a == b
