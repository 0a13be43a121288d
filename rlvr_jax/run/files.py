"""The one path layer for what a run writes: local paths and bucket URLs (`gs://...`) alike.

Everything a run writes besides its orbax checkpoints (which orbax writes through the same
etils.epath) goes through these functions, so a `gs://` workdir holds the whole run: config.json,
status.json, metrics.jsonl, the tokenizer copy, the RL training set, eval outputs and reports.

  write_text / write_json   whole-file writes; on a local disk through a temporary file and an
                            atomic rename (a crash never leaves half a file), on a bucket as one
                            object write (object writes are atomic there)
  AppendLog                 metrics.jsonl: appended and flushed line by line on a local disk; on a
                            bucket (no appends) kept in memory and rewritten at most every
                            `every_s` seconds and on close
  copy_file, read_text, exists, isdir, makedirs, rename
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from etils import epath

from rlvr_jax.run import paths


def as_path(path: str | os.PathLike) -> epath.Path:
  return epath.Path(path)


def is_local(path: str | os.PathLike) -> bool:
  return not paths.is_url(os.fspath(path))


def exists(path) -> bool:
  return as_path(path).exists()


def isdir(path) -> bool:
  return as_path(path).is_dir()


def makedirs(path) -> None:
  as_path(path).mkdir(parents=True, exist_ok=True)


def read_text(path) -> str:
  return as_path(path).read_text()


def write_bytes(path, data: bytes) -> None:
  """Writes the whole file (atomically on a local disk: a temporary file renamed into place;
  one object write on a bucket, where object writes are atomic)."""
  target = as_path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  if not is_local(path):
    target.write_bytes(data)
    return
  tmp = target.parent / f"{target.name}.tmp.{os.getpid()}"
  tmp.write_bytes(data)
  tmp.replace(target)


def write_text(path, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_json(path, doc: Any, *, indent: int | None = 2, default=None) -> None:
  write_text(path, json.dumps(doc, indent=indent, sort_keys=True, default=default) + "\n")


def copy_file(src, dst) -> None:
  """Copies a (small) file, either side local or a URL, by reading and writing its bytes (a
  backend's own copy only works within one file system); atomically on a local destination."""
  write_bytes(dst, as_path(src).read_bytes())


def rename(src, dst) -> None:
  as_path(src).rename(as_path(dst))


class AppendLog:
  """A text file written a line at a time (metrics.jsonl). Lines already in the file are kept."""

  def __init__(self, path, *, every_s: float = 30.0):
    self.path = as_path(path)
    self.local = is_local(path)
    self.every_s = float(every_s)
    self._file = None
    self._lines: list[str] = []
    self._dirty = False
    self._last = 0.0
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if self.local:
      self._file = open(os.fspath(self.path), "a")
    elif self.path.exists():
      self._lines = [line + "\n" for line in self.path.read_text().splitlines() if line.strip()]

  def write_line(self, line: str) -> None:
    if self._file is not None:
      self._file.write(line + "\n")
      self._file.flush()
      return
    self._lines.append(line + "\n")
    self._dirty = True
    if time.monotonic() - self._last >= self.every_s:
      self.flush()

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()
    elif self._dirty:
      self.path.write_text("".join(self._lines))
      self._dirty = False
      self._last = time.monotonic()

  def close(self) -> None:
    self.flush()
    if self._file is not None:
      self._file.close()
      self._file = None
