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
