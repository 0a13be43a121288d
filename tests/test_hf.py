"""HF checkpoint import/export: logit parity with transformers (f32, tiny random models made
locally), sharded safetensors, both config layouts, meshes, export, and the error messages."""
import copy
import json
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from safetensors import safe_open

import rlvr_jax as rj
from rlvr_jax import sharding
from rlvr_jax.model import hf as H

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
# name -> (family, tie_word_embeddings, num_key_value_heads, rope_scaling)
CASES = {
    "llama_gqa_llama3_untied": ("llama", False, 2, LLAMA3_ROPE),
    "llama_mqa_tied": ("llama", True, 1, None),
    "qwen2_tied": ("qwen2", True, 2, None),
    "qwen2_untied": ("qwen2", False, 2, None),
}
LENGTHS = {"llama_gqa_llama3_untied": (1, 37), "llama_mqa_tied": (6, 19),
           "qwen2_tied": (2, 23), "qwen2_untied": (11, 30)}
ATOL = 1e-4


def _one_device_mesh():
  return sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])


def make_torch_model(family, tie, kv_heads, rope_scaling, seed=0):
  """A tiny random HF model with every weight (norms and biases included) randomised."""
  common = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=256,
                tie_word_embeddings=tie, rms_norm_eps=1e-5, rope_theta=10000.0,
                bos_token_id=1, eos_token_id=2)
  if family == "llama":
    config = transformers.LlamaConfig(**common, rope_scaling=rope_scaling)
    model = transformers.LlamaForCausalLM(config)
  else:
    config = transformers.Qwen2Config(**common)
    model = transformers.Qwen2ForCausalLM(config)
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if "norm" in name:
        p.copy_(1.0 + 0.1 * noise)
      elif name.endswith("bias"):
        p.copy_(0.1 * noise)
      else:
        p.copy_(0.08 * noise)
  return model.eval()


def torch_logits(model, tokens):
  with torch.inference_mode():
    return model(torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()


def tokens_of(length, seed, batch=2):
  return np.random.default_rng(seed).integers(0, 300, (batch, length), dtype=np.int32)


_forward = jax.jit(rj.forward, static_argnums=0)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
  """Tiny models: one torch thread avoids thread-pool overhead on a busy machine."""
  before = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """name -> (torch model, dir it was saved to with save_pretrained)."""
  root = tmp_path_factory.mktemp("hf")
  out = {}
  for i, (name, args) in enumerate(CASES.items()):
    model = make_torch_model(*args, seed=i)
    model.save_pretrained(root / name)
    out[name] = (model, root / name)
  return out


# ------------------------------------------------------------------------------ import parity
@pytest.mark.parametrize("name", list(CASES))
def test_logit_parity_with_transformers(models, name):
  model, path = models[name]
  cfg, params = rj.load_hf(path, jnp.float32, mesh=_one_device_mesh())
  family, tie, kv_heads, rope = CASES[name]
  assert (cfg.family, cfg.tie_embeddings, cfg.num_kv_heads) == (family, tie, kv_heads)
  assert cfg.qkv_bias == (family == "qwen2")
  assert ("lm_head" in params) == (not tie)
  assert (cfg.rope_scaling is not None) == (rope is not None)
  for length in LENGTHS[name]:
    tokens = tokens_of(length, seed=length)
    want = torch_logits(model, tokens)
    got = np.asarray(_forward(cfg, params, tokens))
    assert want.std() > 0.3  # the weights are large enough for the comparison to mean something
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_llama3_rope_scaling_is_applied(models):
  """Dropping the scaling changes the logits by far more than the tolerance."""
  model, path = models["llama_gqa_llama3_untied"]
  cfg, params = rj.load_hf(path, mesh=_one_device_mesh())
  assert cfg.rope_scaling == rj.RopeScaling(8.0, 1.0, 4.0, 64)
  tokens = tokens_of(37, seed=37)
  unscaled = np.asarray(_forward(cfg.replace(rope_scaling=None), params, tokens))
  assert np.abs(unscaled - torch_logits(model, tokens)).max() > 100 * ATOL


def test_sharded_safetensors_index(models, tmp_path):
  model, _ = models["llama_gqa_llama3_untied"]
  model.save_pretrained(tmp_path, max_shard_size="50KB")
  shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
  assert (tmp_path / H.INDEX_FILE).is_file() and len(shards) > 3
  cfg, params = rj.load_hf(tmp_path, mesh=_one_device_mesh())
  tokens = tokens_of(9, seed=9)
  np.testing.assert_allclose(np.asarray(_forward(cfg, params, tokens)), torch_logits(model, tokens),
                             atol=ATOL, rtol=0)


def test_bf16_checkpoint_loads(tmp_path):
  model = make_torch_model("qwen2", False, 2, None, seed=7)
  with torch.no_grad():  # f32 reference model holding bf16-representable weights
    for p in model.parameters():
      p.copy_(p.to(torch.bfloat16).float())
  copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp_path)
  with safe_open(tmp_path / "model.safetensors", framework="numpy") as f:
    assert f.get_slice("model.norm.weight").get_dtype() == "BF16"
  cfg, params = rj.load_hf(tmp_path, jnp.float32, mesh=_one_device_mesh())
  assert params["norm"]["scale"].dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(params["embed_tokens"]["embedding"]),
                                model.model.embed_tokens.weight.detach().float().numpy())
  tokens = tokens_of(8, seed=8)
  np.testing.assert_allclose(np.asarray(_forward(cfg, params, tokens)),
                             torch_logits(model, tokens), atol=ATOL, rtol=0)
  cfg16, params16 = rj.load_hf(tmp_path, None, mesh=_one_device_mesh())  # the checkpoint's dtype
  assert (cfg16.dtype, cfg16.param_dtype) == ("bfloat16", "bfloat16")
  assert params16["layers"]["mlp"]["up_proj"]["kernel"].dtype == jnp.bfloat16
  cfg_mixed, params_mixed = rj.load_hf(tmp_path, jnp.bfloat16, param_dtype=jnp.float32,
                                       mesh=_one_device_mesh())
  assert (cfg_mixed.dtype, cfg_mixed.param_dtype) == ("bfloat16", "float32")
  assert params_mixed["norm"]["scale"].dtype == jnp.float32


# ------------------------------------------------------------------------------ config layouts
def test_transformers4_config_layout_gives_the_same_model(models, tmp_path):
  _, path = models["llama_gqa_llama3_untied"]
  shutil.copytree(path, tmp_path / "v4")
  hf = json.loads((path / "config.json").read_text())
  assert "rope_parameters" in hf and "rope_scaling" not in hf  # written by transformers 5
  rope = hf.pop("rope_parameters")
  hf["rope_theta"] = rope.pop("rope_theta")
  hf["rope_scaling"] = rope
  hf["torch_dtype"] = hf.pop("dtype", "float32")
  (tmp_path / "v4" / "config.json").write_text(json.dumps(hf))
  cfg5, p5 = rj.load_hf(path, mesh=_one_device_mesh())
  cfg4, p4 = rj.load_hf(tmp_path / "v4", mesh=_one_device_mesh())
  assert cfg4 == cfg5
  jax.tree_util.tree_map(np.testing.assert_array_equal, p4, p5)


# config.json of meta-llama/Llama-3.1-8B and Qwen/Qwen2.5-7B as published (transformers 4 layout).
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
    "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256}
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
    "intermediate_size": 18944, "max_position_embeddings": 131072, "max_window_layers": 28,
    "model_type": "qwen2", "num_attention_heads": 28, "num_hidden_layers": 28,
    "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.1", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 152064}
ARCH_FIELDS = ("family", "vocab_size", "hidden_size", "intermediate_size", "num_layers",
               "num_heads", "num_kv_heads", "head_dim", "rope_theta", "rope_scaling",
               "rms_norm_eps", "tie_embeddings", "qkv_bias", "eos_id")


@pytest.mark.parametrize("hf,size", [(LLAMA31_8B, "llama-3.1-8b"), (QWEN25_7B, "qwen2.5-7b")])
def test_published_configs_match_named_sizes(hf, size):
  cfg = H.config_from_hf(hf)
  ref = rj.get_model_config(size)
  assert {f: getattr(cfg, f) for f in ARCH_FIELDS} == {f: getattr(ref, f) for f in ARCH_FIELDS}
  assert (cfg.dtype, cfg.param_dtype) == ("bfloat16", "bfloat16")  # dtype=None: the checkpoint's
  # transformers 5 reads the config we write back into the same architecture
  back = transformers.AutoConfig.for_model(**{k: v for k, v in H.config_to_hf(cfg).items()
                                              if k != "architectures"})
  assert back.rope_parameters["rope_theta"] == hf["rope_theta"]
  assert back.rope_parameters["rope_type"] == hf.get("rope_scaling", {}).get("rope_type", "default")
  assert H.config_from_hf(H.config_to_hf(cfg)) == cfg


# ------------------------------------------------------------------------------ meshes
@pytest.mark.parametrize("name,mesh_shape", [("llama_gqa_llama3_untied", (2, 2, 2)),
                                             ("qwen2_untied", (1, 4, 2))])
def test_load_on_mesh_equals_single_device(models, name, mesh_shape):
  _, path = models[name]
  cfg, ref_params = rj.load_hf(path, mesh=_one_device_mesh())
  tokens = tokens_of(12, seed=12, batch=8)
  ref = np.asarray(_forward(cfg, ref_params, tokens))
  mesh = sharding.make_mesh(mesh_shape)
  cfg_m, params = rj.load_hf(path, mesh=mesh)
  assert cfg_m == cfg
  q = params["layers"]["self_attn"]["q_proj"]["kernel"]
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  n_fsdp, n_tensor = mesh_shape[1], mesh_shape[2]
  assert q.addressable_shards[0].data.shape == (2, 64 // n_fsdp, 4 // n_tensor, 16)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                         params, ref_params)
  with sharding.activate(mesh):
    got = _forward(cfg, params, jax.device_put(tokens, sharding.data_sharding(mesh)))
  np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5, rtol=0)


def test_default_mesh_uses_all_devices(models):
  _, path = models["qwen2_tied"]
  _, params = rj.load_hf(path)
  emb = params["embed_tokens"]["embedding"]
  assert len(emb.sharding.device_set) == len(jax.devices())


# ------------------------------------------------------------------------------ export
@pytest.mark.parametrize("name,max_shard_bytes", [("llama_gqa_llama3_untied", 60_000),
                                                  ("qwen2_tied", H.DEFAULT_MAX_SHARD_BYTES)])
def test_export_loads_in_transformers(models, tmp_path, name, max_shard_bytes):
  model, path = models[name]
  cfg, params = rj.load_hf(path, mesh=sharding.make_mesh((2, 2, 2)))
  out = H.save_hf(tmp_path / "export", cfg, params, max_shard_bytes=max_shard_bytes)
  assert (out / "generation_config.json").is_file()
  assert not list(tmp_path.glob(".export.tmp-*"))
  assert (out / H.INDEX_FILE).is_file() == (max_shard_bytes < H.DEFAULT_MAX_SHARD_BYTES)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  assert type(reloaded) is type(model)
  assert reloaded.config.rope_parameters == model.config.rope_parameters
  assert reloaded.config.tie_word_embeddings == model.config.tie_word_embeddings
  for length in (4, 15):
    tokens = tokens_of(length, seed=100 + length)
    np.testing.assert_allclose(torch_logits(reloaded, tokens), torch_logits(model, tokens),
                               atol=1e-6, rtol=0)
  # and the exported tensors equal the original HF ones bit for bit
  original = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  exported = {k: v.detach().numpy() for k, v in reloaded.state_dict().items()}
  assert original.keys() == exported.keys()
  for k in original:
    np.testing.assert_array_equal(exported[k], original[k], err_msg=k)


@pytest.mark.parametrize("name", ["llama_gqa_llama3_untied", "qwen2_tied"])
def test_to_hf_state_dict_is_the_transformers_state_dict(models, name):
  model, path = models[name]
  cfg, params = rj.load_hf(path, mesh=_one_device_mesh())
  ours = H.to_hf_state_dict(cfg, params, dtype=jnp.float32)
  theirs = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  tied_head = {"lm_head.weight"} if cfg.tie_embeddings else set()
  assert set(theirs) - set(ours) == tied_head and set(ours) <= set(theirs)
  for k, v in ours.items():
    assert v.dtype == np.float32
    np.testing.assert_array_equal(v, theirs[k], err_msg=k)
  bf16 = H.to_hf_state_dict(cfg, params)
  assert bf16.keys() == ours.keys()
  assert all(v.dtype == np.dtype(jnp.dtype(cfg.param_dtype)) for v in bf16.values())


def test_export_bf16(models, tmp_path):
  _, path = models["llama_mqa_tied"]
  cfg, params = rj.load_hf(path, mesh=_one_device_mesh())
  H.save_hf(tmp_path / "bf16", cfg, params, dtype=jnp.bfloat16)
  with safe_open(tmp_path / "bf16" / "model.safetensors", framework="numpy") as f:
    assert f.get_slice("model.layers.0.self_attn.q_proj.weight").get_dtype() == "BF16"
  assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
  _, back = rj.load_hf(tmp_path / "bf16", jnp.float32, mesh=_one_device_mesh())
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b.astype(jnp.bfloat16)
                                                                           .astype(jnp.float32))),
      back, params)


def test_failed_export_leaves_nothing(models, tmp_path, monkeypatch):
  _, path = models["qwen2_untied"]
  cfg, params = rj.load_hf(path, mesh=_one_device_mesh())
  calls = []

  def failing_save_file(*args, **kwargs):
    calls.append(args)
    if len(calls) == 2:
      raise OSError("disk full")
  monkeypatch.setattr(safetensors.numpy, "save_file", failing_save_file)
  with pytest.raises(OSError, match="disk full"):
    H.save_hf(tmp_path / "out", cfg, params, max_shard_bytes=50_000)
  assert list(tmp_path.iterdir()) == []
  monkeypatch.undo()
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep.txt").write_text("x")
  with pytest.raises(FileExistsError, match="overwrite=True"):
    H.save_hf(tmp_path / "out", cfg, params)
  H.save_hf(tmp_path / "out", cfg, params, overwrite=True)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
  assert not (tmp_path / "out" / "keep.txt").exists()


# ------------------------------------------------------------------------------ errors
def _copy(path, dest):
  shutil.copytree(path, dest)
  return dest


def test_error_directory_without_config(models, tmp_path):
  _, path = models["qwen2_tied"]
  d = _copy(path, tmp_path / "noconfig")
  (d / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match=r"noconfig/config\.json: missing"):
    rj.load_hf(d)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    rj.load_hf(tmp_path / "nowhere")


def test_error_unsupported_architecture(models, tmp_path):
  _, path = models["qwen2_tied"]
  d = _copy(path, tmp_path / "mistral")
  hf = json.loads((d / "config.json").read_text())
  hf.update(architectures=["MistralForCausalLM"], model_type="mistral")
  (d / "config.json").write_text(json.dumps(hf))
  with pytest.raises(ValueError, match=r"mistral/config\.json: unsupported.*MistralForCausalLM"):
    rj.load_hf(d)
  with pytest.raises(ValueError, match="rope_type='yarn' is not supported"):
    H.config_from_hf(dict(LLAMA31_8B, rope_scaling={"rope_type": "yarn", "factor": 4.0}))


def test_error_missing_tensor(models, tmp_path):
  _, path = models["llama_gqa_llama3_untied"]
  d = _copy(path, tmp_path / "missing")
  tensors = safetensors.numpy.load_file(d / "model.safetensors")
  del tensors["model.layers.1.mlp.down_proj.weight"]
  safetensors.numpy.save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
  with pytest.raises(ValueError, match=r"missing.*tensor 'model\.layers\.1\.mlp\.down_proj\.weight' "
                                       r"is missing \(needed for layers/mlp/down_proj/kernel\); "
                                       r"the weights do not match config\.json"):
    rj.load_hf(d)


def test_error_wrong_shape(models, tmp_path):
  _, path = models["llama_gqa_llama3_untied"]
  d = _copy(path, tmp_path / "shape")
  tensors = safetensors.numpy.load_file(d / "model.safetensors")
  name = "model.layers.0.self_attn.k_proj.weight"
  tensors[name] = np.ascontiguousarray(tensors[name].T)
  safetensors.numpy.save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
  with pytest.raises(ValueError, match=r"model\.safetensors: tensor 'model\.layers\.0\.self_attn\."
                                       r"k_proj\.weight' has shape \[64, 32\], expected \[32, 64\]"):
    rj.load_hf(d)


def test_error_missing_shard(models, tmp_path):
  model, _ = models["qwen2_untied"]
  model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
  index = json.loads((tmp_path / "sharded" / H.INDEX_FILE).read_text())
  lost = sorted(set(index["weight_map"].values()))[1]
  (tmp_path / "sharded" / lost).unlink()
  with pytest.raises(FileNotFoundError, match=rf"{lost}: shard file named in .*index\.json is missing"):
    rj.load_hf(tmp_path / "sharded")


def _one_line_value_error(call, pattern):
  """call() raises one ValueError whose message is a single line matching `pattern`, with no
  chained traceback (the safetensors / JSON exception underneath is not shown)."""
  with pytest.raises(ValueError, match=pattern) as err:
    call()
  assert "\n" not in str(err.value)
  assert err.value.__cause__ is None
  assert err.value.__context__ is None or err.value.__suppress_context__
  return str(err.value)


def test_error_truncated_or_corrupt_safetensors(models, tmp_path):
  """A cut-off model.safetensors, and a shard replaced by a git-lfs pointer: one ValueError
  naming the file and saying to re-download or re-convert."""
  _, path = models["qwen2_tied"]
  d = _copy(path, tmp_path / "truncated")
  weights = d / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
  _one_line_value_error(lambda: rj.load_hf(d, mesh=_one_device_mesh()),
                        rf"^{re.escape(str(weights))}: not a readable safetensors file \(.*\); "
                        r"it is truncated or corrupt .*: re-download it or re-convert")

  model, _ = models["qwen2_untied"]
  model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
  index = json.loads((tmp_path / "sharded" / H.INDEX_FILE).read_text())
  shard = tmp_path / "sharded" / sorted(set(index["weight_map"].values()))[1]
  shard.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 123\n")
  _one_line_value_error(lambda: rj.load_hf(tmp_path / "sharded", mesh=_one_device_mesh()),
                        rf"^{re.escape(str(shard))}: not a readable safetensors file .*"
                        r"re-download it or re-convert")


def test_error_config_layer_count_differs_from_the_weights(models, tmp_path):
  """num_hidden_layers below the weights' layer count used to load a truncated model silently;
  above it, it failed on a missing tensor. Both name config.json and both counts."""
  _, path = models["llama_gqa_llama3_untied"]            # 2 layers
  for layers in (1, 3):
    d = _copy(path, tmp_path / f"layers{layers}")
    hf = json.loads((d / "config.json").read_text())
    hf["num_hidden_layers"] = layers
    (d / "config.json").write_text(json.dumps(hf))
    _one_line_value_error(lambda: rj.load_hf(d, mesh=_one_device_mesh()),
                          rf"^{re.escape(str(d / 'config.json'))}: num_hidden_layers={layers}, but "
                          r"the weights in .*model\.safetensors.* hold 2 layers \(model\.layers\.0 "
                          r"\.\.\. model\.layers\.1\); use the config\.json that came with these "
                          r"weights \(or set num_hidden_layers=2\)$")


def test_error_weights_with_tensors_the_config_does_not_use(models, tmp_path, caplog):
  """Qwen2 weights (q/k/v biases) under a Llama config.json, or a stray tensor: an error listing
  the unused tensors. Rotary inv_freq buffers are rebuilt, so they are not an error, and an
  lm_head.weight next to tied embeddings is a logged duplicate."""
  _, path = models["qwen2_untied"]
  d = _copy(path, tmp_path / "as_llama")
  hf = json.loads((d / "config.json").read_text())
  hf.update(architectures=["LlamaForCausalLM"], model_type="llama")
  (d / "config.json").write_text(json.dumps(hf))
  _one_line_value_error(
      lambda: rj.load_hf(d, mesh=_one_device_mesh()),
      r"model\.safetensors\): the model of .*as_llama/config\.json does not use tensor\(s\) "
      r"model\.layers\.0\.self_attn\.k_proj\.bias, .*, \.\.\. \(6 in all\); config\.json "
      r"describes a different model than these weights")

  _, path = models["llama_mqa_tied"]
  d = _copy(path, tmp_path / "extra")
  weights = d / "model.safetensors"
  tensors = safetensors.numpy.load_file(weights)
  embedding = tensors["model.embed_tokens.weight"]
  tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(8, np.float32)
  tensors["lm_head.weight"] = embedding
  safetensors.numpy.save_file(tensors, weights, metadata={"format": "pt"})
  with caplog.at_level("WARNING", logger=H.__name__):
    _, params = rj.load_hf(d, mesh=_one_device_mesh())
  np.testing.assert_array_equal(np.asarray(params["embed_tokens"]["embedding"]), embedding)
  assert "ignoring lm_head.weight" in caplog.text
  tensors["model.vision_tower.weight"] = np.ones(4, np.float32)
  safetensors.numpy.save_file(tensors, weights, metadata={"format": "pt"})
  _one_line_value_error(lambda: rj.load_hf(d, mesh=_one_device_mesh()),
                        r"does not use tensor\(s\) model\.vision_tower\.weight; config\.json "
                        r"describes a different model")
