"""Test-wide JAX set-up: 8 simulated CPU devices, f32, a persistent compilation cache."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests are compile-bound on tiny shapes: the lowest XLA backend optimisation level compiles 2-3x
# faster (numerics stay f32; speed is measured by the benchmarks, never by tests).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import jax  # noqa: E402
import pytest  # noqa: E402

if not os.environ.get("RLVR_JAX_TEST_WORKER"):   # worker processes set their own devices
  jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("RLVR_JAX_TEST_CACHE", os.path.expanduser("~/.cache/rlvr_jax/jit")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def make_tiny_hf_dir(path: str) -> str:
  """An HF directory (safetensors + config.json + the built-in toy tokenizer.model) of a tiny
  random Llama at `path`: the quick starting point of RL, eval and hub tests."""
  import shutil

  import rlvr_jax as rj
  from rlvr_jax import sharding
  from rlvr_jax.data import builtin
  tok = builtin.resolve_tokenizer("")
  cfg = rj.get_model_config("toy-1m", vocab_size=tok.vocab_size, num_layers=1, hidden_size=32,
                            intermediate_size=64, num_heads=2, num_kv_heads=1, head_dim=16,
                            max_seq_len=128)
  params = sharding.init_params(cfg, jax.random.key(0),
                                sharding.make_mesh((1, 1, 1), jax.devices()[:1]))
  rj.save_hf(path, cfg, params)
  shutil.copyfile(builtin.builtin_tokenizer_path(), os.path.join(path, "tokenizer.model"))
  return path


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory):
  """An HF directory (safetensors + config.json + the built-in toy tokenizer) of a tiny random
  model, one per test module: the runs start with init.from_hf."""
  return make_tiny_hf_dir(str(tmp_path_factory.mktemp("init") / "hf"))


def free_port() -> int:
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_processes(script: str, argvs: list[list[str]], *, timeout: float = 300,
                  env: dict | None = None, cwd: str | None = None) -> list[str]:
  """Runs `python script *argv` once per argv at the same time (the processes of one
  jax.distributed run, on CPU, with the tests directory importable); asserts that all exit 0
  and returns their outputs. A hang kills them all and fails with their logs. They inherit the
  tests' XLA_FLAGS (above): a few steps each, compile-bound."""
  import subprocess
  import sys
  here = os.path.dirname(os.path.abspath(__file__))
  full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([here, os.path.dirname(here)]),
                  JAX_PLATFORMS="cpu", RLVR_JAX_TEST_WORKER="1", **(env or {}))
  procs = [subprocess.Popen([sys.executable, script, *map(str, argv)], env=full_env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for argv in argvs]
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise AssertionError("multi-process run timed out:\n" + "\n".join(logs))
  assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
  return logs
