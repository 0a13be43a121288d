"""The model's pure forward variants: the one output head, embedding, per-layer parameters, the
per-layer KV cache and the single decode step, held equal to `rj.forward` and to the sampler's
previous decode step."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlvr_jax as rj
from rlvr_jax.model import transformer as T

_BASE = dict(vocab_size=48, hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4,
             num_kv_heads=2, head_dim=8, max_seq_len=64)
CFGS = {"llama_untied": rj.get_model_config("toy-1m", **_BASE),
        "qwen2_tied": rj.get_model_config("toy-1m", **_BASE).replace(
            family="qwen2", qkv_bias=True, tie_embeddings=True)}
B, S = 3, 10                       # rows, tokens per row


def _params(cfg, seed=0):
  """Random weights drawn with numpy (no init compile); norms and biases randomised too, and an
  embedding/head large enough that logits spread (std ~1)."""
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return (1.0 + 0.1 * rng.normal(size=s.shape)).astype(np.float32)
    std = 0.3 if ("lm_head" in name or "embed" in name) else 0.1
    return rng.normal(0.0, std, s.shape).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, nn.unbox(T.abstract_params(cfg)))


@pytest.fixture(scope="module", params=list(CFGS))
def model(request):
  cfg = CFGS[request.param]
  tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (B, S)).astype(np.int32)
  return cfg, _params(cfg), tokens


def _tol(cfg, logits):
  """f32 error bound of two evaluation orders of the same logits: each of the L layers and the
  head sums at most max(D, F, N*H, S) products, a sum of n terms is exact to n * eps relative to
  its magnitude, and errors add up through the layers; scaled by the logits' magnitude."""
  n = max(cfg.hidden_size, cfg.intermediate_size, cfg.num_heads * cfg.head_dim, S)
  return float(np.finfo(np.float32).eps) * n * (cfg.num_layers + 1) * float(np.max(np.abs(logits)))


# ------------------------------------------------------------------------------- the output head
def test_logits_from_hidden_is_forwards_own_head(model):
  cfg, params, tokens = model
  positions = T.default_positions(jnp.asarray(tokens))
  segments = jnp.ones_like(positions)
  hidden, cache = T.hidden_states(cfg, params, tokens, positions, segments)
  assert cache is None and hidden.shape == (B, S, cfg.hidden_size)
  logits = T.logits_from_hidden(cfg, params, hidden)
  assert logits.dtype == jnp.float32
  np.testing.assert_array_equal(logits, rj.forward(cfg, params, tokens))     # eagerly

  @jax.jit
  def head_on_hidden(p, t):
    return T.logits_from_hidden(cfg, p, T.hidden_states(cfg, p, t, positions, segments)[0])
  np.testing.assert_array_equal(head_on_hidden(params, tokens),
                                jax.jit(lambda p, t: rj.forward(cfg, p, t))(params, tokens))
  # any leading shape: one row per hidden state
  rows = jax.jit(lambda p, x: T.logits_from_hidden(cfg, p, x))(params, hidden[:, 4])
  np.testing.assert_allclose(rows, logits[:, 4], rtol=0, atol=_tol(cfg, logits))


def _sampler_head_before(cfg, params, x_ND):
  """The sampler's head before it moved into the model (sampling._logits_from_hidden)."""
  x_ND = x_ND.astype(cfg.jnp_dtype)
  if cfg.tie_embeddings:
    return jnp.dot(x_ND, params["embed_tokens"]["embedding"].astype(cfg.jnp_dtype).T
                   ).astype(jnp.float32)
  return jnp.dot(x_ND, params["lm_head"]["kernel"].astype(cfg.jnp_dtype)).astype(jnp.float32)


def _rl_head_before(cfg, params, x_NMD):
  """The RL log-prob code's head before it moved into the model (rl.step._head_logits)."""
  x = x_NMD.astype(cfg.jnp_dtype)
  if cfg.tie_embeddings:
    w_VD = params["embed_tokens"]["embedding"].astype(cfg.jnp_dtype)
    return jnp.einsum("nmd,vd->nmv", x, w_VD).astype(jnp.float32)
  return jnp.einsum("nmd,dv->nmv", x, params["lm_head"]["kernel"].astype(cfg.jnp_dtype)
                    ).astype(jnp.float32)


def test_logits_from_hidden_equals_the_heads_it_replaced_bit_for_bit(model):
  cfg, params, _ = model
  x = jax.random.normal(jax.random.key(0), (B, S, cfg.hidden_size), jnp.float32)
  head = jax.jit(lambda p, x: T.logits_from_hidden(cfg, p, x))
  sampler_head = jax.jit(lambda p, x: _sampler_head_before(cfg, p, x))
  np.testing.assert_array_equal(head(params, x[:, 0]), sampler_head(params, x[:, 0]))
  np.testing.assert_array_equal(head(params, x),
                                jax.jit(lambda p, x: _rl_head_before(cfg, p, x))(params, x))


def test_embed_returns_the_rows_in_the_compute_dtype(model):
  cfg, params, tokens = model
  np.testing.assert_array_equal(T.embed(cfg, params, tokens),
                                np.asarray(params["embed_tokens"]["embedding"])[tokens])
  bf16 = cfg.replace(dtype="bfloat16")
  x = T.embed(bf16, params, tokens[:, 0])
  assert x.dtype == jnp.bfloat16 and x.shape == (B, cfg.hidden_size)


# ------------------------------------------------------------------------------- layers / cache
def test_unstacked_layers_are_the_stacked_slices_and_share_the_rest(model):
  cfg, params, _ = model
  un = T.unstack_layers(params)
  assert T.num_layers(params) == T.num_layers(un) == cfg.num_layers
  assert un["embed_tokens"] is params["embed_tokens"] and un["norm"] is params["norm"]
  for i in range(cfg.num_layers):
    jax.tree.map(np.testing.assert_array_equal, T.layer_params(un, i), T.layer_params(params, i))


def test_kv_cache_splits_and_restacks(model):
  cfg, _, _ = model
  stacked = T.init_cache(cfg, B, S)
  stacked = jax.tree.map(lambda c: jax.random.normal(jax.random.key(c.ndim), c.shape), stacked)
  cache = T.KVCache.from_stacked(stacked)
  assert len(cache.k) == len(cache.v) == cfg.num_layers
  assert cache.k[0].shape == (B, cfg.num_kv_heads, cfg.head_dim, S)
  assert cache.v[0].shape == (B, cfg.num_kv_heads, S, cfg.head_dim)
  jax.tree.map(np.testing.assert_array_equal, cache.stacked(), stacked)


# ------------------------------------------------------------------------------- decode_step
def test_decode_step_over_a_prompt_equals_forward_at_each_position(model):
  cfg, params, tokens = model
  full = np.asarray(rj.forward(cfg, params, tokens))
  tol = _tol(cfg, full)
  step = jax.jit(lambda p, c, tok, pos: T.decode_step(cfg, p, c, tok, pos))
  # stacked and unstacked weights give the same step
  for p in (params, T.unstack_layers(params)):
    cache = T.KVCache.from_stacked(T.init_cache(cfg, B, S + 2))
    for t in range(S):
      logits, cache = step(p, cache, tokens[:, t], jnp.full((B,), t, jnp.int32))
      assert logits.shape == (B, cfg.vocab_size) and logits.dtype == jnp.float32
      np.testing.assert_allclose(logits, full[:, t], rtol=0, atol=tol, err_msg=f"position {t}")
    # the cache it filled is forward's cache for the same tokens
    _, ref_cache = rj.forward(cfg, params, tokens, cache=T.init_cache(cfg, B, S + 2),
                              return_cache=True)
    for a, b in zip(jax.tree.leaves(cache.stacked()), jax.tree.leaves(ref_cache)):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_decode_step_at_row_positions_continues_forward_prefill(model):
  """Rows at different positions: prefill [B, P] with forward, then one decode step per row at
  its own position equals forward over each row's longer prompt."""
  cfg, params, tokens = model
  lengths = np.array([4, 7, 5], np.int32)
  _, stacked = rj.forward(cfg, params, tokens[:, :7], cache=T.init_cache(cfg, B, S),
                          return_cache=True)
  nxt = tokens[np.arange(B), lengths]
  logits, _ = T.decode_step(cfg, params, T.KVCache.from_stacked(stacked), jnp.asarray(nxt),
                            jnp.asarray(lengths))
  full = np.asarray(rj.forward(cfg, params, tokens))
  want = full[np.arange(B), lengths]
  np.testing.assert_allclose(logits, want, rtol=0, atol=_tol(cfg, full))


def _decode_before(cfg, params, layer_params, tokens_N1, positions_N1, caches):
  """The sampler's decode step before it moved into the model (sampling._decode_forward)."""
  x = jnp.take(params["embed_tokens"]["embedding"], tokens_N1, axis=0).astype(cfg.jnp_dtype)
  segments_N1 = jnp.ones_like(tokens_N1)
  new_caches = []
  for i, cache in enumerate(caches):
    p_i = layer_params[i] if layer_params is not None else jax.tree.map(
        lambda a: a[i], params["layers"])
    x, cache = T.DecoderBlock(cfg).apply({"params": p_i}, x, positions_N1, segments_N1, cache)
    new_caches.append(cache)
  x = T.RMSNorm(cfg).apply({"params": params["norm"]}, x)
  return _sampler_head_before(cfg, params, x[:, 0]), new_caches


@pytest.mark.parametrize("unstacked", [True, False])
def test_decode_step_equals_the_samplers_previous_step_bit_for_bit(model, unstacked):
  cfg, params, tokens = model
  _, stacked = rj.forward(cfg, params, tokens[:, :6], cache=T.init_cache(cfg, B, S),
                          return_cache=True)
  positions = jnp.array([6, 6, 6], jnp.int32)
  per_layer = [jax.tree.map(lambda a, i=i: a[i], params["layers"]) for i in range(cfg.num_layers)]
  old_caches = [{"k": stacked["k"][i], "v": stacked["v"][i]} for i in range(cfg.num_layers)]

  @jax.jit
  def old(params, per_layer, caches):
    return _decode_before(cfg, params, per_layer if unstacked else None, tokens[:, 6:7],
                          positions[:, None], caches)

  @jax.jit
  def new(params, cache):
    p = T.unstack_layers(params) if unstacked else params
    return T.decode_step(cfg, p, cache, tokens[:, 6], positions)
  want_logits, want_caches = old(params, per_layer, old_caches)
  logits, cache = new(params, T.KVCache.from_stacked(stacked))
  np.testing.assert_array_equal(logits, want_logits)
  for i, c in enumerate(want_caches):
    np.testing.assert_array_equal(cache.k[i], c["k"])
    np.testing.assert_array_equal(cache.v[i], c["v"])
