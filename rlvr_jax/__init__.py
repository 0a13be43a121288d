"""rlvr_jax: RL with verifiable rewards under weak supervision, in JAX/Flax.

Public API (stable names; see docs/DESIGN.md):
  rj.ModelConfig, rj.get_model_config(name)
  rj.forward(cfg, params, tokens, positions=None, segment_ids=None) -> float32[B, T, V]
  rj.load_hf(path, dtype=...) -> (cfg, params);  rj.save_hf(path, cfg, params)
  rj.generate(cfg, params, prompts, prompt_lengths, key, ...)
  rj.load_params(workdir, step=None)
  rj.rl  (compute_advantages, policy_loss, rewards)
"""
from __future__ import annotations

import importlib

from rlvr_jax.model.config import ModelConfig, RopeScaling
from rlvr_jax.model.sizes import SIZES, get_model_config
from rlvr_jax.model.transformer import forward, init_cache

__version__ = "0.1.0"

# Names whose modules import heavier dependencies are resolved on first use.
_LAZY = {
    "load_hf": ("rlvr_jax.model.hf", "load_hf"),
    "save_hf": ("rlvr_jax.model.hf", "save_hf"),
    "generate": ("rlvr_jax.sampling", "generate"),
    "load_params": ("rlvr_jax.train.checkpoints", "load_params"),
    "init_params": ("rlvr_jax.sharding", "init_params"),
    "make_mesh": ("rlvr_jax.sharding", "make_mesh"),
    "Tokenizer": ("rlvr_jax.tokenizer", "Tokenizer"),
    "load_tokenizer": ("rlvr_jax.tokenizer", "load_tokenizer"),
    "rl": ("rlvr_jax.rl", None),
}

__all__ = ["ModelConfig", "RopeScaling", "SIZES", "get_model_config", "forward", "init_cache",
           *_LAZY]


def __getattr__(name):
  if name not in _LAZY:
    raise AttributeError(f"module 'rlvr_jax' has no attribute {name!r}")
  module_name, attr = _LAZY[name]
  module = importlib.import_module(module_name)
  value = module if attr is None else getattr(module, attr)
  globals()[name] = value
  return value
