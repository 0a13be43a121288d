"""Toy SFT clearly learns: `rlvr-jax sft` on the arith domain drives the held-out loss well below
the unigram entropy of the reply tokens and lifts teacher-forced accuracy on the held-out
problems' boxed-answer tokens from chance to most of them.

The run is a real CLI run in a subprocess on one CPU device at full XLA optimisation (the test
process itself simulates 8 devices at the lowest optimisation level, which is fine for
correctness tests and slow for training)."""
import collections
import json
import math
import os
import subprocess
import sys

import numpy as np

from rlvr_jax.data import builtin, pipelines, records
from rlvr_jax.tokenizer import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 150
SFT = ["--config=configs/toy/sft.py", f"--config.steps={STEPS}", "--config.data.difficulty=1",
       "--config.seq_len=128", "--config.data.n_train=2400", "--config.data.n_eval=64",
       f"--config.eval_every={STEPS}", "--config.eval_batches=4", "--config.checkpoint_every=0",
       "--config.progress_bar=False", "--config.seed=0"]


def _unigram_entropy_nats(n_train: int) -> float:
  """Entropy of the empirical unigram distribution of the trained (reply) targets: the loss of
  the best model that ignores context."""
  tok = load_tokenizer(builtin.builtin_tokenizer_path())
  recs = records.domain_records("arith", "train", n_train, 0, difficulty=1)
  ds = pipelines.sft_dataset(recs, tok, seq_len=128, batch_size=16, template="toy", seed=0,
                             shuffle=False, shard_index=0, shard_count=1)
  counts = collections.Counter()
  for batch in ds:
    counts.update(batch["targets"][batch["loss_mask"].astype(bool)].tolist())
  p = np.array(list(counts.values()), np.float64)
  p /= p.sum()
  return float(-(p * np.log(p)).sum())


def test_toy_sft_learns_below_unigram_entropy_and_answers_held_out(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHONPATH": ROOT}
  cmd = [sys.executable, "-m", "rlvr_jax.cli", "sft", f"--workdir={tmp_path}", *SFT]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

  with open(tmp_path / "metrics.jsonl") as f:
    evals = [r for r in map(json.loads, f) if "eval/answer_accuracy" in r]
  first, last = evals[0], evals[-1]
  assert (first["step"], last["step"]) == (0, STEPS)
  assert first["eval/answer_tokens"] >= 100            # enough held-out answer digits to judge

  entropy = _unigram_entropy_nats(2400)
  assert 2.0 < entropy < math.log(1024)                # a real distribution over the vocab
  assert first["eval/loss"] > entropy                  # random init: worse than unigram
  assert last["eval/loss"] < 0.25 * entropy, (last["eval/loss"], entropy)
  # Teacher-forced answer tokens: chance at init, a clear share right after 150 steps (these
  # answers need the trace's arithmetic right, not only copying). One 150-step run lands
  # anywhere in 0.36-0.49 with the seed and the f32 summation order (seeds 0-2 on a 2-core AMD
  # EPYC, before and after the attention's causal query blocks: 0.40/0.49/0.36 and
  # 0.37/0.46/0.38; 0.53 on an earlier host), so the bar is 5x the init's ceiling, below that
  # spread.
  assert first["eval/answer_accuracy"] < 0.05
  assert last["eval/answer_accuracy"] > 0.25, last["eval/answer_accuracy"]
