"""`rlvr-jax study`: the plan of stages, the dry run, and a tiny study end to end (report,
verdicts, plots) that a rerun leaves unchanged."""
import json
import os

import pytest

from rlvr_jax import cli
from rlvr_jax.study import plan as plan_lib
from rlvr_jax.study import runner

QUICK = "configs/study/quick.py"


def _config(path=QUICK, *overrides):
  config, _ = cli.parse_config_flags(["rlvr-jax study", f"--config={path}", *overrides],
                                     needs_workdir=False)
  return config


def test_plan_builds_each_shared_stage_once_in_dependency_order(tmp_path):
  study = plan_lib.build(_config(QUICK, "--config.conditions=cpt+nothink,cpt+think,base+none",
                                 "--config.diagnose_conditions=True"), str(tmp_path))
  names = [s.name for s in study.stages]
  assert names[:4] == ["base", "cpt", "sft/cpt+nothink", "sft/cpt+think"]
  assert len(names) == len(set(names))
  assert names.count("cpt") == 1
  rl = [s for s in study.stages if s.kind == "rl"]
  assert len(rl) == 3 * 1 * 2
  seen = set()
  for stage in study.stages:          # every stage comes after what it builds on
    assert all(d in seen for d in stage.deps), stage.name
    seen.add(stage.name)
  by = study.by_name()
  # no SFT: RL starts from the base model itself; SFT variants set thinking / trace
  assert by["rl/base+none/scarce/s1"].config.init.from_checkpoint == str(tmp_path / "base")
  assert by["rl/base+none/scarce/s1"].config.seed == 1
  assert by["sft/cpt+nothink"].config.data.thinking is False
  assert by["sft/cpt+think"].config.data.thinking is True
  assert by["sft/cpt+think"].config.init.from_checkpoint == str(tmp_path / "cpt")
  # the setting's overrides reach the RL config; the study document names every stage
  assert by["rl/cpt+think/scarce/s0"].config.data.n_train == 8
  assert [s["name"] for s in study.doc["stages"]] == names
  assert study.doc["metric"] == "eval/chain_eval/avg@4"
  assert study.doc["ood_metrics"] == ["eval/chain_ood/avg@4"]


@pytest.mark.parametrize("override,message", [
    ("--config.conditions=cpt+think,sft+think", r"not PRE\+SFT"),
    ("--config.settings=scarce,nope", "setting.nope"),
    ("--config.large_setting=large", "large_setting"),
    ("--config.seeds=0", "seeds=0"),
])
def test_plan_refuses_bad_fields_naming_them(tmp_path, override, message):
  with pytest.raises(plan_lib.StudyError, match=message):
    plan_lib.build(_config(QUICK, override), str(tmp_path))


def test_setting_override_of_an_unknown_rl_field_is_named(tmp_path):
  config = _config()
  with config.setting.scarce.rl.data.unlocked():
    config.setting.scarce.rl.data.n_trian = 8
  with pytest.raises(plan_lib.StudyError, match=r"setting.scarce.rl: unknown field 'data.n_trian'"):
    plan_lib.build(config, str(tmp_path))


def test_full_toy_study_has_every_condition_setting_and_seed(tmp_path):
  study = plan_lib.build(_config("configs/study/toy.py"), str(tmp_path))
  conds = study.doc["conditions"]
  assert len(conds) == 8 and {c["sft"] for c in conds.values()} == set(plan_lib.SFT_KINDS)
  kinds = {s["kind"] for s in study.doc["settings"].values()}
  assert kinds == set(plan_lib.SETTING_KINDS)
  rl = [s for s in study.stages if s.kind == "rl"]
  assert len(rl) == 8 * 5 * 3
  assert len([s for s in study.stages if s.kind == "diagnose"]) == 8
  assert study.doc["ood_metrics"] == ["eval/chain_ood/avg@4", "eval/arith_ood/avg@4",
                                      "eval/arith_eval/avg@4"]
  noisy = study.by_name()["rl/cpt+think/noisy/s2"].config
  assert noisy.data.label_noise == pytest.approx(0.7)
  majority = study.by_name()["rl/base+think/majority/s0"].config
  assert majority.reward.weights.majority_vote == 1.0
  assert majority.reward.weights.boxed_answer_match == 0.0


def test_dry_run_prints_the_plan_with_estimates_and_writes_nothing(tmp_path, capsys):
  assert cli.main(["rlvr-jax", "study", f"--config={QUICK}", f"--workdir={tmp_path / 's'}",
                   "--config.dry_run=True"]) == 0
  out = capsys.readouterr().out
  assert "rl/cpt+think/scarce/s1" in out and "builds on" in out
  assert "11 stages; about" in out
  assert not os.path.exists(tmp_path / "s" / plan_lib.STUDY_FILE)


def test_estimates_use_measured_seconds_per_step(tmp_path):
  study = plan_lib.build(_config(), str(tmp_path))
  rl = next(s for s in study.stages if s.kind == "rl")
  assert runner.estimate_seconds(rl, {}) == runner.DEFAULT_SECONDS["rl"] * rl.steps
  runner.record_timing(str(tmp_path), rl, seconds=30.0, steps_run=10)
  assert runner.estimate_seconds(rl, runner.read_timings(str(tmp_path))) == 3.0 * rl.steps


TINY = [
    "--config.conditions=base+nothink,base+think", "--config.seeds=2",
    "--config.base.steps=3", "--config.sft.steps=3", "--config.rl.steps=4",
    "--config.base.eval_every=0", "--config.sft.eval_every=0",
    "--config.base.checkpoint_every=0", "--config.sft.checkpoint_every=0",
    "--config.base.batch_size=8", "--config.sft.batch_size=8",
    "--config.base.data.n_train=200", "--config.sft.data.n_train=64",
    "--config.base.progress_bar=False", "--config.sft.progress_bar=False",
    "--config.rl.progress_bar=False", "--config.rl.eval_every=2", "--config.rl.checkpoint_every=0",
    "--config.rl.batch_size=8", "--config.rl.rl.group_size=2",
    "--config.rl.rl.max_new_tokens=12", "--config.rl.rl.dynamic_sampling=none",
    "--config.rl.eval.n=4", "--config.rl.eval.k=2", "--config.rl.eval.ks=(1,2)",
    "--config.rl.eval.max_new_tokens=12",
    "--config.setting.scarce.rl.data.difficulty_filter=False",
    "--config.setting.scarce.rl.data.n_pool=16", "--config.saturation.margin=1",
]


def _train_rows(root):
  out = {}
  for dirpath, _, names in os.walk(root):
    if "metrics.jsonl" in names:
      with open(os.path.join(dirpath, "metrics.jsonl")) as f:
        out[dirpath] = sum(1 for line in f if '"loss"' in line)
  return out


def test_tiny_study_end_to_end_report_and_rerun_adds_nothing(tmp_path, capsys):
  workdir = tmp_path / "study"
  argv = ["rlvr-jax", "study", f"--config={QUICK}", f"--workdir={workdir}", *TINY]
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  for finding in (1, 2, 3):
    assert f"Finding {finding} (" in out
  assert f"report at {workdir / 'report.md'}" in out

  with open(workdir / plan_lib.STUDY_FILE) as f:
    doc = json.load(f)
  rl_dirs = [s["dir"] for s in doc["stages"] if s["kind"] == "rl"]
  assert len(rl_dirs) == 4
  for d in rl_dirs:
    with open(workdir / d / "status.json") as f:
      assert json.load(f)["status"] in ("completed", "saturated")
  with open(workdir / "report.json") as f:
    report = json.load(f)
  assert [v["finding"] for v in report["verdicts"]] == [1, 2, 3]
  for v in report["verdicts"]:
    assert v["verdict"] in ("reproduced", "not reproduced", "inconclusive")
  assert len(report["runs"]) == 4 and not report["missing"]
  md = (workdir / "report.md").read_text()
  assert "Finding 1 (saturation dynamics):" in md
  pngs = sorted((workdir / "plots").glob("*.png"))
  assert pngs
  for png in pngs:
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
  with open(workdir / runner.TIMINGS_FILE) as f:
    assert {"cpt", "sft", "rl/scarce"} <= set(json.load(f))

  before = _train_rows(workdir)
  assert before and all(before.values())
  assert cli.main(argv) == 0                              # a rerun trains nothing more
  assert _train_rows(workdir) == before
  assert "0 to run" in capsys.readouterr().err

  (workdir / "report.md").unlink()                        # the report regenerates from the runs
  assert cli.main([*argv, "--config.report_only=True"]) == 0
  assert "Finding 3 (" in (workdir / "report.md").read_text()


def test_paper_math_study_differs_from_the_toy_only_in_data_model_and_budgets(tmp_path):
  study = plan_lib.build(_config("configs/study/paper_math.py"), str(tmp_path))
  names = [s.name for s in study.stages]
  assert "base" not in names                      # the base model is the HF checkpoint itself
  by = study.by_name()
  rl = by["rl/base+none/scarce/s0"].config
  assert rl.init.from_hf.endswith("models/Llama-3.2-3B") and not rl.init.from_checkpoint
  assert by["rl/cpt+think/noisy/s1"].config.init.from_checkpoint == str(tmp_path / "sft" / "cpt+think")
  assert rl.data.files.startswith("paper:skywork_or1_math:/")
  assert "math500=paper:math500:/" in rl.eval.files and "gpqa" in rl.eval.files
  assert rl.steps == 496 and rl.batch_size == 64
  assert by["cpt"].deps == () and by["sft/cpt+think"].deps == ("cpt",)
  toy = plan_lib.build(_config("configs/study/toy.py"), str(tmp_path / "toy"))
  assert set(study.doc["settings"]) == set(toy.doc["settings"])
  assert study.doc["metric"].startswith("eval/math500/")


def test_a_stage_built_on_an_input_that_moved_on_is_stale(tmp_path):
  from rlvr_jax.run import workdir as workdir_lib
  study = plan_lib.build(_config(), str(tmp_path))
  sft = study.by_name()["sft/cpt+think"]
  cpt_dir, sft_dir = study.stage_dir("cpt"), study.stage_dir(sft)
  os.makedirs(sft_dir)
  os.makedirs(cpt_dir)
  workdir_lib.write_status(cpt_dir, "completed", 200, 200)
  workdir_lib.record_init(sft_dir, cpt_dir, 200)
  workdir_lib.write_status(sft_dir, "completed", 200, 200)
  assert runner.is_finished(study, sft) and runner.stale_reason(study, sft) is None
  workdir_lib.write_status(cpt_dir, "completed", 300, 300)      # cpt was continued since
  assert "step 200" in runner.stale_reason(study, sft)
  diag = plan_lib.build(_config(QUICK, "--config.diagnose_conditions=True"), str(tmp_path))
  stage = diag.by_name()["diag/cpt+think"]
  os.makedirs(diag.stage_dir(stage))
  with open(os.path.join(diag.stage_dir(stage), "diagnose.json"), "w") as f:
    json.dump({"step": 200}, f)
  assert runner.is_finished(diag, stage)
  workdir_lib.write_status(sft_dir, "completed", 250, 250)      # the SFT model was retrained
  assert not runner.is_finished(diag, stage)                    # measured a model since retrained
  assert "another step" in runner.stale_reason(diag, stage)


def test_dry_run_works_beside_a_running_study(tmp_path, capsys):
  import subprocess
  import sys
  import time
  workdir = tmp_path / "s"
  workdir.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", (
      "import sys, time; from rlvr_jax.run import workdir as w\n"
      f"with w.locked({str(workdir)!r}):\n  print('locked', flush=True); time.sleep(60)")],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    argv = ["rlvr-jax", "study", f"--config={QUICK}", f"--workdir={workdir}"]
    assert cli.main([*argv, "--config.dry_run=True"]) == 0
    assert "11 stages" in capsys.readouterr().out
    start = time.time()
    assert cli.main([*argv, "--config.report_only=True"]) == 2   # writes: needs the lock
    assert "pid" in capsys.readouterr().err and time.time() - start < 30
  finally:
    holder.kill()
