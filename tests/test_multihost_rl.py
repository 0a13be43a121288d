"""The full RL loop on 2 processes (jax.distributed, 2 CPU devices each) equals the 1-process
run on the same 4-device global batch, and a 2-process run checkpointed and resumed equals an
uninterrupted one.

What is compared is deterministic (the brief: never compare chaotic trajectories):
- step 1 from the same initial parameters: the rollouts are sampled from identical params with
  identical keys on identical data shards, so every sampling metric is exactly equal; the
  update then differs only by the order of the cross-device gradient sums (f32 rounding), so
  its metrics agree to rtol 1e-5 and each parameter to 2 lr (Adam's first step moves every
  weight by +-lr, whatever the size of its gradient, so a gradient that is rounding noise can
  flip sign: 2 lr is the f32 bound, not a tuned number);
- resume: the same processes and program on the same checkpoint give bitwise the same steps.
"""
import json
import os
import shutil

import jax
import numpy as np

import rlvr_jax as rj
from conftest import free_port, run_processes
from test_rl_loop import tiny_config

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLING_KEYS = ("reward/mean", "reward/true_mean", "response/length_mean",
                 "reward/zero_var_frac")
UPDATE_KEYS = ("loss", "pg_loss", "grad_norm", "policy/kl", "policy/entropy", "param_norm")


def run(nproc: int, init_dir: str, workdir, steps: int, *extra: str) -> None:
  port = free_port()
  run_processes(os.path.join(HERE, "multihost_rl_worker.py"),
                [[i, nproc, port, init_dir, workdir, steps, *extra] for i in range(nproc)],
                env={"RLVR_JAX_COMPILE_CACHE": ""}, cwd=os.path.dirname(HERE))


def records(workdir) -> dict[int, dict]:
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      out.setdefault(r["step"], {}).update(r)
  return out


def test_two_process_rl_loop_equals_one_process_and_resumes_exactly(init_dir, tmp_path):
  lr = float(tiny_config(init_dir).optim.lr)
  one, two = tmp_path / "one", tmp_path / "two"
  run(1, init_dir, one, 1)
  run(2, init_dir, two, 1)
  a, b = records(one)[1], records(two)[1]
  for k in SAMPLING_KEYS:
    assert a[k] == b[k], (k, a[k], b[k])
  for k in UPDATE_KEYS:
    np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-7, err_msg=k)
  p1, p2 = rj.load_params(str(one), 1), rj.load_params(str(two), 1)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(y, x, rtol=0, atol=2 * lr * (1 + 1e-3)),
               p1, p2)
  _, p0 = rj.load_hf(init_dir)          # the update really moved the weights (by about lr)
  moved = max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
              for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p0)))
  assert 0.5 * lr < moved < 10 * lr, moved

  # Resume: the 2-process run continued from its step-1 checkpoint to step 2 equals a
  # 2-process run that went to step 2 without stopping.
  resumed = tmp_path / "resumed"
  shutil.copytree(two, resumed)
  run(2, init_dir, resumed, 2)
  straight = tmp_path / "straight"
  run(2, init_dir, straight, 2)
  r, s = records(resumed), records(straight)
  assert sorted(r) == sorted(s) == [1, 2]
  for k in SAMPLING_KEYS + UPDATE_KEYS:
    assert r[2][k] == s[2][k], (k, r[2][k], s[2][k])
  jax.tree.map(np.testing.assert_array_equal, rj.load_params(str(resumed), 2),
               rj.load_params(str(straight), 2))


def test_two_process_packed_update_equals_one_process(init_dir, tmp_path):
  """rl.pack_update across processes: the lengths gathered from both processes, the same
  packing planned on each, the plan placed as a global array; step 1 equals the 1-process
  packed run (the tolerances above)."""
  lr = float(tiny_config(init_dir).optim.lr)
  one, two = tmp_path / "one", tmp_path / "two"
  run(1, init_dir, one, 1, "pack")
  run(2, init_dir, two, 1, "pack")
  a, b = records(one)[1], records(two)[1]
  assert 0 < a["perf/pack_fill"] <= 1 and "perf/pack_fill" in b
  for k in SAMPLING_KEYS:
    assert a[k] == b[k], (k, a[k], b[k])
  for k in UPDATE_KEYS:
    np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-7, err_msg=k)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(y, x, rtol=0, atol=2 * lr * (1 + 1e-3)),
               rj.load_params(str(one), 1), rj.load_params(str(two), 1))


def test_two_process_sft_equals_one_process(tmp_path):
  """`rlvr-jax sft` (the grain pipeline reading each process's slice, the CPT/SFT loop) on 2
  processes: the same losses as 1 process to f32 rounding (no sampling: nothing chaotic), and
  parameters within Adam's per-step bound of 2 lr (see the module docstring)."""
  one, two = tmp_path / "one", tmp_path / "two"
  run(1, "sft", one, 3)
  run(2, "sft", two, 3)
  a, b = records(one), records(two)
  assert [s for s in a if "loss" in a[s]] == [s for s in b if "loss" in b[s]] == [1, 2, 3]
  for s in (1, 2, 3):
    np.testing.assert_allclose(b[s]["loss"], a[s]["loss"], rtol=1e-5, err_msg=str(s))
    np.testing.assert_allclose(b[s]["grad_norm"], a[s]["grad_norm"], rtol=1e-4, err_msg=str(s))
  lr = 5e-3                                # configs/toy/sft.py optim.lr (peak)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(y, x, rtol=0, atol=3 * 2 * lr),
               rj.load_params(str(one)), rj.load_params(str(two)))
