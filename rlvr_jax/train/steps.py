"""Pure train / eval steps: one masked LM loss for CPT and SFT, exact gradient accumulation.

A batch is a dict of arrays with a leading batch axis B:

  tokens       int32[B, L]   input tokens
  loss_mask    {0,1}[B, L]   weight of the *target* of each position (the token that position
                             predicts); optional, default all ones
  segment_ids  int32[B, L]   packed-document ids (attention never crosses them); optional
  positions    int32[B, L]   RoPE positions; optional (default: restart per segment)
  targets      int32[B, L]   optional explicit targets; without it the targets are the tokens
                             shifted by one: position t predicts tokens[t+1], weighted by
                             loss_mask[t], and a target in another segment never counts
  answer_mask  {0,1}[B, L]   eval only, optional: the targets that are answer tokens (inside the
                             reply's \\boxed{}); the eval step also sums their hits and NLL

loss = Σ NLL over valid targets / number of valid targets in the GLOBAL batch. With k
microbatches the numerator, the valid count and the gradient of the numerator are summed by
`lax.scan` and divided once (`accumulate_grads`, shared with the RL update), so the result
equals the full batch up to float rounding.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rlvr_jax import sharding
from rlvr_jax.model.config import ModelConfig
from rlvr_jax.model.transformer import forward
from rlvr_jax.train.optim import Optimizer
from rlvr_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
BATCH_KEYS = ("tokens", "loss_mask", "segment_ids", "positions", "targets")
EVAL_KEYS = BATCH_KEYS + ("answer_mask",)


def select_batch(batch: dict, keys: tuple[str, ...] = BATCH_KEYS) -> dict:
  """The arrays a step reads (`keys`; other keys, e.g. metadata strings, are dropped)."""
  if "tokens" not in batch:
    raise ValueError(f"a batch must hold 'tokens' (int32[B, L]); got keys {sorted(batch)}")
  return {k: batch[k] for k in keys if k in batch}


# ---------------------------------------------------------------------------------- the loss
def lm_inputs(batch: Batch):
  """(inputs, positions, segment_ids, targets, weights) of a batch, each [B, T].

  Without `targets`, T = L - 1: inputs drop the last token and targets are tokens[:, 1:].
  """
  tokens = jnp.asarray(batch["tokens"], jnp.int32)
  mask = batch.get("loss_mask")
  mask = jnp.ones(tokens.shape, jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
  seg, pos = batch.get("segment_ids"), batch.get("positions")
  if "targets" in batch:
    return tokens, pos, seg, jnp.asarray(batch["targets"], jnp.int32), mask
  weights = mask[:, :-1]
  if seg is not None:
    weights = weights * (seg[:, 1:] == seg[:, :-1]).astype(jnp.float32)
  return (tokens[:, :-1], None if pos is None else pos[:, :-1],
          None if seg is None else seg[:, :-1], tokens[:, 1:], weights)


def _token_terms(cfg: ModelConfig, params: Any, batch: Batch, accuracy: bool):
  """Per-target terms [B, T]: weights, NLL, logsumexp and (accuracy=True) argmax hits."""
  inputs, pos, seg, targets_BT, w_BT = lm_inputs(batch)
  valid = w_BT != 0
  targets_BT = jnp.where(valid, targets_BT, 0)      # masked targets may hold any id (padding)
  logits_BTV = forward(cfg, params, inputs, positions=pos, segment_ids=seg)
  lse_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
  target_logit_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
  hit_BT = (jnp.argmax(logits_BTV, -1) == targets_BT) if accuracy else None
  return w_BT, lse_BT - target_logit_BT, lse_BT, hit_BT


def _masked_sum(x_BT, w_BT):
  # where() rather than a product so a masked-out non-finite term cannot poison the sum;
  # a non-finite *weight* still propagates (and makes the step skip).
  return jnp.sum(jnp.where(w_BT != 0, x_BT * w_BT, 0.0))


def loss_sums(cfg: ModelConfig, params: Any, batch: Batch, z_loss: float = 0.0,
              accuracy: bool = True) -> dict:
  """Unnormalised sums over the batch: `nll` (Σ w·NLL), `z` (Σ w·logsumexp²), `count` (Σ w),
  `correct` (Σ w·[argmax == target]; 0 when accuracy=False, which saves a pass over the
  logits). The objective is (nll + z_loss·z) / count."""
  w_BT, nll_BT, lse_BT, hit_BT = _token_terms(cfg, params, batch, accuracy)
  zero = jnp.zeros((), jnp.float32)
  return {"nll": _masked_sum(nll_BT, w_BT),
          "z": _masked_sum(lse_BT ** 2, w_BT) if z_loss else zero,
          "count": jnp.sum(w_BT),
          "correct": _masked_sum(hit_BT.astype(jnp.float32), w_BT) if accuracy else zero}


def split_microbatches(batch: Batch, k: int, mesh: Mesh | None = None) -> Batch:
  """[B, ...] -> [k, B/k, ...] taking rows j, j+k, j+2k, ... into microbatch j.

  Strided rows keep every microbatch spread over all (data, fsdp) shards without moving data
  when B/k is a multiple of the shard count.
  """
  def split(x):
    b = x.shape[0]
    x = jnp.swapaxes(x.reshape(b // k, k, *x.shape[1:]), 0, 1)
    if mesh is not None:
      spec = P(None, sharding.BATCH_AXES, *([None] * (x.ndim - 2)))
      x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
    return x
  return jax.tree.map(split, batch)


def accumulate_grads(sum_fn: Callable, params: Any, batch: Batch, *, microbatches: int = 1,
                     mesh: Mesh | None = None, denom_key: str = "denom",
                     merge: Callable | None = None):
  """(grads, sums) of an objective that is a sum over rows divided by a global denominator.

  sum_fn(params, microbatch) -> (objective_sum, sums): the scalar to differentiate (a SUM over
  the microbatch's rows) and a dict of scalars, among them sums[denom_key], the microbatch's
  share of the denominator. The batch is split into `microbatches` strided microbatches
  (`split_microbatches`), their gradients and sums are added in float32 by `lax.scan`, and the
  gradient is divided once by max(Σ denominators, 1): grads = ∇ Σ objective_sum / Σ denom, in the
  parameters' dtype, equal to the full batch up to float rounding. `merge(a, b)` combines two
  sums dicts (default: add every leaf; pass one for maxima, e.g. of non-negative quantities, as
  the scan starts from zeros). Returns (grads, the combined sums).
  """
  grad_fn = jax.grad(sum_fn, has_aux=True)
  merge = merge or (lambda a, b: jax.tree.map(jnp.add, a, b))
  if microbatches == 1:
    grads, sums = grad_fn(params, batch)
    grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
  else:
    mbs = split_microbatches(batch, microbatches, mesh)

    def body(carry, mb):
      g_acc, s_acc = carry
      g, s = grad_fn(params, mb)
      g_acc = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), g_acc, g)
      return (g_acc, merge(s_acc, s)), None

    zeros_g = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    sums_shape = jax.eval_shape(sum_fn, params, jax.tree.map(lambda x: x[0], mbs))[1]
    zeros_s = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), sums_shape)
    (grads, sums), _ = jax.lax.scan(body, (zeros_g, zeros_s), mbs)
  denom = jnp.maximum(sums[denom_key], 1.0)
  grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grads, params)
  return grads, sums


def compute_grads(cfg: ModelConfig, params: Any, batch: Batch, *, microbatches: int = 1,
                  z_loss: float = 0.0, mesh: Mesh | None = None):
  """(grads of the normalised objective, sums) over the whole batch, scanning k microbatches.

  grads = ∇(Σ nll + z_loss·Σ z) / Σ count, in the parameters' dtype; sums as in `loss_sums`
  (totals over the batch).
  """
  def objective(p, mb):
    sums = loss_sums(cfg, p, mb, z_loss, accuracy=False)
    return sums["nll"] + z_loss * sums["z"], sums
  return accumulate_grads(objective, params, batch, microbatches=microbatches, mesh=mesh,
                          denom_key="count")


# ---------------------------------------------------------------------------------- steps
def apply_update_if_finite(params: Any, opt_state: Any, grads: Any, loss: jax.Array,
                           optimizer: Optimizer, *, ok: jax.Array | bool = True
                           ) -> tuple[Any, Any, Metrics]:
  """One optimizer update, applied only when the loss, the gradient norm (and `ok`) are finite;
  otherwise params and optimizer state are returned unchanged (in-graph, no host round trip).

  Returns (params, opt_state, stats) with the scalars the run loop's health guard reads:
  grad_norm (before clipping), param_norm (after the update), update_ratio = ‖Δθ‖ / ‖θ‖ with θ
  the params before the update (the relative size of the applied update; 0 when skipped) and
  skipped (0 or 1).
  """
  grad_norm = optax.tree.norm(grads)
  ok = ok & jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updates, new_opt_state = optimizer.tx.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
  params_out = jax.tree.map(keep, new_params, params)
  update_norm = jnp.where(ok, optax.tree.norm(updates), 0.0)
  stats = {"grad_norm": grad_norm, "param_norm": optax.tree.norm(params_out),
           "update_ratio": update_norm / jnp.maximum(optax.tree.norm(params), 1e-12),
           "skipped": (~ok).astype(jnp.int32)}
  return params_out, jax.tree.map(keep, new_opt_state, opt_state), stats


def train_step(state: TrainState, batch: Batch, *, cfg: ModelConfig, optimizer: Optimizer,
               microbatches: int = 1, z_loss: float = 0.0,
               mesh: Mesh | None = None) -> tuple[TrainState, Metrics]:
  """One optimizer update. Pure: jit it (see `jit_train_step`) or call it inside jit.

  A non-finite loss or gradient norm leaves params and optimizer state unchanged (in-graph) and
  sets metrics["skipped"] = 1; `step` and the RNG advance either way (a batch was consumed).
  Metrics (scalars): loss (mean NLL over valid targets), grad_norm (before clipping),
  param_norm, update_ratio (`apply_update_if_finite`), lr (of this update), num_tokens (valid
  targets), skipped, and z_loss when enabled.
  """
  grads, sums = compute_grads(cfg, state.params, batch, microbatches=microbatches,
                              z_loss=z_loss, mesh=mesh)
  denom = jnp.maximum(sums["count"], 1.0)
  loss = sums["nll"] / denom
  ok = jnp.isfinite(sums["z"]) if z_loss else True
  params, opt_state, stats = apply_update_if_finite(state.params, state.opt_state, grads, loss,
                                                   optimizer, ok=ok)
  next_key, _step_key = jax.random.split(state.key())  # _step_key: for dropout, none yet
  new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                         rng=jax.random.key_data(next_key))
  metrics = {"loss": loss, **stats,
             "lr": jnp.asarray(optimizer.learning_rate(state.opt_state), jnp.float32),
             "num_tokens": sums["count"]}
  if z_loss:
    metrics["z_loss"] = sums["z"] / denom
  return new_state, metrics


def eval_step(params: Any, batch: Batch, *, cfg: ModelConfig) -> Metrics:
  """Sums for held-out metrics: nll, count, correct (teacher-forced argmax hits on valid
  targets). Sum them over eval batches; loss = nll / count, accuracy = correct / count.
  With batch["answer_mask"] also answer_nll, answer_count and answer_correct over the answer
  targets alone (answer accuracy = answer_correct / answer_count)."""
  w_BT, nll_BT, _, hit_BT = _token_terms(cfg, params, batch, accuracy=True)
  hit_BT = hit_BT.astype(jnp.float32)
  sums = {"nll": _masked_sum(nll_BT, w_BT), "count": jnp.sum(w_BT),
          "correct": _masked_sum(hit_BT, w_BT)}
  if "answer_mask" in batch:
    a_BT = jnp.asarray(batch["answer_mask"], jnp.float32)
    a_BT = a_BT if "targets" in batch else a_BT[:, :-1]
    a_BT = a_BT * (w_BT != 0)
    sums.update(answer_nll=_masked_sum(nll_BT, a_BT), answer_count=jnp.sum(a_BT),
                answer_correct=_masked_sum(hit_BT, a_BT))
  return sums


# ---------------------------------------------------------------------------------- jitting
def check_batch(batch_size: int, mesh: Mesh, microbatches: int = 1, what: str = "batch_size"):
  """Fails before compiling when the batch cannot be split into microbatches and over the mesh."""
  if microbatches < 1:
    raise ValueError(f"microbatches={microbatches} must be >= 1")
  if batch_size % microbatches:
    raise ValueError(f"{what}={batch_size} is not a multiple of microbatches={microbatches}; "
                     f"make {what} a multiple of {microbatches} or change microbatches")
  sharding.check_divisible(batch_size // microbatches, mesh,
                           what=f"{what}/microbatches = {batch_size}/{microbatches}")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis over (data, fsdp); a prefix for every leaf of a batch dict."""
  return NamedSharding(mesh, P(sharding.BATCH_AXES))


def jit_train_step(cfg: ModelConfig, optimizer: Optimizer, mesh: Mesh, shardings: TrainState, *,
                   microbatches: int = 1, z_loss: float = 0.0) -> Callable:
  """`step(state, batch) -> (state, metrics)` jitted over the mesh: explicit in/out shardings,
  the state donated, metrics replicated. Call with batches already placed by `batch_sharding`
  (or host arrays on one process)."""
  fn = functools.partial(train_step, cfg=cfg, optimizer=optimizer, microbatches=microbatches,
                         z_loss=z_loss, mesh=mesh)
  jitted = jax.jit(fn, in_shardings=(shardings, batch_sharding(mesh)),
                   out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=(0,))
  return sharding.under_mesh(jitted, mesh)


def jit_eval_step(cfg: ModelConfig, mesh: Mesh, param_shardings: Any) -> Callable:
  """`eval(params, batch) -> sums` jitted over the mesh (params not donated)."""
  jitted = jax.jit(functools.partial(eval_step, cfg=cfg),
                   in_shardings=(param_shardings, batch_sharding(mesh)),
                   out_shardings=sharding.replicated(mesh))
  return sharding.under_mesh(jitted, mesh)
