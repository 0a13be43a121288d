"""User paths, made absolute once at the CLI boundary.

orbax (and tensorstore) reject relative paths and misread `../x`; everything below the CLI
therefore sees absolute local paths, or URLs (`gs://bucket/run`) left as they are.
"""
from __future__ import annotations

import os
import re
from typing import Any

# Config leaves that hold paths, by their last name. `files` is a comma-separated list whose
# items may be NAME=PATH; `from_checkpoint` and `src` may end in :STEP.
PATH_FIELDS = ("from_checkpoint", "from_hf", "src", "tokenizer", "files", "run", "data_dir")


def is_url(path: str) -> bool:
  """gs://bucket/x and other URLs, and `scheme:NAME` sources such as tfds:gsm8k (not files)."""
  return "://" in path or bool(re.match(r"^[a-z][a-z0-9_]+:(?!\\)", path))


def resolve(path: str) -> str:
  """An absolute, normalised local path ('' and URLs unchanged)."""
  path = str(path or "")
  if not path or is_url(path):
    return path
  return os.path.abspath(os.path.expanduser(path))


def parse_checkpoint_ref(ref: str) -> tuple[str, int | None]:
  """'PATH' or 'PATH:STEP' -> (path, step or None). A PATH that exists followed by a ':' and
  something other than a step number is an error (it names the step, not a file)."""
  path, _, step = ref.rpartition(":")
  if path and step.isdigit():
    return path, int(step)
  if path and "://" not in ref and os.path.isdir(path) and not os.path.exists(ref):
    raise ValueError(f"{ref!r}: the step after ':' must be a checkpoint step number "
                     f"(PATH:STEP, e.g. {path}:100), got {step!r}")
  return ref, None


def resolve_ref(ref: str) -> str:
  """PATH[:STEP] with PATH made absolute."""
  path, step = parse_checkpoint_ref(str(ref or ""))
  path = resolve(path)
  return path if step is None else f"{path}:{step}"


def _resolve_source(item: str) -> str:
  """A data source with its local path made absolute: PATH, or paper:SET:PATH (the paper's
  named sets, rlvr_jax.data.paper_sets)."""
  if item.startswith("paper:"):
    scheme, name, path = (item.split(":", 2) + ["", ""])[:3]
    return f"{scheme}:{name}:{resolve(path)}" if path else item
  return resolve(item)


def resolve_file_list(value: str) -> str:
  """'a.jsonl, NAME=b.parquet, NAME=paper:SET:DIR' -> the same list with absolute paths."""
  items = []
  for item in str(value or "").split(","):
    item = item.strip()
    if not item:
      continue
    name, eq, path = item.partition("=")       # NAME=PATH, split as eval.files is read
    if eq and re.fullmatch(r"[A-Za-z_][\w.-]*", name) and not os.path.exists(item):
      items.append(f"{name}={_resolve_source(path)}")
    else:
      items.append(_resolve_source(item))
  return ",".join(items)


def _looks_like_local_path(value: str) -> bool:
  """`from_hf` / `tokenizer` may also name a built-in or (later) a hub id such as
  `Qwen/Qwen2.5-1.5B`: only values that exist here or are written as paths are resolved."""
  return value.startswith((".", "~", os.sep)) or os.path.exists(value)


def resolve_config_paths(config: Any) -> None:
  """Makes every PATH_FIELDS leaf of an ml_collections ConfigDict absolute, in place."""
  for key in list(config.keys()):
    value = config[key]
    if hasattr(value, "keys") and hasattr(value, "unlocked"):
      resolve_config_paths(value)
      continue
    if key not in PATH_FIELDS or not isinstance(value, str) or not value.strip():
      continue
    if key == "files":
      new = resolve_file_list(value)
    elif key in ("from_checkpoint", "src"):
      new = resolve_ref(value)
    else:
      new = resolve(value) if _looks_like_local_path(value) else value
    if new != value:
      with config.unlocked():
        config[key] = new
