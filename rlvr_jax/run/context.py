"""The run context: what a CPT, SFT or RL run is, resolved once when it starts.

`build(spec, workdir, ...)` resolves, in this order and once each: the init source (at most one
of init.from_hf / init.from_checkpoint, checked to exist: run.init.resolve_source), the
tokenizer (which defaults to the init source's), the model config and the device mesh. The
stages take the `RunContext` it returns instead of re-deriving any of these.

The model config has one rule for every stage: a run initialised from loaded weights that is
being resumed (it has checkpoints and a config.json) keeps the config it recorded, with the
config.model overrides (numerics may change, the architecture may not: run.init.with_overrides);
otherwise the init source's (a named size with the tokenizer's vocabulary unless
model.vocab_size is set), so that a changed model.size on resume meets the run directory's
architecture check (run.workdir.check_resume). Its vocabulary must hold the tokenizer's ids.
The initial weights always come from the init source (`ctx.init`), also when resuming (RL's
reference model): a resume refuses an init source whose weight shapes are no longer the ones
the run recorded.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from jax.sharding import Mesh

from rlvr_jax import sharding, specs
from rlvr_jax.model.config import SHAPE_FIELDS, ModelConfig
from rlvr_jax.run import files, paths
from rlvr_jax.run import init as init_lib


@dataclasses.dataclass(frozen=True)
class RunContext:
  """spec: the parsed config, its stage set. workdir: the run directory, absolute (the caller
  holds its lock). init: where the initial weights come from. cfg: the run's ModelConfig.
  mesh: the device mesh. tokenizer: the run's tokenizer (None where the caller's batches come
  tokenised and it named none). resuming: the run directory holds checkpoints to resume."""
  spec: specs.RunSpec
  workdir: str
  init: init_lib.InitSource
  cfg: ModelConfig
  mesh: Mesh
  tokenizer: Any = None
  resuming: bool = False


def is_resume(workdir: str) -> bool:
  """The run directory holds a checkpoint and the config.json it was written with."""
  from rlvr_jax.train import checkpoints as ckpt_lib
  return bool(ckpt_lib.run_steps(workdir)) and files.exists(
      files.as_path(workdir) / ckpt_lib.CONFIG_FILE)


def _check_same_shapes(init: init_lib.InitSource, recorded: ModelConfig, workdir: str) -> None:
  """A resumed run's init source (its weights are loaded again: RL's reference model) must still
  have the weight shapes the run recorded (ValueError naming the fields)."""
  now = init_lib.base_config(init)
  changed = [f"{name} {getattr(recorded, name)} -> {getattr(now, name)}" for name in SHAPE_FIELDS
             if getattr(recorded, name) != getattr(now, name)]
  if changed:
    raise ValueError(f"{init.ref} ({init.description}) no longer has the weight shapes the run in "
                     f"{workdir} started from: {', '.join(changed)}; point init.* at the weights "
                     f"the run started from, or choose a new --workdir")


def build(config, workdir: str, stage: str, *, tokenizer_spec: str | None = None,
          base: ModelConfig | None = None) -> RunContext:
  """The RunContext of a `stage` ("cpt" | "sft" | "rl") run of `config` in `workdir`.

  tokenizer_spec: the tokenizer to resolve (data/builtin.resolve_tokenizer; its copy is kept in
  the run directory), after the init source it may default to. base: a model config given by
  the caller (a pipeline's previous stage, or a named size already sized to a tokenizer): it
  replaces the init source's for a fresh run."""
  spec = dataclasses.replace(specs.parse(config), stage=stage)
  workdir = paths.resolve(workdir)
  init = init_lib.resolve_source(spec)
  tokenizer = None
  if tokenizer_spec is not None:
    from rlvr_jax.data import builtin
    files.makedirs(workdir)
    tokenizer = builtin.resolve_tokenizer(tokenizer_spec, workdir)
  resuming = is_resume(workdir)
  if base is not None:
    cfg = init_lib.model_config(spec, base=base)
  elif resuming and init.loaded:
    recorded = init_lib.resolve_source(spec, resume_dir=workdir)
    recorded_cfg = init_lib.base_config(recorded)          # its config.json, read once
    _check_same_shapes(init, recorded_cfg, workdir)
    cfg = init_lib.with_overrides(recorded_cfg, spec.model.overrides(), loaded_from=recorded.ref)
  else:       # a named size: a change of model.size on resume is refused by check_resume
    vocab = tokenizer.vocab_size if tokenizer is not None else 0
    cfg = init_lib.model_config(spec, init, vocab_size=vocab)
  if tokenizer is not None:
    init_lib.check_vocab(spec, cfg, tokenizer, init)
  mesh = sharding.make_mesh(spec.mesh.shape)
  return RunContext(spec=spec, workdir=workdir, init=init, cfg=cfg, mesh=mesh,
                    tokenizer=tokenizer, resuming=resuming)
