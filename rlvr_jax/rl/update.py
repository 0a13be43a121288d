r"""The update phase of the RL step: log-probs, the policy loss, accumulated gradients, updates.

`update_phase`: reference log-probs (frozen initial model; when kl_coef != 0 or log_kl), then
`epochs` passes over `minibatches` strided minibatches of the rollout rows, one optimizer update
each (`lax.scan`). Each minibatch's gradient is accumulated exactly over `microbatches` by
train.steps.accumulate_grads: every microbatch returns the gradient of its loss SUM
(rl.policy_loss_sums) and its sums, denominator included, and the gradient is divided once by
the minibatch's denominator. The update goes through train.steps.apply_update_if_finite: a
minibatch whose loss or gradient norm is not finite leaves params and optimizer state unchanged
(counted in `skipped`).

Sampler/trainer mismatch. The sampler's token log-probs (its kernels, KV cache, bf16) differ from
the trainer's for the same params, which makes training silently off-policy. Every step measures
it over ALL rollout rows at the sampling params (state.params when update_phase starts), over
every valid response token (loss-masked rows included): `mismatch/*` (in rl/step.py). The
trainer's log-probs there come for free from the first minibatch's forward when minibatches = 1
(every row, every microbatch at the sampling params); otherwise from one extra forward-only pass
over all rows, chunked into minibatches x microbatches like the reference forward (memory of one
microbatch), run when old_logprobs="trainer" (it needs them) or log_mismatch (else mismatch/* are
NaN). With old_logprobs="trainer" and epochs = minibatches = 1 the update's own forward supplies
them too (old = stop_gradient(logp)): no extra pass. Truncated importance sampling (settings.tis =
"token" | "sequence", needs old_logprobs="trainer"; Yao et al. 2025, verl's TIS): each row's pg
terms are weighted by losses.tis_weights(trainer_old, sampler, cap=tis_cap).

Log-probs of the response under the policy are recomputed on the sequence [prompt block P |
response M]: prompt padding is segment 0 (never attended), response token t sits at position
prompt_length + t (the sampler's positions), and the hidden state that predicts response token t
is gathered (position prompt_length - 1 for t = 0, else the previous response token), so the
output head runs on M positions only.

Metrics: those of the update in rl/step.py's docstring (policy/*, pg_loss, loss, grad_norm, ...,
mismatch/*).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from rlvr_jax import sharding
from rlvr_jax.model import transformer
from rlvr_jax.model.config import ModelConfig
from rlvr_jax.rl import losses, packing as packing_lib
from rlvr_jax.rl.spec import Metrics, RLSpec, Rollout, Scored
from rlvr_jax.train import steps as train_steps
from rlvr_jax.train.state import TrainState

MISMATCH_BAND = (0.9, 1.1)     # mismatch/ratio_out_frac: share of ratios outside this band
_MAX_KEYS = ("ratio_max", "ratio_dev")   # microbatch sums combined by max (all >= 0)


def sequence_inputs(prompts_NP, prompt_lengths_N, responses_NM):
  """(tokens, positions, segment_ids, gather index) of the sequences [prompt block | response].

  Prompt padding is segment 0 (never attended by real tokens); response token t sits at
  position prompt_length + t. gather_NM[r, t] is the index whose hidden state predicts response
  token t: prompt_length - 1 for t = 0, else P + t - 1.
  """
  n, p = prompts_NP.shape
  m = responses_NM.shape[1]
  tokens = jnp.concatenate([prompts_NP, responses_NM], axis=1).astype(jnp.int32)
  pidx = jnp.arange(p, dtype=jnp.int32)[None, :]
  ridx = jnp.arange(m, dtype=jnp.int32)[None, :]
  in_prompt_NP = pidx < prompt_lengths_N[:, None]
  positions = jnp.concatenate([jnp.broadcast_to(pidx, (n, p)),
                               prompt_lengths_N[:, None] + ridx], axis=1)
  segments = jnp.concatenate([in_prompt_NP.astype(jnp.int32), jnp.ones((n, m), jnp.int32)], 1)
  gather_NM = jnp.where(ridx == 0, prompt_lengths_N[:, None] - 1, p + ridx - 1)
  return tokens, positions, segments, gather_NM


def response_logprobs(cfg: ModelConfig, params, prompts_NP, prompt_lengths_N, responses_NM,
                      temperature: float = 1.0):
  """(logp float32[N, M], entropy float32[N, M]) of each response token under `params`, with the
  sampler's definition (softmax(logits / temperature)); values past a row's length are garbage
  to be masked."""
  tokens, positions, segments, gather_NM = sequence_inputs(prompts_NP, prompt_lengths_N,
                                                          responses_NM)
  hidden_NLD, _ = transformer.hidden_states(cfg, params, tokens, positions, segments)
  hidden_NMD = jnp.take_along_axis(hidden_NLD, gather_NM[:, :, None], axis=1)
  logits_NMV = transformer.logits_from_hidden(cfg, params, hidden_NMD)
  return losses.token_logprobs_and_entropy(logits_NMV, responses_NM, temperature)


def packed_response_logprobs(cfg: ModelConfig, params, prompts_NP, prompt_lengths_N, responses_NM,
                             response_lengths_N, row_bin_N, row_start_N, *, bins_per_group: int,
                             groups: int, temperature: float = 1.0, mesh: Mesh | None = None):
  """`response_logprobs` over the rows packed into bins (rl/packing.py): the same values on
  tokens < response_lengths (up to float rounding), computed on groups x bins_per_group
  sequences instead of N."""
  tokens, positions, segments, gather_GRM = packing_lib.pack(
      prompts_NP, prompt_lengths_N, responses_NM, response_lengths_N, row_bin_N, row_start_N,
      bins_per_group=bins_per_group, groups=groups)
  if mesh is not None and groups > 1:
    # bins stay on the shard of their rows (groups = the batch shards)
    tokens, positions, segments = (
        jax.lax.with_sharding_constraint(x, sharding.data_sharding(mesh, x.ndim))
        for x in (tokens, positions, segments))
  g, b, length = tokens.shape
  flat = lambda x: x.reshape(g * b, length)        # noqa: E731
  hidden, _ = transformer.hidden_states(cfg, params, flat(tokens), flat(positions),
                                        flat(segments))
  hidden_NMD = packing_lib.unpack_hidden(hidden.reshape(g, b, length, -1), gather_GRM)
  logits_NMV = transformer.logits_from_hidden(cfg, params, hidden_NMD)
  return losses.token_logprobs_and_entropy(logits_NMV, responses_NM, temperature)


def _split(tree, k: int, mesh):
  if k == 1:
    return jax.tree.map(lambda x: x[None], tree)
  return train_steps.split_microbatches(tree, k, mesh)


def update_phase(state: TrainState, ref_params, rollout: Rollout, scored: Scored, prompts_BP,
                 prompt_lengths_B, packing: packing_lib.Packing | None = None, *, spec: RLSpec,
                 mesh: Mesh | None = None) -> tuple[TrainState, Metrics]:
  """`epochs` x `minibatches` optimizer updates on the clipped policy-gradient loss.

  rollout: the B * G trained rows; scored: their advantages and loss mask; prompts: the B
  prompts; packing: where each row sits in its microbatch's bins (rl/packing.py's `plan`, for
  these rows and these minibatches x microbatches), or None for one padded sequence per row.
  Returns the new state (step + 1) and the update's metrics (rl/step.py's docstring).
  """
  s, cfg, opt = spec.settings, spec.cfg, spec.optimizer
  b = prompts_BP.shape[0]
  n = rollout.tokens.shape[0]
  if n != b * s.group_size:
    raise ValueError(f"update_phase: {n} rollout rows for {b} prompts x group_size "
                     f"{s.group_size}")
  k_mb, k_micro = s.minibatches, s.microbatches
  if n % (k_mb * k_micro):
    raise ValueError(f"the rollout's {n} rows (prompts x group_size) do not divide into "
                     f"minibatches={k_mb} x microbatches={k_micro}; change them so their product "
                     f"divides {n}")
  if s.tis != "none" and s.old_logprobs != "trainer":
    raise ValueError(f"tis={s.tis!r} needs old_logprobs='trainer' (the weights correct from "
                     f"the sampler to the trainer's old policy), got old_logprobs="
                     f"{s.old_logprobs!r}")
  rows = {"prompts": jnp.repeat(jnp.asarray(prompts_BP, jnp.int32), s.group_size, 0),
          "prompt_lengths": jnp.repeat(jnp.asarray(prompt_lengths_B, jnp.int32), s.group_size, 0),
          "tokens": rollout.tokens, "sampler_logp": jnp.asarray(rollout.logprobs, jnp.float32),
          "advantages": scored.advantages, "mask": scored.loss_mask,
          "valid": rollout.valid_mask()}
  chunks = k_mb * k_micro
  input_keys = ("prompts", "prompt_lengths", "tokens")
  if packing is not None:
    rows.update(lengths=rollout.lengths, pack_bin=packing.row_bin, pack_start=packing.row_start)
    input_keys += ("lengths", "pack_bin", "pack_start")
  inputs = {k: rows[k] for k in input_keys}

  def logprobs(params, mb):
    """(logp, entropy) float32[rows, M] of this microbatch's responses (packed or padded)."""
    if packing is None:
      return response_logprobs(cfg, params, mb["prompts"], mb["prompt_lengths"], mb["tokens"],
                               s.temperature)
    return packed_response_logprobs(
        cfg, params, mb["prompts"], mb["prompt_lengths"], mb["tokens"], mb["lengths"],
        mb["pack_bin"], mb["pack_start"], bins_per_group=packing.bins_per_group,
        groups=packing.groups, temperature=s.temperature, mesh=mesh)

  def all_rows_logprobs(params):
    """Log-probs of every row under `params`, one microbatch at a time (memory), rows back in
    their order; forward only."""
    def fn(mb):
      return logprobs(params, mb)[0]
    if chunks == 1:
      return jax.lax.stop_gradient(fn(inputs))
    return jax.lax.stop_gradient(_unsplit(jax.lax.map(fn, _split(inputs, chunks, mesh)), chunks))

  with_ref = s.kl_coef != 0 or s.log_kl
  if with_ref:
    rows["ref_logp"] = all_rows_logprobs(ref_params)
  # The trainer's log-probs under the sampling params (state.params now), for every row. The
  # first minibatch's forward has them when it holds every row (minibatches == 1): for the
  # mismatch metrics, and as old log-probs when there is no later update to keep them for.
  # Otherwise one extra forward-only pass (what it costs: module docstring).
  single_update = s.epochs * k_mb == 1
  trainer_pass = ((s.old_logprobs == "trainer" and not single_update)
                  or (s.log_mismatch and k_mb > 1))
  if trainer_pass:
    rows["trainer_logp"] = all_rows_logprobs(state.params)
  have_mismatch = trainer_pass or k_mb == 1

  def micro_sums(params, mb):
    """The loss SUM of this microbatch (rl.policy_loss_sums, to differentiate) and its sums:
    the loss's (denominator included), the loss itself and the mismatch sums."""
    logp, ent = logprobs(params, mb)
    # the trainer's log-probs at the sampling params (see trainer_pass above)
    pre_NM = mb["trainer_logp"] if "trainer_logp" in mb else jax.lax.stop_gradient(logp)
    old_NM = pre_NM if s.old_logprobs == "trainer" else mb["sampler_logp"]
    is_weights = None
    if s.tis != "none":
      is_weights = losses.tis_weights(pre_NM, mb["sampler_logp"], mb["valid"], level=s.tis,
                                      cap=s.tis_cap)
    loss_sum, sums = losses.policy_loss_sums(
        logp, old_NM, mb["advantages"], mb["mask"], clip_low=s.clip_low,
        clip_high=s.clip_high, dual_clip=s.dual_clip, ref_logprobs=mb.get("ref_logp"),
        kl_coef=s.kl_coef, kl_estimator=s.kl_estimator, agg=s.agg,
        entropy=ent if s.entropy_coef else None, entropy_coef=s.entropy_coef,
        is_weights=is_weights)
    return loss_sum, {**sums, "loss": jax.lax.stop_gradient(loss_sum),
                      "mismatch": _mismatch_sums(pre_NM, mb["sampler_logp"], mb["valid"], s.tis,
                                                 s.tis_cap)}

  def merge(a, b):
    """The sums of two disjoint microbatches: added, maxima maxed, mismatch merged."""
    out = {k: jnp.maximum(a[k], b[k]) if k in _MAX_KEYS else a[k] + b[k]
           for k in a if k != "mismatch"}
    return {**out, "mismatch": _merge_mismatch(a["mismatch"], b["mismatch"])}

  def minibatch_update(carry, mb):
    params, opt_state = carry
    grads, sums = train_steps.accumulate_grads(micro_sums, params, mb, microbatches=k_micro,
                                               mesh=mesh, merge=merge)
    denom = jnp.maximum(sums["denom"], 1.0)
    loss = sums["loss"] / denom
    lr = jnp.asarray(opt.learning_rate(opt_state), jnp.float32)
    params, opt_state, stats = train_steps.apply_update_if_finite(params, opt_state, grads,
                                                                  loss, opt)
    out = {k: sums[k] for k in ("tokens", "kl", "clip", "dual_clip", "ratio", *_MAX_KEYS,
                                "mismatch")}
    return (params, opt_state), {**out, **stats, "loss": loss, "pg_loss": sums["pg"] / denom,
                                 "lr": lr}

  carry = (state.params, state.opt_state)
  if s.epochs * k_mb == 1:
    (params, opt_state), per = minibatch_update(carry, rows)
    per = jax.tree.map(lambda x: x[None], per)
  else:
    minibatches = _split(rows, k_mb, mesh)
    if s.epochs > 1:
      minibatches = jax.tree.map(
          lambda x: jnp.broadcast_to(x[None], (s.epochs, *x.shape)).reshape(
              s.epochs * k_mb, *x.shape[1:]), minibatches)
    (params, opt_state), per = jax.lax.scan(minibatch_update, carry, minibatches)

  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  per_token = lambda k: jnp.sum(per[k]) / jnp.maximum(jnp.sum(per["tokens"]), 1.0)  # noqa: E731
  metrics = {"loss": jnp.mean(per["loss"]), "grad_norm": jnp.mean(per["grad_norm"]),
             "param_norm": per["param_norm"][-1], "update_ratio": jnp.max(per["update_ratio"]),
             "lr": per["lr"][0], "skipped": jnp.sum(per["skipped"]),
             "num_updates": jnp.asarray(s.epochs * k_mb, jnp.int32),
             "policy/clip_frac": per_token("clip"),
             "policy/dual_clip_frac": per_token("dual_clip"),
             "policy/ratio_mean": per_token("ratio"),
             "policy/ratio_max": jnp.max(per["ratio_max"]),
             "policy/ratio_dev_first": per["ratio_dev"][0],
             "policy/kl": per_token("kl"),
             "pg_loss": jnp.mean(per["pg_loss"])}
  if not with_ref:
    metrics["policy/kl"] = jnp.asarray(jnp.nan, jnp.float32)
  # The first epoch's minibatches hold every row once, at the sampling params' log-probs.
  first_epoch = [jax.tree.map(lambda x: x[i], per["mismatch"]) for i in range(k_mb)]
  mismatch = _mismatch_metrics(functools.reduce(_merge_mismatch, first_epoch), s.tis)
  if not have_mismatch:     # later minibatches saw updated params: no all-rows measurement
    mismatch = {k: jnp.full((), jnp.nan, jnp.float32) for k in mismatch}
  metrics.update(mismatch)
  return new_state, metrics


def _mismatch_sums(trainer_NM, sampler_NM, valid_NM, tis: str, tis_cap: float) -> Metrics:
  """Sums over these rows (and one max) of the trainer/sampler log-prob gap d = trainer -
  sampler on valid tokens: additive over disjoint row sets, so microbatches and minibatches
  combine exactly (`_merge_mismatch`) before `_mismatch_metrics` divides."""
  f32 = jnp.float32
  valid_b_NM = valid_NM > 0
  d_NM = jnp.where(valid_b_NM, trainer_NM - sampler_NM, 0.0)
  abs_NM = jnp.abs(d_NM)
  ratio_NM = jnp.exp(d_NM)
  lo, hi = MISMATCH_BAND
  out_NM = valid_b_NM & ((ratio_NM < lo) | (ratio_NM > hi))
  has_N = jnp.any(valid_b_NM, axis=1)
  seq_N = jnp.sum(d_NM, axis=1)
  sums = {"tokens": jnp.sum(valid_b_NM.astype(f32)), "rows": jnp.sum(has_N.astype(f32)),
          "abs_sum": jnp.sum(abs_NM), "abs_max": jnp.max(abs_NM, initial=0.0),
          "out": jnp.sum(out_NM.astype(f32)),
          "seq_abs_sum": jnp.sum(jnp.where(has_N, jnp.abs(seq_N), 0.0))}
  if tis != "none":
    w = losses.tis_weights(trainer_NM, sampler_NM, valid_NM, level=tis, cap=tis_cap)
    raw, counted = (ratio_NM, valid_b_NM) if tis == "token" else (jnp.exp(seq_N), has_N)
    sums["tis_sum"] = jnp.sum(jnp.where(counted, w, 0.0))
    sums["tis_clipped"] = jnp.sum((counted & (raw > tis_cap)).astype(f32))
    sums["tis_count"] = jnp.sum(counted.astype(f32))
  return jax.lax.stop_gradient(sums)


def _merge_mismatch(a: Metrics, b: Metrics) -> Metrics:
  """`_mismatch_sums` of the union of two disjoint row sets."""
  return {k: jnp.maximum(a[k], b[k]) if k == "abs_max" else a[k] + b[k] for k in a}


def _mismatch_metrics(sums: Metrics, tis: str) -> Metrics:
  """mismatch/* (rl/step.py's docstring) from `_mismatch_sums`; 0 when no token is valid."""
  per_token = lambda k: sums[k] / jnp.maximum(sums["tokens"], 1.0)   # noqa: E731
  out = {"mismatch/logp_abs_mean": per_token("abs_sum"),
         "mismatch/logp_abs_max": sums["abs_max"],
         "mismatch/ratio_out_frac": per_token("out"),
         "mismatch/seq_logratio_abs_mean": sums["seq_abs_sum"] / jnp.maximum(sums["rows"], 1.0)}
  if tis != "none":
    count = jnp.maximum(sums["tis_count"], 1.0)
    out["mismatch/tis_weight_mean"] = sums["tis_sum"] / count
    out["mismatch/tis_clipped_frac"] = sums["tis_clipped"] / count
  return out


def _unsplit(x_KbM, k: int):
  """Inverse of the strided split: [k, N/k, ...] -> [N, ...] (row j*k + i from [i, j])."""
  if k == 1:
    return x_KbM[0]
  kk, nb = x_KbM.shape[:2]
  return jnp.swapaxes(x_KbM, 0, 1).reshape(kk * nb, *x_KbM.shape[2:])


__all__ = ["update_phase", "sequence_inputs", "response_logprobs", "packed_response_logprobs",
           "MISMATCH_BAND"]
