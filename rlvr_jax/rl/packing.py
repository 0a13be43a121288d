r"""Packed rollouts for the update (`rl.pack_update`): the padding removed from the log-prob passes.

Unpacked, every rollout row is one sequence [prompt block P | response M]: a row whose response
stopped after 40 of M = 256 tokens still costs P + M positions in the update's forward and
backward passes. Packed, the rows of one microbatch are laid end to end in `bins` sequences of
`capacity` = P + M positions (first-fit decreasing over their real lengths prompt_length +
response_length), each row its own segment (attention never crosses rows: the model's segment
ids), positions restarting at 0 per row as the sampler's, so every real token sees exactly the
context it saw unpacked. The update then gathers each response token's predicting hidden state
back to the [rows, M] layout, where the loss, the reference and the mismatch are computed as
before: the log-probs equal the unpacked ones up to float rounding (tests/test_packing.py).

The number of bins depends on the sampled lengths, which only the host can turn into a static
shape: the host reads the rollout's lengths between score and update (`plan`), so a packed step
runs as two programs (rl/loop.py's phase mode). `plan` rounds the bin count up to a multiple of
rows_per_group / BIN_BUCKETS, so at most BIN_BUCKETS update programs are compiled.

Layout. The update splits its rows into chunks (minibatches x microbatches, strided: row r is in
chunk r % chunks at position r // chunks) and shards each chunk's rows over the batch axes
(`groups` contiguous blocks). Rows are packed within their (chunk, group): a microbatch's bins
are [groups, bins_per_group] and stay on the shard of their rows, so packing moves no data
between devices. `Packing.row_bin` / `row_start` are per row (split with the other row arrays),
bin indices local to the row's group.
"""
from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

BIN_BUCKETS = 16     # at most this many distinct bin counts per rollout shape


@flax.struct.dataclass
class Packing:
  """Where each rollout row sits in its microbatch's bins: row_bin int32[N] (bin index within
  the row's group), row_start int32[N] (offset of its first prompt token in the bin);
  bins_per_group and groups are static (they fix the packed shape [groups * bins_per_group,
  capacity])."""
  row_bin: jax.Array
  row_start: jax.Array
  bins_per_group: int = flax.struct.field(pytree_node=False, default=1)
  groups: int = flax.struct.field(pytree_node=False, default=1)


def _first_fit_decreasing(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray,
                                                                       int]:
  """(bin, start) of each length packed first-fit decreasing into bins of `capacity`; the
  number of bins used."""
  bin_of = np.zeros(len(lengths), np.int32)
  start_of = np.zeros(len(lengths), np.int32)
  fill: list[int] = []
  for i in np.argsort(-lengths, kind="stable"):
    n = int(lengths[i])
    for b, used in enumerate(fill):
      if used + n <= capacity:
        break
    else:
      b = len(fill)
      fill.append(0)
    bin_of[i], start_of[i] = b, fill[b]
    fill[b] += n
  return bin_of, start_of, len(fill)


def plan(prompt_lengths_N: np.ndarray, response_lengths_N: np.ndarray, *, capacity: int,
         chunks: int, shards: int) -> Packing:
  """The packing of N rollout rows (host arrays): each row's real length prompt_length +
  response_length packed within its (chunk, group) (module docstring), bins per group the
  largest group's count rounded up to a multiple of ceil(rows_per_group / BIN_BUCKETS).
  `shards` is the number of batch shards (mesh data x fsdp); rows are grouped by shard only
  when each chunk's rows divide evenly over them."""
  prompt_lengths_N = np.asarray(prompt_lengths_N, np.int64)
  lengths_N = prompt_lengths_N + np.asarray(response_lengths_N, np.int64)
  n = len(lengths_N)
  if n % chunks:
    raise ValueError(f"packing: {n} rows do not divide into {chunks} chunks")
  if lengths_N.size and (lengths_N.max() > capacity or lengths_N.min() < 1):
    raise ValueError(f"packing: row lengths must lie in [1, {capacity}], got "
                     f"[{lengths_N.min()}, {lengths_N.max()}]")
  per_chunk = n // chunks
  groups = shards if shards > 0 and per_chunk % shards == 0 else 1
  per_group = per_chunk // groups
  row_bin = np.zeros(n, np.int32)
  row_start = np.zeros(n, np.int32)
  most = 1
  rows = np.arange(n)
  for chunk in range(chunks):
    in_chunk = rows[rows % chunks == chunk]             # in their in-chunk order
    for g in range(groups):
      members = in_chunk[g * per_group:(g + 1) * per_group]
      bins, starts, used = _first_fit_decreasing(lengths_N[members], capacity)
      row_bin[members], row_start[members] = bins, starts
      most = max(most, used)
  step = max(1, math.ceil(per_group / BIN_BUCKETS))
  bins_per_group = min(per_group, step * math.ceil(most / step))
  return Packing(row_bin=row_bin, row_start=row_start, bins_per_group=int(bins_per_group),
                 groups=int(groups))


def _pack_group(prompts_RP, prompt_lengths_R, responses_RM, response_lengths_R, row_bin_R,
                row_start_R, bins: int):
  """One group's rows -> (tokens, positions, segments) int32[bins, capacity] and the flat
  packed index int32[R, M] of the hidden state predicting each response token."""
  r, p = prompts_RP.shape
  m = responses_RM.shape[1]
  capacity = p + m
  seq_RL = jnp.concatenate([prompts_RP, responses_RM], axis=1).astype(jnp.int32)
  col_L = jnp.arange(capacity, dtype=jnp.int32)[None, :]
  # column c of [prompt block | response] holds compact index j (prompt tokens then response
  # tokens, no padding between) or nothing (prompt padding, response past its length)
  in_prompt = col_L < prompt_lengths_R[:, None]
  resp_t = col_L - p
  in_response = (resp_t >= 0) & (resp_t < response_lengths_R[:, None])
  compact_RL = jnp.where(in_prompt, col_L, prompt_lengths_R[:, None] + resp_t)
  real_RL = in_prompt | in_response
  flat_RL = row_bin_R[:, None] * capacity + row_start_R[:, None] + compact_RL
  dest_RL = jnp.where(real_RL, flat_RL, bins * capacity)          # out of range: dropped
  size = bins * capacity
  slot = jnp.arange(size, dtype=jnp.int32)
  tokens = jnp.zeros((size,), jnp.int32).at[dest_RL].set(seq_RL, mode="drop")
  # unused slots: their own segment 0 and increasing positions, so each attends to itself
  positions = (slot % capacity).at[dest_RL].set(compact_RL, mode="drop")
  row_id_RL = jnp.broadcast_to(jnp.arange(1, r + 1, dtype=jnp.int32)[:, None], (r, capacity))
  segments = jnp.zeros((size,), jnp.int32).at[dest_RL].set(row_id_RL, mode="drop")
  # response token t is predicted by compact index prompt_length - 1 + t (clamped into the row
  # for t past its length: garbage the loss masks)
  t_M = jnp.arange(m, dtype=jnp.int32)[None, :]
  last = jnp.maximum(prompt_lengths_R + response_lengths_R - 1, 0)[:, None]
  pred_RM = jnp.minimum(prompt_lengths_R[:, None] - 1 + t_M, last)
  gather_RM = row_bin_R[:, None] * capacity + row_start_R[:, None] + pred_RM
  shape = (bins, capacity)
  return tokens.reshape(shape), positions.reshape(shape), segments.reshape(shape), gather_RM


def pack(prompts_NP, prompt_lengths_N, responses_NM, response_lengths_N, row_bin_N, row_start_N,
         *, bins_per_group: int, groups: int):
  """The rows of one microbatch packed: (tokens, positions, segments) int32[groups,
  bins_per_group, P + M] and gather int32[groups, N / groups, M], the index into a group's
  flattened bins of the hidden state predicting each response token (`unpack_hidden`)."""
  n = prompts_NP.shape[0]
  split = lambda x: x.reshape(groups, n // groups, *x.shape[1:])    # noqa: E731
  fn = jax.vmap(lambda *a: _pack_group(*a, bins_per_group))
  return fn(*(split(jnp.asarray(x, jnp.int32)) for x in (
      prompts_NP, prompt_lengths_N, responses_NM, response_lengths_N, row_bin_N, row_start_N)))


def unpack_hidden(hidden_GBLD, gather_GRM):
  """Hidden states [groups, bins, capacity, D] -> [N, M, D]: for each row's response token t
  the packed hidden state that predicts it."""
  g, b, length, d = hidden_GBLD.shape
  flat = hidden_GBLD.reshape(g, b * length, d)
  out_GRMD = jax.vmap(lambda h, i: jnp.take(h, i, axis=0))(flat, gather_GRM)
  return out_GRMD.reshape(-1, *out_GRMD.shape[2:])


def useful_fraction(prompt_lengths_N, response_lengths_N, packing: Packing, capacity: int,
                    chunks: int) -> float:
  """Real tokens / packed positions computed (host): how full the bins are."""
  real = float(np.sum(prompt_lengths_N) + np.sum(response_lengths_N))
  slots = chunks * packing.groups * packing.bins_per_group * capacity
  return real / max(slots, 1)


__all__ = ["Packing", "plan", "pack", "unpack_hidden", "useful_fraction", "BIN_BUCKETS"]
