"""The main job end to end: `rlvr-jax pipeline` runs cpt -> sft -> rl -> eval and resumes."""
import json
import os

from rlvr_jax import cli

TINY = ["--config.cpt.steps=2", "--config.sft.steps=2", "--config.rl.steps=2",
        "--config.cpt.eval_every=0", "--config.sft.eval_every=0", "--config.rl.eval_every=0",
        "--config.rl.eval_at_end=False", "--config.rl.rl.max_new_tokens=16",
        "--config.rl.rl.profile_phases=True",           # perf/sample_s of the RL stage
        "--config.cpt.progress_bar=False", "--config.sft.progress_bar=False",
        "--config.rl.progress_bar=False", "--config.eval.eval.n=2", "--config.eval.eval.k=2",
        "--config.eval.eval.ks=(1,2)", "--config.eval.eval.max_new_tokens=16",
        "--config.eval.eval.greedy=False", "--config.eval.eval.batch_size=8"]


def _records(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_pipeline_runs_every_stage_and_resumes(tmp_path):
  argv = ["rlvr-jax", "pipeline", "--config=configs/toy/pipeline.py", f"--workdir={tmp_path}",
          *TINY]
  assert cli.main(argv) == 0

  with open(tmp_path / "report.json") as f:
    report = json.load(f)
  assert set(report["metrics"]) == {"cpt", "sft", "rl"}
  for stage_metrics in report["metrics"].values():
    for name in ("arith_eval", "arith_ood"):
      assert 0.0 <= stage_metrics[f"eval/{name}/avg@2"] <= 1.0
      assert stage_metrics[f"eval/{name}/pass@2"] >= stage_metrics[f"eval/{name}/pass@1"]

  for stage in ("cpt", "sft"):
    rows = [r for r in _records(tmp_path / stage / "metrics.jsonl") if "loss" in r]
    assert rows and all(k in rows[-1] for k in ("loss", "lr", "grad_norm"))
    assert os.path.exists(tmp_path / stage / "tokenizer.model")
  with open(tmp_path / "sft" / "config.json") as f:
    assert json.load(f)["init"]["from_checkpoint"] == str(tmp_path / "cpt")
  rl_rows = _records(tmp_path / "rl" / "metrics.jsonl")
  for key in ("reward/mean", "reward/true_mean", "policy/kl", "perf/sample_s"):  # step 2: steady state
    assert key in rl_rows[-1], key

  # Running the same command again resumes: finished stages add no training steps.
  def train_rows():
    return {s: len([r for r in _records(tmp_path / s / "metrics.jsonl") if "loss" in r])
            for s in ("cpt", "sft", "rl")}
  before = train_rows()
  assert cli.main(argv) == 0
  assert train_rows() == before
