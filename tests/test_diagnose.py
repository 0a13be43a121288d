"""`rlvr-jax diagnose`: saturation analysis of a run directory, and faithfulness / diversity of
a model's rollouts with an HTTP judge that misbehaves (the run must not crash)."""
import http.server
import json
import os
import threading

import numpy as np

from rlvr_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = f"--config={ROOT}/configs/diagnose.py"


def write_run(path, rewards, evals):
  """metrics.jsonl of a run: reward/mean per step 1..T and eval/x/acc at the given steps."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    for step, acc in sorted(evals.items()):
      if step == 0:
        f.write(json.dumps({"step": 0, "eval/x/acc": acc}) + "\n")
    for t, r in enumerate(rewards, 1):
      rec = {"step": t, "reward/mean": r}
      if t in evals:
        rec["eval/x/acc"] = evals[t]
      f.write(json.dumps(rec) + "\n")


def test_saturation_of_a_run(tmp_path, capsys):
  # A ramp 0.1 .. 0.9 over steps 1-9, then 0.9 until T = 20: r_max 0.9, and with margin 5 the
  # first t <= 15 with r >= 0.99 * 0.9 is t = 9. Eval at 0, 8, 10, 20: M(9) interpolates
  # 0.3 (t=8) and 0.5 (t=10) to 0.4, so delta_sat = 0.4 - 0.1 and delta_post = 0.6 - 0.4.
  rewards = [0.1 * t for t in range(1, 10)] + [0.9] * 11
  run = tmp_path / "run"
  write_run(str(run), rewards, {0: 0.1, 8: 0.3, 10: 0.5, 20: 0.6})
  out = tmp_path / "out"
  assert cli.main(["rlvr-jax", "diagnose", CONFIG, f"--workdir={out}", f"--config.run={run}",
                   "--config.saturation.margin=5"]) == 0
  with open(out / "saturation.json") as f:
    doc = json.load(f)
  assert doc["t_sat"] == 9 and abs(doc["r_max"] - 0.9) < 1e-12
  np.testing.assert_allclose(doc["delta_sat"]["eval/x/acc"], 0.3, atol=1e-12)
  np.testing.assert_allclose(doc["delta_post"]["eval/x/acc"], 0.2, atol=1e-12)
  assert doc["interpolated"]["eval/x/acc"] is True
  assert doc["params"]["margin"] == 5 and doc["params"]["epsilon"] == 0.99
  png = (out / "saturation.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
  assert "t_sat=9" in capsys.readouterr().out


def test_large_small_gap_at_the_small_runs_t_sat(tmp_path):
  # small: saturates at t = 9 as above (M(9) = 0.4 interpolated); large: eval 0.2 at 0 and
  # 0.8 at 10 -> M(9) = 0.2 + 0.9 * 0.6 = 0.74, so G = 0.74 - 0.4 = 0.34.
  small, large = tmp_path / "small", tmp_path / "large"
  write_run(str(small), [0.1 * t for t in range(1, 10)] + [0.9] * 11,
            {0: 0.1, 8: 0.3, 10: 0.5, 20: 0.6})
  write_run(str(large), [0.05 * t for t in range(1, 21)], {0: 0.2, 10: 0.8, 20: 0.9})
  out = tmp_path / "out"
  assert cli.main(["rlvr-jax", "diagnose", CONFIG, f"--workdir={out}", f"--config.run={small}",
                   f"--config.large_run={large}", "--config.saturation.margin=5"]) == 0
  with open(out / "saturation.json") as f:
    gap = json.load(f)["large_small_gap"]["gap"]["eval/x/acc"]
  assert gap["t_sat_small"] == 9 and gap["interpolated"] is True
  np.testing.assert_allclose(gap["G"], 0.34, atol=1e-12)


def test_never_saturating_run_has_null_t_sat(tmp_path):
  run = tmp_path / "run"
  write_run(str(run), [0.01 * t for t in range(1, 31)], {0: 0.0, 30: 0.2})   # rising to the end
  out = tmp_path / "out"
  assert cli.main(["rlvr-jax", "diagnose", CONFIG, f"--workdir={out}", f"--config.run={run}",
                   "--config.saturation.margin=5"]) == 0
  with open(out / "saturation.json") as f:
    doc = json.load(f)
  assert doc["t_sat"] is None and doc["delta_sat"]["eval/x/acc"] is None


class Judge(http.server.BaseHTTPRequestHandler):
  """An OpenAI-compatible endpoint that answers 500, garbage and a verdict in turn."""
  calls = []

  def do_POST(self):   # noqa: N802
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    Judge.calls.append(body)
    n = len(Judge.calls) % 3
    if n == 1:
      self.send_response(500)
      self.end_headers()
      return
    content = "Verdict: ALIGNED" if n == 2 else "I refuse \x00 to answer"
    payload = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
    self.send_response(200)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(payload)))
    self.end_headers()
    self.wfile.write(payload)

  def log_message(self, *args):
    pass


def test_model_diagnostics_with_a_misbehaving_http_judge(init_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("RLVR_JAX_COMPILE_CACHE", "")
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Judge)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    out = tmp_path / "out"
    rc = cli.main(["rlvr-jax", "diagnose", CONFIG, f"--workdir={out}",
                   f"--config.init.from_hf={init_dir}", "--config.n_prompts=2", "--config.k=2",
                   "--config.max_new_tokens=8", "--config.batch_size=4",
                   "--config.interventions_max=2", "--config.judge.backend=http",
                   f"--config.judge.base_url=http://127.0.0.1:{server.server_port}",
                   "--config.judge.model=stub", "--config.judge.timeout_s=2",
                   "--config.judge.max_retries=1"])
  finally:
    server.shutdown()
  assert rc == 0
  with open(out / "diagnose.json") as f:
    doc = json.load(f)
  assert doc["n_prompts"] == 2 and doc["k"] == 2
  counts = doc["faithfulness"]["judge"]["counts"]
  assert sum(counts.values()) == 4 and counts["parsed"] + counts["unparsed"] >= 1
  assert 0.0 <= doc["accuracy"] <= 1.0
  assert doc["faithfulness"]["programmatic"]["n_responses"] == 4
  assert doc["diversity"]["n_prompts"] == 2
  assert len(Judge.calls) >= 4
  with open(out / "rollouts.jsonl") as f:
    assert len(f.readlines()) == 4
  assert "| programmatic |" in (out / "diagnose.md").read_text()
