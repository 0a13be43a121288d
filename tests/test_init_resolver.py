"""run/init.py, the one init resolver: each source kind (HF directory, run / params checkpoint,
named size, resumed run) resolves its own model config; config.model overrides follow one rule
(architecture fixed by loaded weights, numerics free); plan, train and eval resolve the same
config for the same spec; params and the tokenizer path come from the same source."""
import json
import os
import shutil

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

import rlvr_jax as rj
from rlvr_jax import plan, sharding, specs
from rlvr_jax.data import builtin
from rlvr_jax.eval import harness
from rlvr_jax.run import context, init as init_lib
from rlvr_jax.train import checkpoints
from conftest import make_tiny_hf_dir

# A params checkpoint whose architecture differs from the tiny HF model's in every field the
# tests compare (so a resolver reading the wrong source fails).
CKPT_FIELDS = dict(num_layers=2, hidden_size=48, intermediate_size=96, num_heads=3,
                   num_kv_heads=1, head_dim=16, max_seq_len=64)


def one_device_mesh():
  return sharding.make_mesh((1, 1, 1), jax.devices()[:1])


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return make_tiny_hf_dir(str(tmp_path_factory.mktemp("init") / "hf"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  """A params-only checkpoint (save_params) of a small random model, with the toy tokenizer."""
  tok = builtin.resolve_tokenizer("")
  cfg = rj.get_model_config("toy-1m", vocab_size=tok.vocab_size, **CKPT_FIELDS)
  params = sharding.init_params(cfg, jax.random.key(1), one_device_mesh())
  path = str(tmp_path_factory.mktemp("init") / "params")
  checkpoints.save_params(path, cfg, params)
  shutil.copyfile(builtin.builtin_tokenizer_path(), os.path.join(path, "tokenizer.model"))
  return path, cfg, params


def spec_of(**sections) -> specs.RunSpec:
  """A RunSpec from {"init": {...}, "model": {...}, ...}."""
  return specs.parse(ConfigDict(sections))


def tree_equal(a, b) -> bool:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(x.shape == y.shape and x.dtype == y.dtype and
                                    np.array_equal(np.asarray(x), np.asarray(y))
                                    for x, y in zip(la, lb))


# ---------------------------------------------------------------------------------- sources
def test_each_source_kind_resolves_its_own_config(hf_dir, ckpt, tmp_path):
  path, ckpt_cfg, _ = ckpt
  hf_cfg, _ = rj.load_hf(hf_dir, dtype=None)

  src = init_lib.resolve_source(spec_of(init={"from_hf": hf_dir}))
  assert (src.kind, src.path, src.ref, src.loaded) == ("hf", hf_dir, hf_dir, True)
  assert src.description == os.path.join(hf_dir, "config.json")
  cfg = init_lib.model_config(spec_of(init={"from_hf": hf_dir}), src)
  assert cfg == hf_cfg and cfg.hidden_size == 32 and cfg.num_layers == 1

  src = init_lib.resolve_source(spec_of(init={"from_checkpoint": path}))
  assert (src.kind, src.path, src.step) == ("checkpoint", path, None)
  assert init_lib.model_config(spec_of(init={"from_checkpoint": path}), src) == ckpt_cfg

  src = init_lib.resolve_source(spec_of(init={"from_checkpoint": f"{path}:7"}))
  assert (src.kind, src.path, src.step, src.ref) == ("checkpoint", path, 7, f"{path}:7")

  spec = spec_of(model={"size": "toy-7m"})
  src = init_lib.resolve_source(spec)
  assert (src.kind, src.ref, src.loaded) == ("size", "toy-7m", False)
  assert init_lib.model_config(spec, src, vocab_size=300) == \
      rj.get_model_config("toy-7m", vocab_size=300)
  # model.vocab_size wins over the tokenizer's
  spec = spec_of(model={"size": "toy-7m", "vocab_size": 512})
  assert init_lib.model_config(spec, vocab_size=300).vocab_size == 512

  # a resumed run's recorded config wins over init.from_hf
  run = tmp_path / "run"
  run.mkdir()
  recorded = rj.get_model_config("toy-1m", vocab_size=260, num_layers=3)
  checkpoints.write_config_json(str(run), {}, recorded)
  spec = spec_of(init={"from_hf": hf_dir})
  src = init_lib.resolve_source(spec, resume_dir=str(run))
  assert (src.kind, src.path) == ("resume", str(run))
  assert init_lib.model_config(spec, src) == recorded


def test_source_errors(hf_dir, ckpt, tmp_path):
  path, _, _ = ckpt
  with pytest.raises(ValueError, match="set only one of init.from_hf"):
    init_lib.resolve_source(spec_of(init={"from_hf": hf_dir, "from_checkpoint": path}))
  with pytest.raises(ValueError, match="set only one of init.from_hf"):   # plan refuses it too
    plan.resolve_model(spec_of(init={"from_hf": hf_dir, "from_checkpoint": path}))
  with pytest.raises(FileNotFoundError, match="is not a directory"):
    init_lib.resolve_source(spec_of(init={"from_checkpoint": str(tmp_path / "missing")}))
  with pytest.raises(ValueError, match="kind"):
    init_lib.InitSource("weights")


def test_plan_reads_only_what_is_on_disk(hf_dir, ckpt, tmp_path):
  """local=True (plan): no fetch; an init directory without config.json falls back to the size,
  and plan then keeps its own rules for the size (toy vocabulary, no model to plan)."""
  path, ckpt_cfg, _ = ckpt
  src = init_lib.resolve_source(spec_of(init={"from_checkpoint": f"{path}:3"}), local=True)
  assert (src.kind, src.path, src.step) == ("checkpoint", path, 3)
  # PATH:STEP is read by the run's own parser: a step that is not a number fails as in the run
  for local in (True, False):
    with pytest.raises(ValueError, match="must be a checkpoint step number"):
      init_lib.resolve_source(spec_of(init={"from_checkpoint": f"{path}:last"}), local=local)
  empty = tmp_path / "empty"
  empty.mkdir()
  src = init_lib.resolve_source(spec_of(init={"from_hf": str(empty)}, model={"size": "toy-7m"}),
                                local=True)
  assert (src.kind, src.ref) == ("size", "toy-7m")
  cfg, where = plan.resolve_model(spec_of(init={"from_hf": str(empty)},
                                          model={"size": "toy-7m"}))
  assert cfg.vocab_size == builtin.TOY_VOCAB_SIZE and "toy tokenizer" in where
  with pytest.raises(ValueError, match="no model to plan"):
    plan.resolve_model(spec_of(init={"from_hf": str(empty)}))


# ---------------------------------------------------------------------------------- overrides
@pytest.mark.parametrize("source", ["hf", "checkpoint", "resume"])
@pytest.mark.parametrize("field,value", [("num_layers", 5), ("hidden_size", 40),
                                         ("vocab_size", 1000), ("tie_embeddings", True)])
def test_architecture_overrides_must_agree_with_loaded_weights(source, field, value, hf_dir, ckpt,
                                                               tmp_path):
  path = {"hf": hf_dir, "checkpoint": ckpt[0], "resume": ckpt[0]}[source]
  init = {"from_hf": hf_dir} if source == "hf" else {"from_checkpoint": path}
  spec = spec_of(init=init, model={field: value})
  base = init_lib.base_config(init_lib.resolve_source(spec))
  assert getattr(base, field) != value       # the override would change the weights' shapes
  workdir = path if source == "resume" else str(tmp_path / "run")    # what a run resolves
  with pytest.raises(ValueError, match=rf"config\.model\.{field}={value} differs from {path}"):
    context.build(spec, workdir, "cpt")
  if source != "resume":
    with pytest.raises(ValueError, match=rf"config\.model\.{field}={value} differs from"):
      plan.resolve_model(spec)
  # the same override on a named size is just applied
  sized = init_lib.model_config(spec_of(model={"size": "toy-1m", field: value}), vocab_size=300)
  assert getattr(sized, field) == value


def test_numeric_and_matching_overrides_apply_to_loaded_weights(hf_dir, ckpt, tmp_path):
  path, ckpt_cfg, _ = ckpt
  spec = spec_of(init={"from_checkpoint": path},
                 model={"dtype": "bfloat16", "param_dtype": "bfloat16", "remat": "full",
                        "attention": "xla", "max_seq_len": 32,
                        "hidden_size": ckpt_cfg.hidden_size})
  cfg = context.build(spec, str(tmp_path / "run"), "cpt").cfg
  assert cfg == ckpt_cfg.replace(dtype="bfloat16", param_dtype="bfloat16", remat="full",
                                 attention="xla", max_seq_len=32)
  assert cfg != ckpt_cfg


# ---------------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("source,dtype", [("hf", ""), ("checkpoint", ""),
                                          ("checkpoint", "bfloat16")])
def test_plan_train_and_eval_resolve_the_same_config(source, dtype, hf_dir, ckpt, tmp_path):
  path, ckpt_cfg, ckpt_params = ckpt
  init = {"from_hf": hf_dir} if source == "hf" else {"from_checkpoint": path}
  model = {"dtype": dtype} if dtype else {}
  spec = spec_of(init=init, model=model, eval={"n": 1})
  planned, where = plan.resolve_model(spec)
  run = context.build(spec, str(tmp_path / "run"), "cpt")
  trained = run.cfg
  mesh = one_device_mesh()
  evaluated, params, _, tag, step, tok = harness.load_for_eval(spec, mesh)
  assert planned == trained == evaluated
  assert where == os.path.join(hf_dir if source == "hf" else path, "config.json")
  if source == "hf":
    assert evaluated == rj.load_hf(hf_dir, dtype=None)[0] and tag == "hf" and tok == hf_dir
    assert tree_equal(params, rj.load_hf(hf_dir, dtype=None)[1])
  else:
    assert evaluated == ckpt_cfg.replace(**({"dtype": dtype} if dtype else {}))
    assert (tag, step, tok) == ("params", None, os.path.join(path, "tokenizer.model"))
    assert tree_equal(params, ckpt_params)
  # the run's initial params are those eval loads
  assert tree_equal(init_lib.load_params(spec, trained, mesh, source=run.init), params)


def test_eval_stores_an_hf_model_in_its_compute_dtype(hf_dir, tmp_path):
  spec = spec_of(init={"from_hf": hf_dir}, model={"dtype": "bfloat16"})
  trained = context.build(spec, str(tmp_path / "run"), "cpt").cfg
  cfg, params, *_ = harness.load_for_eval(spec, one_device_mesh())
  assert trained.dtype == cfg.dtype == "bfloat16"
  assert trained.param_dtype == "float32" and cfg.param_dtype == "bfloat16"
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(jax.numpy.bfloat16)}


def test_params_follow_the_source(hf_dir, ckpt, tmp_path):
  path, ckpt_cfg, ckpt_params = ckpt
  mesh = one_device_mesh()
  size = spec_of(model={"size": "toy-1m"})
  assert init_lib.load_params(size, init_lib.model_config(size, vocab_size=300), mesh) is None
  spec = spec_of(init={"from_checkpoint": path})
  workdir = tmp_path / "w"
  workdir.mkdir()
  params = init_lib.load_params(spec, ckpt_cfg, mesh, str(workdir))
  assert tree_equal(params, ckpt_params)
  recorded = json.loads((workdir / "init.json").read_text())
  assert recorded["from"] == path and recorded["explicit"] is False
  spec = spec_of(init={"from_hf": hf_dir}, model={"param_dtype": "bfloat16"})
  params = init_lib.load_params(spec, init_lib.model_config(spec), mesh)
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(jax.numpy.bfloat16)}


# ---------------------------------------------------------------------------------- tokenizer
def test_run_model_config_takes_and_checks_the_tokenizer_vocabulary(ckpt):
  path, ckpt_cfg, _ = ckpt
  tok = builtin.resolve_tokenizer("")
  spec = spec_of(model={"size": "toy-1m"})
  assert init_lib.run_model_config(spec, tok).vocab_size == tok.vocab_size
  with pytest.raises(ValueError, match=r"config\.model\.vocab_size=8 is smaller than the "
                                       r"tokenizer's"):
    init_lib.run_model_config(spec_of(model={"size": "toy-1m", "vocab_size": 8}), tok)

  class Bigger:
    vocab_size = ckpt_cfg.vocab_size + 1
  with pytest.raises(ValueError, match=f"the model's vocab_size={ckpt_cfg.vocab_size} is smaller"):
    init_lib.run_model_config(spec_of(init={"from_checkpoint": path}), Bigger())


def test_tokenizer_path_is_the_one_precedence(hf_dir, ckpt):
  path = ckpt[0]
  spec = spec_of(init={"from_checkpoint": path}, data={"tokenizer": ""})
  assert init_lib.tokenizer_path(spec) == os.path.join(path, "tokenizer.model")
  assert init_lib.tokenizer_path(spec, explicit="/x.model") == "/x.model"
  spec = spec_of(init={"from_hf": hf_dir}, data={"tokenizer": "/y.model"})
  assert init_lib.tokenizer_path(spec) == "/y.model"
  assert init_lib.tokenizer_path(spec, explicit="") == hf_dir
