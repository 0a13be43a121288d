"""The one rollout type: what the sampler returns, the rewards score and the update trains on.

`Rollout` flows unchanged from the sample phase through the score phase into the reward
functions (rewards.RolloutBatch is the same class) and the update phase. The only view the
rewards get is the same type with the close-brace ids mapped (`map_close_ids`, once per score).
"""
from __future__ import annotations

from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Rollout:
  """Sampled responses, R rows (samples of one prompt contiguous): tokens int32[R, M] (pad after
  the stop token), lengths int32[R] (stop token included), logprobs / entropy / self_certainty
  float32[R, M] from the sampler (0 after a row ends; None when not computed, e.g. a rollout
  built by hand for the rewards), mask float32[R, M] (None: 1 on positions < lengths)."""
  tokens: jax.Array
  lengths: jax.Array
  logprobs: jax.Array | None = None
  entropy: jax.Array | None = None
  self_certainty: jax.Array | None = None
  mask: jax.Array | None = None

  def valid_mask(self) -> jax.Array:
    """float32[R, M]: `mask`, or 1 on positions < lengths when there is none."""
    if self.mask is not None:
      return jnp.asarray(self.mask, jnp.float32)
    m = self.tokens.shape[1]
    return (jnp.arange(m)[None, :] < self.lengths[:, None]).astype(jnp.float32)

  def _replace(self, **changes) -> "Rollout":
    """`replace` under the name of the former rewards.RolloutBatch (a NamedTuple)."""
    return self.replace(**changes)

  def map_close_ids(self, close_ids: Sequence[int]) -> "Rollout":
    """The same rollout with every id of close_ids[1:] replaced by close_ids[0] in `tokens`:
    vocabularies merge "}" with what follows ("}." in the toy tokenizer, "}$" in Qwen's), and
    the in-graph rewards compare token ids. Unchanged with fewer than two ids."""
    if len(close_ids) < 2:
      return self
    merged = jnp.asarray(tuple(close_ids[1:]), jnp.int32)
    return self.replace(tokens=jnp.where(jnp.isin(self.tokens, merged), close_ids[0],
                                         self.tokens))


__all__ = ["Rollout"]
