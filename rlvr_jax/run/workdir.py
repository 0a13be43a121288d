"""The run directory's bookkeeping: one process at a time (a lock), whether the run finished
(status.json), and whether a resume may use the config it is given (the recorded config.json).

  WORKDIR/.lock        held (flock) by the process running in WORKDIR; holds its pid and host
  WORKDIR/status.json  {"status": "running" | "completed" | "preempted" | "data_exhausted" |
                       "saturated" (RL stopped by rl.stop_after_saturation) | "failed",
                       "step": last step, "steps": steps asked for, "run_id": ...}
  WORKDIR/init.json    {"from": RUN, "step": S, "run_id": ...}: the run checkpoint this run was
                       initialised from, so a pipeline can tell when it was rerun since
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
import uuid
from typing import Any, Iterator

from rlvr_jax.model.config import SHAPE_FIELDS
from rlvr_jax.run import paths
from rlvr_jax.run.errors import ResumeMismatchError, UnfinishedRunError, WorkdirBusyError

LOCK_FILE = ".lock"
STATUS_FILE = "status.json"
FINISHED = ("completed", "data_exhausted", "saturated")

# Config fields a resume may change freely: they decide what is logged, kept or checked, not
# what is trained (a mesh change reshards the restored state).
FREE_FIELDS = ("progress_bar", "log_every", "resume_overrides", "checkpoint_every",
               "keep_checkpoints", "keep_best", "eval_every", "eval_batches", "eval_at_end",
               "max_nonfinite_steps", "guard", "mesh", "eval",
               # the same step, run as one jit or three, padded or packed
               "rl.fused_step", "rl.profile_phases", "rl.pack_update", "rl.cache_segments")
# Model fields that are the architecture (the shapes of the saved weights).
ARCH_FIELDS = tuple(f for f in SHAPE_FIELDS if f != "qkv_bias") + ("rope_theta", "param_dtype")

_held: dict[str, list] = {}   # lock path -> [fd, depth] (re-entrant within one process)


def is_primary() -> bool:
  """Whether this process writes the run's shared files (process 0 of a multi-host job)."""
  import jax
  return jax.process_index() == 0


_is_primary = is_primary


def sync_processes(name: str) -> None:
  """Waits until every process of a multi-host job reaches this point (no-op on one)."""
  import jax
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
  """Holds WORKDIR/.lock for the block; a second process gets WorkdirBusyError naming the
  holder's pid and host. The OS drops the lock when its holder dies (no stale locks). Only
  process 0 locks; URL workdirs (gs://) are not locked (no advisory locks on buckets)."""
  if paths.is_url(workdir) or not _is_primary():
    yield
    return
  workdir = paths.resolve(workdir)       # one key per directory however it is written
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  if path in _held:
    _held[path][1] += 1
    try:
      yield
    finally:
      _held[path][1] -= 1
    return
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    holder = _read_json(path) or {}
    os.close(fd)
    raise WorkdirBusyError(
        f"{workdir} is in use by pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        f" (since {holder.get('since', '?')}: {holder.get('command', '?')}); wait for that run to"
        f" end or stop it, or choose another --workdir") from None
  info = {"pid": os.getpid(), "host": socket.gethostname(),
          "since": datetime.datetime.now().isoformat(timespec="seconds"),
          "command": " ".join(sys.argv)}
  _held[path] = [fd, 1]
  try:
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    yield
  finally:
    del _held[path]
    os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _read_json(path) -> dict | None:
  from etils import epath
  try:
    doc = json.loads(epath.Path(path).read_text())
    return doc if isinstance(doc, dict) else None
  except (OSError, ValueError):
    return None


# ---------------------------------------------------------------------------------- status
def write_status(workdir: str, status: str, step: int, steps: int, *,
                 finished_before: dict | None = None) -> None:
  """Atomically records how the run stands (process 0 only). `run_id` is drawn when the run
  directory is first used and kept: it tells a rerun stage from the one a later stage used.
  `finished_before`: the finished status a rerun started from (restored if it fails early)."""
  if not _is_primary():
    return
  from etils import epath
  old = read_status(workdir) or {}
  doc = {"status": status, "step": int(step), "steps": int(steps),
         "run_id": old.get("run_id") or uuid.uuid4().hex[:12]}
  if finished_before:
    doc["finished_before"] = {"status": finished_before["status"],
                              "step": int(finished_before["step"])}
  _write_json_atomic(epath.Path(workdir) / STATUS_FILE, doc)


def _write_json_atomic(path, doc: dict) -> None:
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text(json.dumps(doc))
  tmp.replace(path)


def read_status(workdir: str) -> dict | None:
  from etils import epath
  path = epath.Path(workdir) / STATUS_FILE
  if not path.exists():
    return None
  try:
    doc = json.loads(path.read_text())
  except ValueError:
    return None
  return doc if isinstance(doc, dict) else None


def require_finished(ref: str, what: str) -> None:
  """A run given as a starting point (`init.from_checkpoint=RUN` without :STEP) must have
  finished: building on a preempted or still-running stage would train on a partial model."""
  path, step = paths.parse_checkpoint_ref(ref)
  if step is not None or not ref:
    return
  doc = read_status(path)
  if doc is None or doc.get("status") in FINISHED:
    return   # a params-only directory, a run from before status.json, or a finished run
  raise UnfinishedRunError(
      f"{what}={ref} has not finished (status {doc.get('status')!r} at step {doc.get('step')} of "
      f"{doc.get('steps')}); finish it by rerunning its command, or name a step explicitly "
      f"({path}:{doc.get('step')}) to start from that checkpoint on purpose")


INIT_FILE = "init.json"


def record_init(workdir: str, source: str, step: int | None, *, explicit: bool = False) -> None:
  """Records which run (and step) `workdir` was initialised from (process 0 only); `explicit`:
  the step was named (`PATH:STEP`), so the source moving on later does not make it stale."""
  if not _is_primary():
    return
  from etils import epath
  doc = {"from": source, "step": step, "explicit": bool(explicit),
         "run_id": (read_status(source) or {}).get("run_id")}
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  _write_json_atomic(epath.Path(workdir) / INIT_FILE, doc)


def read_init(workdir: str) -> dict | None:
  """What record_init wrote in `workdir` (None: nothing, or not readable)."""
  from etils import epath
  return _read_json(epath.Path(workdir) / INIT_FILE)


def built_on_stale(workdir: str, source: str) -> str | None:
  """Why `workdir` no longer matches the run it was initialised from (a rerun or a continued
  `source`), or None when it matches or nothing was recorded."""
  from etils import epath
  path = epath.Path(workdir) / INIT_FILE
  if not path.exists():
    return None
  try:
    rec = json.loads(path.read_text())
  except ValueError:
    return None
  if os.path.normpath(str(rec.get("from", ""))) != os.path.normpath(str(source)):
    return None            # built on another run than the one this stage would now use
  now = read_status(source) or {}
  if rec.get("run_id") and now.get("run_id") and rec["run_id"] != now["run_id"]:
    return f"{source} was started anew since (run {rec['run_id']} -> {now['run_id']})"
  if rec.get("step") is not None and now.get("step") is not None and \
      not rec.get("explicit") and int(rec["step"]) != int(now["step"]):
    return f"it was built on step {rec['step']} of {source}, which is now at step {now['step']}"
  return None


def move_aside(workdir: str, reason: str) -> str:
  """Renames WORKDIR to WORKDIR.<reason>[-N] (never deletes); returns the new path."""
  from rlvr_jax.run import files
  dst = f"{workdir}.{reason}"
  n = 0
  while files.exists(dst):
    n += 1
    dst = f"{workdir}.{reason}-{n}"
  files.rename(workdir, dst)
  return dst


# ---------------------------------------------------------------------------------- resume
def _flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(doc, dict):
    out = {}
    for k, v in doc.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: doc}


def _is_free(key: str) -> bool:
  top = key.split(".")[0]
  return top in FREE_FIELDS or key in FREE_FIELDS


def recorded_config(workdir: str) -> dict | None:
  from rlvr_jax.train.checkpoints import CONFIG_FILE
  return _read_json(os.path.join(workdir, CONFIG_FILE))


def check_resume(workdir: str, new_config: dict, new_model: dict, *, allow: bool,
                 step: int) -> dict[str, list]:
  """Compares a resume's config with the run's recorded config.json, before anything is written.

  Architecture changes (model fields that shape the weights) are always refused; other changes
  are refused unless `allow` (config.resume_overrides=True). Returns {field: [old, new]} of the
  accepted changes (empty when nothing changed)."""
  old = recorded_config(workdir)
  if old is None:
    return {}
  history = old.pop("resume_history", [])
  del history
  old_model = old.pop("model", {}) or {}
  arch = {f"model.{k}": [old_model.get(k), new_model.get(k)] for k in ARCH_FIELDS
          if k in old_model and old_model.get(k) != new_model.get(k)}
  if arch:
    raise ResumeMismatchError(
        f"{workdir} holds a run with another architecture: {_describe(arch)}; the saved weights "
        f"cannot change shape. Drop those overrides to resume, or choose a new --workdir")
  before, after = _flatten(old), _flatten({k: v for k, v in new_config.items() if k != "model"})
  # Only fields both configs have are compared: a field added to the code since the run started
  # (absent from its config.json) takes its default, and one removed no longer exists, so run
  # directories written by older versions still resume.
  changed = {k: [before[k], after[k]] for k in sorted(set(before) & set(after))
             if not _is_free(k) and _normalise(before[k]) != _normalise(after[k])}
  if changed and not allow:
    raise ResumeMismatchError(
        f"resuming {workdir} at step {step} with a config that differs from the recorded "
        f"config.json: {_describe(changed)}; rerun without these changes, or add "
        f"--config.resume_overrides=True to apply them from step {step} on (recorded in "
        f"config.json)")
  return changed


def _normalise(v: Any) -> Any:
  return json.loads(json.dumps(v, default=str)) if v is not None else None


def _describe(changes: dict[str, list], limit: int = 6) -> str:
  items = [f"{k} {old!r} -> {new!r}" for k, (old, new) in list(changes.items())[:limit]]
  more = len(changes) - limit
  return ", ".join(items) + (f" (+{more} more)" if more > 0 else "")


def history_with(workdir: str, changed: dict[str, list], step: int) -> list[dict]:
  """The recorded resume_history plus this resume's accepted changes (when there are any)."""
  old = recorded_config(workdir) or {}
  history = list(old.get("resume_history", []))
  if changed:
    history.append({"step": int(step), "changed": changed})
  return history
