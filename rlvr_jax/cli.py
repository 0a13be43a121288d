"""`rlvr-jax COMMAND --config=PATH --workdir=DIR [--config.key=value ...]`.

Every command reads an ml_collections config file (`get_config()`), applies `--config.*`
overrides (an unknown or ill-typed field fails here, before anything compiles), makes every user
path absolute (the workdir and the config's path fields: run.paths), turns a run stage's config
(cpt, sft, rl, eval) into its typed specs.RunSpec once (an unknown field or a wrong type fails
here, named), locks the workdir and calls the command's `run(config, workdir)`. `bench` takes a
sub-benchmark name and passes the remaining arguments to it. On a host without accelerators the
command first restarts itself once with glibc malloc tuned to keep freed memory
(run/host_memory.py; RLVR_JAX_HOST_MALLOC=0 turns it off).

Exit statuses (run.errors): 0 done; 2 bad input or a run the user must act on, printed as one
line that names the file / field / step and what to do (RLVR_JAX_TRACEBACK=1 shows the
traceback); 75 preempted (a checkpoint was saved: run the same command again); 1 a bug.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
import sys
from typing import Callable

from rlvr_jax.run import host_memory, paths
from rlvr_jax.run.errors import EXIT_USER_ERROR, RunError

USAGE = """usage: rlvr-jax COMMAND --config=PATH --workdir=DIR [--config.key=value ...]

commands:
{commands}

`rlvr-jax COMMAND --help` lists the command's config fields with their defaults and comments
(`--config=PATH --help` for another config file). `rlvr-jax bench NAME --help` for benchmarks.
"""
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Command:
  module: str
  function: str
  help: str
  needs_workdir: bool = True
  default_config: str = ""   # the config `--help` describes (relative to the repository)
  locks_workdir: bool = True  # one process at a time in WORKDIR (run.workdir.locked)
  no_lock_when: tuple[str, ...] = ()  # fields that, when true, leave the runs alone: no lock
  typed: bool = False         # a run stage: gets the specs.RunSpec (parsed once, here)


COMMANDS: dict[str, Command] = {
    "pipeline": Command("rlvr_jax.pipeline", "run",
                        "the built-in end-to-end job: toy domains → CPT → SFT → RL → eval",
                        default_config="configs/toy/pipeline.py"),
    "data": Command("rlvr_jax.data.materialize", "run",
                    "generate, materialise (JSONL / ArrayRecord / TFDS) and inspect datasets",
                    default_config="configs/data.py"),
    "cpt": Command("rlvr_jax.train.run", "run_cpt", "continual pre-training (packed LM loss)",
                   default_config="configs/toy/cpt.py", typed=True),
    "sft": Command("rlvr_jax.train.run", "run_sft", "supervised fine-tuning on reasoning traces",
                   default_config="configs/toy/sft.py", typed=True),
    "rl": Command("rlvr_jax.rl.loop", "run",
                  "RL with verifiable / noisy / proxy rewards (GRPO family)",
                  default_config="configs/toy/rl.py", typed=True),
    "eval": Command("rlvr_jax.eval.harness", "run",
                    "avg@k / pass@k / maj@k evaluation of a checkpoint",
                    default_config="configs/toy/eval.py", typed=True),
    "diagnose": Command("rlvr_jax.diagnostics.diagnose", "run",
                        "saturation dynamics of a run; faithfulness and diversity of a model",
                        default_config="configs/diagnose.py"),
    "sweep": Command("rlvr_jax.sweep", "run",
                     "a grid of rl / sft / cpt / pipeline runs: run, emit launch commands, "
                     "collect a table", default_config="configs/sweeps/toy_scarce.py",
                     no_lock_when=("collect", "emit")),
    "study": Command("rlvr_jax.study.runner", "run",
                     "a study: pre-RL conditions × RL settings × seeds, then a report with "
                     "verdicts on the paper's findings", default_config="configs/study/quick.py",
                     no_lock_when=("dry_run",)),
    "convert": Command("rlvr_jax.convert", "run", "HF directory <-> orbax checkpoint conversion",
                       default_config="configs/convert.py", locks_workdir=False),
    "bench": Command("rlvr_jax.bench", "main", "benchmarks: forward, train, sample, data",
                     needs_workdir=False),
    "plan": Command("rlvr_jax.plan", "run",
                    "memory per device, step FLOPs and time of a config on an accelerator",
                    needs_workdir=False, default_config="configs/plan.py",
                    locks_workdir=False),
}


class UsageError(Exception):
  pass


# What a command raises for bad input or a run the user must act on; `main` prints these as
# one clear error line (exit 2). OSError covers a full disk, a read-only or missing directory and
# denied permissions: the message names the path.
INPUT_ERRORS = (ValueError, OSError, RunError)


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


def _config_path(argv: list[str]) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def load_config_module(path: str):
  """The config file's module, checked: it exists, parses and defines get_config() (each
  failure is one UsageError line naming the file, and the line for a syntax error)."""
  if not os.path.isfile(path):
    base, _, _arg = path.rpartition(":")      # ml_collections' PATH:ARG form
    if base and os.path.isfile(base):
      path = base
    else:
      raise UsageError(f"config file {path} not found (paths are relative to the current "
                       f"directory: {os.getcwd()})")
  with open(path) as f:
    source = f.read()
  try:
    compile(source, path, "exec")
  except SyntaxError as e:
    raise UsageError(f"{path}:{e.lineno}: syntax error in the config file: {e.msg}") from None
  spec = importlib.util.spec_from_file_location("_rlvr_jax_config", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 - any error of the user's file, reported as one line
    raise UsageError(f"cannot load config file {path}: {type(e).__name__}: {e}") from None
  if not callable(getattr(module, "get_config", None)):
    raise UsageError(f"{path} defines no get_config(); a config file's get_config() returns an "
                     f"ml_collections.ConfigDict (see configs/toy/cpt.py)")
  try:
    module.get_config()
  except Exception as e:  # noqa: BLE001 - the user's code, reported as one line
    raise UsageError(f"{path}: get_config() failed: {type(e).__name__}: {e}") from None
  return module


def parse_config_flags(argv: list[str], *, needs_workdir: bool = True):
  """Parses `--config=PATH --workdir=DIR --config.x=y` with absl + ml_collections.

  Returns (config, workdir). Raises UsageError naming the field for unknown or ill-typed
  overrides and for a missing --config / --workdir.
  """
  from absl import flags
  from ml_collections import config_flags

  path = _config_path(argv[1:])
  if path is None:
    raise UsageError("--config=PATH is required (e.g. --config=configs/toy/sft.py)")
  load_config_module(path)
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
  return config, (paths.resolve(fv.workdir) if fv.workdir else fv.workdir)


def main(argv: list[str] | None = None) -> int:
  if argv is None:          # the console command: on a CPU host, restart with malloc tuned
    host_memory.reexec_if_needed(sys.argv)
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
      print(command_help(name, cmd, _config_path(rest)))
      return 0
    config, workdir = parse_config_flags([f"{prog} {name}", *rest],
                                         needs_workdir=cmd.needs_workdir)
    paths.resolve_config_paths(config)
    if cmd.typed:     # the one ConfigDict -> RunSpec conversion; nothing below reads the dict
      from rlvr_jax import specs
      config = specs.parse(config)
    fn = _resolve(cmd)
    _setup_runtime()
    _quiet_library_noise()
    read_only = any(getattr(config, field, None) if cmd.typed else
                    (field in config and config[field]) for field in cmd.no_lock_when)
    if not workdir or not cmd.locks_workdir or read_only:  # convert: only a new directory
      return int(fn(config, workdir) or 0)
    from rlvr_jax.run import workdir as workdir_lib
    make_workdir(workdir)
    with workdir_lib.locked(workdir):
      return int(fn(config, workdir) or 0)
  except UsageError as e:
    print(f"rlvr-jax {name}: error: {e}", file=sys.stderr)
    return EXIT_USER_ERROR
  except BrokenPipeError:        # `rlvr-jax ... --help | head`
    return 0
  except INPUT_ERRORS as e:
    # Bad input (a config value, a data row, a path) or a run to act on is reported as its
    # message, which names the file/row/field and what to do, without a traceback around it.
    if os.environ.get("RLVR_JAX_TRACEBACK"):
      raise
    print(f"rlvr-jax {name}: error: {_one_line(e)}", file=sys.stderr)
    return EXIT_USER_ERROR


def make_workdir(workdir: str) -> None:
  """Creates --workdir (a URL is left to its file system), or says in one line why it can't."""
  if paths.is_url(workdir):
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UsageError(f"--workdir={workdir} is a file, not a directory; choose another path")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UsageError(f"cannot create --workdir={workdir}: {e.strerror}; choose a directory you "
                     f"can write to") from None


def _one_line(e: BaseException) -> str:
  """The exception's message on one line; an OSError as 'what: path' plus what to do."""
  if isinstance(e, OSError) and not isinstance(e, (FileNotFoundError, FileExistsError)) and \
      e.errno is not None:
    where = f": {e.filename}" if e.filename else ""
    advice = {28: "free some space or choose another --workdir; checkpoints already written are "
                  "intact, rerun to resume",
              30: "the file system is read-only: choose another --workdir",
              13: "permission denied: choose a path you can write to",
              1: "operation not permitted: choose a path you can write to",
              20: "a part of the path is a file, not a directory: choose another path"
              }.get(e.errno, "")
    return f"{e.strerror}{where}" + (f"; {advice}" if advice else "")
  text = " ".join(str(e).split()) or type(e).__name__
  if "os_error_code=28" in text or "No space left on device" in text:   # tensorstore / orbax
    where = re.search(r'writing "([^"]+)"', text)
    return (f"no space left on device{' writing ' + where.group(1) if where else ''}; free some "
            f"space or choose another --workdir; checkpoints already written are intact, rerun "
            f"to resume")
  if len(text) > 400:
    text = text[:400] + " ..."
  return text if isinstance(e, (ValueError, RunError, OSError)) else f"{type(e).__name__}: {text}"


# ---------------------------------------------------------------------------------- --help
def command_help(name: str, cmd: Command, config_path: str | None) -> str:
  """The usage line and every field of the command's config: default and comment."""
  path = config_path or (os.path.join(REPO_ROOT, cmd.default_config) if cmd.default_config
                         else None)
  head = (f"usage: rlvr-jax {name} --config=PATH --workdir=DIR [--config.key=value ...]\n\n"
          f"{cmd.help}\n")
  if not path or (not config_path and not os.path.isfile(path)):
    return head                 # an installed package without the repository's configs/
  module = load_config_module(path)
  base, _, arg = path.rpartition(":")
  config_file = path if os.path.isfile(path) or not base else base
  config = module.get_config(arg) if config_file != path else module.get_config()
  comments = field_comments(config_file)
  rows = []
  for key, value in _flat_items(config):
    comment = _lookup_comment(key, comments)
    rows.append((f"--config.{key}={value!r}", comment))
  width = min(max(len(r[0]) for r in rows), 60) if rows else 0
  lines = [f"  {flag.ljust(width)}  {comment}".rstrip() for flag, comment in rows]
  return head + f"\nconfig fields of {os.path.relpath(config_file)} (default, meaning):\n" + \
      "\n".join(lines)


def _flat_items(config, prefix: str = ""):
  for key in config.keys():
    value = config[key]
    if hasattr(value, "keys") and hasattr(value, "unlocked"):
      yield from _flat_items(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


_FIELD_LINE = re.compile(r"^\s*c((?:\.\w+)+)\s*=.*?#\s*(.+)$")
_LOADED = re.compile(r"""^\s*c((?:\.\w+)*)\s*=\s*(?:load_config_file\(__file__,\s*|_load\()"""
                     r"""["']([\w./-]+)["']""")


def field_comments(path: str, prefix: str = "") -> dict[str, str]:
  """{dotted field: its one-line comment} from the config file and the files it builds on
  (`c = load_config_file(__file__, "cpt.py")`, `c.cpt = _load("cpt")`), under their prefix."""
  out: dict[str, str] = {}
  with open(path) as f:
    lines = f.read().splitlines()
  for line in lines:
    m = _LOADED.match(line)
    if m:
      name = m.group(2) if m.group(2).endswith(".py") else f"{m.group(2)}.py"
      other = os.path.join(os.path.dirname(os.path.abspath(path)), name)
      sub = prefix + (m.group(1)[1:] + "." if m.group(1) else "")
      if os.path.isfile(other) and os.path.abspath(other) != os.path.abspath(path):
        out.update(field_comments(other, sub))
  for line in lines:
    m = _FIELD_LINE.match(line)
    if m and not _LOADED.match(line):
      out[prefix + m.group(1)[1:]] = m.group(2).strip()
  return out


def _lookup_comment(key: str, comments: dict[str, str]) -> str:
  """The field's comment in its config file, else the help of a section built in code
  (guard.*, saturation.*), matched on the key's tail (pipeline stages prefix their fields)."""
  from rlvr_jax.diagnostics.saturation import MONITOR_HELP
  from rlvr_jax.run.guard import FIELD_HELP
  if key in comments:
    return comments[key]
  built = {**FIELD_HELP, **MONITOR_HELP}
  parts = key.split(".")
  for i in range(len(parts)):
    if ".".join(parts[i:]) in built:
      return built[".".join(parts[i:])]
  return ""


class _OneLineLibraryErrors:
  """A logging filter for orbax's background threads (absl logger): an error they log keeps
  its first line and loses its traceback; the command's own last line says what happened."""

  def filter(self, record) -> bool:
    if record.exc_info and record.levelno >= 40:
      record.exc_info = None
      record.exc_text = None
      record.msg = " ".join(str(record.getMessage()).split())[:300]
      record.args = ()
    return True


def _quiet_library_noise() -> None:
  """Without RLVR_JAX_TRACEBACK=1, failures inside orbax / tensorstore do not bury the one-line
  error under hundreds of lines: their background-thread tracebacks become one line each, and
  'Exception ignored' reports of reads left pending when a checkpoint failed to load (the
  warning or error line already names the step and the file) are dropped."""
  if os.environ.get("RLVR_JAX_TRACEBACK"):
    return
  import logging
  for name in ("absl", "asyncio"):
    logging.getLogger(name).addFilter(_OneLineLibraryErrors())
  default_hook = sys.unraisablehook

  def hook(unraisable):
    text = f"{unraisable.exc_value!r} {unraisable.object!r}"
    if any(k in text for k in ("coroutine", "Event loop is closed", "TensorStore")):
      return
    default_hook(unraisable)
  sys.unraisablehook = hook


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
