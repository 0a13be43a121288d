"""Model internals: KV cache consistency, packed segments, positions, sharded equivalence."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlvr_jax as rj
from rlvr_jax import sharding
from rlvr_jax.model import transformer as T

CFG = rj.get_model_config("toy-1m", vocab_size=256, num_layers=2, hidden_size=64,
                          intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16)


@pytest.fixture(scope="module")
def params():
  return jax.jit(T.init_params_fn(CFG))(jax.random.key(0))


def test_prefill_then_decode_equals_full_forward(params):
  tokens = jax.random.randint(jax.random.key(1), (3, 12), 0, CFG.vocab_size)
  full = rj.forward(CFG, params, tokens)
  cache = rj.init_cache(CFG, 3, 16)
  first, cache = rj.forward(CFG, params, tokens[:, :7], cache=cache, return_cache=True)
  rest = []
  for t in range(7, 12):
    pos = jnp.full((3, 1), t, jnp.int32)
    step, cache = rj.forward(CFG, params, tokens[:, t:t + 1], positions=pos, cache=cache,
                             return_cache=True)
    rest.append(step)
  got = jnp.concatenate([first] + rest, axis=1)
  np.testing.assert_allclose(got, full, atol=1e-5)


def test_packed_segments_equal_separate_documents(params):
  doc_a = jax.random.randint(jax.random.key(2), (1, 5), 0, CFG.vocab_size)
  doc_b = jax.random.randint(jax.random.key(3), (1, 7), 0, CFG.vocab_size)
  packed = jnp.concatenate([doc_a, doc_b], axis=1)
  segments = jnp.array([[1] * 5 + [2] * 7])
  logits = rj.forward(CFG, params, packed, segment_ids=segments)
  np.testing.assert_allclose(logits[:, :5], rj.forward(CFG, params, doc_a), atol=1e-5)
  np.testing.assert_allclose(logits[:, 5:], rj.forward(CFG, params, doc_b), atol=1e-5)


def test_default_positions_restart_per_segment():
  seg = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0]])
  pos = T.default_positions(seg, seg)
  assert pos.tolist() == [[0, 1, 2, 0, 1, 0, 0, 1]]


def test_llama3_rope_scaling_changes_only_low_frequencies():
  base = rj.get_model_config("toy-1m", head_dim=64, rope_theta=500000.0)
  scaled = base.replace(rope_scaling=rj.RopeScaling(8.0, 1.0, 4.0, 64))
  f0, f1 = T.rope_inv_freq(base), T.rope_inv_freq(scaled)
  assert f0[0] == f1[0]                       # highest frequency untouched
  np.testing.assert_allclose(f1[-1], f0[-1] / 8.0, rtol=1e-6)  # lowest divided by factor
  assert np.all(f1 <= f0 + 1e-12)


def test_remat_policies_give_same_gradients(params):
  tokens = jax.random.randint(jax.random.key(4), (2, 8), 0, CFG.vocab_size)

  def loss(p, cfg):
    return jnp.mean(rj.forward(cfg, p, tokens) ** 2)
  g0 = jax.grad(loss)(params, CFG)
  g1 = jax.grad(loss)(params, CFG.replace(remat="full"))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g0, g1)


def test_unrolled_layer_scan_gives_same_logits_and_gradients(params):
  """model.scan_unroll changes how the layers loop, not what they compute (the same parameter
  tree; only XLA's fusion, so f32 rounding, may differ)."""
  tokens = jax.random.randint(jax.random.key(6), (2, 8), 0, CFG.vocab_size)

  def loss(p, cfg):
    return jnp.mean(rj.forward(cfg, p, tokens) ** 2)
  unrolled = CFG.replace(scan_unroll=CFG.num_layers)
  for cfg, unroll in ((CFG, 1), (unrolled, CFG.num_layers), (CFG.replace(scan_unroll=99),
                                                                 CFG.num_layers)):
    jaxpr = str(jax.make_jaxpr(lambda p: rj.forward(cfg, p, tokens))(params))
    assert re.findall(r"unroll=(\d+)", jaxpr) == [str(unroll)]
  assert jax.tree.structure(jax.jit(T.init_params_fn(unrolled))(jax.random.key(0))) == \
      jax.tree.structure(params)
  np.testing.assert_allclose(rj.forward(unrolled, params, tokens), rj.forward(CFG, params, tokens),
                             atol=1e-5)
  g0 = jax.jit(jax.grad(loss), static_argnums=1)(params, CFG)
  g1 = jax.jit(jax.grad(loss), static_argnums=1)(params, unrolled)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g0, g1)
  with pytest.raises(ValueError, match="scan_unroll=0 must be >= 1"):
    CFG.replace(scan_unroll=0)


@pytest.mark.parametrize("mesh_shape", [(2, 2, 2), (1, 4, 2)])
def test_sharded_forward_and_grad_equal_single_device(params, mesh_shape):
  tokens = jax.random.randint(jax.random.key(5), (8, 16), 0, CFG.vocab_size)

  def lm_loss(p, tok):
    logits = rj.forward(CFG, p, tok[:, :-1])
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, tok[:, 1:, None], -1))

  ref_logits = jax.jit(lambda p, t: rj.forward(CFG, p, t))(params, tokens)
  ref_grad = jax.jit(jax.grad(lm_loss))(params, tokens)

  mesh = sharding.make_mesh(mesh_shape)
  p_sharded = jax.device_put(params, sharding.param_shardings(CFG, mesh))
  tok_sharded = jax.device_put(tokens, sharding.data_sharding(mesh))
  with sharding.activate(mesh):
    logits = jax.jit(lambda p, t: rj.forward(CFG, p, t))(p_sharded, tok_sharded)
    grad = jax.jit(jax.grad(lm_loss))(p_sharded, tok_sharded)
  assert logits.addressable_shards[0].data.shape[0] == 8 // (mesh_shape[0] * mesh_shape[1])
  np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grad, ref_grad)


def test_init_params_are_placed_on_their_shardings():
  mesh = sharding.make_mesh((2, 2, 2))
  p = sharding.init_params(CFG, jax.random.key(0), mesh)
  q = p["layers"]["self_attn"]["q_proj"]["kernel"]
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  assert q.addressable_shards[0].data.shape == (2, 32, 2, 16)


def test_bad_model_config_is_named():
  with pytest.raises(ValueError, match="num_kv_heads"):
    rj.get_model_config("toy-1m", num_heads=4, num_kv_heads=3)
  with pytest.raises(ValueError, match="Unknown model size"):
    rj.get_model_config("toy-2m")
