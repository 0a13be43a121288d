r"""The RL step: rollout → rewards → advantages → policy-gradient updates, pure and jittable.

    spec = RLSpec(cfg=cfg, optimizer=opt, settings=RLSettings(group_size=8, ...),
                  rewards=RewardSpec(weights={"boxed_answer_match": 1.0}, options={...}))
    state, metrics = rl_step(state, ref_params, batch, key, spec=spec)     # inside jit
    step = jit_rl_step(spec, mesh, state_shardings)                        # fused, sharded
    phases = jit_rl_phases(spec, mesh, state_shardings)                    # sample / score / update

A batch is a dict of device arrays with B prompts on the leading axis:
  prompt_tokens       int32[B, P]  right-padded prompts (pad = settings.pad_id)
  prompt_lengths      int32[B]
  answer_tokens       int32[B, A]  token ids of the label the reward is computed against,
                                   right-padded with -1 (needed by label rewards)
  true_answer_tokens  int32[B, A'] optional: the ground-truth label (reward/true_mean,
                                   reward/agreement); without it those metrics are NaN
  host_reward         float32[B*V] with RewardSpec.host_verifier: the boxed-answer reward of
                                   every sampled row checked on the host (`host_rewards`),
                                   used in place of the in-graph token comparison
  host_true_reward    float32[B*V] optional: the same against the true labels

The three phases (each a pure function; `rl_step` composes them):
1. `sample_phase`: the in-graph sampler (prefill + decode, KV cache) draws V samples per prompt
   (V = settings.vote_samples, or G = group_size) at the rollout temperature; the rollout keeps
   the sampler's per-token logprobs / entropy / self-certainty.
2. `score_phase`: rewards in-graph on the rollout (the weighted sum of `RewardSpec.weights`,
   optionally through a noise model); the ground-truth reward `boxed_answer_match` against
   `true_answer_tokens`; for majority vote the pseudo-label of each prompt is the most common
   boxed answer among its V samples and the first G samples are kept and scored against it
   (V = G: votes within the group). Then the advantages (rl.compute_advantages) and the loss
   mask: valid response tokens, times the nonzero-variance mask of the groups when
   settings.dynamic_sampling is "mask" or "resample" (groups whose rewards are all equal are
   dropped from the loss; with "resample" the run loop first refills the batch with such groups
   from up to `resample_rounds` further prompt batches, DAPO-style, through `select_groups`).
3. `update_phase`: reference log-probs (frozen initial model; when kl_coef != 0 or log_kl), then
   `epochs` passes over `minibatches` strided minibatches of the rollout rows, one optimizer
   update each (`lax.scan`), each minibatch's gradient accumulated exactly over `microbatches`
   (train.steps.accumulate_grads: each microbatch's loss is a sum over its rows with a
   denominator, rl.policy_loss_sums; the sums add up and the gradient is divided once). The "old"
   log-probs are the sampler's (settings.old_logprobs="sampler"), so in the first minibatch the
   importance ratio is 1 up to the sampler/trainer mismatch (`policy/ratio_dev_first` = max
   |ratio - 1| there), or the trainer's own log-probs under the sampling params
   (old_logprobs="trainer", as verl recomputes them), so the first ratio is 1 up to f32 rounding
   whatever the sampler computed. A minibatch whose loss or gradient norm is not finite leaves
   params and optimizer state unchanged (counted in `skipped`).

Metrics (scalars): reward/mean, reward/std, reward/true_mean, reward/agreement (share of trained
samples where (reward > 0.5) equals the ground truth; for binary rewards the two agree),
reward/true_corr and reward/true_group_corr (Pearson correlation of reward and ground truth,
over the batch and within groups; see `reward_fidelity`),
reward/zero_var_frac, response/length_mean, response/clip_frac (no stop token within
max_new_tokens), policy/entropy (mean token entropy of the rollout policy over valid tokens),
policy/kl (mean of the configured estimator over loss tokens), policy/clip_frac,
policy/dual_clip_frac, policy/ratio_mean, policy/ratio_max, policy/ratio_dev_first, pg_loss,
loss, grad_norm (pre-clip, mean over updates), param_norm (after the last update),
update_ratio (largest ‖Δθ‖/‖θ‖ of the step's updates), lr (of the first update), skipped
(updates skipped as non-finite), num_updates. Mismatch (d = logp_trainer - logp_sampler at the
sampling params, over the valid tokens of all rows): mismatch/logp_abs_mean (mean |d|),
mismatch/logp_abs_max, mismatch/ratio_out_frac (share of tokens with exp(d) outside
[0.9, 1.1]), mismatch/seq_logratio_abs_mean (mean over rows with a valid token of |sum_t d|);
with tis on, mismatch/tis_weight_mean and mismatch/tis_clipped_frac (share whose exp(d) or
exp(sum_t d) exceeds tis_cap), over tokens ("token") or rows with a valid token ("sequence").

The modules: rl/rollout.py (Rollout), rl/spec.py (RLSettings, RewardSpec, RLSpec, Scored),
rl/score.py (the score phase, dynamic sampling's `select_groups`, `host_rewards`), rl/update.py
(the update phase, the sampler/trainer mismatch), rl/packing.py (the update on rows packed by
their sampled lengths, rl.pack_update); this module the sample phase, the composed
step and the jitted step / phases. Every name is re-exported here.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
from jax.sharding import Mesh

from rlvr_jax import sampling, sharding
from rlvr_jax.rl.score import (FIDELITY_METRICS, host_rewards, reward_fidelity, score_phase,
                               select_groups)
from rlvr_jax.rl.spec import (DYNAMIC_SAMPLING, MAJORITY, OLD_LOGPROBS, Batch, Metrics,
                              RewardSpec, RLSettings, RLSpec, Rollout, Scored, close_brace_ids,
                              reward_options)
from rlvr_jax.rl.packing import Packing
from rlvr_jax.rl.update import (MISMATCH_BAND, packed_response_logprobs, response_logprobs,
                                sequence_inputs, update_phase)
from rlvr_jax.train import steps as train_steps
from rlvr_jax.train.state import TrainState


def sample_phase(params, prompts_BP, prompt_lengths_B, key, *, spec: RLSpec) -> Rollout:
  """B prompts -> a Rollout of B * V rows (the in-graph sampler)."""
  out = sampling.sample_core(spec.cfg, params, prompts_BP, prompt_lengths_B, key,
                             spec.settings.sample_config())
  return Rollout(tokens=out.tokens, lengths=out.lengths, logprobs=out.logprobs,
                 entropy=out.entropy, self_certainty=out.self_certainty)


# ---------------------------------------------------------------------------------- the step
def rl_step(state: TrainState, ref_params, batch: Batch, key, *, spec: RLSpec,
            mesh: Mesh | None = None) -> tuple[TrainState, Metrics]:
  """One RL step: sample → score → update (the three phases composed). Pure; jit it."""
  k_sample, k_reward = step_keys(key)
  rollout = sample_phase(state.params, batch["prompt_tokens"], batch["prompt_lengths"], k_sample,
                         spec=spec)
  kept, scored, m_score = score_phase(rollout, batch, k_reward, spec=spec)
  state, m_update = update_phase(state, ref_params, kept, scored, batch["prompt_tokens"],
                                 batch["prompt_lengths"], spec=spec, mesh=mesh)
  return state, {**m_score, **m_update}


def step_keys(key):
  """(sample key, reward key) of a step key: `rl_step` and the split phases use the same."""
  return jax.random.split(key)


# ---------------------------------------------------------------------------------- jitting
def jit_rl_step(spec: RLSpec, mesh: Mesh, shardings: TrainState) -> Callable:
  """`step(state, ref_params, batch, key) -> (state, metrics)` jitted over the mesh: the state
  donated, batch rows over (data, fsdp), ref params on the parameter shardings, metrics
  replicated."""
  rows = train_steps.batch_sharding(mesh)
  rep = sharding.replicated(mesh)
  fn = functools.partial(rl_step, spec=spec, mesh=mesh)
  jitted = jax.jit(fn, in_shardings=(shardings, shardings.params, rows, rep),
                   out_shardings=(shardings, rep), donate_argnums=(0,))
  return sharding.under_mesh(jitted, mesh)


@dataclasses.dataclass(frozen=True)
class Phases:
  """The three jitted phases (observable one by one, for the time split):

    rollout = sample(params, prompts, prompt_lengths, sample_key)
    kept, scored, metrics = score(rollout, batch, reward_key)
    state, metrics = update(state, ref_params, kept, scored, prompts, prompt_lengths)
    state, metrics = update_packed(state, ref_params, kept, scored, prompts, prompt_lengths,
                                   packing)       # rl.pack_update: packing.plan of kept's rows

  With (sample_key, reward_key) = step_keys(key) they compute exactly `rl_step`.
  """
  sample: Callable
  score: Callable
  update: Callable
  select: Callable | None = None   # select_groups (dynamic_sampling="resample")
  update_packed: Callable | None = None


def jit_rl_phases(spec: RLSpec, mesh: Mesh, shardings: TrainState) -> Phases:
  rows = train_steps.batch_sharding(mesh)
  rep = sharding.replicated(mesh)
  sample = jax.jit(functools.partial(sample_phase, spec=spec),
                   in_shardings=(shardings.params, rows, rows, rep), out_shardings=rows)
  score = jax.jit(functools.partial(score_phase, spec=spec), in_shardings=(rows, rows, rep),
                  out_shardings=(rows, rows, rep))
  update = jax.jit(functools.partial(update_phase, spec=spec, mesh=mesh),
                   in_shardings=(shardings, shardings.params, rows, rows, rows, rows),
                   out_shardings=(shardings, rep), donate_argnums=(0,))
  select = jax.jit(functools.partial(select_groups, group_size=spec.settings.group_size),
                   out_shardings=rows)
  update_packed = jax.jit(functools.partial(update_phase, spec=spec, mesh=mesh),
                          in_shardings=(shardings, shardings.params, rows, rows, rows, rows, rows),
                          out_shardings=(shardings, rep), donate_argnums=(0,))
  return Phases(*(sharding.under_mesh(fn, mesh)
                  for fn in (sample, score, update, select, update_packed)))


__all__ = ["RLSettings", "RewardSpec", "RLSpec", "Rollout", "Scored", "reward_options",
           "close_brace_ids", "host_rewards", "sample_phase", "score_phase", "update_phase",
           "sequence_inputs", "response_logprobs", "packed_response_logprobs", "Packing",
           "select_groups", "reward_fidelity",
           "FIDELITY_METRICS", "rl_step", "step_keys", "jit_rl_step", "jit_rl_phases", "Phases",
           "DYNAMIC_SAMPLING", "OLD_LOGPROBS", "MAJORITY", "MISMATCH_BAND", "Batch", "Metrics"]
