"""The run skeleton every training stage shares (CPT, SFT, RL): `run_loop`.

A stage (train/loop.py, rl/loop.py) restores or initialises its state (`restore_or_init`) and
hands `run_loop` a `Stage` of callbacks and a `LoopSpec` of cadences. `run_loop` owns the rest:
stop signals ("preempted", checkpoint saved), data exhaustion ("data_exhausted"), a stage's own
stop (RL's "saturated"); the health guard (run.guard) and data drop counts (run.drops);
evaluation at step 0 of a fresh run, every `eval_every` steps and (`eval_at_end`) at the last or
stopping step; checkpoints every `checkpoint_every` steps, at evaluations with `keep_best`, and
a final one (never a step twice), each with the metrics flushed and status.json updated.

Metrics are pulled one step late: step t's after step t+1 is dispatched, so the device always
has the next step queued; at once when the step timed its phases (`times`) or before a save,
and before the next dispatch when `Stage.may_stop()`. `perf/step_time_s` is the mean time
between consecutive metric arrivals since the last log over the steps with no host work
(compilation, evaluation, checkpoint) in their interval; with `times`, their sum. metrics.jsonl
gets a record every `log_every` steps, at the last step, and at any step with a skipped update,
an evaluation or a guard failure.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

from rlvr_jax.run import files, workdir as workdir_lib
from rlvr_jax.run.drops import DropMonitor
from rlvr_jax.run.guard import GuardSpec, HealthGuard, check as _guard_check

log = logging.getLogger("rlvr_jax.run")

__all__ = ["LoopSpec", "Stage", "run_loop", "restore_or_init", "MetricsLogger", "stop_signals",
           "any_process", "is_checkpointable"]


@dataclasses.dataclass(frozen=True)
class LoopSpec:
  """The cadences of one run, read from its config where the stage starts."""
  stage: str                 # "cpt" | "sft" | "rl": the progress bar's and drop warnings' label
  steps: int
  log_every: int
  guard: GuardSpec
  eval_every: int = 0        # 0: no periodic evaluation
  eval_at_end: bool = False  # also evaluate at the last step (or a stage's stop)
  checkpoint_every: int = 0  # 0: only the final (or preemption) checkpoint
  keep_best: bool = False    # also checkpoint at each evaluation, ranked by its metrics
  progress_bar: bool = True
  guard_loss: bool = True    # the guard watches the loss for spikes (not RL's)
  skipped_key: str = "skipped_steps"   # the metric counting skipped (non-finite) updates


@dataclasses.dataclass
class Stage:
  """What is particular to a stage.

  next_batch(n) -> the device batch of step n (1-based); StopIteration when the data runs out.
  step(state, batch, n) -> (state, device metrics, times): runs step n (1-based), dispatched
      and not awaited; `times` ({phase: seconds}) only when the step waited to time its phases.
  perf(m, dt) -> perf/ keys of a step's host metrics and its time in seconds.
  evaluate(params, step) -> eval/ metrics, or None for a stage without evaluation.
  on_metrics(step, m): adds host-side keys to a step's metrics (RL: saturation monitors).
  may_stop() -> whether the next metrics pulled may stop the run (they are then pulled before
      another step is dispatched); should_stop() -> a status that ends the run, or None.
  checkpoint_extra() -> a JSON-able dict saved with each checkpoint, or None.
  """
  next_batch: Callable[[int], Any]
  step: Callable[[Any, Any, int], tuple[Any, Any, dict[str, float] | None]]
  perf: Callable[[dict[str, float], float], dict[str, float]]
  progress_key: str = "loss"
  evaluate: Callable[[Any, int], dict[str, float]] | None = None
  on_metrics: Callable[[int, dict[str, float]], None] = lambda step, m: None
  may_stop: Callable[[], bool] = lambda: False
  should_stop: Callable[[], str | None] = lambda: None
  checkpoint_extra: Callable[[], dict | None] = lambda: None


def is_checkpointable(data_iter) -> bool:
  """A grain iterator (get_state / set_state): its position is saved with each checkpoint."""
  return callable(getattr(data_iter, "get_state", None)) and \
      callable(getattr(data_iter, "set_state", None))


def restore_or_init(manager, abstract_state, data_iter, init: Callable[[], Any]) -> tuple[int, Any]:
  """(start step, state): the newest checkpoint of `manager` restored onto `abstract_state`'s
  shardings (a checkpointable `data_iter` repositioned with it, any other one advanced past the
  consumed batches), else (0, init())."""
  saveable = is_checkpointable(data_iter)
  start, state = manager.restore_latest(abstract_state, data_iter if saveable else None)
  if start is None:
    return 0, init()
  if not saveable:
    for _ in range(start):
      next(data_iter)
  log.info("resumed %s from step %d", os.fspath(manager.directory.parent), start)
  return int(start), state


def run_loop(spec: LoopSpec, stage: Stage, state, start: int, manager, data_iter,
             workdir: str) -> tuple[str, int]:
  """Runs steps start+1 .. spec.steps of `stage` from `state` (module docstring): (status, last
  step), status "completed" | "preempted" | "data_exhausted" | a stage's stop status. `data_iter`
  is the stage's training iterator: its drop counts are logged and, when checkpointable, its
  position saved. `manager` (train.checkpoints.RunCheckpoints) stays open."""
  ckpt_iter = data_iter if is_checkpointable(data_iter) else None
  logger = MetricsLogger(workdir, total=spec.steps, initial=start, desc=spec.stage,
                         progress=spec.progress_bar)
  drops = DropMonitor(data_iter, spec.stage)
  guard = HealthGuard(spec.guard, use_loss=spec.guard_loss,
                      checkpoints_dir=os.fspath(manager.directory))
  if start:
    guard.saved(start)      # the checkpoint resumed from passed the guard when it was saved
  first = start + 1         # includes compilation: never timed
  last_ready = None         # host time when the previous step's metrics arrived
  window: list[float] = []  # clean step times since the last log
  speed = [None]            # the last logged perf/tokens_per_sec, for the progress bar

  def finish(s: int, m_dev, times, busy_then: bool, ev, busy_now: bool) -> None:
    """Pulls step s's metrics to the host, checks them, logs. Without `times` the step's time
    (between the arrivals of consecutive metrics) is kept only when no host work fell in its
    interval: neither in its own iteration (busy_then) nor in the one that pulls it (busy_now)."""
    nonlocal last_ready
    m = {k: float(v) for k, v in jax.device_get(m_dev).items()}
    now = time.perf_counter()
    if times is not None:
      if s != first:
        window.append(sum(times.values()))
    elif not (busy_then or busy_now) and last_ready is not None:
      window.append(now - last_ready)
    last_ready = now
    if m["skipped"]:
      log.warning("step %d: %d non-finite update(s) skipped (loss=%s, grad_norm=%s)", s,
                  int(m["skipped"]), m["loss"], m["grad_norm"])
    problem = _guard_check(guard, s, m)
    m[spec.skipped_key] = guard.skipped_total
    stage.on_metrics(s, m)
    if s % spec.log_every == 0 or s == spec.steps or m["skipped"] or ev or problem:
      if window:
        dt = float(np.mean(window))
        if times is not None:
          m.update({f"perf/{k}_s": v for k, v in times.items()})
        m.update({"perf/step_time_s": dt, **stage.perf(m, dt)})
        window.clear()
      logger.write(s, {**m, **(ev or {}), **drops.metrics()})
      speed[0] = m.get("perf/tokens_per_sec", speed[0])
    logger.progress(s, m[stage.progress_key], speed[0])
    if problem:
      raise problem

  def save(s: int, ev) -> None:
    manager.save(s, state, ckpt_iter, ev if spec.keep_best else None,
                 extra=stage.checkpoint_extra())

  status = "completed"
  step = start
  evaluated = (None, None)    # (step, eval metrics) of the last evaluation
  try:
    with stop_signals() as stop:
      if stage.evaluate is not None and start == 0:
        logger.write(0, stage.evaluate(state.params, 0))
      pending = None          # (step, metrics, times, busy, eval) dispatched, not pulled yet
      while step < spec.steps:
        if pending is not None and stage.may_stop():
          finish(*pending, False)       # the pending step may end the run: decide first
          pending = None
          if stage.should_stop():
            status = stage.should_stop()
            break
        if any_process(bool(stop)):
          status = "preempted"
          break
        try:
          batch = stage.next_batch(step + 1)
        except StopIteration:
          status = "data_exhausted"
          log.warning("the training data ran out after %d steps (of %d)", step, spec.steps)
          break
        state, metrics, times = stage.step(state, batch, step + 1)   # dispatched, not awaited
        step += 1
        busy = step == first
        at_end = step == spec.steps
        ev = None
        if stage.evaluate is not None and ((spec.eval_every and step % spec.eval_every == 0) or
                                           (at_end and spec.eval_at_end)):
          ev = stage.evaluate(state.params, step)
          evaluated = (step, ev)
          busy = True
        save_now = not at_end and bool((spec.checkpoint_every and
                                        step % spec.checkpoint_every == 0) or
                                       (ev and spec.keep_best))
        if pending is not None:
          finish(*pending, busy or save_now)   # step-1's metrics while step is in flight
          pending = None
        if save_now or times is not None:
          finish(step, metrics, times, True, ev, True)   # the guard passes a step before its save
        else:
          pending = (step, metrics, None, busy, ev)
        if save_now:
          save(step, ev)
          logger.flush()
          guard.saved(step)
          workdir_lib.write_status(workdir, "running", step, spec.steps)
        if stage.should_stop():
          status = stage.should_stop()
          break
      if pending is not None:
        finish(*pending, False)
      if status not in ("completed", "preempted", "data_exhausted") and spec.eval_at_end and \
          stage.evaluate is not None and evaluated[0] != step:
        evaluated = (step, stage.evaluate(state.params, step))
        logger.write(step, evaluated[1])
      # Final (or preemption / stop) checkpoint; never duplicates an existing step.
      save(step, evaluated[1] if evaluated[0] == step else None)
      manager.wait()
  finally:
    logger.close()
  if status == "preempted":
    log.warning("stopped by a signal at step %d; checkpoint saved, rerun to resume", step)
  return status, step


# ---------------------------------------------------------------------------------- logging
class MetricsLogger:
  """metrics.jsonl (one object per logged step), TensorBoard scalars, and a tqdm bar.

  Only process 0 writes. Non-finite values are written as null.
  """

  def __init__(self, workdir: str, *, total: int, initial: int, desc: str,
               progress: bool = True):
    self.enabled = jax.process_index() == 0
    self.file = None
    self.tb = None
    self.bar = None
    self.tb_upload = None     # a bucket workdir: events written locally, copied there on close
    if not self.enabled:
      return
    self.file = files.AppendLog(files.as_path(workdir) / "metrics.jsonl")
    tb_dir = os.path.join(workdir, "tensorboard")
    if not files.is_local(workdir):
      import tempfile
      self.tb_upload, tb_dir = tb_dir, tempfile.mkdtemp(prefix="rlvr_jax_tb_")
    try:
      self.tb = _summary_writer_class()(tb_dir)
    except ImportError:
      log.warning("tensorboardX is not installed: no TensorBoard events")
    if progress:
      from tqdm import tqdm
      self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                      file=sys.stderr)

  def write(self, step: int, record: dict[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in record.items()}
    self.file.write_line(json.dumps({"step": step, **clean}))
    if self.tb is not None:
      for k, v in clean.items():
        if v is not None:
          self.tb.add_scalar(k, v, step)

  def progress(self, step: int, loss: float | None, tokens_per_sec: float | None) -> None:
    if self.bar is None:
      return
    self.bar.n = step
    post = {}
    if loss is not None:
      post["loss"] = f"{loss:.4f}"
    if tokens_per_sec:
      post["tok/s"] = f"{tokens_per_sec:,.0f}"
    self.bar.set_postfix(post, refresh=False)
    self.bar.refresh()

  def flush(self) -> None:
    """Makes every line written so far durable (a bucket log is otherwise flushed every 30 s):
    called with each checkpoint, so a resumed run's metrics reach its checkpoint's step."""
    if self.file is not None:
      self.file.flush()

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
    if self.file is not None:          # the metrics first: the TensorBoard copy may fail
      self.file.close()
      self.file = None
    if self.tb is not None:
      self.tb.flush()
      self.tb.close()
      if self.tb_upload is not None:
        for name in os.listdir(self.tb.logdir):
          files.copy_file(os.path.join(self.tb.logdir, name), f"{self.tb_upload}/{name}")


def _summary_writer_class():
  """tensorboardX.SummaryWriter, imported without pulling in torch (tensorboardX imports it
  when present only to accept torch tensors; that costs seconds and memory at start-up)."""
  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None          # makes `import torch` raise ImportError
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


@contextlib.contextmanager
def stop_signals():
  """Yields a one-element list that becomes [signal number] on SIGTERM/SIGINT (handlers restored
  on exit). Only installable from the main thread; elsewhere the loop runs without them."""
  flag: list[int] = []
  previous = {}

  def handler(signum, frame):
    del frame
    if flag and signum == signal.SIGINT:
      raise KeyboardInterrupt   # a second Ctrl-C stops at once
    flag.append(signum)

  try:
    for s in (signal.SIGTERM, signal.SIGINT):
      previous[s] = signal.signal(s, handler)
  except ValueError:   # not the main thread
    pass
  try:
    yield flag
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def any_process(flag: bool) -> bool:
  """Whether `flag` is set on any process (a stop signal seen by one stops them all)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
