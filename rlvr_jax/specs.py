"""The typed config boundary: a run config (an ml_collections ConfigDict) becomes a frozen
`RunSpec` once, where a command starts (`parse`), and `validate` checks it before anything
compiles.

Why: the run stages used to read the ConfigDict by string path with a default at each read, so
one field could have several defaults (data.max_answer_len: 32 in the code, 16 in the toy
config) and a misspelled override was silently ignored. Here every field a run stage reads is a
dataclass field, its default is set once (the field's default), and `parse` refuses a field it
does not know (one line naming it, with the closest known name) or a value of the wrong type
(the field and the expected type).

Sections (one dataclass each, `RunSpec.<section>`):
  model       ModelSpec: named size or overrides of the loaded architecture / numerics
  mesh        MeshSpec: data × fsdp × tensor axes
  init        InitSpec: from_hf | from_checkpoint
  optim       OptimSpec: AdamW + schedule (train/optim.make_optimizer reads it)
  data        DataSpec: the training data of CPT, SFT and RL (each stage reads its fields)
  rl          RLConfig: the RL step settings (rl/spec.RLSettings is built from it) and the
              RL loop's own switches (fused_step, profile_phases, pack_update,
              stop_after_saturation)
  reward      RewardConfig: the reward weights and the reward noise model
  eval        EvalSpec: the evaluation harness (eval/harness.py) of RL and `rlvr-jax eval`
  guard       run/guard.GuardSpec (its max_nonfinite is the top-level max_nonfinite_steps)
  saturation  SaturationSpec: diagnostics/saturation.MonitorParams less reward_key
Top-level fields (steps, batch_size, seed, cadences, ...) are RunSpec's own.

`validate(spec, cfg, mesh, ...)` holds every cross-field rule (steps >= 1, seq_len fits the
model, the batch divides over the mesh, RL's group / minibatch arithmetic, ...) and raises one
ValueError naming each offending field.

`RunSpec.raw` keeps the config as the plain dict it was parsed from: that is what config.json
records, so run directories written before this module resume unchanged.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping

from rlvr_jax.config_utils import csv_list
from rlvr_jax.diagnostics.saturation import MonitorParams
from rlvr_jax.run.guard import GuardSpec


class ConfigError(ValueError):
  """A config field is unknown, has the wrong type, or breaks a rule; the message names it."""


# ---------------------------------------------------------------------------------- sections
@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """config.model. `size` is used only without init.* (random init); the other fields override
  the base architecture (None / 0 = keep the base's; run/init.model_config)."""
  size: str = "toy-1m"
  vocab_size: int = 0                 # 0 = the tokenizer's vocabulary size (random init only)
  hidden_size: int | None = None
  intermediate_size: int | None = None
  num_layers: int | None = None
  num_heads: int | None = None
  num_kv_heads: int | None = None
  head_dim: int | None = None
  tie_embeddings: bool | None = None
  max_seq_len: int | None = None
  rope_theta: float | None = None
  dtype: str | None = None            # None / '' = the base's (the checkpoint's)
  param_dtype: str | None = None
  remat: str | None = None
  attention: str | None = None        # auto | xla | cudnn (the full-sequence attention kernel)
  scan_unroll: int = 0                # layers per layer-scan iteration (0 = the base's, 1 default)

  def overrides(self) -> dict[str, Any]:
    """The fields set (not None, not '', architecture ints not 0), by ModelConfig name."""
    out = {}
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if f.name == "size" or v is None or v == "":
        continue
      if isinstance(v, int) and not isinstance(v, bool) and v == 0:
        continue
      out[f.name] = v
    return out


@dataclasses.dataclass(frozen=True)
class MeshSpec:
  """config.mesh: device mesh axes (-1 = the remaining devices)."""
  data: int = -1
  fsdp: int = 1
  tensor: int = 1

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self.data, self.fsdp, self.tensor)


@dataclasses.dataclass(frozen=True)
class InitSpec:
  """config.init: where the weights come from (at most one; '' = random init)."""
  from_checkpoint: str = ""
  from_hf: str = ""


@dataclasses.dataclass(frozen=True)
class OptimSpec:
  """config.optim (train/optim.py's docstring)."""
  lr: float = 3e-4
  schedule: str = "constant"
  warmup: float = 0.0
  final_lr_frac: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.01
  clip_norm: float = 1.0

  def __getitem__(self, name: str) -> Any:   # make_optimizer's `c[name]`
    return getattr(self, name)


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """config.data: the training data. CPT reads domains / files / layout / n_train / n_eval;
  SFT also difficulty, thinking, trace, template, system_prompt, truncation, pack; RL the pool
  (domains, files, pool_limit, n_pool, difficulty), the protocols (n_train, difficulty_filter,
  label_noise, ...) and the prompt format (max_prompt_len, max_answer_len, template, ...)."""
  domains: str = ""                   # comma-separated synthetic domains
  files: str = ""                     # comma-separated data files
  layout: str = "auto"
  tokenizer: str = ""                 # '' = the init source's (or the built-in toy one)
  n_train: int = 0
  n_eval: int = 0
  difficulty: int = 0                 # 0 = the split's default levels
  # SFT
  thinking: bool = True
  trace: str = "faithful"
  truncation: str = "drop"
  pack: bool = False
  # prompt format (SFT, RL)
  template: str = "toy"
  system_prompt: str = "default"      # 'default' = the paper's, '' = none
  prompt_suffix: str = ""
  # RL pool and protocols
  pool_limit: int = 0
  n_pool: int = 0
  difficulty_filter: bool = False
  filter_samples: int = 16
  label_noise: float = 0.0
  label_noise_samples: int = 96
  protocol_seed: int = 0
  protocol_batch_size: int = 16
  max_prompt_len: int = 0
  max_answer_len: int = 32

  @property
  def domain_list(self) -> list[str]:
    return csv_list(self.domains)

  @property
  def file_list(self) -> list[str]:
    return csv_list(self.files)


@dataclasses.dataclass(frozen=True)
class RLConfig:
  """config.rl: the fields of rl/spec.RLSettings (its docstring), whose defaults are these
  (the one place they are set; dual_clip 0 means off, RLSettings' None), and the RL loop's
  switches."""
  group_size: int = 8
  vote_samples: int = 0
  max_new_tokens: int = 0
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  estimator: str = "grpo"
  clip_low: float = 0.2
  clip_high: float = 0.2
  dual_clip: float = 0.0
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
  cache_segments: int = 0             # sampling.SampleConfig.cache_segments (0 = automatic)
  # the loop's
  fused_step: object = "auto"         # auto | True | False (rl/loop.py's docstring)
  profile_phases: bool = False
  pack_update: bool = False           # the update on packed rows (rl/packing.py); phase mode
  stop_after_saturation: int = 0

  @property
  def fused(self) -> bool | str:
    """rl.fused_step as "auto", True or False (strings and 0 / 1 from the command line too);
    ConfigError for anything else."""
    v = self.fused_step
    if isinstance(v, str) and v.strip().lower() in ("auto", "true", "false"):
      return {"auto": "auto", "true": True, "false": False}[v.strip().lower()]
    if isinstance(v, bool) or type(v).__name__ == "bool_" or (isinstance(v, int) and v in (0, 1)):
      return bool(v)
    raise ConfigError(f"rl.fused_step={v!r} must be 'auto', True or False")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """config.reward: weights (reward name -> weight; zero weights unused) and the noise model
  ('' | symmetric_flip | group_flip | asymmetric_flip | bernoulli) with its rates."""
  weights: dict = dataclasses.field(default_factory=dict)
  host_verifier: bool = False
  noise: str = ""
  noise_p: float = 0.0
  noise_fp_rate: float = 0.0
  noise_fn_rate: float = 0.0
  noise_q: float = 0.5

  def __hash__(self):
    return hash(tuple(sorted(self.weights.items())) + (self.host_verifier, self.noise))


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """config.eval: the sets (domains × splits, files) and how they are sampled (harness.EvalOptions
  has the same sampling fields and defaults)."""
  domains: str = ""
  splits: str = "eval"
  n: int = 64
  seed: int = 0
  difficulty: int = 0
  files: str = ""
  layout: str = "auto"
  limit: int = 0
  k: int = 16
  ks: tuple = (1, 4, 8, 16)
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  max_new_tokens: int = 256
  batch_size: int = 16
  greedy: bool = True
  template: str = "toy"
  system_prompt: str = "default"
  prompt_suffix: str = ""
  write_samples: bool = True
  name: str = ""


@dataclasses.dataclass(frozen=True)
class SaturationSpec:
  """config.saturation: diagnostics/saturation.MonitorParams less reward_key."""
  epsilon: float = MonitorParams.epsilon
  warmup: int = MonitorParams.warmup
  patience: int = MonitorParams.patience
  tolerance: float = MonitorParams.tolerance
  window: int | None = MonitorParams.window
  min_r_max: float = MonitorParams.min_r_max

  def params(self, reward_key: str) -> MonitorParams:
    return MonitorParams(**dataclasses.asdict(self), reward_key=reward_key)


@dataclasses.dataclass(frozen=True)
class GuardSection:
  """config.guard: run/guard.GuardSpec less max_nonfinite (the top-level max_nonfinite_steps)."""
  max_update_ratio: float = GuardSpec.max_update_ratio
  loss_spike_nats: float = GuardSpec.loss_spike_nats
  window: int = GuardSpec.window


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """A whole run config, typed. Top-level fields are the run's cadences and sizes."""
  stage: str = ""                     # cpt | sft | rl ('' for eval)
  steps: int = 0
  batch_size: int = 0
  seed: int = 0
  seq_len: int = 0                    # CPT / SFT
  microbatches: int = 1               # CPT / SFT (RL: rl.microbatches)
  z_loss: float = 0.0
  log_every: int = 1
  eval_every: int = 0
  eval_batches: int = 4               # CPT / SFT held-out batches per evaluation
  eval_at_end: bool = True            # RL
  checkpoint_every: int = 0
  keep_checkpoints: int = 2
  keep_best: int = 0                  # CPT / SFT
  max_nonfinite_steps: int = GuardSpec.max_nonfinite
  progress_bar: bool = True
  resume_overrides: bool = False
  tokenizer: str = ""                 # eval: tokenizer path override
  model: ModelSpec = ModelSpec()
  mesh: MeshSpec = MeshSpec()
  init: InitSpec = InitSpec()
  optim: OptimSpec = OptimSpec()
  data: DataSpec = DataSpec()
  rl: RLConfig = RLConfig()
  reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
  eval: EvalSpec = EvalSpec()
  guard: GuardSection = GuardSection()
  saturation: SaturationSpec = SaturationSpec()
  raw: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

  def __hash__(self):
    return id(self)

  @property
  def guard_spec(self) -> GuardSpec:
    """run/guard.GuardSpec of config.guard and max_nonfinite_steps."""
    return GuardSpec(**dataclasses.asdict(self.guard), max_nonfinite=self.max_nonfinite_steps)

  def to_json(self) -> dict:
    """What config.json records: the config as parsed (unchanged from before this module)."""
    return self.raw


# ---------------------------------------------------------------------------------- parse
def _hints(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _type_name(tp) -> str:
  if isinstance(tp, type):
    return tp.__name__
  return str(tp).replace("typing.", "")


def _coerce(path: str, value: Any, tp) -> Any:
  """`value` as type `tp`, or a ConfigError naming `path` and the expected type."""
  origin = typing.get_origin(tp)
  if origin in (typing.Union, types.UnionType):
    args = typing.get_args(tp)
    if value is None and type(None) in args:
      return None
    errors = []
    for a in args:
      if a is type(None):
        continue
      try:
        return _coerce(path, value, a)
      except ConfigError as e:
        errors.append(e)
    raise ConfigError(f"config.{path}={value!r}: expected {_type_name(tp)}")
  if tp is object or tp is Any:
    return value
  if tp is bool:
    if isinstance(value, bool):
      return value
  elif tp is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
  elif tp is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
  elif tp is str:
    if isinstance(value, str):
      return value
  elif tp is tuple or origin is tuple:
    if isinstance(value, str):          # "1,4,8" from the command line
      try:
        return tuple(int(x) for x in value.replace(" ", "").split(",") if x)
      except ValueError:
        pass
    elif isinstance(value, (tuple, list)):
      return tuple(value)
  elif tp is dict:
    if isinstance(value, Mapping) or hasattr(value, "items"):
      return {str(k): v for k, v in dict(value).items()}
  raise ConfigError(f"config.{path}={value!r}: expected {_type_name(tp)}, got "
                    f"{type(value).__name__}")


def _unknown(path: str, name: str, known) -> ConfigError:
  close = difflib.get_close_matches(name, list(known), n=1)
  hint = f"; did you mean {path}{close[0]}?" if close else ""
  return ConfigError(f"unknown config field {path}{name}{hint}")


def parse_section(cls, section: Any, path: str = ""):
  """Dataclass `cls` from a mapping (ConfigDict / dict / None); unknown keys and wrong types
  raise ConfigError naming `path` + the field. A dataclass instance passes through."""
  if isinstance(section, cls):
    return section
  if section is None:
    return cls()
  if hasattr(section, "to_dict"):
    section = section.to_dict()
  if not isinstance(section, Mapping):
    raise ConfigError(f"config.{path.rstrip('.')}={section!r}: expected a section (fields "
                      f"{[f.name for f in dataclasses.fields(cls)]})")
  hints = _hints(cls)
  names = {f.name for f in dataclasses.fields(cls) if f.name != "raw"}
  kw = {}
  for key, value in section.items():
    if key not in names:
      raise _unknown(path, key, names)
    tp = hints[key]
    if dataclasses.is_dataclass(tp):
      kw[key] = parse_section(tp, value, f"{path}{key}.")
    elif value is None and typing.get_origin(tp) not in (typing.Union, types.UnionType) \
        and tp is not object:
      continue                          # None: the field's default
    else:
      kw[key] = _coerce(path + key, value, tp)
  return cls(**kw)


def _plain(config: Any) -> dict:
  if hasattr(config, "to_dict"):
    return config.to_dict()
  return dict(config)


def parse(config: Any) -> RunSpec:
  """RunSpec of a run config (ConfigDict or dict); a RunSpec passes through. Missing fields take
  the defaults above; an unknown field or a wrong type raises ConfigError naming it."""
  if isinstance(config, RunSpec):
    return config
  raw = _plain(config)
  spec = parse_section(RunSpec, raw)
  return dataclasses.replace(spec, raw=_json_ready(config, raw))


def _json_ready(config: Any, raw: dict) -> dict:
  import json
  if hasattr(config, "to_json_best_effort"):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(raw, default=str))


# ---------------------------------------------------------------------------------- validate
def _problems_common(spec: RunSpec, *, positive: tuple[str, ...]) -> list[str]:
  problems = []
  for name in positive:
    v = getattr(spec, name)
    if v < 1:
      problems.append(f"{name}={v} must be >= 1")
  for name in ("eval_every", "checkpoint_every", "max_nonfinite_steps"):
    v = getattr(spec, name)
    if v < 0:
      problems.append(f"{name}={v} must be >= 0 (0 disables)")
  if spec.init.from_hf and spec.init.from_checkpoint:
    problems.append("init.from_hf and init.from_checkpoint are both set; set only one")
  return problems


def validate(spec: RunSpec, cfg=None, mesh=None, *, settings=None, processes: int | None = None
             ) -> None:
  """Every cross-field rule of a CPT / SFT (spec.stage cpt | sft) or RL run (stage rl, with its
  RLSettings `settings`), checked before anything compiles. `cfg`: the resolved ModelConfig,
  `mesh`: the device mesh (either may be None to check only what does not need them).
  Raises ValueError naming each offending field."""
  import jax
  processes = jax.process_count() if processes is None else processes
  rl = spec.stage == "rl"
  positive = ("steps", "batch_size", "log_every") if rl else \
      ("steps", "batch_size", "seq_len", "log_every", "microbatches")
  problems = _problems_common(spec, positive=positive)
  if not rl and cfg is not None and spec.seq_len > cfg.max_seq_len:
    problems.append(f"seq_len={spec.seq_len} exceeds the model's max_seq_len={cfg.max_seq_len};"
                    f" lower seq_len or set model.max_seq_len")
  if not rl and spec.stage == "sft":
    problems += sft_problems(spec.data)
  if rl:
    problems += _rl_problems(spec, cfg, settings)
  if problems:
    raise ConfigError("bad config: " + "; ".join(problems))
  if mesh is None:
    return
  from rlvr_jax import sharding
  from rlvr_jax.train import loop as train_loop, steps
  if rl:
    b = spec.batch_size
    n = b * settings.group_size
    chunks = settings.minibatches * settings.microbatches
    if n % chunks:
      raise ConfigError(f"batch_size x rl.group_size = {b} x {settings.group_size} = {n} rollout"
                        f" rows do not divide into rl.minibatches x rl.microbatches = "
                        f"{settings.minibatches} x {settings.microbatches}; change them so the "
                        f"product divides {n}")
    sharding.check_divisible(b, mesh, "batch_size (prompts per step)")
    sharding.check_divisible(n // chunks, mesh,
                             f"rows per microbatch = batch_size x group_size / (minibatches x "
                             f"microbatches) = {n}/{chunks}")
    if b % processes:
      raise ConfigError(f"batch_size={b} does not divide over {processes} processes")
  else:
    steps.check_batch(spec.batch_size, mesh, spec.microbatches)
    if spec.batch_size % processes:
      raise ConfigError(f"batch_size={spec.batch_size} does not divide over {processes} "
                        f"processes; make it a multiple of it")
  if cfg is not None:
    train_loop.check_model_fits_mesh(cfg, mesh)


def sft_problems(data: DataSpec) -> list[str]:
  """data.trace is known, and an unfaithful trace is trained on (data.thinking)."""
  from rlvr_jax.train.run import TRACES, UNFAITHFUL
  problems = []
  if data.trace not in TRACES:
    problems.append(f"config.data.trace={data.trace!r}; choose one of {list(TRACES)}")
  elif data.trace.startswith(UNFAITHFUL) and not data.thinking:
    problems.append(f"config.data.trace={data.trace!r} trains on (unfaithful) traces but "
                    f"data.thinking=False trains on solutions only; set data.thinking=True or "
                    f"data.trace='none'")
  return problems


def _rl_problems(spec: RunSpec, cfg, settings) -> list[str]:
  problems = []
  group = settings.group_size if settings is not None else spec.rl.group_size
  if group < 2:
    problems.append(f"rl.group_size={group}: every advantage estimator "
                    f"(rl.estimator={spec.rl.estimator!r} included) subtracts the group's mean "
                    f"reward, so with fewer than 2 samples per prompt every advantage is 0 and "
                    f"nothing trains; set rl.group_size >= 2 (the paper: 8)")
  max_prompt = spec.data.max_prompt_len
  if cfg is not None and max_prompt + spec.rl.max_new_tokens > cfg.max_seq_len:
    problems.append(f"data.max_prompt_len={max_prompt} + rl.max_new_tokens="
                    f"{spec.rl.max_new_tokens} exceeds the model's max_seq_len="
                    f"{cfg.max_seq_len}; lower them or set model.max_seq_len")
  try:
    fused = spec.rl.fused
  except ConfigError as e:
    problems.append(str(e))
    fused = "auto"
  if spec.rl.dynamic_sampling == "resample" and fused is True:
    problems.append("rl.dynamic_sampling='resample' samples further prompt batches on demand, "
                    "which the fused step cannot; set rl.fused_step=False or use 'mask'")
  if spec.rl.pack_update and fused is True:
    problems.append("rl.pack_update packs the rollout by its sampled lengths, which the host "
                    "reads between score and update; set rl.fused_step=False or 'auto'")
  if spec.rl.profile_phases and fused is True:
    problems.append("rl.profile_phases times the sample / reward / update phases one by one, "
                    "which the fused step does not separate; set rl.fused_step=False")
  if spec.rl.tis != "none" and spec.rl.old_logprobs != "trainer":
    problems.append(f"rl.tis={spec.rl.tis!r} needs rl.old_logprobs='trainer' (the truncated IS "
                    f"weights correct from the sampler to the trainer's old log-probs), got "
                    f"rl.old_logprobs={spec.rl.old_logprobs!r}; set rl.old_logprobs=trainer or "
                    f"rl.tis=none")
  return problems
