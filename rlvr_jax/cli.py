"""`rlvr-jax COMMAND --config=PATH --workdir=DIR [--config.key=value ...]`.

Every command reads an ml_collections config file (`get_config()`), applies `--config.*`
overrides (an unknown or ill-typed field fails here, before anything compiles) and calls the
command's `run(config, workdir)`. `bench` takes a sub-benchmark name and passes the remaining
arguments to it.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import traceback
from typing import Callable

USAGE = """usage: rlvr-jax COMMAND --config=PATH --workdir=DIR [--config.key=value ...]

commands:
{commands}

`rlvr-jax COMMAND --help` shows the command's flags. `rlvr-jax bench NAME --help` for benchmarks.
"""


@dataclasses.dataclass(frozen=True)
class Command:
  module: str
  function: str
  help: str
  needs_workdir: bool = True


COMMANDS: dict[str, Command] = {
    "pipeline": Command("rlvr_jax.pipeline", "run",
                        "the built-in end-to-end job: data → tokenizer → CPT → SFT → eval on toy domains"),
    "data": Command("rlvr_jax.data.materialize", "run",
                    "generate, materialise (JSONL / ArrayRecord / TFDS) and inspect datasets"),
    "cpt": Command("rlvr_jax.train.run", "run_cpt", "continual pre-training (packed LM loss)"),
    "sft": Command("rlvr_jax.train.run", "run_sft", "supervised fine-tuning on reasoning traces"),
    "rl": Command("rlvr_jax.rl.loop", "run", "RL with verifiable / noisy / proxy rewards (GRPO family)"),
    "eval": Command("rlvr_jax.eval.harness", "run", "avg@k / pass@k / maj@k evaluation of a checkpoint"),
    "convert": Command("rlvr_jax.convert", "run", "HF directory <-> orbax checkpoint conversion"),
    "bench": Command("rlvr_jax.bench", "main", "benchmarks: forward, train, sample, data",
                     needs_workdir=False),
}


class UsageError(Exception):
  pass


# What a command raises for bad input; `main` prints these as one clear error line (exit 2).
INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
                IsADirectoryError)


def _usage() -> str:
  width = max(map(len, COMMANDS))
  lines = [f"  {name.ljust(width)}  {cmd.help}" for name, cmd in COMMANDS.items()]
  return USAGE.format(commands="\n".join(lines))


def _resolve(cmd: Command) -> Callable:
  try:
    module = importlib.import_module(cmd.module)
  except ModuleNotFoundError as e:
    if e.name and e.name.startswith(cmd.module.rsplit(".", 1)[0].split(".")[0]):
      raise UsageError(f"this command is not available yet in this version ({cmd.module} is "
                       f"missing)") from e
    raise
  return getattr(module, cmd.function)


def parse_config_flags(argv: list[str], *, needs_workdir: bool = True):
  """Parses `--config=PATH --workdir=DIR --config.x=y` with absl + ml_collections.

  Returns (config, workdir). Raises UsageError naming the field for unknown or ill-typed
  overrides and for a missing --config / --workdir.
  """
  from absl import flags
  from ml_collections import config_flags

  fv = flags.FlagValues()
  config_flag = config_flags.DEFINE_config_file("config", None, "path to a config file",
                                                flag_values=fv, lock_config=True,
                                                sys_argv=list(argv))
  flags.DEFINE_string("workdir", None, "run directory (created; resumed when it exists)",
                      flag_values=fv)
  try:
    fv(argv)
  except flags.Error as e:
    raise UsageError(str(e)) from None
  except (AttributeError, KeyError) as e:
    detail = str(e.args[0] if e.args else e)
    for junk in ("\\'", "'", '\\n', '\n'):
      detail = detail.replace(junk, " ")
    detail = " ".join(detail.split())
    bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    raise UsageError(f"unknown config field among {bad}: {detail}") from None
  if fv["config"].value is None:
    raise UsageError("--config=PATH is required (e.g. --config=configs/toy/sft.py)")
  config = config_flag.value
  error = getattr(config, "__dict__", {}).get("_error")
  if error is not None:  # ml_collections defers config-file errors to first attribute access
    raise UsageError(f"cannot load config file {fv['config'].config_filename}: {error}")
  if needs_workdir and not fv.workdir:
    raise UsageError("--workdir=DIR is required")
  return config, fv.workdir


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  prog, args = "rlvr-jax", argv[1:]
  if not args or args[0] in ("-h", "--help", "help"):
    print(_usage())
    return 0 if args else 2
  name, rest = args[0], args[1:]
  if name not in COMMANDS:
    print(f"rlvr-jax: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
    return 2
  cmd = COMMANDS[name]
  try:
    if name == "bench":
      return int(_resolve(cmd)([f"{prog} bench", *rest]) or 0)
    if any(a in ("-h", "--help") for a in rest):
      print(f"usage: {prog} {name} --config=PATH --workdir=DIR [--config.key=value ...]\n\n"
            f"{cmd.help}")
      return 0
    config, workdir = parse_config_flags([f"{prog} {name}", *rest],
                                         needs_workdir=cmd.needs_workdir)
    fn = _resolve(cmd)
    _setup_runtime()
    return int(fn(config, workdir) or 0)
  except UsageError as e:
    print(f"rlvr-jax {name}: error: {e}", file=sys.stderr)
    return 2
  except INPUT_ERRORS as e:
    # Bad input (a config value, a data row, a path) is reported as its message, which names
    # the file/row/field and what to do, without a traceback around it.
    if os.environ.get("RLVR_JAX_TRACEBACK"):
      raise
    frame = traceback.extract_tb(e.__traceback__)[-1]
    print(f"rlvr-jax {name}: error: {e}\n  ({type(e).__name__} at {frame.filename}:{frame.lineno}; "
          f"RLVR_JAX_TRACEBACK=1 shows the whole traceback)", file=sys.stderr)
    return 2


def _setup_runtime() -> None:
  """absl flags parsed (grain workers need it), multi-host init, a persistent compile cache."""
  from absl import flags as absl_flags
  if not absl_flags.FLAGS.is_parsed():
    absl_flags.FLAGS(["rlvr-jax"], known_only=True)
  import jax
  from rlvr_jax import sharding
  sharding.maybe_initialize_distributed()
  cache_dir = os.environ.get("RLVR_JAX_COMPILE_CACHE", os.path.expanduser("~/.cache/rlvr_jax/jit"))
  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


if __name__ == "__main__":
  sys.exit(main())
