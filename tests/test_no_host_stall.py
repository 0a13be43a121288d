"""The RL loop's default path never stalls the host on the device (issue: "no host stall in the
default path"): the stage's batch and step callbacks dispatch work without reading a device
value or waiting for one, and run.loop pulls step t's metrics only after step t+1 is dispatched.

Inside the callbacks, host reads of device values are counted where jax.Array's Python
conversions go (`_value`: float(), int(), bool(), .tolist(), jax.device_get; not np.asarray,
which takes a CPU array's buffer directly) and waits where they are asked for
(jax.block_until_ready). The profiling mode (rl.profile_phases), which waits on every phase to
time it, is the control: the same counters see its waits.

On a CPU backend this is as far as a test can see: XLA:CPU runs a program with a host callback
in the dispatching thread, so a device-side gate cannot show the overlap itself.
"""
import jax
from jax._src import array as array_impl

from rlvr_jax.rl import loop as rl_loop
from test_rl_loop import tiny_config


def _traced_run(c, workdir, monkeypatch) -> tuple[list[str], dict[str, int]]:
  """Runs `c` with the stage's callbacks traced: (events, host syncs inside the callbacks)."""
  events: list[str] = []
  syncs = {"reads": 0, "waits": 0}
  inside = [False]
  value = array_impl.ArrayImpl._value
  block = jax.block_until_ready

  def counted_value(self):
    if inside[0]:
      syncs["reads"] += 1
    return value.fget(self)

  def counted_block(x):
    if inside[0]:
      syncs["waits"] += 1
    return block(x)

  def traced(fn, name):
    def call(*args):
      inside[0] = True
      try:
        out = fn(*args)
      finally:
        inside[0] = False
      events.append(f"{name} {args[-1]}")
      return out
    return call

  real_run_loop = rl_loop.run_loop

  def run_loop(spec, stage, *args):
    stage.next_batch = traced(stage.next_batch, "batch")
    stage.step = traced(stage.step, "step")
    on_metrics = stage.on_metrics
    stage.on_metrics = lambda s, m: (events.append(f"pull {s}"), on_metrics(s, m))[-1]
    return real_run_loop(spec, stage, *args)

  monkeypatch.setattr(array_impl.ArrayImpl, "_value", property(counted_value))
  monkeypatch.setattr(jax, "block_until_ready", counted_block)
  monkeypatch.setattr(rl_loop, "run_loop", run_loop)
  assert rl_loop.run(c, workdir) == 0
  return events, syncs


def test_the_default_rl_path_never_waits_on_the_device(init_dir, tmp_path, monkeypatch):
  c = tiny_config(init_dir)
  c.steps, c.eval_every, c.eval_at_end, c.checkpoint_every = 4, 0, False, 0
  assert c.rl.fused_step == "auto" and not c.rl.profile_phases     # the shipped default
  events, syncs = _traced_run(c, str(tmp_path / "default"), monkeypatch)
  assert syncs == {"reads": 0, "waits": 0}, syncs
  # step t+1 is dispatched before step t's metrics are pulled: the device always has work
  assert events == ["batch 1", "step 1", "batch 2", "step 2", "pull 1", "batch 3", "step 3",
                    "pull 2", "batch 4", "step 4", "pull 3", "pull 4"]


def test_the_profiling_mode_waits_and_the_counters_see_it(init_dir, tmp_path, monkeypatch):
  c = tiny_config(init_dir)
  c.steps, c.eval_every, c.eval_at_end, c.checkpoint_every = 2, 0, False, 0
  c.rl.fused_step, c.rl.profile_phases = False, True
  events, syncs = _traced_run(c, str(tmp_path / "profiled"), monkeypatch)
  assert syncs["waits"] >= 2 * 3, syncs        # sample, score, update of each step
  assert events == ["batch 1", "step 1", "pull 1", "batch 2", "step 2", "pull 2"]
