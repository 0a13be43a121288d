"""Write datasets to JSONL / ArrayRecord / TFDS atomically, and inspect them (`rlvr-jax data`).

Writing. Every file is written to a temporary name in its destination directory, flushed,
fsynced and renamed over the final name (`os.replace`), so a crash leaves either the old file
or the new one, never a half-written file under the final name; a failed write removes its
temporary file. `run` writes MANIFEST.json (files, record counts, sha256) last: a directory
without it is incomplete. TFDS datasets are written by TFDS itself into an "incomplete.*"
directory that is renamed when done (tfds_builder.prepare).

Inspecting. `inspect_records` / `inspect_docs` return counts (by split, domain, difficulty),
token-length summaries and histograms (prompt as rendered by the chat template, answer, thinking,
solution; or documents) and a few examples decoded back from their token ids.

`rlvr-jax data --config=configs/data.py --workdir=DIR` calls `run(config, workdir)`; the fields
of `get_config()` are documented there.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from rlvr_jax.config_utils import csv_list as _csv

# ------------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
  """Yields a temporary path beside `path`; renames it to `path` when the block succeeds and
  deletes it when the block raises."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
  os.close(fd)
  try:
    yield tmp
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def _json_line(row: Any) -> str:
  return json.dumps(row, ensure_ascii=False, sort_keys=True, default=_json_default)


def _json_default(x):
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"cannot write a {type(x).__name__} as JSON")


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> int:
  """Writes one JSON object per line, atomically. Returns the number of rows."""
  n = 0
  with atomic_path(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      for row in rows:
        f.write(_json_line(row) + "\n")
        n += 1
  return n


def write_array_record(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike, *,
                       options: str = "group_size:1") -> int:
  """Writes each row as a JSON-encoded record of an ArrayRecord file, atomically (read back
  with sources.ArrayRecordSource). group_size:1 keeps random access cheap. Returns the count."""
  from array_record.python.array_record_module import ArrayRecordWriter
  n = 0
  with atomic_path(path) as tmp:
    writer = ArrayRecordWriter(tmp, options)
    try:
      for row in rows:
        writer.write(_json_line(row).encode("utf-8"))
        n += 1
    finally:
      writer.close()
  return n


def write_tfds(domain: str, data_dir: str | os.PathLike, *, n_train: int, n_eval: int,
               n_ood: int, seed: int = 0) -> str:
  """Prepares the synthetic domain as a TFDS array_record dataset; returns its version dir."""
  from rlvr_jax.data import tfds_builder
  return tfds_builder.prepare(domain, os.fspath(data_dir), n_train=n_train, n_eval=n_eval,
                              n_ood=n_ood, seed=seed)


def file_sha256(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def write_manifest(out_dir: str | os.PathLike, entries: Sequence[Mapping[str, Any]],
                   extra: Mapping[str, Any] | None = None) -> str:
  """MANIFEST.json listing `entries` ({path (relative), records, ...}) with their sha256."""
  out_dir = os.fspath(out_dir)
  files = []
  for e in entries:
    full = os.path.join(out_dir, e["path"])
    files.append({**e, "sha256": file_sha256(full) if os.path.isfile(full) else None})
  path = os.path.join(out_dir, "MANIFEST.json")
  with atomic_path(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump({"files": files, **(extra or {})}, f, indent=2, sort_keys=True,
                default=_json_default)
  return path


# ----------------------------------------------------------------------------------- inspecting


def length_summary(lengths: Sequence[int], bins: int = 10) -> dict[str, Any]:
  """{n, min, mean, p50, p95, max, histogram: [[lo, hi, count], ...]} of integer lengths
  (`bins` equal-width bins over [min, max]; the last bin includes max)."""
  x = np.asarray(lengths, np.int64)
  if x.size == 0:
    return {"n": 0, "min": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0, "histogram": []}
  lo, hi = int(x.min()), int(x.max())
  counts, edges = np.histogram(x, bins=bins, range=(lo, hi if hi > lo else lo + 1))
  return {"n": int(x.size), "min": lo, "mean": float(x.mean()),
          "p50": float(np.percentile(x, 50)), "p95": float(np.percentile(x, 95)), "max": hi,
          "histogram": [[float(edges[i]), float(edges[i + 1]), int(c)]
                        for i, c in enumerate(counts)]}


def inspect_records(records: Sequence[Mapping[str, Any]], tokenizer=None, *,
                    template: str = "toy", system_prompt: str | None = "default",
                    n_examples: int = 3, bins: int = 10) -> dict[str, Any]:
  """Counts, length summaries and decoded examples of problem records.

  With a tokenizer, lengths are in tokens: `prompt` is the chat-rendered prompt
  (pipelines.render_prompt), `answer` the label encoded alone, `thinking` / `solution` the
  texts encoded alone; examples show the prompt decoded back from its ids. Without one,
  lengths are in characters (unit "chars").
  """
  from rlvr_jax.data.pipelines import render_prompt
  report: dict[str, Any] = {
      "records": len(records),
      "by_split": dict(Counter(r.get("split", "") for r in records)),
      "by_domain": dict(Counter(r.get("domain", "") for r in records)),
      "by_difficulty": {str(k): v for k, v in sorted(Counter(
          int(r.get("difficulty", -1)) for r in records).items())},
      "with_thinking": sum(bool(r.get("thinking")) for r in records),
      "label_replaced": sum(r.get("answer") != r.get("true_answer", r.get("answer"))
                            for r in records),
      "unit": "tokens" if tokenizer is not None else "chars",
  }
  lengths: dict[str, list[int]] = {"prompt": [], "answer": [], "thinking": [], "solution": []}
  examples = []
  for k, r in enumerate(records):
    if tokenizer is not None:
      prompt_ids = render_prompt(r, tokenizer, template=template, system_prompt=system_prompt)
      lengths["prompt"].append(len(prompt_ids))
      for field in ("answer", "thinking", "solution"):
        if field == "answer" or r.get(field):
          lengths[field].append(len(tokenizer.encode(str(r.get(field, "")))))
      if k < n_examples:
        examples.append({"id": r.get("id"), "prompt_decoded": tokenizer.decode(
            prompt_ids, skip_special=False), "answer": r.get("answer"),
            "answer_ids": tokenizer.encode(str(r.get("answer", "")))})
    else:
      lengths["prompt"].append(len(r.get("problem", "")))
      for field in ("answer", "thinking", "solution"):
        if field == "answer" or r.get(field):
          lengths[field].append(len(str(r.get(field, ""))))
      if k < n_examples:
        examples.append({"id": r.get("id"), "problem": r.get("problem"),
                         "answer": r.get("answer")})
  report["lengths"] = {k: length_summary(v, bins) for k, v in lengths.items()}
  report["examples"] = examples
  return report


def inspect_docs(docs: Sequence[str], tokenizer=None, *, n_examples: int = 2, bins: int = 10,
                 preview_chars: int = 300) -> dict[str, Any]:
  """Counts, the token-length summary and decoded previews of CPT documents."""
  lengths, examples = [], []
  for k, d in enumerate(docs):
    if tokenizer is not None:
      ids = tokenizer.encode(d)
      lengths.append(len(ids))
      if k < n_examples:
        examples.append({"decoded": tokenizer.decode(ids[:preview_chars])[:preview_chars]})
    else:
      lengths.append(len(d))
      if k < n_examples:
        examples.append({"text": d[:preview_chars]})
  return {"documents": len(docs), "unit": "tokens" if tokenizer is not None else "chars",
          "total": int(sum(lengths)), "lengths": length_summary(lengths, bins),
          "examples": examples}


def format_report(name: str, report: Mapping[str, Any]) -> str:
  """A few human-readable lines of an inspect report."""
  lines = [f"== {name}"]
  if "records" in report:
    lines.append(f"records {report['records']}  splits {report['by_split']}  difficulty "
                 f"{report['by_difficulty']}  with thinking {report['with_thinking']}")
  else:
    lines.append(f"documents {report['documents']}  total {report['total']} {report['unit']}")
  lens = report["lengths"]
  for field, s in (lens.items() if "records" in report else [("document", lens)]):
    if s["n"]:
      hist = " ".join(str(c) for _, _, c in s["histogram"])
      lines.append(f"  {field:9s} {report['unit']}: min {s['min']} p50 {s['p50']:.0f} p95 "
                   f"{s['p95']:.0f} max {s['max']}  hist[{hist}]")
  for ex in report["examples"][:2]:
    text = ex.get("prompt_decoded") or ex.get("problem") or ex.get("decoded") or ex.get("text")
    arrow = f" -> {ex['answer']!r}" if "answer" in ex else ""
    lines.append(f"  e.g. {str(text)[:160]!r}{arrow}")
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------ CLI


def get_config():
  """Config of `rlvr-jax data` (ml_collections.ConfigDict); every field has a default."""
  import ml_collections
  c = ml_collections.ConfigDict()
  c.action = "all"            # "generate" (write files), "inspect" (report only) or "all"
  c.domains = "arith,units,graph"  # synthetic domains to generate (comma-separated)
  c.source = ""               # instead of domains: real data (path / glob / dir / "tfds:NAME")
  c.source_name = "source"    # folder name under out_dir for `source`
  c.source_split = "train"    # split written for `source` (and the TFDS split it reads)
  c.layout = "auto"           # records.normalize_row layout for `source`
  c.splits = "train,eval,ood"  # synthetic splits to generate
  c.n_train = 1000            # problems per domain in "train"
  c.n_eval = 200              # problems per domain in "eval" (in-domain)
  c.n_ood = 200               # problems per domain in "ood" (harder)
  c.corpus_docs = 0           # CPT corpus documents per domain (0 = none) -> corpus/DOMAIN.jsonl
  c.seed = 0                  # generation seed
  c.formats = "jsonl"         # comma-separated: jsonl, array_record, tfds
  c.out_dir = ""              # output directory ("" = WORKDIR/data)
  c.tokenizer = ""            # tokenizer path for token-length histograms ("" = lengths in chars)
  c.template = "toy"          # chat template used to render prompts when inspecting
  c.system_prompt = "default"  # system prompt when inspecting ("default" = the paper's, "" none)
  c.inspect_examples = 3      # decoded examples per dataset in the report
  c.histogram_bins = 10       # bins of the length histograms
  c.missing_answer = "drop"   # rows of `source` without an answer: "drop" (counted) or "error"
  c.too_long = "drop"         # rows of `source` over max_prompt_chars: "drop" or "error"
  c.max_prompt_chars = 0      # character limit on a problem of `source` (0 = none)
  return c


def run(config, workdir: str) -> int:
  """Generates / materialises / inspects datasets per `config` (get_config) under
  config.out_dir or WORKDIR/data; writes inspect.json and MANIFEST.json; prints a summary."""
  from rlvr_jax.data import records as records_lib
  get = lambda k, d=None: config.get(k, d) if hasattr(config, "get") else getattr(config, k, d)
  action = get("action", "all")
  if action not in ("generate", "inspect", "all"):
    raise ValueError(f"config.action must be 'generate', 'inspect' or 'all', got {action!r}")
  formats = _csv(get("formats", "jsonl"))
  unknown = set(formats) - {"jsonl", "array_record", "tfds"}
  if unknown:
    raise ValueError(f"config.formats has unknown formats {sorted(unknown)}; use jsonl, "
                     "array_record, tfds")
  out_dir = get("out_dir") or os.path.join(workdir, "data")
  seed = int(get("seed", 0))
  sizes = {"train": int(get("n_train", 1000)), "eval": int(get("n_eval", 200)),
           "ood": int(get("n_ood", 200))}
  tok = None
  if get("tokenizer"):
    from rlvr_jax.tokenizer import load_tokenizer
    tok = load_tokenizer(get("tokenizer"))
  system_prompt = get("system_prompt", "default") or None
  datasets: dict[str, list[dict]] = {}
  corpora: dict[str, list[str]] = {}
  counts: dict[str, Any] = {}
  if get("source"):
    policy = records_lib.Policy(missing_answer=get("missing_answer", "drop"),
                                too_long=get("too_long", "drop"),
                                max_prompt_chars=int(get("max_prompt_chars", 0)) or None)
    split = get("source_split", "train")
    recs, cnt = records_lib.load_records(get("source"), layout=get("layout", "auto"),
                                         policy=policy, split=split)
    datasets[f"{get('source_name', 'source')}/{split}"] = recs
    counts[get("source_name", "source")] = cnt
  else:
    from rlvr_jax.data.domains import get_domain
    for name in _csv(get("domains", "arith")):
      dom = get_domain(name)
      for split in _csv(get("splits", "train,eval,ood")):
        if sizes.get(split, 0) > 0:
          datasets[f"{name}/{split}"] = [records_lib.from_example(ex) for ex in
                                         dom.generate(split, sizes[split], seed)]
      if int(get("corpus_docs", 0)) > 0:
        corpora[name] = dom.corpus(int(get("corpus_docs")), seed)
  entries = []
  if action in ("generate", "all"):
    for key, recs in datasets.items():
      if "jsonl" in formats:
        entries.append({"path": f"{key}.jsonl", "records": write_jsonl(
            recs, os.path.join(out_dir, f"{key}.jsonl"))})
      if "array_record" in formats:
        entries.append({"path": f"{key}.array_record", "records": write_array_record(
            recs, os.path.join(out_dir, f"{key}.array_record"))})
    for name, docs in corpora.items():
      entries.append({"path": f"corpus/{name}.jsonl", "records": write_jsonl(
          ({"id": f"{name}-doc-{i}", "text": d} for i, d in enumerate(docs)),
          os.path.join(out_dir, "corpus", f"{name}.jsonl"))})
    if "tfds" in formats and not get("source"):
      for name in _csv(get("domains", "arith")):
        path = write_tfds(name, os.path.join(out_dir, "tfds"), n_train=sizes["train"],
                          n_eval=sizes["eval"], n_ood=sizes["ood"], seed=seed)
        entries.append({"path": os.path.relpath(path, out_dir), "records": sum(sizes.values()),
                        "format": "tfds"})
  report: dict[str, Any] = {"counts": counts, "datasets": {}, "corpora": {}}
  if action in ("inspect", "all"):
    kw = dict(n_examples=int(get("inspect_examples", 3)), bins=int(get("histogram_bins", 10)))
    for key, recs in datasets.items():
      report["datasets"][key] = inspect_records(recs, tok, template=get("template", "toy"),
                                                system_prompt=system_prompt, **kw)
      print(format_report(key, report["datasets"][key]))
    for name, docs in corpora.items():
      report["corpora"][name] = inspect_docs(docs, tok, n_examples=kw["n_examples"],
                                             bins=kw["bins"])
      print(format_report(f"corpus/{name}", report["corpora"][name]))
    os.makedirs(out_dir, exist_ok=True)
    with atomic_path(os.path.join(out_dir, "inspect.json")) as tmp:
      with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False, default=_json_default)
  if entries:
    write_manifest(out_dir, entries, {"seed": seed, "counts": counts})
    print(f"wrote {len(entries)} files to {out_dir} (MANIFEST.json lists them)")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m rlvr_jax.data.materialize --workdir=DIR [--config.KEY=VALUE ...]` with the
  defaults of get_config() (no config file needed). An unknown key fails naming it."""
  import sys
  argv = list(sys.argv[1:] if argv is None else argv)
  config, workdir = get_config(), None
  for arg in argv:
    key, _, value = arg.partition("=")
    if key == "--workdir":
      workdir = value
    elif key.startswith("--config."):
      name = key[len("--config."):]
      if name not in config:
        raise SystemExit(f"unknown config field {name!r}; fields: {sorted(config.keys())}")
      config[name] = type(config[name])(value)
    else:
      raise SystemExit(f"unexpected argument {arg!r}; usage: --workdir=DIR [--config.KEY=VALUE]")
  if not workdir:
    raise SystemExit("--workdir=DIR is required")
  return run(config, workdir)


if __name__ == "__main__":
  raise SystemExit(main())
