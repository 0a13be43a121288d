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
   (the loss of the four aggregation modes is linear in per-microbatch partial sums, so each
   microbatch's loss is rescaled by its share of the minibatch's normaliser). The "old"
   log-probs are the sampler's (settings.old_logprobs="sampler"), so in the first minibatch the
   importance ratio is 1 up to the sampler/trainer mismatch (`policy/ratio_dev_first` = max
   |ratio - 1| there), or the trainer's own log-probs under the sampling params
   (old_logprobs="trainer", as verl recomputes them), so the first ratio is 1 up to f32 rounding
   whatever the sampler computed. A minibatch whose loss or gradient norm is not finite leaves
   params and optimizer state unchanged (counted in `skipped`).

Sampler/trainer mismatch. The sampler's token log-probs (its kernels, KV cache, bf16) differ
from the trainer's for the same params, which makes training silently off-policy. Every step
measures it over ALL rollout rows at the sampling params (state.params when update_phase
starts), over every valid response token (loss-masked rows included): `mismatch/*` below. The
trainer's log-probs there come for free from the first minibatch's forward when minibatches = 1
(every row, every microbatch at the sampling params); otherwise from one extra forward-only pass
over all rows, chunked into minibatches x microbatches like the reference forward (memory of one
microbatch), run when old_logprobs="trainer" (it needs them) or log_mismatch (else mismatch/*
are NaN). With old_logprobs="trainer" and epochs = minibatches = 1 the update's own forward
supplies them too (old = stop_gradient(logp)): no extra pass. Truncated importance sampling
(settings.tis = "token" | "sequence", needs old_logprobs="trainer"; Yao et al. 2025, verl's
TIS): each row's pg terms are weighted by losses.tis_weights(trainer_old, sampler, cap=tis_cap).

Log-probs of the response under the policy are recomputed on the sequence [prompt block P |
response M]: prompt padding is segment 0 (never attended), response token t sits at position
prompt_length + t (the sampler's positions), and the hidden state that predicts response token t
is gathered (position prompt_length - 1 for t = 0, else the previous response token), so the
output head runs on M positions only.

Reward token ids: in-graph rewards compare token ids. BPE / sentencepiece vocabularies often
merge the closing brace with what follows ("}." in the toy tokenizer, "}$" in Qwen's); every id
in `RewardSpec.close_ids` is mapped to the first one before the rewards see the tokens.

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
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rlvr_jax import sampling, sharding
from rlvr_jax.model import transformer
from rlvr_jax.model.config import ModelConfig
from rlvr_jax.rl import advantages as adv_lib
from rlvr_jax.rl import losses
from rlvr_jax.rl import noise as noise_lib
from rlvr_jax.rl import rewards as rewards_lib
from rlvr_jax.train import steps as train_steps
from rlvr_jax.train.optim import Optimizer
from rlvr_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
DYNAMIC_SAMPLING = ("none", "mask", "resample")
_TOKEN_MEAN_KEYS = ("kl", "clip_frac", "dual_clip_frac", "ratio_mean")
OLD_LOGPROBS = ("sampler", "trainer")
MISMATCH_BAND = (0.9, 1.1)     # mismatch/ratio_out_frac: share of ratios outside this band
MAJORITY = "majority_vote"


# ---------------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class RLSettings:
  """Static settings of the RL step (hashable).

  Sampling: group_size G (samples trained on per prompt), vote_samples V (samples drawn per
  prompt, V >= G; 0 = G; V > G only with the majority_vote reward), max_new_tokens, temperature,
  top_k, top_p, eos_ids, pad_id. Loss: estimator (grpo | dr_grpo | rloo | reinforce_pp),
  clip_low, clip_high, dual_clip (None or > 1), kl_coef, kl_estimator (k1 | k2 | k3), agg (one
  of rl.AGGREGATIONS), entropy_coef. Updates: minibatches (optimizer updates per epoch),
  epochs (passes over the rollout), microbatches (gradient accumulation per minibatch).
  dynamic_sampling: "none" | "mask" (drop zero-variance groups from the loss) | "resample"
  (the run loop samples up to `resample_rounds` further prompt batches and trains on the first
  B groups with nonzero reward variance; if too few turn up, the rest are zero-variance groups,
  masked as with "mask"). log_kl: compute reference log-probs (and policy/kl) even when
  kl_coef == 0.
  Sampler/trainer mismatch (module docstring): old_logprobs "sampler" (the PPO ratio's old
  log-probs are the sampler's) | "trainer" (the trainer's, recomputed under the sampling
  params); tis "none" | "token" | "sequence" (truncated IS weights min(pi_trainer_old /
  pi_sampler, tis_cap) on the pg term; needs old_logprobs="trainer"); log_mismatch: measure
  mismatch/* even when that costs an extra forward (minibatches > 1 with "sampler").
  """
  group_size: int
  max_new_tokens: int
  pad_id: int
  eos_ids: tuple[int, ...] = ()
  vote_samples: int = 0
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  estimator: str = "grpo"
  clip_low: float = 0.2
  clip_high: float = 0.2
  dual_clip: float | None = None
  kl_coef: float = 0.0
  kl_estimator: str = "k3"
  agg: str = "token-mean"
  entropy_coef: float = 0.0
  minibatches: int = 1
  epochs: int = 1
  microbatches: int = 1
  dynamic_sampling: str = "none"
  resample_rounds: int = 3
  log_kl: bool = True
  old_logprobs: str = "sampler"
  tis: str = "none"
  tis_cap: float = 2.0
  log_mismatch: bool = True

  def __post_init__(self):
    problems = []
    for name in ("group_size", "max_new_tokens", "minibatches", "epochs", "microbatches"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        problems.append(f"{name}={v!r} must be an integer >= 1")
    if isinstance(self.vote_samples, bool) or not isinstance(self.vote_samples, int) \
        or self.vote_samples < 0:
      problems.append(f"vote_samples={self.vote_samples!r} must be an integer >= 0 "
                      f"(0 = group_size)")
    elif self.vote_samples and self.vote_samples < self.group_size:
      problems.append(f"vote_samples={self.vote_samples} must be >= group_size={self.group_size} "
                      f"(votes come from V samples, G of them are trained on)")
    if not self.temperature > 0:
      problems.append(f"temperature={self.temperature!r} must be > 0 for RL (greedy rollouts "
                      f"have no log-probs)")
    if self.estimator not in adv_lib.ADVANTAGE_ESTIMATORS:
      problems.append(f"estimator={self.estimator!r} is not one of "
                      f"{sorted(adv_lib.ADVANTAGE_ESTIMATORS)}")
    if self.agg not in losses.AGGREGATIONS:
      problems.append(f"agg={self.agg!r} is not one of {sorted(losses.AGGREGATIONS)}")
    if self.kl_estimator not in losses.KL_ESTIMATORS:
      problems.append(f"kl_estimator={self.kl_estimator!r} is not one of "
                      f"{sorted(losses.KL_ESTIMATORS)}")
    if self.dual_clip is not None and not self.dual_clip > 1.0:
      problems.append(f"dual_clip={self.dual_clip!r} must be None (off) or > 1 (the paper: 3.0)")
    for name in ("clip_low", "clip_high", "kl_coef", "entropy_coef"):
      if not getattr(self, name) >= 0:
        problems.append(f"{name}={getattr(self, name)!r} must be >= 0")
    if self.dynamic_sampling not in DYNAMIC_SAMPLING:
      problems.append(f"dynamic_sampling={self.dynamic_sampling!r} is not one of "
                      f"{DYNAMIC_SAMPLING}")
    if isinstance(self.resample_rounds, bool) or not isinstance(self.resample_rounds, int) \
        or self.resample_rounds < 0:
      problems.append(f"resample_rounds={self.resample_rounds!r} must be an integer >= 0")
    if self.old_logprobs not in OLD_LOGPROBS:
      problems.append(f"old_logprobs={self.old_logprobs!r} is not one of {OLD_LOGPROBS}")
    if self.tis not in losses.TIS_LEVELS:
      problems.append(f"tis={self.tis!r} is not one of {losses.TIS_LEVELS}")
    if isinstance(self.tis_cap, bool) or not isinstance(self.tis_cap, (int, float)) \
        or not 0 < self.tis_cap < float("inf"):
      problems.append(f"tis_cap={self.tis_cap!r} must be a finite number > 0 (verl: 2.0)")
    if problems:
      raise ValueError("bad RL settings: " + "; ".join(problems))

  @property
  def samples_per_prompt(self) -> int:
    """V: rows the sampler draws per prompt."""
    return self.vote_samples or self.group_size

  def sample_config(self) -> sampling.SampleConfig:
    return sampling.SampleConfig(max_new_tokens=self.max_new_tokens, pad_id=self.pad_id,
                                 eos_ids=tuple(self.eos_ids), temperature=float(self.temperature),
                                 top_k=self.top_k, top_p=float(self.top_p),
                                 num_samples=self.samples_per_prompt)


@dataclasses.dataclass(frozen=True)
class RewardSpec:
  """What the reward trained on is: {name: weight} over rl.REWARDS, shared static options (token
  ids, found by `reward_options` from a tokenizer), an optional noise model over the weighted
  sum (`noise` a name of rl.NOISE_MODELS, `noise_params` its rates as (name, value) pairs), and
  `close_ids` (ids that close a \\boxed{}, mapped to close_ids[0] before rewards see tokens).
  host_verifier: the boxed-answer reward (when chosen) and the ground-truth reward come from
  the host verifier (batch["host_reward"] / ["host_true_reward"], see `host_rewards`).

  "majority_vote" is computed here for any V >= G (pseudo-label = most common boxed answer
  among the V samples of a prompt; reward = boxed_answer_match of each kept sample against it).
  """
  weights: tuple[tuple[str, float], ...]
  options: tuple[tuple[str, Any], ...] = ()
  noise: str = ""
  noise_params: tuple[tuple[str, float], ...] = ()
  close_ids: tuple[int, ...] = ()
  max_answer_len: int = 32
  host_verifier: bool = False

  @staticmethod
  def make(weights: Mapping[str, float], options: Mapping[str, Any] | None = None, *,
           noise: str = "", noise_params: Mapping[str, float] | None = None,
           close_ids=(), max_answer_len: int = 32, host_verifier: bool = False) -> "RewardSpec":
    """A RewardSpec from dicts; checks every name and option now (before anything compiles)."""
    weights = {str(k): float(v) for k, v in dict(weights).items() if float(v) != 0.0}
    options = dict(options or {})
    spec = RewardSpec(weights=tuple(sorted(weights.items())),
                      options=tuple(sorted((k, _freeze(v)) for k, v in options.items())),
                      noise=noise or "", noise_params=tuple(sorted((noise_params or {}).items())),
                      close_ids=tuple(int(i) for i in close_ids),
                      max_answer_len=int(max_answer_len), host_verifier=bool(host_verifier))
    spec.check()
    return spec

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(k for k, _ in self.weights)

  @property
  def needs_labels(self) -> bool:
    return any(n in rewards_lib.LABEL_REWARDS for n in self.names)

  def check(self) -> None:
    if not self.weights:
      raise ValueError(f"no reward selected: give reward.weights {{name: weight}} with names from "
                       f"{sorted(rewards_lib.REWARDS)}")
    for name in self.names:
      rewards_lib.get_reward(name)   # unknown name -> ValueError listing the choices
    if self.noise:
      if self.noise not in noise_lib.NOISE_MODELS:
        raise ValueError(f"unknown reward noise model {self.noise!r}; choose one of "
                         f"{sorted(noise_lib.NOISE_MODELS)} or '' for none")
      params = dict(self.noise_params)
      if self.noise == "group_flip":
        params.setdefault("group_size", 1)
      try:   # trace only: a missing or out-of-range rate fails here, naming it
        jax.eval_shape(lambda: noise_lib.apply_noise(self.noise, jnp.zeros((2,), jnp.float32),
                                                     jax.random.key(0), **params))
      except TypeError as e:
        raise ValueError(f"reward noise model {self.noise!r} with rates {params}: {e}") from None
    self.build_plain()              # a missing static option -> ValueError naming it
    if MAJORITY in self.names:
      self.majority_options()

  def _plain_weights(self, host: bool = False) -> dict[str, float]:
    """The rewards computed by rewards.combine_rewards (not majority vote; not the boxed match
    when a host verifier supplies it)."""
    return {n: w for n, w in self.weights
            if n != MAJORITY and not (host and n == "boxed_answer_match")}

  def build_plain(self, host: bool = False):
    weights = self._plain_weights(host)
    if not weights:
      return None
    opts = dict(self.options)
    accepted = set()
    for name in weights:
      accepted |= _keyword_options(rewards_lib.REWARDS[name])
    return rewards_lib.combine_rewards(weights, **{k: v for k, v in opts.items() if k in accepted})

  def majority_options(self) -> dict[str, Any]:
    opts = dict(self.options)
    missing = [k for k in ("boxed_ids", "close_id") if k not in opts]
    if missing:
      raise ValueError(f"reward 'majority_vote' needs option(s) {missing} (token ids of "
                       f"'\\\\boxed{{' and '}}')")
    return {k: opts[k] for k in ("boxed_ids", "close_id", "open_brace_id") if k in opts}


def _freeze(v):
  if isinstance(v, (list, tuple)):
    return tuple(_freeze(x) for x in v)
  return v


def _keyword_options(fn) -> set[str]:
  return {p.name for p in inspect.signature(fn).parameters.values()
          if p.kind is inspect.Parameter.KEYWORD_ONLY}


@dataclasses.dataclass(frozen=True)
class RLSpec:
  """Everything static about an RL step: the model, the optimizer, the settings, the reward."""
  cfg: ModelConfig
  optimizer: Optimizer
  settings: RLSettings
  rewards: RewardSpec

  def __post_init__(self):
    s = self.settings
    if s.vote_samples > s.group_size and MAJORITY not in self.rewards.names:
      raise ValueError(f"vote_samples={s.vote_samples} > group_size={s.group_size} only makes "
                       f"sense with the majority_vote reward (reward.weights has "
                       f"{list(self.rewards.names)}); set vote_samples=0")
    sampling.check_against_model(self.cfg, s.sample_config())  # pad / eos ids in the vocabulary


def reward_options(tokenizer, names, *, max_answer_len: int = 32,
                   think_open: str = "<think>", think_close: str = "</think>") -> dict[str, Any]:
  """Static token-id options for the chosen rewards and the ground-truth reward, from a tokenizer.

  Always: boxed_ids (the ids of "\\boxed{"), close_id (the id of "}"), open_brace_id (the id of
  "{" when it is a single token of its own); think_open_ids / think_close_ids and max_answer_len
  when a chosen reward takes them. Each reward receives only the options it accepts.
  """
  accepted = set()
  for name in names:
    if name != MAJORITY:
      accepted |= _keyword_options(rewards_lib.get_reward(name))
  out: dict[str, Any] = {"boxed_ids": tuple(tokenizer.encode("\\boxed{"))}
  ids = tokenizer.encode("}")
  if len(ids) != 1:
    raise ValueError(f"the tokenizer encodes '}}' as {ids}, not one token; the in-graph boxed "
                     f"verifier needs a single close-brace id")
  out["close_id"] = ids[0]
  ids = tokenizer.encode("{")
  if len(ids) == 1:      # nested braces inside the answer are balanced
    out["open_brace_id"] = ids[0]
  if "think_close_ids" in accepted:
    out["think_close_ids"] = tuple(tokenizer.encode(think_close))
  if "think_open_ids" in accepted:
    out["think_open_ids"] = tuple(tokenizer.encode(think_open))
  if "max_answer_len" in accepted:
    out["max_answer_len"] = int(max_answer_len)
  return out


def close_brace_ids(tokenizer) -> tuple[int, ...]:
  """The id of "}" first, then every other vocabulary entry that starts with "}" ("}.", "}$")."""
  first = tokenizer.encode("}")
  ids = list(first[:1])
  for i in range(tokenizer.vocab_size):
    try:
      piece = tokenizer.id_to_token(i)
    except Exception:  # noqa: BLE001 - unused ids in some vocabularies
      continue
    if piece and piece.lstrip("\u2581\u0120").startswith("}") and i not in ids:
      ids.append(i)
  return tuple(ids)


# ---------------------------------------------------------------------------------- pytrees
@flax.struct.dataclass
class Rollout:
  """Sampled responses, R rows (samples of one prompt contiguous): tokens int32[R, M] (pad after
  the stop token), lengths int32[R] (stop token included), logprobs / entropy / self_certainty
  float32[R, M] from the sampler (0 after a row ends)."""
  tokens: jax.Array
  lengths: jax.Array
  logprobs: jax.Array
  entropy: jax.Array
  self_certainty: jax.Array

  def valid_mask(self) -> jax.Array:
    m = self.tokens.shape[1]
    return (jnp.arange(m)[None, :] < self.lengths[:, None]).astype(jnp.float32)


@flax.struct.dataclass
class Scored:
  """What the update needs besides the rollout: rewards float32[N] (trained on), advantages
  float32[N], loss_mask float32[N, M]."""
  rewards: jax.Array
  advantages: jax.Array
  loss_mask: jax.Array


# ---------------------------------------------------------------------------------- phase 1
def sample_phase(params, prompts_BP, prompt_lengths_B, key, *, spec: RLSpec) -> Rollout:
  """B prompts -> a Rollout of B * V rows (the in-graph sampler)."""
  out = sampling.sample_core(spec.cfg, params, prompts_BP, prompt_lengths_B, key,
                             spec.settings.sample_config())
  return Rollout(tokens=out.tokens, lengths=out.lengths, logprobs=out.logprobs,
                 entropy=out.entropy, self_certainty=out.self_certainty)


# ---------------------------------------------------------------------------------- phase 2
def _reward_view(rollout: Rollout, close_ids: tuple[int, ...]) -> rewards_lib.RolloutBatch:
  tokens = rollout.tokens
  if len(close_ids) > 1:
    tokens = jnp.where(jnp.isin(tokens, jnp.asarray(close_ids[1:], jnp.int32)), close_ids[0],
                       tokens)
  return rewards_lib.RolloutBatch(tokens=tokens, lengths=rollout.lengths,
                                  logprobs=rollout.logprobs, entropy=rollout.entropy,
                                  self_certainty=rollout.self_certainty)


def _keep_first(x, b: int, v: int, g: int):
  """Rows [B*V, ...] -> the first g samples of each prompt, [B*g, ...]."""
  if v == g:
    return x
  return x.reshape(b, v, *x.shape[1:])[:, :g].reshape(b * g, *x.shape[1:])


def _check_rows(n: int, b: int, s: RLSettings) -> None:
  v = s.samples_per_prompt
  if n % v or n // v != b:
    raise ValueError(f"the rollout has {n} rows but the batch has {b} prompts and "
                     f"vote_samples/group_size gives {v} samples per prompt: the group size "
                     f"must divide the rollout into one group per prompt")


def score_phase(rollout: Rollout, batch: Batch, key, *, spec: RLSpec
                ) -> tuple[Rollout, Scored, Metrics]:
  """Rewards, ground-truth reward, advantages and loss mask of a Rollout (B * V rows).

  Returns (the rollout of the B * G trained rows, Scored, metrics). Shapes and names are checked
  at trace time: a group size that does not split the rows into one group per prompt, or a
  label reward without `answer_tokens`, fails before anything compiles.
  """
  s, rs = spec.settings, spec.rewards
  b = batch["prompt_tokens"].shape[0]
  n_all = rollout.tokens.shape[0]
  _check_rows(n_all, b, s)
  v, g = s.samples_per_prompt, s.group_size
  labels_BA = batch.get("answer_tokens")
  if rs.needs_labels and labels_BA is None:
    raise ValueError(f"reward(s) {[n for n in rs.names if n in rewards_lib.LABEL_REWARDS]} "
                     f"compare with labels but the batch has no 'answer_tokens': the dataset "
                     f"has no labels; use a labelled dataset or a proxy reward (majority_vote, "
                     f"self_certainty, neg_entropy, seq_loglik)")
  view_all = _reward_view(rollout, rs.close_ids)
  kept = jax.tree.map(lambda x: _keep_first(x, b, v, g), rollout)
  view = jax.tree.map(lambda x: _keep_first(x, b, v, g), view_all)
  n = b * g
  k_plain, k_noise = jax.random.split(key)

  host_N = batch.get("host_reward")
  use_host = rs.host_verifier and "boxed_answer_match" in rs.names
  if use_host and host_N is None:
    raise ValueError("reward.host_verifier is on but the batch has no 'host_reward' (float32[B * "
                     "V] from rl.step.host_rewards): the fused step cannot call a host verifier; "
                     "run the phases separately (rl.fused_step=False)")
  total_N = jnp.zeros((n,), jnp.float32)
  if use_host:
    total_N = total_N + dict(rs.weights)["boxed_answer_match"] * _keep_first(
        jnp.asarray(host_N, jnp.float32), b, v, g)
  plain = rs.build_plain(host=use_host)
  if plain is not None:
    labels_NA = None if labels_BA is None else jnp.repeat(jnp.asarray(labels_BA, jnp.int32), g, 0)
    total_N = total_N + plain(view, labels_NA, k_plain)
  weights = dict(rs.weights)
  if MAJORITY in weights:
    opts = rs.majority_options()
    answers_NA, ok_N = rewards_lib.extract_boxed_tokens(
        view_all.tokens, view_all.lengths, max_answer_len=rs.max_answer_len, **opts)
    pseudo_BA = rewards_lib.majority_vote_labels(answers_NA.reshape(b, v, -1), ok_N.reshape(b, v))
    match_N = rewards_lib.boxed_answer_match(view, jnp.repeat(pseudo_BA, g, 0), **opts)
    total_N = total_N + weights[MAJORITY] * match_N
  if rs.noise:
    params = dict(rs.noise_params)
    if rs.noise == "group_flip":
      params.setdefault("group_size", g)
    total_N = noise_lib.apply_noise(rs.noise, total_N, k_noise, **params)
  rewards_N = total_N

  advantages_N = adv_lib.compute_advantages(rewards_N, g, s.estimator)
  varied_N = adv_lib.nonzero_variance_mask(rewards_N, g)
  valid_NM = kept.valid_mask()
  loss_mask_NM = valid_NM * varied_N[:, None] if s.dynamic_sampling != "none" else valid_NM

  f32 = jnp.float32
  nan = jnp.asarray(jnp.nan, f32)
  metrics = {"reward/mean": jnp.mean(rewards_N), "reward/std": jnp.std(rewards_N),
             "reward/zero_var_frac": jnp.mean(1.0 - varied_N),
             "response/length_mean": jnp.mean(kept.lengths.astype(f32)),
             "response/clip_frac": jnp.mean(_clipped(kept, s).astype(f32)),
             "policy/entropy": losses.aggregate(kept.entropy, valid_NM, "token-mean"),
             **{name: nan for name in FIDELITY_METRICS}}
  true_BA = batch.get("true_answer_tokens")
  if batch.get("host_true_reward") is not None:
    true_N = _keep_first(jnp.asarray(batch["host_true_reward"], jnp.float32), b, v, g)
    metrics.update(reward_fidelity(rewards_N, true_N, g))
  elif true_BA is not None:
    opts = {name: val for name, val in rs.options
            if name in ("boxed_ids", "close_id", "open_brace_id")}
    if "boxed_ids" in opts and "close_id" in opts:
      true_N = rewards_lib.boxed_answer_match(view, jnp.repeat(jnp.asarray(true_BA, jnp.int32),
                                                               g, 0), **opts)
      metrics.update(reward_fidelity(rewards_N, true_N, g))
  return kept, Scored(rewards=rewards_N, advantages=advantages_N, loss_mask=loss_mask_NM), metrics


FIDELITY_METRICS = ("reward/true_mean", "reward/agreement", "reward/true_corr",
                    "reward/true_group_corr")


def _pearson(x_N, y_N) -> jax.Array:
  """Pearson correlation of two float vectors; NaN when either is constant."""
  xc_N, yc_N = x_N - jnp.mean(x_N), y_N - jnp.mean(y_N)
  den = jnp.sqrt(jnp.sum(xc_N * xc_N) * jnp.sum(yc_N * yc_N))
  return jnp.where(den > 0, jnp.sum(xc_N * yc_N) / jnp.where(den > 0, den, 1.0), jnp.nan)


def reward_fidelity(rewards_N, true_N, group_size: int) -> dict[str, jax.Array]:
  """How faithful the training reward is to the ground truth, over N = groups * group_size rows:
  true_mean; agreement (share of rows where reward > 0.5 equals truth > 0.5: for binary rewards,
  label accuracy); true_corr (Pearson of reward and truth over the batch); true_group_corr
  (Pearson after centring both within each group: what a group-relative advantage sees, so a
  proxy that only tells easy prompts from hard ones scores 0 here). The correlations are what
  to read for continuous proxy rewards (self-certainty, entropy), where agreement means little."""
  r_N, t_N = rewards_N.astype(jnp.float32), true_N.astype(jnp.float32)
  centre = lambda x: (x.reshape(-1, group_size)
                      - jnp.mean(x.reshape(-1, group_size), axis=1, keepdims=True)).reshape(-1)
  return {"reward/true_mean": jnp.mean(t_N),
          "reward/agreement": jnp.mean(((r_N > 0.5) == (t_N > 0.5)).astype(jnp.float32)),
          "reward/true_corr": _pearson(r_N, t_N),
          "reward/true_group_corr": _pearson(centre(r_N), centre(t_N))}


def _clipped(rollout: Rollout, s: RLSettings) -> jax.Array:
  """bool[N]: the row used all max_new_tokens without ending on a stop token."""
  m = rollout.tokens.shape[1]
  last = jnp.take_along_axis(rollout.tokens, jnp.clip(rollout.lengths - 1, 0, m - 1)[:, None],
                             axis=1)[:, 0]
  stopped = jnp.isin(last, jnp.asarray(s.eos_ids or (-1,), jnp.int32))
  return (rollout.lengths >= m) & ~stopped


def select_groups(rounds, group_index_B, *, group_size: int):
  """Dynamic sampling's refill: `rounds` is a tuple of (kept Rollout, Scored, prompts_BP,
  prompt_lengths_B) of equal shapes, one per sampled prompt batch; group_index_B int32[B] picks
  B groups from their concatenation (group j of round r is r * B + j). Returns the picked
  (Rollout, Scored, prompts, prompt_lengths), each group's G rows kept together."""
  cat = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *rounds)
  rollout, scored, prompts_BP, prompt_lengths_B = cat
  rows_N = (group_index_B[:, None] * group_size + jnp.arange(group_size)[None, :]).reshape(-1)
  take_rows = lambda x: jnp.take(x, rows_N, axis=0)   # noqa: E731
  return (jax.tree.map(take_rows, rollout), jax.tree.map(take_rows, scored),
          jnp.take(prompts_BP, group_index_B, axis=0),
          jnp.take(prompt_lengths_B, group_index_B, axis=0))


# ---------------------------------------------------------------------------------- phase 3
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


def _agg_count(mask_NM, agg: str):
  """The normaliser of aggregation `agg` on these rows (before the max(., 1) clamp)."""
  if agg == "token-mean":
    return jnp.sum(mask_NM)
  if agg == "seq-mean-token-sum-norm":
    return jnp.asarray(float(mask_NM.size), jnp.float32)
  return jnp.sum((jnp.sum(mask_NM, axis=1) > 0).astype(jnp.float32))


def _split(tree, k: int, mesh):
  if k == 1:
    return jax.tree.map(lambda x: x[None], tree)
  return train_steps.split_microbatches(tree, k, mesh)


def update_phase(state: TrainState, ref_params, rollout: Rollout, scored: Scored, prompts_BP,
                 prompt_lengths_B, *, spec: RLSpec, mesh: Mesh | None = None
                 ) -> tuple[TrainState, Metrics]:
  """`epochs` x `minibatches` optimizer updates on the clipped policy-gradient loss.

  rollout: the B * G trained rows; scored: their advantages and loss mask; prompts: the B
  prompts. Returns the new state (step + 1) and the metrics of the module docstring.
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
  inputs = {k: rows[k] for k in ("prompts", "prompt_lengths", "tokens")}

  def all_rows_logprobs(params):
    """Log-probs of every row under `params`, one microbatch at a time (memory), rows back in
    their order; forward only."""
    def fn(mb):
      logp, _ = response_logprobs(cfg, params, mb["prompts"], mb["prompt_lengths"], mb["tokens"],
                                  s.temperature)
      return logp
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

  def micro_loss(params, mb, denom):
    """This microbatch's share of the minibatch loss, and its metric sums."""
    logp, ent = response_logprobs(cfg, params, mb["prompts"], mb["prompt_lengths"], mb["tokens"],
                                  s.temperature)
    # the trainer's log-probs at the sampling params (see trainer_pass above)
    pre_NM = mb["trainer_logp"] if "trainer_logp" in mb else jax.lax.stop_gradient(logp)
    old_NM = pre_NM if s.old_logprobs == "trainer" else mb["sampler_logp"]
    is_weights = None
    if s.tis != "none":
      is_weights = losses.tis_weights(pre_NM, mb["sampler_logp"], mb["valid"], level=s.tis,
                                      cap=s.tis_cap)
    loss, m = losses.policy_loss(
        logp, old_NM, mb["advantages"], mb["mask"], clip_low=s.clip_low,
        clip_high=s.clip_high, dual_clip=s.dual_clip, ref_logprobs=mb.get("ref_logp"),
        kl_coef=s.kl_coef, kl_estimator=s.kl_estimator, agg=s.agg,
        entropy=ent if s.entropy_coef else None, entropy_coef=s.entropy_coef,
        is_weights=is_weights)
    weight = _agg_count(mb["mask"], s.agg) / denom
    valid = mb["mask"] > 0
    ratio = jax.lax.stop_gradient(jnp.exp(jnp.clip(logp - old_NM, -20.0, 20.0)))
    tokens = jnp.sum(mb["mask"])
    aux = {"sums": {k: m[k] * tokens for k in _TOKEN_MEAN_KEYS},
           "pg_loss": m["pg_loss"] * weight, "tokens": tokens,
           "ratio_max": jnp.max(jnp.where(valid, ratio, 0.0)),
           "ratio_dev": jnp.max(jnp.where(valid, jnp.abs(ratio - 1.0), 0.0)),
           "mismatch": _mismatch_sums(pre_NM, mb["sampler_logp"], mb["valid"], s.tis,
                                      s.tis_cap)}
    return loss * weight, aux

  value_and_grad = jax.value_and_grad(micro_loss, has_aux=True)

  def minibatch_update(carry, mb):
    params, opt_state = carry
    denom = jnp.maximum(_agg_count(mb["mask"], s.agg), 1.0)

    def body(acc, one):
      g_acc, loss_acc, aux_acc = acc
      (loss, aux), g = value_and_grad(params, one, denom)
      g_acc = jax.tree.map(lambda a, x: a + x.astype(jnp.float32), g_acc, g)
      aux_acc = {"sums": jax.tree.map(jnp.add, aux_acc["sums"], aux["sums"]),
                 "pg_loss": aux_acc["pg_loss"] + aux["pg_loss"],
                 "tokens": aux_acc["tokens"] + aux["tokens"],
                 "ratio_max": jnp.maximum(aux_acc["ratio_max"], aux["ratio_max"]),
                 "ratio_dev": jnp.maximum(aux_acc["ratio_dev"], aux["ratio_dev"]),
                 "mismatch": _merge_mismatch(aux_acc["mismatch"], aux["mismatch"])}
      return (g_acc, loss_acc + loss, aux_acc), None

    zero = jnp.zeros((), jnp.float32)
    zeros_g = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    zero_aux = {"sums": {k: zero for k in _TOKEN_MEAN_KEYS}, "pg_loss": zero, "tokens": zero,
                "ratio_max": zero, "ratio_dev": zero,
                "mismatch": {k: zero for k in _mismatch_keys(s.tis)}}
    init = (zeros_g, zero, zero_aux)
    if k_micro == 1:
      (grads, loss, aux), _ = body(init, mb)
    else:
      (grads, loss, aux), _ = jax.lax.scan(body, init, _split(mb, k_micro, mesh))
    grads = jax.tree.map(lambda gr, p: gr.astype(p.dtype), grads, params)
    lr = jnp.asarray(opt.learning_rate(opt_state), jnp.float32)
    params, opt_state, stats = train_steps.apply_update_if_finite(params, opt_state, grads,
                                                                  loss, opt)
    out = {k: v / jnp.maximum(aux["tokens"], 1.0) for k, v in aux["sums"].items()}
    out.update(loss=loss, pg_loss=aux["pg_loss"], lr=lr, **stats, ratio_max=aux["ratio_max"],
               ratio_dev=aux["ratio_dev"], tokens=aux["tokens"], mismatch=aux["mismatch"])
    return (params, opt_state), out

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
  w = per["tokens"] / jnp.maximum(jnp.sum(per["tokens"]), 1.0)
  metrics = {"loss": jnp.mean(per["loss"]), "grad_norm": jnp.mean(per["grad_norm"]),
             "param_norm": per["param_norm"][-1], "update_ratio": jnp.max(per["update_ratio"]),
             "lr": per["lr"][0], "skipped": jnp.sum(per["skipped"]),
             "num_updates": jnp.asarray(s.epochs * k_mb, jnp.int32),
             "policy/clip_frac": jnp.sum(w * per["clip_frac"]),
             "policy/dual_clip_frac": jnp.sum(w * per["dual_clip_frac"]),
             "policy/ratio_mean": jnp.sum(w * per["ratio_mean"]),
             "policy/ratio_max": jnp.max(per["ratio_max"]),
             "policy/ratio_dev_first": per["ratio_dev"][0],
             "policy/kl": jnp.sum(w * per["kl"]),
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


def _mismatch_keys(tis: str) -> tuple[str, ...]:
  """The keys of `_mismatch_sums` (static: the scan carries need them before any row is seen)."""
  keys = ("tokens", "rows", "abs_sum", "abs_max", "out", "seq_abs_sum")
  return keys + (("tis_sum", "tis_clipped", "tis_count") if tis != "none" else ())


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
  """mismatch/* (module docstring) from `_mismatch_sums`; 0 when no token is valid."""
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


# ---------------------------------------------------------------------------------- host verifier
def host_rewards(tokenizer, tokens_NM, lengths_N, labels, true_labels, samples_per_prompt: int,
                 verify_fn=None) -> tuple[np.ndarray, np.ndarray]:
  """(reward, true reward), float32[N] each, of decoded responses checked on the host with
  rewards.host_verifier_reward (math-verify equivalence when installed): the same contract as
  the in-graph boxed_answer_match, for answers a token comparison cannot judge (\\frac{1}{2} vs
  0.5, BPE merges). tokens_NM / lengths_N: host arrays of the rollout rows (B * V, samples of a
  prompt contiguous); labels / true_labels: B strings. Feed the results to `score_phase` as
  batch["host_reward"] / batch["host_true_reward"]."""
  texts = tokenizer.decode_batch(np.asarray(tokens_NM), np.asarray(lengths_N))
  rep = lambda xs: [str(x) for x in xs for _ in range(samples_per_prompt)]  # noqa: E731
  reward = rewards_lib.host_verifier_reward(texts, rep(labels), verify_fn)
  same = [str(a) == str(b) for a, b in zip(labels, true_labels)]
  if all(same):
    return reward, reward
  return reward, rewards_lib.host_verifier_reward(texts, rep(true_labels), verify_fn)


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

  With (sample_key, reward_key) = step_keys(key) they compute exactly `rl_step`.
  """
  sample: Callable
  score: Callable
  update: Callable
  select: Callable | None = None   # select_groups (dynamic_sampling="resample")


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
  return Phases(*(sharding.under_mesh(fn, mesh) for fn in (sample, score, update, select)))


__all__ = ["RLSettings", "RewardSpec", "RLSpec", "Rollout", "Scored", "reward_options",
           "close_brace_ids", "host_rewards", "sample_phase", "score_phase", "update_phase",
           "sequence_inputs", "response_logprobs", "select_groups", "reward_fidelity",
           "FIDELITY_METRICS", "rl_step", "step_keys", "jit_rl_step", "jit_rl_phases", "Phases",
           "DYNAMIC_SAMPLING"]
