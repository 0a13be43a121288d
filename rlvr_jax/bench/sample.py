"""Benchmark of the in-graph sampler: decode tokens/s of `rj.generate`, transformers' `generate`
on the same weights, the decode roofline (the decode steps' matmuls alone, attention products over
the mean live cache included, in one jitted loop), and the memory-bandwidth bound (the bytes a
decode must read, at this device's measured bandwidth).

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


def mean_live_slots(prompt_len: int, new_tokens: int) -> float:
  """The cache slots a decode step attends to at least (prompt + tokens so far), averaged over
  the decode steps."""
  return prompt_len + (new_tokens - 1) / 2


def decode_matmuls_program(cfg, params, batch: int, steps: int = 1, cache_slots: int = 0):
  """The roofline probe: `steps` decode steps' matmuls alone, chained as in the model and run in
  one jitted fori_loop (as the sampler's while_loop runs them: no host dispatch per step), in the
  compute dtype. Per layer q/k/v/o/gate/up/down and, with `cache_slots`, the attention's two
  products over a cache of that many slots (queries x keys, then those scores as the weights of
  the values; the softmax between them is not a matmul); then lm_head. Each step starts from the
  previous one's hidden state, so no step can be hoisted out of the loop. Weights (and caches)
  are separate arrays, so nothing but the matmuls runs. Returns (the jitted program, its
  arguments)."""
  sd = hf.to_hf_state_dict(cfg, params)
  dtype = cfg.jnp_dtype
  b, k, h = batch, cfg.num_kv_heads, cfg.head_dim
  g = cfg.num_heads // k

  def w(name):                       # HF [out, in] -> [in, out]
    return jnp.asarray(sd[name].T, dtype)
  per_layer = []
  for i in range(cfg.num_layers):
    pre = f"model.layers.{i}."
    per_layer.append(tuple(w(pre + name + ".weight") for name in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")))
  head = w("model.embed_tokens.weight" if cfg.tie_embeddings else "lm_head.weight")
  caches = []
  for i in range(cfg.num_layers if cache_slots else 0):
    key_i, value_i = jax.random.split(jax.random.key(100 + i))
    caches.append((jax.random.normal(key_i, (b, k, h, cache_slots), dtype) * 0.1,
                   jax.random.normal(value_i, (b, k, cache_slots, h), dtype)))

  def step(x_BD, per_layer, head, caches):
    kv = []
    for i, (wq, wk, wv, wo, wg, wu, wd) in enumerate(per_layer):
      q_BQ = x_BD @ wq
      kv.append((x_BD @ wk, x_BD @ wv))
      if caches:
        keys_BKHS, values_BKSH = caches[i]
        scores_BKGS = jnp.einsum("bkgh,bkhs->bkgs", q_BQ.reshape(b, k, g, h), keys_BKHS)
        q_BQ = jnp.einsum("bkgs,bksh->bkgh", scores_BKGS, values_BKSH).reshape(b, k * g * h)
      x_BD = x_BD + q_BQ @ wo
      x_BD = x_BD + ((x_BD @ wg) * (x_BD @ wu)) @ wd
    return x_BD, x_BD @ head, kv

  @jax.jit
  def run(x_BD, per_layer, head, caches):
    shapes = jax.eval_shape(step, x_BD, per_layer, head, caches)
    carry = (x_BD,) + jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes[1:])
    return jax.lax.fori_loop(0, steps, lambda _, c: step(c[0], per_layer, head, caches), carry)

  x = jax.random.normal(jax.random.key(0), (batch, cfg.hidden_size), dtype)
  return run, (x, per_layer, head, caches)


def decode_matmuls_fn(cfg, params, batch: int, steps: int = 1, cache_slots: int = 0):
  """A callable that runs `decode_matmuls_program` once (all `steps`) and waits for it."""
  program, args = decode_matmuls_program(cfg, params, batch, steps, cache_slots)
  return lambda: jax.block_until_ready(program(*args))


def decode_bytes(cfg, batch: int, prompt_len: int, new_tokens: int) -> tuple[float, float]:
  """(weight bytes, mean live KV-cache bytes) one decode step must read at least: every weight
  but the embedding table (only `batch` rows of it are gathered; it is the head when tied),
  and keys+values of the slots a step attends to (prompt + tokens so far), averaged over steps."""
  item = jnp.dtype(cfg.dtype).itemsize
  weights = cfg.num_params(include_embeddings=False) + cfg.vocab_size * cfg.hidden_size
  kv = 2 * cfg.num_layers * batch * cfg.num_kv_heads * cfg.head_dim * \
      mean_live_slots(prompt_len, new_tokens)
  return weights * item, kv * item


def interleaved_times(fns, repeats: int) -> list[list[float]]:
  """Wall times of each callable in `fns`, run one after another `repeats` times (so that load
  from other processes hits them alike): one list of `repeats` seconds per callable."""
  times = [[] for _ in fns]
  for _ in range(repeats):
    for fn, ts in zip(fns, times):
      t0 = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t0)
  return times


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
  ap.add_argument("--temperature", type=float, default=0.0,
                  help="0: greedy (tokens compared with transformers'); > 0: a draw from the "
                       "full tempered softmax on both sides (no top-k / top-p)")
  ap.add_argument("--skip_hf", action="store_true", help="do not time transformers' generate")
  ap.add_argument("--tunix", action="store_true",
                  help="also time tunix's sampler on the same weights (needs the tunix extra, "
                       "in its own venv: see rlvr_jax/bench/tunix_ref.py)")
  args = ap.parse_args(argv[1:])
  if args.temperature < 0:
    ap.error(f"--temperature must be >= 0, got {args.temperature}")
  run(args.size, args.batch, args.prompt_len, args.new_tokens, args.repeats, args.dtype,
      args.skip_hf, args.temperature, args.tunix)
  return 0


def run(size: str = "toy-7m", batch: int = 16, prompt_len: int = 32, new_tokens: int = 128,
        repeats: int = 5, dtype: str = "float32", skip_hf: bool = False,
        temperature: float = 0.0, tunix: bool = False) -> dict[str, float]:
  """Runs the benchmark, prints the figures and returns them as a dict."""
  from types import SimpleNamespace

  from rlvr_jax.bench import machine_line
  args = SimpleNamespace(size=size, batch=batch, prompt_len=prompt_len, new_tokens=new_tokens,
                         repeats=repeats, dtype=dtype, skip_hf=skip_hf, temperature=temperature)
  if tunix:
    from rlvr_jax.bench import tunix_ref
    tunix_ref.import_tunix()                           # fail before any work when missing
  cfg = rj.get_model_config(args.size, dtype=args.dtype, param_dtype=args.dtype)
  if tunix:
    tunix_ref.llama_config(cfg)                        # a config tunix cannot load fails here
  params = jax.jit(transformer.init_params_fn(cfg))(jax.random.key(0))
  b, p, m = args.batch, args.prompt_len, args.new_tokens
  prompts = np.asarray(jax.random.randint(jax.random.key(1), (b, p), 0, cfg.vocab_size), np.int32)
  lengths = np.full((b,), p, np.int32)
  print(f"sampler bench: size={args.size} ({cfg.num_params() / 1e6:.1f}M params) batch={b} "
        f"prompt={p} new_tokens={m} {args.dtype} "
        f"{'greedy' if not temperature else f'temperature={temperature:g}'}, "
        f"jax {jax.__version__} on "
        f"{jax.devices()[0].device_kind} ({os.cpu_count()} cores)")
  print(machine_line())

  def run_ours(cache_segments: int = 0):
    return jax.block_until_ready(
        generate(cfg, params, prompts, lengths, jax.random.key(2), max_new_tokens=m,
                 temperature=temperature, eos_id=(), pad_id=0, cache_segments=cache_segments))
  live = round(mean_live_slots(p, m))
  roof_fn = decode_matmuls_fn(cfg, params, b, steps=m, cache_slots=live)
  dense_fn = decode_matmuls_fn(cfg, params, b, steps=m)
  out = run_ours()                                     # compile
  roof_fn()
  dense_fn()
  assert int(out.num_steps) == m, f"expected {m} decode steps, got {int(out.num_steps)}"
  gen_times, roof_times, dense_times = interleaved_times((run_ours, roof_fn, dense_fn),
                                                         args.repeats)
  t_ours, t_roof, t_dense = (statistics.median(ts) for ts in (gen_times, roof_times, dense_times))
  # Each repeat times them back to back, so the per-repeat ratio cancels slow drifts in load.
  roof_share = statistics.median(r / g for r, g in zip(roof_times, gen_times))
  dense_share = statistics.median(r / g for r, g in zip(dense_times, gen_times))
  print(f"rj.generate:            {t_ours * 1e3:8.1f} ms  {b * m / t_ours:9.0f} tokens/s "
        f"({t_ours / m * 1e3:.2f} ms/step incl. prefill; runs "
        f"{', '.join(f'{x * 1e3:.0f}' for x in gen_times)} ms)")
  print(f"decode roofline:        {t_roof * 1e3:8.1f} ms  {b * m / t_roof:9.0f} tokens/s "
        f"(the matmuls of {m} steps in one loop: projections and head {t_dense / m * 1e3:.3f} "
        f"ms/step, with the attention products over the mean live cache of {live} slots "
        f"{t_roof / m * 1e3:.3f} ms/step)")
  print(f"  rj.generate reaches {100 * roof_share:.0f}% of the roofline (median over repeats of "
        f"roofline / generate; target >= 80%); of the projections and head alone "
        f"{100 * dense_share:.0f}%")
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
    one_times, seg_times = interleaved_times((lambda: run_ours(1), run_ours), args.repeats)
    t_one, t_seg = statistics.median(one_times), statistics.median(seg_times)
    print(f"  {segments} cache segments (automatic from 64 new tokens): {t_seg * 1e3:.1f} ms "
          f"vs one loop over the full {p + m}-slot cache {t_one * 1e3:.1f} ms: "
          f"{t_one / t_seg:.2f}x; {'sampled' if temperature else 'greedy'} tokens "
          f"{'equal' if same else 'DIFFER'}")
  result = {"generate_s": t_ours, "generate_tokens_per_s": b * m / t_ours,
            "roofline_s": t_roof, "roofline_tokens_per_s": b * m / t_roof,
            "roofline_share": roof_share, "dense_matmuls_s": t_dense,
            "dense_matmuls_share": dense_share, "memory_bound_s": t_mem,
            "memory_bound_ratio": t_ours / t_mem, "bandwidth_bytes_per_s": bandwidth,
            "weight_bytes": weight_bytes, "kv_bytes": kv_bytes}

  if tunix:
    result.update(_time_tunix(cfg, params, prompts, m, temperature, args.repeats, run_ours,
                              np.asarray(out.tokens)))
  if not args.skip_hf:
    import torch
    model = to_torch_llama(cfg, params)
    if args.dtype != "float32":
      model = model.to(getattr(torch, args.dtype))
    ids = torch.from_numpy(prompts.astype(np.int64))
    hf_box = {}
    sampling_kwargs = (dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
                       if temperature else dict(do_sample=False))

    def run_hf(new_tokens=m):
      with torch.inference_mode():
        hf_box["out"] = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, pad_token_id=0, eos_token_id=None,
            **sampling_kwargs)
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
      print(f"  rj.generate / transformers = {t_hf / t_ours:.2f}x (target >= 3x); " +
            (f"greedy tokens equal on {100 * agree:.1f}% of positions" if not temperature else
             "sampled tokens, not compared"))
      print(f"  ceiling: the matmuls alone (the roofline) run {t_hf / t_roof:.2f}x faster than "
            f"transformers' generate")
      key = "transformers" if threads == os.cpu_count() else f"transformers_{threads}thread"
      result.update({f"{key}_s": t_hf, f"{key}_tokens_per_s": b * m / t_hf,
                     f"{key}_speedup": t_hf / t_ours})
      if not temperature:
        result["greedy_agreement"] = agree
  return result


def _time_tunix(cfg, params, prompts, new_tokens: int, temperature: float, repeats: int,
                run_ours, our_tokens) -> dict[str, float]:
  """tunix's sampler on the same weights and prompts, timed interleaved with `run_ours`."""
  import tempfile

  from rlvr_jax.bench import tunix_ref
  with tempfile.TemporaryDirectory() as hf_dir:
    rj.save_hf(hf_dir, cfg, params)
    model = tunix_ref.load_model(hf_dir, cfg)
  run_tunix = tunix_ref.sampler_fn(model, cfg, prompts, new_tokens, temperature)
  tunix_tokens = np.asarray(run_tunix())               # compile
  tunix_times, our_times = interleaved_times((run_tunix, run_ours), repeats)
  t_tunix, t_ours = statistics.median(tunix_times), statistics.median(our_times)
  speedup = statistics.median(t / o for t, o in zip(tunix_times, our_times))
  b = prompts.shape[0]
  agree = float(np.mean(tunix_tokens == our_tokens))
  print(f"tunix sampler:          {t_tunix * 1e3:8.1f} ms  {b * new_tokens / t_tunix:9.0f} "
        f"tokens/s (tunix {tunix_ref.tunix_version()}, its jitted prefill + decode loop; "
        f"interleaved with rj.generate at {t_ours * 1e3:.1f} ms)")
  print(f"  rj.generate / tunix = {speedup:.2f}x (median over repeats of the per-repeat ratio); " +
        (f"greedy tokens equal on {100 * agree:.1f}% of positions" if not temperature else
         "sampled tokens, not compared"))
  out = {"tunix_s": t_tunix, "tunix_tokens_per_s": b * new_tokens / t_tunix,
         "tunix_speedup": speedup}
  if not temperature:
    out["tunix_greedy_agreement"] = agree
  return out


if __name__ == "__main__":
  sys.exit(main())
