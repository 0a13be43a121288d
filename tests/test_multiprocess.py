"""2 processes × 2 CPU devices through jax.distributed give the single-process result."""
import os

import jax
import jax.numpy as jnp
import numpy as np

from conftest import free_port, run_processes
from multiprocess_worker import CFG, lm_loss
import rlvr_jax as rj

HERE = os.path.dirname(__file__)


def test_two_processes_match_single_process(tmp_path):
  port, out = free_port(), tmp_path / "result.npz"
  run_processes(os.path.join(HERE, "multiprocess_worker.py"), [[i, port, out] for i in range(2)],
                timeout=240)

  result = dict(np.load(out))
  params = jax.tree_util.tree_map(jnp.asarray, _unflatten(result, "param"))
  tokens = jnp.asarray(result["tokens"])
  loss, grad = jax.jit(jax.value_and_grad(lm_loss))(params, tokens)
  logits = rj.forward(CFG, params, tokens)
  np.testing.assert_allclose(result["loss"], loss, atol=1e-5)
  np.testing.assert_allclose(result["logits"], logits, atol=1e-5)
  for path, leaf in jax.tree_util.tree_leaves_with_path(grad):
    np.testing.assert_allclose(result["grad" + jax.tree_util.keystr(path)], leaf, atol=1e-5)


def _unflatten(flat, prefix):
  """Rebuild the param tree from keys like "param['layers']['mlp']['up_proj']['kernel']"."""
  tree = {}
  for key, value in flat.items():
    if not key.startswith(prefix + "["):
      continue
    parts = [p.strip("'") for p in key[len(prefix) + 1:-1].split("][")]
    node = tree
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = value
  return tree
