"""Random-access readers for training data: JSONL, Parquet, plain text, ArrayRecord and TFDS.

Every reader is a `grain` random-access data source (`__len__` + `__getitem__(i) -> dict`), so it
can be wrapped with `grain.MapDataset.source(src)`, and every reader can say where record `i` came
from (`src.where(i) -> "path:line 7"`), which `records.py` uses to name the file and line of a
malformed row. Readers never hold an open file across a fork: file descriptors are (re)opened
lazily per process, and reads use `os.pread`, so grain's reader threads can share one source.

  JsonlSource(paths)                 one JSON object per non-blank line
  ParquetSource(paths, columns=None) one dict per row (pyarrow; row groups read on demand)
  TextSource(paths, unit="file")     {"text": ...} per file, per non-blank line or per paragraph
  ArrayRecordSource(paths)           records written by `materialize.write_array_record` (JSON)
  tfds_source(name_or_dir, split)    a prepared TFDS dataset (array_record) via tfds.data_source
  open_source(spec, **kw)            picks one of the above from a path / "tfds:NAME" spec

Paths may be a file, a directory (its files with the reader's extensions, sorted), a glob, or a
list of those. Remote `gs://` data is read through TFDS (`tfds_source(..., data_dir="gs://...")`,
via etils.epath); the file readers here take local paths (copy files to local disk first).
"""
from __future__ import annotations

import bisect
import glob as _glob
import json
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np


class DataError(ValueError):
  """Bad input data: the message names the file, the line/row and the field."""


# ---------------------------------------------------------------------------------------- paths


def expand_paths(paths: str | os.PathLike | Sequence[str | os.PathLike],
                 extensions: Sequence[str] = ()) -> list[str]:
  """Files named by `paths` (files, directories, globs), sorted within each entry.

  A directory contributes its files ending in one of `extensions` (all files if empty). Raises
  FileNotFoundError naming the entry when it matches nothing.
  """
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  out: list[str] = []
  for entry in paths:
    entry = os.fspath(entry)
    if entry.startswith("gs://"):
      out.append(entry)
      continue
    if os.path.isdir(entry):
      found = sorted(os.path.join(entry, f) for f in os.listdir(entry)
                     if not extensions or _ext(f) in extensions)
      found = [f for f in found if os.path.isfile(f)]
    elif any(c in entry for c in "*?["):
      found = sorted(f for f in _glob.glob(entry) if os.path.isfile(f))
    elif os.path.isfile(entry):
      found = [entry]
    else:
      raise FileNotFoundError(f"no such data file or directory: {entry}")
    if not found:
      raise FileNotFoundError(f"{entry} matches no data files"
                              + (f" ending in {tuple(extensions)}" if extensions else ""))
    out.extend(found)
  return out


class _Fds:
  """Per-process lazily opened read-only file descriptors (safe across fork)."""

  def __init__(self, paths: Sequence[str]):
    self._paths = list(paths)
    self._pid = -1
    self._fds: dict[int, int] = {}
    self._lock = threading.Lock()

  def get(self, i: int) -> int:
    with self._lock:
      if self._pid != os.getpid():
        self._fds, self._pid = {}, os.getpid()
      fd = self._fds.get(i)
      if fd is None:
        fd = self._fds[i] = os.open(self._paths[i], os.O_RDONLY)
      return fd

  def __getstate__(self):
    return {"_paths": self._paths}

  def __setstate__(self, state):
    self.__init__(state["_paths"])


def _line_index(path: str, chunk_bytes: int = 1 << 26):
  """(starts int64[n], ends int64[n], line_numbers int64[n]) of the non-blank lines of a file.

  `ends` excludes the newline; line numbers are 1-based. A line
  holding only whitespace counts as blank.
  """
  ends, offset, size = [], 0, os.path.getsize(path)
  with open(path, "rb") as f:
    while offset < size:
      buf = f.read(chunk_bytes)
      nl = np.flatnonzero(np.frombuffer(buf, np.uint8) == 10) + offset
      ends.append(nl)
      offset += len(buf)
  ends = np.concatenate(ends).astype(np.int64) if ends else np.zeros((0,), np.int64)
  if size and (len(ends) == 0 or ends[-1] != size - 1):
    ends = np.append(ends, size).astype(np.int64)  # last line without a trailing newline
  starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64) if len(ends) else ends
  line_numbers = np.arange(1, len(ends) + 1, dtype=np.int64)
  keep = ends > starts
  short = np.flatnonzero(keep & (ends - starts <= 16))
  if len(short):
    with open(path, "rb") as f:
      for j in short:
        f.seek(int(starts[j]))
        if not f.read(int(ends[j] - starts[j])).strip():
          keep[j] = False
  return starts[keep], ends[keep], line_numbers[keep]


class _LineFiles:
  """Random access to the non-blank lines of a list of text files."""

  def __init__(self, paths: Sequence[str]):
    self.paths = list(paths)
    self._starts, self._ends, self._lines, self._file = [], [], [], []
    for k, p in enumerate(self.paths):
      s, e, ln = _line_index(p)
      self._starts.append(s)
      self._ends.append(e)
      self._lines.append(ln)
      self._file.append(np.full(len(s), k, np.int32))
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros((0,), dt)
    self._starts, self._ends = cat(self._starts, np.int64), cat(self._ends, np.int64)
    self._lines, self._file = cat(self._lines, np.int64), cat(self._file, np.int32)
    self._fds = _Fds(self.paths)

  def __len__(self) -> int:
    return len(self._starts)

  def raw(self, i: int) -> bytes:
    start, end = int(self._starts[i]), int(self._ends[i])
    return os.pread(self._fds.get(int(self._file[i])), end - start, start)

  def where(self, i: int) -> str:
    return f"{self.paths[int(self._file[i])]}:line {int(self._lines[i])}"


def _check_index(i, n: int) -> int:
  i = int(i)
  if i < 0:
    i += n
  if not 0 <= i < n:
    raise IndexError(f"record index {i} out of range for a source of {n} records")
  return i


# ---------------------------------------------------------------------------------------- JSONL


class JsonlSource:
  """Random access to JSON objects, one per non-blank line of one or more `.jsonl` files.

  `src[i]` is a dict; a line that is not a JSON object raises DataError naming file and line.
  """

  EXTENSIONS = (".jsonl", ".json", ".jsonl.txt")

  def __init__(self, paths):
    self._lines = _LineFiles(expand_paths(paths, self.EXTENSIONS))
    self.paths = self._lines.paths

  def __len__(self) -> int:
    return len(self._lines)

  def __getitem__(self, i) -> dict[str, Any]:
    i = _check_index(i, len(self))
    raw = self._lines.raw(i)
    try:
      row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise DataError(f"{self.where(i)}: not valid JSON ({e.msg if hasattr(e, 'msg') else e}); "
                      "each line must be one JSON object") from None
    if not isinstance(row, dict):
      raise DataError(f"{self.where(i)}: expected a JSON object per line, got "
                      f"{type(row).__name__}")
    return row

  def where(self, i) -> str:
    return self._lines.where(_check_index(i, len(self)))

  def __repr__(self) -> str:
    return f"JsonlSource({len(self.paths)} files, {len(self)} records)"


# -------------------------------------------------------------------------------------- Parquet


class ParquetSource:
  """Random access to the rows of one or more Parquet files (pyarrow), as dicts.

  Row groups are read on demand and the last few are cached, so sequential or shuffled-within-
  window access stays cheap. Nested columns (lists, structs) come back as Python lists/dicts.
  A truncated or corrupt file raises DataError naming it (and the row group that fails).
  """

  EXTENSIONS = (".parquet", ".pq")

  def __init__(self, paths, columns: Sequence[str] | None = None, cache_row_groups: int = 4):
    self.paths = expand_paths(paths, self.EXTENSIONS)
    self.columns = list(columns) if columns is not None else None
    self._groups: list[tuple[int, int]] = []  # (file index, row group index)
    self._group_starts: list[int] = []
    total = 0
    for k, p in enumerate(self.paths):
      meta = _open_parquet(p).metadata
      for g in range(meta.num_row_groups):
        self._groups.append((k, g))
        self._group_starts.append(total)
        total += meta.row_group(g).num_rows
    self._len = total
    self._cache_size = cache_row_groups
    self._init_cache()

  def _init_cache(self):
    self._cache: dict[int, list[dict]] = {}
    self._lock = threading.Lock()
    self._files: dict[int, Any] = {}
    self._pid = os.getpid()

  def __getstate__(self):
    state = dict(self.__dict__)
    for k in ("_cache", "_lock", "_files", "_pid"):
      state.pop(k)
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._init_cache()

  def __len__(self) -> int:
    return self._len

  def _locate(self, i: int) -> tuple[int, int]:
    g = bisect.bisect_right(self._group_starts, i) - 1
    return g, i - self._group_starts[g]

  def _rows(self, g: int) -> list[dict]:
    with self._lock:
      if self._pid != os.getpid():
        self._init_cache_unlocked()
      rows = self._cache.get(g)
      if rows is None:
        k, rg = self._groups[g]
        f = self._files.get(k)
        if f is None:
          f = self._files[k] = _open_parquet(self.paths[k])
        try:
          rows = f.read_row_group(rg, columns=self.columns).to_pylist()
        except _unreadable_parquet_errors() as e:
          first = self._group_starts[g] - self._file_start(k)
          end = self._group_starts[g + 1] if g + 1 < len(self._groups) else self._len
          last = first + end - self._group_starts[g] - 1
          raise _corrupt_parquet(self.paths[k], e, f" at row group {rg} (rows {first}-{last})"
                                 ) from None
        if len(self._cache) >= self._cache_size:
          self._cache.pop(next(iter(self._cache)))
        self._cache[g] = rows
      return rows

  def _init_cache_unlocked(self):
    self._cache, self._files, self._pid = {}, {}, os.getpid()

  def __getitem__(self, i) -> dict[str, Any]:
    i = _check_index(i, len(self))
    g, r = self._locate(i)
    return dict(self._rows(g)[r])

  def where(self, i) -> str:
    i = _check_index(i, len(self))
    g, r = self._locate(i)
    k, _ = self._groups[g]
    return f"{self.paths[k]}:row {i - self._file_start(k)}"

  def _file_start(self, k: int) -> int:
    for g, (kk, _) in enumerate(self._groups):
      if kk == k:
        return self._group_starts[g]
    return 0

  def __repr__(self) -> str:
    return f"ParquetSource({len(self.paths)} files, {len(self)} rows)"


def _unreadable_parquet_errors() -> tuple[type[BaseException], ...]:
  import pyarrow as pa
  return (pa.ArrowException, OSError)


def _corrupt_parquet(path: str, error: BaseException, part: str = "") -> DataError:
  detail = " ".join(str(error).split())
  return DataError(f"{path}: not a readable Parquet file{part} ({detail}); it is truncated or "
                   "corrupt (an interrupted download or copy): re-download or re-write it")


def _open_parquet(path: str):
  """pq.ParquetFile(path); a truncated or corrupt file raises DataError naming it."""
  import pyarrow.parquet as pq
  try:
    return pq.ParquetFile(path)
  except (PermissionError, FileNotFoundError, IsADirectoryError):
    raise
  except _unreadable_parquet_errors() as e:
    raise _corrupt_parquet(path, e) from None


# ----------------------------------------------------------------------------------- plain text


class TextSource:
  """Plain-text corpora as `{"text": str}` records.

  unit: "file" (each file is one document), "line" (each non-blank line is a document) or
  "paragraph" (documents separated by one or more blank lines).
  """

  EXTENSIONS = (".txt", ".md", ".text")
  UNITS = ("file", "line", "paragraph")

  def __init__(self, paths, unit: str = "file", encoding: str = "utf-8"):
    if unit not in self.UNITS:
      raise ValueError(f"TextSource unit must be one of {self.UNITS}, got {unit!r}")
    self.paths = expand_paths(paths, self.EXTENSIONS)
    self.unit, self.encoding = unit, encoding
    if unit == "line":
      self._lines = _LineFiles(self.paths)
    elif unit == "paragraph":
      self._paras: list[tuple[int, int, str]] = []  # (file, first line, text)
      for k, p in enumerate(self.paths):
        with open(p, encoding=encoding) as f:
          block, first = [], 0
          for n, line in enumerate(f, 1):
            if line.strip():
              if not block:
                first = n
              block.append(line)
            elif block:
              self._paras.append((k, first, "".join(block).rstrip("\n")))
              block = []
          if block:
            self._paras.append((k, first, "".join(block).rstrip("\n")))

  def __len__(self) -> int:
    if self.unit == "file":
      return len(self.paths)
    if self.unit == "line":
      return len(self._lines)
    return len(self._paras)

  def __getitem__(self, i) -> dict[str, str]:
    i = _check_index(i, len(self))
    try:
      if self.unit == "file":
        with open(self.paths[i], encoding=self.encoding) as f:
          return {"text": f.read()}
      if self.unit == "line":
        return {"text": self._lines.raw(i).decode(self.encoding).rstrip("\r")}
    except UnicodeDecodeError as e:
      raise DataError(f"{self.where(i)}: field 'text' is not valid {self.encoding} ({e.reason} "
                      f"at byte {e.start})") from None
    return {"text": self._paras[i][2]}

  def where(self, i) -> str:
    i = _check_index(i, len(self))
    if self.unit == "file":
      return self.paths[i]
    if self.unit == "line":
      return self._lines.where(i)
    k, first, _ = self._paras[i]
    return f"{self.paths[k]}:line {first}"

  def __repr__(self) -> str:
    return f"TextSource({len(self.paths)} files, unit={self.unit!r}, {len(self)} documents)"


# ---------------------------------------------------------------------------------- ArrayRecord


class ArrayRecordSource:
  """Random access to ArrayRecord files whose records are JSON objects (see materialize.py).

  decode: "json" (each record -> dict) or None (raw bytes, wrapped as {"bytes": b}).
  """

  EXTENSIONS = (".array_record", ".arrayrecord")

  def __init__(self, paths, decode: str | None = "json"):
    import grain
    self.paths = expand_paths(paths, self.EXTENSIONS)
    self._src = grain.sources.ArrayRecordDataSource(self.paths)
    self.decode = decode
    self._starts: list[int] | None = None

  def __len__(self) -> int:
    return len(self._src)

  def __getitem__(self, i) -> dict[str, Any]:
    i = _check_index(i, len(self))
    raw = self._src[i]
    if self.decode is None:
      return {"bytes": raw}
    try:
      row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
      raise DataError(f"{self.where(i)}: record is not a JSON object; was this file written "
                      "by rlvr_jax.data.materialize? Use decode=None for raw bytes") from None
    if not isinstance(row, dict):
      raise DataError(f"{self.where(i)}: expected a JSON object, got {type(row).__name__}")
    return row

  def where(self, i) -> str:
    i = _check_index(i, len(self))
    if self._starts is None:
      from array_record.python import array_record_module as arm
      starts, total = [], 0
      for p in self.paths:
        starts.append(total)
        reader = arm.ArrayRecordReader(p)
        total += reader.num_records()
        reader.close()
      self._starts = starts
    k = bisect.bisect_right(self._starts, i) - 1
    return f"{self.paths[k]}:record {i - self._starts[k]}"

  def __repr__(self) -> str:
    return f"ArrayRecordSource({len(self.paths)} files, {len(self)} records)"


# ----------------------------------------------------------------------------------------- TFDS


class TfdsSource:
  """A split of a prepared TFDS dataset, read through `tfds.data_source` (no TensorFlow).

  Text features come back as `str` (TFDS gives bytes); numpy scalars as Python numbers.
  """

  def __init__(self, inner, name: str, split: str):
    self._inner, self.name, self.split = inner, name, split

  def __len__(self) -> int:
    return len(self._inner)

  def __getitem__(self, i) -> dict[str, Any]:
    i = _check_index(i, len(self))
    return _decode_tfds(self._inner[i])

  def where(self, i) -> str:
    return f"tfds:{self.name}[{self.split}]:record {_check_index(i, len(self))}"

  def __repr__(self) -> str:
    return f"TfdsSource({self.name!r}, split={self.split!r}, {len(self)} records)"


def _decode_tfds(value):
  if isinstance(value, dict):
    return {k: _decode_tfds(v) for k, v in value.items()}
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray):
    if value.dtype.kind in "OS":
      return [_decode_tfds(v) for v in value.tolist()]
    return value
  if isinstance(value, np.generic):
    return value.item()
  return value


def tfds_source(name_or_dir: str, split: str = "train", *, data_dir: str | None = None
                ) -> TfdsSource:
  """A split of a prepared TFDS dataset as a random-access source of dicts.

  name_or_dir: a registered dataset name ("mnist", "rlvr_synthetic/arith") read from
  `data_dir` (a local path or gs://bucket/path), or the directory of one prepared version
  (the folder holding dataset_info.json, e.g. DATA_DIR/rlvr_synthetic/arith/1.0.0).
  The dataset must have been prepared with file_format="array_record".
  """
  import tensorflow_datasets as tfds
  from etils import epath
  path = epath.Path(name_or_dir)
  is_dir = ("/" in name_or_dir or name_or_dir.startswith("gs://")) and \
      (path / "dataset_info.json").exists()
  try:
    if is_dir:
      builder = tfds.builder_from_directory(name_or_dir)
      inner = builder.as_data_source(split=split)
      name = builder.name
    else:
      inner = tfds.data_source(name_or_dir, split=split, data_dir=data_dir, download=False)
      name = name_or_dir
  except Exception as e:  # tfds raises many types; add what to do
    raise DataError(f"cannot open TFDS dataset {name_or_dir!r} split {split!r} "
                    f"(data_dir={data_dir!r}): {e}. Prepare it with file_format='array_record' "
                    "(rlvr_jax.data.tfds_builder.prepare) or point at its version directory."
                    ) from e
  return TfdsSource(inner, name, split)


# ---------------------------------------------------------------------------------- dispatcher


def open_source(spec: str, *, split: str = "train", data_dir: str | None = None,
                text_unit: str = "file", columns: Sequence[str] | None = None):
  """A reader chosen from `spec`.

  spec: "tfds:NAME" (with `split`, `data_dir`), a TFDS version directory, "paper:NAME:PATH" (a
  dataset of the paper, rlvr_jax/data/paper_sets.py), or a path / glob / directory whose file
  extension picks the reader (.jsonl/.json, .parquet, .txt/.md, .array_record).
  """
  if spec.startswith("paper:"):
    from rlvr_jax.data import paper_sets
    return paper_sets.open_paper_source(spec)
  if spec.startswith("tfds:"):
    return tfds_source(spec[len("tfds:"):], split, data_dir=data_dir)
  if os.path.isdir(spec) and os.path.exists(os.path.join(spec, "dataset_info.json")):
    return tfds_source(spec, split)
  files = expand_paths(spec)
  exts = {_ext(f) for f in files}
  for cls in (JsonlSource, ParquetSource, ArrayRecordSource):
    if exts <= set(cls.EXTENSIONS):
      return cls(files, columns=columns) if cls is ParquetSource else cls(files)
  if exts <= set(TextSource.EXTENSIONS):
    return TextSource(files, unit=text_unit)
  raise DataError(f"{spec}: cannot tell the format from the file extensions {sorted(exts)}; "
                  "use .jsonl, .parquet, .txt or .array_record, or 'tfds:NAME'")


def _ext(path: str) -> str:
  base = os.path.basename(path)
  if base.endswith(".jsonl.txt"):
    return ".jsonl.txt"
  if ".array_record" in base:  # TFDS-style shards: name.array_record-00000-of-00001
    return ".array_record"
  return os.path.splitext(base)[1]
