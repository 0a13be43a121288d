"""The benchmark commands run end to end on tiny shapes and print their figures (speed itself is
never asserted: it is measured by running the benchmarks, see README). Where a benchmark checks
correctness against its reference (greedy tokens equal transformers'), that is asserted."""
import re

import pytest

from rlvr_jax import bench


def _run(capsys, *args) -> str:
  assert bench.main(["rlvr-jax bench", *args]) == 0
  return capsys.readouterr().out


def _number(pattern: str, text: str) -> float:
  match = re.search(pattern, text)
  assert match, f"no line matching {pattern!r} in:\n{text}"
  return float(match.group(1))


def test_bench_sample_prints_roofline_bandwidth_and_transformers_figures(capsys):
  out = _run(capsys, "sample", "--size", "toy-1m", "--batch", "2", "--prompt_len", "8",
             "--new_tokens", "4", "--repeats", "1")
  assert _number(r"rj\.generate:\s+([\d.]+) ms", out) > 0
  assert _number(r"reaches (\d+)% of the roofline", out) > 0
  assert _number(r"takes ([\d.]+)x the memory-bandwidth bound", out) > 0
  assert _number(r"at ([\d.]+) GB/s measured", out) > 0
  assert _number(r"rj\.generate / transformers = ([\d.]+)x", out) > 0
  assert _number(r"greedy tokens equal on ([\d.]+)% of positions", out) == 100.0


def test_bench_sample_rejects_an_unknown_dtype(capsys):
  with pytest.raises(SystemExit):
    bench.main(["rlvr-jax bench", "sample", "--dtype", "float16"])
  assert "invalid choice" in capsys.readouterr().err


def test_bench_forward_and_train_print_ratios_against_torch(capsys):
  out = _run(capsys, "forward", "--size", "toy-1m", "--batch", "8", "--seq", "16", "--iters", "1")
  assert re.search(r"\d+\.\d+x", out), out
  for name in ("forward", "train"):                     # 8 simulated devices: 2 rows don't split
    with pytest.raises(ValueError, match="--batch=2 does not divide"):
      bench.main(["rlvr-jax bench", name, "--size", "toy-1m", "--batch", "2", "--seq", "16"])
  out = _run(capsys, "train", "--size", "toy-1m", "--batch", "8", "--seq", "16", "--rounds", "1",
             "--matmul-n", "256")
  assert re.search(r"MFU", out) and re.search(r"\d+\.\d+x", out), out


RL_TINY = ("--size", "toy-1m", "--vocab_size", "256", "--num_layers", "1", "--prompts", "8",
           "--group", "2", "--prompt_len", "4", "--max_new_tokens", "4", "--rounds", "1",
           "--matmul-n", "256")


def test_bench_rl_prints_split_roofline_and_says_when_trl_is_missing(capsys, monkeypatch):
  import builtins
  real_import = builtins.__import__

  def no_trl(name, *args, **kwargs):
    if name == "trl" or name.startswith("trl."):
      raise ImportError("No module named 'trl'")
    return real_import(name, *args, **kwargs)
  monkeypatch.setattr(builtins, "__import__", no_trl)
  out = _run(capsys, "rl", *RL_TINY)
  assert len([line for line in out.splitlines() if line.startswith("TRL: not importable")]) == 1
  assert "machine: " in out
  assert _number(r"GRPO step \(fused\):\s+([\d.]+) ms", out) > 0
  assert _number(r"([\d.]+) completions/s", out) > 0
  assert _number(r"sample ([\d.]+) ms \(\d+%\), reward", out) > 0
  assert _number(r"update ([\d.]+) ms \(\d+%\); sum", out) > 0
  assert _number(r"reaches (\d+)% of the step roofline", out) > 0
  assert _number(r"dense matmuls ([\d.]+) GFLOP/s", out) > 0
  assert _number(r"attention ([\d.]+) GFLOP/s", out) > 0
  assert 0 < _number(r"= [\d.]+ ms \(attention (\d+)% of it\)", out) <= 100


def test_bench_rl_against_trl_on_the_same_shapes(capsys):
  pytest.importorskip("trl")
  out = _run(capsys, "rl", *RL_TINY)
  assert _number(r"TRL GRPOTrainer step:\s+([\d.]+) ms", out) > 0
  assert _number(r"ratio rlvr_jax / TRL = ([\d.]+)x", out) > 0
  # both sides produce exactly max_new_tokens per completion
  assert _number(r"completion length mean ([\d.]+)", out) == 4.0
  assert _number(r"completion length mean [\d.]+ \(ours ([\d.]+)\)", out) == 4.0


def test_bench_rl_ragged_lengths_time_the_packed_update(capsys):
  """--mean_new_tokens: the calibrated stop token ends responses early (without it every one
  is max_new_tokens long), and the packed update is timed next to the padded one."""
  args = list(RL_TINY)
  args[args.index("--max_new_tokens") + 1] = "16"
  out = _run(capsys, "rl", *args, "--no-trl", "--mean_new_tokens", "8")
  assert _number(r"scaled to ([\d.]+) for a mean of 8 new tokens", out) > 0
  mean = _number(r"response length mean ([\d.]+) of 16", out)
  assert 1 <= mean < 16
  assert _number(r"GRPO step \(packed update, rl.pack_update\):\s+([\d.]+) ms", out) > 0
  assert _number(r"update ([\d.]+) ms \(padded [\d.]+ ms: packing", out) > 0
  assert 0 < _number(r"the bins (\d+)%\)", out) <= 100
