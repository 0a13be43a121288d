"""`rlvr-jax sweep` (rlvr_jax.sweep): a 2-N x 2-seed toy sweep that runs, resumes without
training again and collects its table and plots; a bad grid field failing before anything runs;
launch commands in emit mode; the plan's names, zip groups and override lists; failing and
preempted points."""
import csv
import json
import os
import shlex

import pytest

from rlvr_jax import cli, sweep
from rlvr_jax.run.errors import EXIT_PREEMPTED
from rlvr_jax.run import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_SWEEP = os.path.join(ROOT, "configs", "sweeps", "toy_scarce.py")

# configs/sweeps/toy_scarce.py scaled down to seconds (test_rl_loop.tiny_config's sizes): the
# tiny random HF model, 2 RL steps of 8 prompts x 2 samples of 6 tokens, N in {4, 8} x seeds.
SWEEP_FILE = '''
from ml_collections import ConfigDict
from rlvr_jax.config_utils import load_config_file


def get_config():
  c = load_config_file({toy!r}, "toy_scarce.py")
  c.overrides.init = ConfigDict()
  c.overrides.init.from_hf = {init!r}
  c.overrides.steps = 2
  c.overrides.rl.max_new_tokens = 6
  c.overrides.data.n_pool = 16
  c.overrides.eval.max_new_tokens = 6
  c.overrides.eval.batch_size = 8
  c.grid.data.n_train = (4, 8)
  {extra}
  return c
'''


def write_sweep(tmp_path, init: str, extra: str = "") -> str:
  path = tmp_path / "sweep_cfg.py"
  path.write_text(SWEEP_FILE.format(toy=TOY_SWEEP, init=init, extra=extra))
  return str(path)


def line_counts(workdir: str) -> dict[str, int]:
  out = {}
  for name in sorted(os.listdir(os.path.join(workdir, "points"))):
    with open(os.path.join(workdir, "points", name, "metrics.jsonl")) as f:
      out[name] = sum(1 for _ in f)
  return out


def test_toy_sweep_runs_collects_and_resumes(init_dir, tmp_path, capsys):  # noqa: F811
  cfg = write_sweep(tmp_path, init_dir)
  workdir = str(tmp_path / "sweep")
  argv = ["rlvr-jax", "sweep", f"--config={cfg}", f"--workdir={workdir}"]
  assert cli.main(argv) == 0
  names = ["n=4_seed=0", "n=4_seed=1", "n=8_seed=0", "n=8_seed=1"]
  with open(os.path.join(workdir, "plan.json")) as f:
    plan = json.load(f)
  assert [p["name"] for p in plan["points"]] == names
  assert plan["points"][1]["overrides"][-2:] == ["--config.data.n_train=4", "--config.seed=1"]
  for p in plan["points"]:      # each point really ran its own grid values
    assert workdir_lib.read_status(p["workdir"])["status"] == "completed"
    with open(os.path.join(p["workdir"], "config.json")) as f:
      recorded = json.load(f)
    assert recorded["data"]["n_train"] == p["values"]["data.n_train"]
    assert recorded["seed"] == p["values"]["seed"]

  with open(os.path.join(workdir, "sweep.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [r["point"] for r in rows] == names
  for col in ("data.n_train", "seed", "status", "t_sat", "r_max", "final:reward/mean",
              "final:reward/true_mean", "delta_sat:eval/arith_eval/avg@2",
              "final:eval/arith_eval/avg@2", "final:eval/arith_eval/pass@2"):
    assert col in rows[0], col
  for row, p in zip(rows, plan["points"]):
    assert row["status"] == "completed" and row["step"] == "2"
    assert row["t_sat"] == "1"                      # margin 1 of T = 2: the only eligible step
    with open(os.path.join(p["workdir"], "metrics.jsonl")) as f:
      last = [r for r in map(json.loads, f) if "reward/mean" in r][-1]
    assert float(row["final:reward/mean"]) == pytest.approx(last["reward/mean"])
    assert row["delta_sat:eval/arith_eval/avg@2"] != ""
  md = (tmp_path / "sweep" / "sweep.md").read_text()
  assert "| point | n | seed | status | step | t_sat |" in md
  assert sum(line.startswith("| n=") for line in md.splitlines()) == 4
  assert "## mean over seed" in md and "| 4 | 2 |" in md and "| 8 | 2 |" in md
  png = tmp_path / "sweep" / "plots" / "delta_sat_vs_n.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
  assert sorted(os.listdir(tmp_path / "sweep" / "plots")) == ["delta_sat_vs_n.png"]
  assert "| point | n | seed |" in capsys.readouterr().out   # the summary table is printed

  counts = line_counts(workdir)
  assert cli.main(argv) == 0                          # rerun: every point is skipped
  assert line_counts(workdir) == counts
  assert capsys.readouterr().err.count("completed; skipped") == 4


def test_bad_grid_field_fails_before_anything_runs(tmp_path, capsys):
  cfg = write_sweep(tmp_path, "/nonexistent", "c.grid.data.n_trian = (1, 2)")
  workdir = tmp_path / "sweep"
  assert cli.main(["rlvr-jax", "sweep", f"--config={cfg}", f"--workdir={workdir}"]) == 2
  err = capsys.readouterr().err
  assert "grid field 'data.n_trian'" in err and len(err.strip().splitlines()) == 1
  assert os.listdir(workdir) == [".lock"]             # no plan.json, no points
  # an ill-typed value fails too, naming the point and the field
  assert cli.main(["rlvr-jax", "sweep", f"--config={TOY_SWEEP}", f"--workdir={workdir}",
                   "--config.grid.seed=('a', 1)"]) == 2
  err = capsys.readouterr().err
  assert "point n=8_seed=a" in err and "--config.seed=a" in err
  assert os.listdir(workdir) == [".lock"]


def test_emit_prints_one_launch_command_per_point(tmp_path, capsys):
  workdir = str(tmp_path / "sweep")
  base = ["rlvr-jax", "sweep", f"--config={TOY_SWEEP}", f"--workdir={workdir}"]
  assert cli.main([*base, "--config.emit=tpu_vm"]) == 2          # launch.zone is required
  assert "launch.zone" in capsys.readouterr().err
  assert cli.main([*base, "--config.emit=tpu_vm", "--config.launch.zone=us-central2-b",
                   "--config.launch.accelerator=v4-8", "--config.launch.extra_args=--spot",
                   "--config.launch.workdir_root=gs://bucket/toy"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 4
  names = set()
  for line, (n, seed) in zip(lines, [(8, 0), (8, 1), (32, 0), (32, 1)]):
    args = shlex.split(line)
    cut = args.index("--")
    head, inner = args[:cut], args[cut + 1:]
    assert head[:3] == ["bash", "launch/tpu_vm.sh", "--name"]
    assert head[4:] == ["--zone", "us-central2-b", "--accelerator", "v4-8", "--spot"]
    names.add(head[3])
    assert inner[:5] == ["rlvr-jax", "rl", "--config=configs/toy/rl.py",
                         f"--workdir=gs://bucket/toy/points/n={n}_seed={seed}",
                         "--config.batch_size=8"]
    assert inner[-2:] == [f"--config.data.n_train={n}", f"--config.seed={seed}"]
    assert "--config.eval.ks=(1, 2)" in inner
  assert names == {"sweep-n-8-seed-0", "sweep-n-8-seed-1", "sweep-n-32-seed-0",
                   "sweep-n-32-seed-1"}
  assert not os.path.exists(os.path.join(workdir, "points"))         # nothing ran
  assert cli.main([*base, "--config.emit=xpk", "--config.launch.cluster=c",
                   "--config.launch.zone=z", "--config.launch.accelerator=v5p-8"]) == 0
  first = capsys.readouterr().out.splitlines()[0]
  assert first.startswith("bash launch/xpk.sh --cluster c --zone z --tpu-type v5p-8 -- "
                          f"rlvr-jax rl --config=configs/toy/rl.py --workdir={workdir}/points/")
  assert cli.main([*base, "--config.emit=gpu"]) == 0
  assert capsys.readouterr().out.startswith("bash launch/gpu.sh -- rlvr-jax rl ")


def test_plan_names_zip_groups_and_overrides():
  grid = {"seed": (0, 1), "data.n_train": (8, 32), "data.n_pool": (16, 64),
          "data.label_noise": (0.0, 0.5)}
  points = sweep.make_plan(grid, {"steps": 3}, zip_groups=[("data.n_pool", "data.n_train")],
                           labels={"data.n_train": "n", "data.label_noise": "gamma"},
                           seed_field="seed")
  assert [p.name for p in points] == [
      "gamma=0.0_n_pool=16_n=8_seed=0", "gamma=0.0_n_pool=16_n=8_seed=1",
      "gamma=0.0_n_pool=64_n=32_seed=0", "gamma=0.0_n_pool=64_n=32_seed=1",
      "gamma=0.5_n_pool=16_n=8_seed=0", "gamma=0.5_n_pool=16_n=8_seed=1",
      "gamma=0.5_n_pool=64_n=32_seed=0", "gamma=0.5_n_pool=64_n=32_seed=1"]
  assert points[2].overrides == ("--config.steps=3", "--config.data.label_noise=0.0",
                                 "--config.data.n_pool=64", "--config.data.n_train=32",
                                 "--config.seed=0")
  with pytest.raises(sweep.SweepError, match="need one length"):
    sweep.make_plan({"a": (1, 2), "b": (1,)}, {}, zip_groups=[("a", "b")])
  with pytest.raises(sweep.SweepError, match="both in `grid` and in `overrides`"):
    sweep.make_plan({"seed": (0, 1)}, {"seed": 2})
  assert sweep.field_labels(["a.lr", "b.lr", "seed"]) == {"a.lr": "a.lr", "b.lr": "b.lr",
                                                           "seed": "seed"}


def test_failing_point_goes_on_and_preemption_stops(tmp_path, monkeypatch, capsys):
  """A runner stub in place of rl.loop.run: a failing point is reported and the sweep goes on
  (exit 2); a preempted point stops it (exit 75); the rerun skips finished points and resumes
  the preempted one."""
  calls, fail, preempt = [], set(), set()

  def runner(config, workdir):
    name = os.path.basename(workdir)
    calls.append((name, config.data.n_train, config.seed))
    if name in fail:
      raise ValueError("data.files: row 3 has no answer")
    if name in preempt:
      workdir_lib.write_status(workdir, "preempted", 1, 4)
      return EXIT_PREEMPTED
    workdir_lib.write_status(workdir, "completed", 4, 4)
    return 0

  monkeypatch.setattr(sweep, "_runner", lambda command: runner)
  base = ["rlvr-jax", "sweep", f"--config={TOY_SWEEP}"]
  fail.add("n=8_seed=0")
  assert cli.main([*base, f"--workdir={tmp_path / 's'}"]) == 2      # all tried, one failed
  assert calls == [("n=8_seed=0", 8, 0), ("n=8_seed=1", 8, 1), ("n=32_seed=0", 32, 0),
                   ("n=32_seed=1", 32, 1)]
  err = capsys.readouterr().err
  assert "sweep: point n=8_seed=0 failed: data.files: row 3 has no answer" in err
  with open(tmp_path / "s" / "sweep.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["status"] for r in rows] == ["not started", "completed", "completed", "completed"]

  calls.clear()
  fail.clear()
  preempt.add("n=8_seed=1")
  assert cli.main([*base, f"--workdir={tmp_path / 't'}"]) == EXIT_PREEMPTED
  assert [c[0] for c in calls] == ["n=8_seed=0", "n=8_seed=1"]     # stopped there
  assert "preempted" in capsys.readouterr().err
  calls.clear()
  preempt.clear()
  assert cli.main([*base, f"--workdir={tmp_path / 't'}"]) == 0
  assert [c[0] for c in calls] == ["n=8_seed=1", "n=32_seed=0", "n=32_seed=1"]


def test_minimal_config_and_seed_aggregation(tmp_path):
  """A sweep config needs only command, base_config and grid; seeds are averaged with min-max
  bars, points without a value left out."""
  from ml_collections import ConfigDict
  c = ConfigDict({"command": "rl", "base_config": "configs/toy/rl.py", "config_dir": ROOT,
                  "grid": {"model": {"size": ("toy-1m", "toy-7m")}, "seed": (0, 1)}})
  plan = sweep.plan_sweep(c, str(tmp_path))
  assert [p.name for p in plan.points] == ["size=toy-1m_seed=0", "size=toy-1m_seed=1",
                                           "size=toy-7m_seed=0", "size=toy-7m_seed=1"]
  assert plan.point_dir(plan.points[0]) == str(tmp_path / "points" / "size=toy-1m_seed=0")
  rows = [{"model.size": "toy-1m", "seed": 0, "gamma": 0.0, "t_sat": 10},
          {"model.size": "toy-1m", "seed": 1, "gamma": 0.0, "t_sat": 20},
          {"model.size": "toy-7m", "seed": 0, "gamma": 0.0, "t_sat": None},
          {"model.size": "toy-7m", "seed": 1, "gamma": 0.0, "t_sat": 40},
          {"model.size": "toy-1m", "seed": 0, "gamma": 0.5, "t_sat": 3}]
  series = sweep.aggregate(rows, "model.size", "t_sat", ["gamma", "model.size", "seed"], "seed",
                           ("toy-1m", "toy-7m"))
  assert series == {"gamma=0.0": [("toy-1m", 15.0, 10.0, 20.0, 2), ("toy-7m", 40.0, 40.0, 40.0, 1)],
                    "gamma=0.5": [("toy-1m", 3.0, 3.0, 3.0, 1)]}
  table = sweep.seed_table(rows[:4], ["model.size", "seed"], "seed", ["t_sat"])
  assert table == [{"model.size": "toy-1m", "seeds": 2, "t_sat": "15.000 [10.000, 20.000]"},
                   {"model.size": "toy-7m", "seeds": 2, "t_sat": "40.000 [40.000, 40.000]"}]


def test_help_lists_every_sweep_field_with_a_comment(capsys):
  assert cli.main(["rlvr-jax", "sweep", "--help"]) == 0
  rows = {}
  for line in capsys.readouterr().out.splitlines():
    if line.strip().startswith("--config."):
      flag, _, comment = line.strip().partition("  ")
      rows[flag.split("=", 1)[0][len("--config."):]] = comment.strip()
  keys = [k for k, _ in cli._flat_items(cli.load_config_module(TOY_SWEEP).get_config())]
  assert sorted(rows) == sorted(keys)
  assert not [k for k, comment in rows.items() if not comment]
  # the toy sweep spells out every optional field the sweep reads
  optional = {k for k in keys if k.split(".")[0] not in ("command", "base_config", "grid",
                                                         "overrides")}
  assert optional == set(sweep.DEFAULTS)
