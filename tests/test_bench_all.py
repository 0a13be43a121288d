"""`rlvr-jax bench all --quick --out DIR`: every benchmark runs on tiny shapes and DIR/bench.json
(machine section, figures of each bench) and DIR/bench.md (one table) are written. Speed itself
is never asserted."""
import json

from rlvr_jax import bench
from rlvr_jax.bench import all as bench_all

MACHINE_KEYS = ("cpu", "cores", "memory_gib", "jax", "backend", "device_kind", "device_count",
                "accelerator", "python", "date", "git_commit")


def test_bench_all_quick_writes_json_and_markdown(tmp_path, capsys):
  out = tmp_path / "bench"
  assert bench.main(["rlvr-jax bench", "all", "--quick", "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  doc = json.loads((out / "bench.json").read_text())
  assert doc["errors"] == {} and doc["quick"] is True
  for key in MACHINE_KEYS:
    assert key in doc["machine"], key
  assert doc["machine"]["cores"] >= 1 and doc["machine"]["device_count"] >= 1
  assert doc["machine"]["backend"] == "cpu" and doc["machine"]["accelerator"] is None
  for name in bench_all.NAMES:
    rows = [r for r in doc["figures"] if r["bench"] == name]
    assert rows, f"no figure of {name}"
    assert all(r["value"] > 0 or r["unit"] == "" for r in rows), rows
    assert set(rows[0]) >= {"name", "value", "unit", "reference", "ratio"}
  # a reference measured in the same run gives a ratio (quick mode skips torch, not these)
  share = next(r for r in doc["figures"] if r["name"] == "sample/roofline_share")
  assert share["reference"] > 0 and abs(share["ratio"] - share["value"] / share["reference"]) < 1e-9
  md = (out / "bench.md").read_text()
  assert "| figure | value | unit | reference | ratio |" in md
  assert "| forward/tokens_per_s |" in md and "| data/cpt_packed_tokens_per_s |" in md
  assert f"| cpu | {doc['machine']['cpu']} |" in md
  # every bench's header carries the machine line
  assert printed.count("machine: ") >= 1 + len(bench_all.NAMES), printed


def test_figures_with_references_and_markdown():
  rows = bench_all.figures("forward", {"ours_tokens_per_s": 300.0, "torch_tokens_per_s": 100.0,
                                       "save_hf_s": 0.5, "load_hf_s": 0.25})
  tps = rows[0]
  assert (tps["name"], tps["reference"], tps["ratio"]) == ("forward/tokens_per_s", 100.0, 3.0)
  assert tps["reference_name"] == "transformers forward"
  assert [r["name"] for r in rows] == ["forward/tokens_per_s", "forward/save_hf", "forward/load_hf"]
  doc = {"machine": {"cpu": "x"}, "quick": False, "figures": rows, "errors": {"train": "E: y"},
         "settings": {"forward": {}}, "seconds": {"forward": 1.0}}
  md = bench_all.markdown(doc)
  assert "| forward/tokens_per_s | 300 | tokens/s | 100 (transformers forward) | 3.00x |" in md
  assert "- train: E: y" in md


def test_bench_all_rejects_an_unknown_name(capsys):
  import pytest
  with pytest.raises(SystemExit):
    bench.main(["rlvr-jax bench", "all", "--only", "nope"])
  assert "unknown benchmark" in capsys.readouterr().err
