"""Train-step benchmark: tokens/s, step time and MFU of the jitted train step, against a large
f32 matmul's measured throughput (the peak) and a plain PyTorch training step, all in one run.

  .venv/bin/python -m rlvr_jax.bench.train [--size toy-50m --batch 8 --seq 256 --rounds 3]
  rlvr-jax bench train [same flags]

Both sides train the same architecture from the same weights (ours written with `save_hf` and
loaded by transformers' LlamaForCausalLM) on the same batch: AdamW, global-norm clipping 1.0,
the mean next-token loss over the same L-1 targets of L input tokens. Our step is
`rlvr_jax.train.steps.jit_train_step` exactly as the run loop uses it (state donated, in-graph
non-finite skip). After one warm-up step per side (compile excluded) the peak matmul, our step
and the PyTorch step are timed in turn, `--rounds` times, and each figure is the median: on a
machine shared with other work every side sees the same load. MFU = model FLOPs
(ModelConfig.flops_per_token: 6·N + attention) × tokens/s ÷ the measured matmul FLOP/s. On accelerators the step computes in bf16 (`--dtype`).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import rlvr_jax as rj
from rlvr_jax import sharding
from rlvr_jax.train import optim, state as state_lib, steps


def _median_seconds(fn, iters: int, warmup: int = 1) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _optim_config(lr: float = 1e-4) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(lr=lr, schedule="constant", warmup=0, final_lr_frac=0.0,
                                        b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01,
                                        clip_norm=1.0))


def run(size: str = "toy-50m", batch: int = 8, seq: int = 256, rounds: int = 3,
        dtype: str | None = None, threads: int | None = None, torch_side: bool = True,
        matmul_n: int = 2048, seed: int = 0, remat: str = "none") -> dict[str, float]:
  """Runs the benchmark, prints the figures and returns them as a dict.

  The three measurements are interleaved, `rounds` times: one peak matmul, one of our steps,
  one PyTorch step; each figure is the median over rounds, so a machine shared with other work
  loads every side alike.
  """
  platform = jax.devices()[0].platform
  dtype = dtype or ("float32" if platform == "cpu" else "bfloat16")
  cfg = rj.get_model_config(size, dtype=dtype, param_dtype="float32", remat=remat)
  if torch_side and cfg.family != "llama":
    raise ValueError(f"--size {size}: the PyTorch side is LlamaForCausalLM; pick a llama-family "
                     f"size or pass --no-torch")
  threads = threads or os.cpu_count() or 1
  mesh = sharding.make_mesh()
  sharding.check_divisible(batch, mesh, what="--batch")
  print(f"train bench: size={size} ({cfg.num_params() / 1e6:.1f}M params) batch={batch} seq={seq}"
        f" remat={remat}"
        f" compute {dtype}, f32 master weights; jax {jax.__version__} on {len(jax.devices())} "
        f"{platform} device(s) ({os.cpu_count()} cores)", flush=True)
  from rlvr_jax.bench import machine_line
  print(machine_line(), flush=True)

  # The peak: a jitted n×n matmul in the compute dtype (f32 on CPU), on every device.
  peak_dtype = jnp.float32 if platform == "cpu" else jnp.dtype(dtype)
  a = jax.random.normal(jax.random.key(0), (matmul_n, matmul_n), peak_dtype)
  b = jax.random.normal(jax.random.key(1), (matmul_n, matmul_n), peak_dtype)
  mm = jax.jit(lambda x, y: x @ y)

  def matmul():
    mm(a, b).block_until_ready()

  sample = np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch, seq + 1),
                                                dtype=np.int32)
  mask = np.ones((batch, seq), np.float32)
  mask[:, -1] = 0.0                       # the same L-1 targets as HF's shifted labels
  host_batch = {"tokens": sample[:, :seq], "targets": sample[:, 1:], "loss_mask": mask}

  opt = optim.make_optimizer(_optim_config(), 1000)
  params = sharding.init_params(cfg, jax.random.key(seed), mesh)
  hf_dir = None
  if torch_side:
    hf_dir = tempfile.TemporaryDirectory()
    rj.save_hf(hf_dir.name, cfg, params)   # the torch side starts from the same weights
  state = state_lib.create_train_state(cfg, opt, mesh, jax.random.key(seed), params)
  train_step = steps.jit_train_step(cfg, opt, mesh, state_lib.state_shardings(cfg, opt, mesh))
  batch_dev = jax.device_put(host_batch, steps.batch_sharding(mesh))
  box = {"state": state, "losses": []}

  def ours():
    box["state"], m = train_step(box["state"], batch_dev)
    box["losses"].append(float(m["loss"]))   # float() waits for the step

  t0 = time.perf_counter()
  ours()
  compile_s = time.perf_counter() - t0
  matmul()
  sides = {"matmul": matmul, "ours": ours}
  if torch_side:
    theirs, torch_info = _torch_step(hf_dir.name, sample[:, :seq], threads)
    hf_dir.cleanup()
    theirs()                               # warm-up
    sides["torch"] = theirs
  times = {k: [] for k in sides}
  for _ in range(rounds):
    for k, fn in sides.items():
      t0 = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t0)
  med = {k: statistics.median(v) for k, v in times.items()}

  peak = 2.0 * matmul_n ** 3 / med["matmul"] * len(jax.devices())
  n_tok = batch * seq
  flops_tok = cfg.flops_per_token(seq)
  ours_tps = n_tok / med["ours"]
  ours_mfu = flops_tok * ours_tps / peak
  print(f"matmul peak ({matmul_n}^3 {jnp.dtype(peak_dtype).name}): {peak / 1e9:10,.1f} GFLOP/s",
        flush=True)
  print(f"rlvr_jax train step:  {med['ours'] * 1e3:9.1f} ms/step {ours_tps:10.0f} tokens/s  "
        f"MFU {100 * ours_mfu:5.1f}%  (first step incl. compile {compile_s:.1f} s)")
  out = {"peak_flops": peak, "flops_per_token": flops_tok, "ours_tokens_per_s": ours_tps,
         "ours_step_s": med["ours"], "ours_mfu": ours_mfu, "ours_first_loss": box["losses"][0]}
  if torch_side:
    torch_tps = n_tok / med["torch"]
    print(f"PyTorch train step:   {med['torch'] * 1e3:9.1f} ms/step {torch_tps:10.0f} tokens/s  "
          f"MFU {100 * flops_tok * torch_tps / peak:5.1f}%  ({torch_info})")
    ratio = ours_tps / torch_tps
    print(f"ratio rlvr_jax / PyTorch = {ratio:.2f}x  (first-step loss {box['losses'][0]:.5f} vs "
          f"{torch_info.losses[0]:.5f}; medians of {rounds} interleaved rounds)")
    out.update(torch_tokens_per_s=torch_tps, torch_step_s=med["torch"],
               torch_mfu=flops_tok * torch_tps / peak, torch_first_loss=torch_info.losses[0],
               ratio=ratio)
  return out


class _TorchInfo(str):
  losses: list


def _torch_step(hf_dir: str, ids_np: np.ndarray, threads: int):
  """A plain PyTorch train step (LlamaForCausalLM, AdamW, clipping) on the same weights."""
  import torch
  import transformers
  torch.set_num_threads(threads)
  model = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                          weight_decay=0.01)
  ids = torch.from_numpy(ids_np.astype(np.int64))
  info = _TorchInfo(f"transformers LlamaForCausalLM, "
                    f"{getattr(model.config, '_attn_implementation', '?')}, torch "
                    f"{torch.__version__}, {threads} threads")
  info.losses = []

  def theirs():
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    info.losses.append(float(loss.detach()))
  return theirs, info


def main(argv: list[str] | None = None) -> int:
  """argv as sys.argv: argv[0] is the program name (what `rlvr-jax bench train` passes)."""
  argv = sys.argv if argv is None else argv
  ap = argparse.ArgumentParser(prog=argv[0] if argv else None,
                               description=__doc__.splitlines()[0])
  ap.add_argument("--size", default="toy-50m", help="a named llama-family size (rj.SIZES)")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--seq", type=int, default=256)
  ap.add_argument("--rounds", type=int, default=3,
                  help="interleaved rounds (matmul, our step, torch step); medians reported")
  ap.add_argument("--dtype", default=None, help="compute dtype (default: f32 on CPU, else bf16)")
  ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
  ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch side (e.g. on TPU)")
  ap.add_argument("--matmul-n", type=int, default=2048, help="size of the peak-FLOPs matmul")
  ap.add_argument("--remat", default="none", help="remat policy of our step: none | full | dots "
                  "| dots_no_batch (dots is ~17%% faster on XLA:CPU at toy-50m: it saves the "
                  "transposes of stored activations in the backward pass)")
  args = ap.parse_args(argv[1:])
  run(args.size, args.batch, args.seq, args.rounds, args.dtype, args.threads, not args.no_torch,
      args.matmul_n, remat=args.remat)
  return 0


if __name__ == "__main__":
  sys.exit(main())
