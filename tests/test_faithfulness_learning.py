"""SFT on faithful traces gives a model whose own traces are clearly more faithful (programmatic
labels) than SFT on unfaithful ones, at toy size and the same budget: the contrast the study's
pre-RL conditions rely on (data.trace).

Both runs are real CLI runs in subprocesses (one CPU device, full XLA optimisation), then
`rlvr-jax diagnose` labels 16 held-out prompts' greedy responses with the domain's step
verifier."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SFT = ["--config=configs/toy/sft.py", "--config.steps=100", "--config.data.difficulty=1",
       "--config.seq_len=128", "--config.data.n_train=1600", "--config.data.n_eval=32",
       "--config.eval_every=0", "--config.checkpoint_every=0", "--config.progress_bar=False"]
DIAGNOSE = ["--config=configs/diagnose.py", "--config.n_prompts=16", "--config.k=1",
            "--config.temperature=0.0", "--config.interventions=False",
            "--config.data.difficulty=1"]


def _cli(*args):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHONPATH": ROOT}
  proc = subprocess.run([sys.executable, "-m", "rlvr_jax.cli", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _shares(tmp_path, trace):
  run, out = tmp_path / trace, tmp_path / f"{trace}_diag"
  _cli("sft", f"--workdir={run}", *SFT, f"--config.data.trace={trace}")
  _cli("diagnose", f"--workdir={out}", *DIAGNOSE, f"--config.init.from_checkpoint={run}")
  with open(out / "diagnose.json") as f:
    prog = json.load(f)["faithfulness"]["programmatic"]
  assert prog["n_labelled"] == 16
  return {k: v["value"] for k, v in prog["shares"]["all"].items()}


def test_faithful_sft_gives_more_faithful_traces_than_unfaithful_sft(tmp_path):
  faithful = _shares(tmp_path, "faithful")
  foreign = _shares(tmp_path, "unfaithful_foreign_steps")
  # foreign_steps traces box this problem's answer after another problem's steps, so their box
  # never equals the last step's result: every such trace is labelled misaligned (0). A model
  # imitating them should box something other than its last step's result almost always; a
  # model imitating faithful traces boxes its last step's result (aligned or partial) in most
  # traces, even while its arithmetic is still often wrong at 100 steps (measured: 0.75 of
  # traces follow vs 0.00). The thresholds leave room for a few flips either way in 16 traces.
  follows_faithful = faithful["aligned"] + faithful["partial"]
  follows_foreign = foreign["aligned"] + foreign["partial"]
  assert follows_faithful >= 0.5, faithful
  assert follows_foreign <= 0.2, foreign
