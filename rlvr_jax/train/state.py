"""The train state pytree and its creation directly on device shardings.

`TrainState(step, params, opt_state, rng)`: `step` int32[] counts the batches consumed (applied
or skipped updates); `rng` is raw uint32 key data (`jax.random.key_data`) so checkpoints hold a
plain array. Shardings come from the model's logical axis names: the optimizer's moment trees
carry the same names as the parameters (optax maps over boxed leaves), scalars are replicated.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from rlvr_jax import sharding
from rlvr_jax.model.config import ModelConfig
from rlvr_jax.model.transformer import abstract_params, init_params_fn
from rlvr_jax.train.optim import Optimizer


@flax.struct.dataclass
class TrainState:
  step: jax.Array       # int32[]: batches consumed
  params: Any           # model parameters (param_dtype, f32 master weights by default)
  opt_state: Any        # optax state
  rng: jax.Array        # uint32[2]: raw key data of the step RNG

  def key(self) -> jax.Array:
    return jax.random.wrap_key_data(self.rng)


@functools.lru_cache(maxsize=16)
def _boxed_abstract_state(cfg: ModelConfig, optimizer: Optimizer) -> TrainState:
  """Logically-boxed ShapeDtypeStructs of the state (cached: tracing the model's init costs
  a fraction of a second, and the loop asks for shardings and shapes several times)."""
  boxed = abstract_params(cfg)
  rng = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
  return TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=boxed,
                    opt_state=jax.eval_shape(optimizer.tx.init, boxed), rng=rng)


def abstract_state(cfg: ModelConfig, optimizer: Optimizer, mesh: Mesh | None = None) -> TrainState:
  """ShapeDtypeStructs of the state (with shardings when a mesh is given); nothing allocated."""
  unboxed = nn.unbox(_boxed_abstract_state(cfg, optimizer))
  if mesh is None:
    return unboxed
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), unboxed,
                      state_shardings(cfg, optimizer, mesh))


def state_shardings(cfg: ModelConfig, optimizer: Optimizer, mesh: Mesh) -> TrainState:
  """NamedShardings of every leaf of the state (logical names -> mesh via sharding.RULES)."""
  specs = nn.get_partition_spec(_boxed_abstract_state(cfg, optimizer))
  return sharding.logical_to_sharding(specs, mesh)


def create_train_state(cfg: ModelConfig, optimizer: Optimizer, mesh: Mesh, key: jax.Array,
                       params: Any = None, *, donate_params: bool = False) -> TrainState:
  """A fresh state born on its shardings (no full host copy).

  key: a jax.random key; split into the parameter-init key and the step RNG. params: optional
  initial parameters (from HF weights or another run); they are placed on the parameter
  shardings (a no-op when already there), cast to cfg.param_dtype, and the optimizer state is
  created around them. donate_params=True lets the state take over their device buffers (no
  second copy of a large model; the caller's arrays are deleted).
  """
  shardings = state_shardings(cfg, optimizer, mesh)
  init_key, step_key = jax.random.split(key)
  rng = jax.random.key_data(step_key)

  if params is None:
    def init(k, rng):
      p = init_params_fn(cfg)(k)
      return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=optimizer.tx.init(p),
                        rng=rng)
    return jax.jit(init, out_shardings=shardings)(init_key, rng)

  check_params_match(cfg, params, nn.unbox(_boxed_abstract_state(cfg, optimizer).params))
  params = jax.device_put(params, shardings.params)

  dtype = cfg.jnp_param_dtype
  same_dtype = all(x.dtype == dtype for x in jax.tree.leaves(params))

  def init_from(p, rng):
    p = jax.tree.map(lambda x: x.astype(dtype), p)
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=optimizer.tx.init(p),
                      rng=rng)
  donate = (0,) if donate_params and same_dtype else ()
  return jax.jit(init_from, out_shardings=shardings, donate_argnums=donate)(params, rng)


def check_params_match(cfg: ModelConfig, params: Any, expected: Any = None) -> None:
  """Raises ValueError naming the first parameter whose path or shape differs from cfg's
  (`expected`: the abstract parameter tree, when the caller already has it)."""
  expected = nn.unbox(abstract_params(cfg)) if expected is None else expected
  want = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
  got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  hint = "; check the model size / overrides against the checkpoint or HF directory"
  for path in sorted(set(want) | set(got), key=str):
    name = jax.tree_util.keystr(path)
    if path not in got:
      raise ValueError(f"initial params lack {name}{hint}")
    if path not in want:
      raise ValueError(f"initial params have {name}, unknown to the model config{hint}")
    if tuple(got[path].shape) != tuple(want[path].shape):
      raise ValueError(f"initial params {name} has shape {tuple(got[path].shape)}, the model "
                       f"config expects {tuple(want[path].shape)}{hint}")
