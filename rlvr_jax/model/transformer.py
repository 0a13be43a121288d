"""The decoder: a pure-functional Flax linen model for the Llama 3.x and Qwen2/2.5 families.

Parameter layout (layers stacked on a leading axis by `nn.scan`; logical axis names in brackets):

  embed_tokens/embedding                      [vocab, embed]
  layers/input_layernorm/scale                [layers, embed]
  layers/self_attn/{q,k,v}_proj/kernel        [layers, embed, heads|kv_heads, head_dim]
  layers/self_attn/{q,k,v}_proj/bias          [layers, heads|kv_heads, head_dim]   (Qwen2 only)
  layers/self_attn/o_proj/kernel              [layers, heads, head_dim, embed]
  layers/post_attention_layernorm/scale       [layers, embed]
  layers/mlp/{gate,up}_proj/kernel            [layers, embed, mlp]
  layers/mlp/down_proj/kernel                 [layers, mlp, embed]
  norm/scale                                  [embed]
  lm_head/kernel                              [embed, vocab]                     (untied only)

The KV cache is explicit state: `{"k": [layers, B, kv_heads, head_dim, S], "v": [layers, B,
kv_heads, S, head_dim]}`: keys are stored transposed, so that both attention products of a decode
step are plain batched matmuls over the cache as it lies (q·K reads [head_dim, S], p·V reads
[S, head_dim]), with no per-step transpose or packing copy of the cache. Each call writes the new
keys/values at `positions` and attends to cache slots `<= position` of its row, so right-padded
prompts of different lengths share one cache layout (decode overwrites the padding).

Every forward variant lives here, and nothing outside rlvr_jax/model/ indexes the parameter tree:
`forward` (logits), `hidden_states` (no head), `embed`, `logits_from_hidden` (the one output
head, also the Decoder's own), `decode_step` (one token per row over a per-layer `KVCache`, the
sampler's loop body), and per-layer parameter access (`layer_params`, `unstack_layers`).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rlvr_jax.model.config import ModelConfig

Cache = dict[str, jax.Array]

_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _init(std: float, axes: tuple[str, ...]):
  return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


def _constrain(x, axes):
  return nn.with_logical_constraint(x, axes)


# ---------------------------------------------------------------------------------- RoPE
def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
  """Inverse frequencies [head_dim/2], with the llama3 scaling when configured (as HF computes it)."""
  dim = cfg.head_dim
  inv_freq = 1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
  inv_freq = inv_freq.astype(np.float32)
  rs = cfg.rope_scaling
  if rs is None:
    return inv_freq
  old_len = rs.original_max_position_embeddings
  low_freq_wavelen = old_len / rs.low_freq_factor
  high_freq_wavelen = old_len / rs.high_freq_factor
  wavelen = 2 * np.pi / inv_freq
  scaled = np.where(wavelen > low_freq_wavelen, inv_freq / rs.factor, inv_freq)
  smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor)
  smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
  is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
  return np.where(is_medium, smoothed, scaled).astype(np.float32)


def apply_rope(x_BTNH: jax.Array, positions_BT: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotate-half RoPE (the HF convention): x*cos + rotate_half(x)*sin, computed in f32."""
  freqs_BTF = positions_BT.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
  emb = jnp.concatenate([freqs_BTF, freqs_BTF], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(emb), jnp.sin(emb)
  x = x_BTNH.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return (x * cos + rotated * sin).astype(x_BTNH.dtype)


# ---------------------------------------------------------------------------------- layers
class RMSNorm(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                       (x.shape[-1],), self.cfg.jnp_param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.rms_norm_eps)
    return (y * scale.astype(jnp.float32)).astype(self.cfg.jnp_dtype)


def flat_dot(x, w, n_in: int = 1):
  """x [..., *in] · w [*in, *out] -> [..., *out], computed as one 2-D matmul [lead, in] x
  [in, out] (the reshapes are free). Contracting a [B, T, D] activation directly is the same
  value, but XLA:CPU then computes the weight gradient (a contraction over B and T) through a
  transposed copy of the output gradient: a Llama MLP's forward + backward took 2.7x longer on
  the CPU that way (821 vs 307 ms at 36,864 tokens, 256 -> 768 -> 256)."""
  lead = x.shape[:x.ndim - n_in]
  k = math.prod(x.shape[x.ndim - n_in:])
  out = w.shape[n_in:]
  y = jnp.dot(x.reshape(math.prod(lead), k), w.reshape(k, math.prod(out)))
  return y.reshape(*lead, *out)


class Linear(nn.Module):
  """y = x · W (+ b), contracting the last `len(in_shape)` axes of x; W is [*in_shape, *out_shape]."""
  cfg: ModelConfig
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  kernel_axes: tuple[str, ...]
  bias_axes: tuple[str, ...] | None = None

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    kernel = self.param("kernel", _init(cfg.init_std, self.kernel_axes),
                        self.in_shape + self.out_shape, cfg.jnp_param_dtype)
    y = flat_dot(x.astype(cfg.jnp_dtype), kernel.astype(cfg.jnp_dtype), len(self.in_shape))
    if self.bias_axes is not None:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.bias_axes),
                        self.out_shape, cfg.jnp_param_dtype)
      y = y + bias.astype(cfg.jnp_dtype)
    return y


def accelerator_platform() -> str:
  """"cuda" (an NVIDIA GPU), "rocm" (an AMD GPU), or JAX's default backend ("cpu", "tpu"):
  JAX names both GPU kinds "gpu"; the client's platform version tells them apart."""
  backend = jax.default_backend()
  if backend != "gpu":
    return backend
  version = str(getattr(jax.devices()[0].client, "platform_version", "")).lower()
  return "rocm" if "rocm" in version or "hip" in version else "cuda"


def attention_implementation(cfg: ModelConfig, platform: str | None = None) -> str:
  """The kernel the full-sequence attention runs ("xla" or "cudnn") for `cfg.attention` on
  `platform` (accelerator_platform() by default): "auto" takes cuDNN's fused attention where it
  applies (an NVIDIA GPU, bf16/f16 compute, head_dim a multiple of 8 up to 128, what cuDNN's
  flash kernels take): XLA's materialises every [T, S] score matrix, and ran 3.4x slower than
  cuDNN's on an H200 (rlvr-jax bench attention)."""
  if cfg.attention != "auto":
    return cfg.attention
  platform = platform or accelerator_platform()
  ok = (platform == "cuda" and cfg.jnp_dtype in (jnp.bfloat16, jnp.float16)
        and cfg.head_dim % 8 == 0 and cfg.head_dim <= 128)
  return "cudnn" if ok else "xla"


def attention_mask(q_positions_BT, q_segments_BT, kv_positions_BS, kv_segments_BS):
  """[B, 1, T, S] boolean mask: causal by position and never across segments (documents)."""
  causal = kv_positions_BS[:, None, :] <= q_positions_BT[:, :, None]
  same_doc = kv_segments_BS[:, None, :] == q_segments_BT[:, :, None]
  return (causal & same_doc)[:, None, :, :]


def sequence_mask(positions_BT, segment_ids_BT):
  """The full-sequence attention's [B, 1, T, T] mask: attention_mask, and never a key later in
  the row than the query (causal by index too, as a decoder reads a sequence). In every layout
  the model is given (packed documents, [prompt | response] rows) positions rise with the index
  inside a real segment, so the index rule changes nothing for real tokens; a padding query
  (segment 0) may see less padding, which no real token reads. It is what lets full_attention
  skip the blocks above the diagonal. Built in the graph (iota), not as a [T, T] constant."""
  t = positions_BT.shape[1]
  by_index = (jax.lax.broadcasted_iota(jnp.int32, (t, t), 1)
              <= jax.lax.broadcasted_iota(jnp.int32, (t, t), 0))[None, None]
  return attention_mask(positions_BT, segment_ids_BT, positions_BT, segment_ids_BT) & by_index


# The full sequence's queries in up to this many blocks, each attending the keys up to its own
# end: XLA's attention computes every score it is given, and the blocks leave out the ones above
# the diagonal ((1 + 2 + 3 + 4) / 16 of the square is computed, not all of it). On a 2-core EPYC
# the RL update ran 8% faster at 96 tokens and 11% at 288 than with one block (8 blocks: 8%).
# A block holds at least MIN_QUERY_BLOCK queries: shorter sequences (the tests') gain nothing
# and would compile more ops.
CAUSAL_QUERY_BLOCKS = 4
MIN_QUERY_BLOCK = 24


def causal_query_blocks(length: int) -> list[tuple[int, int]]:
  """[(start, end)] of the query blocks of a sequence of `length` (as even as the length
  allows): block i's queries are [start, end) and its keys [0, end)."""
  blocks = max(1, min(CAUSAL_QUERY_BLOCKS, length // MIN_QUERY_BLOCK))
  bounds = [round(i * length / blocks) for i in range(blocks + 1)]
  return list(zip(bounds[:-1], bounds[1:]))


def score_share(length: int) -> float:
  """The share of the [length, length] score square XLA's attention computes in causal query
  blocks (10/16 at 4 even blocks, 1 for one block; the causal half is what a decoder needs)."""
  return sum((end - start) * end for start, end in causal_query_blocks(length)) / length ** 2


def full_attention(q_BTNH, k_BTKH, v_BTKH, mask_B1TT, scale: float, implementation: str):
  """Attention of a full sequence over itself under sequence_mask, with `implementation`
  ("xla" | "cudnn"). XLA's runs in causal query blocks (causal_query_blocks): the same function,
  without the scores above the diagonal. cuDNN's fused kernel takes the whole sequence."""
  if implementation != "xla":
    return jax.nn.dot_product_attention(q_BTNH, k_BTKH, v_BTKH, mask=mask_B1TT, scale=scale,
                                        implementation=implementation)
  blocks = [jax.nn.dot_product_attention(q_BTNH[:, start:end], k_BTKH[:, :end],
                                         v_BTKH[:, :end], mask=mask_B1TT[:, :, start:end, :end],
                                         scale=scale, implementation="xla")
            for start, end in causal_query_blocks(q_BTNH.shape[1])]
  return blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=1)


class Attention(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BTD, positions_BT, segment_ids_BT, cache: Cache | None):
    cfg = self.cfg
    n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    d = (cfg.hidden_size,)
    q_bias = ("heads", "head_dim") if cfg.qkv_bias else None
    kv_bias = ("kv_heads", "head_dim") if cfg.qkv_bias else None
    q_BTNH = Linear(cfg, d, (n, h), ("embed", "heads", "head_dim"), q_bias, name="q_proj")(x_BTD)
    k_BTKH = Linear(cfg, d, (k, h), ("embed", "kv_heads", "head_dim"), kv_bias, name="k_proj")(x_BTD)
    v_BTKH = Linear(cfg, d, (k, h), ("embed", "kv_heads", "head_dim"), kv_bias, name="v_proj")(x_BTD)
    inv_freq = rope_inv_freq(cfg)
    q_BTNH = _constrain(apply_rope(q_BTNH, positions_BT, inv_freq),
                        ("act_batch", "act_length", "act_heads", None))
    k_BTKH = apply_rope(k_BTKH, positions_BT, inv_freq)

    if cache is None:
      mask = sequence_mask(positions_BT, segment_ids_BT)
      out_BTNH = full_attention(q_BTNH, k_BTKH, v_BTKH, mask, 1.0 / np.sqrt(h),
                                attention_implementation(cfg))
      new_cache = None
    else:
      b = x_BTD.shape[0]
      rows_B1 = jnp.arange(b)[:, None]
      # Keys [B, K, H, S] indexed at (row, :, :, position) and values [B, K, S, H] indexed at
      # (row, :, position): either written block is [B, T, K, H].
      keys_BKHS = cache["k"].at[rows_B1, :, :, positions_BT].set(k_BTKH.astype(cache["k"].dtype))
      values_BKSH = cache["v"].at[rows_B1, :, positions_BT].set(v_BTKH.astype(cache["v"].dtype))
      keys_BKHS = _constrain(keys_BKHS, ("act_batch", "act_kv_heads", None, None))
      values_BKSH = _constrain(values_BKSH, ("act_batch", "act_kv_heads", None, None))
      new_cache = {"k": keys_BKHS, "v": values_BKSH}
      s = values_BKSH.shape[2]
      slots_BS = jnp.broadcast_to(jnp.arange(s), (b, s))
      mask = attention_mask(positions_BT, jnp.zeros_like(positions_BT), slots_BS,
                            jnp.zeros_like(slots_BS))
      out_BTNH = _cached_attention(q_BTNH, keys_BKHS.astype(cfg.jnp_dtype),
                                   values_BKSH.astype(cfg.jnp_dtype), mask)
    out_BTD = Linear(cfg, (n, h), d, ("heads", "head_dim", "embed"), name="o_proj")(out_BTNH)
    return out_BTD, new_cache


def _cached_attention(q_BTNH, keys_BKHS, values_BKSH, mask_B1TS):
  """Grouped-query attention of queries [B, T, N, H] over a cache of keys [B, K, H, S] and values
  [B, K, S, H] (softmax in float32); the same function as jax.nn.dot_product_attention. Both
  products are batched matmuls over (row, kv head) with the cache as the plain right operand."""
  b, t, n, h = q_BTNH.shape
  k = keys_BKHS.shape[1]
  q_BKGTH = q_BTNH.reshape(b, t, k, n // k, h).transpose(0, 2, 3, 1, 4)
  scores_BKGTS = jnp.einsum("bkgth,bkhs->bkgts", q_BKGTH, keys_BKHS)
  scores_BKGTS = jnp.where(mask_B1TS[:, :, None], scores_BKGTS.astype(jnp.float32) / np.sqrt(h),
                           jnp.finfo(jnp.float32).min)
  probs_BKGTS = jax.nn.softmax(scores_BKGTS, axis=-1).astype(values_BKSH.dtype)
  out_BKGTH = jnp.einsum("bkgts,bksh->bkgth", probs_BKGTS, values_BKSH)
  return out_BKGTH.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


class MLP(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BTD):
    cfg = self.cfg
    d, f = (cfg.hidden_size,), (cfg.intermediate_size,)
    gate = Linear(cfg, d, f, ("embed", "mlp"), name="gate_proj")(x_BTD)
    up = Linear(cfg, d, f, ("embed", "mlp"), name="up_proj")(x_BTD)
    h_BTF = _constrain(nn.silu(gate) * up, ("act_batch", "act_length", "act_mlp"))
    return Linear(cfg, f, d, ("mlp", "embed"), name="down_proj")(h_BTF)


class DecoderBlock(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BTD, positions_BT, segment_ids_BT, cache):
    attn_out, new_cache = Attention(self.cfg, name="self_attn")(
        RMSNorm(self.cfg, name="input_layernorm")(x_BTD), positions_BT, segment_ids_BT, cache)
    x_BTD = x_BTD + attn_out
    x_BTD = x_BTD + MLP(self.cfg, name="mlp")(RMSNorm(self.cfg, name="post_attention_layernorm")(x_BTD))
    x_BTD = _constrain(x_BTD, ("act_batch", "act_length", "act_embed"))
    return x_BTD, new_cache


class Decoder(nn.Module):
  """tokens [B, T] -> (logits [B, T, V] float32, updated cache or None)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BT, positions_BT, segment_ids_BT, cache: Cache | None = None,
               return_hidden: bool = False):
    cfg = self.cfg
    embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.jnp_dtype,
                     param_dtype=cfg.jnp_param_dtype,
                     embedding_init=_init(cfg.init_std, ("vocab", "embed")), name="embed_tokens")
    x_BTD = _constrain(embed(tokens_BT), ("act_batch", "act_length", "act_embed"))

    block = DecoderBlock
    if cfg.remat != "none":
      # prevent_cse=False is safe only inside a scan's loop (jax.checkpoint's docs): with the
      # layers unrolled, XLA may merge the recomputed forward with the first one (remat undone)
      block = nn.remat(block, policy=_REMAT_POLICIES[cfg.remat],
                       prevent_cse=min(cfg.scan_unroll, cfg.num_layers) > 1)
    layers = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                     in_axes=(nn.broadcast, nn.broadcast, 0), out_axes=0, length=cfg.num_layers,
                     metadata_params={nn.PARTITION_NAME: "layers"},
                     unroll=min(cfg.scan_unroll, cfg.num_layers))
    x_BTD, new_cache = layers(cfg, name="layers")(x_BTD, positions_BT, segment_ids_BT, cache)
    x_BTD = RMSNorm(cfg, name="norm")(x_BTD)
    if return_hidden:
      return x_BTD, new_cache
    if cfg.tie_embeddings:
      head = embed.embedding
    else:
      head = _Kernel(cfg, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), name="lm_head")()
    return _output_head(cfg, head, x_BTD), new_cache


class _Kernel(nn.Module):
  """A bare `kernel` parameter (Linear's, same init), for weights applied by a pure function."""
  cfg: ModelConfig
  shape: tuple[int, ...]
  axes: tuple[str, ...]

  @nn.compact
  def __call__(self):
    return self.param("kernel", _init(self.cfg.init_std, self.axes), self.shape,
                      self.cfg.jnp_param_dtype)


def _output_head(cfg: ModelConfig, head, x_D):
  """The output head: hidden states [..., D] times the tied embedding [V, D] or the lm_head
  kernel [D, V], in the compute dtype -> float32 logits [..., V]."""
  x_D = x_D.astype(cfg.jnp_dtype)
  w_DV = head.astype(cfg.jnp_dtype)
  if cfg.tie_embeddings:
    w_DV = w_DV.T         # an explicit transpose, as nn.Embed.attend: the same ops run eagerly
  logits_V = flat_dot(x_D, w_DV)
  lead = ("act_batch", "act_length")[:x_D.ndim - 1] + (None,) * max(0, x_D.ndim - 3)
  return _constrain(logits_V.astype(jnp.float32), lead + ("act_vocab",))


# ---------------------------------------------------------------------------------- functions
def default_positions(tokens_BT, segment_ids_BT=None):
  """0..T-1 per row, or restarting at every document boundary when segment ids are given."""
  b, t = tokens_BT.shape
  if segment_ids_BT is None:
    return jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
  idx = jnp.arange(t, dtype=jnp.int32)
  starts = jnp.concatenate([jnp.ones((b, 1), bool), segment_ids_BT[:, 1:] != segment_ids_BT[:, :-1]], 1)
  last_start = jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)
  return idx - last_start


def forward(cfg: ModelConfig, params: Any, tokens, *, positions=None, segment_ids=None,
            cache: Cache | None = None, return_cache: bool = False):
  """Logits float32[B, T, V] of int32 tokens [B, T]. Pure; jit it or call it inside jit.

  positions: int32[B, T] (default 0..T-1, restarting per segment); segment_ids: int32[B, T]
  (attention never crosses segments). With `cache`, new keys/values are written at `positions`
  and attention reads every slot <= position; `return_cache=True` also returns the new cache.
  """
  tokens = jnp.asarray(tokens, jnp.int32)
  if segment_ids is None:
    segment_ids = jnp.ones_like(tokens)
  if positions is None:
    positions = default_positions(tokens, segment_ids)
  logits, new_cache = Decoder(cfg).apply({"params": params}, tokens, positions, segment_ids, cache)
  return (logits, new_cache) if return_cache else logits


def hidden_states(cfg: ModelConfig, params: Any, tokens_BT, positions_BT, segment_ids_BT,
                  cache: Cache | None = None) -> tuple[jax.Array, Cache | None]:
  """`forward` without the output head: final-normed hidden states [B, T, D] (compute dtype) and
  the updated cache (None without one). Apply `logits_from_hidden` to the rows that need logits."""
  return Decoder(cfg).apply({"params": params}, tokens_BT, positions_BT, segment_ids_BT, cache,
                            return_hidden=True)


def embed(cfg: ModelConfig, params: Any, tokens_BT) -> jax.Array:
  """Token embeddings [..., D] in the compute dtype of int32 tokens [...] (the values of the
  decoder's own embedding layer)."""
  return jnp.take(params["embed_tokens"]["embedding"], tokens_BT, axis=0).astype(cfg.jnp_dtype)


def logits_from_hidden(cfg: ModelConfig, params: Any, x_D) -> jax.Array:
  """The output head (the decoder's own): final-normed hidden states [..., D] -> float32 logits
  [..., V], through the tied embedding or the lm_head in the compute dtype."""
  head = params["embed_tokens"]["embedding"] if cfg.tie_embeddings else params["lm_head"]["kernel"]
  return _output_head(cfg, head, x_D)


# ---------------------------------------------------------------------------------- decoding
def layer_params(params: Any, i: int) -> Any:
  """Layer i's parameter tree: a slice of the stacked layers, or entry i of `unstack_layers`."""
  layers = params["layers"]
  if isinstance(layers, (list, tuple)):
    return layers[i]
  return jax.tree.map(lambda a: a[i], layers)


def num_layers(params: Any) -> int:
  """The number of layers in `params` (stacked or unstacked)."""
  layers = params["layers"]
  if isinstance(layers, (list, tuple)):
    return len(layers)
  return jax.tree.leaves(layers)[0].shape[0]


def compute_weights(cfg: ModelConfig, params: Any) -> Any:
  """params with every weight the model casts to the compute dtype before use (kernels, biases,
  the embedding table) cast once, the norm scales (used in f32) as they are: the same values
  every forward variant computes, for loops that would otherwise convert f32 master weights at
  every step (the sampler's decode reads half the bytes in bf16)."""
  dtype = cfg.jnp_dtype

  def cast(path, x):
    name = getattr(path[-1], "key", None)
    if name == "scale" or not jnp.issubdtype(x.dtype, jnp.floating):
      return x
    return x.astype(dtype)
  return jax.tree_util.tree_map_with_path(cast, params)


def unstack_layers(params: Any) -> dict[str, Any]:
  """params with the stacked layer weights copied into a tuple of per-layer trees (the other
  weights shared, not copied), so that `decode_step` reads each layer in place instead of slicing
  the stack at every step. Only `decode_step` and `layer_params` accept this form."""
  return {**params, "layers": tuple(layer_params(params, i) for i in range(num_layers(params)))}


class KVCache(NamedTuple):
  """The decode-time KV cache, one array per layer: keys k[i] [B, K, H, S] and values v[i]
  [B, K, S, H] (the layout of `init_cache`, see the module docstring). Per-layer arrays rather than
  `init_cache`'s stacked ones, so that a decode step inside a while_loop updates each layer's cache
  in place instead of copying it out of and back into the stack."""
  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]

  @classmethod
  def from_stacked(cls, cache: Cache) -> "KVCache":
    """Split an `init_cache` / `forward(..., cache=...)` cache into its layers."""
    n = cache["k"].shape[0]
    return cls(k=tuple(cache["k"][i] for i in range(n)), v=tuple(cache["v"][i] for i in range(n)))

  def stacked(self) -> Cache:
    """Back to the stacked form that `forward` takes."""
    return {"k": jnp.stack(self.k), "v": jnp.stack(self.v)}


def decode_step(cfg: ModelConfig, params: Any, cache: KVCache, tokens_B, positions_B
                ) -> tuple[jax.Array, KVCache]:
  """One token per row: int32 tokens [B] at positions [B] -> (logits float32[B, V], the cache
  with their keys/values written at `positions`). Attention reads every cache slot <= a row's
  position.

  The same computation as `forward(..., cache=...)` on [B, 1] tokens, but the layers run as an
  unrolled Python loop over per-layer weights and caches instead of `nn.scan` over stacked ones:
  inside a while_loop, the scan would copy every layer's weights and KV cache out of / back into
  the stacked arrays at every step. params: stacked, or `unstack_layers(params)` (fastest: no
  per-step slicing).
  """
  tokens_B1, positions_B1 = tokens_B[:, None], positions_B[:, None]
  x_B1D = _constrain(embed(cfg, params, tokens_B1), ("act_batch", "act_length", "act_embed"))
  segments_B1 = jnp.ones_like(tokens_B1)
  keys, values = [], []
  for i, (k_i, v_i) in enumerate(zip(cache.k, cache.v)):
    x_B1D, c_i = DecoderBlock(cfg).apply({"params": layer_params(params, i)}, x_B1D, positions_B1,
                                         segments_B1, {"k": k_i, "v": v_i})
    keys.append(c_i["k"])
    values.append(c_i["v"])
  x_B1D = RMSNorm(cfg).apply({"params": params["norm"]}, x_B1D)
  return logits_from_hidden(cfg, params, x_B1D[:, 0]), KVCache(tuple(keys), tuple(values))


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> Cache:
  """Zeros: keys [layers, batch, kv_heads, head_dim, max_len], values [..., max_len, head_dim]."""
  dtype = jnp.dtype(dtype or cfg.dtype)
  lbk = (cfg.num_layers, batch, cfg.num_kv_heads)
  return {"k": jnp.zeros(lbk + (cfg.head_dim, max_len), dtype),
          "v": jnp.zeros(lbk + (max_len, cfg.head_dim), dtype)}


def abstract_params(cfg: ModelConfig):
  """Boxed (nn.LogicallyPartitioned) ShapeDtypeStructs of the parameters, no allocation."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  return jax.eval_shape(
      lambda key: Decoder(cfg).init(key, tokens, tokens, tokens)["params"], jax.random.key(0))


def init_params_fn(cfg: ModelConfig):
  """key -> unboxed params; jit it with out_shardings to create params directly on devices."""
  tokens = jnp.zeros((1, 1), jnp.int32)

  def init(key):
    return nn.unbox(Decoder(cfg).init(key, tokens, tokens, tokens)["params"])
  return init
