"""Where `init.from_hf` is read from: a local directory, a bucket directory or a Hugging Face hub
id, always handed to the readers (load_hf, the tokenizer) as a local directory.

  resolve_hf_source(spec) -> local directory
    /models/Qwen2.5-1.5B              a local directory: itself
    gs://bucket/models/Qwen2.5-1.5B   copied once into RLVR_JAX_CACHE/hf/ (default
                                      ~/.cache/rlvr_jax/hf/): the files matching HUB_ALLOW_PATTERNS,
                                      recopied only when the bucket's listing (names and sizes)
                                      changes
    Qwen/Qwen2.5-Math-1.5B[@REVISION] huggingface_hub.snapshot_download of the config, safetensors
                                      and tokenizer files into the Hugging Face cache
                                      (HF_HUB_CACHE, else HF_HOME/hub, else
                                      ~/.cache/huggingface/hub), REVISION a branch, tag or commit

A value is a hub id when it is ORG/NAME[@REVISION] and no such local path exists; values written
as paths (starting with '/', '.', '~') are never looked up on the hub.

Offline: with HF_HUB_OFFLINE=1 (read at each call), or when the hub cannot be reached, only the
cache is used; a model that is not there is one ValueError line naming the id and the ways out
(download it first with `hf download ID`, point HF_HOME / HF_HUB_CACHE at a cache that holds it,
or give a local directory).

Several processes (jax.process_count() > 1): process 0 downloads first; after a barrier
(multihost_utils.broadcast_one_to_all, which also tells the others whether process 0 succeeded)
the other processes read the same snapshot with local_files_only=True. Where the cache is not
shared (each host its own local disk, as on TPU VMs) a host that does not find the snapshot
downloads its own copy into its own cache (huggingface_hub's file locks keep processes of one
host from writing the same file twice). Bucket directories are copied per host to local disk,
under a file lock, so processes of one host copy once.

Results are memoised per process (keyed by the spec and the cache settings): every reader of
init.from_hf calls resolve_hf_source and only the first call downloads, copies or synchronises.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil

from rlvr_jax.run import paths

HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.txt"]

# ORG/NAME[@REVISION]: the hub's repo-id characters; a revision may hold '/' (refs/pr/1).
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]*[\w])(?:@(?P<rev>[\w./-]+))?$")
_TRUE = ("1", "on", "yes", "true")
_MANIFEST = ".rlvr_jax_manifest.json"

_resolved: dict[tuple, str] = {}


def parse_hub_id(spec: str) -> tuple[str, str | None] | None:
  """'Org/Name[@revision]' -> (repo_id, revision or None); None when `spec` is not of that form
  (or is written as a path)."""
  spec = str(spec or "").strip()
  if spec.startswith((".", "~", os.sep, "/")) or paths.is_url(spec):
    return None
  m = _HUB_ID.match(spec)
  if not m or ".." in m.group("repo") or "--" in m.group("repo"):
    return None
  return m.group("repo"), m.group("rev")


def is_hub_id(spec: str) -> bool:
  """True for ORG/NAME[@REVISION] that names no local path."""
  return parse_hub_id(spec) is not None and not os.path.exists(str(spec).strip())


def hf_hub_cache() -> str:
  """The Hugging Face hub cache, as huggingface_hub finds it (read now, not at import)."""
  env = os.environ
  if env.get("HF_HUB_CACHE"):
    return os.path.expanduser(env["HF_HUB_CACHE"])
  if env.get("HUGGINGFACE_HUB_CACHE"):
    return os.path.expanduser(env["HUGGINGFACE_HUB_CACHE"])
  home = env.get("HF_HOME") or os.path.join(
      env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
  return os.path.join(os.path.expanduser(home), "hub")


def hub_offline() -> bool:
  return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _local_cache_root() -> str:
  return os.environ.get("RLVR_JAX_CACHE", os.path.expanduser("~/.cache/rlvr_jax"))


def clear_cache() -> None:
  """Forgets the memoised resolutions (tests; a process that changed its cache settings)."""
  _resolved.clear()


def resolve_hf_source(spec: str, field: str = "init.from_hf") -> str:
  """The local directory holding `spec`'s checkpoint (module docstring). Raises
  FileNotFoundError for a missing local or bucket directory and ValueError (one line naming
  `field`, the id and what to do) for a hub model that cannot be had."""
  spec = str(spec or "").strip()
  if not spec:
    raise ValueError(f"{field} is empty; give a Hugging Face checkpoint directory or hub id")
  if not paths.is_url(spec) and os.path.isdir(spec):
    return spec
  key = (spec, hf_hub_cache(), hub_offline(), _local_cache_root())
  hit = _resolved.get(key)
  if hit is not None and os.path.isdir(hit):
    return hit
  if paths.is_url(spec):
    local = _copy_remote_dir(spec, field)
  elif os.path.exists(spec):
    raise FileNotFoundError(f"{field}={spec} is a file, not a directory; give a Hugging Face "
                            f"checkpoint directory (config.json + *.safetensors)")
  elif parse_hub_id(spec) is None:
    raise FileNotFoundError(f"{field}={spec} is not a directory; give a Hugging Face checkpoint "
                            f"directory (config.json + *.safetensors) or a hub id "
                            f"ORG/NAME[@REVISION]")
  else:
    repo_id, revision = parse_hub_id(spec)
    local = _resolve_hub(spec, repo_id, revision, field)
  _resolved[key] = local
  return local


# ------------------------------------------------------------------------------------ the hub
def _how_to_fix(repo_id: str, revision: str | None) -> str:
  rev = f" --revision {revision}" if revision else ""
  return (f"run `hf download {repo_id}{rev}` where there is network (or huggingface-cli "
          f"download), set HF_HOME / HF_HUB_CACHE to a cache with it, or give a local directory")


def _download(spec: str, repo_id: str, revision: str | None, field: str,
              local_files_only: bool) -> str:
  """snapshot_download into the hub cache, every failure as one ValueError line."""
  try:
    from huggingface_hub import snapshot_download
  except ImportError as e:   # installed with tokenizers (which requires it)
    raise ValueError(f"{field}={spec}: huggingface_hub is not installed ({e}); pip install "
                     f"huggingface_hub, or give a local directory") from None
  cache = hf_hub_cache()
  offline = local_files_only or hub_offline()
  name = repo_id + (f"@{revision}" if revision else "")
  try:
    path = snapshot_download(repo_id, revision=revision, cache_dir=cache,
                             allow_patterns=HUB_ALLOW_PATTERNS, local_files_only=offline)
  except Exception as e:  # noqa: BLE001 - every hub failure becomes one line naming the id
    kind = type(e).__name__
    cause = (str(e).strip().splitlines() or [""])[0]
    if kind in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError",
                "HFValidationError") and not offline:
      raise ValueError(f"{field}={spec}: the Hugging Face hub has no model {name} that this "
                       f"machine may read ({kind}: {cause}); check the id and revision, log in "
                       f"(`hf auth login` or HF_TOKEN) for a gated or private model, or give a "
                       f"local directory") from None
    why = ("HF_HUB_OFFLINE is set" if hub_offline() else
           "local files only" if offline else
           f"hub unreachable: {type(e.__cause__ or e.__context__ or e).__name__}")
    raise ValueError(f"{field}={spec}: not a local directory, and the Hugging Face model {name} "
                     f"is not in the cache {cache} ({why}); "
                     f"{_how_to_fix(repo_id, revision)}") from None
  if not os.path.isfile(os.path.join(path, "config.json")):
    raise ValueError(f"{field}={spec}: the snapshot {path} of {name} holds no config.json; is "
                     f"it a model repository (Llama / Qwen2 with safetensors weights)?")
  return path


def _resolve_hub(spec: str, repo_id: str, revision: str | None, field: str) -> str:
  import jax
  if jax.process_count() == 1:
    return _download(spec, repo_id, revision, field, local_files_only=False)
  import numpy as np
  from jax.experimental import multihost_utils
  error, path = None, None
  if jax.process_index() == 0:
    try:
      path = _download(spec, repo_id, revision, field, local_files_only=False)
    except ValueError as e:
      error = e
  # The barrier: every process waits for process 0's download and learns whether it worked.
  ok = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
  if error is not None:
    raise error
  if not ok:
    raise ValueError(f"{field}={spec}: process 0 could not get the Hugging Face model "
                     f"{repo_id} (its log has the reason); {_how_to_fix(repo_id, revision)}")
  if path is None:
    try:    # the snapshot process 0 wrote, where the cache is shared
      path = _download(spec, repo_id, revision, field, local_files_only=True)
    except ValueError:   # a per-host cache: this host downloads its own copy
      path = _download(spec, repo_id, revision, field, local_files_only=False)
  return path


# ------------------------------------------------------------------------------ bucket dirs
def _copy_remote_dir(url: str, field: str) -> str:
  """A bucket directory's checkpoint files, copied to local disk once per host."""
  from etils import epath
  src = epath.Path(url)
  try:
    if not src.is_dir():
      raise FileNotFoundError(f"{field}={url} is not a directory; give a Hugging Face "
                              f"checkpoint directory (config.json + *.safetensors)")
    entries = {p.name: int(p.stat().length) for p in src.iterdir()
               if any(fnmatch.fnmatch(p.name, pat) for pat in HUB_ALLOW_PATTERNS)}
  except FileNotFoundError:
    raise
  except Exception as e:  # noqa: BLE001 - credentials, network: one line naming the URL
    raise ValueError(f"{field}={url}: cannot list the directory ({type(e).__name__}: "
                     f"{(str(e).strip().splitlines() or [''])[0]})") from None
  if "config.json" not in entries:
    raise FileNotFoundError(f"{field}={url} holds no config.json; give a Hugging Face "
                            f"checkpoint directory (config.json + *.safetensors)")
  digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
  base = os.path.join(_local_cache_root(), "hf", digest)
  local = os.path.join(base, os.path.basename(url.rstrip("/")) or "model")
  manifest = {"source": url, "files": entries}
  os.makedirs(base, exist_ok=True)
  from filelock import FileLock
  with FileLock(os.path.join(base, ".lock")):
    if _read_manifest(local) == manifest:
      return local
    tmp = f"{local}.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in sorted(entries):
      with (src / name).open("rb") as r, open(os.path.join(tmp, name), "wb") as w:
        shutil.copyfileobj(r, w, 16 << 20)     # streamed: safetensors shards are GBs
    with open(os.path.join(tmp, _MANIFEST), "w") as f:
      json.dump(manifest, f, sort_keys=True)
    shutil.rmtree(local, ignore_errors=True)
    os.rename(tmp, local)
  return local


def _read_manifest(local: str):
  try:
    with open(os.path.join(local, _MANIFEST)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None
