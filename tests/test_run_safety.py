"""Run safety at the command line: relative paths, preemption (exit 75, status.json, a pipeline
that stops and later retrains a stale stage), the resume config check, the workdir lock, the
corrupt-checkpoint fallback, the health guard, `--help` and one-line errors for bad config files
and workdirs.

Every CLI run is a tiny CPT / SFT (toy-1m, 4 steps of 8 x 32 tokens, checkpoints at 2 and 4);
one finished CPT run (a module fixture, written with a relative --workdir) is copied by the tests
that change a run.
"""
import fcntl
import json
import logging
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

import rlvr_jax as rj
from rlvr_jax import cli
from rlvr_jax.run import guard as guard_lib, init as init_lib, paths, workdir as workdir_lib
from rlvr_jax.run.errors import (EXIT_PREEMPTED, EXIT_USER_ERROR, BlowUpError,
                                 CorruptCheckpointError, NonFiniteError)
from rlvr_jax.run import loop as run_loop
from rlvr_jax.train import checkpoints, loop as train_loop
from conftest import make_tiny_hf_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPT = os.path.join(ROOT, "configs", "toy", "cpt.py")
SFT = os.path.join(ROOT, "configs", "toy", "sft.py")
PIPELINE = os.path.join(ROOT, "configs", "toy", "pipeline.py")

# configs/toy/cpt.py scaled down to ~2 s a run once compiled (toy-1m, the default size).
TINY_CPT = {"steps": 4, "batch_size": 8, "seq_len": 32, "eval_every": 0, "checkpoint_every": 2,
            "log_every": 1, "progress_bar": False, "data.n_train": 64, "data.n_eval": 8}
# configs/toy/sft.py likewise (the default seq_len 176 keeps most toy problems).
TINY_SFT = {"steps": 2, "batch_size": 8, "eval_every": 0, "checkpoint_every": 0, "log_every": 1,
            "progress_bar": False, "data.n_train": 32, "data.n_eval": 8}


def overrides(base: dict, prefix: str = "", **changes) -> list[str]:
  """--config.PREFIXkey=value flags of `base` updated with `changes` (keys with '__' for '.')."""
  merged = {**base, **{k.replace("__", "."): v for k, v in changes.items()}}
  return [f"--config.{prefix}{k}={v}" for k, v in merged.items()]


def run_cli(command: str, config: str, workdir, *flags: str) -> int:
  return cli.main(["rlvr-jax", command, f"--config={config}", f"--workdir={workdir}", *flags])


def error_line(err: str, command: str = "cpt") -> str:
  """The one `rlvr-jax COMMAND: error: ...` line of stderr (asserting there is exactly one and
  no traceback)."""
  lines = [line for line in err.splitlines() if line.startswith("rlvr-jax")]
  assert len(lines) == 1, err
  assert "Traceback" not in err, err
  assert lines[0].startswith(f"rlvr-jax {command}: error: "), lines[0]
  return lines[0]


def read_json(path) -> dict:
  with open(path) as f:
    return json.load(f)


def copy_run(src, dst) -> str:
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
  return str(dst)


def tree_allclose(a, b) -> bool:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.allclose(np.asarray(x), np.asarray(y))
                                    for x, y in zip(la, lb))


def param_norm(params) -> float:
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                           for x in jax.tree.leaves(params))))


def file_bytes(workdir, *names) -> dict[str, bytes]:
  out = {}
  for name in names:
    with open(os.path.join(workdir, name), "rb") as f:
      out[name] = f.read()
  return out


@pytest.fixture(scope="module", autouse=True)
def _session_compile_cache():
  """cli.main points the compile cache at RLVR_JAX_COMPILE_CACHE (and sets its min compile
  time): keep the test session's cache, and its setting afterwards."""
  min_time = jax.config.jax_persistent_cache_min_compile_time_secs
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("RLVR_JAX_COMPILE_CACHE", jax.config.jax_compilation_cache_dir or "")
    yield
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_time)


@pytest.fixture(scope="module")
def cpt_run(tmp_path_factory):
  """A finished tiny CPT run (checkpoints 2 and 4) written with a *relative* --workdir from a
  temporary current directory: BASE/runs_rel/cpt."""
  base = tmp_path_factory.mktemp("rel")
  with pytest.MonkeyPatch.context() as mp:
    mp.chdir(base)
    rc = run_cli("cpt", CPT, "runs_rel/cpt", *overrides(TINY_CPT))
  assert rc == 0
  assert os.listdir(base) == ["runs_rel"] and os.listdir(base / "runs_rel") == ["cpt"]
  return str(base / "runs_rel" / "cpt")


# ---------------------------------------------------------------------------------- 1. paths
def test_relative_workdir_writes_under_the_current_directory(cpt_run):
  assert checkpoints.run_steps(cpt_run) == [2, 4]
  for step in (2, 4):
    assert os.path.isdir(os.path.join(cpt_run, "checkpoints", str(step), "state"))
  assert read_json(os.path.join(cpt_run, "status.json"))["status"] == "completed"
  assert read_json(os.path.join(cpt_run, "config.json"))["steps"] == 4
  metrics = [json.loads(line) for line in open(os.path.join(cpt_run, "metrics.jsonl"))]
  assert [r["step"] for r in metrics if "loss" in r] == [1, 2, 3, 4]
  assert not os.path.exists(os.path.join(ROOT, "runs_rel"))


def test_relative_init_checkpoint_and_parent_workdir(cpt_run, monkeypatch):
  """From BASE/sub: --workdir=../runs_rel/sft and init.from_checkpoint=../runs_rel/cpt."""
  base = os.path.dirname(os.path.dirname(cpt_run))
  os.makedirs(os.path.join(base, "sub"))
  monkeypatch.chdir(os.path.join(base, "sub"))
  rc = run_cli("sft", SFT, "../runs_rel/sft", *overrides(TINY_SFT),
               "--config.init.from_checkpoint=../runs_rel/cpt")
  assert rc == 0
  sft = os.path.join(base, "runs_rel", "sft")
  assert checkpoints.run_steps(sft) == [2]
  assert os.listdir(os.path.join(base, "sub")) == []
  assert read_json(os.path.join(sft, "config.json"))["init"]["from_checkpoint"] == cpt_run
  init = read_json(os.path.join(sft, "init.json"))
  assert init["from"] == cpt_run and init["step"] == 4
  assert init["run_id"] == read_json(os.path.join(cpt_run, "status.json"))["run_id"]
  assert read_json(os.path.join(sft, "status.json"))["status"] == "completed"


def test_load_params_with_a_relative_path(cpt_run, monkeypatch):
  monkeypatch.chdir(os.path.dirname(os.path.dirname(cpt_run)))
  rel = rj.load_params("runs_rel/cpt")
  assert tree_allclose(rel, rj.load_params(cpt_run, 4))
  assert not tree_allclose(rel, rj.load_params("runs_rel/cpt", 2))
  monkeypatch.chdir(os.path.join(os.path.dirname(cpt_run), "cpt", "checkpoints"))
  assert tree_allclose(rj.load_params("..", 2), rj.load_params(cpt_run, 2))


def test_resolve_config_paths(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "tok.model").write_text("x")
  c = ConfigDict({
      "steps": 3,
      "name": "not/a/path/field",
      "init": {"from_checkpoint": "runs/cpt:20", "from_hf": "Qwen/Qwen2.5-1.5B"},
      "data": {"files": "a.jsonl, train=sub/b.parquet,gs://bucket/c.jsonl,,"
                        "held=gs://bucket/d.jsonl",
               "tokenizer": "tok.model", "data_dir": "~/tfds"},
      "eval": {"run": "../runs/x", "files": ""},
      "src": "gs://bucket/run:7",
      "nested": {"deeper": {"tokenizer": "no-such-tokenizer-name"}},
  })
  paths.resolve_config_paths(c)
  t = str(tmp_path)
  assert c.init.from_checkpoint == f"{t}/runs/cpt:20"
  assert c.init.from_hf == "Qwen/Qwen2.5-1.5B"               # a hub id, not a local path
  assert c.data.files == (f"{t}/a.jsonl,train={t}/sub/b.parquet,gs://bucket/c.jsonl,"
                          f"held=gs://bucket/d.jsonl")
  assert c.data.tokenizer == f"{t}/tok.model"                # exists here: resolved
  assert c.data.data_dir == os.path.expanduser("~/tfds")
  assert c.eval.run == os.path.join(os.path.dirname(t), "runs", "x")
  assert c.eval.files == ""
  assert c.src == "gs://bucket/run:7"
  assert c.nested.deeper.tokenizer == "no-such-tokenizer-name"
  assert c.name == "not/a/path/field" and c.steps == 3
  paths.resolve_config_paths(c)                               # idempotent
  assert c.init.from_checkpoint == f"{t}/runs/cpt:20"
  assert c.data.files.startswith(f"{t}/a.jsonl,train={t}/sub/b.parquet,")
  # a locked ConfigDict (as the CLI hands it over) is changed in place too
  locked = ConfigDict({"init": {"from_checkpoint": "x:3"}})
  locked.lock()
  paths.resolve_config_paths(locked)
  assert locked.init.from_checkpoint == f"{t}/x:3"


def test_resolve_file_list_keeps_tfds_specs(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.resolve_file_list("tfds:gsm8k") == "tfds:gsm8k"


# ---------------------------------------------------------------------------------- 2. preemption
def stop_after(monkeypatch, n: int) -> list:
  """The loops' stop flag reads True from its (n+1)-th check on: n steps run, then a
  preemption."""
  calls = []
  monkeypatch.setattr(run_loop, "any_process", lambda flag: calls.append(flag) or len(calls) > n)
  return calls


def test_preempted_cpt_exits_75_and_nothing_builds_on_it(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  original = run_loop.any_process
  stop_after(monkeypatch, 2)
  assert run_cli("cpt", CPT, "cpt", *overrides(TINY_CPT)) == EXIT_PREEMPTED == 75
  monkeypatch.setattr(run_loop, "any_process", original)
  cpt = str(tmp_path / "cpt")
  status = read_json(os.path.join(cpt, "status.json"))
  assert (status["status"], status["step"], status["steps"]) == ("preempted", 2, 4)
  assert checkpoints.run_steps(cpt) == [2]
  capsys.readouterr()

  # an SFT built on the unfinished run (no :STEP) is refused, before any SFT checkpoint
  rc = run_cli("sft", SFT, "sft", *overrides(TINY_SFT), "--config.init.from_checkpoint=cpt")
  assert rc == EXIT_USER_ERROR
  line = error_line(capsys.readouterr().err, "sft")
  assert f"init.from_checkpoint={cpt} has not finished" in line
  assert "'preempted' at step 2 of 4" in line and f"({cpt}:2)" in line
  assert checkpoints.run_steps(tmp_path / "sft") == []

  # naming the step on purpose is allowed (relative PATH:STEP)
  rc = run_cli("sft", SFT, "sft", *overrides(TINY_SFT), "--config.init.from_checkpoint=cpt:2")
  assert rc == 0
  assert checkpoints.run_steps(tmp_path / "sft") == [2]
  init = read_json(tmp_path / "sft" / "init.json")
  assert (init["from"], init["step"]) == (cpt, 2)
  assert read_json(tmp_path / "sft" / "status.json")["status"] == "completed"


def pipeline_argv(workdir, cpt_steps: int, *extra: str) -> list[str]:
  return ["rlvr-jax", "pipeline", f"--config={PIPELINE}", f"--workdir={workdir}",
          "--config.stages=cpt,sft", *overrides(TINY_CPT, "cpt.", steps=cpt_steps),
          *overrides(TINY_SFT, "sft."), *extra]


def test_pipeline_stops_at_a_preempted_stage_and_retrains_a_stale_one(tmp_path, monkeypatch,
                                                                      capsys):
  wd = tmp_path / "pipe"
  original = run_loop.any_process
  stop_after(monkeypatch, 2)
  assert cli.main(pipeline_argv(wd, 4)) == EXIT_PREEMPTED
  monkeypatch.setattr(run_loop, "any_process", original)
  out = capsys.readouterr().out
  assert "pipeline: stage cpt was preempted" in out
  assert not os.path.exists(wd / "sft")
  assert read_json(wd / "cpt" / "status.json")["status"] == "preempted"

  assert cli.main(pipeline_argv(wd, 4)) == 0          # rerun: cpt resumes, sft trains on it
  assert "stale" not in capsys.readouterr().out
  assert read_json(wd / "cpt" / "status.json")["step"] == 4
  assert read_json(wd / "sft" / "init.json")["step"] == 4
  assert checkpoints.run_steps(wd / "sft") == [2]

  # cpt continued to step 6: the sft built on step 4 is moved aside and trained again
  assert cli.main(pipeline_argv(wd, 6, "--config.resume_overrides=True")) == 0
  out = capsys.readouterr().out
  assert (f"pipeline: stage sft is stale (it was built on step 4 of {wd}/cpt, which is now at "
          f"step 6); moved it to {wd}/sft.stale and training it again") in out
  assert sorted(n for n in os.listdir(wd) if not n.startswith(".")) == ["cpt", "sft", "sft.stale"]
  assert read_json(wd / "sft.stale" / "init.json")["step"] == 4
  assert checkpoints.run_steps(wd / "sft.stale") == [2]
  assert read_json(wd / "sft" / "init.json")["step"] == 6
  assert checkpoints.run_steps(wd / "sft") == [2]
  assert read_json(wd / "sft" / "status.json")["status"] == "completed"
  assert read_json(wd / "cpt" / "status.json")["step"] == 6


# ---------------------------------------------------------------------------------- 3. resume
def test_resume_config_check(cpt_run, tmp_path, capsys):
  d = copy_run(cpt_run, tmp_path / "cpt")
  names = ("config.json", "metrics.jsonl", "status.json")
  before = file_bytes(d, *names)

  rc = run_cli("cpt", CPT, d, *overrides(TINY_CPT), "--config.model.num_layers=2")
  assert rc == EXIT_USER_ERROR
  line = error_line(capsys.readouterr().err)
  assert "num_layers" in line and "architecture" in line, line
  assert file_bytes(d, *names) == before

  rc = run_cli("cpt", CPT, d, *overrides(TINY_CPT), "--config.model.size=toy-7m")
  assert rc == EXIT_USER_ERROR
  line = error_line(capsys.readouterr().err)
  assert "holds a run with another architecture" in line and "hidden_size 128 -> 256" in line
  assert file_bytes(d, *names) == before

  rc = run_cli("cpt", CPT, d, *overrides(TINY_CPT, steps=6, optim__lr=0.001))
  assert rc == EXIT_USER_ERROR
  line = error_line(capsys.readouterr().err)
  assert "at step 4" in line and "--config.resume_overrides=True" in line, line
  assert "optim.lr 0.003 -> 0.001" in line and "steps 4 -> 6" in line, line
  assert file_bytes(d, *names) == before
  assert checkpoints.run_steps(d) == [2, 4]

  rc = run_cli("cpt", CPT, d, *overrides(TINY_CPT, steps=6, optim__lr=0.001),
               "--config.resume_overrides=True")
  assert rc == 0
  doc = read_json(os.path.join(d, "config.json"))
  assert doc["resume_history"] == [{"step": 4, "changed": {"optim.lr": [0.003, 0.001],
                                                           "steps": [4, 6]}}]
  assert doc["optim"]["lr"] == 0.001 and doc["steps"] == 6
  assert read_json(os.path.join(d, "config.prev-0.json"))["optim"]["lr"] == 0.003
  assert checkpoints.run_steps(d) == [4, 6]
  status = read_json(os.path.join(d, "status.json"))
  assert (status["status"], status["step"]) == ("completed", 6)


# ---------------------------------------------------------------------------------- 4. lock
HOLD_LOCK = """
import sys
from rlvr_jax.run import workdir
with workdir.locked(sys.argv[1]):
  print("locked", flush=True)
  sys.stdin.readline()
"""


def test_lock_held_by_another_process(cpt_run, tmp_path, capsys):
  d = copy_run(cpt_run, tmp_path / "cpt")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, d], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
  try:
    assert proc.stdout.readline().strip() == "locked"
    status = file_bytes(d, "status.json")
    rc = run_cli("cpt", CPT, d, *overrides(TINY_CPT))
    assert rc == EXIT_USER_ERROR
    line = error_line(capsys.readouterr().err)
    assert f"{d} is in use by pid {proc.pid} on host {socket.gethostname()}" in line, line
    assert file_bytes(d, "status.json") == status
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(timeout=60) == 0
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  rc = run_cli("cpt", CPT, d, *overrides(TINY_CPT))       # the holder is gone: it runs
  assert rc == 0
  assert "cpt: completed" in capsys.readouterr().out


def test_lock_is_reentrant_within_a_process(cpt_run, tmp_path):
  d = copy_run(cpt_run, tmp_path / "cpt")
  lock = os.path.join(d, workdir_lib.LOCK_FILE)

  def held_elsewhere() -> bool:
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return True
    finally:
      os.close(fd)
    return False

  assert not held_elsewhere()
  with workdir_lib.locked(d):
    assert read_json(lock)["pid"] == os.getpid()
    with workdir_lib.locked(d):
      assert held_elsewhere()
    assert held_elsewhere()                                # the inner exit keeps the lock
    assert run_cli("cpt", CPT, d, *overrides(TINY_CPT)) == 0
    assert held_elsewhere()
  assert not held_elsewhere()
  assert os.path.getsize(lock) == 0                        # the holder's record is cleared


# ---------------------------------------------------------------------------------- 5. corrupt
def corrupt(state_dir: str, how: str) -> None:
  if how == "delete":
    shutil.rmtree(state_dir)
    return
  files = [os.path.join(r, f) for r, _, fs in os.walk(state_dir) for f in fs]
  assert files
  for path in files:
    size = os.path.getsize(path)
    with open(path, "wb") as f:
      f.write(b"\0" * size if how == "zero" else b"")


@pytest.mark.parametrize("how,steps", [("zero", 6), ("delete", 4)])
def test_corrupt_latest_checkpoint_falls_back(cpt_run, tmp_path, caplog, capsys, how, steps):
  d = copy_run(cpt_run, tmp_path / "cpt")
  params2 = rj.load_params(d, 2)
  corrupt(os.path.join(d, "checkpoints", "4", "state"), how)

  with caplog.at_level(logging.WARNING):
    params = rj.load_params(d)
  assert tree_allclose(params, params2)
  warned = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
  assert len(warned) == 1 and "checkpoint step 4 of" in warned[0] and "using step 2" in warned[0]
  with pytest.raises(CorruptCheckpointError, match="checkpoint step 4 of .* cannot be read"):
    rj.load_params(d, 4)                                   # a named step does not fall back
  caplog.clear()

  # the resume falls back to step 2 and sets step 4 aside; with steps=4 (the same command) it
  # retrains step 4 into a fresh checkpoints/4
  flags = overrides(TINY_CPT, steps=steps)
  if steps != 4:
    flags.append("--config.resume_overrides=True")
  with caplog.at_level(logging.WARNING):
    assert run_cli("cpt", CPT, d, *flags) == 0
  text = caplog.text + capsys.readouterr().err
  assert "step 4" in text and "corrupt" in text and "resuming from step 2" in text, text
  assert os.path.isdir(os.path.join(d, "checkpoints", "4.corrupt"))
  assert checkpoints.run_steps(d) == ([4, 6] if steps == 6 else [2, 4])
  final = rj.load_params(d, steps)
  assert np.isfinite(param_norm(final))
  assert not tree_allclose(final, params2)
  status = read_json(os.path.join(d, "status.json"))
  assert (status["status"], status["step"]) == ("completed", steps)
  resumed = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))][-(steps - 2):]
  assert [r["step"] for r in resumed] == list(range(3, steps + 1))


def test_every_checkpoint_corrupt_is_one_line(cpt_run, tmp_path, capsys):
  d = copy_run(cpt_run, tmp_path / "cpt")
  for step in (2, 4):
    corrupt(os.path.join(d, "checkpoints", str(step), "state"), "zero")
  with pytest.raises(CorruptCheckpointError, match="no checkpoint of .* can be read .*step 4"):
    rj.load_params(d)
  assert run_cli("cpt", CPT, d, *overrides(TINY_CPT)) == EXIT_USER_ERROR
  line = error_line(capsys.readouterr().err)
  assert "no checkpoint in" in line and "the newest, step 4, fails" in line, line
  assert sorted(os.listdir(os.path.join(d, "checkpoints"))) == ["2", "4"]   # nothing moved
  assert read_json(os.path.join(d, "status.json"))["status"] == "failed"


# ---------------------------------------------------------------------------------- 6. guard
def assert_checkpoints_healthy(workdir) -> None:
  for step in checkpoints.run_steps(workdir):
    norm = param_norm(rj.load_params(str(workdir), step))
    assert np.isfinite(norm) and 1.0 < norm < 1e3, (step, norm)


def test_blow_up_on_a_fresh_run_saves_nothing(tmp_path, capsys):
  d = tmp_path / "blow"
  rc = run_cli("cpt", CPT, d, *overrides(TINY_CPT, steps=6, optim__lr=1e6))
  assert rc == EXIT_USER_ERROR
  line = error_line(capsys.readouterr().err)
  assert "guard.max_update_ratio=1.0" in line, line
  assert "before any checkpoint was written" in line, line
  assert checkpoints.run_steps(d) == []
  assert read_json(d / "status.json")["status"] == "failed"
  metrics = [json.loads(line) for line in open(d / "metrics.jsonl")]
  assert metrics[-1]["update_ratio"] > 1.0




def test_update_ratio_is_relative_to_the_params_before_the_update():
  import optax
  from rlvr_jax.train import optim, steps
  params = {"w": np.ones(4, np.float32)}
  opt = optim.Optimizer(optax.sgd(1.0), lambda count: 1.0)
  grads = {"w": np.full(4, -100.0, np.float32)}      # Δθ = 100 θ
  new, _, stats = steps.apply_update_if_finite(params, opt.tx.init(params), grads,
                                               np.float32(1.0), opt)
  np.testing.assert_allclose(new["w"], 101.0)
  assert float(stats["update_ratio"]) == pytest.approx(100.0, rel=1e-5)


def test_blow_up_on_resume_keeps_the_healthy_checkpoints(cpt_run, tmp_path, capsys):
  d = copy_run(cpt_run, tmp_path / "cpt")
  params4 = rj.load_params(d, 4)
  rc = run_cli("cpt", CPT, d, *overrides(TINY_CPT, steps=6, optim__lr=1e6),
               "--config.resume_overrides=True")
  assert rc == EXIT_USER_ERROR
  line = error_line(capsys.readouterr().err)
  assert "step 5: the update moved the parameters by" in line, line
  assert "max_update_ratio" in line, line
  assert f"the last healthy checkpoint is step 4 in {d}/checkpoints" in line, line
  assert checkpoints.run_steps(d) == [2, 4]
  assert tree_allclose(rj.load_params(d), params4)
  assert_checkpoints_healthy(d)
  status = read_json(os.path.join(d, "status.json"))
  assert (status["status"], status["step"]) == ("failed", 4)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
  """An HF directory of a tiny random model with the built-in toy tokenizer (as in
  tests/test_rl_loop.py): a quick RL starting point."""
  return make_tiny_hf_dir(str(tmp_path_factory.mktemp('hf') / "hf"))


TINY_RL = {"steps": 2, "batch_size": 8, "eval_every": 0, "eval_at_end": False,
           "checkpoint_every": 1, "progress_bar": False, "rl.group_size": 2,
           "rl.max_new_tokens": 6, "rl.minibatches": 2, "rl.dynamic_sampling": "none",
           "data.n_pool": 16, "data.max_prompt_len": 96}


def test_blow_up_in_rl(tiny_hf, tmp_path, capsys):
  d = tmp_path / "rl"
  rc = run_cli("rl", os.path.join(ROOT, "configs", "toy", "rl.py"), d,
               *overrides(TINY_RL, optim__lr=1e6), f"--config.init.from_hf={tiny_hf}")
  assert rc == EXIT_USER_ERROR
  line = error_line(capsys.readouterr().err, "rl")
  assert "step 1: the update moved the parameters by" in line, line
  assert "max_update_ratio" in line and "before any checkpoint was written" in line, line
  assert checkpoints.run_steps(d) == []
  assert read_json(d / "status.json")["status"] == "failed"


def make_guard(**spec) -> guard_lib.HealthGuard:
  return guard_lib.HealthGuard(guard_lib.GuardSpec(**spec), checkpoints_dir="/run/checkpoints",
                               use_loss=True)


def feed(g: guard_lib.HealthGuard, metrics: list[dict], first: int = 1) -> None:
  for i, m in enumerate(metrics):
    g.check(first + i, m)


def test_guard_loss_spike_after_a_stable_window():
  g = make_guard(window=5, loss_spike_nats=2.0)
  feed(g, [{"loss": v, "update_ratio": 0.05} for v in (3.0, 3.1, 2.9, 3.0, 3.05)])
  g.check(6, {"loss": 4.9, "update_ratio": 0.05})                # +1.9 nats: fine
  # the window slides: now 3.1, 2.9, 3.0, 3.05, 4.9 (median 3.05)
  with pytest.raises(BlowUpError, match=r"step 7: loss 5\.2 is 2\.15 nats above the median 3\.05 "
                     r"of the last 5 steps \(guard.loss_spike_nats=2.0\)") as e:
    g.check(7, {"loss": 5.2, "update_ratio": 0.05})
  assert "before any checkpoint was written (/run/checkpoints holds none" in str(e.value)
  # before the window is full a high loss is no spike
  g = make_guard(window=5)
  feed(g, [{"loss": v} for v in (3.0, 3.0, 3.0, 9.0)])


def test_guard_smooth_decrease_and_noise_do_not_trip():
  g = make_guard(window=5)
  feed(g, [{"loss": 8.0 - 0.15 * i, "update_ratio": 0.9} for i in range(40)])
  rng = np.random.default_rng(0)
  feed(g, [{"loss": 2.0 + float(rng.normal(0, 0.3))} for _ in range(40)], first=41)
  g = make_guard(window=20)
  feed(g, [{"loss": 10.0 * 0.9 ** i} for i in range(60)])       # fast early drop


def test_guard_update_ratio():
  g = make_guard(max_update_ratio=1.0)
  g.check(1, {"loss": 5.0, "update_ratio": 1.0})
  g.saved(1)
  with pytest.raises(BlowUpError, match=r"step 2: the update moved the parameters by 1\.5x "
                     r"their norm \(guard.max_update_ratio=1.0; param_norm=20\)") as e:
    g.check(2, {"loss": 5.0, "update_ratio": 1.5, "param_norm": 20.0})
  assert "the last healthy checkpoint is step 1 in /run/checkpoints" in str(e.value)
  assert "resume_overrides=True" in str(e.value)
  with pytest.raises(BlowUpError, match="nan"):
    make_guard().check(1, {"loss": 5.0, "update_ratio": float("nan")})
  with pytest.raises(BlowUpError):
    make_guard(max_update_ratio=0.1).check(1, {"update_ratio": 0.2})


def test_guard_nonfinite_in_a_row():
  g = make_guard(max_nonfinite=3)
  feed(g, [{"skipped": 1.0}, {"skipped": 1.0}, {"loss": 3.0, "update_ratio": 0.1},
           {"skipped": 1.0}, {"skipped": 1.0}])                  # reset by the finite step 3
  assert (g.bad_in_row, g.skipped_total) == (2, 4)
  g.check(5, {"skipped": 1.0})                                   # a step checked twice counts once
  assert g.bad_in_row == 2
  with pytest.raises(NonFiniteError, match=r"3 non-finite updates in a row \(steps with a "
                     r"skipped update, the last at step 6\)"):
    g.check(6, {"skipped": 1.0, "update_ratio": 99.0})
  # a skipped step is not judged by its (meaningless) ratio or loss
  make_guard(max_nonfinite=5).check(1, {"skipped": 1.0, "update_ratio": 1e9, "loss": 1e9})


def test_guard_zero_disables_each_check():
  g = make_guard(max_update_ratio=0.0, loss_spike_nats=0.0, window=2, max_nonfinite=0)
  feed(g, [{"loss": 1.0, "update_ratio": 1e9}, {"loss": 1.0}, {"loss": 100.0}])
  feed(g, [{"skipped": 1.0}] * 50, first=4)
  assert g.skipped_total == 50
  g = make_guard(max_update_ratio=0.0, window=2)                  # the others stay on
  feed(g, [{"loss": 1.0, "update_ratio": 50.0}, {"loss": 1.0}])
  with pytest.raises(BlowUpError, match="loss_spike_nats"):
    g.check(3, {"loss": 9.0})
  g = guard_lib.HealthGuard(guard_lib.GuardSpec(window=2), checkpoints_dir="c", use_loss=False)
  feed(g, [{"loss": 1.0}, {"loss": 1.0}, {"loss": 100.0}])       # RL: no loss check


def test_guard_spec_from_config():
  c = ConfigDict({"max_nonfinite_steps": 4, "guard": guard_lib.config_fields()})
  assert guard_lib.GuardSpec.from_config(c) == guard_lib.GuardSpec(max_nonfinite=4)
  c.guard.max_update_ratio = 0.5
  c.guard.window = 7
  spec = guard_lib.GuardSpec.from_config(c)
  assert (spec.max_update_ratio, spec.window, spec.loss_spike_nats, spec.max_nonfinite) == \
      (0.5, 7, 2.0, 4)
  assert guard_lib.GuardSpec.from_config(ConfigDict({})) == guard_lib.GuardSpec()


# ---------------------------------------------------------------------------------- 7. --help
def test_help_lists_every_field_with_default_and_comment(capsys):
  assert cli.main(["rlvr-jax", "sft", "--help"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("usage: rlvr-jax sft --config=PATH --workdir=DIR")
  rows = {}
  for line in out.splitlines():
    if line.strip().startswith("--config."):
      flag, _, comment = line.strip().partition("  ")
      rows[flag] = comment.strip()
  config = cli.load_config_module(SFT).get_config()
  keys = [k for k, _ in cli._flat_items(config)]
  assert len(rows) == len(keys)
  by_key = {flag.split("=", 1)[0][len("--config."):]: (flag, c) for flag, c in rows.items()}
  assert sorted(by_key) == sorted(keys)
  missing = [k for k, (_, comment) in by_key.items() if not comment]
  assert not missing, missing                               # every field has its comment
  assert by_key["optim.lr"] == ("--config.optim.lr=0.005", "peak learning rate (2e-3: "
                                "answer-token accuracy 0.35 vs 0.53 at 150 steps)")
  assert by_key["guard.max_update_ratio"][0] == "--config.guard.max_update_ratio=1.0"
  assert by_key["guard.max_update_ratio"][1].startswith("stop when one update moves the params")
  assert by_key["steps"] == ("--config.steps=200", "optimizer updates")
  assert by_key["seq_len"][0] == "--config.seq_len=176"
  assert by_key["data.thinking"] == ("--config.data.thinking=True",
                                     "train on the trace + answer (False: answer only)")
  assert by_key["model.size"] == ("--config.model.size='toy-1m'",
                                  "named size (rlvr_jax/model/sizes.py)")   # from cpt.py
  assert by_key["model.num_layers"] == ("--config.model.num_layers=None", "None = the size's value")


# ---------------------------------------------------------------------------------- 8./9. errors
@pytest.mark.parametrize("source,expected", [
    ("from ml_collections import ConfigDict\n\n\ndef get_config(:\n  return ConfigDict()\n",
     ":4: syntax error in the config file"),
    ("X = 1\n", "defines no get_config()"),
    ("raise RuntimeError('boom')\n", "cannot load config file"),
    (None, "not found"),
])
def test_config_file_errors_are_one_line(tmp_path, capsys, source, expected):
  path = tmp_path / "bad_config.py"
  if source is not None:
    path.write_text(source)
  rc = run_cli("cpt", str(path), tmp_path / "run", *overrides(TINY_CPT))
  assert rc == EXIT_USER_ERROR
  line = error_line(capsys.readouterr().err)
  assert str(path) in line and expected in line, line
  if source and "syntax" in expected:
    assert f"{path}:4:" in line
  assert not os.path.exists(tmp_path / "run")
  if source is None:
    return
  # --help with the same file fails the same way
  assert cli.main(["rlvr-jax", "cpt", f"--config={path}", "--help"]) == EXIT_USER_ERROR
  assert expected in error_line(capsys.readouterr().err)


def test_workdir_under_a_regular_file_is_one_line(tmp_path, capsys):
  (tmp_path / "afile").write_text("not a directory")
  rc = run_cli("cpt", CPT, tmp_path / "afile" / "run", *overrides(TINY_CPT))
  assert rc == EXIT_USER_ERROR
  line = error_line(capsys.readouterr().err)
  assert "Not a directory" in line and str(tmp_path / "afile") in line, line
  assert (tmp_path / "afile").read_text() == "not a directory"


# ---------------------------------------------------------------------------------- audit cases
def test_eval_falls_back_past_an_unreadable_latest_checkpoint(cpt_run, tmp_path, capsys):
  d = copy_run(cpt_run, tmp_path / "cpt")
  corrupt(os.path.join(d, "checkpoints", "4", "state"), "zero")
  out = tmp_path / "eval"
  rc = cli.main(["rlvr-jax", "eval", f"--config={ROOT}/configs/toy/eval.py", f"--workdir={out}",
                 f"--config.init.from_checkpoint={d}", "--config.eval.n=2", "--config.eval.k=1",
                 "--config.eval.ks=(1,)", "--config.eval.max_new_tokens=4",
                 "--config.eval.greedy=False", "--config.eval.batch_size=8",
                 "--config.eval.splits=eval"])
  assert rc == 0, capsys.readouterr().err
  assert read_json(out / "eval_metrics.json")["step"] == 2        # the newest readable step


@pytest.mark.parametrize("case", ["raising_get_config", "workdir_is_a_file", "bad_step",
                                  "missing_hf", "both_inits"])
def test_more_user_errors_are_one_line(case, cpt_run, tmp_path, capsys):
  config, flags, workdir = CPT, overrides(TINY_CPT), tmp_path / "w"
  expected = {"raising_get_config": "get_config() failed: RuntimeError: boom",
              "workdir_is_a_file": "is a file, not a directory",
              "bad_step": "the step after ':' must be a checkpoint step number",
              "missing_hf": "init.from_hf=",
              "both_inits": "set only one of init.from_hf"}[case]
  if case == "raising_get_config":
    config = str(tmp_path / "raising.py")
    with open(config, "w") as f:
      f.write("def get_config():\n  raise RuntimeError('boom')\n")
  elif case == "workdir_is_a_file":
    workdir.write_text("not a directory")
  elif case == "bad_step":
    flags.append(f"--config.init.from_checkpoint={cpt_run}:abc")
  elif case == "missing_hf":
    flags.append(f"--config.init.from_hf={tmp_path / 'no_such_hf'}")
  else:
    flags += [f"--config.init.from_hf={tmp_path}", f"--config.init.from_checkpoint={cpt_run}"]
  assert run_cli("cpt", config, workdir, *flags) == EXIT_USER_ERROR
  line = error_line(capsys.readouterr().err)
  assert expected in line, line


def test_resolve_file_list_makes_paper_set_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.resolve_file_list("math500=paper:math500:sets/m,paper:aime24:gs://b/a") == (
      f"math500=paper:math500:{tmp_path}/sets/m,paper:aime24:gs://b/a")


def test_a_checkpoint_that_does_not_fit_the_run_is_not_set_aside_as_corrupt(cpt_run, tmp_path,
                                                                            monkeypatch):
  from rlvr_jax.train import checkpoints as ckpt_lib
  d = copy_run(cpt_run, tmp_path / "cpt")
  ckpts = ckpt_lib.RunCheckpoints(d, keep=2)

  def mismatch(step, target, data_iter=None):
    raise ckpt_lib.CheckpointMismatchError(f"checkpoint {step} has no data-iterator state")
  monkeypatch.setattr(ckpts, "restore", mismatch)
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match="no data-iterator state"):
    ckpts.restore_latest(None)
  ckpts.close()
  assert sorted(os.listdir(os.path.join(d, "checkpoints"))) == ["2", "4"]   # nothing moved


def test_a_resumed_run_starts_from_the_step_it_first_started_from(cpt_run, tmp_path):
  """The source run moved on (step 4 exists) after this run started from its step 2: a resume
  loads step 2 again (the RL KL reference stays put) and does not rewrite init.json."""
  run = tmp_path / "sft"
  run.mkdir()
  workdir_lib.record_init(str(run), cpt_run, 2)
  config = ConfigDict({"init": {"from_hf": "", "from_checkpoint": cpt_run}})
  cfg = checkpoints.read_model_config(cpt_run)
  params = init_lib.load_params(config, cfg, None, str(run))
  assert tree_allclose(params, rj.load_params(cpt_run, 2))
  assert workdir_lib.read_init(str(run))["step"] == 2
  fresh = tmp_path / "fresh"
  fresh.mkdir()
  init_lib.load_params(config, cfg, None, str(fresh))
  assert workdir_lib.read_init(str(fresh))["step"] == 4
  assert workdir_lib.read_init(str(fresh))["explicit"] is False


def test_a_stage_built_on_a_named_step_is_not_stale_when_its_source_moves_on(tmp_path):
  src, run = str(tmp_path / "src"), str(tmp_path / "run")
  os.makedirs(src)
  workdir_lib.write_status(src, "completed", 2, 2)
  workdir_lib.record_init(run, src, 2, explicit=True)
  workdir_lib.write_status(src, "completed", 4, 4)
  assert workdir_lib.built_on_stale(run, src) is None
  workdir_lib.record_init(run, src, 2)
  assert "step 2" in workdir_lib.built_on_stale(run, src)


def test_a_rerun_of_a_finished_run_that_fails_early_leaves_it_finished(cpt_run, tmp_path, capsys,
                                                                     monkeypatch):
  d = copy_run(cpt_run, tmp_path / "cpt")
  assert read_json(os.path.join(d, "status.json"))["status"] == "completed"

  def broken(*args, **kwargs):
    raise ValueError("a data file went missing")
  monkeypatch.setattr(train_loop, "_train", broken)
  assert run_cli("cpt", CPT, d, *overrides(TINY_CPT)) == EXIT_USER_ERROR
  assert "went missing" in error_line(capsys.readouterr().err)
  status = read_json(os.path.join(d, "status.json"))
  assert status["status"] == "completed" and status["step"] == 4
  # a run that had not finished is marked failed
  workdir_lib.write_status(d, "preempted", 4, 8)
  assert run_cli("cpt", CPT, d, *overrides(TINY_CPT)) == EXIT_USER_ERROR
  assert read_json(os.path.join(d, "status.json"))["status"] == "failed"
