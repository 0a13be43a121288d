"""Small helpers shared by config files and the commands that read them."""
from __future__ import annotations

import importlib.util
import os
from typing import Any


def get_field(config: Any, dotted: str, default: Any = None) -> Any:
  """config["a"]["b"] for dotted="a.b"; `default` when a part is missing or the value is None."""
  node = config
  for part in dotted.split("."):
    try:
      node = node[part]
    except (KeyError, AttributeError, TypeError):
      return default
  return default if node is None else node


def csv_list(value: Any) -> list[str]:
  """"a, b,,c" -> ["a", "b", "c"]; a list/tuple is cleaned the same way; None/"" -> []."""
  items = value.split(",") if isinstance(value, str) else (value or ())
  return [str(v).strip() for v in items if str(v).strip()]


def load_config_file(relative_to: str, path: str):
  """`get_config()` of the config file at `path`, relative to the file `relative_to` (a config
  file's `__file__`): how one config builds on another."""
  full = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(relative_to)), path))
  name = "_config_" + full.replace(os.sep, "_").replace(".", "_")
  spec = importlib.util.spec_from_file_location(name, full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
