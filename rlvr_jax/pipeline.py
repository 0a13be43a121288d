"""`rlvr-jax pipeline`: the phased pipeline in one command, each stage in its own run directory.

  WORKDIR/cpt  continual pre-training on the domain corpus        (rlvr-jax cpt)
  WORKDIR/sft  SFT on reasoning traces, initialised from cpt        (rlvr-jax sft)
  WORKDIR/rl   RL from sft                                         (rlvr-jax rl)
  WORKDIR/eval/<stage>  evaluation of each trained stage            (rlvr-jax eval)
  WORKDIR/report.json   the evaluation metrics of every stage side by side

Checkpoints are handed on by path (`init.from_checkpoint`). Every stage resumes: running the same
command again continues an interrupted stage and skips finished ones. A stage never builds on an
unfinished one: a preempted stage stops the pipeline with exit status 75 (run it again to
resume), and a stage whose input stage has moved on since it was trained (that stage was
continued or started anew) is moved aside to `<stage>.stale[-N]` and trained again.
"""
from __future__ import annotations

import importlib
import os
import time

from rlvr_jax.run import files, workdir as workdir_lib
from rlvr_jax.run.errors import EXIT_PREEMPTED

STAGE_RUNNERS = {
    "cpt": ("rlvr_jax.train.run", "run_cpt"),
    "sft": ("rlvr_jax.train.run", "run_sft"),
    "rl": ("rlvr_jax.rl.loop", "run"),
}
PREVIOUS = {"sft": "cpt", "rl": "sft"}


def _stages(config) -> list[str]:
  stages = [s.strip() for s in str(config.stages).split(",") if s.strip()]
  unknown = [s for s in stages if s not in STAGE_RUNNERS and s != "eval"]
  if unknown:
    raise ValueError(f"config.stages has unknown stages {unknown}; choose from "
                     f"{[*STAGE_RUNNERS, 'eval']}")
  return stages


def run(config, workdir: str) -> int:
  stages = _stages(config)
  trained: list[str] = []
  timings = {}
  for stage in stages:
    if stage == "eval":
      continue
    sub = config[stage]
    prev = PREVIOUS.get(stage)
    stage_dir = os.path.join(workdir, stage)
    with sub.unlocked():
      if prev in trained and not sub.init.from_checkpoint and not sub.init.from_hf:
        sub.init.from_checkpoint = os.path.join(workdir, prev)
      if "resume_overrides" in config and "resume_overrides" in sub:
        sub.resume_overrides = bool(config.resume_overrides)
    if prev in trained and files.isdir(stage_dir):
      why = workdir_lib.built_on_stale(stage_dir, os.path.join(workdir, prev))
      if why:
        if workdir_lib.is_primary():   # one process renames; the others wait for it
          aside = workdir_lib.move_aside(stage_dir, "stale")
          print(f"pipeline: stage {stage} is stale ({why}); moved it to {aside} and training "
                f"it again", flush=True)
        workdir_lib.sync_processes(f"pipeline-stale:{stage}")
    module, fn = STAGE_RUNNERS[stage]
    print(f"=== pipeline stage {stage} -> {stage_dir}", flush=True)
    start = time.time()
    rc = getattr(importlib.import_module(module), fn)(sub, stage_dir)
    timings[stage] = round(time.time() - start, 1)
    if rc == EXIT_PREEMPTED:
      print(f"pipeline: stage {stage} was preempted (checkpoint saved); stopping before anything "
            f"builds on it. Run the same command again to resume", flush=True)
      return rc
    if rc:
      print(f"pipeline: stage {stage} returned {rc}; stopping (run again to resume)")
      return rc
    trained.append(stage)
  if "eval" in stages:
    report = _evaluate(config, workdir, trained)
    report["stage_seconds"] = timings
    if workdir_lib.is_primary():
      _write_json(os.path.join(workdir, "report.json"), report)
      print(_format_report(report))
  return 0


def _evaluate(config, workdir: str, trained: list[str]) -> dict:
  from rlvr_jax.eval import harness
  results = {}
  for stage in trained:
    sub = config.eval
    with sub.unlocked():
      sub.init.from_checkpoint = os.path.join(workdir, stage)
      sub.eval.name = stage
    out = os.path.join(workdir, "eval", stage)
    print(f"=== pipeline eval of {stage}", flush=True)
    results[stage] = harness.evaluate_checkpoint(sub, out)
  return {"metrics": results}


def _format_report(report: dict) -> str:
  stages = list(report["metrics"])
  keys = sorted({k for m in report["metrics"].values() for k in m})
  width = max([len(k) for k in keys] + [10])
  lines = ["metric".ljust(width) + "".join(s.rjust(10) for s in stages)]
  for k in keys:
    vals = [report["metrics"][s].get(k) for s in stages]
    lines.append(k.ljust(width) + "".join(
        (f"{v:10.3f}" if isinstance(v, (int, float)) else " " * 10) for v in vals))
  return "\n".join(lines)


def _write_json(path: str, doc: dict) -> None:
  files.write_json(path, doc)
