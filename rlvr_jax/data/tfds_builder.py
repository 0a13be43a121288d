"""TFDS for the synthetic domains (array_record, read back with `tfds.data_source`; no TensorFlow).

    path = prepare("arith", data_dir, n_train=1000, n_eval=100, n_ood=100, seed=0)
    src = synthetic_source("arith", "train", data_dir, n_train=1000, n_eval=100, n_ood=100, seed=0)
    records = tfds_records(src)            # problem records (records.py schema)

`RlvrSynthetic` is a `tfds.core.GeneratorBasedBuilder` whose config names one domain and the
generation arguments (`config_name("arith", 0, 1000, 100, 100)` = "arith_s0_1000_100_100", so
data generated with other sizes or seeds never gets reused by mistake). Splits are the domain's
"train", "eval" (in-domain) and "ood" (harder, out-of-distribution); a split with n = 0 is left
out. Files land in DATA_DIR/rlvr_synthetic/CONFIG/1.0.0/ as array_record shards plus
dataset_info.json; TFDS writes into an "incomplete.*" directory and renames it when done, so a
crash never leaves a half-written dataset that looks prepared.

Record features (all text is utf-8): id, domain, split, problem, answer, thinking, solution,
steps_json, meta_json (JSON text) and difficulty (int32). TFDS stores examples in the order of
a hash of their key (the example id), not in generation order.

Any other prepared TFDS dataset (array_record) is read with `sources.tfds_source(name, split,
data_dir=...)` or from its version directory; data_dir may be a gs:// bucket.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from rlvr_jax.data import records
from rlvr_jax.data.sources import TfdsSource, tfds_source

VERSION = "1.0.0"
DATASET_NAME = "rlvr_synthetic"
SPLITS = ("train", "eval", "ood")


def config_name(domain: str, seed: int, n_train: int, n_eval: int, n_ood: int) -> str:
  """The TFDS config name of a domain's data generated with these arguments."""
  return f"{domain}_s{seed}_{n_train}_{n_eval}_{n_ood}"


def _builder_class():
  """The builder class, defined on first use (importing tensorflow_datasets takes a second)."""
  global _BUILDER
  if _BUILDER is not None:
    return _BUILDER
  import tensorflow_datasets as tfds

  class RlvrSyntheticConfig(tfds.core.BuilderConfig):
    """One synthetic domain with its generation arguments."""

    def __init__(self, *, domain: str, seed: int, n_train: int, n_eval: int, n_ood: int,
                 **kwargs):
      super().__init__(name=config_name(domain, seed, n_train, n_eval, n_ood),
                       version=tfds.core.Version(VERSION),
                       description=f"synthetic domain {domain!r}, seed {seed}", **kwargs)
      self.domain, self.seed = domain, seed
      self.sizes = {"train": n_train, "eval": n_eval, "ood": n_ood}

  class RlvrSynthetic(tfds.core.GeneratorBasedBuilder):
    """Synthetic verifiable reasoning problems of rlvr_jax.data.domains."""

    VERSION = tfds.core.Version(VERSION)
    BUILDER_CONFIG_CLASS = RlvrSyntheticConfig
    BUILDER_CONFIGS = []  # configs are made per call (see prepare)
    # No checksums / metadata files next to this module. Left as TFDS computes it, code_path
    # needs the `importlib_resources` backport, which tensorflow-datasets does not install.
    code_path = None

    def _info(self):
      text = tfds.features.Text()
      return tfds.core.DatasetInfo(
          builder=self,
          description="rlvr_jax synthetic verifiable reasoning domains",
          features=tfds.features.FeaturesDict({
              "id": text, "domain": text, "split": text, "difficulty": np.int32,
              "problem": text, "answer": text, "thinking": text, "solution": text,
              "steps_json": text, "meta_json": text,
          }),
          metadata=tfds.core.MetadataDict(
              domain=self.builder_config.domain, seed=self.builder_config.seed,
              sizes=self.builder_config.sizes),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split, n)
              for split, n in self.builder_config.sizes.items() if n > 0}

    def _generate_examples(self, split: str, n: int):
      from rlvr_jax.data.domains import get_domain
      cfg = self.builder_config
      for ex in get_domain(cfg.domain).generate(split, n, cfg.seed):
        yield ex.id, example_features(ex)

  _BUILDER = (RlvrSynthetic, RlvrSyntheticConfig)
  return _BUILDER


_BUILDER = None


def example_features(ex: Any) -> dict[str, Any]:
  """The TFDS feature dict of a domains Example (or a dict with the same fields)."""
  get = ex.get if isinstance(ex, dict) else (lambda k: getattr(ex, k))
  return {
      "id": str(get("id")), "domain": str(get("domain")), "split": str(get("split")),
      "difficulty": np.int32(get("difficulty")), "problem": str(get("problem")),
      "answer": str(get("answer")), "thinking": str(get("thinking") or ""),
      "solution": str(get("solution") or ""),
      "steps_json": json.dumps(records.jsonable(get("steps") or []), sort_keys=True),
      "meta_json": json.dumps(records.jsonable(get("meta") or {}), sort_keys=True),
  }


def builder(domain: str, data_dir: str, *, n_train: int, n_eval: int, n_ood: int,
            seed: int = 0):
  """The TFDS builder of one domain's data (nothing is generated until download_and_prepare)."""
  cls, cfg_cls = _builder_class()
  cfg = cfg_cls(domain=domain, seed=seed, n_train=n_train, n_eval=n_eval, n_ood=n_ood)
  return cls(config=cfg, data_dir=os.fspath(data_dir), file_format="array_record")


def prepare(domain: str, data_dir: str, *, n_train: int, n_eval: int, n_ood: int,
            seed: int = 0) -> str:
  """Generates and writes the dataset (once; an already prepared one is reused). Returns the
  version directory (DATA_DIR/rlvr_synthetic/CONFIG/1.0.0)."""
  b = builder(domain, data_dir, n_train=n_train, n_eval=n_eval, n_ood=n_ood, seed=seed)
  b.download_and_prepare()
  return os.fspath(b.data_path)


def synthetic_source(domain: str, split: str, data_dir: str, *, n_train: int, n_eval: int,
                     n_ood: int, seed: int = 0) -> TfdsSource:
  """A prepared split read back through tfds.data_source (array_record, no TensorFlow)."""
  name = f"{DATASET_NAME}/{config_name(domain, seed, n_train, n_eval, n_ood)}:{VERSION}"
  version_dir = os.path.join(os.fspath(data_dir), DATASET_NAME,
                             config_name(domain, seed, n_train, n_eval, n_ood), VERSION)
  if os.path.isdir(version_dir):
    return tfds_source(version_dir, split)
  return tfds_source(name, split, data_dir=os.fspath(data_dir))


def tfds_record(row: dict[str, Any]) -> dict[str, Any]:
  """A decoded TFDS row of this builder as a problem record (records.py schema)."""
  fields = dict(row)
  fields["steps"] = json.loads(fields.pop("steps_json", "[]") or "[]")
  fields["meta"] = json.loads(fields.pop("meta_json", "{}") or "{}")
  return records.from_example(fields)


def tfds_records(source: TfdsSource) -> list[dict[str, Any]]:
  """All rows of a synthetic TFDS source as problem records."""
  return [tfds_record(source[i]) for i in range(len(source))]
