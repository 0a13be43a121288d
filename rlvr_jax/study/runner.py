"""`rlvr-jax study`: run a study's stages in order, resumably, then write its report.

  rlvr-jax study --config=configs/study/toy.py --workdir=DIR
      [--config.dry_run=True] [--config.report_only=True] [--config.x=y ...]

Every stage runs through its command's own runner in its own run directory (study.plan), under
that directory's lock. A finished stage is skipped, an unfinished one resumes, so running the
command again adds nothing to a finished study and a killed one continues where it stopped. A
stage whose input stage has moved on since it was built (that stage was continued or started
anew) is moved aside to `<stage>.stale[-N]` and built again. A failing stage is reported in one
line; the stages that build on it are skipped and the others go on (exit status 2 at the end,
after the report of what did finish). A preempted stage (exit status 75) stops the study with 75.

Progress: one line per stage start and finish with the elapsed time and an estimate of the time
left, from the seconds per step this study measured for the stage's kind and setting
(DIR/timings.json), else from rough defaults. `dry_run` prints the plan with those estimates.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import Any

from rlvr_jax.run import files, workdir as workdir_lib
from rlvr_jax.run.errors import EXIT_PREEMPTED, EXIT_USER_ERROR
from rlvr_jax.study import plan as plan_lib

RUNNERS = {
    "cpt": ("rlvr_jax.train.run", "run_cpt"),
    "sft": ("rlvr_jax.train.run", "run_sft"),
    "rl": ("rlvr_jax.rl.loop", "run"),
    "diagnose": ("rlvr_jax.diagnostics.diagnose", "run"),
}
TIMINGS_FILE = "timings.json"
# Seconds per step (per stage for diagnose) before this study has measured any: the toy sizes
# on a 2-core CPU; every finished stage replaces them with what it took.
DEFAULT_SECONDS = {"cpt": 0.3, "sft": 0.6, "rl": 4.0, "diagnose": 40.0}
DIAGNOSE_FILE = "diagnose.json"


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def _minutes(seconds: float) -> str:
  seconds = max(0.0, float(seconds))
  if seconds < 90:
    return f"{seconds:.0f}s"
  if seconds < 5400:
    return f"{seconds / 60:.1f}min"
  return f"{seconds / 3600:.2f}h"


# ------------------------------------------------------------------------------ timings
def timing_key(stage: plan_lib.Stage) -> str:
  return f"{stage.kind}/{stage.setting}" if stage.setting else stage.kind


def read_timings(root: str) -> dict[str, float]:
  """{timing key: measured seconds per step (per stage for diagnose)} of this study."""
  path = os.path.join(root, TIMINGS_FILE)
  if not files.exists(path):
    return {}
  try:
    doc = json.loads(files.read_text(path))
  except ValueError:
    return {}
  return {k: float(v) for k, v in doc.items() if isinstance(v, (int, float))}


def record_timing(root: str, stage: plan_lib.Stage, seconds: float, steps_run: int) -> None:
  """Stores the stage's seconds per step (a resumed stage counts only the steps it ran)."""
  units = 1 if stage.kind == "diagnose" else steps_run
  if units <= 0 or not workdir_lib.is_primary():
    return
  doc = read_timings(root)
  doc[timing_key(stage)] = round(seconds / units, 4)
  files.write_json(os.path.join(root, TIMINGS_FILE), doc)


def estimate_seconds(stage: plan_lib.Stage, timings: dict[str, float]) -> float:
  """The stage's expected wall time: measured seconds per step of its kind and setting (else of
  its kind, else the default) times its steps."""
  per = timings.get(timing_key(stage), timings.get(stage.kind, DEFAULT_SECONDS[stage.kind]))
  return per * (1 if stage.kind == "diagnose" else stage.steps)


# ------------------------------------------------------------------------------ state
def stage_step(stage_dir: str) -> int:
  return int((workdir_lib.read_status(stage_dir) or {}).get("step") or 0)


def is_finished(study: plan_lib.Study, stage: plan_lib.Stage) -> bool:
  """A training stage whose status.json is finished; a diagnose stage whose diagnose.json was
  written from its input's current step."""
  d = study.stage_dir(stage)
  if stage.kind == "diagnose":
    path = os.path.join(d, DIAGNOSE_FILE)
    if not files.exists(path):
      return False
    try:
      step = json.loads(files.read_text(path)).get("step")
    except ValueError:
      return False
    if step is None or not stage.deps:
      return True
    return int(step) == stage_step(study.stage_dir(stage.deps[0]))
  return (workdir_lib.read_status(d) or {}).get("status") in workdir_lib.FINISHED


def stale_reason(study: plan_lib.Study, stage: plan_lib.Stage) -> str | None:
  """Why the stage's directory no longer matches its input stage (None: it matches or is new)."""
  d = study.stage_dir(stage)
  if not stage.deps or not files.isdir(d):
    return None
  if stage.kind == "diagnose":
    if files.exists(os.path.join(d, DIAGNOSE_FILE)) and not is_finished(study, stage):
      return f"it measured another step of {stage.deps[0]} than its newest"
    return None
  return workdir_lib.built_on_stale(d, study.stage_dir(stage.deps[0]))


# ------------------------------------------------------------------------------ running
def _runner(kind: str):
  module, fn = RUNNERS[kind]
  return getattr(importlib.import_module(module), fn)


def run_stage(study: plan_lib.Study, stage: plan_lib.Stage) -> int:
  """Runs (or resumes) one stage under its directory's lock; returns its exit status."""
  from rlvr_jax import cli
  d = study.stage_dir(stage)
  cli.make_workdir(d)
  with workdir_lib.locked(d):
    return int(_runner(stage.kind)(stage.config, d) or 0)


def _one_line(e: BaseException) -> str:
  from rlvr_jax import cli
  return cli._one_line(e)   # pylint: disable=protected-access


def execute(study: plan_lib.Study) -> tuple[int, dict[str, str]]:
  """Runs every unfinished stage in order. Returns (exit status, {stage: why it did not
  finish}) with status 0, EXIT_USER_ERROR (some stage failed) or EXIT_PREEMPTED."""
  timings = read_timings(study.root)
  todo = [s for s in study.stages if not is_finished(study, s)]
  done = len(study.stages) - len(todo)
  _log(f"study: {len(study.stages)} stages, {done} already finished, {len(todo)} to run "
       f"(about {_minutes(sum(estimate_seconds(s, timings) for s in todo))})")
  failed: dict[str, str] = {}
  start = time.time()
  for i, stage in enumerate(todo, 1):
    blocked = [d for d in stage.deps if d in failed]
    if blocked:
      failed[stage.name] = f"not run: {blocked[0]} did not finish"
      _log(f"study: [{i}/{len(todo)}] {stage.name}: skipped ({failed[stage.name]})")
      continue
    why = stale_reason(study, stage)
    if why:
      if workdir_lib.is_primary():
        aside = workdir_lib.move_aside(study.stage_dir(stage), "stale")
        _log(f"study: {stage.name} is stale ({why}); moved it to {aside} and building it again")
      workdir_lib.sync_processes(f"study-stale:{stage.name}")
    left = sum(estimate_seconds(s, timings) for s in todo[i - 1:] if s.name not in failed)
    _log(f"study: [{i}/{len(todo)}] start {stage.name} ({stage.kind}) -> "
         f"{study.stage_dir(stage)}; elapsed {_minutes(time.time() - start)}, about "
         f"{_minutes(left)} left")
    before = stage_step(study.stage_dir(stage))
    t0 = time.time()
    try:
      rc = run_stage(study, stage)
    except Exception as e:  # noqa: BLE001 - a failing stage is reported and the study goes on
      if os.environ.get("RLVR_JAX_TRACEBACK"):
        traceback.print_exc()
      failed[stage.name] = _one_line(e)
      _log(f"study: {stage.name} failed: {failed[stage.name]}")
      continue
    seconds = time.time() - t0
    if rc == EXIT_PREEMPTED:
      _log(f"study: {stage.name} was preempted (checkpoint saved); stopping. Run the same "
           f"command again to resume")
      return EXIT_PREEMPTED, failed
    if rc or not is_finished(study, stage):
      status = (workdir_lib.read_status(study.stage_dir(stage)) or {}).get("status")
      failed[stage.name] = f"exit status {rc}, status {status!r}"
      _log(f"study: {stage.name} failed: {failed[stage.name]}")
      continue
    record_timing(study.root, stage, seconds, stage_step(study.stage_dir(stage)) - before)
    timings = read_timings(study.root)
    _log(f"study: [{i}/{len(todo)}] done {stage.name} in {_minutes(seconds)}; elapsed "
         f"{_minutes(time.time() - start)}")
  return (EXIT_USER_ERROR if failed else 0), failed


def format_plan(study: plan_lib.Study) -> str:
  """The dry run's table: stage, kind, steps, what it builds on, state, estimated time."""
  timings = read_timings(study.root)
  rows = [("stage", "kind", "steps", "builds on", "state", "estimate")]
  total = 0.0
  for s in study.stages:
    done = is_finished(study, s)
    est = 0.0 if done else estimate_seconds(s, timings)
    total += est
    rows.append((s.name, s.kind, str(s.steps or "-"), ",".join(s.deps) or "-",
                 "finished" if done else "to run", "-" if done else _minutes(est)))
  widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
  source = "measured in this study" if timings else "defaults for the toy sizes on 2 CPU cores"
  lines.append(f"{len(study.stages)} stages; about {_minutes(total)} to run ({source})")
  return "\n".join(lines)


def run(config: Any, workdir: str) -> int:
  study = plan_lib.build(config, workdir)
  if bool(config.dry_run):
    print(format_plan(study))
    return 0
  from rlvr_jax.study import report as report_lib
  primary = workdir_lib.is_primary()   # every process runs the stages; process 0 writes
  if primary:
    files.write_json(os.path.join(study.root, plan_lib.STUDY_FILE), study.doc)
  rc, failed = (0, {})
  if not bool(config.report_only):
    rc, failed = execute(study)
    if rc == EXIT_PREEMPTED:
      return rc
  if not primary:
    return rc
  report = report_lib.write_report(study.root)
  for line in report_lib.verdict_lines(report):
    print(line, flush=True)
  print(f"study: report at {os.path.join(study.root, 'report.md')} (report.json, plots/)",
        flush=True)
  for name, why in failed.items():
    print(f"study: {name} did not finish: {why}", flush=True)
  return rc
