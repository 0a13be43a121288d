r"""What an RL step is, statically, and the pytrees its phases pass along.

  RLSettings   sampling, loss and update settings (hashable)
  RewardSpec   the trained reward: {name: weight} over rl.REWARDS, static options, noise model
  RLSpec       model config + optimizer + settings + rewards: everything static about a step
  Rollout      sampled rows (sample_phase -> score_phase -> rewards, update_phase; rollout.py)
  Scored       rewards, advantages and loss mask of the trained rows (score_phase -> update)
  reward_options / close_brace_ids   the static token ids of the rewards, from a tokenizer

The phases themselves: rl/score.py, rl/update.py, composed in rl/step.py.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Mapping

import flax.struct
import jax
import jax.numpy as jnp

from rlvr_jax import sampling, specs
from rlvr_jax.model.config import ModelConfig
from rlvr_jax.rl import advantages as adv_lib
from rlvr_jax.rl import losses
from rlvr_jax.rl import noise as noise_lib
from rlvr_jax.rl import rewards as rewards_lib
from rlvr_jax.rl.rollout import Rollout
from rlvr_jax.train.optim import Optimizer

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
DYNAMIC_SAMPLING = ("none", "mask", "resample")
OLD_LOGPROBS = ("sampler", "trainer")
MAJORITY = "majority_vote"
_DEFAULTS = specs.RLConfig()   # the RL step's defaults are set once, in specs.RLConfig


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
  Sampler/trainer mismatch (rl/update.py's docstring): old_logprobs "sampler" (the PPO ratio's old
  log-probs are the sampler's) | "trainer" (the trainer's, recomputed under the sampling
  params); tis "none" | "token" | "sequence" (truncated IS weights min(pi_trainer_old /
  pi_sampler, tis_cap) on the pg term; needs old_logprobs="trainer"); log_mismatch: measure
  mismatch/* even when that costs an extra forward (minibatches > 1 with "sampler").
  cache_segments: the sampler's (sampling.SampleConfig; 0 = automatic, 1 = one decode loop
  over the full cache: the least memory).
  Defaults: specs.RLConfig's (the config's rl.* fields), except dual_clip (None = off; the
  config's 0).
  """
  group_size: int
  max_new_tokens: int
  pad_id: int
  eos_ids: tuple[int, ...] = ()
  vote_samples: int = _DEFAULTS.vote_samples
  temperature: float = _DEFAULTS.temperature
  top_k: int = _DEFAULTS.top_k
  top_p: float = _DEFAULTS.top_p
  estimator: str = _DEFAULTS.estimator
  clip_low: float = _DEFAULTS.clip_low
  clip_high: float = _DEFAULTS.clip_high
  dual_clip: float | None = None
  kl_coef: float = _DEFAULTS.kl_coef
  kl_estimator: str = _DEFAULTS.kl_estimator
  agg: str = _DEFAULTS.agg
  entropy_coef: float = _DEFAULTS.entropy_coef
  minibatches: int = _DEFAULTS.minibatches
  epochs: int = _DEFAULTS.epochs
  microbatches: int = _DEFAULTS.microbatches
  dynamic_sampling: str = _DEFAULTS.dynamic_sampling
  resample_rounds: int = _DEFAULTS.resample_rounds
  log_kl: bool = _DEFAULTS.log_kl
  old_logprobs: str = _DEFAULTS.old_logprobs
  tis: str = _DEFAULTS.tis
  tis_cap: float = _DEFAULTS.tis_cap
  log_mismatch: bool = _DEFAULTS.log_mismatch
  cache_segments: int = _DEFAULTS.cache_segments

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
    if isinstance(self.cache_segments, bool) or not isinstance(self.cache_segments, int) \
        or not 0 <= self.cache_segments <= max(self.max_new_tokens, 0):
      problems.append(f"cache_segments={self.cache_segments!r} must be an integer in [0, "
                      f"max_new_tokens={self.max_new_tokens}] (0 = automatic)")
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
                                 num_samples=self.samples_per_prompt,
                                 cache_segments=self.cache_segments)


@dataclasses.dataclass(frozen=True)
class RewardSpec:
  """What the reward trained on is: {name: weight} over rl.REWARDS, shared static options (token
  ids, found by `reward_options` from a tokenizer), an optional noise model over the weighted
  sum (`noise` a name of rl.NOISE_MODELS, `noise_params` its rates as (name, value) pairs), and
  `close_ids` (ids that close a \\boxed{}, mapped to close_ids[0] before rewards see tokens).
  host_verifier: the boxed-answer reward (when chosen) and the ground-truth reward come from
  the host verifier (batch["host_reward"] / ["host_true_reward"], see `host_rewards`).

  `build` makes the one reward fn score_phase calls: majority vote over V >= G samples, host
  verification and noise are bound there as registry entries and wrappers.
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
    # a missing static option -> ValueError naming it (host_reward: a placeholder, only the
    # options are bound here)
    self.build(1, 1, host_reward=())

  def build(self, samples_per_prompt: int, group_size: int, host_reward=None):
    """The trained reward as one registry-style fn(rollout, labels, key) -> float32[B * G].

    The fn scores all B * V sampled rows (samples of a prompt contiguous; labels int32[B * V, A]
    or None) with rewards.combine_rewards over the chosen entries, keeps the first G samples of
    each prompt, then passes them through the noise model (noise.with_noise, which splits `key`
    into the rewards' key and the noise key; group_flip's groups are the G kept samples).
    Entries bound here: majority_vote votes among the V samples of a prompt (group_size=V,
    max_answer_len); with host_verifier, boxed_answer_match is rewards.host_verified of
    host_reward float32[B * V] (the host's verdicts, see score.host_rewards). Terms are summed
    in name order with majority_vote last: the order score_phase always summed them in, so
    float rewards are bit for bit what they were.
    """
    v, g = samples_per_prompt, group_size
    names = sorted(self.names, key=lambda n: (n == MAJORITY, n))
    weights = {n: w for n, w in self.weights}
    fns, extra = {}, {}
    if self.host_verifier and "boxed_answer_match" in weights:
      if host_reward is None:
        raise ValueError("reward.host_verifier is on but the batch has no 'host_reward' (float32"
                         "[B * V] from rl.step.host_rewards): the fused step cannot call a host "
                         "verifier; run the phases separately (rl.fused_step=False)")
      fns["boxed_answer_match"] = rewards_lib.host_verified(host_reward)
    if MAJORITY in weights:
      extra = {"group_size": v, "max_answer_len": self.max_answer_len}
    accepted = set(extra)
    for name in names:
      accepted |= _keyword_options(fns.get(name, rewards_lib.REWARDS[name]))
    options = {k: val for k, val in {**dict(self.options), **extra}.items() if k in accepted}
    combined = rewards_lib.combine_rewards({n: weights[n] for n in names}, fns=fns, **options)

    def kept(rollout, labels=None, key=None):
      return first_samples(combined(rollout, labels, key), v, g)

    if not self.noise:
      return kept
    params = dict(self.noise_params)
    if self.noise == "group_flip":
      params.setdefault("group_size", g)
    return noise_lib.with_noise(kept, self.noise, **params)


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
def first_samples(x, samples_per_prompt: int, keep: int):
  """Rows [B * V, ...] (V = samples_per_prompt, samples of a prompt contiguous) -> the first
  `keep` samples of each prompt, [B * keep, ...]."""
  v = samples_per_prompt
  if v == keep:
    return x
  return x.reshape(-1, v, *x.shape[1:])[:, :keep].reshape(-1, *x.shape[1:])


@flax.struct.dataclass
class Scored:
  """What the update needs besides the rollout: rewards float32[N] (trained on), advantages
  float32[N], loss_mask float32[N, M]."""
  rewards: jax.Array
  advantages: jax.Array
  loss_mask: jax.Array


__all__ = ["RLSettings", "RewardSpec", "RLSpec", "Rollout", "Scored", "reward_options",
           "close_brace_ids", "first_samples", "DYNAMIC_SAMPLING", "OLD_LOGPROBS", "MAJORITY"]
