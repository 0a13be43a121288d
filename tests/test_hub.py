"""init.from_hf as a Hugging Face hub id (rlvr_jax.model.hub.resolve_hf_source), offline: a fake hub
cache on disk (HF_HUB_CACHE/models--Org--Name/{blobs,snapshots/<commit>,refs/main}) holding a
tiny model and the toy tokenizer, HF_HUB_OFFLINE=1, and any network connection fails the test."""
import hashlib
import json
import os
import shutil
import socket
import sys

import jax
import pytest

import rlvr_jax as rj
from rlvr_jax import cli
from rlvr_jax.model import hub
from conftest import make_tiny_hf_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A tiny random model as an HF directory (safetensors, config.json, toy tokenizer.model)."""
  return make_tiny_hf_dir(str(tmp_path_factory.mktemp('model') / "hf"))


def make_hub_cache(cache: str, repo_id: str, src: str, commit: str = COMMIT) -> str:
  """The HF cache layout of `repo_id` at `commit` (main) holding the files of `src`: blobs named
  by their hash, snapshot entries as relative symlinks to them. Returns the snapshot dir."""
  repo = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
  snap = os.path.join(repo, "snapshots", commit)
  os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
  os.makedirs(snap, exist_ok=True)
  os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
  for name in os.listdir(src):
    with open(os.path.join(src, name), "rb") as f:
      digest = hashlib.sha256(f.read()).hexdigest()
    shutil.copyfile(os.path.join(src, name), os.path.join(repo, "blobs", digest))
    os.symlink(os.path.join("..", "..", "blobs", digest), os.path.join(snap, name))
  with open(os.path.join(repo, "refs", "main"), "w") as f:
    f.write(commit)
  return snap


@pytest.fixture
def offline_cache(tmp_path, monkeypatch, model_dir):
  """HF_HUB_CACHE with Org/Name in it, offline, no sockets; returns (cache dir, snapshot dir)."""
  cache = str(tmp_path / "hf_cache")
  snap = make_hub_cache(cache, "Org/Name", model_dir)
  monkeypatch.setenv("HF_HUB_CACHE", cache)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")

  def no_network(*a, **k):
    raise AssertionError(f"a network connection was attempted: {a}")
  monkeypatch.setattr(socket, "create_connection", no_network)
  monkeypatch.setattr(socket.socket, "connect", no_network)
  monkeypatch.chdir(tmp_path)                 # no local Org/Name directory here
  hub.clear_cache()
  yield cache, snap
  hub.clear_cache()


def test_parse_hub_id():
  assert hub.parse_hub_id("Qwen/Qwen2.5-Math-1.5B") == ("Qwen/Qwen2.5-Math-1.5B", None)
  assert hub.parse_hub_id("meta-llama/Llama-3.2-1B@main") == ("meta-llama/Llama-3.2-1B", "main")
  assert hub.parse_hub_id(f"Org/Name@{COMMIT}") == ("Org/Name", COMMIT)
  for not_an_id in ("/abs/dir", "./rel/dir", "~/x/y", "gs://b/m", "a/b/c", "plain", "", "a/b@"):
    assert hub.parse_hub_id(not_an_id) is None, not_an_id


def test_resolves_a_hub_id_from_the_cache_offline(offline_cache):
  cache, snap = offline_cache
  assert os.path.samefile(hub.resolve_hf_source("Org/Name"), snap)
  assert os.path.samefile(hub.resolve_hf_source("Org/Name@main"), snap)
  assert os.path.samefile(hub.resolve_hf_source(f"Org/Name@{COMMIT}"), snap)
  cfg, params = rj.load_hf(hub.resolve_hf_source("Org/Name"))
  assert cfg.num_layers == 1 and cfg.hidden_size == 32
  # memoised: a second call does not go to huggingface_hub again
  import huggingface_hub
  calls = []
  original = huggingface_hub.snapshot_download
  try:
    huggingface_hub.snapshot_download = lambda *a, **k: calls.append(a) or original(*a, **k)
    hub.resolve_hf_source("Org/Name")
  finally:
    huggingface_hub.snapshot_download = original
  assert calls == []


def test_tokenizer_resolvers_and_model_config_use_the_snapshot(offline_cache):
  from ml_collections import ConfigDict
  from rlvr_jax.run import init as init_lib
  _, snap = offline_cache
  config = ConfigDict({"init": {"from_hf": "Org/Name", "from_checkpoint": ""},
                       "data": {"tokenizer": ""}, "model": {"size": "toy-1m"}})
  init_lib.resolve_source(config)
  assert os.path.samefile(init_lib.tokenizer_path(config), snap)
  cfg = init_lib.model_config(config)
  assert cfg.num_layers == 1 and cfg.hidden_size == 32
  config.init.from_hf = "Org/Missing"
  with pytest.raises(ValueError, match="Org/Missing"):
    init_lib.resolve_source(config)


def test_unknown_id_offline_is_one_clear_line(offline_cache):
  cache, _ = offline_cache
  with pytest.raises(ValueError) as e:
    hub.resolve_hf_source("Org/Missing@v2")
  msg = str(e.value)
  assert "\n" not in msg
  for part in ("init.from_hf=Org/Missing@v2", "Org/Missing", cache, "HF_HUB_OFFLINE",
               "hf download Org/Missing --revision v2", "HF_HOME", "local directory"):
    assert part in msg, msg


def test_local_directories_still_work(offline_cache, model_dir, tmp_path):
  assert hub.resolve_hf_source(model_dir) == model_dir
  with pytest.raises(FileNotFoundError, match="is not a directory"):
    hub.resolve_hf_source(str(tmp_path / "no_such_dir"))
  (tmp_path / "afile").write_text("x")
  with pytest.raises(FileNotFoundError, match="is a file"):
    hub.resolve_hf_source(str(tmp_path / "afile"))
  # a local directory that looks like an id is read as the directory
  local = tmp_path / "Org" / "Name"
  shutil.copytree(model_dir, local)
  hub.clear_cache()
  assert hub.resolve_hf_source("Org/Name") == "Org/Name"


def _eval_argv(workdir, from_hf):
  return ["rlvr-jax", "eval", f"--config={ROOT}/configs/toy/eval.py", f"--workdir={workdir}",
          f"--config.init.from_hf={from_hf}", "--config.eval.n=2", "--config.eval.k=1",
          "--config.eval.ks=(1,)", "--config.eval.max_new_tokens=4", "--config.eval.greedy=False",
          "--config.eval.batch_size=8", "--config.eval.splits=eval"]


def test_eval_command_with_a_hub_id(offline_cache, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("RLVR_JAX_COMPILE_CACHE", jax.config.jax_compilation_cache_dir or "")
  argv = _eval_argv(tmp_path / "eval", "Org/Name")
  monkeypatch.setattr(sys, "argv", argv)   # ml_collections reads --config.* from sys.argv
  assert cli.main(argv) == 0, capsys.readouterr().err
  doc = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
  assert doc["source"] == "Org/Name" and doc["tag"] == "hf"
  assert "eval/arith_eval/avg@1" in doc["metrics"]

  argv = _eval_argv(tmp_path / "eval2", "Org/Missing")
  monkeypatch.setattr(sys, "argv", argv)
  capsys.readouterr()
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.startswith("rlvr-jax")]
  assert len(lines) == 1 and "Traceback" not in err, err
  assert lines[0].startswith("rlvr-jax eval: error: init.from_hf=Org/Missing: "), lines[0]
  assert "hf download Org/Missing" in lines[0] and not lines[0].endswith("..."), lines[0]


def test_other_processes_read_process_0s_snapshot(offline_cache, monkeypatch):
  """jax.process_count() > 1, seen from process 1: a barrier (the broadcast of process 0's
  outcome), then the cache only (local_files_only=True)."""
  import huggingface_hub
  from jax.experimental import multihost_utils
  _, snap = offline_cache
  monkeypatch.delenv("HF_HUB_OFFLINE")                     # the sockets stay blocked
  calls, barriers = [], []
  original = huggingface_hub.snapshot_download

  def recording(*a, **k):
    calls.append(k["local_files_only"])
    return original(*a, **k)
  monkeypatch.setattr(huggingface_hub, "snapshot_download", recording)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  monkeypatch.setattr(multihost_utils, "broadcast_one_to_all",
                      lambda x: barriers.append(int(x)) or x)
  assert os.path.samefile(hub.resolve_hf_source("Org/Name"), snap)
  assert barriers == [1] and calls == [True]     # one barrier, then the cache only


def test_bucket_directory_is_copied_once(model_dir, tmp_path, monkeypatch):
  from test_bucket_workdir import LocalBucket
  from etils.epath import gpath
  root = tmp_path / "gcs"
  shutil.copytree(model_dir, root / "bkt" / "models" / "tiny")
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs", LocalBucket(str(root)))  # noqa: SLF001
  monkeypatch.setenv("RLVR_JAX_CACHE", str(tmp_path / "cache"))
  hub.clear_cache()
  local = hub.resolve_hf_source("gs://bkt/models/tiny")
  assert local.startswith(str(tmp_path / "cache")) and os.path.basename(local) == "tiny"
  assert sorted(n for n in os.listdir(local) if not n.startswith(".")) == sorted(
      os.listdir(model_dir))
  cfg, _ = rj.load_hf(local)
  assert cfg.hidden_size == 32
  stamp = os.stat(os.path.join(local, "config.json")).st_mtime_ns
  hub.clear_cache()                                   # a new process: the manifest matches
  assert hub.resolve_hf_source("gs://bkt/models/tiny") == local
  assert os.stat(os.path.join(local, "config.json")).st_mtime_ns == stamp
  with pytest.raises(FileNotFoundError, match="is not a directory"):
    hub.resolve_hf_source("gs://bkt/models/missing")
  hub.clear_cache()
