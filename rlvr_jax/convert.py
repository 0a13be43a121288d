"""`rlvr-jax convert`: Hugging Face directory <-> orbax checkpoint, streaming tensor by tensor.

  --config.to=orbax  src = an HF dir (config.json + *.safetensors)  -> WORKDIR as a params-only
                     orbax checkpoint (WORKDIR/params + WORKDIR/config.json), usable as
                     `init.from_checkpoint` or by `rj.load_params`.
  --config.to=hf     src = a run dir (optionally PATH:STEP) or params-only checkpoint -> WORKDIR
                     as an HF dir that transformers' AutoModelForCausalLM loads.
"""
from __future__ import annotations

import time

import jax.numpy as jnp


def run(config, workdir: str) -> int:
  from rlvr_jax import sharding
  from rlvr_jax.model import hf
  from rlvr_jax.run import paths
  from rlvr_jax.train import checkpoints

  if config.to not in ("orbax", "hf"):
    raise ValueError(f"convert.to={config.to!r}: choose 'orbax' (HF -> orbax) or 'hf' "
                     f"(orbax -> HF)")
  if not config.src:
    raise ValueError("--config.src is required: the directory to convert from")
  mesh = sharding.make_mesh(tuple(config.mesh))
  dtype = jnp.dtype(config.dtype) if config.dtype else None
  start = time.perf_counter()
  if config.to == "orbax":
    cfg, params = hf.load_hf(config.src, dtype, mesh=mesh)
    loaded = time.perf_counter()
    checkpoints.save_params(workdir, cfg, params)
  else:
    path, step = paths.parse_checkpoint_ref(config.src)
    cfg, params = checkpoints.load_model(path, step, mesh=mesh)
    loaded = time.perf_counter()
    hf.save_hf(workdir, cfg, params, dtype=dtype,
               max_shard_bytes=int(config.max_shard_gb * 1e9), overwrite=config.overwrite)
  done = time.perf_counter()
  n = cfg.num_params()
  print(f"converted {config.src} -> {workdir} ({config.to}): {n / 1e6:.1f}M params, "
        f"read {loaded - start:.2f}s, write {done - loaded:.2f}s, total {done - start:.2f}s")
  return 0
