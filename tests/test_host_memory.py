"""run/host_memory.py: the glibc malloc tunables that keep freed memory in the process, when the
`rlvr-jax` command sets them, and that they do stop the page faults they are there to stop."""
import os
import platform
import subprocess
import sys

import pytest

from rlvr_jax.run import host_memory

GLIBC_LINUX = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tunables_keep_the_users_own_settings():
  assert host_memory.tunables_value("") == ("glibc.malloc.mmap_max=0:glibc.malloc."
                                            f"trim_threshold={64 << 30}:glibc.malloc.arena_max=1")
  merged = host_memory.tunables_value("glibc.malloc.arena_max=4:glibc.cpu.x86_shstk=off")
  assert merged.startswith("glibc.malloc.arena_max=4:glibc.cpu.x86_shstk=off:")
  assert merged.count("arena_max") == 1 and "mmap_max=0" in merged
  assert host_memory.active({"GLIBC_TUNABLES": merged})
  assert not host_memory.active({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"})


def test_only_cpu_hosts_that_did_not_opt_out_are_restarted(monkeypatch):
  monkeypatch.setattr(host_memory, "glob", type("G", (), {"glob": staticmethod(lambda p: [])}))
  cpu = {"JAX_PLATFORMS": "cpu"}
  assert host_memory.wanted(cpu) == GLIBC_LINUX
  assert not host_memory.wanted({**cpu, host_memory.OPT_OUT: "0"})
  assert not host_memory.wanted({**cpu, "GLIBC_TUNABLES": host_memory.tunables_value()})
  assert not host_memory.wanted({**cpu, host_memory._REEXECED: "1"})     # never twice
  assert not host_memory.wanted({"JAX_PLATFORMS": "tpu"})
  assert not host_memory.wanted({"JAX_PLATFORMS": "cuda,cpu"})
  assert host_memory.wanted({}) == GLIBC_LINUX               # no accelerator device files
  monkeypatch.setattr(host_memory, "glob", type("G", (), {"glob": staticmethod(
      lambda p: ["/dev/accel0"] if p.startswith("/dev/accel") else [])}))
  assert not host_memory.wanted({})


# A block far above glibc's mmap threshold, malloc'd, written and freed four times (as XLA:CPU
# does with a step's buffers): minor page faults per round (the first round faults in either
# setting).
_FAULTS = """
import ctypes, resource
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = []
for _ in range(4):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  block = libc.malloc(64 << 20)
  ctypes.memset(block, 1, 64 << 20)
  libc.free(block)
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


@pytest.mark.skipif(not GLIBC_LINUX, reason="glibc malloc tunables")
def test_the_tunables_stop_the_page_faults_of_freed_blocks():
  def faults(tunables: str | None) -> list[int]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables is not None:
      env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True,
                         text=True, check=True).stdout
    return [int(x) for x in out.split()]
  pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
  default = faults(None)
  tuned = faults(host_memory.tunables_value())
  assert min(default[1:]) > pages // 2          # every round faults the block in again
  assert max(tuned[1:]) < pages // 20           # the heap keeps it: (almost) no fault


@pytest.mark.skipif(not GLIBC_LINUX, reason="glibc malloc tunables")
def test_the_command_restarts_itself_with_the_tunables():
  """`python -m rlvr_jax.cli` (what the console script runs) on a CPU host: the benchmark's
  machine line, printed by the restarted process, says the tunables are on; opted out, it does
  not."""
  def machine_line(**env_extra) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GLIBC_TUNABLES", host_memory._REEXECED)}
    env.update(JAX_PLATFORMS="cpu", **env_extra)
    out = subprocess.run([sys.executable, "-m", "rlvr_jax.cli", "bench", "sample", "--size",
                          "toy-1m", "--batch", "1", "--prompt_len", "4", "--new_tokens", "2",
                          "--repeats", "1", "--skip_hf"], env=env, capture_output=True,
                         text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return next(line for line in out.stdout.splitlines() if line.startswith("machine: "))
  assert "glibc malloc keeps freed memory" in machine_line()
  assert "glibc malloc defaults" in machine_line(**{host_memory.OPT_OUT: "0"})
