"""Benchmark of the in-graph sampler: decode tokens/s of `rj.generate`, transformers' `generate`
on the same weights, the decode roofline (one decode step's matmuls alone, jitted), and the
memory-bandwidth bound (the bytes a decode must read, at this device's measured bandwidth).

  .venv/bin/python -m rlvr_jax.bench.sample [--size toy-7m --batch 16 --prompt_len 32
                                             --new_tokens 128 --repeats 5 --dtype float32]
  # on a GPU, the 1B target:  --size llama-3.2-1b --batch 64 --dtype bfloat16 --skip_hf

Every figure is the median over `--repeats` timed runs after a warm-up (compile excluded,
`block_until_ready`). Decoding is forced to exactly `new_tokens` steps (no EOS on our side,
min_new_tokens on the transformers side). Weights, activations and the KV cache use `--dtype`.
"""
from __future__ import annotations

import argparse
import sys
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import rlvr_jax as rj
from rlvr_jax.model import hf, transformer
from rlvr_jax.sampling import generate, segment_ends


def to_torch_llama(cfg, params):
  """A transformers LlamaForCausalLM (f32, eager attention) holding the same weights."""
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM
  hf_cfg = LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
      intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_norm_eps,
      rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
      tie_word_embeddings=cfg.tie_embeddings, max_position_embeddings=cfg.max_seq_len,
      attention_bias=False)
  model = LlamaForCausalLM(hf_cfg).eval().to(torch.float32)
  sd = hf.to_hf_state_dict(cfg, params, dtype=jnp.float32)
  state = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in sd.items()}
  missing, unexpected = model.load_state_dict(state, strict=False)
  missing = [k for k in missing if not (cfg.tie_embeddings and k == "lm_head.weight")]
  if missing or unexpected:
    raise RuntimeError(f"weight copy mismatch: missing {missing}, unexpected {unexpected}")
  return model


def decode_matmuls_fn(cfg, params, batch: int):
  """The roofline probe: one decode step's matmuls alone (q/k/v/o/gate/up/down per layer, then
  lm_head) for [batch, 1] tokens, chained as in the model, jitted together, in the compute dtype.
  Weights are passed as separate per-layer 2-D arrays so that nothing but the matmuls runs."""
  sd = hf.to_hf_state_dict(cfg, params)
  dtype = cfg.jnp_dtype

  def w(name):                       # HF [out, in] -> [in, out]
    return jnp.asarray(sd[name].T, dtype)
  per_layer = []
  for i in range(cfg.num_layers):
    pre = f"model.layers.{i}."
    per_layer.append(tuple(w(pre + name + ".weight") for name in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")))
  head = w("model.embed_tokens.weight" if cfg.tie_embeddings else "lm_head.weight")
  d = cfg.hidden_size

  @jax.jit
  def step(x_BD, per_layer, head):
    kv = []
    for wq, wk, wv, wo, wg, wu, wd in per_layer:
      q = x_BD @ wq
      kv.append((x_BD @ wk, x_BD @ wv))
      x_BD = x_BD + q @ wo
      x_BD = x_BD + ((x_BD @ wg) * (x_BD @ wu)) @ wd
    return x_BD @ head, kv

  x = jax.random.normal(jax.random.key(0), (batch, d), dtype)
  return lambda: jax.block_until_ready(step(x, per_layer, head))


def decode_bytes(cfg, batch: int, prompt_len: int, new_tokens: int) -> tuple[float, float]:
  """(weight bytes, mean live KV-cache bytes) one decode step must read at least: every weight
  but the embedding table (only `batch` rows of it are gathered; it is the head when tied),
  and keys+values of the slots a step attends to (prompt + tokens so far), averaged over steps."""
  item = jnp.dtype(cfg.dtype).itemsize
  weights = cfg.num_params(include_embeddings=False) + cfg.vocab_size * cfg.hidden_size
  mean_slots = prompt_len + (new_tokens - 1) / 2
  kv = 2 * cfg.num_layers * batch * cfg.num_kv_heads * cfg.head_dim * mean_slots
  return weights * item, kv * item


def measured_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> float:
  """Bytes/s of a jitted streaming op (x <- 2x in place, each byte read once and written once)
  over an array of `nbytes` on the default device: the bandwidth a decode step can hope for.
  The buffer is donated, so no fresh output pages are faulted in during the timing."""
  scale = jax.jit(lambda a: a * 2.0, donate_argnums=0)
  x = jax.block_until_ready(scale(jnp.ones((nbytes // 4,), jnp.float32)))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    x = jax.block_until_ready(scale(x))
    times.append(time.perf_counter() - t0)
  return 2 * nbytes / statistics.median(times)


def main(argv=None):
  """argv as sys.argv: argv[0] is the program name (what `rlvr-jax bench sample` passes)."""
  argv = sys.argv if argv is None else argv
  ap = argparse.ArgumentParser(prog=argv[0] if argv else None, description=__doc__.splitlines()[0])
  ap.add_argument("--size", default="toy-7m")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--prompt_len", type=int, default=32)
  ap.add_argument("--new_tokens", type=int, default=128)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                  help="weights, activations and KV cache")
  ap.add_argument("--skip_hf", action="store_true", help="do not time transformers' generate")
  args = ap.parse_args(argv[1:])
  run(args.size, args.batch, args.prompt_len, args.new_tokens, args.repeats, args.dtype,
      args.skip_hf)
  return 0


def run(size: str = "toy-7m", batch: int = 16, prompt_len: int = 32, new_tokens: int = 128,
        repeats: int = 5, dtype: str = "float32", skip_hf: bool = False) -> dict[str, float]:
  """Runs the benchmark, prints the figures and returns them as a dict."""
  from types import SimpleNamespace

  from rlvr_jax.bench import machine_line
  args = SimpleNamespace(size=size, batch=batch, prompt_len=prompt_len, new_tokens=new_tokens,
                         repeats=repeats, dtype=dtype, skip_hf=skip_hf)
  cfg = rj.get_model_config(args.size, dtype=args.dtype, param_dtype=args.dtype)
  params = jax.jit(transformer.init_params_fn(cfg))(jax.random.key(0))
  b, p, m = args.batch, args.prompt_len, args.new_tokens
  prompts = np.asarray(jax.random.randint(jax.random.key(1), (b, p), 0, cfg.vocab_size), np.int32)
  lengths = np.full((b,), p, np.int32)
  print(f"sampler bench: size={args.size} ({cfg.num_params() / 1e6:.1f}M params) batch={b} "
        f"prompt={p} new_tokens={m} {args.dtype}, jax {jax.__version__} on "
        f"{jax.devices()[0].device_kind} ({os.cpu_count()} cores)")
  print(machine_line())

  def run_ours(cache_segments: int = 0):
    return jax.block_until_ready(
        generate(cfg, params, prompts, lengths, jax.random.key(2), max_new_tokens=m,
                 temperature=0.0, eos_id=(), pad_id=0, cache_segments=cache_segments))
  step_fn = decode_matmuls_fn(cfg, params, b)
  out = run_ours()                                     # compile
  step_fn()
  assert int(out.num_steps) == m, f"expected {m} decode steps, got {int(out.num_steps)}"
  # Interleave the two measurements so that load from other processes hits both alike.
  gen_times, roof_times = [], []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    run_ours()
    gen_times.append(time.perf_counter() - t0)
    step_times = []
    for _ in range(20):
      t0 = time.perf_counter()
      step_fn()
      step_times.append(time.perf_counter() - t0)
    roof_times.append(statistics.median(step_times) * m)
  t_ours, t_roof = statistics.median(gen_times), statistics.median(roof_times)
  # Each repeat times both back to back, so the per-repeat ratio cancels slow drifts in load.
  roof_share = statistics.median(r / g for r, g in zip(roof_times, gen_times))
  print(f"rj.generate:            {t_ours * 1e3:8.1f} ms  {b * m / t_ours:9.0f} tokens/s "
        f"({t_ours / m * 1e3:.2f} ms/step incl. prefill; runs "
        f"{', '.join(f'{x * 1e3:.0f}' for x in gen_times)} ms)")
  print(f"decode roofline:        {t_roof * 1e3:8.1f} ms  {b * m / t_roof:9.0f} tokens/s "
        f"(matmuls of one step {t_roof / m * 1e3:.3f} ms x {m})")
  print(f"  rj.generate reaches {100 * roof_share:.0f}% of the roofline (median over repeats of "
        f"roofline / generate; target >= 70%)")
  weight_bytes, kv_bytes = decode_bytes(cfg, b, p, m)
  bandwidth = measured_bandwidth()
  t_mem = m * (weight_bytes + kv_bytes) / bandwidth
  print(f"memory-bandwidth bound: {t_mem * 1e3:8.1f} ms  ({m} steps x (weights "
        f"{weight_bytes / 2**20:.1f} MiB + live KV cache {kv_bytes / 2**20:.1f} MiB on average) at "
        f"{bandwidth / 1e9:.1f} GB/s measured)")
  print(f"  rj.generate takes {t_ours / t_mem:.2f}x the memory-bandwidth bound (GPU target: "
        f"<= 2x at batch 64 for a 1B model)")
  segments = len(segment_ends(m))
  if segments > 1:
    # the reference: one decode loop over the full P + M slot cache (cache_segments=1)
    single = run_ours(1)
    same = bool(np.array_equal(np.asarray(single.tokens), np.asarray(out.tokens)))
    one_times, seg_times = [], []
    for _ in range(args.repeats):
      for fn, ts in ((lambda: run_ours(1), one_times), (run_ours, seg_times)):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    t_one, t_seg = statistics.median(one_times), statistics.median(seg_times)
    print(f"  {segments} cache segments (automatic from 64 new tokens): {t_seg * 1e3:.1f} ms "
          f"vs one loop over the full {p + m}-slot cache {t_one * 1e3:.1f} ms: "
          f"{t_one / t_seg:.2f}x; greedy tokens {'equal' if same else 'DIFFER'}")
  result = {"generate_s": t_ours, "generate_tokens_per_s": b * m / t_ours,
            "roofline_s": t_roof, "roofline_tokens_per_s": b * m / t_roof,
            "roofline_share": roof_share, "memory_bound_s": t_mem,
            "memory_bound_ratio": t_ours / t_mem, "bandwidth_bytes_per_s": bandwidth,
            "weight_bytes": weight_bytes, "kv_bytes": kv_bytes}

  if not args.skip_hf:
    import torch
    model = to_torch_llama(cfg, params)
    if args.dtype != "float32":
      model = model.to(getattr(torch, args.dtype))
    ids = torch.from_numpy(prompts.astype(np.int64))
    hf_box = {}

    def run_hf(new_tokens=m):
      with torch.inference_mode():
        hf_box["out"] = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, pad_token_id=0, eos_token_id=None)
    # threads = cores is the reference figure; 1 thread is shown too because OpenMP spinning
    # makes multi-threaded torch erratic on a machine shared with other processes.
    for threads in dict.fromkeys([os.cpu_count(), 1]):
      torch.set_num_threads(threads)
      run_hf(4)                                        # warm-up
      hf_times = []
      for _ in range(max(1, args.repeats // 3)):
        t0 = time.perf_counter()
        run_hf()
        hf_times.append(time.perf_counter() - t0)
      t_hf = statistics.median(hf_times)
      agree = float(np.mean(hf_box["out"][:, p:].numpy() == np.asarray(out.tokens)))
      print(f"transformers generate:  {t_hf * 1e3:8.1f} ms  {b * m / t_hf:9.0f} tokens/s "
            f"(torch {torch.__version__}, {threads} thread{'s' if threads > 1 else ''})")
      print(f"  rj.generate / transformers = {t_hf / t_ours:.2f}x (target >= 3x); greedy tokens "
            f"equal on {100 * agree:.1f}% of positions")
      print(f"  ceiling: the matmuls alone (the roofline) run {t_hf / t_roof:.2f}x faster than "
            f"transformers' generate")
      key = "transformers" if threads == os.cpu_count() else f"transformers_{threads}thread"
      result.update({f"{key}_s": t_hf, f"{key}_tokens_per_s": b * m / t_hf,
                     f"{key}_speedup": t_hf / t_ours, "greedy_agreement": agree})
  return result

if __name__ == "__main__":
  sys.exit(main())
