"""The stages of a study: a grid of pre-RL conditions × RL settings × seeds, built once.

A study config (configs/study/toy.py shows the format) names:
  conditions   pre-RL models, each `PRE+SFT`: PRE is `base` (the base model) or `cpt` (the base
               model continued on the domain corpus); SFT is `none` (RL starts from PRE),
               `nothink` (SFT on answers only), `think` (SFT on faithful step-by-step traces) or
               `unfaithful` (SFT on traces whose steps do not support the answer).
  settings     RL settings, each a section `setting.NAME` with a `kind` (scarce | noisy | proxy |
               true), a `label` and `rl`: overrides of the RL config, nested like it.
  seeds        every RL setting runs with seeds 0..seeds-1 (the RL config's `seed`).
  base, cpt, sft, rl, diagnose   the stage configs (the commands' own config sections).

Stages, each in its own run directory under the study directory, named by that directory:
  base                          rlvr-jax cpt from random init on `base.data.domains`; absent
                                when `base_model` names an HF directory / hub id to start from
  cpt                           rlvr-jax cpt from `base` on the domain corpus
  sft/PRE+SFT                   rlvr-jax sft from `base` or `cpt`
  diag/PRE+SFT                  rlvr-jax diagnose of the pre-RL model (faithfulness, diversity)
  rl/PRE+SFT/SETTING/sSEED      rlvr-jax rl from the pre-RL model
A stage is built only when some condition needs it; each stage names the stages it builds on
(`deps`), and the list is in dependency order.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

from rlvr_jax import sweep
from rlvr_jax.config_utils import csv_list
from rlvr_jax.run import paths

PRE_RL = ("base", "cpt")
SFT_KINDS = ("none", "nothink", "think", "unfaithful")
SETTING_KINDS = ("scarce", "noisy", "proxy", "true")
STAGE_KINDS = ("cpt", "sft", "diagnose", "rl")
STUDY_FILE = "study.json"


class StudyError(ValueError):
  """A study config that cannot be planned; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Condition:
  """A pre-RL model: `cpt` says whether the base model was continued on the domain corpus,
  `sft` which SFT (if any) followed."""
  name: str
  cpt: bool
  sft: str

  @property
  def pre_rl_dir(self) -> str:
    """The stage directory (relative to the study) of the model RL starts from."""
    if self.sft == "none":
      return "cpt" if self.cpt else "base"
    return f"sft/{self.name}"


@dataclasses.dataclass(frozen=True)
class Stage:
  """One run of the study: `name` is also its directory relative to the study directory."""
  name: str
  kind: str
  config: Any = dataclasses.field(repr=False, compare=False)
  deps: tuple[str, ...] = ()
  condition: str = ""
  setting: str = ""
  seed: int | None = None

  @property
  def steps(self) -> int:
    """Optimizer steps the stage trains for (0 for diagnose)."""
    return int(self.config.steps) if self.kind != "diagnose" else 0

  def to_dict(self) -> dict[str, Any]:
    return {"name": self.name, "kind": self.kind, "dir": self.name, "deps": list(self.deps),
            "condition": self.condition, "setting": self.setting, "seed": self.seed,
            "steps": self.steps}


@dataclasses.dataclass(frozen=True)
class Study:
  """The planned study: the stages in dependency order and the document study.json holds."""
  root: str
  stages: tuple[Stage, ...]
  doc: dict

  def stage_dir(self, stage: Stage | str) -> str:
    name = stage if isinstance(stage, str) else stage.name
    return os.path.join(self.root, *name.split("/"))

  def by_name(self) -> dict[str, Stage]:
    return {s.name: s for s in self.stages}


def parse_condition(name: str) -> Condition:
  """`cpt+think` -> Condition; a malformed name raises StudyError listing the choices."""
  pre, sep, sft = name.partition("+")
  if not sep or pre not in PRE_RL or sft not in SFT_KINDS:
    raise StudyError(f"conditions: {name!r} is not PRE+SFT with PRE in {PRE_RL} and SFT in "
                     f"{SFT_KINDS} (e.g. cpt+think)")
  return Condition(name, pre == "cpt", sft)


def _copy(section: Any) -> Any:
  return copy.deepcopy(section)


def _set(config: Any, dotted: str, value: Any, where: str) -> None:
  """config.a.b = value for dotted 'a.b'; an unknown field raises StudyError naming `where`."""
  *parents, leaf = dotted.split(".")
  node = config
  for part in parents:
    if part not in node:
      raise StudyError(f"{where}: unknown field {dotted!r}")
    node = node[part]
  if leaf not in node:
    raise StudyError(f"{where}: unknown field {dotted!r}")
  with node.unlocked():
    try:
      node[leaf] = value
    except TypeError as e:
      raise StudyError(f"{where}: {dotted}={value!r}: {e}") from None


def _setting_sections(config: Any) -> dict[str, Any]:
  names = csv_list(config.settings)
  if not names:
    raise StudyError("settings is empty: name at least one RL setting (e.g. scarce)")
  out = {}
  for name in names:
    if name not in config.setting:
      raise StudyError(f"settings: {name!r} has no section setting.{name} (known: "
                       f"{', '.join(config.setting)})")
    section = config.setting[name]
    if str(section.kind) not in SETTING_KINDS:
      raise StudyError(f"setting.{name}.kind={section.kind!r}: choose from {SETTING_KINDS}")
    out[name] = section
  large = str(config.large_setting)
  if large and large not in out:
    raise StudyError(f"large_setting={large!r} is not among settings ({', '.join(out)})")
  return out


def _start_from(config: Any, sub: Any, stage: str, root: str, where: str) -> tuple[str, ...]:
  """Points `sub` at the model of stage `stage` (the base model itself when `base_model` is set
  and stage is base); returns the stages it builds on."""
  base_model = str(config.base_model)
  if stage == "base" and base_model:
    _set(sub, "init.from_hf", base_model, where)
    _set(sub, "init.from_checkpoint", "", where)
    return ()
  _set(sub, "init.from_checkpoint", os.path.join(root, stage), where)
  if "from_hf" in sub.init:
    _set(sub, "init.from_hf", "", where)
  return (stage,)


def _sft_config(config: Any, cond: Condition, root: str) -> tuple[Any, tuple[str, ...]]:
  sub = _copy(config.sft)
  deps = _start_from(config, sub, "cpt" if cond.cpt else "base", root, "sft")
  _set(sub, "data.thinking", cond.sft != "nothink", "sft")
  trace = str(config.unfaithful_trace) if cond.sft == "unfaithful" else "faithful"
  _set(sub, "data.trace", trace, "sft")
  return sub, deps


def _rl_config(config: Any, cond: Condition, name: str, section: Any, seed: int,
               root: str) -> tuple[Any, tuple[str, ...]]:
  sub = _copy(config.rl)
  where = f"setting.{name}.rl"
  for field, value in sweep.flatten(section.rl).items():
    _set(sub, field, value, where)
  deps = _start_from(config, sub, cond.pre_rl_dir, root, "rl")
  _set(sub, "seed", int(seed), "rl")
  return sub, deps


def _diag_config(config: Any, cond: Condition, root: str) -> tuple[Any, tuple[str, ...]]:
  sub = _copy(config.diagnose)
  return sub, _start_from(config, sub, cond.pre_rl_dir, root, "diagnose")


def metric_keys(rl_config: Any) -> tuple[str, list[str]]:
  """The in-domain held-out metric key the RL runs log and the out-of-domain ones:
  eval/DOMAIN_eval/avg@K for the first eval domain, eval/DOMAIN_ood/avg@K for every domain with
  the ood split, and eval/NAME/avg@K for eval.files sets."""
  k = int(rl_config.eval.k)
  domains = csv_list(rl_config.eval.domains)
  splits = csv_list(rl_config.eval.splits)
  named = [e.split("=", 1)[0] for e in csv_list(rl_config.eval.files) if "=" in e]
  in_domain = ([f"{domains[0]}_eval"] if domains and "eval" in splits else []) + named[:1]
  ood = [f"{d}_{s}" for d in domains for s in splits if s != "eval"]
  ood += [f"{d}_eval" for d in domains[1:] if "eval" in splits] + named[1:]
  if not in_domain:
    raise StudyError("rl.eval has no in-domain held-out set: set rl.eval.domains (with the "
                     "'eval' split) or rl.eval.files")
  return f"eval/{in_domain[0]}/avg@{k}", [f"eval/{n}/avg@{k}" for n in ood]


def build(config: Any, workdir: str) -> Study:
  """The study's stages and its study.json document (nothing is run or written)."""
  root = paths.resolve(workdir)
  conditions = [parse_condition(n) for n in csv_list(config.conditions)]
  if not conditions:
    raise StudyError("conditions is empty: name at least one pre-RL condition (e.g. cpt+think)")
  settings = _setting_sections(config)
  seeds = int(config.seeds)
  if seeds < 1:
    raise StudyError(f"seeds={seeds}: run every setting with at least one seed")
  stages: list[Stage] = []
  if not str(config.base_model):
    stages.append(Stage("base", "cpt", _copy(config.base)))
  if any(c.cpt for c in conditions):
    cpt = _copy(config.cpt)
    stages.append(Stage("cpt", "cpt", cpt, deps=_start_from(config, cpt, "base", root, "cpt")))
  for cond in conditions:
    if cond.sft != "none":
      sub, deps = _sft_config(config, cond, root)
      stages.append(Stage(cond.pre_rl_dir, "sft", sub, deps=deps, condition=cond.name))
  if bool(config.diagnose_conditions):
    for cond in conditions:
      sub, deps = _diag_config(config, cond, root)
      stages.append(Stage(f"diag/{cond.name}", "diagnose", sub, deps=deps, condition=cond.name))
  for cond in conditions:
    for name, section in settings.items():
      for seed in range(seeds):
        sub, deps = _rl_config(config, cond, name, section, seed, root)
        stages.append(Stage(f"rl/{cond.name}/{name}/s{seed}", "rl", sub, deps=deps,
                            condition=cond.name, setting=name, seed=seed))
  for stage in stages:
    paths.resolve_config_paths(stage.config)
  metric, ood = metric_keys(config.rl)
  if str(config.metric):
    metric = str(config.metric)
  doc = {
      "name": str(config.name), "metric": metric, "ood_metrics": ood,
      "saturation": {"epsilon": float(config.saturation.epsilon),
                     "margin": int(config.saturation.margin),
                     "window": None if config.saturation.window is None
                     else int(config.saturation.window),
                     "r_max_over": str(config.saturation.r_max_over)},
      "conditions": {c.name: {"cpt": c.cpt, "sft": c.sft, "pre_rl_dir": c.pre_rl_dir}
                     for c in conditions},
      "settings": {n: {"kind": str(s.kind), "label": str(s.label)} for n, s in settings.items()},
      "large_setting": str(config.large_setting),
      "base_model": str(config.base_model),
      "seeds": list(range(seeds)),
      "stages": [s.to_dict() for s in stages],
  }
  return Study(root=root, stages=tuple(stages), doc=doc)
