"""One process of a 2-process × 2-CPU-device run (driven by test_multiprocess.py).

Computes the LM loss, its gradient and the logits of a fixed batch on a (data=2, fsdp=1,
tensor=2) mesh spanning both processes, and process 0 writes them to an .npz file.
"""
import sys

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from rlvr_jax import sharding
import rlvr_jax as rj

CFG = rj.get_model_config("toy-1m", vocab_size=256, num_layers=2, hidden_size=64,
                          intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16)


def lm_loss(params, tokens):
  logits = rj.forward(CFG, params, tokens[:, :-1])
  logp = jax.nn.log_softmax(logits)
  return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))


def main(process_id: int, port: int, out_path: str):
  sharding.maybe_initialize_distributed(f"127.0.0.1:{port}", 2, process_id)
  assert jax.process_count() == 2 and jax.device_count() == 4, (jax.process_count(), jax.devices())
  mesh = sharding.make_mesh((2, 1, 2))
  params = sharding.init_params(CFG, jax.random.key(0), mesh)
  tokens_global = np.asarray(jax.random.randint(jax.random.key(5), (8, 16), 0, CFG.vocab_size))
  # Each process feeds only its own slice of the batch, as a data loader would.
  local = tokens_global[process_id * 4:(process_id + 1) * 4]
  tokens = sharding.host_local_to_global(local, mesh)
  with sharding.activate(mesh):
    loss, grad = jax.jit(jax.value_and_grad(lm_loss))(params, tokens)
    logits = jax.jit(lambda p, t: rj.forward(CFG, p, t))(params, tokens)
  logits, grad, params = multihost_utils.process_allgather((logits, grad, params), tiled=True)
  if process_id == 0:
    flat = {"loss": np.asarray(loss), "logits": np.asarray(logits), "tokens": tokens_global}
    for prefix, tree in (("grad", grad), ("param", params)):
      for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        flat[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)
    np.savez(out_path, **flat)
  jax.distributed.shutdown()


if __name__ == "__main__":
  # Only when run as a worker: the test imports CFG / lm_loss from here and keeps its 8 devices.
  jax.config.update("jax_num_cpu_devices", 2)
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
