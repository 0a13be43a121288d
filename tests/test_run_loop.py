"""run.loop.run_loop with a fake stage and checkpoint manager (no model, no compilation): the
order of dispatches and metric pulls, the statuses, the eval and checkpoint cadences."""
import json
import os
import pathlib

import numpy as np

from rlvr_jax.run import workdir as workdir_lib
from rlvr_jax.run.guard import GuardSpec
from rlvr_jax.run.loop import LoopSpec, Stage, run_loop


class FakeState:
  def __init__(self, n: int):
    self.params = n


class FakeManager:
  """Records every save as (step, eval metrics, extra)."""

  def __init__(self, workdir):
    self.directory = pathlib.Path(workdir) / "checkpoints"
    self.saves = []

  def save(self, step, state, data_iter=None, metrics=None, extra=None):
    assert state.params == step            # the state saved is the one after `step` steps
    if step not in [s for s, _, _ in self.saves]:
      self.saves.append((step, metrics, extra))

  def wait(self):
    pass


def fake_stage(events: list, batches: int, stop_at: int | None = None) -> Stage:
  """A stage whose step n dispatches 'step n' and whose metrics' pull records 'pull n'."""
  data = iter(range(batches))

  def step(state, batch, n):
    events.append(f"step {n}")
    return FakeState(state.params + 1), {"skipped": np.float32(0), "loss": np.float32(1.0 / n),
                                         "grad_norm": np.float32(1)}, None

  def on_metrics(s, m):
    events.append(f"pull {s}")
    m["seen"] = float(s)

  pulled = lambda: max([int(e.split()[1]) for e in events if e.startswith("pull")] or [0])
  return Stage(next_batch=lambda n: next(data), step=step, perf=lambda m, dt: {},
               evaluate=lambda params, s: events.append(f"eval {s}") or {"eval/loss": params},
               on_metrics=on_metrics,
               may_stop=lambda: stop_at is not None and pulled() + 1 >= stop_at,
               should_stop=lambda: "saturated" if stop_at and pulled() >= stop_at else None,
               checkpoint_extra=lambda: {"pulled": pulled()})


def spec(**kw) -> LoopSpec:
  base = dict(stage="test", steps=5, log_every=1, guard=GuardSpec(), progress_bar=False)
  return LoopSpec(**{**base, **kw})


def records(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_metrics_are_pulled_one_step_late_and_the_data_running_out_ends_the_run(tmp_path):
  events, manager = [], FakeManager(tmp_path)
  status, step = run_loop(spec(eval_every=2, checkpoint_every=2, keep_best=True),
                          fake_stage(events, batches=3), FakeState(0), 0, manager, iter(()),
                          str(tmp_path))
  assert (status, step) == ("data_exhausted", 3)
  # step 2 is checkpointed (and evaluated): its metrics are pulled before its save
  assert events == ["eval 0", "step 1", "step 2", "eval 2", "pull 1", "pull 2", "step 3",
                    "pull 3"]
  assert manager.saves == [(2, {"eval/loss": 2}, {"pulled": 2}), (3, None, {"pulled": 3})]
  assert workdir_lib.read_status(str(tmp_path))["step"] == 2     # written with the save
  recs = records(tmp_path)
  assert [r["step"] for r in recs] == [0, 1, 2, 3]
  assert recs[0] == {"step": 0, "eval/loss": 0}
  assert recs[2]["eval/loss"] == 2 and recs[2]["seen"] == 2 and recs[2]["loss"] == 0.5
  assert all(r["skipped_steps"] == 0 for r in recs[1:])


def test_a_stage_stop_pulls_early_evaluates_at_the_end_and_checkpoints_once(tmp_path):
  events, manager = [], FakeManager(tmp_path)
  status, step = run_loop(spec(steps=10, log_every=2, eval_at_end=True, skipped_key="skips"),
                          fake_stage(events, batches=10, stop_at=3), FakeState(0), 0, manager,
                          iter(()), str(tmp_path))
  assert (status, step) == ("saturated", 3)
  # the pending step 3 may stop the run: it is pulled before step 4 is dispatched (never)
  assert events == ["eval 0", "step 1", "step 2", "pull 1", "step 3", "pull 2", "pull 3",
                    "eval 3"]
  assert manager.saves == [(3, None, {"pulled": 3})]      # no keep_best: no eval metrics saved
  recs = records(tmp_path)
  assert [r["step"] for r in recs] == [0, 2, 3]       # log_every=2, then the stop's eval
  assert recs[1]["skips"] == 0 and "skipped_steps" not in recs[1] and recs[1]["seen"] == 2
  assert recs[2] == {"step": 3, "eval/loss": 3}


def test_a_resumed_run_starts_after_its_checkpoint_without_the_step_0_eval(tmp_path):
  events, manager = [], FakeManager(tmp_path)
  status, step = run_loop(spec(steps=4, eval_every=2), fake_stage(events, batches=10),
                          FakeState(2), 2, manager, iter(()), str(tmp_path))
  assert (status, step) == ("completed", 4)
  assert events == ["step 3", "step 4", "eval 4", "pull 3", "pull 4"]
  assert manager.saves == [(4, None, {"pulled": 4})]
  assert [r["step"] for r in records(tmp_path)] == [3, 4]
