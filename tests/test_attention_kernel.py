"""The model's attention kernel choice (model.attention) and the compute-dtype weights the
sampler's decode loop reads (transformer.compute_weights)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlvr_jax as rj
from rlvr_jax.model import transformer
from rlvr_jax.model.config import ModelConfig


def _cfg(**kw):
  return dataclasses.replace(rj.get_model_config("toy-1m", vocab_size=64), **kw)


@pytest.mark.parametrize("platform,dtype,head_dim,expected", [
    ("cpu", "bfloat16", 64, "xla"),
    ("cuda", "bfloat16", 64, "cudnn"),
    ("cuda", "float16", 128, "cudnn"),
    ("rocm", "bfloat16", 64, "xla"),        # an AMD GPU: no cuDNN
    ("cuda", "float32", 64, "xla"),         # cuDNN's flash kernels take bf16 / f16 only
    ("cuda", "bfloat16", 256, "xla"),       # head_dim beyond what they take
    ("cuda", "bfloat16", 60, "xla"),        # not a multiple of 8
    ("tpu", "bfloat16", 64, "xla"),
])
def test_auto_takes_cudnn_only_where_it_applies(platform, dtype, head_dim, expected):
  cfg = _cfg(dtype=dtype, head_dim=head_dim)
  assert transformer.attention_implementation(cfg, platform) == expected


def test_this_host_is_no_cuda_platform():
  assert transformer.accelerator_platform() == "cpu"     # the suite runs on CPU devices


@pytest.mark.parametrize("choice", ["xla", "cudnn"])
def test_an_explicit_choice_is_kept_on_any_backend(choice):
  cfg = _cfg(attention=choice)
  assert transformer.attention_implementation(cfg, "cpu") == choice
  assert transformer.attention_implementation(cfg, "rocm") == choice


def test_an_unknown_kernel_is_refused_naming_the_field():
  with pytest.raises(ValueError, match=r"attention='flash' is not one of \('auto', 'xla', 'cudnn'\)"):
    _cfg(attention="flash")


def test_configs_written_before_the_field_still_load():
  d = _cfg().to_dict()
  del d["attention"]
  assert ModelConfig.from_dict(d).attention == "auto"
  assert ModelConfig.from_dict(_cfg(attention="xla").to_dict()).attention == "xla"


def test_the_forward_runs_the_chosen_kernel(monkeypatch):
  """The full-sequence forward hands `implementation` through (on CPU: XLA's, for "auto")."""
  seen = []
  real = jax.nn.dot_product_attention

  def spy(*args, implementation=None, **kwargs):
    seen.append(implementation)
    return real(*args, implementation=implementation, **kwargs)
  monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
  cfg = _cfg()
  params = rj.init_params(cfg, jax.random.key(0))
  tokens = jnp.ones((1, 4), jnp.int32)
  transformer.forward(cfg, params, tokens)
  assert seen and set(seen) == {"xla"}


@pytest.mark.parametrize("length,count", [(1, 1), (47, 1), (48, 2), (75, 3), (96, 4), (97, 4),
                                          (1056, 4)])
def test_causal_query_blocks_cover_the_sequence_once_in_order(length, count):
  """Up to CAUSAL_QUERY_BLOCKS blocks of at least MIN_QUERY_BLOCK queries each."""
  blocks = transformer.causal_query_blocks(length)
  assert len(blocks) == count
  assert blocks[0][0] == 0 and blocks[-1][1] == length
  assert all(end - start >= min(length, transformer.MIN_QUERY_BLOCK) for start, end in blocks)
  assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
  assert transformer.score_share(96) == 10 / 16 and transformer.score_share(47) == 1.0


def _layouts(rows=4, length=30):
  """(positions, segment ids) of the layouts the model is given: packed documents with padding
  (segment 0) at the end of the last row, and the RL update's [prompt block | response] rows
  (prompt padding as segment 0, the response at prompt_length + t)."""
  from rlvr_jax.rl.update import sequence_inputs
  pos = np.broadcast_to(np.arange(length) % 10, (rows, length)).copy()
  seg = np.broadcast_to(np.arange(length) // 10 + 1, (rows, length)).copy()
  pad_from = length // 2
  seg[-1, pad_from:], pos[-1, pad_from:] = 0, np.arange(length - pad_from)
  prompt = min(8, length - 1)
  _, rl_pos, rl_seg, _ = sequence_inputs(
      np.ones((rows, prompt), np.int32), jnp.array([prompt, 3, 5, 1], jnp.int32).clip(1, prompt),
      np.ones((rows, length - prompt), np.int32))
  return [("packed", jnp.asarray(pos), jnp.asarray(seg)), ("rl update", rl_pos, rl_seg)]


@pytest.mark.parametrize("layout", [0, 1])
def test_the_index_rule_changes_nothing_on_the_models_layouts(layout):
  name, pos, seg = _layouts()[layout]
  by_position = transformer.attention_mask(pos, seg, pos, seg)
  np.testing.assert_array_equal(np.asarray(transformer.sequence_mask(pos, seg)),
                                np.asarray(by_position), err_msg=name)


def test_the_index_rule_masks_a_later_key_with_an_earlier_position():
  """A layout whose positions fall along the row inside a segment: by position a query would
  see the later key; a decoder does not (HF's causal mask is by index too)."""
  pos = jnp.array([[0, 2, 1]])
  seg = jnp.ones((1, 3), jnp.int32)
  assert bool(transformer.attention_mask(pos, seg, pos, seg)[0, 0, 1, 2])
  assert not bool(transformer.sequence_mask(pos, seg)[0, 0, 1, 2])


@pytest.mark.parametrize("layout,length", [(0, 50), (1, 50), (0, 97), (1, 97), (0, 7)])
def test_full_attention_in_query_blocks_equals_one_call(layout, length):
  """XLA's attention in causal query blocks computes the same function as one call over the
  whole square under the same mask: values and gradients within f32 summation-order error."""
  _, pos, seg = _layouts(length=length)[layout]
  mask = transformer.sequence_mask(pos, seg)
  keys = jax.random.split(jax.random.key(length), 4)
  rows = pos.shape[0]
  q = jax.random.normal(keys[0], (rows, length, 4, 8))
  kk, v = (jax.random.normal(x, (rows, length, 2, 8)) for x in keys[1:3])
  ct = jax.random.normal(keys[3], (rows, length, 4, 8))

  def value_and_grads(fn):
    def loss(q, kk, v):
      out = fn(q, kk, v)
      return jnp.sum(out * ct), out
    grads, out = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(q, kk, v)
    return [np.asarray(x) for x in (out, *grads)]
  one = value_and_grads(lambda *a: jax.nn.dot_product_attention(
      *a, mask=mask, scale=0.3, implementation="xla"))
  blocked = value_and_grads(lambda *a: transformer.full_attention(*a, mask, 0.3, "xla"))
  for name, a, b in zip(("out", "dq", "dk", "dv"), blocked, one):
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * max(float(np.max(np.abs(b))), 1.0),
                               err_msg=name)


def _random_scales(params, key):
  """Norm scales and biases away from their init (ones, zeros), so that casting them would
  show."""
  def f(path, x):
    if getattr(path[-1], "key", None) in ("scale", "bias"):
      return x + 0.37 * jax.random.normal(jax.random.fold_in(key, x.size), x.shape, x.dtype)
    return x
  return jax.tree_util.tree_map_with_path(f, params)


def test_compute_weights_casts_what_the_model_casts_and_keeps_the_norm_scales():
  cfg = _cfg(dtype="bfloat16", param_dtype="float32", qkv_bias=True)
  params = rj.init_params(cfg, jax.random.key(0))
  cast = transformer.compute_weights(cfg, params)
  dtypes = {jax.tree_util.keystr(path): x.dtype
            for path, x in jax.tree_util.tree_leaves_with_path(cast)}
  assert any("bias" in k for k in dtypes)
  for name, dtype in dtypes.items():
    assert dtype == (jnp.float32 if name.endswith("['scale']") else jnp.bfloat16), name


def test_decoding_on_compute_weights_equals_decoding_on_master_weights():
  """The same values, bit for bit: every weight compute_weights casts, the model casts the same
  way before use; the norm scales it leaves in f32 are used in f32."""
  cfg = _cfg(dtype="bfloat16", param_dtype="float32", qkv_bias=True)
  params = _random_scales(rj.init_params(cfg, jax.random.key(0)), jax.random.key(1))
  cache = transformer.KVCache.from_stacked(transformer.init_cache(cfg, 2, 8))
  tokens, positions = jnp.array([5, 7], jnp.int32), jnp.array([0, 3], jnp.int32)
  step = jax.jit(lambda p, c: transformer.decode_step(cfg, p, c, tokens, positions))
  logits_master, cache_master = step(transformer.unstack_layers(params), cache)
  logits_cast, cache_cast = step(
      transformer.unstack_layers(transformer.compute_weights(cfg, params)), cache)
  np.testing.assert_array_equal(np.asarray(logits_master), np.asarray(logits_cast))
  for a, b in zip(jax.tree.leaves(cache_master), jax.tree.leaves(cache_cast)):
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
