"""A run that drops part of its data says so: a one-time warning naming the count and the fix,
and data/<count> in every metrics.jsonl record."""
import json
import logging
import os

from rlvr_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sft_logs_examples_dropped_for_length(tmp_path, caplog, monkeypatch):
  monkeypatch.setenv("RLVR_JAX_COMPILE_CACHE", "")
  argv = ["rlvr-jax", "sft", f"--config={ROOT}/configs/toy/sft.py", f"--workdir={tmp_path}",
          "--config.steps=2", "--config.seq_len=128", "--config.batch_size=8",
          "--config.eval_every=0", "--config.log_every=1", "--config.progress_bar=False",
          "--config.data.n_train=64", "--config.data.n_eval=8"]
  with caplog.at_level(logging.WARNING, logger="rlvr_jax.data"):
    assert cli.main(argv) == 0
  warnings = [r.getMessage() for r in caplog.records if r.name == "rlvr_jax.data"]
  assert len(warnings) == 1, warnings                      # once per run, not per step
  assert "dropped_too_long=" in warnings[0] and "raise seq_len" in warnings[0]
  with open(tmp_path / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  # Levels 2-3 traces run past 128 tokens (configs/toy/sft.py: ~70% of them): the count is
  # positive, never decreases, and is in every record.
  drops = [r["data/dropped_too_long"] for r in records]
  assert len(drops) == 2 and drops[0] > 0 and drops[1] >= drops[0]
