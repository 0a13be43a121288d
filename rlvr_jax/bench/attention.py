"""Attention benchmark: the model's full-sequence attention (forward + backward, the kernel the
CPT/SFT step and the RL update run) with each implementation this backend has, against XLA's in
the same run, and each one's error against an f32 reference.

  rlvr-jax bench attention [--rows 16 --seq 1056 --segments 1 --dtype bfloat16]

The shapes are a named size's heads (default llama-3.2-1b: 32 query heads, 8 kv heads, head_dim
64). Rows hold `--segments` documents each (positions restart at 0, the last 1/8 of a row is
padding with segment 0), with the model's own mask (causal by position and index, never across
segments: transformer.sequence_mask), as a packed RL update or CPT batch sees them, through the
model's own transformer.full_attention (XLA's in causal query blocks).

Figures: per implementation ("xla"; "cudnn" on an NVIDIA GPU), the forward + backward time
(median of `--repeats` after a warm-up, compile excluded), its FLOP rate on the useful FLOPs
(the causal products within each document of the real tokens: 4 N H L^2 / 2 per document of L
tokens, x3 for forward + backward), the ratio to XLA's, and the largest error of the output and
of dq/dk/dv on the real (non-padding) tokens, relative to the largest magnitude of the f32 XLA
reference's, next to XLA's own error in the same dtype. Exit status 1 when an implementation
fails or its error exceeds 4x XLA's in the same dtype (plus 1e-3): `model.attention` "auto" must
not pick a kernel that computes something else.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import rlvr_jax as rj
from rlvr_jax.model import transformer


def packed_layout(rows: int, seq: int, segments: int):
  """positions, segment ids int32 [rows, seq]: `segments` equal documents per row (positions
  restart at 0, ids 1..segments), then seq // 8 padding slots (segment 0, position 0)."""
  real = seq - seq // 8
  bounds = np.linspace(0, real, segments + 1).astype(int)
  positions = np.zeros((rows, seq), np.int32)
  segment_ids = np.zeros((rows, seq), np.int32)
  for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
    positions[:, lo:hi] = np.arange(hi - lo)
    segment_ids[:, lo:hi] = i + 1
  return jnp.asarray(positions), jnp.asarray(segment_ids)


ERROR_NAMES = ("out", "dq", "dk", "dv")


def computes_the_same(errors: dict[str, float], xla_errors: dict[str, float]) -> bool:
  """An implementation's errors against f32 are within 4x XLA's own in the same dtype, plus
  1e-3, for the output and every gradient."""
  return all(errors[name] <= 4 * xla_errors[name] + 1e-3 for name in ERROR_NAMES)


def useful_flops(positions, segment_ids, num_heads: int, head_dim: int) -> float:
  """Forward + backward FLOPs of the causal score and value products within each document of
  the real (segment > 0) tokens: 3 x 4 N H L (L + 1) / 2 per document of L tokens."""
  seg = np.asarray(segment_ids)
  total = 0.0
  for row in seg:
    _, counts = np.unique(row[row > 0], return_counts=True)
    total += float(np.sum(counts * (counts + 1) / 2))
  return 3 * 4 * num_heads * head_dim * total


def available(platform: str) -> tuple[str, ...]:
  return ("xla", "cudnn") if platform == "cuda" else ("xla",)


def run(size: str = "llama-3.2-1b", rows: int = 16, seq: int = 1056, segments: int = 1,
        dtype: str = "bfloat16", repeats: int = 10, seed: int = 0) -> dict[str, dict[str, float]]:
  from rlvr_jax.bench import machine_line
  cfg = rj.get_model_config(size)
  n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  platform = transformer.accelerator_platform()
  print(f"attention bench: {size} heads (q {n}, kv {k}, head_dim {h}), {rows} rows x {seq} "
        f"tokens, {segments} segment(s) per row + {seq // 8} padding, {dtype}; forward + "
        f"backward", flush=True)
  print(machine_line(), flush=True)
  keys = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(keys[0], (rows, seq, n, h), jnp.float32)
  kk = jax.random.normal(keys[1], (rows, seq, k, h), jnp.float32)
  v = jax.random.normal(keys[2], (rows, seq, k, h), jnp.float32)
  positions, segment_ids = packed_layout(rows, seq, segments)
  mask = transformer.sequence_mask(positions, segment_ids)
  real_BT = (segment_ids > 0)
  # the cotangent only on real query rows: padding's outputs feed no loss
  ct = jax.random.normal(keys[3], (rows, seq, n, h), jnp.float32) * real_BT[:, :, None, None]
  scale = 1.0 / np.sqrt(h)

  def fwd_bwd(implementation, dt):
    def loss(q, kk, v):
      out = transformer.full_attention(q.astype(dt), kk.astype(dt), v.astype(dt), mask, scale,
                                       implementation)
      return jnp.sum(out.astype(jnp.float32) * ct), out
    grad = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)
    return jax.jit(lambda q, kk, v: grad(q, kk, v))

  def on_real(x):                     # [B, T, ...] -> the real tokens' entries, f32
    return np.asarray(x, np.float32)[np.asarray(real_BT)]

  ref_grads, ref_out = fwd_bwd("xla", jnp.float32)(q, kk, v)
  ref = [on_real(ref_out)] + [on_real(g) for g in ref_grads]
  names = ERROR_NAMES
  flops = useful_flops(positions, segment_ids, n, h)
  results: dict[str, dict[str, float]] = {}
  failed = []
  for impl in available(platform):
    fn = fwd_bwd(impl, jnp.dtype(dtype))
    try:
      grads, out = jax.block_until_ready(fn(q, kk, v))
    except Exception as e:                                    # noqa: BLE001 -- reported, not hidden
      print(f"  {impl:6s} failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
      failed.append(impl)
      continue
    got = [on_real(out)] + [on_real(g) for g in grads]
    errors = {name: float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))
              for name, a, b in zip(names, got, ref)}
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(q, kk, v))
      times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    results[impl] = {"seconds": t, "flops_per_s": flops / t, **errors}
  xla = results.get("xla")
  status = 1 if failed else 0
  for impl, r in results.items():
    ratio = f"{xla['seconds'] / r['seconds']:.2f}x XLA's speed" if xla else ""
    print(f"  {impl:6s} {r['seconds'] * 1e3:9.2f} ms  {r['flops_per_s'] / 1e12:8.2f} TFLOP/s  "
          f"{ratio}; max error vs f32 (relative to the largest value): "
          + ", ".join(f"{name} {r[name]:.1e}" for name in names), flush=True)
    if xla and impl != "xla":
      if not computes_the_same(r, xla):
        print(f"  {impl}: error above 4x XLA's in {dtype} (+1e-3): it computes something else",
              flush=True)
        status = 1
  results["status"] = {"exit": status}
  return results


def main(argv: list[str] | None = None) -> int:
  """argv as sys.argv: argv[0] is the program name (what `rlvr-jax bench attention` passes)."""
  argv = sys.argv if argv is None else argv
  ap = argparse.ArgumentParser(prog=argv[0] if argv else None,
                               description=__doc__.splitlines()[0])
  ap.add_argument("--size", default="llama-3.2-1b", help="a named size: its head counts")
  ap.add_argument("--rows", type=int, default=16)
  ap.add_argument("--seq", type=int, default=1056)
  ap.add_argument("--segments", type=int, default=1, help="documents per row")
  ap.add_argument("--dtype", default="bfloat16")
  ap.add_argument("--repeats", type=int, default=10)
  args = ap.parse_args(argv[1:])
  out = run(args.size, args.rows, args.seq, args.segments, args.dtype, args.repeats)
  return int(out["status"]["exit"])


if __name__ == "__main__":
  sys.exit(main())
