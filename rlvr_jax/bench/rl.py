"""RL-step benchmark: one GRPO step (sample -> score -> update) of rlvr_jax, its phase split, its
phase roofline, and Hugging Face TRL's `GRPOTrainer` step on the same weights and shapes, in one
run.

  .venv/bin/python -m rlvr_jax.bench.rl [--prompts 16 --group 8 --max_new_tokens 64 --rounds 3]
  rlvr-jax bench rl [same flags]            # --max_new_tokens 256 for the long-response case

The model is a random Llama (default: toy-7m with a 2048-token vocabulary and 3 layers, 3.4M
parameters). Each step samples `--group` completions for each of `--prompts` random prompts of
`--prompt_len` tokens, exactly `--max_new_tokens` each on both sides (no stop token on ours,
min_new_tokens on TRL's; with `--mean_new_tokens N` both stop at a stop token whose output
column is calibrated for a mean of about N: `stop_token_params`), scores them (ours: the mean
token log-prob; TRL: a hash of the ids: neither favours a length), and makes one AdamW update
(lr 1e-6, or 0 with --mean_new_tokens so that neither policy drifts, clip 1.0) of the
clipped GRPO loss (epsilon 0.2, group-normalised advantages, k3 KL to the frozen initial model
with beta 0.001, token-mean over the batch: TRL's loss_type "dapo" with one process and one
micro-batch), temperature 1, f32.

Figures (medians over `--rounds` interleaved rounds after one warm-up step per side, compile
excluded):
- rlvr_jax: the fused jitted step (`rl.step.jit_rl_step`, what the run loop uses by default):
  step time, completions/s, tokens/s; the phase split from the profiled phase mode
  (`rl.profile_phases`: sample, reward, update each waited on). With `--mean_new_tokens`, also
  the step with the packed update (`rl.pack_update`: the phases, the host reading the lengths),
  its split, and its update against the padded one (new bin counts compile outside the timing).
- the phase roofline: the update's useful FLOPs (policy forward + backward and the reference
  forward over every prompt + response token: 6 N L + attention, the output head on response
  tokens only) at the matmul peak measured in the same run (a jitted f32 n x n matmul, as in
  `bench train`), plus the decode's matmuls at their roofline (the new tokens' decode steps'
  matmuls alone in one jitted loop, the attention products over the mean live cache included,
  as in `bench sample`) and the prefill's FLOPs at the peak.
- where the update's time goes: the rates the update's own kernels reach in the same rounds
  (one layer's projection and MLP matmuls over every prompt + response token, and
  jax.nn.dot_product_attention with the causal mask over [rows, prompt + response], each
  forward + backward), and the update's dense and attention FLOPs at those rates. On a small
  model the dense matmuls (K = hidden size) run well below an n x n matmul's peak, and
  attention with a small head_dim far below it; its share grows with the sequence length.
  The ceilings these rates allow (every other op free): the update's MFU and the step's share
  of its roofline cannot pass them without faster kernels.
- TRL: `GRPOTrainer` (num_generations = group, max_completion_length = max_new_tokens,
  min_new_tokens = max_new_tokens, beta 0.001, loss_type "dapo", one update per rollout, no
  vLLM, CPU, f32) timed step by step (on_step_begin -> on_step_end), its own split (generate,
  rewards, the rest), and the ratio. Our rounds run inside TRL's step callback, so both sides
  see the same load. Without TRL installed (`pip install rlvr_jax[bench]`) one line says so and
  the rest is printed.
"""
from __future__ import annotations

import argparse
import dataclasses
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
from rlvr_jax.bench import timed_into
from rlvr_jax.model import transformer
from rlvr_jax.model.config import ATTENTION_IMPLEMENTATIONS, REMAT_POLICIES
from rlvr_jax.rl import loop as rl_loop
from rlvr_jax.rl import step as step_lib
from rlvr_jax.train import loop as train_loop
from rlvr_jax.train import optim, state as state_lib

PAD = 0
EOS = 2          # "</s>" of the TRL side's word tokenizer
LR = 1e-6
BETA = 0.001


def _optim_config(lr: float = LR) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(lr=lr, schedule="constant", warmup=0, final_lr_frac=0.0,
                                        b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                                        clip_norm=1.0))


def model_config(size: str, vocab_size: int, num_layers: int, seq: int, dtype: str):
  overrides = {"vocab_size": vocab_size} if vocab_size else {}
  if num_layers:
    overrides["num_layers"] = num_layers
  cfg = rj.get_model_config(size, dtype=dtype, param_dtype="float32", **overrides)
  return dataclasses.replace(cfg, max_seq_len=max(cfg.max_seq_len, seq))


def update_flops(cfg, rows: int, prompt_len: int, new_tokens: int, lengths=None) -> float:
  """Useful FLOPs of the update phase: the policy's forward + backward (3x a forward) and the
  reference model's forward over every row's prompt + response tokens; the body on all L tokens,
  the output head on the response tokens only (the only logits the loss needs), attention as in
  ModelConfig.flops_per_token (causal average). `lengths` (int[rows], optional): each row's
  response length, when the rows stopped early (the padding past them is not useful)."""
  dense, attention = update_flops_split(cfg, rows, prompt_len, new_tokens, lengths)
  return dense + attention


def update_flops_split(cfg, rows: int, prompt_len: int, new_tokens: int, lengths=None
                       ) -> tuple[float, float]:
  """update_flops as (dense matmuls: the body's projections and MLP and the output head,
  attention's score and value products)."""
  resp = np.full(rows, new_tokens, np.float64) if lengths is None else \
      np.asarray(lengths, np.float64)
  seq = prompt_len + resp
  body = cfg.num_params(include_embeddings=False)
  head = cfg.vocab_size * cfg.hidden_size
  # q k^T and p v over the causal half: 2 L seq n h per token (ModelConfig.flops_per_token)
  per_token_attn = 2 * cfg.num_layers * cfg.num_heads * cfg.head_dim   # x seq
  dense = 4 * float(np.sum(2 * body * seq + 2 * head * resp))
  attention = 4 * float(np.sum(per_token_attn * seq * seq))
  return dense, attention


def computed_score_share(cfg, seq: int) -> float:
  """The share of the [seq, seq] score square the model's attention computes: XLA's runs in
  causal query blocks (transformer.full_attention), a fused kernel is counted whole."""
  xla = transformer.attention_implementation(cfg) == "xla"
  return transformer.score_share(seq) if xla else 1.0


def kernel_fns(cfg, rows: int, seq: int, dtype):
  """Two jitted probes of the update's kernels on one layer, each forward + backward (3x the
  forward's FLOPs): `dense()` the layer's projection and MLP matmuls over rows x seq tokens,
  `attention()` the model's transformer.full_attention over [rows, seq] with a causal mask.
  Returns (dense, attention, their FLOPs: the dense ones as update_flops counts them, the
  attention's the scores it computes, computed_score_share of the square)."""
  d, f, n, k, h = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads,
                   cfg.head_dim)
  keys = iter(jax.random.split(jax.random.key(7), 12))
  w = {name: jax.random.normal(next(keys), shape, dtype) * 0.02 for name, shape in
       (("q", (d, n * h)), ("k", (d, k * h)), ("v", (d, k * h)), ("o", (n * h, d)),
        ("gate", (d, f)), ("up", (d, f)), ("down", (f, d)))}
  x_TD = jax.random.normal(next(keys), (rows * seq, d), dtype)
  # k and v are consumed through fixed weights, not a plain sum (XLA rewrites sum(x @ w) as a
  # cheap reduction first): their forward and both backward products are real matmuls
  c_k = jax.random.normal(next(keys), (rows * seq, k * h), dtype)
  c_v = jax.random.normal(next(keys), (rows * seq, k * h), dtype)

  def layer_matmuls(w, x_TD):
    attn_TD = ((x_TD @ w["q"]) @ w["o"] + jnp.sum((x_TD @ w["k"]) * c_k)
               + jnp.sum((x_TD @ w["v"]) * c_v))
    mlp_TD = (jax.nn.silu(x_TD @ w["gate"]) * (x_TD @ w["up"])) @ w["down"]
    return jnp.sum((attn_TD + mlp_TD).astype(jnp.float32))
  dense_grad = jax.jit(jax.grad(layer_matmuls, argnums=(0, 1)))
  q_BSNH = jax.random.normal(next(keys), (rows, seq, n, h), dtype)
  kv_BSKH = jax.random.normal(next(keys), (rows, seq, k, h), dtype)
  mask = jnp.tril(jnp.ones((seq, seq), bool))[None, None]

  def attention(q, key, value):
    out = transformer.full_attention(q, key, value, mask, 1.0 / np.sqrt(h),
                                     transformer.attention_implementation(cfg))
    return jnp.sum(out.astype(jnp.float32))
  attention_grad = jax.jit(jax.grad(attention, argnums=(0, 1, 2)))
  dense_flops = 3 * 2 * rows * seq * (d * n * h + 2 * d * k * h + n * h * d + 3 * d * f)
  attention_flops = 3 * rows * 4 * seq * seq * n * h * computed_score_share(cfg, seq)
  return (lambda: jax.block_until_ready(dense_grad(w, x_TD)),
          lambda: jax.block_until_ready(attention_grad(q_BSNH, kv_BSKH, kv_BSKH)),
          dense_flops, attention_flops)


def model_decode_fn(cfg, params, rows: int, slots: int):
  """The sampler's decode step alone: transformer.decode_step (per-layer compute-dtype weights,
  the KV cache written in place, attention over all `slots`) for [rows] tokens, jitted with the
  cache donated, as the sampler's while_loop runs it; each call advances one position."""
  weights = transformer.unstack_layers(transformer.compute_weights(cfg, params))
  box = {"cache": transformer.KVCache.from_stacked(transformer.init_cache(cfg, rows, slots)),
         "t": 0}
  step = jax.jit(lambda w, cache, tokens, positions: transformer.decode_step(
      cfg, w, cache, tokens, positions), donate_argnums=1)
  tokens = jnp.full((rows,), 3, jnp.int32)

  def run():
    positions = jnp.full((rows,), box["t"] % slots, jnp.int32)
    logits, box["cache"] = step(weights, box["cache"], tokens, positions)
    jax.block_until_ready(logits)
    box["t"] += 1
  return run


def prefill_flops(cfg, rows: int, prompt_len: int) -> float:
  body = cfg.num_params(include_embeddings=False)
  attn = 2 * cfg.num_layers * prompt_len * cfg.num_heads * cfg.head_dim
  return rows * (2 * body * prompt_len + 2 * attn * prompt_len
                 + 2 * cfg.vocab_size * cfg.hidden_size)


def stop_token_params(cfg, params, prompts_BP, group: int, eos: int, mean_new_tokens: float,
                      max_new_tokens: int, seed: int = 0):
  """(params whose output-head column of `eos` makes a sampled response stop after about
  `mean_new_tokens` tokens on average (at most max_new_tokens), that column's scale).

  A random model's next-token distribution is close to uniform, so a stop token is drawn about
  once per vocabulary-size tokens. The column is set to sigma x a random unit vector u, which
  gives EOS the logit sigma (h . u) at each position, and sigma is found by bisection so that
  the expected length over one sampled batch's positions, E[len] = sum_t prod_{s<t} (1 - p_s)
  with p_s the EOS probability at step s, is mean_new_tokens (computed from the hidden states
  of one rollout sampled without a stop token). Both sides of the bench sample from these
  weights; the lengths they print are what was measured."""
  from rlvr_jax import sampling
  from rlvr_jax.model import transformer
  b, p = prompts_BP.shape
  lengths_B = jnp.full((b,), p, jnp.int32)
  config = sampling.SampleConfig(max_new_tokens=max_new_tokens, pad_id=PAD,
                                 num_samples=group)
  out = jax.jit(sampling.sample_core, static_argnums=(0, 5))(
      cfg, params, jnp.asarray(prompts_BP), lengths_B, jax.random.key(seed + 1), config)
  u_D = jax.random.normal(jax.random.key(seed + 2), (cfg.hidden_size,), jnp.float32)
  u_D = u_D / jnp.linalg.norm(u_D)

  n = b * group
  # rows at a time, so that one chunk's [rows, M, V] f32 logits stay within ~1 GiB (a 128K
  # vocabulary's logits over 512 x 1024 tokens would be 250 GiB at once)
  row_bytes = max_new_tokens * cfg.vocab_size * 4
  chunk = max(d for d in range(1, n + 1) if n % d == 0 and d * row_bytes <= max(1 << 30, row_bytes))

  @jax.jit
  def projections(params, prompts, responses):
    def rows(args):
      rows_p, lengths, responses = args
      tokens, positions, segments, gather = step_lib.sequence_inputs(rows_p, lengths, responses)
      hidden, _ = transformer.hidden_states(cfg, params, tokens, positions, segments)
      hidden_NMD = jnp.take_along_axis(hidden, gather[:, :, None], axis=1).astype(jnp.float32)
      logits = transformer.logits_from_hidden(cfg, params, hidden_NMD)
      others = jax.nn.logsumexp(logits.at[..., eos].set(-jnp.inf), axis=-1)
      return hidden_NMD @ u_D, others
    args = (jnp.repeat(prompts, group, axis=0), jnp.repeat(lengths_B, group), responses)
    proj, others = jax.lax.map(rows, jax.tree.map(
        lambda x: x.reshape((n // chunk, chunk) + x.shape[1:]), args))
    return proj.reshape(n, -1), others.reshape(n, -1)
  proj_NM, others_NM = (np.asarray(x, np.float64) for x in projections(
      params, jnp.asarray(prompts_BP), out.tokens))

  def expected_length(sigma: float) -> float:
    stop_NM = 1.0 / (1.0 + np.exp(others_NM - sigma * proj_NM))
    survive_NM = np.cumprod(1.0 - stop_NM, axis=1)
    alive_NM = np.concatenate([np.ones_like(survive_NM[:, :1]), survive_NM[:, :-1]], axis=1)
    return float(alive_NM.sum(axis=1).mean())

  lo, hi = 0.0, 64.0
  for _ in range(60):                    # E[len] falls as sigma spreads the EOS logit
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if expected_length(mid) > mean_new_tokens else (lo, mid)
  sigma = (lo + hi) / 2
  column = sigma * u_D
  if cfg.tie_embeddings:
    table = params["embed_tokens"]["embedding"]
    params = {**params, "embed_tokens": {"embedding": table.at[eos].set(column.astype(
        table.dtype))}}
  else:
    kernel = params["lm_head"]["kernel"]
    params = {**params, "lm_head": {"kernel": kernel.at[:, eos].set(column.astype(
        kernel.dtype))}}
  return params, sigma


def _median(xs):
  return statistics.median(xs) if xs else float("nan")


def run(size: str = "toy-7m", vocab_size: int = 2048, num_layers: int = 3, prompts: int = 16,
        group: int = 8, prompt_len: int = 32, max_new_tokens: int = 64, rounds: int = 3,
        dtype: str | None = None, trl_side: bool = True, threads: int | None = None,
        matmul_n: int = 2048, seed: int = 0, mean_new_tokens: float = 0.0,
        microbatches: int = 1, remat: str = "none", fused: bool = True,
        attention: str = "auto", tunix: bool = False, scan_unroll: int = 1) -> dict[str, float]:
  """Runs the benchmark, prints the figures and returns them as a dict. tunix: also time tunix's
  GRPOLearner on the same weights (bench/tunix_ref.py; tunix installed in this environment)."""
  from rlvr_jax.bench import machine_line
  from rlvr_jax.bench.sample import decode_bytes, decode_matmuls_fn, mean_live_slots, \
      measured_bandwidth
  from rlvr_jax.sampling import segment_ends
  if tunix:
    from rlvr_jax.bench import tunix_ref
    tunix_ref.import_tunix()                           # fail before any work when missing
  platform = jax.devices()[0].platform
  dtype = dtype or ("float32" if platform == "cpu" else "bfloat16")
  m, p, g, b = max_new_tokens, prompt_len, group, prompts
  rows = b * g
  cfg = dataclasses.replace(model_config(size, vocab_size, num_layers, p + m, dtype), remat=remat,
                            attention=attention, scan_unroll=scan_unroll)
  if tunix:
    tunix_ref.llama_config(cfg)                        # a config tunix cannot load fails here
  if rows % microbatches:
    raise ValueError(f"--microbatches={microbatches} must divide --prompts x --group = {rows}")
  if not fused and (trl_side or tunix):
    raise ValueError("--no-fused times our phases only: pass --no-trl (and no --tunix) too (the "
                     "ratio is taken against the fused step)")
  mesh = sharding.make_mesh()
  sharding.check_divisible(b, mesh, "--prompts")
  threads = threads or os.cpu_count() or 1
  print(f"rl bench: {size} (vocab {cfg.vocab_size}, {cfg.num_layers} layers, "
        f"{cfg.num_params() / 1e6:.1f}M params) {b} prompts x {g} completions, prompt {p} + "
        f"{m} new tokens, {microbatches} microbatch(es), remat {remat}, scan_unroll "
        f"{scan_unroll}, attention "
        f"{transformer.attention_implementation(cfg)}, compute {dtype}, f32 "
        f"master weights; jax {jax.__version__} on "
        f"{len(jax.devices())} {platform} device(s) ({os.cpu_count()} cores)", flush=True)
  print(machine_line(), flush=True)

  # ---- our step: the fused jit (the run loop's default) and the profiled phases
  ragged = mean_new_tokens > 0
  settings = step_lib.RLSettings(
      group_size=g, max_new_tokens=m, pad_id=PAD, eos_ids=(EOS,) if ragged else (),
      temperature=1.0, estimator="grpo",
      clip_low=0.2, clip_high=0.2, dual_clip=None, kl_coef=BETA, kl_estimator="k3",
      agg="token-mean", minibatches=1, epochs=1, microbatches=microbatches,
      dynamic_sampling="none")
  # the mean token log-prob: the sum would reward short responses, and with --mean_new_tokens
  # the policy would drift towards stopping sooner than TRL's (whose reward ignores length)
  reward = step_lib.RewardSpec.make({"seq_loglik": 1.0}, {"length_norm": True})
  # With stopping responses the policy must not drift over the rounds (its lengths would move
  # apart from TRL's): lr 0 on both sides, the same computation.
  lr = 0.0 if ragged else LR
  opt = optim.make_optimizer(_optim_config(lr), 1000)
  spec = step_lib.RLSpec(cfg=cfg, optimizer=opt, settings=settings, rewards=reward)
  shardings = state_lib.state_shardings(cfg, opt, mesh)
  params = sharding.init_params(cfg, jax.random.key(seed), mesh)
  rng = np.random.default_rng(seed)
  prompt_ids = rng.integers(3, cfg.vocab_size, (b, p)).astype(np.int32)
  if ragged:
    if not 1 <= mean_new_tokens < m:
      raise ValueError(f"--mean_new_tokens={mean_new_tokens} must lie in [1, --max_new_tokens={m})")
    params, sigma = stop_token_params(cfg, params, prompt_ids, g, EOS, mean_new_tokens, m, seed)
    print(f"stop token: id {EOS}, its output column scaled to {sigma:.2f} for a mean of "
          f"{mean_new_tokens:g} new tokens (both sides sample from these weights)", flush=True)
  ref_params = jax.device_put(params, shardings.params)
  batch = train_loop.put_batch({"prompt_tokens": prompt_ids,
                                "prompt_lengths": np.full((b,), p, np.int32)}, mesh)
  hf_dir = None
  if trl_side or tunix:
    hf_dir = tempfile.TemporaryDirectory()
    rj.save_hf(hf_dir.name, cfg, params)       # TRL and tunix start from the same weights
  box = {"state": state_lib.create_train_state(cfg, opt, mesh, jax.random.key(seed), params),
         "i": 0, "metrics": None}
  fused = step_lib.jit_rl_step(spec, mesh, shardings) if fused else None
  phases = step_lib.jit_rl_phases(spec, mesh, shardings)

  def ours_fused():
    box["i"] += 1
    box["state"], metrics = fused(box["state"], ref_params, batch, jax.random.key(box["i"]))
    box["metrics"] = jax.block_until_ready(metrics)

  # A new bin count compiles a new packed update (rl/packing.py: at most BIN_BUCKETS of them):
  # compile time is excluded from the timings, as for every other program here.
  compiling = {"s": 0.0}

  def on_event(name, seconds, **_):
    if name.startswith("/jax/core/compile/"):
      compiling["s"] += seconds
  if ragged:
    jax.monitoring.register_event_duration_secs_listener(on_event)

  def pack(kept, prompt_lengths, width):
    plan, fill = rl_loop.plan_packing(kept, prompt_lengths, width, settings, mesh)
    box["lengths"], box["fill"] = np.asarray(kept.lengths), fill
    return plan, fill

  def ours_phases(packed: bool = False):
    box["i"] += 1
    box["state"], metrics, times = rl_loop._run_phases(
        phases, box["state"], ref_params, dict(batch), jax.random.key(box["i"]), profile=True,
        settings=settings, pack=pack if packed else None)
    if not fused:
      box["metrics"] = metrics
    return times

  def ours_packed():
    """rl.pack_update as the run loop runs it: the phases, the host reading the lengths."""
    box["i"] += 1
    box["state"], metrics, _ = rl_loop._run_phases(
        phases, box["state"], ref_params, dict(batch), jax.random.key(box["i"]),
        settings=settings, pack=pack)
    box["packed_metrics"] = jax.block_until_ready(metrics)

  peak_dtype = jnp.float32 if platform == "cpu" else jnp.dtype(dtype)
  # well past the caches (an H200's L2 is 60 MB): 256 MiB on a CPU, 2 GiB on an accelerator
  bandwidth_bytes = (256 << 20) if platform == "cpu" else (2 << 30)
  a = jax.random.normal(jax.random.key(0), (matmul_n, matmul_n), peak_dtype)
  a2 = jax.random.normal(jax.random.key(1), (matmul_n, matmul_n), peak_dtype)
  mm = jax.jit(lambda x, y: x @ y)
  # the first new token comes from the prefill (counted at the peak below): m - 1 decode steps
  decode_steps = max(m - 1, 1)
  decode_matmuls = decode_matmuls_fn(cfg, ref_params, rows, steps=decode_steps,
                                     cache_slots=round(mean_live_slots(p, m)))
  model_decode_step = model_decode_fn(cfg, ref_params, rows, p + m)
  # the update's kernels run one microbatch of rows at a time
  dense_probe, attention_probe, dense_probe_flops, attention_probe_flops = kernel_fns(
      cfg, rows // microbatches, p + m, jnp.dtype(dtype))

  t0 = time.perf_counter()
  ours_fused() if fused else ours_phases()
  compile_s = time.perf_counter() - t0
  if fused:
    ours_phases()
  if ragged:
    ours_packed()
    ours_phases(packed=True)
  mm(a, a2).block_until_ready()
  decode_matmuls()
  model_decode_step()
  dense_probe()
  attention_probe()
  times = {"ours": [], "sample": [], "reward": [], "update": [], "matmul": [], "decode_matmuls": [],
           "model_decode_step": [],
           "dense": [], "attention": [], "packed": [], "packed_sample": [], "packed_reward": [],
           "packed_update": [], "fill": [], "useful_dense": [], "useful_attention": []}

  def our_round():
    steps = []
    for _ in range(10):               # one matmul on an accelerator is a few ms: take ten
      t0 = time.perf_counter()
      mm(a, a2).block_until_ready()
      steps.append(time.perf_counter() - t0)
    times["matmul"].append(statistics.median(steps))
    if fused:
      t0 = time.perf_counter()
      ours_fused()
      times["ours"].append(time.perf_counter() - t0)
    split = ours_phases()
    for k in ("sample", "reward", "update"):
      times[k].append(split[k])
    if not fused:
      times["ours"].append(sum(split[k] for k in ("sample", "reward", "update")))
    if ragged:
      c0, t0 = compiling["s"], time.perf_counter()
      ours_packed()
      times["packed"].append(time.perf_counter() - t0 - (compiling["s"] - c0))
      c0 = compiling["s"]
      split = ours_phases(packed=True)
      split["update"] -= compiling["s"] - c0
      for k in ("sample", "reward", "update"):
        times["packed_" + k].append(split[k])
      dense, attention = update_flops_split(cfg, rows, p, m, box["lengths"])
      times["fill"].append(box["fill"])
      times["useful_dense"].append(dense)
      times["useful_attention"].append(attention)
    t0 = time.perf_counter()
    decode_matmuls()                  # all decode steps in one loop
    times["decode_matmuls"].append(time.perf_counter() - t0)
    steps = []
    for _ in range(10):
      t0 = time.perf_counter()
      model_decode_step()
      steps.append(time.perf_counter() - t0)
    times["model_decode_step"].append(statistics.median(steps))
    for name, probe in (("dense", dense_probe), ("attention", attention_probe)):
      t0 = time.perf_counter()
      probe()
      times[name].append(time.perf_counter() - t0)

  references = {}                    # name -> the reference's figures (TRL, tunix)
  try:
    if trl_side:
      try:
        references["TRL"] = _trl_rounds(hf_dir.name, prompt_ids, cfg.vocab_size, g, m, rounds,
                                        threads, seed, our_round, exact_length=not ragged, lr=lr)
      except ImportError as e:
        print(f"TRL: not importable ({e}); `pip install rlvr_jax[bench]` for the TRL comparison",
              flush=True)
    if tunix:
      references["tunix"] = tunix_ref.grpo_rounds(
          hf_dir.name, cfg, _word_tokenizer(cfg.vocab_size), prompt_ids, g, m, rounds, our_round,
          exact_length=not ragged, lr=lr, beta=BETA, epsilon=0.2, stop_id=EOS)
  finally:
    if hf_dir is not None:
      hf_dir.cleanup()
  if not references:
    for _ in range(rounds):
      our_round()
  if ragged:
    try:
      jax.monitoring.unregister_event_duration_listener(on_event)
    except AssertionError:            # tunix's metrics logger clears jax's listeners on close
      pass

  med = {k: _median(v) for k, v in times.items()}
  peak = 2.0 * matmul_n ** 3 / med["matmul"] * len(jax.devices())
  n_tok = rows * m
  ours_s = med["ours"]
  f_update = update_flops(cfg, rows, p, m)
  f_prefill = prefill_flops(cfg, rows, p)
  roof_update = f_update / peak
  roof_sample = med["decode_matmuls"] + f_prefill / peak
  roof = roof_update + roof_sample
  split_total = med["sample"] + med["reward"] + med["update"]
  print(f"matmul peak ({matmul_n}^3 {jnp.dtype(peak_dtype).name}): {peak / 1e9:10,.1f} GFLOP/s",
        flush=True)
  print(f"rlvr_jax GRPO step ({'fused' if fused else 'profiled phases'}): {ours_s * 1e3:9.1f} ms  "
        f"{rows / ours_s:8.1f} completions/s "
        f"{n_tok / ours_s:9.0f} tokens/s  (first step incl. compile {compile_s:.1f} s)")
  print(f"  phase split (rl.profile_phases): sample {med['sample'] * 1e3:.1f} ms "
        f"({100 * med['sample'] / split_total:.0f}%), reward {med['reward'] * 1e3:.1f} ms "
        f"({100 * med['reward'] / split_total:.0f}%), update {med['update'] * 1e3:.1f} ms "
        f"({100 * med['update'] / split_total:.0f}%); sum {split_total * 1e3:.1f} ms")
  print(f"  roofline: sample {roof_sample * 1e3:.1f} ms (the matmuls of {decode_steps} decode "
        f"steps in one loop {med['decode_matmuls'] * 1e3:.1f} ms + prefill at the peak), update "
        f"{roof_update * 1e3:.1f} ms ({f_update / 1e9:.1f} GFLOP at the peak); step "
        f"{roof * 1e3:.1f} ms")
  print(f"  rlvr_jax reaches {100 * roof / ours_s:.0f}% of the step roofline (sample "
        f"{100 * roof_sample / med['sample']:.0f}%, update {100 * roof_update / med['update']:.0f}%"
        f" = update MFU)")
  # The sample phase against the memory-bandwidth bound: every decode step reads the weights
  # and the live KV cache at least once (bench sample's decode_bytes), at the bandwidth measured
  # in this run; the prefill at the matmul peak.
  weight_bytes, kv_bytes = decode_bytes(cfg, rows, p, m)
  bandwidth = measured_bandwidth(bandwidth_bytes)
  hbm_sample = m * (weight_bytes + kv_bytes) / bandwidth + f_prefill / peak
  # What one decode step costs as implemented: it attends over every slot of the cache it is
  # given (masked past each row's position): P + M slots, or in segments
  # (sampling.segment_ends) a cache grown segment by segment; more than the live part the bound
  # counts.
  per_step = med["sample"] / m
  ends = segment_ends(m)
  read_slots = sum((p + end) * (end - start) for start, end in zip((0,) + ends, ends)) / m
  cache_bytes = 2 * cfg.num_layers * rows * cfg.num_kv_heads * cfg.head_dim * read_slots * \
      jnp.dtype(cfg.dtype).itemsize
  print(f"  per decode step: the sample phase {per_step * 1e3:.3f} ms (prefill included); the "
        f"model's decode step jitted alone (transformer.decode_step on all {p + m} slots, cache "
        f"donated) {med['model_decode_step'] * 1e3:.3f} ms; its matmuls alone (over the mean "
        f"live cache, in a loop) {med['decode_matmuls'] / decode_steps * 1e3:.3f} ms; the "
        f"bytes the sampler reads as implemented (weights + {read_slots:.0f} cache slots on "
        f"average in {len(ends)} cache segment(s), "
        f"{(weight_bytes + cache_bytes) / 1e9:.2f} GB) at the measured bandwidth "
        f"{(weight_bytes + cache_bytes) / bandwidth * 1e3:.3f} ms")
  print(f"  sample vs the memory-bandwidth bound: {hbm_sample * 1e3:.1f} ms ({m} steps x "
        f"(weights {weight_bytes / 1e9:.2f} GB + mean KV cache {kv_bytes / 1e9:.2f} GB) at "
        f"{bandwidth / 1e9:.1f} GB/s measured + prefill at the peak): the sample phase reaches "
        f"{100 * hbm_sample / med['sample']:.0f}% of it")
  # Where the update's time goes: its FLOPs at the rates its own kernels reach in this run.
  # The attention computes more scores than the causal half it needs: the blocks on the
  # diagonal whole (computed_score_share of the square; the probe's rate counts every score it
  # computes).
  f_dense, f_attention = update_flops_split(cfg, rows, p, m)
  f_computed = 2 * f_attention * computed_score_share(cfg, p + m)
  rate_dense = dense_probe_flops / med["dense"]
  rate_attention = attention_probe_flops / med["attention"]
  kernel_update = f_dense / rate_dense + f_computed / rate_attention
  print(f"  update at its own kernels' rates: dense matmuls {rate_dense / 1e9:.1f} GFLOP/s "
        f"({100 * rate_dense / peak:.0f}% of the peak) x {f_dense / 1e9:.1f} GFLOP + attention "
        f"{rate_attention / 1e9:.1f} GFLOP/s ({100 * rate_attention / peak:.0f}%) x "
        f"{f_computed / 1e9:.1f} GFLOP (the causal {f_attention / 1e9:.1f} and the masked "
        f"scores it computes) = {kernel_update * 1e3:.1f} ms (attention "
        f"{100 * f_computed / rate_attention / kernel_update:.0f}% of it); the update "
        f"reaches {100 * kernel_update / med['update']:.0f}% of that")
  # What these kernels allow at best: every other op of the update (softmax, norms, elementwise,
  # optimizer) free. An update MFU or a step share of the roofline above these ceilings needs
  # faster kernels than this machine's XLA has, not a better program around them.
  update_ceiling = roof_update / kernel_update
  step_ceiling = roof / (med["sample"] + med["reward"] + kernel_update)
  print(f"  ceilings with these kernels (every other op free): update MFU "
        f"{100 * update_ceiling:.0f}%; the step with the sample phase as measured "
        f"{100 * step_ceiling:.0f}% of its roofline")
  out = {"peak_flops": peak, "ours_step_s": ours_s, "ours_completions_per_s": rows / ours_s,
         "ours_tokens_per_s": n_tok / ours_s, "sample_s": med["sample"],
         "reward_s": med["reward"], "update_s": med["update"], "roofline_s": roof,
         "roofline_sample_s": roof_sample, "roofline_update_s": roof_update,
         "roofline_share": roof / ours_s, "update_mfu": roof_update / med["update"],
         "sample_roofline_share": roof_sample / med["sample"],
         "model_decode_step_s": med["model_decode_step"],
         "bandwidth_bytes_per_s": bandwidth, "sample_memory_bound_s": hbm_sample,
         "sample_memory_bound_share": hbm_sample / med["sample"],
         "dense_matmul_flops": rate_dense, "attention_flops": rate_attention,
         "update_at_kernel_rates_s": kernel_update, "update_mfu_ceiling": update_ceiling,
         "step_roofline_ceiling": step_ceiling,
         "ours_reward_mean": float(box["metrics"]["reward/mean"]),
         "ours_length_mean": float(box["metrics"]["response/length_mean"])}
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    print(f"  device memory: peak {stats['peak_bytes_in_use'] / 2**30:.1f} GiB of "
          f"{stats.get('bytes_limit', 0) / 2**30:.1f} GiB")
  headline_s, headline = ours_s, "fused"
  if ragged:
    packed_s, upd_packed = med["packed"], med["packed_update"]
    useful = med["useful_dense"] + med["useful_attention"]
    length_mean = float(box["packed_metrics"]["response/length_mean"])
    padded_useful = (p + length_mean) / (p + m)
    print(f"rlvr_jax GRPO step (packed update, rl.pack_update): {packed_s * 1e3:9.1f} ms  "
          f"{rows / packed_s:8.1f} completions/s  (response length mean {length_mean:.1f} of "
          f"{m}; the padded rows {100 * padded_useful:.0f}% real tokens, the bins "
          f"{100 * med['fill']:.0f}%)")
    print(f"  phase split: sample {med['packed_sample'] * 1e3:.1f} ms, reward "
          f"{med['packed_reward'] * 1e3:.1f} ms, update {upd_packed * 1e3:.1f} ms (padded "
          f"{med['update'] * 1e3:.1f} ms: packing {med['update'] / upd_packed:.2f}x)")
    print(f"  update on the real tokens: {useful / 1e9:.1f} GFLOP, at the peak "
          f"{useful / peak * 1e3:.1f} ms; the packed update reaches "
          f"{100 * useful / peak / upd_packed:.0f}% of the peak on real tokens (the padded "
          f"update {100 * useful / peak / med['update']:.0f}%)")
    out.update(packed_step_s=packed_s, packed_update_s=upd_packed, pack_fill=med["fill"],
               packed_update_mfu_useful=useful / peak / upd_packed,
               padded_update_mfu_useful=useful / peak / med["update"],
               packed_length_mean=length_mean)
    headline_s, headline = packed_s, "packed-update"
  for name, t in references.items():
    ref_s = t["step_s"]
    ratio = ref_s / headline_s
    title = {"TRL": "TRL GRPOTrainer step:", "tunix": "tunix GRPOLearner step:"}[name]
    print(f"{title:<27} {ref_s * 1e3:9.1f} ms  {rows / ref_s:8.1f} completions/s "
          f"{n_tok / ref_s:9.0f} tokens/s  ({t['info']})")
    rest = ref_s - t["generate_s"] - t["reward_s"]
    print(f"  {name} split: generate {t['generate_s'] * 1e3:.1f} ms, rewards "
          f"{t['reward_s'] * 1e3:.1f} ms, the rest (ref/old log-probs, loss, backward, optimizer) "
          f"{rest * 1e3:.1f} ms; completion length mean {t['length_mean']:.1f} (ours "
          f"{out['ours_length_mean']:.1f})")
    print(f"ratio rlvr_jax / {name} = {ratio:.2f}x completions/s (our {headline} step; medians of "
          f"{rounds} interleaved rounds; {name} reaches {100 * roof / ref_s:.0f}% of the step "
          f"roofline)" + (f"; the fused padded step {ref_s / ours_s:.2f}x" if ragged else ""))
    key = name.lower()
    out.update({f"{key}_step_s": ref_s, f"{key}_completions_per_s": rows / ref_s,
                f"{key}_tokens_per_s": n_tok / ref_s, f"{key}_generate_s": t["generate_s"],
                f"{key}_reward_s": t["reward_s"], f"{key}_length_mean": t["length_mean"],
                ("ratio" if name == "TRL" else f"{key}_ratio"): ratio})
  return out


def _word_tokenizer(vocab_size: int):
  """A transformers tokenizer whose words 't<i>' are the ids i (0 pad, 1 bos, 2 eos): TRL's
  text prompts tokenize to exactly our prompt ids."""
  from tokenizers import Tokenizer, models, pre_tokenizers, decoders
  from transformers import PreTrainedTokenizerFast
  vocab = {f"t{i}": i for i in range(vocab_size)}
  vocab.update({"<pad>": 0, "<s>": 1, "</s>": 2})
  del vocab["t0"], vocab["t1"], vocab["t2"]
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.decoder = decoders.WordPiece(prefix="##")        # joins words with spaces
  return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                 eos_token="</s>", padding_side="left")


def _trl_rounds(hf_dir: str, prompt_ids: np.ndarray, vocab_size: int, group: int,
                max_new_tokens: int, rounds: int, threads: int, seed: int, our_round,
                exact_length: bool = True, lr: float = LR):
  """TRL's GRPOTrainer on the same weights and prompts: rounds + 1 steps (the first a warm-up),
  each timed from on_step_begin to on_step_end; `our_round` runs after each timed step.
  exact_length: every completion max_new_tokens long (min_new_tokens); else each stops at the
  tokenizer's EOS (id EOS)."""
  import torch
  import transformers
  import trl
  from datasets import Dataset
  torch.set_num_threads(threads)
  transformers.logging.set_verbosity_error()
  transformers.logging.disable_progress_bar()
  import warnings
  warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
  tokenizer = _word_tokenizer(vocab_size)
  texts = [" ".join(f"t{i}" for i in row) for row in prompt_ids]
  assert tokenizer(texts)["input_ids"] == prompt_ids.tolist(), "prompt ids differ"
  b = len(texts)
  dataset = Dataset.from_dict({"prompt": texts * (rounds + 2)})
  model = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  with tempfile.TemporaryDirectory() as out_dir:
    args = trl.GRPOConfig(
        output_dir=out_dir, per_device_train_batch_size=b * group, gradient_accumulation_steps=1,
        steps_per_generation=1, num_iterations=1, num_generations=group,
        max_completion_length=max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        generation_kwargs={"min_new_tokens": max_new_tokens} if exact_length else {},
        beta=BETA, loss_type="dapo",
        epsilon=0.2, scale_rewards="group", learning_rate=lr, lr_scheduler_type="constant",
        weight_decay=0.0, max_grad_norm=1.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        use_vllm=False, use_cpu=True, bf16=False, fp16=False, max_steps=rounds + 1,
        logging_steps=1000, save_strategy="no", report_to="none", disable_tqdm=True,
        shuffle_dataset=False, seed=seed, dataloader_num_workers=0)

    def reward_fn(completions, completion_ids=None, **kwargs):
      if completion_ids is None:
        return [float(len(c) % 7) for c in completions]
      return [float(sum(ids) % 7) for ids in completion_ids]

    times = {"step": [], "generate": [], "reward": [], "lengths": []}
    acc = {"generate": 0.0, "reward": 0.0}

    class Timer(transformers.TrainerCallback):
      def on_step_begin(self, args, state, control, **kwargs):
        acc["generate"] = acc["reward"] = 0.0
        acc["t0"] = time.perf_counter()

      def on_step_end(self, args, state, control, **kwargs):
        dt = time.perf_counter() - acc["t0"]
        if state.global_step > 1:             # the first step is the warm-up
          times["step"].append(dt)
          times["generate"].append(acc["generate"])
          times["reward"].append(acc["reward"])
          our_round()

    trainer = trl.GRPOTrainer(model=model, reward_funcs=reward_fn, args=args,
                              train_dataset=dataset, processing_class=tokenizer,
                              callbacks=[Timer()])
    trainer.remove_callback(transformers.PrinterCallback)   # no log dicts on stdout

    trainer._generate = timed_into(
        acc, "generate", trainer._generate,
        lambda out: times["lengths"].extend(len(ids) for ids in out[1]))
    trainer._calculate_rewards = timed_into(acc, "reward", trainer._calculate_rewards)
    trainer.train()
  info = (f"trl {trl.__version__}, transformers {transformers.__version__}, torch "
          f"{torch.__version__}, {threads} threads, "
          f"{getattr(model.config, '_attn_implementation', '?')} attention")
  return {"step_s": _median(times["step"]), "generate_s": _median(times["generate"]),
          "reward_s": _median(times["reward"]),
          "length_mean": float(np.mean(times["lengths"])), "info": info}


def main(argv: list[str] | None = None) -> int:
  """argv as sys.argv: argv[0] is the program name (what `rlvr-jax bench rl` passes)."""
  argv = sys.argv if argv is None else argv
  ap = argparse.ArgumentParser(prog=argv[0] if argv else None,
                               description=__doc__.splitlines()[0])
  ap.add_argument("--size", default="toy-7m", help="a named llama-family size (rj.SIZES)")
  ap.add_argument("--vocab_size", type=int, default=2048, help="0 = the size's own")
  ap.add_argument("--num_layers", type=int, default=3, help="0 = the size's own")
  ap.add_argument("--prompts", type=int, default=16)
  ap.add_argument("--group", type=int, default=8, help="completions per prompt")
  ap.add_argument("--prompt_len", type=int, default=32)
  ap.add_argument("--max_new_tokens", type=int, default=64)
  ap.add_argument("--rounds", type=int, default=3,
                  help="interleaved rounds (TRL step, matmul, our step, our phases); medians")
  ap.add_argument("--dtype", default=None, help="compute dtype (default: f32 on CPU, else bf16)")
  ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
  ap.add_argument("--no-trl", action="store_true", help="skip TRL's GRPOTrainer")
  ap.add_argument("--tunix", action="store_true",
                  help="also time tunix's GRPOLearner on the same weights (needs the tunix "
                       "extra, in its own venv: see rlvr_jax/bench/tunix_ref.py)")
  ap.add_argument("--matmul-n", type=int, default=2048,
                  help="size of the peak-FLOPs matmul (1024 is too small to reach the peak of "
                       "an AVX-512 CPU: 233 vs 394 GFLOP/s on a 2-core EPYC)")
  ap.add_argument("--mean_new_tokens", type=float, default=0.0,
                  help="0: every completion exactly max_new_tokens long; else completions stop "
                       "at a stop token after about this many tokens on average (the output "
                       "head's stop column calibrated), and our packed update "
                       "(rl.pack_update) is timed against the padded one")
  ap.add_argument("--microbatches", type=int, default=1,
                  help="the update's gradient-accumulation microbatches (rl.microbatches): "
                       "what bounds its activation memory at large shapes")
  ap.add_argument("--remat", default="none", choices=REMAT_POLICIES,
                  help="the model's rematerialisation policy (model.remat)")
  ap.add_argument("--scan_unroll", type=int, default=1,
                  help="layers per iteration of the model's layer scan (model.scan_unroll; "
                       ">= the layers: no loop)")
  ap.add_argument("--no-fused", action="store_true",
                  help="time the profiled phases only (their sum is the step), not the fused "
                       "step: one compile fewer where compile time is scarce; needs --no-trl")
  ap.add_argument("--attention", default="auto", choices=ATTENTION_IMPLEMENTATIONS,
                  help="the full-sequence attention kernel (model.attention; auto: cuDNN on an "
                       "NVIDIA GPU in bf16)")
  args = ap.parse_args(argv[1:])
  run(args.size, args.vocab_size, args.num_layers, args.prompts, args.group, args.prompt_len,
      args.max_new_tokens, args.rounds, args.dtype, not args.no_trl, args.threads,
      args.matmul_n, mean_new_tokens=args.mean_new_tokens, microbatches=args.microbatches,
      remat=args.remat, fused=not args.no_fused, attention=args.attention, tunix=args.tunix,
      scan_unroll=args.scan_unroll)
  return 0


if __name__ == "__main__":
  sys.exit(main())
