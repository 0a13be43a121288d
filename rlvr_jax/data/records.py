"""One record schema for prompts with verifiable answers, normalised from real-data layouts.

A *problem record* is a dict with these fields (all JSON-serialisable):

  id           str   stable id (the row's id/unique_id/idx/uid/extra_info.index, else FILE-ROW)
  domain       str   e.g. "math", a synthetic domain name, or the row's data_source
  split        str   "train", "eval", "ood", ... ("" when unknown)
  difficulty   int   -1 when unknown (MATH "Level 3" -> 3)
  problem      str   the user-visible problem text (the user turn of a chat prompt)
  answer       str   the label the reward is computed against (may be a replaced, noisy label)
  true_answer  str   the ground truth (== answer unless protocols.replace_labels changed it)
  thinking     str   a step-by-step trace ("" when none)
  solution     str   the final solution text ("" when none)
  system       str   a system prompt that came with the data ("" when none)
  messages     list[{role, content}] | None   the original chat prompt, kept verbatim (verl)
  meta         dict  small extras (source location, data_source, subject, all answers, ...)

A *text record* (CPT corpora) is {"text": str} (plus "id" when known).

Layouts understood by `normalize_row` (layout="auto" picks one per row):

  verl   the paper's released parquet: `prompt` is a list of {role, content} (system/user
         turns); answer = `reward_model.ground_truth` (a list, or a JSON-encoded list, gives
         its first element; all are kept in meta["answers"]).
  gsm8k  `question` + `answer` where answer is "reasoning #### final": answer = the text after
         the last "####" (answers.extract_gsm8k); the reasoning before it becomes `thinking`
         (`solution` stays empty: pipelines.final_solution states the boxed answer).
  math   `problem` + `solution` with no `answer` field: answer = the last \\boxed{...} of the
         solution (answers.extract_boxed); `level` gives the difficulty.
  qa     a problem field (`problem`, `question` or a string `prompt`) + an `answer` (or,
         failing that, a `solution`, used verbatim as the answer when it has no \\boxed{}).
  text   a `text` field only (CPT corpora).

Bad rows: a row that is not an object, a problem field that is missing, empty or not a string,
a chat prompt that is not a list of {role, content} strings, or a `reward_model` that is not an
object raises DataError naming the file, line/row and field. A missing answer or an over-long
prompt is governed by `Policy`: "drop" (counted in the returned counts) or "error".
`load_records` logs a warning naming the file, how many rows it dropped and why; when it keeps
none of a file's rows it raises DataError naming the file and what the rows lack.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rlvr_jax.data.sources import DataError, open_source

log = logging.getLogger(__name__)

PROBLEM_KEYS = ("problem", "question", "prompt")
LAYOUTS = ("auto", "verl", "gsm8k", "math", "qa", "text")
_ID_KEYS = ("id", "unique_id", "idx", "uid", "example_id")
_META_KEYS = ("data_source", "ability", "subject", "type", "level", "source", "category",
              "source_set")


@dataclasses.dataclass(frozen=True)
class Policy:
  """What to do with rows that parse but cannot be used.

  missing_answer: "drop" (count it, skip it) or "error" (raise DataError naming the row).
  too_long: same choices, for a prompt longer than `max_prompt_chars` here, or longer than a
    pipeline's token limit (pipelines.rl_dataset / sft_dataset use this policy too).
  max_prompt_chars: character limit on the problem text; None for no limit.
  """
  missing_answer: str = "drop"
  too_long: str = "drop"
  max_prompt_chars: int | None = None

  def __post_init__(self):
    for name in ("missing_answer", "too_long"):
      if getattr(self, name) not in ("drop", "error"):
        raise ValueError(f"Policy.{name} must be 'drop' or 'error', got {getattr(self, name)!r}")


def _answers():
  from rlvr_jax.data import answers  # written alongside; imported lazily
  return answers


# ------------------------------------------------------------------------------------- helpers


def _str_field(row: Mapping, key: str, where: str, *, required: bool = True) -> str | None:
  if key not in row or row[key] is None:
    if required:
      raise DataError(f"{where}: missing field {key!r}")
    return None
  value = row[key]
  if not isinstance(value, str):
    raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
  return value


def _answer_str(value: Any, where: str, field: str) -> str | None:
  """A label value as a stripped string; None when missing or empty."""
  if value is None:
    return None
  if isinstance(value, bool):
    raise DataError(f"{where}: field {field!r} must be a string or a number, got bool")
  if isinstance(value, float):
    value = str(int(value)) if value.is_integer() else repr(value)
  elif isinstance(value, int):
    value = str(value)
  if not isinstance(value, str):
    raise DataError(f"{where}: field {field!r} must be a string or a number, got "
                    f"{type(value).__name__}")
  value = value.strip()
  return value or None


def _difficulty(row: Mapping, where: str) -> int:
  for key in ("difficulty", "level"):
    value = row.get(key)
    if value is None or isinstance(value, bool):
      continue
    if isinstance(value, (int, float)):
      return int(value)
    if isinstance(value, str):
      m = re.search(r"-?\d+", value)
      if m:
        return int(m.group())
  return -1


def _row_id(row: Mapping, where: str, index: int | None) -> str:
  for key in _ID_KEYS:
    if row.get(key) is not None and not isinstance(row[key], (dict, list)):
      return str(row[key])
  extra = row.get("extra_info")
  if isinstance(extra, Mapping) and extra.get("index") is not None:
    prefix = row.get("data_source")
    return f"{prefix}-{extra['index']}" if isinstance(prefix, str) else str(extra["index"])
  stem = os.path.basename(where.split(":")[0]).split(".")[0] or "row"
  return f"{stem}-{index if index is not None else 0}"


def _meta(row: Mapping, where: str) -> dict:
  meta = {"where": where}
  for key in _META_KEYS:
    value = row.get(key)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
      meta[key] = value
  return meta


def detect_layout(row: Mapping, where: str = "<row>") -> str:
  """The layout of one raw row (see the module docstring); raises DataError if none fits."""
  if not isinstance(row, Mapping):
    raise DataError(f"{where}: expected an object with named fields, got {type(row).__name__}")
  if isinstance(row.get("prompt"), (list, tuple)) or "reward_model" in row:
    return "verl"
  has_problem = any(isinstance(row.get(k), str) for k in PROBLEM_KEYS)
  if not has_problem:
    if "text" in row:
      return "text"
    present = [k for k in PROBLEM_KEYS if k in row]
    if present:
      k = present[0]
      raise DataError(f"{where}: field {k!r} must be a string, got {type(row[k]).__name__}")
    raise DataError(f"{where}: no problem field: expected one of {PROBLEM_KEYS} (or 'text' for "
                    f"a corpus); found fields {sorted(row)}")
  answer = row.get("answer")
  if isinstance(answer, str) and "####" in answer and "question" in row:
    return "gsm8k"
  if answer is None and isinstance(row.get("solution"), str):
    return "math"
  return "qa"


def _problem_text(row: Mapping, where: str) -> tuple[str, str]:
  for key in PROBLEM_KEYS:
    if key in row and row[key] is not None:
      value = _str_field(row, key, where)
      if not value.strip():
        raise DataError(f"{where}: field {key!r} is empty")
      return key, value
  raise DataError(f"{where}: no problem field: expected one of {PROBLEM_KEYS}; found fields "
                  f"{sorted(row)}")


def _chat(row: Mapping, where: str) -> list[dict]:
  prompt = row.get("prompt")
  if isinstance(prompt, str):  # a verl row whose prompt is plain text
    return [{"role": "user", "content": prompt}]
  if not isinstance(prompt, (list, tuple)) or not prompt:
    raise DataError(f"{where}: field 'prompt' must be a non-empty list of {{role, content}} "
                    f"messages, got {type(prompt).__name__}")
  messages = []
  for k, m in enumerate(prompt):
    if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) \
        or not isinstance(m.get("content"), str):
      raise DataError(f"{where}: field 'prompt[{k}]' must be an object with string 'role' and "
                      f"'content', got {m!r:.80}")
    messages.append({"role": m["role"], "content": m["content"]})
  if not any(m["role"] == "user" for m in messages):
    raise DataError(f"{where}: field 'prompt' has no 'user' message (roles "
                    f"{[m['role'] for m in messages]})")
  return messages


def _verl_answers(row: Mapping, where: str) -> list[str]:
  rm = row.get("reward_model")
  if rm is None:
    return []
  if not isinstance(rm, Mapping):
    raise DataError(f"{where}: field 'reward_model' must be an object with 'ground_truth', got "
                    f"{type(rm).__name__}")
  gt = rm.get("ground_truth")
  if isinstance(gt, str):
    s = gt.strip()
    if s.startswith("[") and s.endswith("]"):
      try:
        parsed = json.loads(s)
        if isinstance(parsed, list) and all(isinstance(x, (str, int, float)) for x in parsed):
          gt = parsed
      except json.JSONDecodeError:
        pass
  values = gt if isinstance(gt, (list, tuple)) else [gt]
  out = []
  for k, v in enumerate(values):
    a = _answer_str(v, where, "reward_model.ground_truth")
    if a is not None:
      out.append(a)
  return out


# ------------------------------------------------------------------------------------ normalise


def normalize_row(row: Any, *, where: str, index: int | None = None, layout: str = "auto",
                  policy: Policy = Policy(), domain: str | None = None,
                  split: str | None = None) -> tuple[dict | None, str]:
  """One raw row -> (problem record, "ok") or (None, "missing_answer" | "too_long").

  where: the row's location for messages ("data/train.jsonl:line 7"); index: its row number
  (used for a fallback id). domain/split override what the row says. Raises DataError for a
  malformed row, and for a missing answer / over-long prompt when `policy` says "error".
  """
  if layout not in LAYOUTS:
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
  if not isinstance(row, Mapping):
    raise DataError(f"{where}: expected an object with named fields, got {type(row).__name__}")
  if layout == "auto":
    layout = detect_layout(row, where)
  if layout == "text":
    raise DataError(f"{where}: a 'text' corpus row is not a problem; use text_record() or the "
                    "CPT pipeline for it")
  system, messages, thinking, solution = "", None, "", ""
  answers: list[str] = []
  if layout == "verl":
    messages = _chat(row, where)
    problem = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    if not problem.strip():
      raise DataError(f"{where}: field 'prompt' has an empty user message")
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    answers = _verl_answers(row, where)
  else:
    _, problem = _problem_text(row, where)
    if layout == "gsm8k":
      raw = _str_field(row, "answer", where)
      final = _answers().extract_gsm8k(raw)
      answers = [final] if final else []
      thinking = raw.rsplit("####", 1)[0].strip() if "####" in raw else raw.strip()
    elif layout == "math":
      solution = _str_field(row, "solution", where)
      explicit = _answer_str(row.get("answer"), where, "answer")
      boxed = _answers().extract_boxed(solution)
      a = explicit or boxed
      answers = [a] if a else []
    else:  # qa
      a = _answer_str(row.get("answer"), where, "answer")
      sol = _str_field(row, "solution", where, required=False) or ""
      if a is None and sol:
        a = _answers().extract_boxed(sol) or _answer_str(sol, where, "solution")
      solution = sol
      answers = [a] if a else []
    if isinstance(row.get("thinking"), str):
      thinking = row["thinking"]
    if isinstance(row.get("system"), str):
      system = row["system"]
  if not answers:
    if policy.missing_answer == "error":
      raise DataError(f"{where}: no answer found (layout {layout!r}: "
                      f"{_ANSWER_FIELD[layout]}); set Policy(missing_answer='drop') to skip "
                      "such rows")
    return None, "missing_answer"
  if policy.max_prompt_chars is not None and len(problem) > policy.max_prompt_chars:
    if policy.too_long == "error":
      raise DataError(f"{where}: field 'problem' has {len(problem)} characters, over the limit "
                      f"of {policy.max_prompt_chars}; set Policy(too_long='drop') to skip such "
                      "rows")
    return None, "too_long"
  meta = _meta(row, where)
  if len(answers) > 1:
    meta["answers"] = answers
  row_domain = row.get("domain") if isinstance(row.get("domain"), str) else None
  row_split = row.get("split") if isinstance(row.get("split"), str) else None
  extra = row.get("extra_info")
  if row_split is None and isinstance(extra, Mapping) and isinstance(extra.get("split"), str):
    row_split = extra["split"]
  record = {
      "id": _row_id(row, where, index),
      "domain": domain or row_domain or (row.get("data_source") if isinstance(
          row.get("data_source"), str) else "") or "",
      "split": split or row_split or "",
      "difficulty": _difficulty(row, where),
      "problem": problem,
      "answer": answers[0],
      "true_answer": answers[0],
      "thinking": thinking,
      "solution": solution,
      "system": system,
      "messages": messages,
      "meta": meta,
  }
  return record, "ok"


_ANSWER_FIELD = {
    "verl": "reward_model.ground_truth is missing or empty",
    "gsm8k": "field 'answer' has no '#### final' part",
    "math": "field 'solution' has no \\boxed{...} and there is no 'answer' field",
    "qa": "field 'answer' is missing or empty",
}
# Where each layout looks for the answer (for messages about rows that have none).
_ANSWER_LOOKED_FOR = {
    "verl": "reward_model.ground_truth",
    "gsm8k": "the '#### final' part of 'answer'",
    "math": "'answer', then the last \\boxed{...} of 'solution'",
    "qa": "'answer', then 'solution'",
}


def text_record(row: Any, *, where: str, text_key: str = "text") -> str:
  """The document text of a CPT corpus row ({"text": ...} or a bare string)."""
  if isinstance(row, str):
    return row
  if not isinstance(row, Mapping):
    raise DataError(f"{where}: expected an object with a {text_key!r} field, got "
                    f"{type(row).__name__}")
  return _str_field(row, text_key, where)


def from_example(example: Any) -> dict:
  """A synthetic-domain Example (rlvr_jax.data.domains) as a problem record."""
  get = (lambda k, d=None: example.get(k, d)) if isinstance(example, Mapping) else \
      (lambda k, d=None: getattr(example, k, d))
  meta = get("meta") or {}
  meta = dict(meta) if isinstance(meta, Mapping) else {"meta": meta}
  steps = get("steps")
  if steps is not None:
    meta.setdefault("steps", jsonable(steps))
  answer = str(get("answer"))
  return {
      "id": str(get("id")),
      "domain": str(get("domain") or ""),
      "split": str(get("split") or ""),
      "difficulty": int(get("difficulty") if get("difficulty") is not None else -1),
      "problem": str(get("problem")),
      "answer": answer,
      "true_answer": answer,
      "thinking": str(get("thinking") or ""),
      "solution": str(get("solution") or ""),
      "system": "",
      "messages": None,
      "meta": jsonable(meta),
  }


def jsonable(x):
  """x with mappings, sequences and dataclasses turned into plain JSON values (dict keys as str)."""
  if isinstance(x, Mapping):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    return jsonable(dataclasses.asdict(x))
  if isinstance(x, (str, int, float, bool)) or x is None:
    return x
  if hasattr(x, "item"):
    return x.item()
  return str(x)


def domain_records(name: str, split: str, n: int, seed: int, difficulty: int | None = None
                   ) -> list[dict]:
  """`n` problem records of synthetic domain `name` (rlvr_jax.data.domains.get_domain)."""
  from rlvr_jax.data.domains import get_domain
  return [from_example(ex) for ex in get_domain(name).generate(split, n, seed,
                                                              difficulty=difficulty)]


# ---------------------------------------------------------------------------------- bulk load


def empty_counts() -> dict[str, int]:
  return {"rows": 0, "kept": 0, "dropped_missing_answer": 0, "dropped_too_long": 0}


def load_records(source: Any, *, layout: str = "auto", policy: Policy = Policy(),
                 domain: str | None = None, split: str | None = None,
                 limit: int | None = None) -> tuple[list[dict], dict[str, int]]:
  """All problem records of a source, and counts {rows, kept, dropped_missing_answer,
  dropped_too_long} (rows read, rows kept, rows dropped for want of an answer / for a problem
  over policy.max_prompt_chars).

  source: a path / glob / "tfds:NAME" (opened with sources.open_source) or a reader from
  sources.py (anything with __len__, __getitem__ and optionally where(i)), or a list of rows.
  Dropped rows are also logged (a warning naming the file, the counts and the first dropped
  row). A source with no rows, or none usable, raises DataError naming the file and what its
  rows lack (rather than leaving the caller with an empty list to explain).
  """
  name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
  if isinstance(source, (str, os.PathLike)):
    source = open_source(os.fspath(source), split=split or "train")
  layout = getattr(source, "layout", None) or layout   # paper_sets rows come in their own layout
  where = getattr(source, "where", None) or (lambda i: f"<rows>:row {i}")
  name = name or _source_name(source)
  if len(source) == 0:
    raise DataError(f"{name}: has no rows (an empty file?); give it problem rows or leave it out "
                    "of the data files")
  records, counts = [], empty_counts()
  n = len(source) if limit is None else min(limit, len(source))
  missing_layouts: dict[str, int] = {}     # layout -> rows without an answer
  first_dropped: dict[str, str] = {}       # reason -> where the first such row is
  for i in range(n):
    w = where(i)
    row = source[i]
    record, status = normalize_row(row, where=w, index=i, layout=layout, policy=policy,
                                   domain=domain, split=split)
    counts["rows"] += 1
    if record is None:
      counts[f"dropped_{status}"] += 1
      first_dropped.setdefault(status, w)
      if status == "missing_answer":
        row_layout = detect_layout(row, w) if layout == "auto" else layout
        missing_layouts[row_layout] = missing_layouts.get(row_layout, 0) + 1
    else:
      counts["kept"] += 1
      records.append(record)
  if counts["kept"] < counts["rows"]:
    _report_dropped(name, counts, n, len(source), missing_layouts, first_dropped, policy)
  ids = {}
  for r in records:
    if r["id"] in ids:
      raise DataError(f"{r['meta']['where']}: field 'id' value {r['id']!r} repeats the id of "
                      f"{ids[r['id']]}; ids must be unique (label tables and subsets key on them)")
    ids[r["id"]] = r["meta"]["where"]
  return records, counts


def _source_name(source: Any) -> str:
  """The file(s) a reader reads, for messages."""
  paths = getattr(source, "paths", None)
  if paths:
    more = f" (and {len(paths) - 1} more files)" if len(paths) > 1 else ""
    return f"{paths[0]}{more}"
  where = getattr(source, "where", None)
  if where is not None and len(source):
    return where(0).rsplit(":", 1)[0]
  return "<rows>"


def _report_dropped(name: str, counts: Mapping[str, int], n: int, total: int,
                    missing_layouts: Mapping[str, int], first_dropped: Mapping[str, str],
                    policy: Policy) -> None:
  """Logs the rows load_records dropped and why; raises DataError when it kept none."""
  rows = f"its {n} rows" if n == total else f"the first {n} of its {total} rows"
  looked_for = "; ".join(f"layout {lay!r}: {_ANSWER_LOOKED_FOR[lay]}"
                         for lay in sorted(missing_layouts))
  missing, too_long = counts["dropped_missing_answer"], counts["dropped_too_long"]
  reasons = []
  if missing:
    reasons.append(f"{missing} without an answer (looked for: {looked_for}; first: "
                   f"{first_dropped['missing_answer']})")
  if too_long:
    reasons.append(f"{too_long} with a problem over max_prompt_chars="
                   f"{policy.max_prompt_chars} characters (first: {first_dropped['too_long']})")
  if counts["kept"]:
    log.warning("%s: dropped %d of %s: %s", name, missing + too_long, rows, "; ".join(reasons))
    return
  if missing == n:
    raise DataError(f"{name}: none of {rows} has an answer, so the dataset has no labels "
                    f"(looked for: {looked_for}); give the rows an answer field, or set the "
                    f"layout (data.layout) to the one the file follows: "
                    f"{', '.join(_ANSWER_LOOKED_FOR)}")
  raise DataError(f"{name}: none of {rows} is usable: {'; '.join(reasons)}; give the rows "
                  f"answers, or raise max_prompt_chars")


def check_record(record: Mapping, where: str = "<record>") -> None:
  """Raises DataError naming the field if `record` does not follow the problem-record schema."""
  spec = {"id": str, "domain": str, "split": str, "difficulty": int, "problem": str,
          "answer": str, "true_answer": str, "thinking": str, "solution": str, "system": str,
          "meta": dict}
  for key, typ in spec.items():
    if key not in record:
      raise DataError(f"{where}: missing field {key!r} of the problem-record schema")
    if not isinstance(record[key], typ) or (typ is int and isinstance(record[key], bool)):
      raise DataError(f"{where}: field {key!r} must be {typ.__name__}, got "
                      f"{type(record[key]).__name__}")
  msgs = record.get("messages")
  if msgs is not None and not (isinstance(msgs, Sequence) and all(
      isinstance(m, Mapping) and {"role", "content"} <= set(m) for m in msgs)):
    raise DataError(f"{where}: field 'messages' must be None or a list of {{role, content}}")
