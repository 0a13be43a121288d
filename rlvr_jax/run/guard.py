"""The run loops' health guard: stop a run that blows up, before its state is checkpointed.

A blow-up is not only a non-finite value (those updates are skipped in-graph and counted): an
lr far too high gives *finite* exploded weights (|w| ~ 1e10, loss = ln V, a uniform policy).
The guard reads the step metrics the loops already pull:

  update_ratio  ‖Δθ‖ / ‖θ‖ of the step's update (train.steps.apply_update_if_finite). Adam moves
                every weight by about lr, so at lr 1e-3 on weights of scale 0.02 the ratio is
                ~0.05; an update as large as the weights themselves is a blow-up.
  loss spike    (CPT / SFT) the loss exceeds the median of the last `window` steps by more than
                `loss_spike_nats` (2 nats = 7x the perplexity).
  skipped       non-finite updates; `max_nonfinite` in a row stop the run.

The loops call `check` on every step's metrics, and on the step being saved before each save, so
a checkpoint never holds a state the guard rejected.
"""
from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import numpy as np

from rlvr_jax.run.errors import BlowUpError, NonFiniteError, RunError


@dataclasses.dataclass(frozen=True)
class GuardSpec:
  max_update_ratio: float = dataclasses.field(default=1.0, metadata={
      "help": "stop when one update moves the params by more than this fraction of their norm "
              "(0 = off)"})
  loss_spike_nats: float = dataclasses.field(default=2.0, metadata={
      "help": "CPT/SFT: stop when the loss exceeds the median of the last `window` steps by "
              "this many nats (0 = off)"})
  window: int = dataclasses.field(default=20, metadata={"help": "steps in the loss median"})
  max_nonfinite: int = 10         # from config.max_nonfinite_steps

  @classmethod
  def from_config(cls, config: Any) -> "GuardSpec":
    """config.guard.* (defaults: this class) and config.max_nonfinite_steps (a ConfigDict or a
    specs.RunSpec; specs.RunSpec.guard_spec)."""
    from rlvr_jax import specs
    return specs.parse(config).guard_spec


def config_fields():
  """The `guard` section every run config carries: GuardSpec's defaults, the one place they are
  set (config files call this)."""
  from ml_collections import ConfigDict
  return ConfigDict({f.name: f.default for f in dataclasses.fields(GuardSpec)
                     if f.name != "max_nonfinite"})


FIELD_HELP = {f"guard.{f.name}": f.metadata["help"] for f in dataclasses.fields(GuardSpec)
              if "help" in f.metadata}


class HealthGuard:
  """Stateful across the steps of one process (explicit, small): recent losses and the count of
  non-finite updates in a row. `check(step, metrics)` raises on a blow-up."""

  def __init__(self, spec: GuardSpec, *, checkpoints_dir: str, use_loss: bool):
    self.spec = spec
    self.checkpoints_dir = checkpoints_dir
    self.use_loss = use_loss
    self.losses: deque[float] = deque(maxlen=max(spec.window, 1))
    self.bad_in_row = 0
    self.skipped_total = 0
    self.checked: set[int] = set()
    self.last_saved: int | None = None

  def _advice(self) -> str:
    if self.last_saved is None:
      return (f"; stopping before any checkpoint was written ({self.checkpoints_dir} holds none "
              f"of this run). Lower optim.lr (or raise optim.warmup, check the data / rewards) "
              f"and rerun: the run starts over from its initial parameters")
    return (f"; stopping (the last healthy checkpoint is step {self.last_saved} in "
            f"{self.checkpoints_dir}; nothing later was saved). Lower optim.lr (or raise "
            f"optim.warmup, check the data / rewards) and rerun with "
            f"--config.resume_overrides=True to continue from that checkpoint, or use a new "
            f"--workdir")

  def check(self, step: int, m: dict[str, float]) -> None:
    """Raises NonFiniteError / BlowUpError when step `step`'s metrics show a blow-up."""
    if step in self.checked:
      return
    self.checked.add(step)
    s = self.spec
    if m.get("skipped", 0):
      self.bad_in_row += 1
      self.skipped_total += int(m["skipped"])
      if s.max_nonfinite and self.bad_in_row >= s.max_nonfinite:
        raise NonFiniteError(f"{self.bad_in_row} non-finite updates in a row (steps with a "
                             f"skipped update, the last at step {step})" + self._advice())
      return
    self.bad_in_row = 0
    ratio = float(m.get("update_ratio", 0.0))
    if s.max_update_ratio and not ratio <= s.max_update_ratio:
      raise BlowUpError(f"step {step}: the update moved the parameters by {ratio:.3g}x their norm"
                        f" (guard.max_update_ratio={s.max_update_ratio}; param_norm="
                        f"{m.get('param_norm', float('nan')):.3g})" + self._advice())
    loss = float(m.get("loss", float("nan")))
    if self.use_loss and s.loss_spike_nats and np.isfinite(loss):
      if len(self.losses) == self.losses.maxlen:
        median = float(np.median(self.losses))
        if loss > median + s.loss_spike_nats:
          raise BlowUpError(f"step {step}: loss {loss:.4g} is {loss - median:.3g} nats above the "
                            f"median {median:.4g} of the last {len(self.losses)} steps "
                            f"(guard.loss_spike_nats={s.loss_spike_nats})" + self._advice())
      self.losses.append(loss)

  def saved(self, step: int) -> None:
    self.last_saved = int(step)


def check(guard: HealthGuard, step: int, metrics: dict[str, float]) -> RunError | None:
  """guard.check as a value: the loops log the failing step's metrics, then raise it."""
  try:
    guard.check(step, metrics)
  except RunError as e:
    return e
  return None
