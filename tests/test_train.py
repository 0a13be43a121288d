"""Training core: loss, gradient accumulation, sharding, skipping, optimizer, checkpoints, loop.

The loop tests run `rlvr_jax.train.loop.train` in subprocesses (a runner script written to a
temporary directory) so they can be killed: SIGKILL mid-run then resume must give bit-identical
state; SIGTERM must leave a restorable checkpoint; K non-finite steps in a row stop the run.
"""
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

import rlvr_jax as rj
from rlvr_jax import sharding
from rlvr_jax.model import transformer as T
from rlvr_jax.train import checkpoints, loop, optim, state as state_lib, steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = rj.get_model_config("toy-1m", vocab_size=256, num_layers=2, hidden_size=64,
                          intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16)


def optim_config(**kw):
  c = ml_collections.ConfigDict(dict(lr=1e-3, schedule="constant", warmup=0, final_lr_frac=0.0,
                                     b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, clip_norm=1.0))
  c.update(kw)
  return c


def random_batch(seed, b=8, length=17, vocab=256, ragged=True):
  """Tokens plus a loss mask with very different valid counts per row (so per-microbatch
  normalisation would be wrong) and two packed segments in some rows."""
  r = np.random.default_rng(seed)
  tokens = r.integers(0, vocab, (b, length)).astype(np.int32)
  mask = np.ones((b, length), np.float32)
  seg = np.ones((b, length), np.int32)
  if ragged:
    for i in range(b):
      mask[i, : (i * 3) % (length - 1)] = 0.0        # row i trains only on its tail
    seg[::3, length // 2:] = 2
  return {"tokens": tokens, "loss_mask": mask, "segment_ids": seg}


def host(tree):
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def numpy_params(cfg, seed=0):
  """Random parameters built on the host from the model's abstract tree (no init compile):
  N(0, 0.02) matrices, RMSNorm scales 1 + noise, biases noise."""
  r = np.random.default_rng(seed)

  def make(path, x):
    name = jax.tree_util.keystr(path)
    if name.endswith("['scale']"):
      return (1.0 + 0.1 * r.standard_normal(x.shape)).astype(np.float32)
    return (0.02 * r.standard_normal(x.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(make, nn.unbox(T.abstract_params(cfg)))


# ---------------------------------------------------------------------------------- optimizer
def test_schedules_match_hand_computation():
  lr, total = 1e-3, 100
  cos = optim.make_schedule("warmup_cosine", lr, total, warmup=0.1, final_lr_frac=0.1)
  for s, want in [(0, 0.0), (5, lr * 5 / 10), (10, lr),
                  (55, 0.1 * lr + 0.9 * lr * 0.5 * (1 + math.cos(math.pi * 45 / 90))),
                  (100, 0.1 * lr)]:
    assert float(cos(s)) == pytest.approx(want, rel=1e-5, abs=1e-12), s
  lin = optim.make_schedule("warmup_linear", lr, total, warmup=20)   # warmup as a step count
  for s, want in [(0, 0.0), (10, lr / 2), (20, lr), (60, lr / 2), (100, 0.0)]:
    assert float(lin(s)) == pytest.approx(want, rel=1e-5, abs=1e-12), s
  const = optim.make_schedule("constant", lr, total, warmup=0.04)
  for s, want in [(0, 0.0), (2, lr / 2), (4, lr), (99, lr)]:
    assert float(const(s)) == pytest.approx(want, rel=1e-5, abs=1e-12), s
  assert float(optim.make_schedule("constant", lr, total)(0)) == pytest.approx(lr)
  with pytest.raises(ValueError, match="optim.schedule"):
    optim.make_schedule("cosine", lr, total)
  with pytest.raises(ValueError, match="more than steps"):
    optim.make_schedule("warmup_cosine", lr, total, warmup=200)


def test_adamw_decays_matrices_but_not_norms_and_biases():
  cfg = CFG.replace(qkv_bias=True)
  params = numpy_params(cfg)                              # every leaf nonzero
  opt = optim.make_optimizer(optim_config(lr=0.1, weight_decay=0.5, clip_norm=0.0), 10)
  zero = jax.tree.map(np.zeros_like, params)             # Adam part is 0: only decay moves
  updates, _ = jax.jit(lambda g, p: opt.tx.update(g, opt.tx.init(p), p))(zero, params)
  flat_u = dict(jax.tree_util.tree_flatten_with_path(updates)[0])
  decayed = []
  for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = jax.tree_util.keystr(path)
    u = np.asarray(flat_u[path])
    if name.endswith("['scale']") or name.endswith("['bias']"):
      np.testing.assert_array_equal(u, 0.0, err_msg=name)
    else:
      np.testing.assert_allclose(u, -0.1 * 0.5 * np.asarray(p), rtol=1e-6, err_msg=name)
      decayed.append(name)
  assert any("embed_tokens" in n for n in decayed) and any("q_proj']['kernel" in n for n in decayed)


# ---------------------------------------------------------------------------------- the loss
@pytest.fixture(scope="module")
def params():
  return numpy_params(CFG)


def test_masked_loss_matches_numpy_reference(params):
  batch = random_batch(1)
  seg = batch["segment_ids"]
  explicit = {"tokens": batch["tokens"][:, :-1], "targets": batch["tokens"][:, 1:],
              "loss_mask": batch["loss_mask"][:, :-1] * (seg[:, 1:] == seg[:, :-1]),
              "segment_ids": seg[:, :-1]}

  @jax.jit
  def run(p, b, e):   # one compile: our loss on both batch forms, and the plain logits
    logits = rj.forward(CFG, p, b["tokens"][:, :-1], segment_ids=b["segment_ids"][:, :-1])
    return steps.loss_sums(CFG, p, b), steps.loss_sums(CFG, p, e), logits
  sums, sums2, logits = run(params, batch, explicit)
  logits = np.asarray(logits, np.float64)
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)
  nll = -np.take_along_axis(logp, batch["tokens"][:, 1:, None], -1)[..., 0]
  w = batch["loss_mask"][:, :-1] * (seg[:, 1:] == seg[:, :-1])
  assert w.sum() < w.size - 20                           # the mask really removes targets
  np.testing.assert_allclose(float(sums["nll"]) / float(sums["count"]),
                             (nll * w).sum() / w.sum(), rtol=1e-5)
  assert float(sums["count"]) == w.sum()
  correct = ((logits.argmax(-1) == batch["tokens"][:, 1:]) * w).sum()
  assert float(sums["correct"]) == correct
  # Explicit targets (the data pipelines' form) give the same numbers.
  np.testing.assert_allclose(float(sums2["nll"]), float(sums["nll"]), rtol=1e-6)


def test_grad_accumulation_equals_full_batch(params):
  batch = random_batch(2)

  @jax.jit
  def run(p, b):      # one compile for both
    return (steps.compute_grads(CFG, p, b, microbatches=1, z_loss=1e-3),
            steps.compute_grads(CFG, p, b, microbatches=4, z_loss=1e-3))
  (g1, s1), (g4, s4) = run(params, batch)
  loss1, loss4 = float(s1["nll"] / s1["count"]), float(s4["nll"] / s4["count"])
  assert loss4 == pytest.approx(loss1, abs=1e-5)
  assert float(s4["count"]) == float(s1["count"])
  scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(g1))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5 * scale), g1, g4)
  # The microbatches hold very different numbers of valid targets, so averaging per-microbatch
  # means (the classic mistake) would weight tokens unequally: the test can fail.
  counts = [batch["loss_mask"][j::4, :-1].sum() for j in range(4)]
  assert max(counts) > 1.5 * min(counts)


def test_accumulate_grads_divides_once_by_the_global_denominator():
  """accumulate_grads on a toy objective (a weighted least-squares sum, rows of very different
  weights): k microbatches equal the full batch, a custom merge keeps maxima, the gradient is
  ∇ Σ sums / Σ denominators (the RL update's contract)."""
  rng = np.random.default_rng(0)
  x_ND = jnp.asarray(rng.standard_normal((12, 3)), jnp.float32)
  y_N = jnp.asarray(rng.standard_normal(12), jnp.float32)
  w_N = jnp.asarray([0, 0, 0, 3, 1, 1, 0, 5, 1, 2, 0, 1], jnp.float32)
  batch = {"x": x_ND, "y": y_N, "w": w_N}
  params = {"a": jnp.asarray([0.5, -1.0, 2.0], jnp.float32), "b": jnp.zeros((), jnp.float32)}

  def sum_fn(p, mb):
    err_N = mb["x"] @ p["a"] + p["b"] - mb["y"]
    total = jnp.sum(mb["w"] * err_N ** 2)
    return total, {"total": total, "denom": jnp.sum(mb["w"]),
                   "err_max": jnp.max(jnp.abs(err_N) * (mb["w"] > 0))}

  merge = lambda a, b: {k: jnp.maximum(a[k], b[k]) if k == "err_max" else a[k] + b[k]  # noqa
                        for k in a}
  want = jax.grad(lambda p: sum_fn(p, batch)[0] / jnp.sum(w_N))(params)
  for k in (1, 2, 3, 4):
    grads, sums = jax.jit(lambda p, b, k=k: steps.accumulate_grads(
        sum_fn, p, b, microbatches=k, merge=merge))(params, batch)
    jax.tree.map(lambda g, h: np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-6), grads, want)
    assert float(sums["denom"]) == float(jnp.sum(w_N))
    np.testing.assert_allclose(sums["err_max"], sum_fn(params, batch)[1]["err_max"], rtol=1e-6)


# ---------------------------------------------------------------------------------- steps
def _run_steps(mesh, microbatches, batches, params):
  """3 train steps from `params`; returns (losses, final state, the jitted step)."""
  opt = optim.make_optimizer(optim_config(), 10)
  shard = state_lib.state_shardings(CFG, opt, mesh)
  st = state_lib.create_train_state(CFG, opt, mesh, jax.random.key(0), params)
  step = steps.jit_train_step(CFG, opt, mesh, shard, microbatches=microbatches)
  losses = []
  for b in batches:
    st, m = step(st, b)
    losses.append(float(m["loss"]))
  return losses, st, step


@pytest.fixture(scope="module")
def single_device_run(params):
  mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  return _run_steps(mesh, 1, [random_batch(10 + i) for i in range(3)], params)


def test_sharded_steps_match_single_device(params, single_device_run):
  batches = [random_batch(10 + i) for i in range(3)]
  ref, ref_state, _ = single_device_run
  for shape, k in [((2, 2, 2), 2), ((1, 4, 2), 1)]:
    losses, st, _ = _run_steps(sharding.make_mesh(shape), k, batches, params)
    np.testing.assert_allclose(losses, ref, atol=1e-5, err_msg=str(shape))
    q = st.params["layers"]["self_attn"]["q_proj"]["kernel"]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    mu = st.opt_state[1].mu["layers"]["self_attn"]["q_proj"]["kernel"]
    assert mu.sharding.spec == q.sharding.spec
    np.testing.assert_allclose(np.asarray(q), np.asarray(ref_state.params["layers"]["self_attn"]
                                                         ["q_proj"]["kernel"]), atol=1e-5)


def test_nonfinite_batch_is_skipped_and_counted(single_device_run):
  _, st, step = single_device_run                         # the step compiled above, reused
  before = host(st)
  bad = random_batch(11)
  bad["loss_mask"][3, 5] = np.nan                         # one poisoned weight
  st, m = step(st, bad)
  assert int(m["skipped"]) == 1 and not np.isfinite(float(m["loss"]))
  after = host(st)
  jax.tree.map(np.testing.assert_array_equal, after.params, before.params)
  jax.tree.map(np.testing.assert_array_equal, after.opt_state, before.opt_state)
  assert int(after.step) == int(before.step) + 1          # the batch was consumed
  st, m = step(st, random_batch(12))                      # training goes on
  assert int(m["skipped"]) == 0 and np.isfinite(float(m["loss"]))
  assert not np.array_equal(np.asarray(st.params["norm"]["scale"]), before.params["norm"]["scale"])


# ---------------------------------------------------------------------------------- checkpoints
def test_load_params_and_params_only_checkpoints(tmp_path):
  mesh = sharding.make_mesh((2, 2, 2))
  opt = optim.make_optimizer(optim_config(), 10)
  expected = numpy_params(CFG, seed=3)
  st = state_lib.create_train_state(CFG, opt, mesh, jax.random.key(3), dict(expected))
  checkpoints.write_config_json(str(tmp_path / "run"), {"steps": 10}, CFG)
  mgr = checkpoints.RunCheckpoints(str(tmp_path / "run"), keep=2)
  assert mgr.save(5, st)
  assert not mgr.save(5, st)                              # an existing step is never rewritten
  mgr.close()
  got = rj.load_params(str(tmp_path / "run"))             # default: one device
  jax.tree.map(np.testing.assert_array_equal, host(got), expected)
  assert got["norm"]["scale"].sharding.device_set == {jax.local_devices()[0]}
  got = checkpoints.load_params(str(tmp_path / "run"), 5, mesh=mesh)
  q = got["layers"]["self_attn"]["q_proj"]["kernel"]
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  jax.tree.map(np.testing.assert_array_equal, host(got), expected)
  with pytest.raises(ValueError, match="available steps: \\[5\\]"):
    checkpoints.load_params(str(tmp_path / "run"), 7)
  checkpoints.save_params(str(tmp_path / "p"), CFG, st.params)
  cfg2, p2 = checkpoints.restore_params(str(tmp_path / "p"))
  assert cfg2 == CFG
  jax.tree.map(np.testing.assert_array_equal, host(p2), expected)
  jax.tree.map(np.testing.assert_array_equal, host(rj.load_params(str(tmp_path / "p"))), expected)
  with pytest.raises(FileExistsError):
    checkpoints.save_params(str(tmp_path / "p"), CFG, st.params)


# ---------------------------------------------------------------------------------- config checks
def _toy_config(path="configs/toy/cpt.py"):
  import importlib.util
  spec = importlib.util.spec_from_file_location("toy_cfg", os.path.join(ROOT, path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def test_toy_configs_define_every_field():
  cpt, sft = _toy_config(), _toy_config("configs/toy/sft.py")
  for c in (cpt, sft):
    for key in ("steps", "batch_size", "seq_len", "microbatches", "seed", "log_every",
                "eval_every", "checkpoint_every", "keep_checkpoints", "max_nonfinite_steps"):
      assert isinstance(c[key], int), key
    assert c.optim.schedule in optim.SCHEDULES
    assert set(c.init.keys()) == {"from_hf", "from_checkpoint"}
  assert cpt.stage == "cpt" and sft.stage == "sft"


def test_bad_batch_fails_before_anything_compiles(tmp_path):
  c = _toy_config()
  c.model.vocab_size = 256
  c.batch_size = 6                                         # mesh.data = -1: 8 devices

  def no_data(config):
    raise AssertionError("the data must not be touched before the config is checked")
  with pytest.raises(ValueError, match="batch_size/microbatches = 6/1=6 does not divide over "
                                       "data×fsdp = 8×1 = 8 devices; make it a multiple of 8"):
    loop.train(c, str(tmp_path), stage="cpt", make_batches=no_data)
  c.batch_size, c.microbatches = 16, 3
  with pytest.raises(ValueError, match="not a multiple of microbatches=3"):
    loop.train(c, str(tmp_path), stage="cpt", make_batches=no_data)
  c.microbatches, c.mesh.tensor, c.mesh.data = 1, 8, 1
  with pytest.raises(ValueError, match="num_heads=4 does not divide over mesh.tensor=8"):
    loop.train(c, str(tmp_path), stage="cpt", make_batches=no_data)
  assert not os.path.exists(tmp_path / "checkpoints")


# ---------------------------------------------------------------------------------- the loop
RUNNER = textwrap.dedent('''
    """Runs the train loop on a synthetic grain pipeline; env vars inject faults."""
    import os, sys, time
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    NPROC, PID = int(os.environ.get("NPROC", 1)), int(os.environ.get("PID", 0))
    jax.config.update("jax_num_cpu_devices", 4 // NPROC)
    if NPROC > 1:                                     # multi-process: 2 devices per process
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
      jax.distributed.initialize(coordinator_address=os.environ["COORD"], num_processes=NPROC,
                                 process_id=PID)
    jax.config.update("jax_compilation_cache_dir", os.environ["CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    import grain, importlib.util
    import numpy as np
    from rlvr_jax.train import loop

    STALL_AT = int(os.environ.get("STALL_AT", -1))   # block forever on this batch index
    SLOW_FROM = int(os.environ.get("SLOW_FROM", -1))  # sleep 0.5 s per batch from here
    NAN_FROM = int(os.environ.get("NAN_FROM", -1))    # poison the loss mask from here

    def synth(i):
      if i == STALL_AT:
        time.sleep(3600)
      if 0 <= SLOW_FROM <= i:
        time.sleep(0.5)
      r = np.random.default_rng(i)
      toks = r.integers(0, 64, (8, 17)).astype(np.int32)
      toks[:, 8:] = toks[:, :9] % 7              # a learnable second half
      mask = np.ones((8, 16), np.float32)
      if 0 <= NAN_FROM <= i:
        mask[0, 0] = np.nan
      rows = slice(PID * 8 // NPROC, (PID + 1) * 8 // NPROC)    # this process's rows
      return {"tokens": toks[rows, :-1], "targets": toks[rows, 1:], "loss_mask": mask[rows]}

    spec = importlib.util.spec_from_file_location("cfg", sys.argv[2])
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    c = mod.get_config()
    c.model.update(dict(vocab_size=64, num_layers=2, hidden_size=32, intermediate_size=64,
                        num_heads=2, num_kv_heads=1, head_dim=16))
    c.mesh.data, c.mesh.fsdp = 2, 2
    c.update(dict(steps=24, batch_size=8, seq_len=16, log_every=1, eval_every=0,
                  checkpoint_every=int(os.environ.get("EVERY", 12)), keep_checkpoints=2,
                  max_nonfinite_steps=3, progress_bar=False))
    c.optim.warmup = 0.1
    # No prefetch threads: the map (and its injected stalls) runs in the loop's own next().
    opts = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    make = lambda config: iter(grain.MapDataset.range(10**6).map(synth).to_iter_dataset(opts))
    try:
      status = loop.train(c, sys.argv[1], stage="cpt", make_batches=make)
    except loop.NonFiniteError as e:
      print("NonFiniteError:", e, flush=True)
      sys.exit(3)
    print("STATUS", status, flush=True)
''')


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
  d = tmp_path_factory.mktemp("runner")
  path = d / "runner.py"
  path.write_text(RUNNER)
  cache = os.environ.get("RLVR_JAX_TEST_CACHE", os.path.expanduser("~/.cache/rlvr_jax/jit"))

  def start(workdir, **env):
    e = dict(os.environ, CACHE=cache, PYTHONPATH=ROOT, **{k: str(v) for k, v in env.items()})
    e.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")   # compile 2-3x faster
    # `timeout` bounds every run; its own session lets a SIGKILL reach the whole group (timeout
    # forwards SIGTERM to the runner but cannot forward SIGKILL).
    proc = subprocess.Popen(["timeout", "-s", "KILL", "300", sys.executable, str(path),
                             str(workdir), os.path.join(ROOT, "configs/toy/cpt.py")],
                            env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    started.append(proc)
    return proc

  started = []
  yield start
  for proc in started:                       # nothing outlives the test, whatever happened
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()


def _free_port():
  import socket
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    return sock.getsockname()[1]


def _wait_for(pred, proc, what, timeout=240):
  t0 = time.time()
  while not pred():
    if proc.poll() is not None:
      raise AssertionError(f"runner exited ({proc.returncode}) before {what}:\n"
                           f"{proc.stderr.read()[-3000:]}")
    if time.time() - t0 > timeout:
      os.killpg(proc.pid, signal.SIGKILL)
      raise AssertionError(f"timed out waiting for {what}")
    time.sleep(0.1)


def _finish(proc, timeout=240):
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def _raw_state(workdir, step):
  """The whole saved TrainState (params, opt_state, step, rng) as numpy, no target needed."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  meta = ocp.PyTreeCheckpointHandler().metadata(epath.Path(path)).tree
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  with ocp.PyTreeCheckpointer() as ck:
    return ck.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_loop_resume_sigterm_and_nonfinite(runner, tmp_path):
  """One battery (subprocesses run two at a time):
  - straight: 24 steps;
  - killed: SIGKILL once step 12's checkpoint is on disk (data stalls at batch 12), restarted;
    its final state must equal the straight run's bit for bit;
  - sigterm: SIGTERM mid-run → exit 0 with status preempted and a restorable checkpoint at
    the step it reached;
  - two processes (jax.distributed, gloo) → the one-process losses and parameters;
  - nonfinite: batches from index 4 on are NaN → 3 skips in a row stop the run; the last
    checkpoint holds the step-4 parameters, untouched."""
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  sigterm, nonfinite = tmp_path / "sigterm", tmp_path / "nonfinite"
  two_proc = tmp_path / "two_proc"

  p_straight = runner(straight)
  p_killed = runner(killed, STALL_AT=12)
  _wait_for(lambda: (killed / "checkpoints" / "12" / "state").exists(), p_killed, "checkpoint 12")
  time.sleep(0.5)
  os.killpg(p_killed.pid, signal.SIGKILL)                   # timeout and the runner
  p_killed.wait(timeout=30)
  assert p_killed.returncode == -signal.SIGKILL
  rc, out, err = _finish(p_straight)
  assert rc == 0 and "STATUS completed" in out, err[-3000:]

  p_resume = runner(killed)
  p_term = runner(sigterm, SLOW_FROM=5, EVERY=0)
  _wait_for(lambda: (sigterm / "metrics.jsonl").exists() and
            any(r["step"] >= 5 for r in _records(sigterm)), p_term, "step 5 of the sigterm run")
  p_term.send_signal(signal.SIGTERM)
  rc, out, err = _finish(p_term)
  assert rc == 0 and "STATUS preempted" in out, err[-3000:]
  saved = checkpoints.run_steps(str(sigterm))
  assert len(saved) == 1 and 5 <= saved[0] < 24, saved     # EVERY=0: only the SIGTERM save
  p = rj.load_params(str(sigterm))
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(p))
  rc, out, err = _finish(p_resume)
  assert rc == 0 and "STATUS completed" in out, err[-3000:]

  p_nan = runner(nonfinite, NAN_FROM=4, EVERY=4)
  coord = f"localhost:{_free_port()}"
  p_two = [runner(two_proc, NPROC=2, PID=i, COORD=coord, EVERY=0) for i in range(2)]
  for p in p_two:
    rc, out, err = _finish(p)
    assert rc == 0 and "STATUS completed" in out, err[-3000:]
  rc, out, err = _finish(p_nan)
  assert rc == 3 and "3 non-finite updates in a row" in out, (out, err[-3000:])
  nonfinite_out = out

  ref = _raw_state(str(straight), 24)
  assert int(ref["step"]) == 24
  got = _raw_state(str(killed), 24)
  jax.tree.map(np.testing.assert_array_equal, got, ref)     # params, opt_state, step, rng
  losses = {r["step"]: r["loss"] for r in _records(straight) if "loss" in r}
  assert losses[24] < losses[1] - 0.5                        # it learns
  resumed = {r["step"]: r["loss"] for r in _records(killed) if "loss" in r}
  assert resumed[24] == losses[24]

  # Two processes (2 devices each, gloo collectives, each feeding its half of every batch)
  # train like one process with 4 devices.
  two = {r["step"]: r["loss"] for r in _records(two_proc) if "loss" in r}
  assert sorted(two) == list(range(1, 25))
  np.testing.assert_allclose([two[s] for s in range(1, 25)], [losses[s] for s in range(1, 25)],
                             atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               _raw_state(str(two_proc), 24)["params"], ref["params"])

  # The guard sees step 7 (the third skip in a row) before the save due at step 8, so no
  # checkpoint after the last healthy one (step 4) is written, and the message names it.
  assert checkpoints.run_steps(str(nonfinite)) == [4]
  assert "last healthy checkpoint is step 4" in nonfinite_out
  recs = [r for r in _records(nonfinite) if "skipped_steps" in r]
  assert max(r["skipped_steps"] for r in recs) == 3
  assert [r["step"] for r in recs if r["skipped"]] == [5, 6, 7]
