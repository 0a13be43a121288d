"""Checkpoints: orbax CheckpointManager for runs, and standalone params-only checkpoints.

Run directory layout:

  WORKDIR/config.json                 resolved run config; "model" holds the resolved ModelConfig
  WORKDIR/checkpoints/<step>/state    the TrainState (orbax StandardSave; sharded arrays)
  WORKDIR/checkpoints/<step>/data     the grain iterator state (one JSON per process), when given

Standalone params checkpoint (`save_params` / `restore_params`, used by `rlvr-jax convert`):

  DIR/config.json                     {"model": ModelConfig dict}
  DIR/params                          the parameter tree (orbax StandardSave)

Saves are asynchronous: arrays are copied off the device when `save` returns and written in the
background; a step directory appears only once complete (orbax writes to a temporary name and
renames), so a crash never leaves a half-written checkpoint in place of a good one.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh, SingleDeviceSharding

from rlvr_jax.model.config import ModelConfig
from rlvr_jax.run import paths
from rlvr_jax.run.errors import CorruptCheckpointError


class CheckpointMismatchError(ValueError):
  """A checkpoint that reads but does not fit the run (e.g. no data-iterator state): not
  corruption, so it is never set aside."""


# Errors that say something about this machine or this run, not about the checkpoint's files:
# they are raised as they are instead of setting the step aside as corrupt.
NOT_CORRUPTION = (CheckpointMismatchError, MemoryError, PermissionError)

log = logging.getLogger("rlvr_jax.checkpoints")

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
PARAMS_DIR = "params"


# ---------------------------------------------------------------------------------- config.json
def write_config_json(directory: str, config: dict, model_cfg: ModelConfig) -> str:
  """Writes DIRECTORY/config.json = {**config, "model": model_cfg}; returns the path.

  An existing, different config.json is kept as config.prev-N.json (never overwritten).
  """
  from rlvr_jax.run import files
  root = epath.Path(directory)
  path = root / CONFIG_FILE
  doc = dict(config)
  doc["model"] = model_cfg.to_dict()
  text = json.dumps(doc, indent=2, sort_keys=True, default=_json_default)
  if path.exists():
    if path.read_text() == text:
      return os.fspath(path)
    n = 0
    while (root / f"config.prev-{n}.json").exists():
      n += 1
    files.copy_file(path, root / f"config.prev-{n}.json")
  files.write_text(path, text)
  return os.fspath(path)


def _json_default(x):
  if isinstance(x, (np.integer, np.floating)):
    return x.item()
  if isinstance(x, (tuple, set)):
    return list(x)
  return str(x)


def read_model_config(directory: str) -> ModelConfig:
  """The ModelConfig recorded in DIRECTORY/config.json (a run dir or a params checkpoint)."""
  path = epath.Path(directory) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: {directory} is not a run directory or params "
                            f"checkpoint written by rlvr_jax")
  doc = json.loads(path.read_text())
  if "model" not in doc or not isinstance(doc["model"], dict):
    raise ValueError(f"{path} has no 'model' entry with the resolved model config")
  return ModelConfig.from_dict(doc["model"])


# ---------------------------------------------------------------------------------- run manager
class RunCheckpoints:
  """The checkpoints of one run: keep the last `keep` and the `keep_best` best by `best_metric`.

  `save(step, state, data_iter, metrics)`; `restore(step, target_state, data_iter)`. `metrics`
  given with a save (held-out loss) rank the checkpoint for best-keeping; saves without them
  are kept only while among the last `keep`.
  """

  def __init__(self, workdir: str, *, keep: int = 3, keep_best: int = 1,
               best_metric: str = "eval/loss", best_mode: str = "min",
               async_save: bool = True):
    if keep < 1:
      raise ValueError(f"keep_checkpoints={keep} must be >= 1")
    if best_mode not in ("min", "max"):
      raise ValueError(f"best_mode={best_mode!r} must be 'min' or 'max'")
    self.directory = epath.Path(paths.resolve(os.fspath(workdir))) / CHECKPOINT_DIR
    policies = [ocp.checkpoint_managers.LatestN(n=keep)]
    if keep_best > 0:
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=lambda m: float(m[best_metric]) if best_metric in m else float("nan"),
          reverse=best_mode == "min", n=keep_best, keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self.restored_extra: dict | None = None   # the `extra` of the last restored step, if any

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, data_iter: Any = None,
           metrics: dict[str, float] | None = None, extra: dict | None = None) -> bool:
    """Starts an asynchronous save (device→host copy done on return). False if `step` exists.
    `extra`: a small JSON-able dict of host-side loop state saved with the step (e.g. the
    saturation monitor's), read back by `restore_latest`."""
    if step in self.manager.all_steps():
      return False
    items = {"state": ocp.args.StandardSave(state)}
    if extra is not None:
      items["extra"] = ocp.args.JsonSave(extra)
    if data_iter is not None:
      import grain
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
    return self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

  def restore(self, step: int, target_state: Any, data_iter: Any = None):
    """(state, data_iter) at `step`, the state on `target_state`'s shardings (ShapeDtypeStructs
    with shardings, or arrays). The iterator is positioned in place."""
    items = {"state": ocp.args.StandardRestore(target_state)}
    if data_iter is not None:
      import grain
      if not (self.directory / str(step) / "data").exists():
        raise CheckpointMismatchError(f"checkpoint {self.directory / str(step)} has no data-iterator state "
                         f"but the run has a data iterator; cannot resume the data position")
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    if (self.directory / str(step) / "extra").exists():
      items["extra"] = ocp.args.JsonRestore()
    out = self.manager.restore(step, args=ocp.args.Composite(**items))
    self.restored_extra = out.get("extra") if "extra" in items else None
    return out["state"], out.get("data") if data_iter is not None else None

  def restore_latest(self, target_state: Any, data_iter: Any = None):
    """(step, state) of the newest checkpoint that reads back, or (None, None) without any.

    A newer step that cannot be read (truncated or zeroed file, missing `state/`) is named in a
    warning and moved aside to `checkpoints/<step>.corrupt` (never deleted) once an older step
    has restored; when no step reads, nothing is moved and CorruptCheckpointError names the
    newest step and its error."""
    failures: list[tuple[int, str]] = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        state, _ = self.restore(step, target_state, data_iter)
      except NOT_CORRUPTION:
        raise
      except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for bad files
        failures.append((step, one_line(e)))
        continue
      from rlvr_jax.run import workdir as workdir_lib
      for bad, why in failures:
        if workdir_lib.is_primary():     # one process renames; every process skips the step
          aside = self.set_aside(bad, "corrupt")
          log.warning("checkpoint step %d cannot be read (%s); moved to %s, resuming from step "
                      "%d", bad, why, aside, step)
      if failures:
        workdir_lib.sync_processes(f"checkpoints-set-aside:{self.directory}")
        self.manager.reload()
      return step, state
    if failures:
      step, why = failures[0]
      raise CorruptCheckpointError(
          f"no checkpoint in {self.directory} can be read; the newest, step {step}, fails with: "
          f"{why}. Restore the directory from a copy, or start a new --workdir")
    return None, None

  def set_aside(self, step: int, reason: str) -> str:
    """Renames checkpoints/<step> to checkpoints/<step>.<reason> (orbax no longer lists it)."""
    src = self.directory / str(step)
    dst = self.directory / f"{step}.{reason}"
    n = 0
    while dst.exists():
      n += 1
      dst = self.directory / f"{step}.{reason}-{n}"
    src.rename(dst)
    self.manager.reload()
    return os.fspath(dst)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


# ---------------------------------------------------------------------------------- params only
def _placement(cfg: ModelConfig, shardings: Any = None, mesh: Mesh | None = None):
  from rlvr_jax import sharding
  if shardings is not None:
    return shardings
  if mesh is not None:
    return sharding.param_shardings(cfg, mesh)
  from rlvr_jax.model.transformer import abstract_params
  import flax.linen as nn
  one = SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda _: one, nn.unbox(abstract_params(cfg)))


def _abstract_params(cfg: ModelConfig, placement: Any):
  import flax.linen as nn
  from rlvr_jax.model.transformer import abstract_params
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      nn.unbox(abstract_params(cfg)), placement)


def one_line(e: BaseException, limit: int = 300) -> str:
  """An exception as one short line (orbax/tensorstore messages run over many lines)."""
  text = " ".join(str(e).split()) or type(e).__name__
  return text if len(text) <= limit else text[:limit] + " ..."


def run_steps(workdir: str) -> list[int]:
  """Checkpoint steps of a run directory (sorted; [] when none): the step directories orbax
  lists, the same the trainer resumes from. Those that cannot be read are found by reading them
  (`load_model` and `RunCheckpoints.restore_latest` fall back past them, saying so)."""
  d = epath.Path(paths.resolve(os.fspath(workdir))) / CHECKPOINT_DIR
  if not d.exists():
    return []
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and p.is_dir())


def load_params(workdir: str, step: int | None = None, *, shardings: Any = None,
                mesh: Mesh | None = None) -> Any:
  """Parameters of a run's checkpoint (the latest when `step` is None), or of a params-only
  checkpoint directory (`save_params`). The model config is read from workdir/config.json.

  Placed on `shardings` (a params tree of shardings), else on `mesh`'s parameter shardings, else
  on the first local device.
  """
  return load_model(workdir, step, shardings=shardings, mesh=mesh)[1]


def load_model(workdir: str, step: int | None = None, *, shardings: Any = None,
               mesh: Mesh | None = None) -> tuple[ModelConfig, Any]:
  """(ModelConfig, params) of a run checkpoint or params-only checkpoint; see `load_params`."""
  cfg, params, _ = load_model_step(workdir, step, shardings=shardings, mesh=mesh)
  return cfg, params


def load_model_step(workdir: str, step: int | None = None, *, shardings: Any = None,
                    mesh: Mesh | None = None) -> tuple[ModelConfig, Any, int | None]:
  """(ModelConfig, params, the step read) of a run checkpoint (step None for a params-only
  checkpoint). With `step` None the newest step that reads back is used; newer ones that do not
  are named in a warning (the rule a resume follows: RunCheckpoints.restore_latest)."""
  workdir = paths.resolve(os.fspath(workdir))
  if not (epath.Path(workdir) / CHECKPOINT_DIR).exists() and \
      (epath.Path(workdir) / PARAMS_DIR).exists():
    if step is not None:
      raise ValueError(f"{workdir} is a params-only checkpoint; it has no step {step}")
    return (*restore_params(workdir, shardings=shardings, mesh=mesh), None)
  cfg = read_model_config(workdir)
  steps = run_steps(workdir)
  if not steps:
    raise FileNotFoundError(f"no finished checkpoint under {os.path.join(workdir, CHECKPOINT_DIR)}")
  if step is not None and step not in steps:
    raise ValueError(f"{workdir} has no checkpoint at step {step}; available steps: {steps}")
  target = {"params": _abstract_params(cfg, _placement(cfg, shardings, mesh))}
  failures = []
  for candidate in ([step] if step is not None else steps[::-1]):
    path = epath.Path(workdir) / CHECKPOINT_DIR / str(candidate) / "state"
    try:
      with ocp.PyTreeCheckpointer() as ckptr:
        out = ckptr.restore(path, args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True))
    except NOT_CORRUPTION:
      raise
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for bad files
      failures.append((candidate, one_line(e)))
      continue
    for bad, why in failures:   # the same rule as a resume (RunCheckpoints.restore_latest)
      log.warning("checkpoint step %d of %s cannot be read (%s); using step %d", bad, workdir,
                  why, candidate)
    return cfg, out["params"], candidate
  bad, why = failures[0]
  if step is not None:
    others = [s for s in steps if s != step]
    raise CorruptCheckpointError(f"checkpoint step {bad} of {workdir} cannot be read: {why}. "
                                 f"Name another step (PATH:STEP; other steps: {others}) or "
                                 f"restore the directory from a copy")
  raise CorruptCheckpointError(f"no checkpoint of {workdir} can be read (steps {steps}); the "
                               f"newest, step {bad}, fails with: {why}. Restore the directory "
                               f"from a copy")


def save_params(directory: str, cfg: ModelConfig, params: Any) -> str:
  """Writes a standalone params checkpoint (DIR/params + DIR/config.json). Refuses to overwrite."""
  directory = paths.resolve(os.fspath(directory))
  path = epath.Path(directory) / PARAMS_DIR
  if path.exists():
    raise FileExistsError(f"{path} exists; choose a new directory (checkpoints are never "
                          f"overwritten)")
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, params)
    ckptr.wait_until_finished()
  write_config_json(os.fspath(directory), {}, cfg)
  return os.fspath(directory)


def restore_params(directory: str, *, shardings: Any = None,
                   mesh: Mesh | None = None) -> tuple[ModelConfig, Any]:
  """(ModelConfig, params) of a `save_params` directory, placed as in `load_params`."""
  directory = paths.resolve(os.fspath(directory))
  cfg = read_model_config(directory)
  target = _abstract_params(cfg, _placement(cfg, shardings, mesh))
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(epath.Path(directory) / PARAMS_DIR, target)
  return cfg, params
