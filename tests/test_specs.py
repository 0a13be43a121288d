"""rlvr_jax/specs.py: every shipped stage config parses, unknown fields and wrong types are named,
each cross-field rule of `validate` fails naming its field, and the defaults are those the run
stages used before the typed boundary."""
import dataclasses
import glob
import os

import pytest

from rlvr_jax import specs
from rlvr_jax.config_utils import load_config_file
from rlvr_jax.diagnostics.saturation import MonitorParams
from rlvr_jax.eval.harness import EvalOptions
from rlvr_jax.model.sizes import get_model_config
from rlvr_jax.rl.spec import RLSettings
from rlvr_jax.run.guard import GuardSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE_DIRS = ("toy", "qwen2.5_math_1.5b", "llama3.2_3b")


def _load(path):
  return load_config_file(os.path.join(ROOT, "x"), path)


def _stage_configs():
  out = []
  for d in STAGE_DIRS:
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", d, "*.py"))):
      if os.path.basename(path) == "pipeline.py":
        c = _load(path)
        out += [(f"{path}:{s}", c[s]) for s in ("cpt", "sft", "rl", "eval")]
      else:
        out.append((path, _load(path)))
  return out


STAGE_CONFIGS = _stage_configs()


def test_stage_configs_found():
  names = {os.path.relpath(p, ROOT) for p, _ in STAGE_CONFIGS}
  assert "configs/toy/rl.py" in names and "configs/qwen2.5_math_1.5b/rl.py" in names
  assert "configs/llama3.2_3b/cpt.py" in names and "configs/toy/eval.py" in names
  assert len(STAGE_CONFIGS) >= 20


@pytest.mark.parametrize("path,config", STAGE_CONFIGS, ids=[os.path.relpath(p, ROOT)
                                                            for p, _ in STAGE_CONFIGS])
def test_every_shipped_stage_config_parses(path, config):
  spec = specs.parse(config)
  # every field the file sets lands in the spec unchanged
  flat = config.to_dict()
  assert spec.steps == flat.get("steps", 0)
  assert spec.mesh.shape == (config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  if "data" in config:
    for k, v in config.data.items():
      assert getattr(spec.data, k) == v, k
  if "rl" in config:
    for k, v in config.rl.items():
      assert getattr(spec.rl, k) == v, k
    assert spec.reward.weights == dict(config.reward.weights)
  if "eval" in config:
    for k, v in config.eval.items():
      assert getattr(spec.eval, k) == (tuple(v) if k == "ks" else v), k
  assert spec.raw == flat or spec.raw.keys() == flat.keys()
  assert specs.parse(spec) is spec


def test_unknown_field_names_it_and_the_closest():
  c = _load("configs/toy/rl.py")
  c.rl.group_sise = 4
  with pytest.raises(specs.ConfigError, match=r"unknown config field rl\.group_sise.*rl\.group_size"):
    specs.parse(c)
  c = _load("configs/toy/cpt.py")
  c.stepz = 3
  with pytest.raises(specs.ConfigError, match=r"unknown config field stepz.*steps"):
    specs.parse(c)
  c = _load("configs/toy/cpt.py")
  c.data.max_answer_length = 3
  with pytest.raises(specs.ConfigError, match=r"data\.max_answer_length"):
    specs.parse(c)


def test_wrong_type_names_field_and_expected_type():
  d = _load("configs/toy/rl.py").to_dict()
  d["batch_size"] = "8"
  with pytest.raises(specs.ConfigError, match=r"config\.batch_size='8': expected int, got str"):
    specs.parse(d)
  d["batch_size"] = {"x": 1}
  with pytest.raises(specs.ConfigError, match=r"config\.batch_size=.*expected int"):
    specs.parse(d)
  d["batch_size"] = 8
  d["rl"] = 3
  with pytest.raises(specs.ConfigError, match=r"config\.rl=3: expected a section"):
    specs.parse(d)
  d = _load("configs/toy/rl.py").to_dict()
  d["rl"]["group_size"] = "eight"
  with pytest.raises(specs.ConfigError, match=r"config\.rl\.group_size='eight': expected int"):
    specs.parse(d)
  d = _load("configs/toy/rl.py").to_dict()
  d["rl"]["temperature"] = True
  with pytest.raises(specs.ConfigError, match=r"config\.rl\.temperature=True: expected float"):
    specs.parse(d)
  d = _load("configs/toy/cpt.py").to_dict()
  d["model"]["num_layers"] = 1.5
  with pytest.raises(specs.ConfigError, match=r"config\.model\.num_layers=1\.5: expected"):
    specs.parse(d)
  d["model"]["num_layers"] = 2           # int | None accepts an int
  assert specs.parse(d).model.num_layers == 2


def test_missing_fields_take_the_defaults():
  spec = specs.parse({"stage": "rl", "steps": 3, "rl": {"group_size": 4}})
  assert spec.steps == 3 and spec.rl.group_size == 4
  assert spec.data == specs.DataSpec() and spec.eval == specs.EvalSpec()
  assert spec.model == specs.ModelSpec() and spec.guard_spec == GuardSpec()


def test_defaults_equal_what_runs_used_before():
  """The dataclass defaults are the defaults the run stages read with get_field before."""
  # rl/loop.py (RLSettings takes its defaults from RLConfig; these are the values it had)
  rl, rs = specs.RLConfig(), RLSettings(group_size=2, max_new_tokens=1, pad_id=0)
  assert (rl.vote_samples, rl.temperature, rl.top_k, rl.top_p, rl.estimator) == \
      (0, 1.0, 0, 1.0, "grpo")
  assert (rl.clip_low, rl.clip_high, rl.kl_coef, rl.kl_estimator, rl.agg, rl.entropy_coef) == \
      (0.2, 0.2, 0.0, "k3", "token-mean", 0.0)
  assert (rl.minibatches, rl.epochs, rl.microbatches, rl.dynamic_sampling,
          rl.resample_rounds) == (1, 1, 1, "none", 3)
  assert (rl.log_kl, rl.old_logprobs, rl.tis, rl.tis_cap, rl.log_mismatch) == \
      (True, "sampler", "none", 2.0, True)
  for f in dataclasses.fields(RLSettings):
    if f.name in ("group_size", "max_new_tokens", "pad_id", "eos_ids"):
      continue
    if f.name == "dual_clip":
      assert rl.dual_clip == 0.0 and rs.dual_clip is None   # 0 = off = None
      continue
    assert getattr(rl, f.name) == getattr(rs, f.name), f.name
  assert (rl.fused_step, rl.profile_phases, rl.stop_after_saturation) == ("auto", False, 0)
  d = specs.DataSpec()
  assert d.max_answer_len == 32 and d.template == "toy" and d.system_prompt == "default"
  assert d.prompt_suffix == "" and d.layout == "auto" and d.tokenizer == ""
  assert (d.n_pool, d.protocol_seed, d.pool_limit, d.difficulty, d.n_train) == (0, 0, 0, 0, 0)
  assert (d.difficulty_filter, d.filter_samples) == (False, 16)
  assert (d.label_noise, d.label_noise_samples, d.protocol_batch_size) == (0.0, 96, 16)
  assert (d.thinking, d.trace, d.truncation, d.pack) == (True, "faithful", "drop", False)
  r = specs.RewardConfig()
  assert r.weights == {}
  assert (r.host_verifier, r.noise, r.noise_p, r.noise_fp_rate, r.noise_fn_rate, r.noise_q) \
      == (False, "", 0.0, 0.0, 0.0, 0.5)
  s = specs.RunSpec()
  assert (s.eval_at_end, s.progress_bar, s.keep_best, s.resume_overrides) == (True, True, 0, False)
  assert (s.eval_batches, s.seed, s.max_nonfinite_steps) == (4, 0, GuardSpec().max_nonfinite)
  assert s.model.size == "toy-1m" and s.model.vocab_size == 0 and s.model.overrides() == {}
  assert specs.ModelSpec(vocab_size=99, dtype='', num_layers=0).overrides() == {'vocab_size': 99}
  # eval/harness.py: EvalOptions' sampling defaults, and the eval set defaults
  e, o = specs.EvalSpec(), EvalOptions()
  for f in dataclasses.fields(EvalOptions):
    assert getattr(e, f.name) == getattr(o, f.name), f.name
  assert (e.domains, e.splits, e.n, e.seed, e.difficulty, e.files, e.layout, e.limit) == \
      ("", "eval", 64, 0, 0, "", "auto", 0)
  assert e.write_samples is True and e.name == ""
  # diagnostics/saturation.py, run/guard.py
  assert specs.SaturationSpec().params("reward/mean") == MonitorParams(reward_key="reward/mean")
  assert specs.RunSpec().guard_spec == GuardSpec()


def _rl(**over):
  c = _load("configs/toy/rl.py")
  for k, v in over.items():
    node = c
    *parents, last = k.split(".")
    for p in parents:
      node = node[p]
    node[last] = v
  return specs.parse(c)


def _settings(spec):
  return RLSettings(group_size=spec.rl.group_size, max_new_tokens=spec.rl.max_new_tokens,
                    pad_id=0, minibatches=spec.rl.minibatches,
                    microbatches=spec.rl.microbatches, tis=spec.rl.tis,
                    old_logprobs=spec.rl.old_logprobs if spec.rl.tis == "none" else "trainer",
                    dynamic_sampling=spec.rl.dynamic_sampling)


CFG = get_model_config("toy-1m", vocab_size=64)


def test_a_valid_rl_and_train_spec_passes():
  spec = _rl()
  specs.validate(spec, CFG, None, settings=_settings(spec))
  specs.validate(specs.parse(_load("configs/toy/cpt.py")), CFG, None)
  specs.validate(specs.parse(_load("configs/toy/sft.py")), CFG, None)


@pytest.mark.parametrize("over,field", [
    ({"steps": 0}, "steps=0"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"log_every": 0}, "log_every=0"),
    ({"eval_every": -1}, "eval_every=-1"),
    ({"checkpoint_every": -2}, "checkpoint_every=-2"),
    ({"max_nonfinite_steps": -1}, "max_nonfinite_steps=-1"),
    ({"rl.group_size": 1}, "rl.group_size=1"),
    ({"data.max_prompt_len": 4000}, "data.max_prompt_len=4000"),
    ({"rl.fused_step": True}, "rl.dynamic_sampling='resample'"),
    ({"rl.fused_step": "maybe"}, "rl.fused_step='maybe'"),
    ({"rl.dynamic_sampling": "none", "rl.fused_step": True, "rl.profile_phases": True},
     "rl.profile_phases"),
    ({"init.from_hf": "a", "init.from_checkpoint": "b"}, "init.from_hf"),
])
def test_each_rl_rule_names_its_field(over, field):
  spec = _rl(**over)
  with pytest.raises(ValueError, match=field.replace(".", r"\.").replace("(", r"\(")):
    specs.validate(spec, CFG, None, settings=_settings(spec) if spec.rl.group_size >= 1 else None)


def test_tis_rule_names_old_logprobs():
  spec = _rl(**{"rl.tis": "token"})
  settings = dataclasses.replace(_settings(spec), old_logprobs="trainer")
  with pytest.raises(ValueError, match=r"rl\.tis='token' needs rl\.old_logprobs"):
    specs.validate(spec, CFG, None, settings=settings)


def test_rl_rows_must_divide_into_minibatches(monkeypatch):
  import jax
  from rlvr_jax import sharding
  spec = _rl(**{"rl.minibatches": 3})
  mesh = sharding.make_mesh((-1, 1, 1))
  with pytest.raises(ValueError, match=r"rl\.minibatches x rl\.microbatches"):
    specs.validate(spec, CFG, mesh, settings=_settings(spec))
  spec = _rl(batch_size=16)
  specs.validate(spec, CFG, mesh, settings=_settings(spec))
  with pytest.raises(ValueError, match=r"batch_size=16 does not divide over 3 processes"):
    specs.validate(spec, CFG, mesh, settings=_settings(spec), processes=3)
  assert jax.process_count() == 1


@pytest.mark.parametrize("over,field", [
    ({"steps": 0}, "steps=0"),
    ({"seq_len": 0}, "seq_len=0"),
    ({"microbatches": 0}, "microbatches=0"),
    ({"seq_len": 100000}, "seq_len=100000 exceeds the model's max_seq_len"),
    ({"eval_every": -1}, "eval_every=-1"),
])
def test_each_train_rule_names_its_field(over, field):
  c = _load("configs/toy/cpt.py")
  c.update(over)
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    specs.validate(specs.parse(c), CFG, None)


def test_sft_trace_rules_name_data_trace():
  c = _load("configs/toy/sft.py")
  c.data.trace = "made_up"
  with pytest.raises(ValueError, match=r"data\.trace='made_up'; choose one of"):
    specs.validate(specs.parse(c), CFG, None)
  c.data.trace = "unfaithful_corrupted_step"
  c.data.thinking = False
  with pytest.raises(ValueError, match=r"data\.thinking=False"):
    specs.validate(specs.parse(c), CFG, None)


def test_train_batch_must_divide_over_processes():
  from rlvr_jax import sharding
  c = _load("configs/toy/cpt.py")
  c.batch_size = 16
  mesh = sharding.make_mesh((-1, 1, 1))
  specs.validate(specs.parse(c), CFG, mesh)
  with pytest.raises(ValueError, match=r"batch_size=16 does not divide over 3 processes"):
    specs.validate(specs.parse(c), CFG, mesh, processes=3)


def test_cli_names_a_misspelled_field_of_the_config_file(tmp_path, capsys):
  """A field the config file itself misspells (no --config override) is named by the CLI's one
  conversion, before anything runs."""
  from rlvr_jax import cli
  path = tmp_path / "bad.py"
  path.write_text("from rlvr_jax.config_utils import load_config_file\n"
                  f"def get_config():\n  c = load_config_file({os.path.join(ROOT, 'x')!r}, "
                  "'configs/toy/cpt.py')\n  c.data.n_trian = 5\n  return c\n")
  rc = cli.main(["rlvr-jax", "cpt", f"--config={path}", f"--workdir={tmp_path / 'run'}"])
  err = capsys.readouterr().err
  assert rc == 2, err
  assert "unknown config field data.n_trian; did you mean data.n_train?" in err
  assert not (tmp_path / "run" / "config.json").exists()


def test_protocol_settings_recorded_before_the_typed_config_still_match():
  """protocol.json of an older run recorded None for a data field its config did not set; the
  spec's default for it is the same setting, so the run resumes; a real change is named."""
  from rlvr_jax.rl import protocols
  spec = _rl()
  now = protocols.settings_of(spec)
  old = {**now, "pool_limit": None, "prompt_suffix": None}
  assert now["pool_limit"] == 0 and now["prompt_suffix"] == ""
  assert protocols._changed_settings(old, now) == []
  assert protocols._changed_settings({**old, "n_pool": 7}, now) == ["n_pool"]
  assert protocols._changed_settings({**now, "difficulty": None}, now) == ["difficulty"]  # 1 != 0


def test_one_tokenizer_precedence(tmp_path):
  import json
  from rlvr_jax.data.builtin import tokenizer_source
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text(json.dumps({"data": {"tokenizer": "/named/tok.model"}}))
  assert tokenizer_source("", from_checkpoint=f"{run}:5") == "/named/tok.model"
  (run / "tokenizer.model").write_text("x")
  assert tokenizer_source("", from_checkpoint=str(run)) == str(run / "tokenizer.model")
  (run / "tokenizer.json").write_text("{}")
  assert tokenizer_source("", from_checkpoint=str(run)) == str(run / "tokenizer.json")
  assert tokenizer_source("/explicit.model", from_checkpoint=str(run)) == "/explicit.model"
  hf = tmp_path / "hf"
  hf.mkdir()
  assert tokenizer_source("", from_hf=str(hf)) == str(hf)
  assert tokenizer_source("") == ""
  assert tokenizer_source("", from_checkpoint=str(tmp_path / "empty")) == ""
