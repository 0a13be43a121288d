"""The in-graph sampler: one prefill, then decoding in `lax.while_loop`s over a preallocated KV
cache (one loop, or a few over a growing cache for long decodes).

Two entry points:

* `sample_core(cfg, params, prompts_BP, prompt_lengths_B, key, config)` — pure and traceable with
  static `SampleConfig` settings; call it inside your own jitted function (the RL step does).
* `generate(cfg, params, prompts, prompt_lengths, key, *, max_new_tokens, ...)` — the public
  `rj.generate`: validates inputs on the host, buckets the prompt length (bounding recompiles to
  one per (batch, prompt bucket, max_new_tokens, sampling settings)) and calls a cached jit.

How a batch is decoded (B prompts, S = num_samples, N = B*S rows):
1. The right-padded prompt block [B, P] is prefilled once into a cache of P slots; the hidden
   state at position `prompt_lengths[b]-1` of each row gives the logits of the first new token.
2. The cache is padded to P + max_new_tokens slots and repeated to N rows (samples of one prompt
   are contiguous rows); the prefill is never recomputed per sample. With several cache
   segments (`SampleConfig.cache_segments`, automatic from 64 new tokens) it is padded only to
   the first segment's end, and grown at each next segment: a decode step attends over every
   slot it is given (masked past each row's position), so a shorter cache is fewer bytes read.
3. Row r's t-th new token is fed back at position `prompt_lengths[r] + t`, overwriting the
   prompt padding in the cache (the model attends only to slots <= a query's position). Decode
   steps are `transformer.decode_step`: layer by layer on per-layer weights and caches
   (`transformer.KVCache`), the same computation as `transformer.forward` with a cache, minus the
   per-step copies that `nn.scan` over stacked weights/caches costs inside a while_loop. The
   cache lives in the loop carry and is updated in place.
4. The while_loop(s) run until every row is done (EOS, a stop sequence, or max_new_tokens).

Per generated token the sampler returns, from the very logits it sampled from (so the proxy
rewards never pay a second forward pass):
* `logprobs`: log-prob of the token under softmax(logits / T) — the *unfiltered* tempered
  distribution even when top-k/top-p restrict the draw (this is what a trainer recomputes with
  `rj.forward`, so sampler/trainer logprobs agree by construction). Greedy (T = 0) uses T = 1,
  i.e. log_softmax(logits).
* `entropy`: entropy of softmax(z) and `self_certainty`: logsumexp(z) - mean(z), where
  z = logits / T (z = logits when greedy).
All are 0 (tokens: pad_id) after a row is done; `lengths` counts generated tokens including the
EOS token or the final token of a stop sequence.

EOS and padding: stopping is detected on the token just *sampled* for a row that is still
active, and `lengths` are returned explicitly; the token buffer is never searched for pad_id.
pad_id == eos_id is therefore allowed (the rows still stop, and `lengths` still count the
EOS). The only thing it breaks is inferring lengths from padding: `generate` accepts
`prompt_lengths=None` and then takes each length as "index of the last non-pad token + 1",
which is ambiguous when pad_id is an EOS id (a prompt ending in EOS would lose that token, just
as a response's EOS is indistinguishable from its padding without `lengths`); that combination
raises a ValueError — pass explicit prompt_lengths.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from rlvr_jax.model.config import ModelConfig
from rlvr_jax.model import transformer

__all__ = ["SampleConfig", "SampleOutput", "Greedy", "RandomSampling", "TopK", "TopP",
           "draw_categorical", "sampling_method", "token_statistics", "prompt_bucket",
           "sample_core", "generate", "check_against_model"]


# ---------------------------------------------------------------------------------- config / output
@dataclasses.dataclass(frozen=True)
class SampleConfig:
  """Static sampler settings (hashable: a jit static argument).

  max_new_tokens: tokens generated per row at most. eos_ids: ids that end a row (empty: none).
  pad_id: written after a row ends (and fed to the model for finished rows). temperature: 0 is
  greedy. top_k: 0 is off. top_p: 1.0 is off. num_samples: rows per prompt. stop_sequences:
  token-id tuples; a row ends once its *generated* tokens end with one of them (the prompt is not
  searched). cache_dtype: KV cache dtype (None: the model's compute dtype). unstack_weights:
  copy the layer-stacked weights into per-layer arrays once per call, so that decode steps read
  them in place (fastest; costs one extra copy of the layer weights while sampling); False
  slices the stacked weights inside every step instead. Either way the decode loop reads the
  weights in the compute dtype (`transformer.compute_weights`: a copy while sampling when the
  master weights are wider, e.g. f32 weights with bf16 compute). cache_segments: the decode
  loop runs as this many while_loops, each over a KV cache only as long as its last step needs
  (prompt block + the new tokens so far), grown between them; every step's attention reads the
  whole cache it is given, so a long decode reads on average ~(n+1)/(2n) of the full cache per
  step instead of all of it. 0 = one segment per 32 new tokens, at most 4. Each segment
  compiles its own copy of the decode step, and each growth copies the cache into a larger
  one, so while the last one runs the old and new caches are both live: a peak of up to
  (2n-1)/n of the full cache (1.75x with 4 segments). Where the KV cache is what fills device
  memory, 1 (one loop over the full cache) uses the least.
  """
  max_new_tokens: int
  pad_id: int
  eos_ids: tuple[int, ...] = ()
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  num_samples: int = 1
  stop_sequences: tuple[tuple[int, ...], ...] = ()
  cache_dtype: str | None = None
  unstack_weights: bool = True
  cache_segments: int = 0

  def __post_init__(self):
    _check_settings(self)


@flax.struct.dataclass
class SampleOutput:
  """tokens int32[N, M] (pad_id after a row ends), lengths int32[N] (EOS included),
  logprobs / entropy / self_certainty float32[N, M] (0 after a row ends), num_steps int32[]
  (sampling steps the while_loop took, <= M). N = batch * num_samples, M = max_new_tokens."""
  tokens: jax.Array
  lengths: jax.Array
  logprobs: jax.Array
  entropy: jax.Array
  self_certainty: jax.Array
  num_steps: jax.Array


def _is_int(x) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_settings(c: SampleConfig) -> None:
  """Model-independent checks of the static settings; ValueError naming the field."""
  if not _is_int(c.max_new_tokens) or c.max_new_tokens < 1:
    raise ValueError(f"max_new_tokens={c.max_new_tokens!r} must be an integer >= 1")
  if not _is_int(c.num_samples) or c.num_samples < 1:
    raise ValueError(f"num_samples={c.num_samples!r} must be an integer >= 1")
  if not isinstance(c.temperature, (int, float, np.floating)) or not math.isfinite(c.temperature) \
      or c.temperature < 0:
    raise ValueError(f"temperature={c.temperature!r} must be a finite number >= 0 (0 is greedy)")
  if not _is_int(c.top_k) or c.top_k < 0:
    raise ValueError(f"top_k={c.top_k!r} must be an integer >= 0 (0 turns top-k off)")
  if not isinstance(c.top_p, (int, float, np.floating)) or not 0.0 < c.top_p <= 1.0:
    raise ValueError(f"top_p={c.top_p!r} must lie in (0, 1] (1.0 turns top-p off)")
  if not _is_int(c.pad_id):
    raise ValueError(f"pad_id={c.pad_id!r} must be an integer token id")
  if not all(_is_int(e) for e in c.eos_ids):
    raise ValueError(f"eos_id={c.eos_ids!r} must be an integer token id or a sequence of them")
  for s in c.stop_sequences:
    if not s or not all(_is_int(t) for t in s):
      raise ValueError(f"stop_sequences entry {s!r} must be a non-empty sequence of token ids")
    if len(s) > c.max_new_tokens:
      raise ValueError(f"stop sequence {s!r} is longer than max_new_tokens={c.max_new_tokens} "
                       f"and can never match; shorten it or raise max_new_tokens")
  if not _is_int(c.cache_segments) or not 0 <= c.cache_segments <= c.max_new_tokens:
    raise ValueError(f"cache_segments={c.cache_segments!r} must be an integer in [0, "
                     f"max_new_tokens={c.max_new_tokens}] (0 = automatic)")
  if not isinstance(c.unstack_weights, bool):
    raise ValueError(f"unstack_weights={c.unstack_weights!r} must be True or False")
  if c.cache_dtype is not None:
    try:
      jnp.dtype(c.cache_dtype)
    except TypeError:
      raise ValueError(f"cache_dtype={c.cache_dtype!r} is not a dtype") from None


def check_against_model(cfg: ModelConfig, c: SampleConfig) -> None:
  """Checks of the settings that need the vocabulary."""
  v = cfg.vocab_size
  if not 0 <= c.pad_id < v:
    raise ValueError(f"pad_id={c.pad_id} is outside the vocabulary [0, {v}); padding is fed to "
                     f"the model, so it must be a valid token id")
  bad = [e for e in c.eos_ids if not 0 <= e < v]
  if bad:
    raise ValueError(f"eos_id {bad} outside the vocabulary [0, {v}) can never be sampled; "
                     f"pass eos_id=() to decode without EOS")
  for s in c.stop_sequences:
    if not all(0 <= t < v for t in s):
      raise ValueError(f"stop sequence {s!r} has ids outside the vocabulary [0, {v})")


# ------------------------------------------------------------------------------ sampling methods
# Each method maps logits float32[N, V] and a key to tokens int32[N].
def draw_categorical(key, z_NK):
  """One draw per row from softmax(z) (-inf entries are never drawn), by inverting the CDF with
  a single uniform per row: N random numbers instead of the N*K Gumbel draws of
  `jax.random.categorical` (which dominate a CPU decode step at vocabulary 8k).

  The CDF is inverted in two levels, blocks of about sqrt(K) entries: the block whose cumulative
  mass first exceeds u, then the entry within it. Two short prefix sums instead of one over K:
  XLA:CPU's cumsum of [16, 8192] alone takes 0.3 ms, most of a decode step's non-matmul time."""
  n, k = z_NK.shape
  z_NK = z_NK.astype(jnp.float32)
  # unnormalised weights: u is drawn against their total, so no division pass (and the exp is
  # the one token_statistics takes of the same logits: XLA computes it once)
  p_NK = jnp.exp(z_NK - jax.lax.stop_gradient(jnp.max(z_NK, axis=-1, keepdims=True)))
  width = 1 << max(0, (k - 1).bit_length() + 1) // 2            # ~sqrt(K), a power of two
  blocks = -(-k // width)
  if blocks * width != k:
    p_NK = jnp.pad(p_NK, ((0, 0), (0, blocks * width - k)))
  p_NBW = p_NK.reshape(n, blocks, width)
  mass_NB = jnp.sum(p_NBW, axis=-1)
  cdf_NB = jnp.cumsum(mass_NB, axis=-1)
  total_N1 = cdf_NB[:, -1:]
  u_N1 = jax.random.uniform(key, (n, 1), jnp.float32) * total_N1
  u_N1 = jnp.minimum(u_N1, jnp.nextafter(total_N1, 0.0))        # strictly below the total
  # the first block whose CDF exceeds u (its mass is > 0), and the mass before it
  block_N = jnp.minimum(jnp.sum(cdf_NB <= u_N1, axis=-1), blocks - 1)
  before_N1 = jnp.take_along_axis(cdf_NB - mass_NB, block_N[:, None], axis=-1)
  in_block_NW = jnp.take_along_axis(p_NBW, block_N[:, None, None], axis=1)[:, 0]
  cdf_NW = before_N1 + jnp.cumsum(in_block_NW, axis=-1)
  # the first entry whose CDF exceeds u; when rounding leaves u at or past the block's end, its
  # last entry of positive probability
  index_W = jnp.arange(width, dtype=jnp.int32)
  last_N = jnp.max(jnp.where(in_block_NW > 0, index_W, 0), axis=-1)
  entry_N = jnp.minimum(jnp.sum(cdf_NW <= u_N1, axis=-1), last_N)
  return (block_N * width + entry_N).astype(jnp.int32)


class Greedy:
  """argmax of the logits (temperature 0): the first index holding the row maximum.

  Written as min(where(logits == max, index, V)) rather than jnp.argmax: the row max is the one
  `token_statistics` takes anyway (XLA shares it), and a min-reduce is several times cheaper on
  CPU than argmax's variadic (value, index) reduce. Rows with NaN logits get the last id."""

  def __call__(self, logits_NV, key):
    del key
    v = logits_NV.shape[-1]
    max_N1 = jnp.max(logits_NV, axis=-1, keepdims=True)
    index_NV = jax.lax.broadcasted_iota(jnp.int32, logits_NV.shape, 1)
    first_N = jnp.min(jnp.where(logits_NV == max_N1, index_NV, v), axis=-1)
    return jnp.minimum(first_N, v - 1)


@dataclasses.dataclass(frozen=True)
class RandomSampling:
  """A draw from softmax(logits / temperature)."""
  temperature: float = 1.0

  def __call__(self, logits_NV, key):
    return draw_categorical(key, logits_NV / self.temperature)


@dataclasses.dataclass(frozen=True)
class TopK:
  """A draw from softmax(logits / temperature) restricted to the k largest logits.

  Draws in the space of the top-k candidates and maps back, so a token outside them is never
  emitted (ties at the k-th value are broken by lax.top_k's order).
  """
  k: int
  temperature: float = 1.0

  def __call__(self, logits_NV, key):
    k = min(self.k, logits_NV.shape[-1])
    vals_NK, idx_NK = jax.lax.top_k(logits_NV, k)
    j_N = draw_categorical(key, vals_NK / self.temperature)
    return jnp.take_along_axis(idx_NK, j_N[:, None], axis=-1)[:, 0].astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class TopP:
  """Nucleus sampling: a draw from the smallest set of most likely tokens whose probability
  (under softmax(logits / temperature), after an optional top-k) reaches p.

  A candidate is kept when the probability mass of the candidates ranked above it is < p (so
  the most likely token is always kept); draws happen among sorted candidates and map back.
  """
  p: float
  temperature: float = 1.0
  k: int = 0

  def __call__(self, logits_NV, key):
    v = logits_NV.shape[-1]
    k = v if self.k <= 0 else min(self.k, v)
    vals_NK, idx_NK = jax.lax.top_k(logits_NV / self.temperature, k)   # sorted, descending
    probs_NK = jax.nn.softmax(vals_NK, axis=-1)
    mass_before_NK = jnp.cumsum(probs_NK, axis=-1) - probs_NK
    keep_NK = mass_before_NK < self.p
    keep_NK = keep_NK.at[:, 0].set(True)
    j_N = draw_categorical(key, jnp.where(keep_NK, vals_NK, -jnp.inf))
    return jnp.take_along_axis(idx_NK, j_N[:, None], axis=-1)[:, 0].astype(jnp.int32)


def sampling_method(temperature: float, top_k: int = 0, top_p: float = 1.0):
  """The method for these settings: temperature 0 → Greedy (top-k/top-p ignored); else TopP
  (with its optional top-k) when top_p < 1, TopK when top_k > 0, RandomSampling otherwise."""
  if temperature == 0:
    return Greedy()
  if top_p < 1.0:
    return TopP(p=float(top_p), temperature=float(temperature), k=int(top_k))
  if top_k > 0:
    return TopK(k=int(top_k), temperature=float(temperature))
  return RandomSampling(temperature=float(temperature))


def token_statistics(logits_NV, tokens_N, temperature: float):
  """(logprob, entropy, self_certainty), each float32[N], of z = logits / temperature
  (z = logits when temperature is 0): log softmax(z)[token], -Σ p log p, logsumexp(z) - mean(z)."""
  z_NV = logits_NV.astype(jnp.float32)
  if temperature not in (0, 1):
    z_NV = z_NV / temperature
  # One exp pass: with e = exp(z - max), lse = max + log Σe and entropy = lse - Σ e·z / Σ e.
  max_N1 = jnp.max(z_NV, axis=-1, keepdims=True)
  e_NV = jnp.exp(z_NV - max_N1)
  sum_e_N = jnp.sum(e_NV, axis=-1)
  lse_N = max_N1[:, 0] + jnp.log(sum_e_N)
  entropy_N = lse_N - jnp.sum(e_NV * z_NV, axis=-1) / sum_e_N
  z_tok_N = jnp.take_along_axis(z_NV, tokens_N[:, None], axis=-1)[:, 0]
  return z_tok_N - lse_N, entropy_N, lse_N - jnp.mean(z_NV, axis=-1)


# ---------------------------------------------------------------------------------- the core
@flax.struct.dataclass
class _State:
  step: jax.Array            # int32[]: tokens sampled so far (the next column to write)
  cache: Any
  tokens: jax.Array          # int32[N, M]
  logprobs: jax.Array        # float32[N, M]
  entropy: jax.Array
  self_certainty: jax.Array
  lengths: jax.Array         # int32[N]
  done: jax.Array            # bool[N]


_CACHE_AXES = (None, "act_batch", "act_kv_heads", None, None)   # [layers, N, K, H|slots, slots|H]
_SLOT_AXIS = {"k": 4, "v": 3}                                     # see transformer.init_cache


def _constrain(x, axes):
  return nn.with_logical_constraint(x, axes)


def _prefill(cfg, params, prompts_BP, prompt_lengths_B, cache_dtype):
  """One forward pass over the prompt block into a P-slot cache; logits of each row's last token."""
  b, p = prompts_BP.shape
  cache = transformer.init_cache(cfg, b, p, cache_dtype)
  cache = jax.tree.map(lambda c: _constrain(c, _CACHE_AXES), cache)
  positions_BP = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
  hidden_BPD, cache = transformer.hidden_states(cfg, params, prompts_BP, positions_BP,
                                                jnp.ones_like(prompts_BP), cache)
  last_BD = jnp.take_along_axis(hidden_BPD, (prompt_lengths_B - 1)[:, None, None], axis=1)[:, 0]
  return transformer.logits_from_hidden(cfg, params, last_BD), cache


def _emit(state: _State, logits_NV, key, c: SampleConfig, method) -> _State:
  """Sample column `state.step` from logits [N, V], record statistics, update done/lengths."""
  t = state.step
  token_N = method(logits_NV, jax.random.fold_in(key, t))
  logp_N, ent_N, sc_N = token_statistics(logits_NV, token_N, c.temperature)
  active_N = ~state.done
  token_N = jnp.where(active_N, token_N, c.pad_id)

  def put(buf_NM, col_N):
    col_N = jnp.where(active_N, col_N, jnp.zeros_like(col_N)).astype(buf_NM.dtype)
    return jax.lax.dynamic_update_slice(buf_NM, col_N[:, None], (0, t))

  tokens = jax.lax.dynamic_update_slice(state.tokens, token_N[:, None], (0, t))
  finished_N = jnp.zeros_like(active_N)
  if c.eos_ids:
    finished_N = jnp.isin(token_N, jnp.asarray(c.eos_ids, jnp.int32))
  for seq in c.stop_sequences:
    m = len(seq)
    window_Nm = jax.lax.dynamic_slice(tokens, (0, jnp.maximum(t - m + 1, 0)), (tokens.shape[0], m))
    match_N = jnp.all(window_Nm == jnp.asarray(seq, jnp.int32), axis=-1) & (t + 1 >= m)
    finished_N = finished_N | match_N
  return _State(step=t + 1, cache=state.cache, tokens=tokens, logprobs=put(state.logprobs, logp_N),
                entropy=put(state.entropy, ent_N), self_certainty=put(state.self_certainty, sc_N),
                lengths=state.lengths + active_N.astype(jnp.int32),
                done=state.done | (active_N & finished_N))


def segment_ends(max_new_tokens: int, segments: int = 0) -> tuple[int, ...]:
  """The new-token counts at which the decode loop's segments end (SampleConfig.cache_segments;
  0 = one per 32 new tokens, at most 4): as equal as integers allow, the last max_new_tokens.
  On a 2-core CPU at 128 new tokens (toy-7m, batch 16) 4 segments decoded 1.21x faster than
  one loop, 8 no faster than 4; at 1024, 1.42x."""
  m = max_new_tokens
  n = segments or min(4, max(1, m // 32))
  return tuple(-(-m * (j + 1) // n) for j in range(n))


def _grow_cache(cache: transformer.KVCache, slots: int) -> transformer.KVCache:
  """Each layer's keys [N, K, H, S] and values [N, K, S, H] padded to `slots` slots."""
  def pad(x, axis):
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, slots - x.shape[axis])
    return _constrain(jnp.pad(x, widths), _CACHE_AXES[1:])
  return transformer.KVCache(k=tuple(pad(x, 3) for x in cache.k),
                             v=tuple(pad(x, 2) for x in cache.v))


def sample_core(cfg: ModelConfig, params, prompts, prompt_lengths, key,
                config: SampleConfig) -> SampleOutput:
  """Pure sampler: int32 prompts [B, P] right-padded, int32 prompt_lengths [B] (each in [1, P]),
  a PRNG key, static `config` -> SampleOutput with B*num_samples rows (samples of a prompt
  contiguous). Traceable inside any jit; no host validation of array values (see `generate`).
  Positions run up to P + max_new_tokens - 1, so keep that <= cfg.max_seq_len.
  """
  check_against_model(cfg, config)
  c = config
  method = sampling_method(c.temperature, c.top_k, c.top_p)
  prompts_BP = jnp.asarray(prompts, jnp.int32)
  lengths_B = jnp.asarray(prompt_lengths, jnp.int32)
  b, p = prompts_BP.shape
  s, m = c.num_samples, c.max_new_tokens
  n = b * s
  cache_dtype = jnp.dtype(c.cache_dtype or cfg.dtype)
  # Padding slots are fed through the model: make them a valid id whatever the caller put there.
  prompts_BP = jnp.where(jnp.arange(p)[None, :] < lengths_B[:, None], prompts_BP, c.pad_id)
  prompts_BP = _constrain(prompts_BP, ("act_batch", "act_length"))

  logits_BV, cache = _prefill(cfg, params, prompts_BP, lengths_B, cache_dtype)
  ends = segment_ends(m, c.cache_segments)
  # Broadcast to N rows and grow to the first segment's slots: one copy, no recomputation per
  # sample. A step t (1 <= t < M) writes slot prompt_length + t - 1 <= P + t - 1.
  def grow(name, x):
    widths = [(0, 0)] * x.ndim
    widths[_SLOT_AXIS[name]] = (0, ends[0])
    return _constrain(jnp.repeat(jnp.pad(x, widths), s, axis=1), _CACHE_AXES)
  cache = {name: grow(name, x) for name, x in cache.items()}
  logits_NV = _constrain(jnp.repeat(logits_BV, s, axis=0), ("act_batch", "act_vocab"))
  lengths_N = jnp.repeat(lengths_B, s, axis=0)

  zeros_f = _constrain(jnp.zeros((n, m), jnp.float32), ("act_batch", None))
  state = _State(step=jnp.int32(0), cache=cache,
                 tokens=_constrain(jnp.full((n, m), c.pad_id, jnp.int32), ("act_batch", None)),
                 logprobs=zeros_f, entropy=zeros_f, self_certainty=zeros_f,
                 lengths=jnp.zeros((n,), jnp.int32), done=jnp.zeros((n,), bool))
  state = _emit(state, logits_NV, key, c, method)     # first token: from the prefill logits

  state = state.replace(cache=transformer.KVCache.from_stacked(state.cache))
  # the weights in the compute dtype once, not converted from f32 master weights at every step
  decode_params = transformer.compute_weights(cfg, params)
  if c.unstack_weights:
    decode_params = transformer.unstack_layers(decode_params)

  def body(st: _State):
    t = st.step
    prev_N = jax.lax.dynamic_slice(st.tokens, (0, t - 1), (n, 1))[:, 0]
    logits_NV, cache = transformer.decode_step(cfg, decode_params, st.cache, prev_N,
                                               lengths_N + t - 1)
    return _emit(st.replace(cache=cache), logits_NV, key, c, method)

  for j, end in enumerate(ends):
    if j:
      state = state.replace(cache=_grow_cache(state.cache, p + end))
    state = jax.lax.while_loop(lambda st, end=end: (st.step < end) & ~jnp.all(st.done), body,
                               state)
  return SampleOutput(tokens=state.tokens, lengths=state.lengths, logprobs=state.logprobs,
                      entropy=state.entropy, self_certainty=state.self_certainty,
                      num_steps=state.step)


# ---------------------------------------------------------------------------------- public wrapper
def prompt_bucket(length: int) -> int:
  """Bucketed prompt-block width: the next power of two (at least 8) up to 64, then the next
  multiple of 64. Bounds compilations to one per bucket."""
  if length <= 64:
    return max(8, 1 << max(0, int(length) - 1).bit_length())
  return -(-int(length) // 64) * 64


@functools.partial(jax.jit, static_argnames=("cfg", "config", "rules"))
def _sample_jit(params, prompts, prompt_lengths, key, *, cfg, config, rules):
  # The logical-axis rules are a static argument so that a trace made under one rule set (or
  # none) is never reused under another.
  with nn.logical_axis_rules(rules):
    return sample_core(cfg, params, prompts, prompt_lengths, key, config)


def _as_int_tuple(x, what: str) -> tuple[int, ...]:
  if x is None:
    return ()
  if _is_int(x):
    return (int(x),)
  try:
    vals = tuple(x)
  except TypeError:
    raise ValueError(f"{what}={x!r} must be an integer token id or a sequence of them") from None
  if not all(_is_int(v) for v in vals):
    raise ValueError(f"{what}={x!r} must be an integer token id or a sequence of them")
  return tuple(int(v) for v in vals)


def generate(cfg: ModelConfig, params, prompts, prompt_lengths, key, *, max_new_tokens: int,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, num_samples: int = 1,
             eos_id: int | Sequence[int], pad_id: int,
             stop_sequences: Sequence[Sequence[int]] = (), cache_dtype=None,
             unstack_weights: bool = True, cache_segments: int = 0) -> SampleOutput:
  """Sample `num_samples` continuations of each prompt (the public `rj.generate`).

  prompts: int32[B, P] right-padded with pad_id; prompt_lengths: int32[B] (each >= 1), or None to
  infer them from the padding (not allowed when pad_id is an EOS id); key: a PRNG key.
  temperature 0 is greedy; top_k 0 and top_p 1.0 are off. eos_id: one id, several ids, or ()
  for none. stop_sequences: token-id sequences that end a row once generated. cache_dtype,
  unstack_weights and cache_segments: see SampleConfig. Returns a
  SampleOutput with B*num_samples rows (samples of one prompt contiguous), see `sample_core`.
  Bad input raises ValueError before anything compiles. Under `sharding.activate(mesh)` the batch
  is split over (data, fsdp) and attention heads over tensor.
  """
  eos_ids = _as_int_tuple(eos_id, "eos_id")
  stops = tuple(_as_int_tuple(s, "stop_sequences entry") for s in stop_sequences)
  if isinstance(temperature, (int, np.integer)) and not isinstance(temperature, bool):
    temperature = float(temperature)
  if isinstance(top_p, (int, np.integer)) and not isinstance(top_p, bool):
    top_p = float(top_p)
  if cache_dtype is not None:
    cache_dtype = jnp.dtype(cache_dtype).name
  config = SampleConfig(max_new_tokens=max_new_tokens, pad_id=pad_id, eos_ids=eos_ids,
                        temperature=temperature, top_k=top_k, top_p=top_p,
                        num_samples=num_samples, stop_sequences=stops, cache_dtype=cache_dtype,
                        unstack_weights=unstack_weights, cache_segments=cache_segments)
  check_against_model(cfg, config)

  prompts_np = np.asarray(prompts)
  if prompts_np.ndim != 2 or prompts_np.shape[0] == 0 or prompts_np.shape[1] == 0:
    raise ValueError(f"prompts must be a non-empty int array [batch, prompt_len]; got shape "
                     f"{prompts_np.shape}")
  if not np.issubdtype(prompts_np.dtype, np.integer):
    raise ValueError(f"prompts must hold integer token ids; got dtype {prompts_np.dtype}")
  b, p = prompts_np.shape
  if prompt_lengths is None:
    if pad_id in eos_ids:
      raise ValueError(f"pad_id={pad_id} is also an EOS id, so prompt lengths cannot be inferred "
                       f"from the padding (a prompt ending in EOS would be cut); pass "
                       f"prompt_lengths explicitly")
    nonpad = prompts_np != pad_id
    lengths_np = np.where(nonpad.any(1), p - np.argmax(nonpad[:, ::-1], axis=1), 0)
  else:
    lengths_np = np.asarray(prompt_lengths)
  if lengths_np.shape != (b,) or not np.issubdtype(lengths_np.dtype, np.integer):
    raise ValueError(f"prompt_lengths must be int[{b}] (one length per prompt row); got "
                     f"{lengths_np.dtype}{list(lengths_np.shape)}")
  empty = np.flatnonzero(lengths_np < 1)
  if empty.size:
    raise ValueError(f"prompt rows {empty.tolist()} are empty (length "
                     f"{lengths_np[empty].tolist()}); every prompt needs at least one token "
                     f"(e.g. BOS)")
  too_long = np.flatnonzero(lengths_np > p)
  if too_long.size:
    r = int(too_long[0])
    raise ValueError(f"prompt row {r} has length {int(lengths_np[r])} > the prompt block width {p}")
  longest = int(lengths_np.max())
  if longest > cfg.max_seq_len:
    r = int(np.argmax(lengths_np))
    raise ValueError(f"prompt row {r} has {longest} tokens, longer than the model's max_seq_len="
                     f"{cfg.max_seq_len}; truncate the prompts")
  if longest + max_new_tokens > cfg.max_seq_len:
    raise ValueError(f"the longest prompt ({longest} tokens) + max_new_tokens={max_new_tokens} "
                     f"does not fit in the cache limit max_seq_len={cfg.max_seq_len}; lower "
                     f"max_new_tokens or truncate the prompts")
  real = np.arange(p)[None, :] < lengths_np[:, None]
  bad = real & ((prompts_np < 0) | (prompts_np >= cfg.vocab_size))
  if bad.any():
    r, col = map(int, np.argwhere(bad)[0])
    raise ValueError(f"prompt row {r} position {col} holds token id {int(prompts_np[r, col])} "
                     f"outside the vocabulary [0, {cfg.vocab_size})")

  width = prompt_bucket(longest)
  block = np.full((b, width), pad_id, np.int32)
  keep = min(width, p)
  block[:, :keep] = np.where(real[:, :keep], prompts_np[:, :keep], pad_id)
  rules = tuple(nn.get_logical_axis_rules())
  return _sample_jit(params, block, lengths_np.astype(np.int32), key, cfg=cfg, config=config,
                     rules=rules)
