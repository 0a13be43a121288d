"""Benchmarks: each prints its figures (throughput and a ratio against a reference measured in the
same run), after a `machine: ...` line describing where it ran. `rlvr-jax bench NAME [args]` or
`python -m rlvr_jax.bench.NAME`; `rlvr-jax bench all [--out DIR] [--quick]` runs every one and
writes DIR/bench.json and DIR/bench.md (rlvr_jax/bench/all.py)."""
from __future__ import annotations

import datetime
import functools
import importlib
import os
import platform
import subprocess
import sys
import time
from typing import Any

BENCHMARKS = {
    "forward": "forward pass tokens/s vs transformers (same weights, same run)",
    "train": "train step tokens/s, MFU vs a measured matmul peak, vs a PyTorch train step",
    "sample": "decode tokens/s vs transformers generate, and % of the decode roofline",
    "data": "input pipeline examples/s and tokens/s (CPT packing, SFT)",
    "attention": "full-sequence attention fwd+bwd per kernel (XLA, cuDNN) vs XLA, with errors",
    "rl": "one GRPO step: completions/s, phase split and roofline, vs TRL's GRPOTrainer",
    "all": "every benchmark above but attention; writes DIR/bench.json and DIR/bench.md "
           "(--out DIR, --quick)",
}

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Processor", "cpu model") and value.strip():
          return value.strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown"


def _memory_gib() -> float | None:
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemTotal:"):
          return round(int(line.split()[1]) / 2**20, 1)      # kB -> GiB
  except (OSError, ValueError, IndexError):
    pass
  try:
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
  except (OSError, ValueError, AttributeError):
    return None


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:
  """HEAD of the source checkout (with '+dirty' for uncommitted changes), None when not a git
  checkout or git is missing. Read-only git commands."""
  try:
    head = subprocess.run(["git", "-C", _REPO_ROOT, "rev-parse", "HEAD"], capture_output=True,
                          text=True, timeout=10)
    if head.returncode:
      return None
    dirty = subprocess.run(["git", "--no-optional-locks", "-C", _REPO_ROOT, "status",
                            "--porcelain", "-uno"],
                           capture_output=True, text=True, timeout=10)
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip()
                                  else "")
  except (OSError, subprocess.SubprocessError):
    return None


def machine_info() -> dict[str, Any]:
  """Where a benchmark ran, so that figures from different machines can be compared: CPU model
  and core count, memory, jax version and backend, device kind and count, the accelerator (None
  on CPU), python version, date (UTC) and the source's git commit."""
  import jax
  devices = jax.devices()
  backend = jax.default_backend()
  kind = devices[0].device_kind if devices else "?"
  return {
      "cpu": _cpu_model(),
      "cores": os.cpu_count(),
      "memory_gib": _memory_gib(),
      "host": platform.node(),
      "os": f"{platform.system()} {platform.release()}",
      "python": platform.python_version(),
      "jax": jax.__version__,
      "backend": backend,
      "device_kind": kind,
      "device_count": len(devices),
      "process_count": jax.process_count(),
      "accelerator": None if backend == "cpu" else kind,
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "git_commit": _git_commit(),
  }


def machine_line(info: dict[str, Any] | None = None) -> str:
  """One `machine: ...` line of machine_info() for a benchmark's printed header."""
  m = info or machine_info()
  mem = f", {m['memory_gib']:g} GiB" if m.get("memory_gib") else ""
  accel = f"{m['device_count']} x {m['device_kind']}" if m["accelerator"] else (
      f"{m['device_count']} cpu device(s)")
  commit = f", git {m['git_commit'][:12]}{'+dirty' if m['git_commit'].endswith('+dirty') else ''}" \
      if m.get("git_commit") else ""
  from rlvr_jax.run import host_memory
  return (f"machine: {m['cpu']} ({m['cores']} cores{mem}); {m['backend']} backend, {accel}; "
          f"jax {m['jax']}, python {m['python']}; {host_memory.status()}; {m['date']}{commit}")


def timed_into(acc: dict, name: str, fn, on_result=None):
  """`fn` wrapped to add its wall time to acc[name] and hand its result to `on_result`: how the
  benches time a reference's phases (TRL's, tunix's) inside its own training step."""
  def wrapper(*args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    acc[name] += time.perf_counter() - t0
    if on_result is not None:
      on_result(out)
    return out
  return wrapper


def main(argv: list[str]) -> int:
  if len(argv) < 2 or argv[1] in ("-h", "--help"):
    print("usage: rlvr-jax bench NAME [args]\n\nbenchmarks:\n" +
          "\n".join(f"  {k.ljust(8)} {v}" for k, v in BENCHMARKS.items()))
    return 0 if len(argv) >= 2 else 2
  name = argv[1]
  if name not in BENCHMARKS:
    print(f"unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)}", file=sys.stderr)
    return 2
  module = importlib.import_module(f"rlvr_jax.bench.{name}")
  return int(module.main([f"{argv[0]} {name}", *argv[2:]]) or 0)
