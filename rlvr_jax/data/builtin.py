"""The built-in toy tokenizer: a sentencepiece model trained deterministically on the synthetic
domains' text, cached by content hash, and copied into every run directory that uses it.

`resolve_tokenizer(spec, workdir)` is how runs pick their tokenizer:
  - WORKDIR/tokenizer.model (or tokenizer.json) already there (a resumed run): that one;
  - spec = a path (.model, tokenizer.json or a directory): that tokenizer, recorded in the run;
  - spec = "" : the built-in toy tokenizer (trained once, then cached).
"""
from __future__ import annotations

import hashlib
import os
import tempfile

TOY_VOCAB_SIZE = 1024
TOY_CORPUS_SEED = 0
TOY_CORPUS_PER_DOMAIN = 1500
RUN_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")


def _cache_dir() -> str:
  return os.environ.get("RLVR_JAX_CACHE", os.path.expanduser("~/.cache/rlvr_jax"))


def builtin_tokenizer_path(vocab_size: int = TOY_VOCAB_SIZE, cache_dir: str | None = None) -> str:
  """Path of the built-in sentencepiece model (trained on first use, ~2 s, then cached)."""
  import sentencepiece

  from rlvr_jax.data.domains import all_corpus_text
  from rlvr_jax.tokenizer import train_sentencepiece
  text = all_corpus_text(TOY_CORPUS_SEED, TOY_CORPUS_PER_DOMAIN)
  digest = hashlib.sha256(f"{vocab_size}|{sentencepiece.__version__}|{text}".encode()).hexdigest()
  path = os.path.join(cache_dir or _cache_dir(), "tokenizers", f"toy-{vocab_size}-{digest[:16]}.model")
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
      trained = train_sentencepiece([text], os.path.join(tmp, "toy"), vocab_size)
      os.replace(trained, path)  # atomic: concurrent runs never see a partial file
  return path


def tokenizer_source(explicit: str = "", *, from_hf: str = "", from_checkpoint: str = "") -> str:
  """The one tokenizer precedence of every command (cpt, sft, rl, eval, plan):

  1. `explicit` (a run config's data.tokenizer, eval's tokenizer), when set;
  2. init.from_hf: the HF directory (resolved: a bucket / hub id is fetched);
  3. init.from_checkpoint: the tokenizer file the run copied into its directory (the exact one
     it trained with; tokenizer.json preferred when both), else the data.tokenizer its
     config.json names;
  4. '' : the built-in toy tokenizer (resolve_tokenizer).
  The result is a path (file or directory) resolve_tokenizer / load_tokenizer read."""
  if explicit:
    return str(explicit)
  if from_hf:
    from rlvr_jax.model.hub import resolve_hf_source
    return resolve_hf_source(from_hf)
  if from_checkpoint:
    import json

    from rlvr_jax.run.paths import parse_checkpoint_ref
    from rlvr_jax.train.checkpoints import CONFIG_FILE
    run_dir = parse_checkpoint_ref(from_checkpoint)[0]
    found = [os.path.join(run_dir, n) for n in RUN_TOKENIZER_FILES
             if os.path.exists(os.path.join(run_dir, n))]
    if found:
      return found[-1]
    cfg_path = os.path.join(run_dir, CONFIG_FILE)
    if os.path.exists(cfg_path):
      with open(cfg_path) as f:
        data = json.load(f).get("data")
      named = data.get("tokenizer") if isinstance(data, dict) else None
      if named:
        return str(named)
  return ""


def resolve_tokenizer(spec: str, workdir: str | None = None):
  """The run's tokenizer (see the module docstring); copies it into `workdir` when given."""
  import jax

  from rlvr_jax.run import files
  from rlvr_jax.tokenizer import load_tokenizer
  if workdir:
    for name in RUN_TOKENIZER_FILES:
      if files.exists(files.as_path(workdir) / name):
        return load_tokenizer(local_copy(files.as_path(workdir) / name))
  src = spec or builtin_tokenizer_path()
  if files.isdir(src):
    candidates = [files.as_path(src) / n for n in RUN_TOKENIZER_FILES]
    found = [c for c in candidates if c.exists()]
    if not found:
      raise FileNotFoundError(f"tokenizer directory {src} has none of {RUN_TOKENIZER_FILES}")
    src = os.fspath(found[-1])  # tokenizer.json preferred when both exist
  tokenizer = load_tokenizer(local_copy(src))
  if workdir and jax.process_index() == 0:   # one copy into the run (its own tokenizer)
    name = "tokenizer.json" if src.endswith(".json") else "tokenizer.model"
    files.copy_file(src, files.as_path(workdir) / name)
    if name == "tokenizer.json":
      cfg = files.as_path(src).parent / "tokenizer_config.json"
      if cfg.exists():
        files.copy_file(cfg, files.as_path(workdir) / "tokenizer_config.json")
  return tokenizer


def local_copy(path) -> str:
  """A local file path for `path`: itself, or a cached local copy of a bucket object (the
  tokenizer libraries read local files only)."""
  from rlvr_jax.run import files
  path = os.fspath(path)
  if files.is_local(path):
    return path
  digest = hashlib.sha256(path.encode()).hexdigest()[:16]
  local = os.path.join(_cache_dir(), "remote", digest, os.path.basename(path))
  if not os.path.exists(local):
    files.copy_file(path, local)
  return local
