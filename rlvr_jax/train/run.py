"""`rlvr-jax cpt` and `rlvr-jax sft`: build the run's tokenizer and grain pipelines from the config,
then hand them to the training loop (rlvr_jax.train.loop.train).

Data (config.data):
  domains      comma-separated synthetic domains ("arith,units,graph"), or "" for files only
  files        comma-separated JSONL / Parquet / text files (real data; '' = none)
  layout       record layout of `files` ("auto" detects problem/answer, GSM8K, MATH, verl)
  n_train      synthetic examples (SFT) or corpus documents (CPT) per domain
  n_eval       held-out examples / documents per domain
  difficulty   SFT: synthetic level (1-5) of the train and held-out problems (0 = the splits'
               default levels 1-3)
  tokenizer    tokenizer path ('' = the init HF dir's / init run's, else the built-in toy
               sentencepiece model); copied into the run
  template     chat template for SFT prompts ("toy", "llama3", "chatml", "plain")
  thinking     SFT on the <think> trace + solution (True) or the solution only (False)
  trace        which trace: "faithful" (the domain's), "unfaithful_<kind>" (Domain.corrupt:
               corrupted_step, unsupported_answer, foreign_steps; training records only) or
               "none" (= thinking False: the solution only)
  system_prompt  SFT system prompt: "default" (the paper's, when the field is absent), a string,
               or "" for none; RL and eval prompts must use the same one
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any

import jax

from rlvr_jax import specs
from rlvr_jax.data import builtin, pipelines, records as records_lib
from rlvr_jax.run import context
from rlvr_jax.run import init as init_lib
from rlvr_jax.run import workdir as workdir_lib
from rlvr_jax.run.errors import EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED
from rlvr_jax.train import loop


def _file_records(config) -> tuple[list[dict], list[dict]]:
  """Records of data.files, split into train / held-out by content hash."""
  spec = specs.parse(config)
  from rlvr_jax.data import protocols, sources
  rows = []
  for path in spec.data.file_list:
    recs, _ = records_lib.load_records(sources.open_source(path), layout=spec.data.layout)
    rows.extend(recs)
  if not rows:
    return [], []
  by_id = {r["id"]: r for r in rows}
  train_ids, held_ids = protocols.heldout_split(list(by_id), fraction=0.05, seed=spec.seed)
  return [by_id[i] for i in train_ids], [by_id[i] for i in held_ids]


def _docs(config) -> tuple[list[str], list[str]]:
  """CPT documents: domain corpora (+ plain-text / JSONL `text` files)."""
  spec = specs.parse(config)
  from rlvr_jax.data.domains import get_domain
  from rlvr_jax.data import sources
  n_train, n_eval = spec.data.n_train, spec.data.n_eval
  train, held = [], []
  for name in spec.data.domain_list:
    domain = get_domain(name)
    docs = domain.corpus(n_train + n_eval, spec.seed)
    train.extend(docs[:n_train])
    held.extend(docs[n_train:])
  for path in spec.data.file_list:
    src = sources.open_source(path)
    texts = [records_lib.text_record(src[i], where=src.where(i)) for i in range(len(src))]
    cut = max(1, len(texts) // 20)
    held.extend(texts[:cut])
    train.extend(texts[cut:])
  if not train:
    raise ValueError("no CPT documents: set config.data.domains and/or config.data.files")
  return train, held


def _problem_records(config) -> tuple[list[dict], list[dict]]:
  """SFT problems: synthetic-domain train / held-out records (+ data.files records)."""
  spec = specs.parse(config)
  n_train, n_eval = spec.data.n_train, spec.data.n_eval
  difficulty = spec.data.difficulty or None   # 0: the splits' default levels
  train, held = [], []
  for name in spec.data.domain_list:
    train.extend(records_lib.domain_records(name, "train", n_train, spec.seed, difficulty))
    held.extend(records_lib.domain_records(name, "eval", n_eval, spec.seed, difficulty))
  file_train, file_held = _file_records(spec)
  train.extend(file_train)
  held.extend(file_held)
  if not train:
    raise ValueError("no SFT examples: set config.data.domains and/or config.data.files")
  trace = spec.data.trace
  if trace.startswith(UNFAITHFUL):
    train = unfaithful_records(train, trace[len(UNFAITHFUL):], spec.seed)
  return train, held


UNFAITHFUL = "unfaithful_"
TRACES = ("faithful", "none") + tuple(UNFAITHFUL + k for k in
                                      ("corrupted_step", "unsupported_answer", "foreign_steps"))


def unfaithful_records(records: list[dict], kind: str, seed: int) -> list[dict]:
  """The training records with their thinking traces replaced by the synthetic domain's
  unfaithful variant `kind` (Domain.corrupt: corrupted_step, unsupported_answer, foreign_steps),
  for SFT contrast models. Each record's corruption is seeded by (seed, record id), so it is
  the same on every resume and process. Records that cannot be corrupted (no synthetic domain,
  or too few steps) are dropped and counted in a warning: an 'unfaithful' model must not learn
  from faithful traces."""
  import hashlib
  import logging
  from rlvr_jax.data.domains import get_domain
  out, skipped = [], 0
  for r in records:
    if not r.get("domain"):
      skipped += 1
      continue
    digest = hashlib.sha256(f"{seed}:{r['id']}".encode()).digest()
    try:
      text, _ = get_domain(r["domain"]).corrupt(r, kind, int.from_bytes(digest[:8], "big"))
    except ValueError as e:
      if "unknown kind" in str(e):
        raise ValueError(f"config.data.trace={UNFAITHFUL}{kind}: {e}") from None
      skipped += 1
      continue
    out.append({**r, "thinking": text})
  if skipped:
    logging.getLogger("rlvr_jax.data").warning(
        "data.trace=%s%s: %d of %d training records have no synthetic-domain steps to corrupt "
        "and were dropped", UNFAITHFUL, kind, skipped, len(records))
  if not out:
    raise ValueError(f"config.data.trace={UNFAITHFUL}{kind}: none of the {len(records)} training "
                     f"records comes from a synthetic domain (data.domains), so none can be "
                     f"made unfaithful; use data.domains or data.trace='faithful'")
  return out


def _per_process_batch(spec) -> int:
  return spec.batch_size // jax.process_count()


def _run_stage(config, workdir: str, stage: str, make_dataset, load_items, extra_kwargs,
               eval_kwargs=None) -> int:
  """Tokenizer, data and the training loop of one stage; `make_dataset(items, tok, **kw)` is
  pipelines.cpt_dataset or sft_dataset and `load_items(config)` gives (train, held-out) items;
  `eval_kwargs` are passed to the held-out dataset only."""
  spec = dataclasses.replace(specs.parse(config), stage=stage)
  with workdir_lib.locked(workdir):
    return _locked_stage(spec, workdir, stage, make_dataset, load_items, extra_kwargs,
                         eval_kwargs)


def _locked_stage(spec, workdir, stage, make_dataset, load_items, extra_kwargs, eval_kwargs):
  # the init source, the tokenizer (it may default to the source's), the model config (a too
  # small vocabulary refused) and the mesh, once
  ctx = context.build(spec, workdir, stage, tokenizer_spec=init_lib.tokenizer_path(spec))
  tokenizer = ctx.tokenizer
  train_items, eval_items = load_items(spec)
  kw = dict(seq_len=spec.seq_len, batch_size=_per_process_batch(spec), **extra_kwargs)

  def make_batches(s) -> Any:
    return iter(make_dataset(train_items, tokenizer, seed=s.seed, num_epochs=None, **kw))

  eval_cache: dict[int, list] = {}

  def make_eval_batches(s):
    # The held-out batches are the same at every eval (no shuffle, seed 0): build them once and
    # keep the few host batches, instead of re-encoding (and re-masking answers) every time.
    n = s.eval_batches
    if n not in eval_cache:
      ds = make_dataset(eval_items, tokenizer, seed=0, num_epochs=1, shuffle=False,
                        drop_remainder=False, **kw, **(eval_kwargs or {}))
      eval_cache[n] = list(itertools.islice(iter(ds), n))
    return eval_cache[n]

  status = loop.train_in_context(ctx, make_batches,
                                make_eval_batches if eval_items else None)
  print(f"{stage}: {status} ({workdir})")
  return exit_status(status)


def exit_status(status: str) -> int:
  """The command's exit status for a loop's final status: 0 for a finished run (completed, or
  data_exhausted: the data ran out before `steps`, the final checkpoint saved, which the next
  stage may build on), EXIT_PREEMPTED (75) when a signal stopped it after a checkpoint (rerun
  to resume), 1 otherwise."""
  from rlvr_jax.run.workdir import FINISHED
  if status in FINISHED:
    return EXIT_OK
  return EXIT_PREEMPTED if status == "preempted" else EXIT_FAILED


def run_cpt(config, workdir: str) -> int:
  """`rlvr-jax cpt`: packed LM loss on the domain corpus (+ config.data.files)."""
  return _run_stage(specs.parse(config), workdir, "cpt", pipelines.cpt_dataset, _docs, {})


def sft_kwargs(config) -> dict:
  """The sft_dataset options of data.* (ConfigError for a bad data.trace / data.thinking)."""
  data = specs.parse(config).data
  problems = specs.sft_problems(data)
  if problems:
    raise specs.ConfigError("; ".join(problems))
  return dict(template=data.template, thinking=data.thinking and data.trace != "none",
              system_prompt=data.system_prompt or None, truncation=data.truncation,
              pack=data.pack)


def run_sft(config, workdir: str) -> int:
  """`rlvr-jax sft`: loss on assistant tokens of chat-formatted problems with their traces."""
  spec = specs.parse(config)
  return _run_stage(spec, workdir, "sft", pipelines.sft_dataset, _problem_records,
                    sft_kwargs(spec), eval_kwargs={"answer_mask": True})


def tokenizer_of_run(workdir: str):
  """The tokenizer a run directory was trained with (its copy of the tokenizer)."""
  for name in builtin.RUN_TOKENIZER_FILES:
    if os.path.exists(os.path.join(workdir, name)):
      from rlvr_jax.tokenizer import load_tokenizer
      return load_tokenizer(os.path.join(workdir, name))
  raise FileNotFoundError(f"{workdir} has no tokenizer ({' or '.join(builtin.RUN_TOKENIZER_FILES)})")
