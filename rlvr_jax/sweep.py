"""`rlvr-jax sweep`: a grid of runs of one command (configs/sweeps/*.py).

  rlvr-jax sweep --config=configs/sweeps/toy_scarce.py --workdir=DIR [--config.x=y ...]

A sweep config names a base command (rl | sft | cpt | pipeline), its base config file, fixed
overrides and a grid. Both `overrides` and `grid` are nested ConfigDicts that mirror the base
config (`c.grid.data.n_train = (8, 32)` sweeps the base field data.n_train); a grid leaf is a
tuple of values. The points are the Cartesian product of the grid fields, except that the
fields of a `zip` group vary together (their tuples have one length). Field order (of the
product and of the names) is alphabetical by dotted field, with the seed axis (`axes.seed`) last.

Each point gets a readable, deterministic name (`n=8_seed=1`: `labels` maps fields to short
labels, default the field's last name) and a run directory ROOT/points/NAME, with ROOT =
`launch.workdir_root` or DIR. DIR/plan.json records every point's name, directory, grid values
and full `--config.x=y` override list. Every point's config is built (cli.parse_config_flags on
the base file + overrides) before anything runs: an unknown field or a bad value fails first,
naming the field and the point.

Three modes:
  run (default)         the points run one after another in this process through the command's
                        runner. A point whose status.json is finished (run.workdir.FINISHED) is
                        skipped, an unfinished one resumes. A failing point is reported in one
                        line and the sweep goes on (exit status 2 at the end); a preempted point
                        (exit status 75) stops the sweep with 75. Then the table is collected.
  emit=tpu_vm|xpk|gpu|local   prints one launch command per point on stdout and nothing else
                        (`... | bash`, `... | parallel`): launch/tpu_vm.sh, launch/xpk.sh,
                        launch/gpu.sh with the launch.* fields, or the plain rlvr-jax command.
  collect=True          runs nothing: gathers every point's metrics.jsonl and its saturation
                        statistics (diagnostics.saturation.analyze_run with the `saturation`
                        settings) into DIR/sweep.csv, DIR/sweep.md and DIR/plots/*.png.

Plots (each only when its axis field varies in the grid; seeds averaged, min-max bars):
  plots/delta_sat_vs_n.png          Δ_sat of `metric` against axes.n
  plots/gamma_tolerance.png         final `metric` (held-out accuracy) against axes.gamma
  plots/t_sat_vs_model_size.png     t_sat against axes.model_size
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib
import io
import itertools
import json
import math
import os
import re
import shlex
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from rlvr_jax.run import files, paths
from rlvr_jax.run.errors import EXIT_PREEMPTED, EXIT_USER_ERROR

COMMANDS = ("rl", "sft", "cpt", "pipeline")
EMIT_KINDS = ("tpu_vm", "xpk", "gpu", "local")
PLAN_FILE = "plan.json"
POINTS_DIR = "points"
# axis -> (plot file, y column kind, y label); the y column is built from `metric` when needed.
PLOTS = {
    "n": ("delta_sat_vs_n.png", "delta_sat", "Δ_sat of {metric}"),
    "gamma": ("gamma_tolerance.png", "final", "final {metric}"),
    "model_size": ("t_sat_vs_model_size.png", "t_sat", "t_sat (step)"),
}
# The fields a sweep config may leave out, with their defaults (configs/sweeps/toy_scarce.py
# has and comments them all); command, base_config and grid are required.
DEFAULTS = {
    "config_dir": "", "zip": (), "labels": (), "emit": "", "collect": False, "metric": "",
    "launch.workdir_root": "", "launch.name_prefix": "sweep", "launch.zone": "",
    "launch.accelerator": "", "launch.cluster": "", "launch.extra_args": "",
    "saturation.epsilon": 0.99, "saturation.margin": 50, "saturation.window": None,
    "saturation.r_max_over": "all", "saturation.reward_key": "reward/mean",
    "axes.n": "data.n_train", "axes.gamma": "data.label_noise", "axes.model_size": "model.size",
    "axes.seed": "seed",
}
_MAX_NAME = 100          # longer point names are cut and given a hash suffix
_MAX_VM_NAME = 63        # Cloud TPU VM names


class SweepError(ValueError):
  """A sweep config that cannot be planned; the message names the field and what to do."""


def opt(config: Any, field: str) -> Any:
  """An optional sweep-config field (DEFAULTS) by dotted name: its value, else the default."""
  from rlvr_jax.config_utils import get_field
  return get_field(config, field, DEFAULTS[field])


@dataclasses.dataclass(frozen=True)
class Point:
  """One grid point: its directory name, (field, value) pairs in plan order and every
  `--config.field=value` override of the base config (the fixed ones, then the grid's)."""
  name: str
  values: tuple[tuple[str, Any], ...]
  overrides: tuple[str, ...]

  def value(self, field: str) -> Any:
    return dict(self.values).get(field)


# ------------------------------------------------------------------------------ the plan (pure)
def flatten(section: Any, prefix: str = "") -> dict[str, Any]:
  """{dotted field: leaf} of a nested ConfigDict (or mapping); sub-sections are recursed into."""
  out: dict[str, Any] = {}
  for key in section.keys():
    value = section[key]
    if hasattr(value, "keys"):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def grid_fields(grid: Any) -> dict[str, tuple]:
  """{dotted field: tuple of values} of the grid section, each checked to be a non-empty tuple
  (or list) of distinct values."""
  out = {}
  for field, values in flatten(grid).items():
    if not isinstance(values, (tuple, list)) or not values:
      raise SweepError(f"grid.{field} must be a non-empty tuple of values, got {values!r} (one "
                       f"value for every point goes into `overrides`)")
    if len({repr(v) for v in values}) != len(values):
      raise SweepError(f"grid.{field} repeats a value: {tuple(values)!r}")
    out[field] = tuple(values)
  return out


def field_order(fields: Sequence[str], seed_field: str = "") -> list[str]:
  """The plan's field order: alphabetical by dotted name, the seed field last."""
  return sorted(fields, key=lambda f: (f == seed_field, f))


def parse_labels(labels: Sequence[str]) -> dict[str, str]:
  """("data.n_train=n", ...) -> {"data.n_train": "n"}."""
  out = {}
  for item in labels or ():
    field, eq, label = str(item).partition("=")
    if not eq or not field.strip() or not re.fullmatch(r"[A-Za-z0-9.+-]+", label.strip()):
      raise SweepError(f"labels: {item!r} is not FIELD=LABEL with a label of letters, digits, "
                       f"'.', '+' or '-' (e.g. 'data.n_train=n')")
    out[field.strip()] = label.strip()
  return out


def field_labels(fields: Sequence[str], given: Mapping[str, str] | None = None) -> dict[str, str]:
  """A short, unique label per field: the given one, else the shortest dotted tail that no
  other field shares (data.n_train -> n_train; a.lr and b.lr -> a.lr, b.lr)."""
  given = dict(given or {})
  out = {}
  for field in fields:
    if field in given:
      out[field] = given[field]
      continue
    parts = field.split(".")
    for i in range(len(parts) - 1, -1, -1):
      tail = ".".join(parts[i:])
      if not any(o != field and (o == tail or o.endswith("." + tail)) for o in fields):
        break
    out[field] = tail
  seen: dict[str, str] = {}
  for field, label in out.items():
    if label in seen:
      raise SweepError(f"labels: fields {seen[label]} and {field} both have the label "
                       f"{label!r}; give them different ones")
    seen[label] = field
  return out


def name_value(value: Any) -> str:
  """A value as it appears in a point's directory name (file-name safe)."""
  if isinstance(value, (tuple, list)):
    text = "-".join(name_value(v) for v in value)
  elif isinstance(value, float):
    text = repr(value)
  else:
    text = str(value)
  text = re.sub(r"[^A-Za-z0-9.+-]+", "-", text.replace(os.sep, "-")).strip("-")
  return text or "none"


def format_value(value: Any) -> str:
  """A value as the right-hand side of `--config.field=value` (ml_collections' flag syntax)."""
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  if isinstance(value, float):
    return repr(value)
  return str(value)


def _short(name: str, limit: int) -> str:
  if len(name) <= limit:
    return name
  digest = hashlib.sha1(name.encode()).hexdigest()[:8]
  return f"{name[:limit - 9].rstrip('-_.')}-{digest}"


def zip_units(fields: Sequence[str], groups: Sequence[Sequence[str]],
              grid: Mapping[str, tuple]) -> list[tuple[str, ...]]:
  """The product's factors in plan order: each zip group (fields varying together) or single
  field, placed at its first field's position."""
  owner: dict[str, tuple[str, ...]] = {}
  for group in groups or ():
    group = tuple(str(f) for f in group)
    if not group:
      continue
    missing = [f for f in group if f not in grid]
    if missing:
      raise SweepError(f"zip group {group} names {missing}, which the grid does not have; a "
                       f"zip group's fields must all be grid fields")
    twice = [f for f in group if f in owner]
    if twice:
      raise SweepError(f"zip: {twice} appear in more than one group")
    lengths = {f: len(grid[f]) for f in group}
    if len(set(lengths.values())) > 1:
      raise SweepError(f"zip group {group}: the fields vary together, so their value tuples "
                       f"need one length, got {lengths}")
    for f in group:
      owner[f] = tuple(f2 for f2 in fields if f2 in group)
  units, seen = [], set()
  for f in fields:
    unit = owner.get(f, (f,))
    if unit not in seen:
      seen.add(unit)
      units.append(unit)
  return units


def make_plan(grid: Mapping[str, tuple], overrides: Mapping[str, Any], *,
              zip_groups: Sequence[Sequence[str]] = (), labels: Mapping[str, str] | None = None,
              seed_field: str = "") -> list[Point]:
  """Every point of the grid, in order (the last factor varies fastest)."""
  both = sorted(set(grid) & set(overrides))
  if both:
    raise SweepError(f"{both} are both in `grid` and in `overrides`; keep each field in one")
  if not grid:
    raise SweepError("the grid is empty: give at least one field, e.g. c.grid.seed = (0, 1)")
  nones = [f for f, v in overrides.items() if v is None] + \
      [f for f, vs in grid.items() if any(v is None for v in vs)]
  if nones:
    raise SweepError(f"{nones}: None cannot be given as --config.FIELD=VALUE; leave the field out "
                     f"to keep the base config's value")
  fields = field_order(list(grid), seed_field)
  units = zip_units(fields, zip_groups, grid)
  names = field_labels(fields, labels)
  fixed = [f"--config.{k}={format_value(v)}" for k, v in sorted(overrides.items())]
  points = []
  for combo in itertools.product(*(range(len(grid[u[0]])) for u in units)):
    chosen = {f: grid[f][i] for unit, i in zip(units, combo) for f in unit}
    values = tuple((f, chosen[f]) for f in fields)
    name = _short("_".join(f"{names[f]}={name_value(v)}" for f, v in values), _MAX_NAME)
    swept = [f"--config.{f}={format_value(v)}" for f, v in values]
    points.append(Point(name=name, values=values, overrides=tuple(fixed + swept)))
  by_name: dict[str, Point] = {}
  for p in points:
    if p.name in by_name:
      raise SweepError(f"points {dict(by_name[p.name].values)} and {dict(p.values)} get one "
                       f"directory name {p.name!r}; give the fields distinct values or labels")
    by_name[p.name] = p
  return points


def check_fields(base: Any, fields: Sequence[str], what: str, base_path: str,
                 command: str = "COMMAND") -> None:
  """Every dotted field must exist in the base config (`what` names the section)."""
  for field in fields:
    node = base
    for part in field.split("."):
      if not hasattr(node, "keys") or part not in node.keys():
        raise SweepError(f"{what} field {field!r} is not a field of {base_path} (no {part!r} "
                         f"there); `rlvr-jax {command} --config={base_path} --help` lists them")
      node = node[part]
    if hasattr(node, "keys"):
      raise SweepError(f"{what} field {field!r} of {base_path} is a section, not a value; name "
                       f"one of its fields")


# ------------------------------------------------------------------------------ the sweep spec
@dataclasses.dataclass(frozen=True)
class Sweep:
  """A checked sweep config: the command, its base config file and the points."""
  command: str
  base_config: str          # absolute path
  points: tuple[Point, ...]
  root: str                 # where the points' run directories go (ROOT/points/NAME)
  seed_field: str

  def point_dir(self, point: Point) -> str:
    return join(self.root, POINTS_DIR, point.name)


def join(root: str, *parts: str) -> str:
  """os.path.join that keeps a URL root (gs://b) a URL."""
  return "/".join([root.rstrip("/"), *parts]) if paths.is_url(root) else os.path.join(root, *parts)


def plan_sweep(config: Any, workdir: str) -> Sweep:
  """The Sweep of a sweep config: command and base file checked, every grid / override field
  checked against the base config (SweepError naming the field)."""
  from rlvr_jax import cli
  for field in ("command", "base_config", "grid"):
    if field not in config:
      raise SweepError(f"the sweep config has no {field!r} field (configs/sweeps/toy_scarce.py "
                       f"shows the format)")
  command = str(config.command)
  if command not in COMMANDS:
    raise SweepError(f"command={command!r}: a sweep runs one of {', '.join(COMMANDS)}")
  base = str(config.base_config)
  if not base:
    raise SweepError("base_config is empty: name the base config file (e.g. ../toy/rl.py)")
  if not os.path.isabs(base) and not paths.is_url(base):
    base = os.path.normpath(os.path.join(str(opt(config, "config_dir")) or os.getcwd(), base))
  if not os.path.isfile(base):
    raise SweepError(f"base_config={config.base_config}: no such file {base} (relative paths "
                     f"are relative to config_dir={opt(config, 'config_dir') or os.getcwd()})")
  base_cfg = cli.load_config_module(base).get_config()
  grid = grid_fields(config.grid)
  overrides = flatten(config.overrides) if "overrides" in config else {}
  check_fields(base_cfg, sorted(overrides), "overrides", base, command)
  check_fields(base_cfg, sorted(grid), "grid", base, command)
  seed_field = str(opt(config, "axes.seed"))
  points = make_plan(grid, overrides, zip_groups=opt(config, "zip"),
                     labels=parse_labels(opt(config, "labels")), seed_field=seed_field)
  root = str(opt(config, "launch.workdir_root")) or workdir
  return Sweep(command=command, base_config=base, points=tuple(points),
               root=paths.resolve(root), seed_field=seed_field)


def point_config(sweep: Sweep, point: Point):
  """The point's config: the base file and the point's overrides through the CLI's own parser
  (unknown or ill-typed fields fail here, naming the point); paths made absolute."""
  from rlvr_jax import cli
  argv = [f"rlvr-jax {sweep.command}", f"--config={sweep.base_config}", *point.overrides]
  try:
    config, _ = cli.parse_config_flags(argv, needs_workdir=False)
  except cli.UsageError as e:
    raise SweepError(f"point {point.name}: {e}") from None
  paths.resolve_config_paths(config)
  return config


def plan_doc(sweep: Sweep) -> dict:
  """The plan.json document."""
  return {"command": sweep.command, "base_config": sweep.base_config,
          "points": [{"name": p.name, "workdir": sweep.point_dir(p),
                      "values": {f: _jsonable(v) for f, v in p.values},
                      "overrides": list(p.overrides)} for p in sweep.points]}


def _jsonable(v: Any) -> Any:
  return list(v) if isinstance(v, tuple) else v


def changed_points(old: Mapping | None, new: Mapping) -> list[str]:
  """Names of the points whose override list differs from the previous plan.json's."""
  before = {p["name"]: p.get("overrides") for p in (old or {}).get("points", [])}
  return [p["name"] for p in new["points"]
          if p["name"] in before and before[p["name"]] != p["overrides"]]


# ----------------------------------------------------------------------------------- emitting
def _vm_names(prefix: str, points: Sequence[Point]) -> dict[str, str]:
  """A Cloud TPU VM name per point: lowercase letters, digits and '-', unique, <= 63 chars."""
  out = {}
  for p in points:
    raw = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", f"{prefix}-{p.name}".lower())).strip("-")
    if not raw[:1].isalpha():
      raw = "p-" + raw
    name = _short(raw, _MAX_VM_NAME)
    if name in out.values():
      name = _short(f"{raw}-{hashlib.sha1(p.name.encode()).hexdigest()[:6]}", _MAX_VM_NAME)
    out[p.name] = name
  return out


def _config_arg(base_config: str) -> str:
  """The base config as the launched command names it: relative to the repository when it lies
  inside (launchers run from the repository root), else as it is."""
  from rlvr_jax.cli import REPO_ROOT
  rel = os.path.relpath(base_config, REPO_ROOT)
  return base_config if rel.startswith("..") else rel


def launch_commands(sweep: Sweep, kind: str, launch: Mapping[str, Any]) -> list[str]:
  """One shell command per point (module docstring), shell-quoted; `launch` holds the launch.*
  fields by their last name (zone, accelerator, cluster, name_prefix, extra_args)."""
  if kind not in EMIT_KINDS:
    raise SweepError(f"emit={kind!r}: choose one of {', '.join(EMIT_KINDS)} ('' runs the points "
                     f"here)")
  need = {"tpu_vm": ("zone", "accelerator"), "xpk": ("cluster", "zone", "accelerator")}
  missing = [f"launch.{f}" for f in need.get(kind, ()) if not str(launch.get(f) or "")]
  if missing:
    raise SweepError(f"emit={kind} needs {', '.join(missing)} (e.g. --config.{missing[0]}=...)")
  extra = shlex.split(str(launch.get("extra_args") or ""))
  vm = _vm_names(str(launch.get("name_prefix") or "sweep"), sweep.points) \
      if kind == "tpu_vm" else {}
  out = []
  for p in sweep.points:
    inner = ["rlvr-jax", sweep.command, f"--config={_config_arg(sweep.base_config)}",
             f"--workdir={sweep.point_dir(p)}", *p.overrides]
    head = {"local": [],
            "gpu": ["bash", "launch/gpu.sh", *extra, "--"],
            "tpu_vm": ["bash", "launch/tpu_vm.sh", "--name", vm.get(p.name, ""), "--zone",
                       str(launch.get("zone")), "--accelerator", str(launch.get("accelerator")),
                       *extra, "--"],
            "xpk": ["bash", "launch/xpk.sh", "--cluster", str(launch.get("cluster")), "--zone",
                    str(launch.get("zone")), "--tpu-type", str(launch.get("accelerator")),
                    *extra, "--"],
            }[kind]
    out.append(" ".join(shlex.quote(a) for a in head + inner))
  return out


# ------------------------------------------------------------------------------ running
def run_dir_of(command: str, config: Any, point_dir: str) -> str:
  """The directory holding the point's metrics.jsonl: the point's own, or for `pipeline` its
  last training stage's (POINT/rl)."""
  if command != "pipeline":
    return point_dir
  stages = [s.strip() for s in str(config.stages).split(",") if s.strip() and s.strip() != "eval"]
  return join(point_dir, stages[-1]) if stages else point_dir


def finished_status(command: str, config: Any, point_dir: str) -> str | None:
  """The point's finished status (completed / saturated / data_exhausted), else None."""
  from rlvr_jax.run import workdir as workdir_lib
  doc = workdir_lib.read_status(run_dir_of(command, config, point_dir)) \
      if files.exists(point_dir) else None
  status = (doc or {}).get("status")
  if status not in workdir_lib.FINISHED:
    return None
  if command == "pipeline" and "eval" in str(config.stages) and \
      not files.exists(join(point_dir, "report.json")):
    return None
  return status


def _runner(command: str):
  from rlvr_jax.cli import COMMANDS as CLI_COMMANDS
  cmd = CLI_COMMANDS[command]
  return getattr(importlib.import_module(cmd.module), cmd.function)


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def run_points(sweep: Sweep, configs: Sequence[Any]) -> tuple[int, dict[str, str]]:
  """Runs (or resumes, or skips) every point in order. Returns (exit status, {failed point:
  one-line reason}): 0, EXIT_USER_ERROR when a point failed, EXIT_PREEMPTED at a preempted one."""
  from rlvr_jax import cli
  from rlvr_jax.run import workdir as workdir_lib
  fn = _runner(sweep.command)
  failed: dict[str, str] = {}
  n = len(sweep.points)
  for i, (point, config) in enumerate(zip(sweep.points, configs), 1):
    pdir = sweep.point_dir(point)
    done = finished_status(sweep.command, config, pdir)
    if done:
      _log(f"sweep: [{i}/{n}] {point.name}: {done}; skipped")
      continue
    _log(f"=== sweep point [{i}/{n}] {point.name} -> {pdir}")
    try:
      cli.make_workdir(pdir)
      with workdir_lib.locked(pdir):
        rc = int(fn(config, pdir) or 0)
    except Exception as e:  # noqa: BLE001 - a failing point is reported and the sweep goes on
      if os.environ.get("RLVR_JAX_TRACEBACK"):
        traceback.print_exc()
      failed[point.name] = cli._one_line(e)   # pylint: disable=protected-access
      _log(f"sweep: point {point.name} failed: {failed[point.name]}")
      continue
    if rc == EXIT_PREEMPTED:
      _log(f"sweep: point {point.name} was preempted (checkpoint saved); stopping the sweep. Run "
           f"the same command again to resume")
      return EXIT_PREEMPTED, failed
    if rc:
      failed[point.name] = f"exit status {rc}"
      _log(f"sweep: point {point.name} failed: exit status {rc}")
  return (EXIT_USER_ERROR if failed else 0), failed


# ------------------------------------------------------------------------------ collecting
def saturation_params(config: Any):
  """The SaturationParams of the sweep config's `saturation` section."""
  from rlvr_jax.diagnostics import saturation as sat
  window = opt(config, "saturation.window")
  return sat.SaturationParams(
      epsilon=float(opt(config, "saturation.epsilon")),
      margin=int(opt(config, "saturation.margin")),
      window=None if window is None else int(window),
      reward_key=str(opt(config, "saturation.reward_key")),
      r_max_over=str(opt(config, "saturation.r_max_over")))


def _last(series: Mapping[int, float] | None) -> float | None:
  return series[max(series)] if series else None


def point_row(point: Point, metrics: Mapping[str, Mapping[int, float]] | None,
              analysis: Mapping[str, Any] | None, status: str) -> dict[str, Any]:
  """One table row (pure): the point, its grid values, its status and last step, t_sat, r_max,
  T, the true reward's t_sat, final reward/mean and reward/true_mean, and per eval metric K:
  delta_sat:K, delta_post:K and final:K (the value at its last evaluation)."""
  from rlvr_jax.diagnostics import saturation as sat
  metrics = metrics or {}
  analysis = analysis or {}
  steps = [s for series in metrics.values() for s in series]
  row: dict[str, Any] = {"point": point.name, **dict(point.values), "status": status,
                         "step": max(steps) if steps else None,
                         "t_sat": analysis.get("t_sat"), "r_max": analysis.get("r_max"),
                         "T": analysis.get("T"),
                         "true_t_sat": (analysis.get("true_reward") or {}).get("t_sat")}
  for key in (sat.REWARD_KEY, sat.TRUE_REWARD_KEY):
    row[f"final:{key}"] = _last(metrics.get(key))
  for key in sat.eval_keys(metrics):
    row[f"delta_sat:{key}"] = (analysis.get("delta_sat") or {}).get(key)
    row[f"delta_post:{key}"] = (analysis.get("delta_post") or {}).get(key)
    row[f"final:{key}"] = _last(metrics.get(key))
  return row


def read_point(sweep: Sweep, point: Point, config: Any, params) -> dict[str, Any]:
  """The row of one point from its run directory (missing files give empty cells)."""
  from rlvr_jax.diagnostics import saturation as sat
  from rlvr_jax.run import workdir as workdir_lib
  run_dir = run_dir_of(sweep.command, config, sweep.point_dir(point))
  if not files.exists(join(run_dir, "metrics.jsonl")):
    status = (workdir_lib.read_status(run_dir) or {}).get("status") \
        if files.exists(run_dir) else None
    return point_row(point, None, None, status or "not started")
  try:
    metrics = sat.read_metrics(run_dir)
  except (OSError, ValueError) as e:   # a malformed record: the row says so, the table goes on
    _log(f"sweep: {point.name}: cannot read its metrics: {e}")
    return point_row(point, None, None, "unreadable metrics.jsonl")
  try:
    analysis = sat.analyze_run(metrics, params)
  except ValueError:
    analysis = None          # no reward yet (or a cpt / sft run): finals only
  status = (workdir_lib.read_status(run_dir) or {}).get("status") or "unknown"
  return point_row(point, metrics, analysis, status)


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  """Every column of the rows, in the order the first row that has it lists it."""
  out: dict[str, None] = {}
  for row in rows:
    out.update(dict.fromkeys(row))
  return list(out)


def _cell(value: Any) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return repr(value) if math.isfinite(value) else ""
  if isinstance(value, (tuple, list)):
    return format_value(value)
  return str(value)


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
  """The rows as CSV text with a header (empty cells for missing values)."""
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(columns)
  for row in rows:
    writer.writerow([_cell(row.get(c)) for c in columns])
  return buf.getvalue()


def _md_num(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.3f}" if math.isfinite(value) else ""
  return _cell(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                   headers: Sequence[str] | None = None) -> str:
  """A GitHub markdown table of `columns` (floats to 3 decimals, None empty)."""
  headers = list(headers or columns)
  lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
  for row in rows:
    lines.append("| " + " | ".join(_md_num(row.get(c)) for c in columns) + " |")
  return "\n".join(lines)


def accuracy_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  """The accuracy-type eval keys (avg@k, pass@k, maj@k, greedy ...) the rows have, sorted."""
  from rlvr_jax.diagnostics import plots
  keys = {c.split(":", 1)[1]: 1.0 for c in columns_of(rows) if c.startswith("final:eval/")}
  return sorted(plots.default_plot_keys(keys))


def pick_metric(rows: Sequence[Mapping[str, Any]], metric: str) -> str | None:
  """The held-out metric of the plots and the seed table: `metric` when given, else the first
  eval/*/avg@k key, else the first accuracy-type key; None when the rows have none."""
  keys = accuracy_keys(rows)
  if metric:
    return metric
  avg = [k for k in keys if re.search(r"/avg@\d+$", k)]
  return (avg or keys or [None])[0]


def aggregate(rows: Sequence[Mapping[str, Any]], x_field: str, y_col: str,
              fields: Sequence[str], seed_field: str, x_order: Sequence[Any],
              labels: Mapping[str, str] | None = None
              ) -> dict[str, list[tuple[Any, float, float, float, int]]]:
  """{line label: [(x, mean, min, max, seeds with a value)]}: the rows grouped by every grid
  field except x and the seed into lines, the seeds of each x averaged (None values left out;
  an x with no value left out). `x_order` is the x values' order (the grid's); `labels` names
  the fields in the line labels."""
  labels = labels or {}
  others = [f for f in fields if f not in (x_field, seed_field)]
  lines: dict[str, dict[Any, list[float]]] = {}
  for row in rows:
    label = ", ".join(f"{labels.get(f, f)}={_cell(row.get(f))}" for f in others) or "all"
    y = row.get(y_col)
    bucket = lines.setdefault(label, {}).setdefault(repr(row.get(x_field)), [])
    if isinstance(y, (int, float)) and not isinstance(y, bool) and math.isfinite(y):
      bucket.append(float(y))
  out = {}
  for label, by_x in lines.items():
    pts = [(x, sum(v) / len(v), min(v), max(v), len(v))
           for x in x_order for v in [by_x.get(repr(x), [])] if v]
    out[label] = pts
  return out


def seed_table(rows: Sequence[Mapping[str, Any]], fields: Sequence[str], seed_field: str,
               cols: Sequence[str]) -> list[dict[str, Any]]:
  """Rows averaged over the seed field: one row per combination of the other grid fields, each
  column in `cols` as 'mean [min, max]' over the seeds that have a value."""
  others = [f for f in fields if f != seed_field]
  groups: dict[tuple, list[Mapping[str, Any]]] = {}
  for row in rows:
    groups.setdefault(tuple(repr(row.get(f)) for f in others), []).append(row)
  out = []
  for members in groups.values():
    agg: dict[str, Any] = {f: members[0].get(f) for f in others}
    agg["seeds"] = len(members)
    for col in cols:
      vals = [float(m[col]) for m in members if isinstance(m.get(col), (int, float))
              and not isinstance(m.get(col), bool) and math.isfinite(m[col])]
      agg[col] = (f"{sum(vals) / len(vals):.3f} [{min(vals):.3f}, {max(vals):.3f}]" if vals
                  else "")
    out.append(agg)
  return out


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def plot_axis(series: Mapping[str, list[tuple]], path: str, *, x_label: str, y_label: str,
              x_order: Sequence[Any], title: str) -> str:
  """One line per series with min-max error bars; numeric x on a numeric (log2 when it spans
  a factor >= 8) axis, other x as categories in grid order. Writes the PNG; returns the path."""
  from matplotlib.figure import Figure
  from rlvr_jax.diagnostics.plots import save_png
  numeric = all(_is_number(x) for x in x_order)
  pos = {repr(x): (x if numeric else i) for i, x in enumerate(x_order)}
  fig = Figure(figsize=(6.5, 4.2))
  ax = fig.subplots()
  for i, (label, pts) in enumerate(series.items()):
    if not pts:
      continue
    xs = [pos[repr(p[0])] for p in pts]
    mean = [p[1] for p in pts]
    err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
    seeds = max(p[4] for p in pts)
    ax.errorbar(xs, mean, yerr=err, marker="o", capsize=4, linewidth=1.3, color=f"C{i % 10}",
                label=f"{label} ({seeds} seed{'s' if seeds != 1 else ''})")
  if numeric and min(x_order) > 0 and max(x_order) / min(x_order) >= 8:
    ax.set_xscale("log", base=2)
  if numeric:
    ax.set_xticks(list(x_order))
    ax.set_xticklabels([_cell(x) for x in x_order])
  else:
    ax.set_xticks(range(len(x_order)))
    ax.set_xticklabels([_cell(x) for x in x_order])
  ax.set_xlabel(x_label)
  ax.set_ylabel(y_label)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="best")
  ax.set_title(title, fontsize=10)
  return save_png(fig, path)


def make_plots(rows: Sequence[Mapping[str, Any]], sweep: Sweep, grid: Mapping[str, tuple],
               axes: Mapping[str, str], metric: str | None, out_dir: str,
               labels: Mapping[str, str] | None = None) -> list[str]:
  """The axis plots (module docstring) whose axis field varies in the grid; returns the paths."""
  fields = [f for f, _ in sweep.points[0].values]
  written = []
  for axis, (fname, kind, y_label) in PLOTS.items():
    field = str(axes.get(axis) or "")
    if not field or len(grid.get(field, ())) < 2:
      continue
    if kind != "t_sat" and not metric:
      _log(f"sweep: no held-out metric in the runs; {fname} skipped")
      continue
    y_col = "t_sat" if kind == "t_sat" else f"{kind}:{metric}"
    series = aggregate(rows, field, y_col, fields, sweep.seed_field, grid[field], labels)
    if not any(series.values()):
      _log(f"sweep: no point has {y_col} yet; {fname} skipped")
      continue
    written.append(plot_axis(series, join(out_dir, fname), x_label=f"{axis} ({field})",
                             y_label=y_label.format(metric=metric), x_order=grid[field],
                             title=f"{y_label.format(metric=metric)} vs {axis}"))
  return written


def _md_header(col: str, labels: Mapping[str, str]) -> str:
  if col in labels:
    return labels[col]
  kind, _, key = col.partition(":")
  key = key[len("eval/"):] if key.startswith("eval/") else key
  return {"delta_sat": f"Δ_sat {key}", "final": key}.get(kind, col) if key else col


def collect(sweep: Sweep, configs: Sequence[Any], config: Any, out_dir: str) -> dict[str, Any]:
  """Writes OUT/sweep.csv, OUT/sweep.md and OUT/plots/*.png; returns {"rows", "columns",
  "markdown", "plots"}."""
  params = saturation_params(config)
  rows = [read_point(sweep, p, c, params) for p, c in zip(sweep.points, configs)]
  columns = columns_of(rows)
  files.write_text(join(out_dir, "sweep.csv"), to_csv(rows, columns))
  fields = [f for f, _ in sweep.points[0].values]
  labels = field_labels(fields, parse_labels(opt(config, "labels")))
  acc = accuracy_keys(rows)
  md_cols = ["point", *fields, "status", "step", "t_sat", "final:reward/mean",
             *(["final:reward/true_mean"] if any(r.get("final:reward/true_mean") is not None
                                                  for r in rows) else []),
             *[f"{kind}:{k}" for k in acc for kind in ("delta_sat", "final")]]
  md_cols = [c for c in md_cols if c in columns]
  text = [f"# sweep: {sweep.command} on {os.path.relpath(sweep.base_config)}", "",
          markdown_table(rows, md_cols, [_md_header(c, labels) for c in md_cols])]
  metric = pick_metric(rows, str(opt(config, "metric")))
  grid = grid_fields(config.grid)
  if sweep.seed_field in grid and len(grid[sweep.seed_field]) > 1:
    cols = ["t_sat", *([f"delta_sat:{metric}", f"final:{metric}"] if metric else []),
            "final:reward/mean"]
    table = seed_table(rows, fields, sweep.seed_field, cols)
    heads = [*(labels[f] for f in fields if f != sweep.seed_field), "seeds",
             *(_md_header(c, labels) for c in cols)]
    keys = [*(f for f in fields if f != sweep.seed_field), "seeds", *cols]
    text += ["", f"## mean over {labels.get(sweep.seed_field, sweep.seed_field)} [min, max]", "",
             markdown_table(table, keys, heads)]
  markdown = "\n".join(text) + "\n"
  files.write_text(join(out_dir, "sweep.md"), markdown)
  axes = {a: str(opt(config, f"axes.{a}")) for a in PLOTS}
  written = make_plots(rows, sweep, grid, axes, metric, join(out_dir, "plots"), labels)
  return {"rows": rows, "columns": columns, "markdown": markdown, "plots": written}


# ------------------------------------------------------------------------------ the command
def run(config: Any, workdir: str) -> int:
  """`rlvr-jax sweep` (module docstring)."""
  sweep = plan_sweep(config, workdir)
  emit, collect_only = str(opt(config, "emit")), bool(opt(config, "collect"))
  if emit and collect_only:
    raise SweepError("emit and collect are two modes: set one of them")
  configs = [point_config(sweep, p) for p in sweep.points]   # every point checked first
  launch = {f.split(".", 1)[1]: opt(config, f) for f in DEFAULTS if f.startswith("launch.")}
  lines = launch_commands(sweep, emit, launch) if emit else []
  doc = plan_doc(sweep)
  plan_path = join(workdir, PLAN_FILE)
  old = json.loads(files.read_text(plan_path)) if files.exists(plan_path) else None
  for name in changed_points(old, doc):
    _log(f"sweep: warning: point {name} has other overrides than in the previous {PLAN_FILE}; a "
         f"finished point keeps its results (move {join(sweep.root, POINTS_DIR, name)} aside "
         f"to rerun it), an unfinished one is refused on resume")
  files.write_json(plan_path, doc)
  if emit:
    if emit != "local" and not paths.is_url(sweep.root):
      _log(f"sweep: note: the points' workdirs are under {sweep.root}, a path of this machine; "
           f"set --config.launch.workdir_root=gs://BUCKET/DIR for runs on other machines")
    for line in lines:
      print(line, flush=True)
    _log(f"sweep: {len(sweep.points)} {emit} commands; plan in {plan_path}")
    return 0
  rc, failed = (0, {}) if collect_only else run_points(sweep, configs)
  if rc == EXIT_PREEMPTED:
    return rc
  result = collect(sweep, configs, config, workdir)
  print(result["markdown"], flush=True)
  for path in result["plots"]:
    _log(f"sweep: wrote {path}")
  _log(f"sweep: wrote {join(workdir, 'sweep.csv')} and sweep.md ({len(sweep.points)} points)")
  for name, why in failed.items():
    _log(f"sweep: FAILED {name}: {why}")
  return rc
