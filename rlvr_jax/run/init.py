"""Where a run's model comes from: the one resolver of the init source, the model config, the
params and the tokenizer path, shared by cpt / sft (train/), rl (rl/), eval / diagnose (eval/)
and plan (plan.py).

  source = resolve_source(spec)            # InitSource: hf | checkpoint | size | resume
  cfg = model_config(spec, source)         # its config.json / named size + config.model.*
  params = load_params(spec, cfg, mesh, workdir, source=source)   # None for a named size
  tok = tokenizer_path(spec)               # data/builtin.tokenizer_source: the one precedence

The base config: the run directory being resumed (its config.json), else init.from_hf's
config.json, else init.from_checkpoint's config.json, else the named size `model.size` (with
the tokenizer's vocabulary unless model.vocab_size is set). Then the config.model.* overrides:
with loaded weights (resume, HF, checkpoint) the architecture overrides must agree with them
(max_seq_len excepted), numerics (dtype, param_dtype, remat) may change.
"""
from __future__ import annotations

import dataclasses
import os

from rlvr_jax import specs
from rlvr_jax.model.config import SHAPE_FIELDS, ModelConfig
from rlvr_jax.run import paths

# Model fields a run config may override (None = keep the size's / checkpoint's value).
ARCH_FIELDS = tuple(f for f in SHAPE_FIELDS if f != "qkv_bias") + ("max_seq_len", "rope_theta")
NUMERIC_FIELDS = ("dtype", "param_dtype", "remat", "attention", "scan_unroll")
KINDS = ("hf", "checkpoint", "size", "resume")
CONFIG_FILE = "config.json"


@dataclasses.dataclass(frozen=True)
class InitSource:
  """Where the model config (and the weights) come from.

  kind: "hf" (init.from_hf), "checkpoint" (init.from_checkpoint), "size" (model.size, random
  init) or "resume" (the run directory being resumed: its recorded config).
  path: the local HF directory (fetched when a bucket / hub id), the run or params directory,
  the resumed run directory; '' for a size.
  step: the checkpoint step given as PATH:STEP (None: the newest finished one).
  ref: the source as configured (init.from_hf / init.from_checkpoint value, the resumed
  directory, the size name); errors name it.
  description: where the model config is read from (a config.json path, or "SIZE (model.size)").
  """
  kind: str
  path: str = ""
  step: int | None = None
  ref: str = ""
  description: str = ""

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"InitSource.kind={self.kind!r} is not one of {KINDS}")

  @property
  def loaded(self) -> bool:
    """Whether weights (and so the architecture) come from disk."""
    return self.kind != "size"

  @property
  def config_path(self) -> str:
    return os.path.join(self.path, CONFIG_FILE) if self.loaded else ""


def _size_source(size: str) -> InitSource:
  return InitSource("size", ref=str(size), description=f"{size} (model.size)")


def resolve_source(config, *, resume_dir: str | None = None, local: bool = False) -> InitSource:
  """The run's InitSource (at most one of init.from_hf / init.from_checkpoint; checked to exist).

  resume_dir: a run directory being resumed (its recorded config wins over init.*).
  local=True (plan): nothing is fetched or checked; an init source without a config.json on
  this disk resolves to the named size."""
  spec = specs.parse(config)
  from_hf, from_ckpt = spec.init.from_hf, spec.init.from_checkpoint
  if from_hf and from_ckpt:
    raise ValueError(f"set only one of init.from_hf={from_hf!r} and init.from_checkpoint="
                     f"{from_ckpt!r}")
  if resume_dir:
    return InitSource("resume", str(resume_dir), ref=str(resume_dir),
                      description=os.path.join(str(resume_dir), CONFIG_FILE))
  if local:
    if from_hf and os.path.isfile(os.path.join(from_hf, CONFIG_FILE)):
      return InitSource("hf", from_hf, ref=from_hf,
                        description=os.path.join(from_hf, CONFIG_FILE))
    ckpt_dir, step = paths.parse_checkpoint_ref(from_ckpt)
    if from_ckpt and os.path.isfile(os.path.join(ckpt_dir, CONFIG_FILE)):
      return InitSource("checkpoint", ckpt_dir, step, ref=from_ckpt,
                        description=os.path.join(ckpt_dir, CONFIG_FILE))
    return _size_source(spec.model.size)
  if from_hf:   # a local / bucket directory or a hub id: fetched here, before anything reads it
    from rlvr_jax.model.hub import resolve_hf_source
    path = resolve_hf_source(from_hf)
    return InitSource("hf", path, ref=from_hf, description=os.path.join(path, CONFIG_FILE))
  if from_ckpt:
    path, step = paths.parse_checkpoint_ref(from_ckpt)
    if not paths.is_url(path) and not os.path.isdir(path):
      raise FileNotFoundError(f"init.from_checkpoint={from_ckpt}: {path} is not a directory; "
                              f"give a run directory (or a params directory), PATH[:STEP]")
    return InitSource("checkpoint", path, step, ref=from_ckpt,
                      description=os.path.join(path, CONFIG_FILE))
  return _size_source(spec.model.size)


def base_config(source: InitSource, *, vocab_size: int = 0) -> ModelConfig:
  """The source's ModelConfig before the config.model overrides: the recorded config.json of a
  run / params checkpoint, the HF config.json, or the named size (`vocab_size`: its vocabulary,
  0 = the size's)."""
  if source.kind == "hf":
    from rlvr_jax.model import hf
    return hf.config_from_hf(hf.read_hf_config(source.path), source=source.config_path)
  if source.kind in ("checkpoint", "resume"):
    from rlvr_jax.train.checkpoints import read_model_config
    return read_model_config(source.path)
  from rlvr_jax.model.sizes import get_model_config
  return get_model_config(source.ref, vocab_size=vocab_size or None)


def with_overrides(base: ModelConfig, overrides: dict, *, loaded_from: str = "") -> ModelConfig:
  """`base` with the config.model overrides. With `loaded_from` (the weights' source), an
  architecture override must agree with `base` (max_seq_len excepted): ValueError naming it."""
  for name, v in overrides.items():
    if loaded_from and name in ARCH_FIELDS and name != "max_seq_len" and getattr(base, name) != v:
      raise ValueError(f"config.model.{name}={v} differs from {loaded_from} "
                       f"({getattr(base, name)}); unset it (the loaded weights fix the "
                       f"architecture)")
  return base.replace(**overrides)


def model_config(config, source: InitSource | None = None, *, base: ModelConfig | None = None,
                 vocab_size: int = 0) -> ModelConfig:
  """The run's ModelConfig: `base` (given by the caller: a pipeline's previous stage) with the
  overrides, else the source's base config (resolve_source when not given) with them.
  vocab_size: the tokenizer's, for a named size without model.vocab_size."""
  spec = specs.parse(config)
  overrides = spec.model.overrides()
  if base is not None:
    return with_overrides(base, overrides)
  source = source if source is not None else resolve_source(spec)
  return with_overrides(base_config(source, vocab_size=spec.model.vocab_size or vocab_size),
                        overrides, loaded_from=source.ref if source.loaded else "")


def eval_model_config(config, source: InitSource) -> ModelConfig:
  """The config eval / diagnose load a model with: model_config, except that an HF model given a
  compute dtype (model.dtype) and no param_dtype is stored in that dtype (load_hf's rule)."""
  spec = specs.parse(config)
  cfg = model_config(spec, source)
  if source.kind == "hf" and spec.model.dtype and not spec.model.param_dtype:
    cfg = cfg.replace(param_dtype=cfg.dtype)
  return cfg


def check_vocab(config, cfg: ModelConfig, tokenizer, source: InitSource) -> None:
  """The model's vocabulary holds the tokenizer's ids (ValueError naming the field to change)."""
  spec = specs.parse(config)
  n = tokenizer.vocab_size
  vocab = spec.model.vocab_size
  if not source.loaded and vocab and vocab < n:
    raise ValueError(f"config.model.vocab_size={vocab} is smaller than the tokenizer's {n} ids; "
                     f"set it to 0 (= the tokenizer's) or larger")
  if cfg.vocab_size < n:
    raise ValueError(f"the model's vocab_size={cfg.vocab_size} is smaller than the tokenizer's "
                     f"{n} (data.tokenizer={spec.data.tokenizer!r}); use the tokenizer the model "
                     f"was trained with")


def run_model_config(config, tokenizer, source: InitSource | None = None) -> ModelConfig:
  """A run's ModelConfig given its tokenizer (a named size takes the tokenizer's vocabulary
  unless model.vocab_size is set), checked to hold the tokenizer's ids."""
  spec = specs.parse(config)
  source = source if source is not None else resolve_source(spec)
  cfg = model_config(spec, source, vocab_size=tokenizer.vocab_size)
  check_vocab(spec, cfg, tokenizer, source)
  return cfg


def tokenizer_path(config, explicit: str | None = None) -> str:
  """The run's tokenizer source (data/builtin.tokenizer_source: the one precedence); `explicit`
  replaces data.tokenizer (eval's `tokenizer`)."""
  from rlvr_jax.data.builtin import tokenizer_source
  spec = specs.parse(config)
  return tokenizer_source(spec.data.tokenizer if explicit is None else explicit,
                          from_hf=spec.init.from_hf, from_checkpoint=spec.init.from_checkpoint)


def load_params(config, cfg: ModelConfig, mesh, workdir: str | None = None, *,
                source: InitSource | None = None):
  """Initial params of `cfg` from the init source, or None (a named size: random init).

  HF: model.hf.load_hf in cfg's dtype / param_dtype. A run checkpoint given without :STEP must
  have finished (run.workdir.require_finished); the run and step used are recorded in
  `workdir`/init.json, and a resumed run (init.json records them) starts from that step again."""
  from rlvr_jax.run import workdir as workdir_lib
  from rlvr_jax.train import checkpoints as ckpt_lib
  spec = specs.parse(config)
  source = source if source is not None else resolve_source(spec)
  if source.kind == "hf":
    from rlvr_jax.model.hf import load_hf
    _, params = load_hf(source.path, dtype=cfg.dtype, param_dtype=cfg.param_dtype, mesh=mesh)
    return params
  if source.kind != "checkpoint":
    return None
  path, step = source.path, source.step
  recorded = workdir_lib.read_init(workdir) if workdir is not None else None
  if recorded and os.path.normpath(str(recorded.get("from"))) == os.path.normpath(path) and \
      step is None and recorded.get("step") is not None:
    # A resumed run starts from what it started from the first time (its KL reference too),
    # even if the source run has moved on since (a pipeline or study rebuilds such a stage).
    return ckpt_lib.load_params(path, int(recorded["step"]), mesh=mesh)
  workdir_lib.require_finished(source.ref, "init.from_checkpoint")
  if workdir is not None:
    done = ckpt_lib.run_steps(path)
    workdir_lib.record_init(workdir, path, step if step is not None else
                            (done[-1] if done else None), explicit=step is not None)
  return ckpt_lib.load_params(path, step, mesh=mesh)


def load_checkpoint(source: InitSource, mesh):
  """(params, the step read) of a run / params checkpoint source (step None for params-only;
  the newest readable step when none was given: train.checkpoints.load_model_step)."""
  from rlvr_jax.train import checkpoints as ckpt_lib
  _, params, step = ckpt_lib.load_model_step(source.path, source.step, mesh=mesh)
  return params, step
