"""Benchmarks: each prints its figures (throughput and a ratio against a reference measured in the
same run). `rlvr-jax bench NAME [args]` or `python -m rlvr_jax.bench.NAME`."""
from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "forward": "forward pass tokens/s vs transformers (same weights, same run)",
    "train": "train step tokens/s, MFU vs a measured matmul peak, vs a PyTorch train step",
    "sample": "decode tokens/s vs transformers generate, and % of the decode roofline",
    "data": "input pipeline examples/s and tokens/s (CPT packing, SFT)",
}


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
