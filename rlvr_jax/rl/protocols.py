r"""The model-aware data protocols of docs/PROTOCOL.md, run with the sampler and the verifier.

  solve_counts(cfg, params, tok, records, num_samples=16)      correct samples per problem
  wrong_answer_table(cfg, params, tok, records, num_samples=96) most frequent wrong final answer
  prepare_train_records(config, workdir, cfg, params, tok)      the whole chain, from config,
                                                                computed once per run directory

The chain (`prepare_train_records`), on the model being trained (its initial parameters):
1. pool: `data.n_pool` records per synthetic domain of `data.domains` (train split) plus the
   records of `data.files` (the first `data.pool_limit` of each file; 0 = all);
2. difficulty filter (`data.difficulty_filter`): sample `data.filter_samples` (16) responses per
   problem at T = 1, count the correct ones with the domain verifier, keep problems solved
   1..15 times (rlvr_jax.data.protocols.difficulty_filter);
3. N-subset (`data.n_train` = N > 0): the stratified round-robin subset over solve-count bins
   (data.protocols.stratified_subset) when the filter ran, else a seeded random N;
4. label replacement (`data.label_noise` = γ > 0): sample `data.label_noise_samples` (96)
   responses per kept prompt at T = 1, take each prompt's most frequent wrong boxed answer
   (rl.noise.most_frequent_wrong_answer) and replace the labels of a seeded γ fraction of the
   prompts (data.protocols.replace_labels; `true_answer` keeps the truth).
The result is written to WORKDIR/data/train.jsonl (the dataset variant) with
WORKDIR/data/protocol.json (the counts, the report of every stage, and the settings that made
it); a later run in the same directory (a resume) reads them back instead of sampling again,
and refuses a file made with different settings.

Majority vote (V votes, train on G) needs no data protocol: it is the RL step's
`vote_samples` setting with the `majority_vote` reward (rl.step).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from rlvr_jax import specs
from rlvr_jax.data import protocols as data_protocols
from rlvr_jax.run import files
from rlvr_jax.data import records as records_lib
from rlvr_jax.rl import noise as noise_lib

log = logging.getLogger("rlvr_jax.rl")

TRAIN_FILE = "train.jsonl"
PROTOCOL_FILE = "protocol.json"


def _sample_rows(cfg, params, tokenizer, records: Sequence[Mapping], *, num_samples: int,
                 key, name: str, **options) -> list[dict]:
  """Per-sample rows (eval harness format: prompt_id, extracted, correct, ...) of num_samples
  T-sampled responses to every record; correctness against the records' true labels."""
  from rlvr_jax.eval import harness
  _, rows = harness.evaluate(cfg, params, tokenizer, {name: list(records)}, k=num_samples,
                             ks=(1,), greedy=False, key=key, **options)
  return rows[name]


def solve_counts(cfg, params, tokenizer, records: Sequence[Mapping], *, num_samples: int = 16,
                 key=None, **options) -> dict[str, int]:
  """{record id: how many of num_samples responses are correct} (sampler + domain verifier).

  options: harness.EvalOptions fields (temperature, max_new_tokens, template, batch_size,
  system_prompt, prompt_suffix, ...).
  """
  rows = _sample_rows(cfg, params, tokenizer, records, num_samples=num_samples,
                      key=jax.random.key(0) if key is None else key, name="solve_counts",
                      **options)
  counts = {str(r["id"]): 0 for r in records}
  for row in rows:
    counts[row["prompt_id"]] += int(bool(row["correct"]))
  return counts


def wrong_answer_table(cfg, params, tokenizer, records: Sequence[Mapping], *,
                       num_samples: int = 96, key=None, **options) -> dict[str, str]:
  """{record id: the most frequent wrong final answer among num_samples responses}; wrong means
  not answers.equivalent to the true answer (noise.most_frequent_wrong_answer), the matcher of
  the rewards and eval. Records whose samples hold no wrong answer are absent."""
  rows = _sample_rows(cfg, params, tokenizer, records, num_samples=num_samples,
                      key=jax.random.key(1) if key is None else key, name="wrong_answers",
                      **options)
  by_id: dict[str, list] = {}
  for row in rows:
    by_id.setdefault(row["prompt_id"], []).append(row["extracted"])
  table = {}
  for r in records:
    answers = by_id.get(str(r["id"]), [])
    wrong = noise_lib.most_frequent_wrong_answer(answers, str(r.get("true_answer", r["answer"])))
    if wrong is not None:
      table[str(r["id"])] = wrong
  return table


# ---------------------------------------------------------------------------------- from config
SETTINGS_KEYS = ("domains", "files", "layout", "n_pool", "pool_limit", "difficulty", "n_train",
                 "difficulty_filter", "filter_samples", "label_noise", "label_noise_samples",
                 "protocol_seed", "template", "system_prompt", "prompt_suffix")


def settings_of(config) -> dict[str, Any]:
  """The config fields that determine the training set (recorded in protocol.json)."""
  spec = specs.parse(config)
  out = {k: getattr(spec.data, k) for k in SETTINGS_KEYS}
  out["max_new_tokens"] = spec.rl.max_new_tokens
  return json.loads(json.dumps(out, default=str))


def _changed_settings(recorded: dict, settings: dict) -> list[str]:
  """Keys whose recorded value differs; a None recorded before the typed config (a field the
  config did not set) equals the field's default."""
  defaults = settings_of(specs.RunSpec())
  return sorted(k for k in settings if recorded.get(k) != settings[k] and
                not (recorded.get(k) is None and settings[k] == defaults[k]))


def pool_records(config) -> list[dict]:
  """The candidate training problems: synthetic-domain train records and data.files records."""
  data = specs.parse(config).data
  n_pool, seed, difficulty = data.n_pool, data.protocol_seed, data.difficulty or None
  records: list[dict] = []
  for name in data.domain_list:
    if n_pool < 1:
      raise ValueError(f"data.n_pool={n_pool} must be >= 1 to draw problems of domain {name!r}")
    records.extend(records_lib.domain_records(name, "train", n_pool, seed, difficulty=difficulty))
  for path in data.file_list:
    recs, counts = records_lib.load_records(path, layout=data.layout,
                                            limit=data.pool_limit or None)
    if not recs:
      hint = ""
      if counts.get("dropped_missing_answer"):
        hint = (f"; {counts['dropped_missing_answer']} rows have no answer label: the dataset "
                f"has no labels (RL prompts need an 'answer' field; validation and "
                f"reward/true_mean use it, and label rewards train on it)")
      raise ValueError(f"data.files entry {path!r}: no usable problem records ({counts}){hint}")
    if counts.get("dropped_missing_answer"):
      log.warning("data.files entry %s: %d rows without an answer label were dropped", path,
                  counts["dropped_missing_answer"])
    records.extend(recs)
  if not records:
    raise ValueError("no RL training problems: set data.domains (e.g. 'arith') and/or data.files")
  ids = [str(r["id"]) for r in records]
  if len(set(ids)) != len(ids):
    dup = next(i for i in ids if ids.count(i) > 1)
    raise ValueError(f"training records must have unique ids; {dup!r} occurs more than once")
  return records


def _sampling_options(spec) -> dict[str, Any]:
  return dict(temperature=1.0, max_new_tokens=spec.rl.max_new_tokens,
              template=spec.data.template, batch_size=spec.data.protocol_batch_size,
              system_prompt=spec.data.system_prompt or None,
              prompt_suffix=spec.data.prompt_suffix)


def _write_jsonl(path: str, records: Sequence[Mapping]) -> None:
  files.write_text(path, "".join(json.dumps(dict(r), ensure_ascii=False, default=str) + "\n"
                                 for r in records))


def _write_json(path: str, doc) -> None:
  files.write_json(path, doc, default=str)


def load_train_records(workdir: str) -> tuple[list[dict], dict] | None:
  """(records, protocol report) saved in WORKDIR/data, or None when there are none."""
  path = files.as_path(workdir) / "data" / TRAIN_FILE
  meta = files.as_path(workdir) / "data" / PROTOCOL_FILE
  if not (path.exists() and meta.exists()):
    return None
  report = json.loads(meta.read_text())
  records = []
  for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
    if line.strip():
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{i + 1}: not valid JSON ({e}); delete {path} to recompute "
                         f"the training set") from None
  return records, report


def prepare_train_records(config, workdir: str, cfg, params, tokenizer, *, mesh=None
                          ) -> tuple[list[dict], dict]:
  """The run's training problems after the configured protocols (module docstring), computed
  once with the initial `params` and saved under WORKDIR/data; returns (records, report)."""
  spec = specs.parse(config)
  data = spec.data
  settings = settings_of(spec)
  saved = load_train_records(workdir)
  if saved is not None:
    records, report = saved
    changed = _changed_settings(report.get("settings") or {}, settings)
    if changed:
      raise ValueError(f"{os.path.join(workdir, 'data', PROTOCOL_FILE)} was made with other data "
                       f"settings ({changed}); use a new workdir, or delete {workdir}/data to "
                       f"recompute the training set (checkpoints of this run would then be "
                       f"resumed on a different dataset)")
    log.info("training set: %d records from %s", len(records), os.path.join(workdir, "data"))
    return records, report

  from rlvr_jax import sharding
  records = pool_records(spec)
  report: dict[str, Any] = {"settings": settings, "pool": len(records)}
  seed = data.protocol_seed
  options = _sampling_options(spec)
  n_train = data.n_train
  key = jax.random.key(seed)
  with sharding.activate(mesh) if mesh is not None else contextlib.nullcontext():
    counts = None
    if data.difficulty_filter:
      k = data.filter_samples
      counts = solve_counts(cfg, params, tokenizer, records, num_samples=k,
                            key=jax.random.fold_in(key, 0), **options)
      kept = data_protocols.difficulty_filter(counts, num_samples=k)
      hist = np.bincount(np.asarray(list(counts.values()), int), minlength=k + 1)
      report["solve_count_histogram"] = hist.tolist()
      report["difficulty_kept"] = len(kept)
      if not kept:
        raise ValueError(f"the difficulty filter kept no problem of {len(records)}: none was "
                         f"solved 1..{k - 1} of {k} times (histogram {hist.tolist()}); use a "
                         f"stronger / weaker model or other data.difficulty levels")
      by_id = {str(r["id"]): r for r in records}
      for r in records:
        r["difficulty_solved"] = counts[str(r["id"])]
      if n_train:
        kept_counts = {i: counts[i] for i in kept}
        if n_train > len(kept):
          raise ValueError(f"data.n_train={n_train} but the difficulty filter kept only "
                           f"{len(kept)} problems; lower n_train or raise data.n_pool")
        ids = data_protocols.stratified_subset(kept_counts, n_train, seed=seed, num_bins=k - 1,
                                               max_solved=k - 1)
        report["bins"] = data_protocols.bin_histogram(ids, counts, num_bins=k - 1,
                                                      max_solved=k - 1)
      else:
        ids = kept
      records = [by_id[i] for i in ids]
    elif n_train:
      if n_train > len(records):
        raise ValueError(f"data.n_train={n_train} exceeds the pool of {len(records)} problems; "
                         f"raise data.n_pool")
      pick = np.random.default_rng(seed).permutation(len(records))[:n_train]
      records = [records[int(i)] for i in sorted(pick)]
    report["n_train"] = len(records)

    gamma = data.label_noise
    if gamma > 0:
      s = data.label_noise_samples
      table = wrong_answer_table(cfg, params, tokenizer, records, num_samples=s,
                                 key=jax.random.fold_in(key, 1), **options)
      records, replaced = data_protocols.replace_labels(records, table, gamma=gamma, seed=seed)
      report["label_noise"] = replaced
  if jax.process_index() == 0:
    _write_jsonl(files.as_path(workdir) / "data" / TRAIN_FILE, records)
    _write_json(files.as_path(workdir) / "data" / PROTOCOL_FILE, report)
  log.info("training set: %d records (%s)", len(records),
           {k: v for k, v in report.items() if k not in ("settings", "label_noise")})
  return records, report


__all__ = ["solve_counts", "wrong_answer_table", "prepare_train_records", "load_train_records",
           "pool_records", "settings_of", "TRAIN_FILE", "PROTOCOL_FILE"]
