"""Device mesh, the one logical→physical axis rule table, and multi-host initialisation.

Every parameter and activation carries logical axis names (see model/transformer.py); RULES maps
them onto the mesh axes `data`, `fsdp`, `tensor`. Batches are split over (data, fsdp); weights are
split over fsdp on their `embed` dimension and over tensor on heads / mlp / vocab.
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

RULES: tuple[tuple[str, Any], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
    # activations
    ("act_batch", BATCH_AXES),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices=None) -> Mesh:
  """Mesh over (data, fsdp, tensor). One entry may be -1: it takes the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  shape = list(shape)
  if len(shape) != 3:
    raise ValueError(f"mesh shape must have 3 entries (data, fsdp, tensor), got {shape}")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one entry may be -1")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"mesh shape {shape}: {len(devices)} devices do not divide by {known}")
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f"mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices but "
                     f"{len(devices)} are available; change mesh.data/fsdp/tensor so their "
                     f"product is {len(devices)} (or use -1 for one of them)")
  return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


@contextlib.contextmanager
def activate(mesh: Mesh, rules=RULES):
  """Context in which model code sees the mesh and the logical rules (activation constraints)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def under_mesh(fn: Callable, mesh: Mesh) -> Callable:
  """`fn` (a jitted step) called inside `activate(mesh)`, so it traces with the mesh and the
  logical rules; the jitted function stays reachable as `.jitted` (e.g. to lower it)."""
  @functools.wraps(fn)
  def wrapped(*args):
    with activate(mesh):
      return fn(*args)
  wrapped.jitted = fn
  return wrapped


def logical_to_sharding(logical_specs: Any, mesh: Mesh, rules=RULES) -> Any:
  """Tree of logical PartitionSpecs -> tree of NamedShardings."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def data_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) axis over (data, fsdp), the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_shardings(cfg, mesh: Mesh, rules=RULES):
  """NamedShardings of the model's parameters (from their logical axis names)."""
  from rlvr_jax.model.transformer import abstract_params
  return logical_to_sharding(nn.get_partition_spec(abstract_params(cfg)), mesh, rules)


def init_params(cfg, key: jax.Array, mesh: Mesh | None = None, rules=RULES):
  """Random parameters created directly on their shardings (never a full host copy)."""
  from rlvr_jax.model.transformer import init_params_fn
  mesh = mesh or make_mesh()
  shardings = param_shardings(cfg, mesh, rules)
  # No activation constraints while initialising (DenseGeneral reshapes boxed kernels); the
  # out_shardings alone place every parameter.
  return jax.jit(init_params_fn(cfg), out_shardings=shardings)(key)


def check_divisible(global_batch: int, mesh: Mesh, what: str = "batch size") -> None:
  """Fail early (before compiling) when a batch cannot be split over the data axes."""
  n = mesh.shape["data"] * mesh.shape["fsdp"]
  if global_batch % n:
    raise ValueError(f"{what}={global_batch} does not divide over data×fsdp = "
                     f"{mesh.shape['data']}×{mesh.shape['fsdp']} = {n} devices; make it a "
                     f"multiple of {n} or change the mesh")


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None,
                                 local_device_ids=None) -> bool:
  """`jax.distributed.initialize()` for multi-host runs; a no-op for a single process.

  Multi-host is detected from explicit arguments, the JAX_COORDINATOR_ADDRESS /
  JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables, a Cloud TPU pod environment, or
  RLVR_JAX_DISTRIBUTED=1 (where jax finds the coordinator itself: Cloud TPU VMs, GKE, Slurm).
  Returns True when it initialised.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and os.environ.get("JAX_PROCESS_ID"):
    process_id = int(os.environ["JAX_PROCESS_ID"])
  tpu_pod = bool(os.environ.get("TPU_WORKER_HOSTNAMES", "").count(","))
  # RLVR_JAX_DISTRIBUTED=1 (set by launch/tpu_vm.sh): initialise and let jax find the cluster
  # (on a Cloud TPU VM slice, from the VM metadata rather than the environment).
  asked = os.environ.get("RLVR_JAX_DISTRIBUTED", "") == "1"
  if coordinator_address is None and not tpu_pod and not asked:
    return False
  if num_processes == 1:
    return False
  if jax.distributed.is_initialized():
    return True
  kwargs = {}
  if coordinator_address is not None:
    kwargs.update(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  if local_device_ids is not None:
    kwargs["local_device_ids"] = local_device_ids
  jax.distributed.initialize(**kwargs)
  return True


def host_local_to_global(batch: Any, mesh: Mesh) -> Any:
  """Each process's slice of the batch (leading axis) -> one global array over (data, fsdp)."""
  from jax.experimental import multihost_utils
  spec = P(BATCH_AXES)
  return multihost_utils.host_local_array_to_global_array(batch, mesh, spec)
