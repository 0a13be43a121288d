"""Keep freed host memory in the process on CPU hosts (glibc malloc tunables).

XLA:CPU allocates a step's buffers with malloc. glibc serves large blocks with fresh mmap()
pages and hands them back to the kernel when freed, so every step page-faults its working set in
again: `rlvr-jax bench rl` at 256 new tokens takes about 1.9 million minor faults (7 GB) per
step, 4-5 s of system time in a 12 s step, and 15 s of it right after a PyTorch step has
churned the heap (the TRL comparison). With every block served from one heap that is never
trimmed (glibc.malloc.mmap_max=0, trim_threshold 64 GiB, arena_max=1) a warm step faults no page
at all. The cost: the process keeps its peak heap until it exits.

glibc reads its tunables once, when the process starts, so the `rlvr-jax` command re-executes
itself once with GLIBC_TUNABLES set (`reexec_if_needed`), only on a host without accelerators
(a TPU's /dev/accel*, /dev/vfio, an NVIDIA GPU's /dev/nvidia*, or JAX_PLATFORMS naming another
platform: there the device holds the big buffers), and never when RLVR_JAX_HOST_MALLOC=0 or the
tunables are already set. Library users (a notebook, pytest) set the variable themselves:
`GLIBC_TUNABLES=$(python -m rlvr_jax.run.host_memory) python ...`.
"""
from __future__ import annotations

import glob
import os
import platform
import sys

TUNABLES = (("glibc.malloc.mmap_max", "0"),
            ("glibc.malloc.trim_threshold", str(64 << 30)),
            ("glibc.malloc.arena_max", "1"))
OPT_OUT = "RLVR_JAX_HOST_MALLOC"       # "0": leave malloc as it is
_REEXECED = "RLVR_JAX_HOST_MALLOC_REEXEC"


def tunables_value(current: str = "") -> str:
  """GLIBC_TUNABLES with ours added to `current` (its own settings of the same names kept)."""
  parts = [p for p in current.split(":") if p]
  names = {p.split("=", 1)[0] for p in parts}
  return ":".join(parts + [f"{k}={v}" for k, v in TUNABLES if k not in names])


def active(env=None) -> bool:
  """Whether this process was started with our tunables."""
  env = os.environ if env is None else env
  current = env.get("GLIBC_TUNABLES", "")
  return all(f"{k}=" in current for k, _ in TUNABLES)


def has_accelerator(env=None) -> bool:
  env = os.environ if env is None else env
  platforms = env.get("JAX_PLATFORMS", "").strip().lower()
  if platforms:
    return platforms.split(",")[0] != "cpu"
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*") or
              glob.glob("/dev/nvidia[0-9]*"))


def wanted(env=None) -> bool:
  """Whether `rlvr-jax` should restart itself with the tunables: Linux with glibc, a CPU host,
  not opted out, not already set (nor already restarted once)."""
  env = os.environ if env is None else env
  return (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
          and env.get(OPT_OUT, "1") != "0" and not env.get(_REEXECED)
          and not active(env) and not has_accelerator(env))


def reexec_if_needed(argv: list[str]) -> None:
  """Replace this process by `python -m rlvr_jax.cli ARGS` with the tunables set, when `wanted`;
  otherwise return. Call it first thing in the console entry point, before any work."""
  if not wanted():
    return
  os.environ["GLIBC_TUNABLES"] = tunables_value(os.environ.get("GLIBC_TUNABLES", ""))
  os.environ[_REEXECED] = "1"
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, [sys.executable, "-m", "rlvr_jax.cli", *argv[1:]])


def status() -> str:
  """One phrase for benchmark headers."""
  return "glibc malloc keeps freed memory" if active() else "glibc malloc defaults"


if __name__ == "__main__":
  print(tunables_value(os.environ.get("GLIBC_TUNABLES", "")))
