"""The run context (rlvr_jax/run/context.py): a run's init source, tokenizer, model config and
mesh, resolved once at its start, with one model-config rule for every stage."""
import json
import os

import pytest

from rlvr_jax import cli
from rlvr_jax.rl import loop as rl_loop
from rlvr_jax.run import context
from rlvr_jax.run import init as init_lib
from conftest import make_tiny_hf_dir
from test_rl_loop import tiny_config
from test_run_safety import CPT, TINY_CPT, overrides

def _cpt_config(**changes):
  """configs/toy/cpt.py with TINY_CPT's fields (test_run_safety) and `changes` set."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("cpt_cfg", CPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in {**TINY_CPT, **changes}.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


@pytest.fixture
def resolve_calls(monkeypatch):
  """Counts run.init.resolve_source calls that resolve a run's init source (not a resume)."""
  calls = []
  real = init_lib.resolve_source

  def counting(config, *, resume_dir=None, local=False):
    if resume_dir is None:
      calls.append(local)
    return real(config, resume_dir=resume_dir, local=local)
  monkeypatch.setattr(init_lib, "resolve_source", counting)
  return calls


def test_a_named_size_context_from_a_relative_workdir(tmp_path, monkeypatch, resolve_calls):
  monkeypatch.chdir(tmp_path)
  config = _cpt_config()
  ctx = context.build(config, "run", "cpt",
                      tokenizer_spec=init_lib.tokenizer_path(config))
  assert ctx.workdir == str(tmp_path / "run") and os.path.isabs(ctx.workdir)
  assert ctx.spec.stage == "cpt" and not ctx.resuming
  assert ctx.init.kind == "size" and not ctx.init.loaded
  assert ctx.cfg.vocab_size == ctx.tokenizer.vocab_size       # the size takes the tokenizer's
  assert any(name.startswith("tokenizer") for name in os.listdir(ctx.workdir))   # kept in the run
  assert dict(ctx.mesh.shape)["data"] * dict(ctx.mesh.shape)["fsdp"] == len(ctx.mesh.devices.flat)
  assert resolve_calls == [False]


def test_a_too_small_vocabulary_is_refused_naming_the_field(tmp_path):
  config = _cpt_config(**{"model.vocab_size": 8})
  with pytest.raises(ValueError, match="config.model.vocab_size=8 is smaller than the tokenizer"):
    context.build(config, str(tmp_path / "run"), "cpt",
                  tokenizer_spec=init_lib.tokenizer_path(config))


def test_a_cpt_run_resolves_its_init_source_once(tmp_path, resolve_calls):
  hf = make_tiny_hf_dir(str(tmp_path / "hf"))
  rc = cli.main(["rlvr-jax", "cpt", f"--config={CPT}", f"--workdir={tmp_path / 'cpt'}",
                 *overrides(TINY_CPT, steps=2), f"--config.init.from_hf={hf}",
                 "--config.seq_len=32"])
  assert rc == 0
  assert resolve_calls == [False]


def _edit_hf_config(hf: str, **changes) -> None:
  path = os.path.join(hf, "config.json")
  with open(path) as f:
    doc = json.load(f)
  for key, value in changes.items():
    doc[key] = value
    if key in doc.get("rope_parameters", {}):
      doc["rope_parameters"][key] = value        # transformers 5 nests RoPE's fields
  with open(path, "w") as f:
    json.dump(doc, f)


def test_an_rl_run_resolves_its_init_source_once_and_resumes_on_its_recorded_config(
    tmp_path, resolve_calls):
  hf = make_tiny_hf_dir(str(tmp_path / "hf"))
  config = tiny_config(hf)
  config.steps = 1
  config.eval_every = 0
  workdir = str(tmp_path / "rl")
  assert rl_loop.run(config, workdir) == 0
  assert resolve_calls == [False]
  recorded = context.build(config, workdir, "rl").cfg
  _edit_hf_config(hf, rope_theta=recorded.rope_theta * 2)   # the source changes afterwards
  config.steps = 2
  resumed = context.build(config, workdir, "rl")
  assert resumed.resuming and resumed.cfg == recorded
  assert context.build(config, str(tmp_path / "fresh"), "rl").cfg.rope_theta == \
      recorded.rope_theta * 2
  # weights of another shape under the same init path: refused before anything loads them
  _edit_hf_config(hf, intermediate_size=recorded.intermediate_size * 2)
  with pytest.raises(ValueError, match=r"no longer has the weight shapes .* intermediate_size "
                                       r"64 -> 128"):
    context.build(config, workdir, "rl")


def test_a_resumed_run_keeps_the_config_it_recorded(tmp_path):
  """Resuming a run initialised from loaded weights: its recorded config.json wins over what
  the init source says now (a fresh run reads the source's); the weights still come from the
  source."""
  hf = make_tiny_hf_dir(str(tmp_path / "hf"))
  workdir = tmp_path / "cpt"
  args = [*overrides(TINY_CPT, steps=2), f"--config.init.from_hf={hf}", "--config.seq_len=32"]
  assert cli.main(["rlvr-jax", "cpt", f"--config={CPT}", f"--workdir={workdir}", *args]) == 0
  with open(os.path.join(hf, "config.json")) as f:
    theta = json.load(f)["rope_parameters"]["rope_theta"]
  _edit_hf_config(hf, rope_theta=theta * 2)          # the source changes after the run started
  config = _cpt_config(steps=4, **{"init.from_hf": hf, "seq_len": 32})
  resumed = context.build(config, str(workdir), "cpt")
  fresh = context.build(config, str(tmp_path / "fresh"), "cpt")
  assert resumed.resuming and not fresh.resuming
  assert resumed.init.kind == fresh.init.kind == "hf"
  assert fresh.cfg.rope_theta == theta * 2
  assert resumed.cfg.rope_theta == pytest.approx(theta) and resumed.cfg != fresh.cfg
