"""Forward-pass benchmark: tokens/s of `rj.forward` (jitted) vs transformers' LlamaForCausalLM on
the same weights in the same run, plus the time to convert an HF directory both ways.

  .venv/bin/python -m rlvr_jax.bench.forward [--size toy-50m --batch 8 --seq 256 --iters 5]
  rlvr-jax bench forward [same flags]

Random weights are written with `save_hf` to a temporary directory (timed), read back with
`load_hf` (timed) and loaded into transformers from that directory, so both sides run exactly the
same checkpoint. f32 everywhere; torch runs under `inference_mode` with one thread per core.
Each throughput is the median over `--iters` timed calls after one warm-up call (compile
excluded, `block_until_ready`).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import rlvr_jax as rj
from rlvr_jax import sharding
from rlvr_jax.model import hf


def _median_seconds(fn, iters: int) -> float:
  fn()  # warm-up (compiles on our side)
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def run(size: str = "toy-50m", batch: int = 8, seq: int = 256, iters: int = 5,
        threads: int | None = None, seed: int = 0, torch_side: bool = True) -> dict[str, float]:
  """Runs the benchmark, prints the figures and returns them as a dict. `torch_side=False`
  skips the transformers reference (and the torch import): our figures only."""
  from rlvr_jax.bench import machine_line
  if torch_side:
    import torch
    import transformers

  threads = threads or os.cpu_count() or 1
  if torch_side:
    torch.set_num_threads(threads)
  cfg = rj.get_model_config(size, dtype="float32", param_dtype="float32")
  if cfg.family != "llama":
    raise ValueError(f"--size {size}: this benchmark compares against LlamaForCausalLM; pick a "
                     f"llama-family size")
  mesh = sharding.make_mesh()
  sharding.check_divisible(batch, mesh, what="--batch")
  params = jax.block_until_ready(sharding.init_params(cfg, jax.random.key(seed), mesh))
  tokens = np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch, seq), dtype=np.int32)
  torch_desc = (f"torch {torch.__version__} with {threads} threads" if torch_side
                else "no transformers reference")
  print(f"forward bench: size={size} ({cfg.num_params() / 1e6:.1f}M params) batch={batch} "
        f"seq={seq} f32; jax {jax.__version__} on {len(jax.devices())} {jax.devices()[0].platform} "
        f"device(s), {torch_desc} ({os.cpu_count()} cores)")
  print(machine_line())

  with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "hf"
    t0 = time.perf_counter()
    hf.save_hf(path, cfg, params)
    save_s = time.perf_counter() - t0
    size_mb = sum(p.stat().st_size for p in path.iterdir()) / 1e6
    t0 = time.perf_counter()
    cfg_loaded, loaded = hf.load_hf(path, jnp.float32, mesh=mesh)
    jax.block_until_ready(loaded)
    load_s = time.perf_counter() - t0
    if torch_side:
      model = transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
  print(f"convert: save_hf {save_s:.2f} s, load_hf {load_s:.2f} s ({size_mb:.0f} MB of safetensors)")

  fwd = jax.jit(lambda p, t: rj.forward(cfg_loaded, p, t))
  tokens_dev = jax.device_put(tokens, sharding.data_sharding(mesh))
  box = {}

  def ours():
    box["ours"] = jax.block_until_ready(fwd(loaded, tokens_dev))
  t_ours = _median_seconds(ours, iters)
  n = batch * seq
  if not torch_side:
    print(f"rj.forward (jit):       {t_ours * 1e3:9.1f} ms  {n / t_ours:10.0f} tokens/s")
    return {"ours_tokens_per_s": n / t_ours, "ours_s": t_ours, "save_hf_s": save_s,
            "load_hf_s": load_s}

  ids = torch.from_numpy(tokens.astype(np.int64))

  def theirs():
    with torch.inference_mode():
      box["theirs"] = model(ids).logits
  t_torch = _median_seconds(theirs, iters)

  diff = float(np.abs(np.asarray(box["ours"]) - box["theirs"].numpy()).max())
  ours_tps, torch_tps = n / t_ours, n / t_torch
  attn = getattr(model.config, "_attn_implementation", "?")
  print(f"rj.forward (jit):       {t_ours * 1e3:9.1f} ms  {ours_tps:10.0f} tokens/s")
  print(f"transformers ({attn}):  {t_torch * 1e3:9.1f} ms  {torch_tps:10.0f} tokens/s")
  print(f"ratio rj / transformers = {ours_tps / torch_tps:.2f}x; max |logit diff| = {diff:.2e}")
  return {"ours_tokens_per_s": ours_tps, "ours_s": t_ours, "torch_tokens_per_s": torch_tps,
          "torch_s": t_torch, "ratio": ours_tps / torch_tps, "save_hf_s": save_s, "load_hf_s": load_s,
          "max_abs_logit_diff": diff}


def main(argv: list[str] | None = None) -> int:
  """argv as sys.argv: argv[0] is the program name (what `rlvr-jax bench forward` passes)."""
  argv = sys.argv if argv is None else argv
  ap = argparse.ArgumentParser(prog=argv[0] if argv else None,
                               description=__doc__.splitlines()[0])
  ap.add_argument("--size", default="toy-50m", help="a named llama-family size (rj.SIZES)")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--seq", type=int, default=256)
  ap.add_argument("--iters", type=int, default=5, help="timed calls per side (median)")
  ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
  args = ap.parse_args(argv[1:])
  run(args.size, args.batch, args.seq, args.iters, args.threads)
  return 0


if __name__ == "__main__":
  sys.exit(main())
