"""A run with a bucket workdir (gs://...) writes every file of the run under that workdir.

The bucket is a test double: etils.epath's gs:// backend is replaced by one that maps
gs://BUCKET/PATH onto a local directory, so every write rlvr_jax makes through its path layer
(rlvr_jax/run/files.py, epath) lands there; orbax's array writes (tensorstore, which has its own
gcs driver) are pointed at the same local directory by translating the checkpoint directory."""
import json
import os

import pytest
from etils.epath import backend as epath_backend, gpath

from rlvr_jax import cli
from rlvr_jax.train import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LocalBucket(epath_backend._OsPathBackend):   # noqa: SLF001 - the test double of GCS
  """gs://BUCKET/PATH <-> ROOT/BUCKET/PATH."""

  def __init__(self, root: str):
    self.root = root

  def local(self, path) -> str:
    path = os.fspath(path)
    return os.path.join(self.root, path[len("gs://"):]) if path.startswith("gs://") else path

  def remote(self, path: str) -> str:
    return "gs://" + os.path.relpath(path, self.root) if path.startswith(self.root) else path

  def open(self, path, mode):
    return super().open(self.local(path), mode)

  def exists(self, path):
    return super().exists(self.local(path))

  def isdir(self, path):
    return super().isdir(self.local(path))

  def listdir(self, path):
    return super().listdir(self.local(path))

  def glob(self, path):
    return [self.remote(p) for p in super().glob(self.local(path))]

  def walk(self, top, *, top_down=True, on_error=None):
    for d, dirs, names in super().walk(self.local(top), top_down=top_down, on_error=on_error):
      yield self.remote(d), dirs, names

  def makedirs(self, path, *, exist_ok=False, mode=0o777):
    return super().makedirs(self.local(path), exist_ok=exist_ok, mode=mode)

  def mkdir(self, path, *, exist_ok=False, mode=0o777):
    return super().mkdir(self.local(path), exist_ok=exist_ok, mode=mode)

  def rmtree(self, path):
    return super().rmtree(self.local(path))

  def remove(self, path):
    return super().remove(self.local(path))

  def rename(self, path, dst):
    return super().rename(self.local(path), self.local(dst))

  def replace(self, path, dst):
    return super().replace(self.local(path), self.local(dst))

  def copy(self, path, dst, *, overwrite):
    return super().copy(self.local(path), self.local(dst), overwrite=overwrite)

  def stat(self, path):
    return super().stat(self.local(path))


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  root = str(tmp_path / "gcs")
  os.makedirs(root)
  fake = LocalBucket(root)
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs", fake)   # noqa: SLF001
  init = checkpoints.RunCheckpoints.__init__

  def local_init(self, workdir, **kw):
    init(self, fake.local(workdir), **kw)
  monkeypatch.setattr(checkpoints.RunCheckpoints, "__init__", local_init)
  return root


def listing(directory: str) -> set[str]:
  return {os.path.relpath(os.path.join(d, n), directory)
          for d, _, names in os.walk(directory) for n in names}


def test_cpt_run_in_a_bucket_workdir_keeps_everything_there(bucket, tmp_path, monkeypatch):
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  monkeypatch.setenv("RLVR_JAX_COMPILE_CACHE", "")
  argv = ["rlvr-jax", "cpt", f"--config={ROOT}/configs/toy/cpt.py",
          "--workdir=gs://fake-bucket/runs/cpt", "--config.steps=4", "--config.batch_size=8",
          "--config.seq_len=32", "--config.eval_every=2", "--config.eval_batches=1",
          "--config.checkpoint_every=2", "--config.log_every=1", "--config.progress_bar=False",
          "--config.data.n_train=64", "--config.data.n_eval=8"]
  assert cli.main(argv) == 0
  run = os.path.join(bucket, "fake-bucket", "runs", "cpt")
  files = listing(run)
  for name in ("config.json", "status.json", "metrics.jsonl", "tokenizer.model"):
    assert name in files, sorted(files)
  assert any(f.startswith("tensorboard/") for f in files), sorted(files)
  assert any(f.startswith("checkpoints/4/state/") for f in files), sorted(files)
  assert not any(".tmp" in f for f in files), sorted(files)
  assert listing(str(cwd)) == set()                          # nothing beside the bucket
  with open(os.path.join(run, "status.json")) as f:
    assert json.load(f)["status"] == "completed"
  with open(os.path.join(run, "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps[-1] == 4 and 0 in steps                        # step-0 eval, then every step

  # The same command again resumes from the bucket: nothing new is trained.
  assert cli.main(argv) == 0
  with open(os.path.join(run, "metrics.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == steps
  assert checkpoints.run_steps("gs://fake-bucket/runs/cpt")[-1] == 4


def test_rl_run_in_a_bucket_workdir_keeps_everything_there(bucket, init_dir, tmp_path,
                                                           monkeypatch):
  from test_rl_loop import tiny_config
  from rlvr_jax.rl import loop as rl_loop
  monkeypatch.chdir(tmp_path)
  c = tiny_config(init_dir)
  c.checkpoint_every = 1
  assert rl_loop.run(c, "gs://fake-bucket/runs/rl") == 0
  files = listing(os.path.join(bucket, "fake-bucket", "runs", "rl"))
  for name in ("config.json", "status.json", "metrics.jsonl", "tokenizer.model",
               "data/train.jsonl", "data/protocol.json"):
    assert name in files, sorted(files)
  assert any(f.startswith("eval/") and f.endswith(".jsonl") for f in files), sorted(files)
  assert any(f.startswith("checkpoints/2/") for f in files), sorted(files)
  assert not any(".tmp" in f for f in files), sorted(files)
