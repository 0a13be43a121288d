r"""The evaluation harness: k samples per prompt, verified, as avg@k / pass@k / maj@k / greedy.

    metrics, rows = evaluate(cfg, params, tok, {"arith_eval": records}, k=16, max_new_tokens=256,
                             template="toy", batch_size=16, key=jax.random.key(0))
    eval_fn = make_eval_fn(cfg, tok, eval_sets, workdir=workdir, k=8, ...)   # in a train loop
    metrics = eval_fn(params, step)                    # also writes workdir/eval/<step>/*.jsonl
    rlvr-jax eval --config=configs/toy/eval.py --workdir=DIR --config.init.from_checkpoint=RUN

Eval sets are {name: [problem record, ...]} (rlvr_jax/data/records.py schema; synthetic-domain
Examples are accepted too). Prompts are the record's chat prompt in `template`
(pipelines.render_prompt: system prompt, user turn, generation prompt, optional prompt_suffix).

Scoring. A verifier is `verifier(record, response_text) -> bool`. The default one compares the
last \boxed{} of the response with the record's *true* label (`true_answer`, else `answer`;
validation always uses true labels): through the domain's own `verify_answer` when
`record["domain"]` names a synthetic domain, else `answers.equivalent(extract_boxed(text),
label)` (the matcher of the RL rewards and the data protocols too). The extracted answer
written out and voted on is always `extract_boxed(text)`.

Metrics per eval set NAME (k samples per prompt at `temperature`):
  eval/NAME/avg@k        mean correctness over all samples
  eval/NAME/pass@j       unbiased pass@j (metrics.pass_at_k) for every j in `ks` with j <= k
  eval/NAME/maj@k        majority vote (metrics.majority_vote: equivalent answers, ties to the
                         answer seen first); the vote is correct when the verifier accepted the
                         first sample giving the winning answer (for the default verifier this
                         is exactly equivalent(majority answer, label))
  eval/NAME/greedy_acc   accuracy of one temperature-0 response per prompt (greedy=True only)
  eval/NAME/length_mean  mean sampled response length in tokens (the stop token included)
  eval/NAME/clip_frac    fraction of samples that hit max_new_tokens without a stop token
Generation stops at the template's turn-end token (tokenizer.chat_stop_id) and at the
tokenizer's eos.

Batching. Prompts go to the sampler batch_size at a time, each with num_samples=k (rows of one
prompt contiguous). The last partial batch is padded to batch_size with copies of its first
prompt, so every call has the same batch shape (one compilation per prompt-length bucket, see
sampling.prompt_bucket); the padding rows are dropped before scoring. Batch b of set NAME draws
with key fold_in(fold_in(key, crc32(NAME)), b): adding a set does not change another's samples.

Per-sample rows (written as DIR/NAME.jsonl by write_samples, atomically: temp file + rename), one
JSON object per response: set, mode ("sample" or "greedy"), prompt_index, prompt_id, sample,
response, extracted, label, correct, length, finished.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from rlvr_jax import sampling, specs
from rlvr_jax.data import answers as answers_lib
from rlvr_jax.eval import metrics as metrics_lib

log = logging.getLogger("rlvr_jax.eval")

Verifier = Callable[[Mapping[str, Any], str], bool]
_SET_NAME = re.compile(r"[A-Za-z0-9_.\-]+")

__all__ = ["EvalOptions", "PreparedSet", "default_verifier", "record_label", "prepare_eval_sets",
           "evaluate", "write_samples", "make_eval_fn", "make_eval_fn_from_config",
           "options_from_config", "eval_sets_from_config", "format_table", "run"]


# ---------------------------------------------------------------------------------- options
@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """How to evaluate. k: samples per prompt; ks: pass@ values (those <= k are reported);
  temperature / top_k / top_p: the sampling settings of the k samples; max_new_tokens: response
  budget; template: chat template name; batch_size: prompts per sampler call; greedy: also run a
  temperature-0 pass; system_prompt: "default" (tokenizer.DEFAULT_SYSTEM_PROMPT), a string or
  None; prompt_suffix: text appended after the generation prompt (e.g. "<think>\\n")."""
  k: int = specs.EvalSpec.k   # defaults: specs.EvalSpec (the one place)
  ks: tuple[int, ...] = specs.EvalSpec.ks
  temperature: float = specs.EvalSpec.temperature
  top_k: int = specs.EvalSpec.top_k
  top_p: float = specs.EvalSpec.top_p
  max_new_tokens: int = specs.EvalSpec.max_new_tokens
  template: str = specs.EvalSpec.template
  batch_size: int = specs.EvalSpec.batch_size
  greedy: bool = specs.EvalSpec.greedy
  system_prompt: str | None = specs.EvalSpec.system_prompt
  prompt_suffix: str = specs.EvalSpec.prompt_suffix

  def __post_init__(self):
    object.__setattr__(self, "ks", metrics_lib.check_ks(tuple(self.ks), self.k))
    problems = []
    for name in ("batch_size", "max_new_tokens"):
      v = getattr(self, name)
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        problems.append(f"{name}={v!r} must be an integer >= 1")
    if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature) \
        or self.temperature < 0:
      problems.append(f"temperature={self.temperature!r} must be a finite number >= 0")
    if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
      problems.append(f"top_p={self.top_p!r} must lie in (0, 1]")
    if not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
      problems.append(f"top_k={self.top_k!r} must be an integer >= 0 (0 = off)")
    if problems:
      raise ValueError("bad eval options: " + "; ".join(problems))


# ---------------------------------------------------------------------------------- scoring
def record_label(record: Mapping[str, Any]) -> str:
  """The label a record is validated against: its true_answer, else its answer."""
  label = record.get("true_answer")
  if label is None or label == "":
    label = record.get("answer")
  return "" if label is None else str(label)


def default_verifier(record: Mapping[str, Any], response: str) -> bool:
  """The domain's verify_answer for synthetic-domain records, else boxed-answer matching."""
  from rlvr_jax.data.domains import DOMAINS
  label = record_label(record)
  domain = DOMAINS.get(str(record.get("domain") or ""))
  if domain is not None:
    return bool(domain.verify_answer(label, response))
  return answers_lib.equivalent(answers_lib.extract_boxed(response), label)


# ---------------------------------------------------------------------------------- prompts
@dataclasses.dataclass(frozen=True)
class PreparedSet:
  """One eval set, tokenized: records, prompts int32[n, P] (right-padded), lengths int32[n]."""
  name: str
  records: list
  prompts: np.ndarray
  lengths: np.ndarray


def _as_record(x: Any, where: str) -> dict:
  if isinstance(x, Mapping):
    record = dict(x)
  elif hasattr(x, "problem") and hasattr(x, "answer"):   # a synthetic-domain Example
    from rlvr_jax.data.records import from_example
    record = from_example(x)
  else:
    raise ValueError(f"{where}: expected a problem record (dict with 'problem' and 'answer'), "
                     f"got {type(x).__name__}")
  if not record.get("problem") and not record.get("messages"):
    raise ValueError(f"{where}: the record has no 'problem' text (nor 'messages'); see "
                     f"rlvr_jax/data/records.py for the schema")
  if not record_label(record):
    raise ValueError(f"{where}: the record has no 'answer' (nor 'true_answer') to score against")
  return record


def prepare_eval_sets(cfg, tokenizer, eval_sets: Mapping[str, Sequence[Any]],
                      options: EvalOptions) -> list[PreparedSet]:
  """Tokenizes every set's prompts; ValueError naming the set and record for bad input (a
  missing field, an empty set, a prompt that leaves no room for max_new_tokens in the model's
  max_seq_len, a bad set name)."""
  from rlvr_jax.data.pipelines import render_prompt
  if not isinstance(eval_sets, Mapping) or not eval_sets:
    raise ValueError("eval_sets must be a non-empty dict {name: [problem records]}")
  tokenizer.check_template(options.template)
  budget = cfg.max_seq_len - options.max_new_tokens
  if budget < 1:
    raise ValueError(f"max_new_tokens={options.max_new_tokens} leaves no room for a prompt in the "
                     f"model's max_seq_len={cfg.max_seq_len}; lower max_new_tokens")
  out = []
  for name, items in eval_sets.items():
    if not isinstance(name, str) or not _SET_NAME.fullmatch(name):
      raise ValueError(f"eval set name {name!r} must be letters, digits, '_', '-' or '.' (it "
                       f"names metrics and files)")
    items = list(items)
    if not items:
      raise ValueError(f"eval set {name!r} is empty")
    records, rows = [], []
    for i, item in enumerate(items):
      where = f"eval set {name!r} record {i}"
      record = _as_record(item, where)
      try:
        ids = render_prompt(record, tokenizer, template=options.template,
                            system_prompt=options.system_prompt,
                            prompt_suffix=options.prompt_suffix)
      except (KeyError, TypeError) as e:
        raise ValueError(f"{where} (id {record.get('id')!r}): cannot build its prompt: {e}") from e
      if not ids:
        raise ValueError(f"{where} (id {record.get('id')!r}): the prompt is empty")
      if len(ids) > budget:
        raise ValueError(f"{where} (id {record.get('id')!r}): the prompt is {len(ids)} tokens; with "
                         f"max_new_tokens={options.max_new_tokens} it does not fit the model's "
                         f"max_seq_len={cfg.max_seq_len}; lower max_new_tokens or drop the record")
      records.append(record)
      rows.append(ids)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    prompts = np.full((len(rows), width), pad, np.int32)
    for i, r in enumerate(rows):
      prompts[i, :len(r)] = r
    lengths = np.array([len(r) for r in rows], np.int32)
    out.append(PreparedSet(name, records, prompts, lengths))
  return out


# ---------------------------------------------------------------------------------- sampling
def _stop_ids(tokenizer, template: str) -> tuple[int, ...]:
  ids = [tokenizer.chat_stop_id(template)]
  if tokenizer.eos_id is not None and tokenizer.eos_id not in ids:
    ids.append(tokenizer.eos_id)
  return tuple(ids)


def _to_host(x) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def _set_key(key, name: str):
  return jax.random.fold_in(key, zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF)


def _sample_set(cfg, params, ps: PreparedSet, key, options: EvalOptions, *, num_samples: int,
                temperature: float, eos_ids: tuple[int, ...], pad_id: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """(tokens int32[n * num_samples, M], lengths int32[n * num_samples]) of one set; batch b is
  dispatched before batch b-1 is pulled to the host."""
  n, bs = len(ps.records), options.batch_size
  tokens, lengths = [], []
  pending = None

  def pull(item):
    out, real = item
    rows = real * num_samples
    tokens.append(_to_host(out.tokens)[:rows])
    lengths.append(_to_host(out.lengths)[:rows])

  for b in range(math.ceil(n / bs)):
    idx = np.arange(b * bs, min(n, (b + 1) * bs))
    fill = np.concatenate([idx, np.full(bs - len(idx), idx[0], idx.dtype)])
    out = sampling.generate(cfg, params, ps.prompts[fill], ps.lengths[fill],
                            jax.random.fold_in(key, b), max_new_tokens=options.max_new_tokens,
                            temperature=temperature, top_k=options.top_k, top_p=options.top_p,
                            num_samples=num_samples, eos_id=eos_ids, pad_id=pad_id)
    if pending is not None:
      pull(pending)
    pending = (out, len(idx))
  pull(pending)
  return np.concatenate(tokens).astype(np.int32), np.concatenate(lengths).astype(np.int32)


def _score(ps: PreparedSet, tokenizer, tokens, lengths, num_samples: int, verifier: Verifier,
           eos_ids: tuple[int, ...], mode: str) -> tuple[list[dict], np.ndarray]:
  """Per-sample rows and correctness bool[n, num_samples]."""
  texts = tokenizer.decode_batch(tokens, lengths)
  rows, correct = [], np.zeros((len(ps.records), num_samples), bool)
  for r, (text, length) in enumerate(zip(texts, lengths.tolist())):
    p, s = divmod(r, num_samples)
    record = ps.records[p]
    ok = bool(verifier(record, text))
    correct[p, s] = ok
    finished = length > 0 and int(tokens[r, length - 1]) in eos_ids
    rows.append({"set": ps.name, "mode": mode, "prompt_index": p,
                 "prompt_id": str(record.get("id", p)), "sample": s, "response": text,
                 "extracted": answers_lib.extract_boxed(text), "label": record_label(record),
                 "correct": ok, "length": int(length), "finished": bool(finished)})
  return rows, correct


def _evaluate_prepared(cfg, params, tokenizer, prepared: Sequence[PreparedSet],
                       options: EvalOptions, key, verifier: Verifier | None
                       ) -> tuple[dict[str, float], dict[str, list[dict]]]:
  verifier = verifier or default_verifier
  eos_ids = _stop_ids(tokenizer, options.template)
  pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else eos_ids[0]
  if key is None:
    key = jax.random.key(0)
  k = options.k
  metrics: dict[str, float] = {}
  rows_by_set: dict[str, list[dict]] = {}
  for ps in prepared:
    set_key = _set_key(key, ps.name)
    tokens, lengths = _sample_set(cfg, params, ps, set_key, options, num_samples=k,
                                  temperature=options.temperature, eos_ids=eos_ids, pad_id=pad_id)
    rows, correct_PK = _score(ps, tokenizer, tokens, lengths, k, verifier, eos_ids, "sample")
    prefix = f"eval/{ps.name}/"
    for name, value in metrics_lib.summarize(correct_PK, options.ks).items():
      metrics[prefix + name] = value
    votes = []
    for p in range(len(ps.records)):
      _, first = metrics_lib.majority_vote([rows[p * k + s]["extracted"] for s in range(k)], k)
      votes.append(first is not None and bool(correct_PK[p, first]))
    metrics[prefix + f"maj@{k}"] = float(np.mean(votes))
    if options.greedy:
      g_tokens, g_lengths = _sample_set(cfg, params, ps, set_key, options, num_samples=1,
                                        temperature=0.0, eos_ids=eos_ids, pad_id=pad_id)
      g_rows, g_correct = _score(ps, tokenizer, g_tokens, g_lengths, 1, verifier, eos_ids,
                                 "greedy")
      metrics[prefix + "greedy_acc"] = float(np.mean(g_correct))
      rows = rows + g_rows
    metrics[prefix + "length_mean"] = float(np.mean(lengths))
    metrics[prefix + "clip_frac"] = float(np.mean(
        [not r["finished"] for r in rows if r["mode"] == "sample"]))
    rows_by_set[ps.name] = rows
  return metrics, rows_by_set


def evaluate(cfg, params, tokenizer, eval_sets: Mapping[str, Sequence[Any]], *, k: int = 16,
             ks: Sequence[int] = (1, 4, 8, 16), temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, max_new_tokens: int = 256, template: str = "toy",
             batch_size: int = 16, key=None, greedy: bool = True,
             verifier: Verifier | None = None, system_prompt: str | None = "default",
             prompt_suffix: str = "") -> tuple[dict[str, float], dict[str, list[dict]]]:
  """Evaluates `params` on every set of `eval_sets` ({name: [problem records]}).

  Returns (metrics {"eval/NAME/avg@k": ..., ...}, rows {NAME: [per-sample row dicts]}); see the
  module docstring for the metrics, the rows and the batching. key: the PRNG key of the samples
  (default jax.random.key(0)). verifier(record, response_text) -> bool overrides the default.
  Runs under the caller's mesh (sharding.activate) when there is one.
  """
  options = EvalOptions(k=k, ks=tuple(ks), temperature=temperature, top_k=top_k, top_p=top_p,
                        max_new_tokens=max_new_tokens, template=template, batch_size=batch_size,
                        greedy=greedy, system_prompt=system_prompt, prompt_suffix=prompt_suffix)
  prepared = prepare_eval_sets(cfg, tokenizer, eval_sets, options)
  return _evaluate_prepared(cfg, params, tokenizer, prepared, options, key, verifier)


# ---------------------------------------------------------------------------------- output
def write_samples(rows_by_set: Mapping[str, Sequence[Mapping]], directory: str | os.PathLike
                  ) -> list[str]:
  """Writes DIRECTORY/NAME.jsonl per set (one JSON object per row), each atomically (a temp file
  renamed into place). Only process 0 writes. Returns the paths."""
  from rlvr_jax.run import files
  directory = os.fspath(directory)
  paths = [f"{directory}/{name}.jsonl" for name in rows_by_set]
  if jax.process_index() != 0:
    return paths
  for path, rows in zip(paths, rows_by_set.values()):
    files.write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
  return paths


def format_table(metrics: Mapping[str, float]) -> str:
  """The eval/NAME/METRIC values as a text table, one row per set."""
  sets: dict[str, dict[str, float]] = {}
  columns: list[str] = []
  for key, value in metrics.items():
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "eval":
      continue
    sets.setdefault(parts[1], {})[parts[2]] = value
    if parts[2] not in columns:
      columns.append(parts[2])
  if not sets:
    return "(no eval metrics)"
  width = max(len("set"), *map(len, sets))
  cols = [max(len(c), 7) for c in columns]
  lines = ["set".ljust(width) + "  " + "  ".join(c.rjust(w) for c, w in zip(columns, cols))]
  for name, values in sets.items():
    cells = []
    for c, w in zip(columns, cols):
      v = values.get(c)
      text = "-" if v is None else (f"{v:.1f}" if c == "length_mean" else f"{v:.4f}")
      cells.append(text.rjust(w))
    lines.append(name.ljust(width) + "  " + "  ".join(cells))
  return "\n".join(lines)


# ---------------------------------------------------------------------------------- train loops
def make_eval_fn(cfg, tokenizer, eval_sets: Mapping[str, Sequence[Any]], *,
                 workdir: str | None = None, seed: int = 0, verifier: Verifier | None = None,
                 write: bool = True, **options) -> Callable[[Any, int], dict[str, float]]:
  """A callable `(params, step) -> metrics` for training loops (every K steps).

  Prompts are tokenized once, here. options: EvalOptions fields (k, ks, temperature, top_k,
  top_p, max_new_tokens, template, batch_size, greedy, system_prompt, prompt_suffix). Every call
  uses the same key (jax.random.key(seed)), so successive evaluations differ only through the
  params. With `workdir` and write=True the per-sample rows go to WORKDIR/eval/<step>/NAME.jsonl.
  The returned metrics hold the eval/... keys; the caller logs them with its step.
  """
  opts = EvalOptions(**options)
  prepared = prepare_eval_sets(cfg, tokenizer, eval_sets, opts)
  key = jax.random.key(seed)

  def eval_fn(params, step: int) -> dict[str, float]:
    start = time.time()
    metrics, rows = _evaluate_prepared(cfg, params, tokenizer, prepared, opts, key, verifier)
    if workdir and write:
      write_samples(rows, os.path.join(workdir, "eval", str(int(step))))
    summary = ", ".join(f"{k.removeprefix('eval/')}={v:.3f}" for k, v in metrics.items()
                        if k.endswith((f"/avg@{opts.k}", "/greedy_acc")))
    log.info("eval at step %d (%.1fs): %s", step, time.time() - start, summary)
    return metrics

  eval_fn.options = opts
  eval_fn.set_names = [p.name for p in prepared]
  return eval_fn


def _eval_spec(eval_config) -> specs.EvalSpec:
  """specs.EvalSpec of an `eval` section (an EvalSpec, a ConfigDict or a dict)."""
  return specs.parse_section(specs.EvalSpec, eval_config, "eval.")


def options_from_config(eval_config) -> EvalOptions:
  """EvalOptions from an `eval` section (specs.EvalSpec; configs/toy/eval.py's fields)."""
  e = _eval_spec(eval_config)
  kw = {f.name: getattr(e, f.name) for f in dataclasses.fields(EvalOptions)}
  return EvalOptions(**{**kw, "ks": tuple(int(k) for k in e.ks),
                        "system_prompt": e.system_prompt or None})


def _split_list(value) -> list[str]:
  if isinstance(value, str):
    return [x.strip() for x in value.split(",") if x.strip()]
  return [str(x).strip() for x in (value or ()) if str(x).strip()]


def eval_sets_from_config(eval_config) -> dict[str, list[dict]]:
  """{name: records} from an `eval` ConfigDict.

  Synthetic sets: for each domain of `domains` and split of `splits`, `n` records drawn with
  `seed`, named DOMAIN_SPLIT; `difficulty` (1-5, 0 = the split's default levels) sets the level
  of the in-domain sets (the ood split keeps its harder levels 4-5). File sets: each entry of
  `files` ("[NAME=]PATH", comma-separated; a JSONL / Parquet / glob path read by records.load_records with `layout`; NAME defaults to the
  file's stem), at most `limit` records each (0 = all).
  """
  from rlvr_jax.data import records as records_lib
  e = _eval_spec(eval_config)
  sets: dict[str, list[dict]] = {}
  domains = _split_list(e.domains)
  splits = _split_list(e.splits)
  n, seed = e.n, e.seed
  if domains and n < 1:
    raise ValueError(f"eval.n={n} must be >= 1 (records per synthetic eval set)")
  difficulty = e.difficulty or None   # in-domain sets only
  for domain in domains:
    for split in splits:
      level = difficulty if split != "ood" else None
      sets[f"{domain}_{split}"] = records_lib.domain_records(domain, split, n, seed, level)
  limit = e.limit or None
  layout = e.layout
  for entry in _split_list(e.files):
    name, sep, path = entry.partition("=")
    if not sep:
      path = name
      base = os.path.basename(path.rstrip("/"))
      name = base.split(".")[0] or "file"
    if name in sets:
      raise ValueError(f"eval set name {name!r} is used twice (eval.files entry {entry!r}); "
                       f"name it with NAME=PATH")
    records, counts = records_lib.load_records(path, layout=layout, limit=limit)
    if not records:
      raise ValueError(f"eval.files entry {entry!r}: no usable problem records ({counts})")
    log.info("eval set %s: %d records from %s (%s)", name, len(records), path, counts)
    sets[name] = records
  if not sets:
    raise ValueError("no eval sets: set eval.domains (e.g. 'arith') and/or eval.files")
  return sets


def make_eval_fn_from_config(eval_config, cfg, tokenizer, *, workdir: str | None = None,
                             seed: int | None = None, verifier: Verifier | None = None
                             ) -> Callable[[Any, int], dict[str, float]]:
  """make_eval_fn with the sets and options of an `eval` ConfigDict (see configs/toy/eval.py)."""
  e = _eval_spec(eval_config)
  options = dataclasses.asdict(options_from_config(e))
  seed = e.seed if seed is None else seed
  write = e.write_samples
  return make_eval_fn(cfg, tokenizer, eval_sets_from_config(e), workdir=workdir,
                      seed=seed, verifier=verifier, write=write, **options)


# ---------------------------------------------------------------------------------- the command
def _check_mesh_fit(cfg, mesh) -> None:
  t, f = mesh.shape["tensor"], mesh.shape["fsdp"]
  for name in ("num_heads", "num_kv_heads", "intermediate_size", "vocab_size"):
    if getattr(cfg, name) % t:
      raise ValueError(f"model {name}={getattr(cfg, name)} does not divide over mesh.tensor={t};"
                       f" choose a mesh.tensor that divides it")
  if cfg.hidden_size % f:
    raise ValueError(f"model hidden_size={cfg.hidden_size} does not divide over mesh.fsdp={f}; "
                     f"choose a mesh.fsdp that divides it")


def _load_spec(config) -> specs.RunSpec:
  """The RunSpec fields load_for_eval reads (init, model.dtype, tokenizer), from a RunSpec or
  from a config of another command that shares them (configs/diagnose.py)."""
  if isinstance(config, specs.RunSpec):
    return config
  part = {k: config[k] for k in ("init", "tokenizer") if k in config}
  if "model" in config and "dtype" in config["model"]:
    part["model"] = {"dtype": config["model"]["dtype"]}
  return specs.parse(part)


def load_for_eval(config, mesh):
  """(cfg, params, source, tag, step, tokenizer path) of init.from_checkpoint / init.from_hf
  (run.init: the source, its config with model.dtype, the params, the tokenizer path)."""
  from rlvr_jax.run import init as init_lib
  spec = _load_spec(config)
  from_hf, from_ckpt = spec.init.from_hf, spec.init.from_checkpoint
  if bool(from_hf) == bool(from_ckpt):
    raise ValueError("set exactly one of --config.init.from_checkpoint=RUN_DIR[:STEP] and "
                     "--config.init.from_hf=HF_DIR")
  source = init_lib.resolve_source(spec)     # an HF hub id / bucket directory is fetched here
  cfg = init_lib.eval_model_config(spec, source)
  tok_path = init_lib.tokenizer_path(spec, explicit=spec.tokenizer)
  if source.kind == "hf":
    return (cfg, init_lib.load_params(spec, cfg, mesh, source=source), from_hf, "hf", None,
            tok_path)
  params, step = init_lib.load_checkpoint(source, mesh)
  if not tok_path:
    raise ValueError(f"no tokenizer found for {source.path} (its config.json names no "
                     f"data.tokenizer and it holds no tokenizer.model / tokenizer.json); pass "
                     f"--config.tokenizer=PATH")
  tag = str(step) if step is not None else "params"
  return cfg, params, from_ckpt, tag, step, tok_path


def _atomic_write_json(path: str, doc: Any) -> None:
  from rlvr_jax.run import files
  files.write_json(path, doc)


def run(config, workdir: str) -> int:
  """`rlvr-jax eval` (see `evaluate_checkpoint`); exit status 0."""
  evaluate_checkpoint(config, workdir)
  return 0


def evaluate_checkpoint(config, workdir: str) -> dict[str, float]:
  """Evaluates a run checkpoint or an HF directory (configs/toy/eval.py); returns the metrics
  (on every process).

  Writes WORKDIR/eval_metrics.json ({"source", "step", "tag", "metrics"}), appends
  {"step", **metrics} to WORKDIR/metrics.jsonl, writes per-sample rows to
  WORKDIR/eval/<tag>/NAME.jsonl (tag: the checkpoint step, "params" for a params-only
  checkpoint, "hf" for an HF directory, or eval.name), and prints a table.
  """
  from rlvr_jax import sharding
  from rlvr_jax.tokenizer import load_tokenizer
  spec = specs.parse(config)
  options = options_from_config(spec.eval)
  mesh = sharding.make_mesh(spec.mesh.shape)
  sharding.check_divisible(options.batch_size, mesh, "eval.batch_size")
  eval_sets = eval_sets_from_config(spec.eval)
  cfg, params, source, tag, step, tok_path = load_for_eval(spec, mesh)
  _check_mesh_fit(cfg, mesh)
  tokenizer = load_tokenizer(tok_path)
  if tokenizer.vocab_size > cfg.vocab_size:
    raise ValueError(f"tokenizer {tok_path} has {tokenizer.vocab_size} ids but the model's "
                     f"vocab_size is {cfg.vocab_size}; wrong tokenizer for {source}?")
  tag = spec.eval.name or tag
  key = jax.random.key(spec.seed)
  start = time.time()
  with sharding.activate(mesh):
    prepared = prepare_eval_sets(cfg, tokenizer, eval_sets, options)
    metrics, rows = _evaluate_prepared(cfg, params, tokenizer, prepared, options, key, None)
  seconds = time.time() - start
  if jax.process_index() == 0:
    if spec.eval.write_samples:
      write_samples(rows, f"{workdir}/eval/{tag}")
    _atomic_write_json(f"{workdir}/eval_metrics.json",
                       {"source": source, "step": step, "tag": tag, "metrics": metrics,
                        "seconds": seconds})
  # the run loop's writer: metrics.jsonl (non-finite values as null) and TensorBoard scalars
  from rlvr_jax.run.loop import MetricsLogger
  logger = MetricsLogger(workdir, total=1, initial=0, desc="eval", progress=False)
  logger.write(step or 0, metrics)
  logger.close()
  if jax.process_index() == 0:
    print(f"eval of {source} (k={options.k}, T={options.temperature}, "
          f"{seconds:.1f}s):\n{format_table(metrics)}")
  return metrics
