"""The online saturation monitor in the RL loop: saturation/* metrics every step, one line when
the training reward saturates, rl.stop_after_saturation ending the run (final checkpoint and
eval), and a resume after SIGKILL continuing the monitor exactly."""
import json
import os
import signal
import subprocess
import sys
import time

from test_rl_loop import tiny_config

from rlvr_jax.rl import loop as rl_loop
from rlvr_jax.train import checkpoints

HERE = os.path.dirname(os.path.abspath(__file__))


def saturating_config(init_dir, *, stop_after, steps=30, every=0):
  """Every reward is 1 (bernoulli noise with q = 1): the training reward is flat from step 1,
  so with warmup 1 and patience 2 the plateau starts at step 2 and the run saturates at step 3
  (t_sat 2); it stops `stop_after` steps after t_sat. The true reward (random model) stays 0."""
  c = tiny_config(init_dir)
  c.steps, c.eval_every, c.checkpoint_every = steps, 0, every
  c.eval_at_end = True
  c.reward.noise, c.reward.noise_q = "bernoulli", 1.0
  c.saturation.warmup, c.saturation.patience = 1, 2
  c.rl.stop_after_saturation = stop_after
  return c


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    out = {}
    for line in f:
      r = json.loads(line)
      out.setdefault(r["step"], {}).update(r)     # the last record of a step wins, per key
  return out


def test_stop_after_saturation_ends_the_run_with_a_checkpoint_and_eval(init_dir, tmp_path,
                                                                       capsys):
  workdir = str(tmp_path / "rl")
  assert rl_loop.run(saturating_config(init_dir, stop_after=2), workdir) == 0
  out = capsys.readouterr().out
  assert out.count("saturated") >= 1 and "rl: saturated at step 4" in out
  with open(os.path.join(workdir, "status.json")) as f:
    status = json.load(f)
  assert (status["status"], status["step"]) == ("saturated", 4)   # t_sat 2 + 2 steps
  assert checkpoints.run_steps(workdir) == [4]
  recs = records(workdir)
  assert [recs[s]["saturation/saturated"] for s in (1, 2, 3, 4)] == [0.0, 0.0, 1.0, 1.0]
  assert [recs[s]["saturation/steps_since"] for s in (3, 4)] == [1.0, 2.0]
  assert all(recs[s]["saturation/r_max"] == 1.0 for s in (1, 2, 3, 4))
  assert recs[4]["saturation_true/saturated"] == 0.0     # the true reward never rose
  assert "eval/arith_eval/avg@2" in recs[4]              # the final eval of the stopped run
  assert max(recs) == 4


RUNNER = """
import sys
sys.path.insert(0, {here!r})
from test_rl_saturation import saturating_config
from rlvr_jax.rl import loop
c = saturating_config(sys.argv[1], stop_after=8, every=2)
c.saturation.patience = 3
sys.exit(loop.run(c, sys.argv[2]))
"""


def test_monitor_resumes_exactly_after_sigkill(init_dir, tmp_path):
  runner = tmp_path / "runner.py"
  runner.write_text(RUNNER.format(here=HERE))
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "RLVR_JAX_COMPILE_CACHE": ""}

  def launch(workdir):
    return subprocess.Popen([sys.executable, str(runner), init_dir, workdir], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

  straight = str(tmp_path / "straight")
  p = launch(straight)
  assert p.wait(timeout=300) == 0, p.stderr.read()[-3000:]

  killed = str(tmp_path / "killed")
  p = launch(killed)
  deadline = time.time() + 300
  while time.time() < deadline:        # kill it once step 5 is logged (checkpoint 4 exists)
    if os.path.exists(os.path.join(killed, "metrics.jsonl")) and \
        any(s >= 5 for s in records(killed)) and checkpoints.run_steps(killed):
      break
    time.sleep(0.05)
  p.send_signal(signal.SIGKILL)
  p.wait(timeout=60)
  assert max(records(killed)) < 10                       # it really was cut short
  p = launch(killed)
  assert p.wait(timeout=300) == 0, p.stderr.read()[-3000:]

  for workdir in (straight, killed):
    with open(os.path.join(workdir, "status.json")) as f:
      assert json.load(f)["status"] == "saturated"
  a, b = records(straight), records(killed)
  assert max(a) == max(b) == 10                          # t_sat 2 + 8 steps
  keys = [k for k in a[10] if k.startswith("saturation")]
  assert len(keys) >= 8
  for s in range(1, 11):
    assert {k: a[s][k] for k in keys} == {k: b[s][k] for k in keys}, s
