r"""The real datasets of the paper's study, read from their public files into problem records.

"When Can LLMs Learn to Reason with Weak Supervision?" trains on MATH (Skywork-OR1 math problems)
or SCIENCE (SCP-116K) and evaluates on the sets below. Nothing is downloaded here: each set is
read from a local copy (or a gs:// copy) of its Hugging Face dataset repository.

  name              role   domain   HF dataset (mirrors with the same rows)
  skywork_or1_math  train  math     Skywork/Skywork-OR1-RL-Data
  scp116k           train  science  EricLu/SCP-116K
  math500           eval   math     HuggingFaceH4/MATH-500
  aime24            eval   math     Maxwell-Jia/AIME_2024
  aime25            eval   math     opencompass/AIME2025 (yentinglin/aime_2025)
  amc               eval   math     AI-MO/aimo-validation-amc
  minerva           eval   math     math-ai/minervamath
  olympiadbench     eval   math     math-ai/olympiadbench (Hothan/OlympiadBench)
  gpqa_diamond      eval   science  Idavidrein/gpqa (gpqa_diamond.csv)
  gsm8k             eval   math     openai/gsm8k (main)

Files looked for in a set's directory (PaperSet.files; *.parquet / *.jsonl / *.json after the
named ones, except for skywork_or1_math): skywork_or1_math math-*.parquet (never the code
split); math500 test.jsonl; aime25 aime2025-*.jsonl; minerva test.jsonl; olympiadbench
OE_TO_maths_en_COMP* (the text-only English maths subset), then test.jsonl; gpqa_diamond
gpqa_diamond.csv, then gpqa_diamond*.parquet / *.jsonl; gsm8k main/test-*.parquet (not the
socratic config), then test-*.parquet, test.jsonl.

Reading (`load_paper_set(name, path)`, or `paper:NAME:PATH` in a config, see below):
  PATH is a file, or a directory (the set's HF repository as `hf download ID --repo-type dataset
  --local-dir DIR` leaves it), searched recursively for the file patterns above, tried in order:
  the first pattern that matches gives the files (sorted). A gs://... PATH is copied once into
  RLVR_JAX_CACHE/paper_sets/ (default ~/.cache/rlvr_jax/paper_sets/; recopied when a file's size
  changes) and read from there. Formats by extension: .jsonl (.json holding one object per line,
  or one JSON array), .parquet, .csv.

Columns (matched case-insensitively; the first name given is the real set's, the others are
variants seen in mirrors, accepted because the exact casing differs between copies):
  skywork_or1_math  prompt (list of {role, content}), reward_model {ground_truth: a JSON-encoded
                    list of answers, style}, data_source, extra_info: read as records.py's
                    "verl" layout: problem = the last user turn, system = a system turn if any,
                    answer = the first ground truth. The chat prompt is NOT kept verbatim
                    (messages=None), so the run's system prompt applies as for the eval sets.
  scp116k           domain, problem, matched_solution, o1_solution,
                    is_o1_solution_same_with_matched_solution, r1_solution,
                    is_r1_solution_same_with_matched_solution: answer = the last \boxed{} of
                    matched_solution, else of o1_solution when the o1 flag is true, else of
                    r1_solution when the r1 flag is true; rows with none are dropped (counted as
                    missing answers). subject = domain (Physics / Chemistry / Biology ...).
  math500           problem, solution, answer, subject, level, unique_id.
  aime24            ID, Problem, Solution, Answer (an integer).
  aime25            id / problem / answer (yentinglin) or question / answer (opencompass).
  amc               id, problem, answer (a float such as 142.0 -> "142"), url.
  minerva           question (or problem), answer, solution (if any).
  olympiadbench     id, question, final_answer (a list of strings: joined with ", ", the
                    surrounding $ removed), solution (a list of strings), context (prepended to
                    the question when present), subject, subfield.
  gpqa_diamond      Question, Correct Answer, Incorrect Answer 1..3, Explanation, Record ID,
                    High-level domain, Subdomain: a multiple-choice problem, the four options
                    shuffled per row (the order depends only on seed and Record ID: sha256 of
                    "SEED:ID:k" sorts option k), labelled A-D after the question, with the line
                    "Put the letter of the correct option (A, B, C or D) in \boxed{}."; answer =
                    the correct option's letter.
  gsm8k             question, answer ("reasoning #### final"): answer = the final number,
                    thinking = the reasoning (records.py's gsm8k layout).
  The file names of scp116k, aime24, amc, minerva and olympiadbench on the hub were not
  checked against the live repositories: the patterns accept any .parquet/.jsonl there.

Records (rlvr_jax/data/records.py schema): id = NAME-<the set's own id> where the set has one
(math500 unique_id, aime24 ID, aime25/amc/olympiadbench id, gpqa Record ID), else NAME-<row
number over the set's sorted files>; domain = the set's domain ("math" or "science"); split =
its role ("train" or "eval"); meta["source_set"] = NAME (plus subject / level / data_source).
Eval sets need every answer: an eval row without one raises DataError. A bad row (a missing or
non-string problem, a malformed field) raises DataError naming the file, the line/row and the
field, and what the set's rows should hold.

Config syntax (`eval.files` and `data.files`): an entry `paper:NAME:PATH` reads set NAME from
PATH through load_paper_set (sources.open_source recognises the prefix, so every reader of those
fields accepts it). In eval.files give the metric name as usual: `NAME=paper:NAME:PATH`, e.g.

  --config.eval.files=math500=paper:math500:/d/math500,gpqa=paper:gpqa_diamond:/d/gpqa_diamond
  --config.data.files=paper:skywork_or1_math:/data/paper_sets/skywork_or1_math

Layout of a data root (eval_files_spec): ROOT/<name>/ holds set <name>'s files, e.g.
ROOT/math500/test.jsonl, ROOT/gpqa_diamond/gpqa_diamond.csv, ROOT/skywork_or1_math/data/
math-00000-of-00001.parquet. `eval_files_spec("math", ROOT)` gives the eval.files value of the
paper's division for a MATH-trained model (split_for).
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import glob
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rlvr_jax.data import answers as answers_lib
from rlvr_jax.data import records as records_lib
from rlvr_jax.data import sources
from rlvr_jax.data.sources import DataError

SPEC_PREFIX = "paper:"
ROLES = ("train", "eval")
DOMAINS = ("math", "science")
OPTION_LETTERS = "ABCD"
MC_INSTRUCTION = "Put the letter of the correct option (A, B, C or D) in \\boxed{}."

# The paper's evaluation division (split_for).
MATH_EVAL_SETS = ("math500", "aime24", "aime25", "amc", "minerva", "olympiadbench")
SCIENCE_EVAL_SETS = ("gpqa_diamond",)
EXTRA_MATH_EVAL_SETS = ("gsm8k",)


@dataclasses.dataclass(frozen=True)
class PaperSet:
  """One dataset of the study.

  name: the set's name in configs and metrics; hf_id: its Hugging Face dataset (alternates:
  mirrors with the same rows); role: "train" or "eval"; domain: "math" or "science"; files: glob
  patterns of its file(s) inside the repository, tried in order (see the module docstring);
  columns: the fields it reads (for messages); convert(set, row, where, index, seed): one raw
  row as a row of records.py's "qa" layout (id, problem, answer, solution, thinking, domain,
  split, source_set, ...), answer None when the row has none (see to_row).
  """
  name: str
  hf_id: str
  role: str
  domain: str
  files: tuple[str, ...]
  columns: str
  convert: Callable[..., dict]
  alternates: tuple[str, ...] = ()

  def __post_init__(self):
    if self.role not in ROLES or self.domain not in DOMAINS:
      raise ValueError(f"paper set {self.name!r}: role must be one of {ROLES} and domain one of "
                       f"{DOMAINS}, got {self.role!r} / {self.domain!r}")

  def to_row(self, row: Mapping[str, Any], where: str, index: int, seed: int = 0) -> dict:
    """Raw row `index` (at `where`) as a "qa"-layout row; DataError naming `where` and the
    field for a bad row."""
    if not isinstance(row, Mapping):
      raise DataError(f"{where}: expected an object with named fields, got "
                      f"{type(row).__name__}")
    return self.convert(self, row, where, index, seed)


# ------------------------------------------------------------------------------- field access


def _field(row: Mapping[str, Any], names: Sequence[str]) -> tuple[str, Any]:
  """(the row's key, its value) of the first of `names` present (case-insensitive) and not
  None; (names[0], None) when there is none."""
  keys = {str(k).lower(): k for k in row}
  for name in names:
    key = keys.get(name.lower())
    if key is not None and row[key] is not None:
      return key, row[key]
  return names[0], None


def _hint(ps: PaperSet) -> str:
  return f"{ps.name} rows need {ps.columns} (as in {ps.hf_id}); is this the right file?"


def _text(row: Mapping, names: Sequence[str], where: str, ps: PaperSet, *,
          required: bool = True) -> str:
  """A string field ('' when optional and missing); DataError naming it when required and
  missing/empty, or when it is not a string."""
  key, value = _field(row, names)
  if value is None or (isinstance(value, str) and not value.strip()):
    if required:
      raise DataError(f"{where}: field {key!r} is missing or empty; {_hint(ps)}")
    return ""
  if not isinstance(value, str):
    raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}; "
                    f"{_hint(ps)}")
  return value


def _label(value: Any, where: str, key: str, ps: PaperSet) -> str | None:
  """An answer value as a string (integral floats without '.0'); None when missing/empty."""
  if value is None:
    return None
  if isinstance(value, float):
    value = str(int(value)) if value.is_integer() else repr(value)
  elif isinstance(value, int) and not isinstance(value, bool):
    value = str(value)
  if not isinstance(value, str):      # bool, list, dict, ...
    raise DataError(f"{where}: field {key!r} must be a string or a number, got "
                    f"{type(value).__name__}; {_hint(ps)}")
  return value.strip() or None


def _native_id(row: Mapping, names: Sequence[str], index: int, ps: PaperSet) -> str:
  """NAME-<the row's own id> when it has one, else NAME-<row number>."""
  _, value = _field(row, names) if names else ("", None)
  if value is None or isinstance(value, (dict, list)) or str(value).strip() == "":
    return f"{ps.name}-{index}"
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  return f"{ps.name}-{str(value).strip()}"


def _qa_row(ps: PaperSet, *, id: str, problem: str, answer: str | None, solution: str = "",
            thinking: str = "", system: str = "", **meta: Any) -> dict:
  """A row of records.py's "qa" layout carrying the set's domain, role and name. A row without
  an answer carries no solution either (the qa layout would take the solution for the answer),
  so records.load_records drops it as a row without an answer."""
  row = {"id": id, "problem": problem, "answer": answer, "solution": solution if answer else "",
         "domain": ps.domain, "split": ps.role, "source_set": ps.name}
  if thinking:
    row["thinking"] = thinking
  if system:
    row["system"] = system
  row.update({k: v for k, v in meta.items() if v not in (None, "")})
  return row


def _require_answer(answer: str | None, where: str, key: str, ps: PaperSet) -> str:
  if answer is None:
    raise DataError(f"{where}: field {key!r} is missing or empty; every {ps.name} problem needs "
                    f"its answer ({_hint(ps)})")
  return answer


def _truthy(value: Any) -> bool:
  if isinstance(value, str):
    return value.strip().lower() in ("true", "yes", "1")
  return bool(value) if value is not None else False


def _strip_dollars(s: str) -> str:
  s = s.strip()
  while len(s) >= 2 and s.startswith("$") and s.endswith("$"):
    s = s[1:-1].strip()
  return s


# ---------------------------------------------------------------------------------- converters


def _skywork(ps: PaperSet, row: Mapping, where: str, index: int, seed: int) -> dict:
  """Skywork-OR1: records.py's verl parsing (its _chat / _verl_answers), kept as a qa row."""
  messages = records_lib._chat(row, where)
  problem = next(m["content"] for m in reversed(messages) if m["role"] == "user")
  if not problem.strip():
    raise DataError(f"{where}: field 'prompt' has an empty user message; {_hint(ps)}")
  system = next((m["content"] for m in messages if m["role"] == "system"), "")
  answers = records_lib._verl_answers(row, where)
  source = row.get("data_source")
  return _qa_row(ps, id=f"{ps.name}-{index}", problem=problem,
                 answer=answers[0] if answers else None, system=system,
                 data_source=source if isinstance(source, str) else None)


def _scp116k(ps: PaperSet, row: Mapping, where: str, index: int, seed: int) -> dict:
  """SCP-116K: the boxed answer of matched_solution, else of an o1 / r1 solution that agrees
  with it (its is_*_solution_same_with_matched_solution flag); None when there is none."""
  problem = _text(row, ("problem",), where, ps)
  matched = _text(row, ("matched_solution",), where, ps, required=False)
  answer = answers_lib.extract_boxed(matched)
  for model in ("o1", "r1"):
    _, agrees = _field(row, (f"is_{model}_solution_same_with_matched_solution",))
    if not answer and _truthy(agrees):
      answer = answers_lib.extract_boxed(
          _text(row, (f"{model}_solution",), where, ps, required=False))
  _, subject = _field(row, ("domain",))
  return _qa_row(ps, id=f"{ps.name}-{index}", problem=problem, answer=answer or None,
                 solution=matched, subject=subject if isinstance(subject, str) else None)


def _simple(ps: PaperSet, row: Mapping, where: str, index: int, seed: int, *,
            problem: Sequence[str], answer: Sequence[str], ids: Sequence[str] = ()) -> dict:
  """Sets with a problem column, an answer column and optional id / solution / subject / level
  columns (MATH-500, AIME24, AIME25, AMC, Minerva)."""
  text = _text(row, problem, where, ps)
  key, value = _field(row, answer)
  label = _require_answer(_label(value, where, key, ps), where, key, ps)
  _, subject = _field(row, ("subject",))
  _, level = _field(row, ("level",))
  return _qa_row(ps, id=_native_id(row, ids, index, ps), problem=text, answer=label,
                 solution=_text(row, ("solution",), where, ps, required=False),
                 subject=subject if isinstance(subject, str) else None,
                 level=level if isinstance(level, (int, str)) and not isinstance(level, bool)
                 else None)


def _olympiadbench(ps: PaperSet, row: Mapping, where: str, index: int, seed: int) -> dict:
  """OlympiadBench: final_answer is a list of strings ($...$ removed, joined with ", "),
  solution a list of strings (joined with blank lines); a context goes before the question."""
  question = _text(row, ("question", "problem"), where, ps)
  context = _text(row, ("context",), where, ps, required=False).strip()
  key, final = _field(row, ("final_answer", "answer"))
  finals = final if isinstance(final, (list, tuple)) else [final]
  parts = [_strip_dollars(_label(x, where, key, ps) or "") for x in finals]
  answer = _require_answer(", ".join(p for p in parts if p) or None, where, key, ps)
  skey, solution = _field(row, ("solution",))
  solutions = solution if isinstance(solution, (list, tuple)) else [solution]
  _, subject = _field(row, ("subject",))
  _, subfield = _field(row, ("subfield",))
  return _qa_row(ps, id=_native_id(row, ("id",), index, ps),
                 problem=f"{context}\n\n{question}" if context else question, answer=answer,
                 solution="\n\n".join(t for t in (_label(x, where, skey, ps) for x in solutions)
                                      if t),
                 subject=subject if isinstance(subject, str) else None,
                 category=subfield if isinstance(subfield, str) else None)


def option_order(seed: int, row_id: str, n: int = 4) -> list[int]:
  """The shuffled order of n options (indices into [correct, incorrect 1, ...]) of one row:
  option k sorts by sha256("SEED:ROW_ID:k"), so the order depends only on seed and row id."""
  return sorted(range(n), key=lambda k: hashlib.sha256(f"{seed}:{row_id}:{k}".encode()).digest())


def multiple_choice(question: str, correct: str, incorrect: Sequence[str], *, seed: int,
                    row_id: str) -> tuple[str, str]:
  """(problem text, answer letter): the question, then the options in option_order labelled
  A) B) C) D), then MC_INSTRUCTION."""
  options = [correct.strip(), *(x.strip() for x in incorrect)]
  order = option_order(seed, row_id, len(options))
  lines = [f"{OPTION_LETTERS[slot]}) {options[k]}" for slot, k in enumerate(order)]
  problem = f"{question.strip()}\n\n" + "\n".join(lines) + f"\n\n{MC_INSTRUCTION}"
  return problem, OPTION_LETTERS[order.index(0)]


def _gpqa(ps: PaperSet, row: Mapping, where: str, index: int, seed: int) -> dict:
  """GPQA: a four-option multiple-choice problem; the answer is the correct option's letter."""
  question = _text(row, ("Question",), where, ps)
  correct = _text(row, ("Correct Answer",), where, ps)
  incorrect = [_text(row, (f"Incorrect Answer {k}",), where, ps) for k in (1, 2, 3)]
  row_id = _native_id(row, ("Record ID", "id"), index, ps)
  problem, letter = multiple_choice(question, correct, incorrect, seed=seed, row_id=row_id)
  _, subject = _field(row, ("High-level domain",))
  _, subdomain = _field(row, ("Subdomain",))
  return _qa_row(ps, id=row_id, problem=problem, answer=letter,
                 solution=_text(row, ("Explanation",), where, ps, required=False),
                 subject=subject if isinstance(subject, str) else None,
                 category=subdomain if isinstance(subdomain, str) else None)


def _gsm8k(ps: PaperSet, row: Mapping, where: str, index: int, seed: int) -> dict:
  """GSM8K: answer = the number after the last ####, thinking = the reasoning before it."""
  question = _text(row, ("question",), where, ps)
  raw = _text(row, ("answer",), where, ps)
  final = answers_lib.extract_gsm8k(raw)
  if not final:
    raise DataError(f"{where}: field 'answer' has no '#### final' part; {_hint(ps)}")
  return _qa_row(ps, id=f"{ps.name}-{index}", problem=question, answer=final,
                 thinking=raw.rsplit("####", 1)[0].strip())


# ------------------------------------------------------------------------------------ registry

_ANY = ("*.parquet", "*.jsonl", "*.json")


PAPER_SETS: dict[str, PaperSet] = {ps.name: ps for ps in (
    PaperSet("skywork_or1_math", "Skywork/Skywork-OR1-RL-Data", "train", "math",
             ("math-*.parquet", "math/*.parquet"),
             "prompt (a list of {role, content}) and reward_model.ground_truth", _skywork),
    PaperSet("scp116k", "EricLu/SCP-116K", "train", "science", _ANY,
             "problem, domain and matched_solution / o1_solution / r1_solution", _scp116k),
    PaperSet("math500", "HuggingFaceH4/MATH-500", "eval", "math", ("test.jsonl",) + _ANY,
             "problem, solution, answer, subject, level, unique_id",
             functools.partial(_simple, problem=("problem",), answer=("answer",),
                               ids=("unique_id", "id"))),
    PaperSet("aime24", "Maxwell-Jia/AIME_2024", "eval", "math", _ANY,
             "ID, Problem, Solution, Answer",
             functools.partial(_simple, problem=("Problem", "question"), answer=("Answer",),
                               ids=("ID",))),
    PaperSet("aime25", "opencompass/AIME2025", "eval", "math", ("aime2025-*.jsonl",) + _ANY,
             "problem (or question) and answer, optionally id",
             functools.partial(_simple, problem=("problem", "question"), answer=("answer",),
                               ids=("id",)),
             alternates=("yentinglin/aime_2025",)),
    PaperSet("amc", "AI-MO/aimo-validation-amc", "eval", "math", _ANY,
             "id, problem, answer, url",
             functools.partial(_simple, problem=("problem",), answer=("answer",), ids=("id",))),
    PaperSet("minerva", "math-ai/minervamath", "eval", "math", ("test.jsonl",) + _ANY,
             "question (or problem) and answer",
             functools.partial(_simple, problem=("question", "problem"), answer=("answer",))),
    PaperSet("olympiadbench", "math-ai/olympiadbench", "eval", "math",
             ("OE_TO_maths_en_COMP*.parquet", "OE_TO_maths_en_COMP/*.parquet",
              "OE_TO_maths_en_COMP*.jsonl", "test.jsonl") + _ANY,
             "id, question and final_answer (a list of strings)", _olympiadbench,
             alternates=("Hothan/OlympiadBench",)),
    PaperSet("gpqa_diamond", "Idavidrein/gpqa", "eval", "science",
             ("gpqa_diamond.csv", "gpqa_diamond*.parquet", "gpqa_diamond*.jsonl") + _ANY,
             "Question, Correct Answer, Incorrect Answer 1, Incorrect Answer 2 and "
             "Incorrect Answer 3", _gpqa),
    PaperSet("gsm8k", "openai/gsm8k", "eval", "math",
             ("main/test-*.parquet", "test-*.parquet", "test.jsonl") + _ANY,
             "question and answer ('reasoning #### final')", _gsm8k),
)}


def get_paper_set(name: str) -> PaperSet:
  """The registered set `name`; DataError listing the known names otherwise."""
  ps = PAPER_SETS.get(name)
  if ps is None:
    raise DataError(f"unknown paper set {name!r}; known sets: {', '.join(PAPER_SETS)}")
  return ps


# -------------------------------------------------------------------------------------- files


def _download_hint(ps: PaperSet, path: str) -> str:
  return (f"download it with `hf download {ps.hf_id} --repo-type dataset --local-dir {path}` "
          f"or give the file itself")


def set_files(ps: PaperSet, path: str) -> list[str]:
  """The local files of set `ps` at `path` (a file, a directory searched for ps.files, or a
  gs:// URL copied to the local cache first)."""
  path = os.fspath(path)
  if "://" in path:
    return _cached_copy(ps, path)
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise DataError(f"paper set {ps.name}: no such file or directory: {path}; "
                    f"{_download_hint(ps, path)}")
  for pattern in ps.files:
    found = sorted(f for f in glob.glob(os.path.join(path, "**", pattern), recursive=True)
                   if os.path.isfile(f))
    if found:
      return found
  raise DataError(f"paper set {ps.name}: {path} holds none of its files (looked for "
                  f"{', '.join(ps.files)}); {_download_hint(ps, path)}")


def _cache_root() -> str:
  return os.environ.get("RLVR_JAX_CACHE", os.path.expanduser("~/.cache/rlvr_jax"))


def _remote_matches(src, patterns: Sequence[str]) -> list:
  """The files under bucket directory `src` (up to two folders deep) matching the first of
  `patterns` that matches anything."""
  for pattern in patterns:
    found = []
    for depth in ("", "*/", "*/*/"):
      found.extend(p for p in src.glob(depth + pattern) if not p.is_dir())
    if found:
      return sorted(found, key=str)
  return []


def _cached_copy(ps: PaperSet, url: str) -> list[str]:
  """Copies set `ps`'s files at `url` (a file or a directory) into the local cache once per
  host (recopied when a size differs); returns the local paths."""
  from etils import epath
  from filelock import FileLock
  src = epath.Path(url)
  try:
    remote = _remote_matches(src, ps.files) if src.is_dir() else ([src] if src.exists() else [])
  except Exception as e:  # noqa: BLE001 - credentials, network: one line naming the URL
    raise DataError(f"paper set {ps.name}: cannot list {url} ({type(e).__name__}: "
                    f"{(str(e).strip().splitlines() or [''])[0]})") from None
  if not remote:
    raise DataError(f"paper set {ps.name}: {url} holds none of its files (looked for "
                    f"{', '.join(ps.files)}); copy the {ps.hf_id} files there")
  base = os.path.join(_cache_root(), "paper_sets",
                      hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16])
  os.makedirs(base, exist_ok=True)
  root = str(src).rstrip("/")
  local_paths = []
  with FileLock(os.path.join(base, ".lock")):
    for r in remote:
      rel = str(r)[len(root):].lstrip("/") or r.name
      local = os.path.join(base, rel)
      size = int(r.stat().length)
      if not (os.path.isfile(local) and os.path.getsize(local) == size):
        os.makedirs(os.path.dirname(local), exist_ok=True)
        tmp = f"{local}.tmp.{os.getpid()}"
        with r.open("rb") as fin, open(tmp, "wb") as fout:
          while chunk := fin.read(16 << 20):
            fout.write(chunk)
        os.replace(tmp, local)
      local_paths.append(local)
  return local_paths


class _ListRows:
  """Rows held in memory (CSV files, JSON-array files), with where(i) for messages."""

  def __init__(self, paths: Sequence[str], rows: list[dict], wheres: list[str]):
    self.paths, self._rows, self._wheres = list(paths), rows, wheres

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, i) -> dict:
    return self._rows[i]

  def where(self, i) -> str:
    return self._wheres[i]


def _csv_rows(paths: Sequence[str]) -> _ListRows:
  rows, wheres = [], []
  for path in paths:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.DictReader(f)
      if not reader.fieldnames:
        raise DataError(f"{path}: an empty CSV file (no header line)")
      start = reader.line_num + 1
      for row in reader:
        rows.append(row)
        wheres.append(f"{path}:line {start}")
        start = reader.line_num + 1
  return _ListRows(paths, rows, wheres)


def _is_json_array(path: str) -> bool:
  with open(path, "rb") as f:
    head = f.read(4096).lstrip()
  return head.startswith(b"[")


def _json_array_rows(paths: Sequence[str]) -> _ListRows:
  rows, wheres = [], []
  for path in paths:
    try:
      with open(path, encoding="utf-8") as f:
        items = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise DataError(f"{path}: not valid JSON ({e}); expected one JSON array of objects or "
                      "one object per line") from None
    for k, item in enumerate(items):
      if not isinstance(item, dict):
        raise DataError(f"{path}:item {k}: expected a JSON object, got {type(item).__name__}")
      rows.append(item)
      wheres.append(f"{path}:item {k}")
  return _ListRows(paths, rows, wheres)


def open_rows(paths: Sequence[str]):
  """A random-access reader (len, [i], where(i)) of the raw rows of `paths` (all one format)."""
  exts = {sources._ext(p) for p in paths}
  if exts <= {".csv"}:
    return _csv_rows(paths)
  if exts <= set(sources.ParquetSource.EXTENSIONS):
    return sources.ParquetSource(paths)
  if exts <= set(sources.JsonlSource.EXTENSIONS):
    if any(p.endswith(".json") and _is_json_array(p) for p in paths):
      return _json_array_rows(paths)
    return sources.JsonlSource(paths)
  raise DataError(f"{paths[0]}: cannot read files ending in {sorted(exts)} together; give "
                  ".jsonl, .json, .parquet or .csv files of one kind")


class PaperSetSource:
  """The rows of one paper set as records.py "qa"-layout rows (len, [i], where(i), paths).

  records.load_records reads it like any other source; `layout` tells it to use "qa" whatever
  the caller's layout (the rows are already converted).
  """

  layout = "qa"

  def __init__(self, paper_set: PaperSet | str, path: str, *, seed: int = 0):
    self.paper_set = get_paper_set(paper_set) if isinstance(paper_set, str) else paper_set
    self._raw = open_rows(set_files(self.paper_set, path))
    self.paths = self._raw.paths
    self.seed = int(seed)

  def __len__(self) -> int:
    return len(self._raw)

  def __getitem__(self, i) -> dict:
    i = sources._check_index(i, len(self))
    return self.paper_set.to_row(self._raw[i], self._raw.where(i), i, self.seed)

  def where(self, i) -> str:
    return self._raw.where(sources._check_index(i, len(self)))

  def __repr__(self) -> str:
    return f"PaperSetSource({self.paper_set.name!r}, {len(self.paths)} files, {len(self)} rows)"


# ------------------------------------------------------------------------------------ loading


def parse_spec(spec: str) -> tuple[str, str]:
  """'paper:NAME:PATH' -> (NAME, PATH); DataError saying the syntax otherwise."""
  body = spec[len(SPEC_PREFIX):] if spec.startswith(SPEC_PREFIX) else ""
  name, sep, path = body.partition(":")
  if not spec.startswith(SPEC_PREFIX) or not sep or not name or not path.strip():
    raise DataError(f"{spec!r}: a paper set entry is paper:NAME:PATH (PATH the set's file or "
                    f"directory); known names: {', '.join(PAPER_SETS)}")
  get_paper_set(name)
  return name, path.strip()


def open_paper_source(spec: str) -> PaperSetSource:
  """The source of a 'paper:NAME:PATH' entry (sources.open_source calls this)."""
  name, path = parse_spec(spec)
  return PaperSetSource(name, path)


def load_paper_set(name: str, path: str, *, limit: int = 0, seed: int = 0,
                   policy: records_lib.Policy = records_lib.Policy()) -> list[dict]:
  """The problem records of paper set `name` read from `path` (module docstring): the first
  `limit` rows (0 = all), GPQA options shuffled with `seed`. Training rows without an answer are
  dropped (logged, as records.load_records does); a bad row raises DataError."""
  src = PaperSetSource(name, path, seed=seed)
  records, _ = records_lib.load_records(src, layout="qa", policy=policy, limit=limit or None)
  return records


# ----------------------------------------------------------------------------------- division


def split_for(training_domain: str, *, with_gsm8k: bool = False) -> dict[str, list[str]]:
  """The paper's in-domain / out-of-domain eval sets for a model trained on `training_domain`
  ("math": Skywork-OR1; "science": SCP-116K). with_gsm8k adds GSM8K as an extra (easy) math
  set: in-domain for math, out-of-domain for science. SCP-Hard, SciBench, MMLU-Pro science and
  SuperGPQA, the paper's other science sets, have no loader yet."""
  domain = str(training_domain).strip().lower()
  math = list(MATH_EVAL_SETS) + (list(EXTRA_MATH_EVAL_SETS) if with_gsm8k else [])
  science = list(SCIENCE_EVAL_SETS)
  if domain == "math":
    return {"in_domain": math, "out_of_domain": science}
  if domain == "science":
    return {"in_domain": science, "out_of_domain": math}
  raise ValueError(f"training domain must be 'math' or 'science', got {training_domain!r}")


def eval_files_spec(training_domain: str, root: str, *, with_gsm8k: bool = False) -> str:
  """The eval.files value NAME=paper:NAME:ROOT/NAME,... of split_for(training_domain) (in-domain
  sets first), for a data root holding each set's files under ROOT/<name>/. A local ROOT is made
  absolute; a gs:// ROOT is kept."""
  root = str(root).rstrip("/")
  if "://" not in root:
    root = os.path.abspath(os.path.expanduser(root))
  if "," in root or "=" in root:
    raise ValueError(f"data root {root!r} must not contain ',' or '=' (they separate eval.files "
                     f"entries)")
  division = split_for(training_domain, with_gsm8k=with_gsm8k)
  names = division["in_domain"] + division["out_of_domain"]
  return ",".join(f"{n}={SPEC_PREFIX}{n}:{root}/{n}" for n in names)
