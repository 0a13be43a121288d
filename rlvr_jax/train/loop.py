"""CPT / SFT runs: model config, checks, the run directory, and the stage run.loop.run_loop runs.

`train(config, workdir, stage=..., make_batches=..., make_eval_batches=...)` runs `config.steps`
updates in run.loop.run_loop (resume, health guard, preemption, eval and checkpoint cadence)
and returns a status string: "completed", "preempted" (SIGTERM/SIGINT: a checkpoint was saved,
run the same command again to resume) or "data_exhausted". The health guard (run.guard) raises
NonFiniteError after `config.max_nonfinite_steps` skipped (non-finite) updates in a row and
BlowUpError on an exploding update or a loss spike; every checkpoint written passed it first.

The run directory is locked while the loop runs (run.workdir.locked); status.json says whether
the run finished; a resume first checks the config against the recorded config.json
(run.workdir.check_resume: architecture changes refused, other changes only with
config.resume_overrides=True, then recorded in config.json's resume_history).

What the loop expects from its inputs:
  make_batches(config) -> iterator of host batches: dicts of numpy arrays with leading axis
      config.batch_size // jax.process_count() (this process's rows of the global batch), keys
      as in rlvr_jax.train.steps (`tokens` int32[B, L] required; `loss_mask`, `segment_ids`,
      `positions`, `targets` optional). For an exact resume it must be a grain DatasetIterator
      (or DataLoader iterator): its state is saved with every checkpoint and restored on resume.
      Other iterators are resumed by skipping the consumed batches.
  make_eval_batches(config) -> a finite iterable of batches of the same form, called afresh for
      every evaluation (every config.eval_every steps, and at step 0 of a fresh run).

Run directory: config.json, checkpoints/, metrics.jsonl (append-only; after a resume the steps
past the restored checkpoint are logged again: the last record of a step wins), tensorboard/.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from rlvr_jax import sharding, specs
from rlvr_jax.model.config import ModelConfig
from rlvr_jax.run import context, paths, workdir as workdir_lib
from rlvr_jax.run import init as init_lib
from rlvr_jax.run.errors import CorruptCheckpointError, NonFiniteError
from rlvr_jax.run.loop import (LoopSpec, MetricsLogger, Stage, restore_or_init, run_loop,
                               stop_signals)
from rlvr_jax.train import checkpoints as ckpt_lib
from rlvr_jax.train import optim, steps
from rlvr_jax.train.state import abstract_state, create_train_state, state_shardings

log = logging.getLogger("rlvr_jax.train")

__all__ = ["train", "NonFiniteError", "validate", "prepare_run_dir", "run_status", "MetricsLogger", "stop_signals", "put_batch"]

# ---------------------------------------------------------------------------------- config
def validate(config, cfg: ModelConfig, mesh) -> None:
  """Every check of a CPT / SFT run that can fail before anything compiles (specs.validate)."""
  spec = specs.parse(config)
  if spec.stage not in ("cpt", "sft"):
    spec = dataclasses.replace(spec, stage="cpt")
  specs.validate(spec, cfg, mesh)


def check_model_fits_mesh(cfg: ModelConfig, mesh) -> None:
  """Sharded dimensions divide their mesh axes, and the train state fits in device memory."""
  t, f = mesh.shape["tensor"], mesh.shape["fsdp"]
  dims = {"num_heads": cfg.num_heads, "num_kv_heads": cfg.num_kv_heads,
          "intermediate_size": cfg.intermediate_size, "vocab_size": cfg.vocab_size}
  for name, v in dims.items():
    if v % t:
      raise ValueError(f"model {name}={v} does not divide over mesh.tensor={t}; choose a "
                       f"mesh.tensor that divides {name}")
  if cfg.hidden_size % f:
    raise ValueError(f"model hidden_size={cfg.hidden_size} does not divide over mesh.fsdp={f};"
                     f" choose a mesh.fsdp that divides it")
  stats = None
  try:
    stats = mesh.devices.flat[0].memory_stats()
  except Exception:  # noqa: BLE001 - CPU backends have none
    pass
  limit = (stats or {}).get("bytes_limit")
  if limit:
    n = cfg.num_params()
    per_device = n * (np.dtype(cfg.param_dtype).itemsize + 8) / (t * f)   # params + Adam μ, ν f32
    if per_device > 0.9 * limit:
      raise ValueError(f"the train state needs ~{per_device / 2**30:.1f} GiB per device "
                       f"({n / 1e9:.2f}B params + Adam) but a device holds "
                       f"{limit / 2**30:.1f} GiB; raise mesh.fsdp / mesh.tensor or use a "
                       f"smaller model")


def config_to_dict(config) -> dict:
  """The config as config.json records it (the parsed spec keeps it as given)."""
  return specs.parse(config).to_json()


def put_batch(batch: dict, mesh) -> dict:
  """Host batch -> global arrays split over (data, fsdp) (multi-process: this process's rows)."""
  if jax.process_count() == 1:
    return jax.device_put(batch, steps.batch_sharding(mesh))
  return sharding.host_local_to_global(batch, mesh)


# ---------------------------------------------------------------------------------- the loop
def train(config, workdir: str, *, stage: str,
          make_batches: Callable[[Any], Iterator[dict]],
          make_eval_batches: Callable[[Any], Iterable[dict]] | None = None,
          model_config: ModelConfig | None = None) -> str:
  """Runs (or resumes) a CPT / SFT run in `workdir`; returns "completed" | "preempted" |
  "data_exhausted". See the module docstring for what the batch factories must yield."""
  workdir = paths.resolve(workdir)
  with workdir_lib.locked(workdir):
    ctx = context.build(config, workdir, stage, base=model_config)
    return train_in_context(ctx, make_batches, make_eval_batches)


def train_in_context(ctx: context.RunContext,
                     make_batches: Callable[[Any], Iterator[dict]],
                     make_eval_batches: Callable[[Any], Iterable[dict]] | None = None) -> str:
  """`train` on a RunContext built by the caller (who holds the run directory's lock)."""
  validate(ctx.spec, ctx.cfg, ctx.mesh)
  prepare_run_dir(ctx)
  with run_status(ctx.workdir, ctx.spec.steps) as outcome:
    outcome[:] = _train(ctx, make_batches, make_eval_batches)
  return outcome[0]


def prepare_run_dir(ctx: context.RunContext) -> None:
  """Before anything is written in ctx.workdir: a resume's config is checked against the
  recorded one (run.workdir.check_resume); then config.json (with the stage and the resume
  history) and status.json."""
  spec, workdir, cfg = ctx.spec, ctx.workdir, ctx.cfg
  doc = {**spec.to_json(), "stage": spec.stage}
  steps_done = ckpt_lib.run_steps(workdir)
  at = steps_done[-1] if steps_done else 0
  changed = {}
  if not steps_done:      # a fresh run reads its init: refuse an unfinished one before writing
    workdir_lib.require_finished(spec.init.from_checkpoint, "init.from_checkpoint")
  if steps_done:
    changed = workdir_lib.check_resume(workdir, doc, cfg.to_dict(), step=at,
                                       allow=spec.resume_overrides)
    if changed:
      log.warning("resuming %s at step %d with changed fields %s (resume_overrides=True)",
                  workdir, at, sorted(changed))
  history = workdir_lib.history_with(workdir, changed, at) if steps_done else []
  if history:
    doc["resume_history"] = history
  if jax.process_index() == 0:
    ckpt_lib.write_config_json(workdir, doc, cfg)
  before = workdir_lib.read_status(workdir) or {}
  finished = (before.get("status") in workdir_lib.FINISHED and before.get("step") == at and
              spec.steps <= at)      # a rerun with nothing left to train
  workdir_lib.write_status(workdir, "running", at, spec.steps,
                           finished_before=before if finished else None)


@contextlib.contextmanager
def run_status(workdir: str, steps: int):
  """Yields a list the block fills with [status, step]; status.json records it at the end, or
  "failed" at the newest checkpoint step when the block raises."""
  outcome: list = []
  try:
    yield outcome
  except BaseException as e:
    done = ckpt_lib.run_steps(workdir)
    step = done[-1] if done else 0
    was = (workdir_lib.read_status(workdir) or {}).get("finished_before") or {}
    # A rerun of a finished run with nothing left to train that fails (a missing file, a bad
    # override) leaves the finished run as it was, so later stages still build on it; a run
    # whose checkpoints no longer read, or one continued to more steps, is failed.
    if was.get("step") == step and not isinstance(e, CorruptCheckpointError):
      workdir_lib.write_status(workdir, was["status"], step, steps)
    else:
      workdir_lib.write_status(workdir, "failed", step, steps)
    raise
  workdir_lib.write_status(workdir, outcome[0], outcome[1], steps)


def _train(ctx: context.RunContext, make_batches, make_eval_batches):
  spec, workdir, cfg, mesh = ctx.spec, ctx.workdir, ctx.cfg, ctx.mesh
  optimizer = optim.make_optimizer(spec.optim, spec.steps)
  shardings = state_shardings(cfg, optimizer, mesh)
  train_fn = steps.jit_train_step(cfg, optimizer, mesh, shardings,
                                  microbatches=spec.microbatches, z_loss=spec.z_loss)
  eval_fn = steps.jit_eval_step(cfg, mesh, shardings.params) if make_eval_batches else None
  manager = ckpt_lib.RunCheckpoints(workdir, keep=spec.keep_checkpoints,
                                    keep_best=spec.keep_best if make_eval_batches else 0)
  try:
    return _run(ctx, optimizer, train_fn, eval_fn, manager, make_batches, make_eval_batches)
  finally:
    manager.close()


def _check_batch_shape(batch: dict, expected: dict | None, spec, step: int) -> dict:
  """Every batch must have the first batch's shapes (a new shape would silently recompile);
  the first must hold config.batch_size rows over all processes."""
  shapes = {k: tuple(np.shape(v)) for k, v in batch.items()}
  if expected is None:
    rows = shapes["tokens"][0] * jax.process_count()
    if rows != spec.batch_size:
      raise ValueError(f"the data yields batches of {rows} rows ({shapes['tokens'][0]} per "
                       f"process × {jax.process_count()}) but batch_size={spec.batch_size}; "
                       f"make them agree")
    return shapes
  if shapes != expected:
    raise ValueError(f"batch {step} has shapes {shapes}, earlier batches {expected}; batches "
                     f"must all have one shape (pad or drop the last partial batch)")
  return expected


def _run(ctx: context.RunContext, optimizer, train_fn, eval_fn, manager, make_batches,
         make_eval_batches) -> tuple[str, int]:
  """The CPT / SFT stage of run.loop.run_loop: packed batches, train_fn, the held-out loss."""
  spec, workdir, cfg, mesh = ctx.spec, ctx.workdir, ctx.cfg, ctx.mesh
  data_iter = make_batches(spec)
  start, state = restore_or_init(
      manager, abstract_state(cfg, optimizer, mesh), data_iter,
      lambda: create_train_state(
          cfg, optimizer, mesh, jax.random.key(spec.seed),
          init_lib.load_params(spec, cfg, mesh, workdir, source=ctx.init), donate_params=True))
  seen = {"shapes": None, "tokens": 0}   # the first batch's shapes, global tokens per batch

  def next_batch(n: int) -> dict:
    host_batch = steps.select_batch(next(data_iter))
    seen["shapes"] = _check_batch_shape(host_batch, seen["shapes"], spec, n)
    seen["tokens"] = int(np.prod(seen["shapes"]["tokens"])) * jax.process_count()
    return put_batch(host_batch, mesh)

  def evaluate(params, step: int) -> dict[str, float]:
    del step
    totals = None
    for batch in make_eval_batches(spec):
      batch = steps.select_batch(batch, steps.EVAL_KEYS)
      b = int(np.shape(batch["tokens"])[0]) * jax.process_count()
      steps.check_batch(b, mesh, 1, what="eval batch size")
      sums = eval_fn(params, put_batch(batch, mesh))
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
      raise ValueError("make_eval_batches yielded no batches")
    t = jax.device_get(totals)
    n = max(float(t["count"]), 1.0)
    out = {"eval/loss": float(t["nll"]) / n, "eval/accuracy": float(t["correct"]) / n,
           "eval/num_tokens": float(t["count"])}
    if "answer_count" in t:   # teacher-forced accuracy on the boxed-answer tokens alone
      a = max(float(t["answer_count"]), 1.0)
      out.update({"eval/answer_loss": float(t["answer_nll"]) / a,
                  "eval/answer_accuracy": float(t["answer_correct"]) / a,
                  "eval/answer_tokens": float(t["answer_count"])})
    return out

  eval_every = spec.eval_every if make_eval_batches else 0
  loop = LoopSpec(stage=spec.stage, steps=spec.steps, log_every=spec.log_every,
                  guard=spec.guard_spec, eval_every=eval_every,
                  checkpoint_every=spec.checkpoint_every,
                  keep_best=bool(make_eval_batches) and spec.keep_best > 0,
                  progress_bar=spec.progress_bar)
  loop_stage = Stage(
      next_batch=next_batch, step=lambda state, batch, n: (*train_fn(state, batch), None),
      perf=lambda m, dt: {"perf/tokens_per_sec": seen["tokens"] / dt},
      evaluate=evaluate if eval_every else None)
  return run_loop(loop, loop_stage, state, start, manager, data_iter, workdir)
