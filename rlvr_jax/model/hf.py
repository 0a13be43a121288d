"""Hugging Face checkpoints: `load_hf` (config.json + safetensors -> ModelConfig, sharded params)
and `save_hf` (params -> a directory `transformers.AutoModelForCausalLM` loads);
`to_hf_state_dict` (params -> HF-named numpy arrays in memory).

Supported: `LlamaForCausalLM` (Llama 3.x, incl. `rope_type: llama3` scaling) and
`Qwen2ForCausalLM` (Qwen2/2.5, q/k/v biases), in the transformers 4 config layout
(`rope_theta` / `rope_scaling` / `torch_dtype`) and the transformers 5 layout
(`rope_parameters` / `dtype`).

Loading streams tensor by tensor: every parameter is built with `jax.make_array_from_callback`
on its target sharding, and the callback reads from the memory-mapped safetensors only the slice
of the HF tensor(s) that one device shard needs. Before anything is placed, the weights are
checked against config.json (the layer count, every tensor's presence and shape, no tensor left
unused); a truncated or corrupt safetensors file is a ValueError naming it. Saving pulls one
layer slice of one parameter to the host at a time and writes at most one safetensors shard's
worth of tensors at once.

HF Linear weights are [out, in]; ours are [in, out] with heads split out:
  q/k/v_proj.weight [N*H, D]   <->  layers/self_attn/{q,k,v}_proj/kernel [L, D, N, H]
  q/k/v_proj.bias   [N*H]      <->  layers/self_attn/{q,k,v}_proj/bias   [L, N, H]
  o_proj.weight     [D, N*H]   <->  layers/self_attn/o_proj/kernel       [L, N, H, D]
  gate/up_proj.weight [F, D]   <->  layers/mlp/{gate,up}_proj/kernel     [L, D, F]
  down_proj.weight  [D, F]     <->  layers/mlp/down_proj/kernel          [L, F, D]
  lm_head.weight    [V, D]     <->  lm_head/kernel                       [D, V]
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError, safe_open

from rlvr_jax.model.config import ModelConfig, RopeScaling

log = logging.getLogger(__name__)

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2"}
_FAMILY_TO_ARCH = {v: k for k, v in ARCHITECTURES.items()}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9


# ------------------------------------------------------------------------------ config.json
def read_hf_config(path: str | os.PathLike) -> dict[str, Any]:
  """The parsed config.json of an HF model directory (clear errors when absent or malformed)."""
  path = Path(path)
  if not path.is_dir():
    raise FileNotFoundError(f"HF checkpoint directory {path} does not exist (or is not a directory)")
  config_file = path / "config.json"
  if not config_file.is_file():
    raise FileNotFoundError(f"{config_file}: missing; an HF checkpoint directory needs config.json "
                            f"next to its *.safetensors (found: {sorted(p.name for p in path.iterdir())})")
  try:
    return json.loads(config_file.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{config_file}: not valid JSON ({e})") from e


def _dtype_name(d) -> str:
  return jnp.dtype(d).name


def config_from_hf(hf: dict[str, Any], *, source: str = "config.json", dtype=None,
                   param_dtype=None) -> ModelConfig:
  """ModelConfig of an HF config dict (transformers 4 or 5 layout).

  dtype: compute dtype (None: the checkpoint's `dtype`/`torch_dtype`, else float32);
  param_dtype: storage dtype of the weights (None: same as dtype).
  """
  def fail(msg):
    raise ValueError(f"{source}: {msg}")

  archs = hf.get("architectures") or []
  model_type = hf.get("model_type")
  family = None
  for arch in archs:
    if arch not in ARCHITECTURES:
      fail(f"unsupported architectures={archs}; supported: {sorted(ARCHITECTURES)}")
    family = ARCHITECTURES[arch]
  if model_type is not None:
    if model_type not in MODEL_TYPES:
      fail(f"unsupported model_type={model_type!r}; supported: {sorted(MODEL_TYPES)}")
    if family is not None and MODEL_TYPES[model_type] != family:
      fail(f"model_type={model_type!r} does not match architectures={archs}")
    family = MODEL_TYPES[model_type]
  if family is None:
    fail(f"neither `architectures` nor `model_type` is set; expected one of {sorted(ARCHITECTURES)}")

  def need(key):
    if key not in hf:
      fail(f"required field {key!r} is missing")
    return hf[key]

  act = hf.get("hidden_act", "silu")
  if act != "silu":
    fail(f"hidden_act={act!r} is not supported (only 'silu')")
  if family == "llama" and (hf.get("attention_bias") or hf.get("mlp_bias")):
    fail("attention_bias/mlp_bias=true is not supported for Llama (no o_proj/MLP biases here)")
  if family == "qwen2" and hf.get("use_sliding_window"):
    fail("use_sliding_window=true is not supported (full attention only)")

  # RoPE: transformers 5 nests everything in rope_parameters; transformers 4 has rope_theta at the
  # top level and the scaling in rope_scaling (with `type` in very old files).
  rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
  rope_theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type == "default":
    rope_scaling = None
  elif rope_type == "llama3":
    try:
      rope_scaling = RopeScaling(factor=float(rope["factor"]),
                                 low_freq_factor=float(rope["low_freq_factor"]),
                                 high_freq_factor=float(rope["high_freq_factor"]),
                                 original_max_position_embeddings=int(
                                     rope["original_max_position_embeddings"]))
    except KeyError as e:
      fail(f"rope_type='llama3' needs field {e.args[0]!r} in rope_parameters/rope_scaling")
  else:
    fail(f"rope_type={rope_type!r} is not supported (only 'default' and 'llama3')")

  def token_id(key):
    v = hf.get(key)
    if isinstance(v, list):  # e.g. Llama 3.1 Instruct: several EOS ids; the first is the main one
      v = v[0] if v else None
    return None if v is None else int(v)

  ckpt_dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
  dtype = _dtype_name(dtype if dtype is not None else ckpt_dtype)
  param_dtype = _dtype_name(param_dtype if param_dtype is not None else dtype)
  heads = int(need("num_attention_heads"))
  hidden = int(need("hidden_size"))
  return ModelConfig(
      vocab_size=int(need("vocab_size")),
      hidden_size=hidden,
      intermediate_size=int(need("intermediate_size")),
      num_layers=int(need("num_hidden_layers")),
      num_heads=heads,
      num_kv_heads=int(hf.get("num_key_value_heads") or heads),
      head_dim=int(hf.get("head_dim") or hidden // heads),
      family=family,
      rope_theta=float(rope_theta),
      rope_scaling=rope_scaling,
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      qkv_bias=family == "qwen2",
      max_seq_len=int(hf.get("max_position_embeddings", 2048)),
      param_dtype=param_dtype,
      dtype=dtype,
      bos_id=token_id("bos_token_id"),
      eos_id=token_id("eos_token_id"),
      pad_id=token_id("pad_token_id"),
      init_std=float(hf.get("initializer_range", 0.02)),
  )


def config_to_hf(cfg: ModelConfig, dtype=None) -> dict[str, Any]:
  """config.json dict for `cfg` (transformers 5 layout, plus `rope_theta`/`rope_scaling` at the top
  level so transformers 4 readers get the same model)."""
  if cfg.family == "llama" and cfg.qkv_bias:
    raise ValueError("ModelConfig(family='llama', qkv_bias=True) has no HF LlamaForCausalLM "
                     "equivalent (attention_bias would also add an o_proj bias)")
  if cfg.family == "qwen2" and not cfg.qkv_bias:
    raise ValueError("ModelConfig(family='qwen2', qkv_bias=False) has no HF Qwen2ForCausalLM "
                     "equivalent (Qwen2 always has q/k/v biases)")
  rope: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
  if cfg.rope_scaling is not None:
    rope.update(rope_type="llama3", **dataclasses.asdict(cfg.rope_scaling))
  hf: dict[str, Any] = {
      "architectures": [_FAMILY_TO_ARCH[cfg.family]],
      "model_type": cfg.family,
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.hidden_size,
      "intermediate_size": cfg.intermediate_size,
      "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": cfg.max_seq_len,
      "rms_norm_eps": cfg.rms_norm_eps,
      "initializer_range": cfg.init_std,
      "tie_word_embeddings": cfg.tie_embeddings,
      "rope_parameters": rope,
      "rope_theta": cfg.rope_theta,
      "bos_token_id": cfg.bos_id,
      "eos_token_id": cfg.eos_id,
      "pad_token_id": cfg.pad_id,
      "attention_dropout": 0.0,
      "use_cache": True,
      "dtype": _dtype_name(dtype if dtype is not None else cfg.param_dtype),
  }
  if cfg.rope_scaling is not None:
    hf["rope_scaling"] = dict(rope)
  if cfg.family == "llama":
    hf.update(attention_bias=False, mlp_bias=False)
  else:
    hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.num_layers)
  return hf


# ------------------------------------------------------------------------------ name mapping
@dataclasses.dataclass(frozen=True)
class _Spec:
  """One parameter of ours and the HF tensor(s) it comes from.

  path: our tree path; hf: HF name (with `{i}` for the layer when `stacked`); kind: the layout
  conversion (see _to_ours / _to_hf); our_shape / hf_shape: per layer (no leading L axis).
  """
  path: tuple[str, ...]
  hf: str
  kind: str
  stacked: bool
  our_shape: tuple[int, ...]
  hf_shape: tuple[int, ...]

  def hf_name(self, layer: int | None) -> str:
    return self.hf.format(i=layer) if self.stacked else self.hf


def _specs(cfg: ModelConfig) -> list[_Spec]:
  d, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
  n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  p = "model.layers.{i}."
  specs = [_Spec(("embed_tokens", "embedding"), "model.embed_tokens.weight", "copy", False,
                 (v, d), (v, d))]
  layer = [
      (("input_layernorm", "scale"), p + "input_layernorm.weight", "copy", (d,), (d,)),
      (("self_attn", "q_proj", "kernel"), p + "self_attn.q_proj.weight", "in_heads", (d, n, h), (n * h, d)),
      (("self_attn", "k_proj", "kernel"), p + "self_attn.k_proj.weight", "in_heads", (d, k, h), (k * h, d)),
      (("self_attn", "v_proj", "kernel"), p + "self_attn.v_proj.weight", "in_heads", (d, k, h), (k * h, d)),
  ]
  if cfg.qkv_bias:
    layer += [
        (("self_attn", "q_proj", "bias"), p + "self_attn.q_proj.bias", "bias_heads", (n, h), (n * h,)),
        (("self_attn", "k_proj", "bias"), p + "self_attn.k_proj.bias", "bias_heads", (k, h), (k * h,)),
        (("self_attn", "v_proj", "bias"), p + "self_attn.v_proj.bias", "bias_heads", (k, h), (k * h,)),
    ]
  layer += [
      (("self_attn", "o_proj", "kernel"), p + "self_attn.o_proj.weight", "out_heads", (n, h, d), (d, n * h)),
      (("post_attention_layernorm", "scale"), p + "post_attention_layernorm.weight", "copy", (d,), (d,)),
      (("mlp", "gate_proj", "kernel"), p + "mlp.gate_proj.weight", "t", (d, f), (f, d)),
      (("mlp", "up_proj", "kernel"), p + "mlp.up_proj.weight", "t", (d, f), (f, d)),
      (("mlp", "down_proj", "kernel"), p + "mlp.down_proj.weight", "t", (f, d), (d, f)),
  ]
  specs += [_Spec(("layers",) + path, name, kind, True, ours, theirs)
            for path, name, kind, ours, theirs in layer]
  specs.append(_Spec(("norm", "scale"), "model.norm.weight", "copy", False, (d,), (d,)))
  if not cfg.tie_embeddings:
    specs.append(_Spec(("lm_head", "kernel"), "lm_head.weight", "t", False, (d, v), (v, d)))
  return specs


def _rows(sl: slice, block: int) -> slice:
  """Rows of a flattened [N*block] axis covering heads sl (a unit-stride slice)."""
  return slice(sl.start * block, sl.stop * block)


def _read_ours(spec: _Spec, cfg: ModelConfig, get: Callable[[tuple], np.ndarray],
               idx: tuple[slice, ...]) -> np.ndarray:
  """Our per-layer tensor at `idx` (normalized unit-stride slices), reading only that part of
  the HF tensor through `get(hf_index)`."""
  h = cfg.head_dim
  if spec.kind == "copy":
    return get(idx)
  if spec.kind == "t":
    return get((idx[1], idx[0])).T
  if spec.kind == "in_heads":        # ours [D, N, H] <- hf [N*H, D]
    sd, sn, sh = idx
    x = get((_rows(sn, h), sd))
    return x.reshape(sn.stop - sn.start, h, sd.stop - sd.start)[:, sh, :].transpose(2, 0, 1)
  if spec.kind == "bias_heads":      # ours [N, H] <- hf [N*H]
    sn, sh = idx
    return get((_rows(sn, h),)).reshape(sn.stop - sn.start, h)[:, sh]
  if spec.kind == "out_heads":       # ours [N, H, D] <- hf [D, N*H]
    sn, sh, sd = idx
    x = get((sd, _rows(sn, h)))
    return x.T.reshape(sn.stop - sn.start, h, sd.stop - sd.start)[:, sh, :]
  raise AssertionError(spec.kind)


def _to_hf(spec: _Spec, x: np.ndarray) -> np.ndarray:
  """HF tensor of one full per-layer tensor of ours."""
  if spec.kind == "copy":
    y = x
  elif spec.kind == "t":
    y = x.T
  elif spec.kind == "in_heads":      # [D, N, H] -> [N*H, D]
    y = x.transpose(1, 2, 0).reshape(-1, x.shape[0])
  elif spec.kind == "bias_heads":    # [N, H] -> [N*H]
    y = x.reshape(-1)
  elif spec.kind == "out_heads":     # [N, H, D] -> [D, N*H]
    y = x.reshape(-1, x.shape[-1]).T
  else:
    raise AssertionError(spec.kind)
  return np.ascontiguousarray(y)


def _check_specs_match_model(cfg: ModelConfig, specs: list[_Spec]) -> None:
  from rlvr_jax.model.transformer import abstract_params
  leaves = jax.tree_util.tree_flatten_with_path(nn.unbox(abstract_params(cfg)))[0]
  flat = {tuple(k.key for k in path): tuple(x.shape) for path, x in leaves}
  ours = {s.path: ((cfg.num_layers,) if s.stacked else ()) + s.our_shape for s in specs}
  if flat != ours:
    raise AssertionError(f"HF name map out of date with the model's parameters: {flat} vs {ours}")


# ------------------------------------------------------------------------------ safetensors
_LAYER_NAME = re.compile(r"^model\.layers\.(\d+)\.")
# Tensors a checkpoint may carry that the model rebuilds itself (old Llama exports).
_BENIGN_UNUSED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


def _safe_open(file: Path):
  """safe_open, with a truncated or corrupt file reported as one ValueError naming it."""
  try:
    return safe_open(file, framework="numpy")
  except SafetensorError as e:
    detail = " ".join(str(e).split())
    raise ValueError(f"{file}: not a readable safetensors file ({detail}); it is truncated or "
                     f"corrupt (an interrupted download or copy, or a git-lfs pointer): "
                     f"re-download it or re-convert the checkpoint") from None


class _Tensors:
  """Name -> file index over one model.safetensors or the shards of an index; lazily opened."""

  def __init__(self, path: Path):
    self.path = path
    index_file, single = path / INDEX_FILE, path / SINGLE_FILE
    if index_file.is_file():
      try:
        weight_map = json.loads(index_file.read_text())["weight_map"]
      except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{index_file}: not a safetensors index (need a `weight_map`): {e}") from e
      for fname in sorted(set(weight_map.values())):
        if not (path / fname).is_file():
          raise FileNotFoundError(f"{path / fname}: shard file named in {index_file} is missing")
      self.files = {name: path / fname for name, fname in weight_map.items()}
    elif single.is_file():
      with _safe_open(single) as f:
        self.files = {name: single for name in f.keys()}
    else:
      others = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
      hint = f" (found {others}: convert them to safetensors first)" if others else ""
      raise FileNotFoundError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE}{hint}")
    self._stack = contextlib.ExitStack()
    self._handles: dict[Path, Any] = {}

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._stack.close()
    self._handles.clear()

  def _handle(self, file: Path):
    if file not in self._handles:
      self._handles[file] = self._stack.enter_context(_safe_open(file))
    return self._handles[file]

  def where(self) -> str:
    files = sorted({p.name for p in self.files.values()})
    return f"{self.path} ({', '.join(files[:3])}{', ...' if len(files) > 3 else ''})"

  def check(self, name: str, shape: tuple[int, ...], what: str) -> None:
    if name not in self.files:
      raise ValueError(f"{self.where()}: tensor {name!r} is missing (needed for {what}); the "
                       f"weights do not match config.json: use the config.json that came with "
                       f"them, or re-convert the checkpoint")
    file = self.files[name]
    handle = self._handle(file)   # a truncated / corrupt file: ValueError naming it
    try:
      found = tuple(handle.get_slice(name).get_shape())
    except Exception as e:  # an index naming a tensor its shard does not hold
      raise ValueError(f"{file}: tensor {name!r} is missing ({e})") from e
    if found != tuple(shape):
      raise ValueError(f"{file}: tensor {name!r} has shape {list(found)}, expected {list(shape)} "
                       f"from config.json")

  def read(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
    return self._handle(self.files[name]).get_slice(name)[index]

  def num_layers(self) -> int:
    """1 + the largest N of the model.layers.N.* tensors (0 when there are none)."""
    layers = [int(m.group(1)) for m in map(_LAYER_NAME.match, self.files) if m]
    return max(layers) + 1 if layers else 0


def _check_layer_count(cfg: ModelConfig, tensors: _Tensors, config_file: Path) -> None:
  """config.json's num_hidden_layers must be the number of layers the weights hold: fewer
  would silently load a truncated model, more fails later on a missing tensor."""
  found = tensors.num_layers()
  if found != cfg.num_layers:
    held = (f"{found} layers (model.layers.0 ... model.layers.{found - 1})" if found
            else "no model.layers.* tensors")
    raise ValueError(f"{config_file}: num_hidden_layers={cfg.num_layers}, but the weights in "
                     f"{tensors.where()} hold {held}; use the config.json that came with these "
                     f"weights (or set num_hidden_layers={found})")


def _check_unused(cfg: ModelConfig, tensors: _Tensors, used: set[str], config_file: Path) -> None:
  """Tensors the model of config.json does not read mean the config describes another model
  (e.g. q/k/v biases under a Llama config): an error, except rebuilt buffers (rotary inv_freq)
  and an lm_head.weight next to tied embeddings (a duplicate some exporters write)."""
  unused = sorted(n for n in set(tensors.files) - used if not _BENIGN_UNUSED.search(n))
  if cfg.tie_embeddings and "lm_head.weight" in unused:
    unused.remove("lm_head.weight")
    log.warning("%s: ignoring lm_head.weight: config.json ties the output head to the embeddings "
                "(tie_word_embeddings=true)", tensors.where())
  if unused:
    shown = ", ".join(unused[:5]) + (f", ... ({len(unused)} in all)" if len(unused) > 5 else "")
    raise ValueError(f"{tensors.where()}: the model of {config_file} does not use tensor(s) "
                     f"{shown}; config.json describes a different model than these weights: use "
                     f"the config.json that came with them")


def _normalize(index, shape) -> tuple[slice, ...]:
  index = tuple(index) + (slice(None),) * (len(shape) - len(index))
  out = []
  for sl, n in zip(index, shape):
    start, stop, step = sl.indices(n)
    if step != 1:
      raise ValueError(f"unexpected strided shard index {index}")
    out.append(slice(start, stop))
  return tuple(out)


# ------------------------------------------------------------------------------ load
def load_hf(path: str | os.PathLike, dtype=jnp.float32, *, mesh=None,
            param_dtype=None) -> tuple[ModelConfig, Any]:
  """Read an HF Llama/Qwen2 checkpoint directory into (ModelConfig, params).

  path: directory with config.json and model.safetensors (or model.safetensors.index.json and
  its shards). dtype: compute dtype of the returned config and, unless `param_dtype` is given,
  the storage dtype of the params (None: the checkpoint's dtype). mesh: the device mesh the
  params are placed on with `sharding.param_shardings` (default: all devices, `make_mesh()`).
  Every parameter is assembled per device shard from the memory-mapped files, so the host never
  holds more than one shard of one parameter at a time.
  """
  from rlvr_jax import sharding
  path = Path(path)
  hf = read_hf_config(path)
  cfg = config_from_hf(hf, source=str(path / "config.json"), dtype=dtype, param_dtype=param_dtype)
  specs = _specs(cfg)
  _check_specs_match_model(cfg, specs)
  mesh = mesh if mesh is not None else sharding.make_mesh()
  shardings = sharding.param_shardings(cfg, mesh)
  np_dtype = np.dtype(cfg.jnp_param_dtype)

  params: dict[str, Any] = {}
  with _Tensors(path) as tensors:
    # Validate the layer count, every tensor's presence and shape, and that no tensor goes
    # unused, before placing anything on a device.
    _check_layer_count(cfg, tensors, path / "config.json")
    used = set()
    for spec in specs:
      for layer in (range(cfg.num_layers) if spec.stacked else [None]):
        tensors.check(spec.hf_name(layer), spec.hf_shape, "/".join(spec.path))
        used.add(spec.hf_name(layer))
    _check_unused(cfg, tensors, used, path / "config.json")
    for spec in specs:
      target = shardings
      for key in spec.path:
        target = target[key]
      full_shape = ((cfg.num_layers,) if spec.stacked else ()) + spec.our_shape
      arr = jax.make_array_from_callback(full_shape, target,
                                         _shard_reader(spec, cfg, tensors, full_shape, np_dtype))
      node = params
      for key in spec.path[:-1]:
        node = node.setdefault(key, {})
      node[spec.path[-1]] = arr
  return cfg, params


def _shard_reader(spec: _Spec, cfg: ModelConfig, tensors: _Tensors, full_shape, np_dtype):
  """Callback for make_array_from_callback: device index -> numpy block of our parameter."""
  cache: dict[tuple, np.ndarray] = {}  # replicated shards ask for the same block several times

  def read(index):
    idx = _normalize(index if index is not None else (), full_shape)
    key = tuple((s.start, s.stop) for s in idx)
    if key not in cache:
      if spec.stacked:  # fill layer by layer: the host holds this block plus one layer's slice
        block = np.empty(tuple(s.stop - s.start for s in idx), np_dtype)
        for j, layer in enumerate(range(idx[0].start, idx[0].stop)):
          block[j] = _read_ours(spec, cfg, lambda i: tensors.read(spec.hf_name(layer), i), idx[1:])
      else:
        block = _read_ours(spec, cfg, lambda i: tensors.read(spec.hf_name(None), i), idx)
        block = np.ascontiguousarray(block.astype(np_dtype, copy=False))
      cache[key] = block
    return cache[key]
  return read


# ------------------------------------------------------------------------------ save
@jax.jit
def _layer(x, i):
  return jax.lax.dynamic_index_in_dim(x, i, axis=0, keepdims=False)


def _to_host(x) -> np.ndarray:
  """A (possibly sharded, possibly multi-host) array as one numpy array on this host."""
  if isinstance(x, np.ndarray):
    return x
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _leaf(params, spec: _Spec):
  """Our parameter (all layers when stacked) that `spec` names."""
  leaf = params
  for key in spec.path:
    try:
      leaf = leaf[key]
    except (KeyError, TypeError) as e:
      raise KeyError(f"params has no {'/'.join(spec.path)} (needed for {spec.hf})") from e
  return leaf


def to_hf_state_dict(cfg: ModelConfig, params: Any, dtype=None) -> dict[str, np.ndarray]:
  """The transformers state dict of `params` in host memory: HF tensor name -> numpy array in
  HF layout, dtype default cfg.param_dtype (`lm_head.weight` absent when the embeddings are
  tied). One full host copy of the weights: for tests and benchmarks; `save_hf` streams instead."""
  params = nn.unbox(params)
  np_dtype = np.dtype(jnp.dtype(dtype if dtype is not None else cfg.param_dtype))
  out = {}
  for spec in _specs(cfg):
    x = _to_host(_leaf(params, spec)).astype(np_dtype, copy=False)
    for layer in (range(cfg.num_layers) if spec.stacked else [None]):
      out[spec.hf_name(layer)] = _to_hf(spec, x[layer] if spec.stacked else x)
  return out


def _plan_shards(entries: list[tuple[str, int]], max_shard_bytes: int) -> list[list[str]]:
  """Greedy consecutive packing of (name, nbytes) into shards of at most max_shard_bytes
  (a single tensor bigger than that gets a shard of its own)."""
  shards: list[list[str]] = [[]]
  size = 0
  for name, nbytes in entries:
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += nbytes
  return shards


def save_hf(path: str | os.PathLike, cfg: ModelConfig, params: Any, *, dtype=None,
            max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, overwrite: bool = False) -> Path:
  """Write `params` as an HF checkpoint directory that `AutoModelForCausalLM.from_pretrained` loads.

  Writes config.json, generation_config.json and model.safetensors, or
  model-0000k-of-0000n.safetensors shards + model.safetensors.index.json when the weights exceed
  `max_shard_bytes`. dtype: tensor dtype on disk (default cfg.param_dtype). One layer of one
  parameter is pulled to the host at a time; in multi-host runs every process must call this
  (they gather together) and process 0 writes. Everything is written to a temporary sibling
  directory that is renamed to `path` at the end, so a failed save leaves no directory that
  looks complete. An existing non-empty `path` is an error unless `overwrite=True`.
  Returns the path.
  """
  from safetensors.numpy import save_file
  path = Path(path)
  dtype = jnp.dtype(dtype if dtype is not None else cfg.param_dtype)
  np_dtype = np.dtype(dtype)
  params = nn.unbox(params)
  writer = jax.process_index() == 0
  if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
    raise FileExistsError(f"{path} already exists and is not empty; pass overwrite=True to replace it")

  specs = _specs(cfg)
  entries = []   # (hf name, spec, layer)
  for spec in specs:
    for layer in (range(cfg.num_layers) if spec.stacked else [None]):
      entries.append((spec.hf_name(layer), spec, layer))
  for spec in specs:
    leaf = _leaf(params, spec)
    want = ((cfg.num_layers,) if spec.stacked else ()) + spec.our_shape
    if tuple(leaf.shape) != want:
      raise ValueError(f"params {'/'.join(spec.path)} has shape {tuple(leaf.shape)}, expected "
                       f"{want} from the ModelConfig")
  nbytes = {name: math.prod(spec.hf_shape) * np_dtype.itemsize for name, spec, _ in entries}
  shards = _plan_shards([(name, nbytes[name]) for name, _, _ in entries], max_shard_bytes)
  by_name = {name: (spec, layer) for name, spec, layer in entries}

  tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    if writer:
      tmp.mkdir(parents=True)
    weight_map = {}
    for k, names in enumerate(shards):
      fname = SINGLE_FILE if len(shards) == 1 else f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
      tensors = {}
      for name in names:
        spec, layer = by_name[name]
        leaf = _leaf(params, spec)
        if spec.stacked:
          leaf = leaf[layer] if isinstance(leaf, np.ndarray) else _layer(leaf, layer)
        x = _to_host(leaf)
        tensors[name] = _to_hf(spec, x.astype(np_dtype, copy=False))
        weight_map[name] = fname
      if writer:
        save_file(tensors, str(tmp / fname), metadata={"format": "pt"})
      del tensors
    if writer:
      if len(shards) > 1:
        index = {"metadata": {"total_size": sum(nbytes.values())}, "weight_map": weight_map}
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2))
      (tmp / "config.json").write_text(json.dumps(config_to_hf(cfg, dtype), indent=2))
      gen = {"_from_model_config": True}
      gen.update({k: v for k, v in (("bos_token_id", cfg.bos_id), ("eos_token_id", cfg.eos_id),
                                    ("pad_token_id", cfg.pad_id)) if v is not None})
      (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
      old = None
      if path.exists():
        old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
        path.rename(old)
      tmp.rename(path)
      if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
  except BaseException:
    if writer and tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
    raise
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"save_hf:{path}")
  return path
