"""The benchmark commands run end to end on tiny shapes and print their figures (speed itself is
never asserted: it is measured by running the benchmarks, see README). Where a benchmark checks
correctness against its reference (greedy tokens equal transformers'), that is asserted."""
import re

import jax
import jax.extend
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


def test_bench_sample_draws_at_a_temperature_on_both_sides(capsys):
  out = _run(capsys, "sample", "--size", "toy-1m", "--batch", "2", "--prompt_len", "8",
             "--new_tokens", "4", "--repeats", "1", "--temperature", "0.7")
  assert "temperature=0.7" in out
  assert _number(r"reaches (\d+)% of the roofline", out) > 0
  assert _number(r"rj\.generate / transformers = ([\d.]+)x", out) > 0
  assert "sampled tokens, not compared" in out and "greedy tokens" not in out
  with pytest.raises(SystemExit):
    bench.main(["rlvr-jax bench", "sample", "--temperature", "-1"])
  assert "--temperature must be >= 0" in capsys.readouterr().err


def test_bench_sample_times_the_segmented_cache_against_one_loop(capsys):
  out = _run(capsys, "sample", "--size", "toy-1m", "--batch", "2", "--prompt_len", "8",
             "--new_tokens", "64", "--repeats", "1", "--skip_hf")
  assert _number(r"2 cache segments .*: ([\d.]+) ms vs one loop over the full 72-slot", out) > 0
  assert _number(r"72-slot cache [\d.]+ ms: ([\d.]+)x; greedy tokens equal", out) > 0


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


def _without(monkeypatch, package: str):
  """Imports of `package` (and its submodules) fail, as where it is not installed."""
  import builtins
  real_import = builtins.__import__

  def blocked(name, *args, **kwargs):
    if name == package or name.startswith(package + "."):
      raise ImportError(f"No module named {package!r}")
    return real_import(name, *args, **kwargs)
  monkeypatch.setattr(builtins, "__import__", blocked)


def test_bench_rl_prints_split_roofline_and_says_when_trl_is_missing(capsys, monkeypatch):
  _without(monkeypatch, "trl")
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


def test_bench_rl_microbatched_phases_only_and_the_memory_bound(capsys):
  """--microbatches / --remat / --no-fused (what fits a 1B model's 512 x 1024-token step on one
  GPU): the step is the profiled phases' sum, and the sample phase is set against the
  memory-bandwidth bound and the decode step's own costs."""
  out = _run(capsys, "rl", *RL_TINY, "--no-trl", "--no-fused", "--microbatches", "4",
             "--remat", "dots_no_batch", "--attention", "xla", "--scan_unroll", "2")
  assert "4 microbatch(es), remat dots_no_batch, scan_unroll 2, attention xla" in out
  step = _number(r"GRPO step \(profiled phases\):\s+([\d.]+) ms", out)
  assert step == pytest.approx(_number(r"; sum ([\d.]+) ms", out), abs=0.11)
  assert _number(r"the sample phase reaches (\d+)% of it", out) > 0
  assert _number(r"its matmuls alone \(over the mean live cache, in a loop\) ([\d.]+) ms", out) > 0
  with pytest.raises(ValueError, match="--microbatches=3 must divide"):
    bench.main(["rlvr-jax bench", "rl", *RL_TINY, "--no-trl", "--microbatches", "3"])
  with pytest.raises(ValueError, match="--no-fused .* --no-trl"):
    bench.main(["rlvr-jax bench", "rl", *RL_TINY, "--no-fused"])


@pytest.mark.parametrize("name", ["sample", "rl"])
def test_bench_tunix_reference_says_how_to_install_it_before_any_work(capsys, monkeypatch, name):
  _without(monkeypatch, "tunix")
  with pytest.raises(SystemExit) as exc:
    bench.main(["rlvr-jax bench", name, "--tunix", "--size", "toy-1m"])
  message = str(exc.value)
  assert message.startswith("--tunix: tunix is not installed") and "\n" not in message
  assert ".venv-tunix/bin/pip install -e '.[tunix]'" in message
  assert capsys.readouterr().out == ""                  # failed before printing any figure


def test_bench_sample_against_tunix_on_the_same_weights(capsys):
  """Runs where tunix is installed (its own venv: bench/tunix_ref.py); skipped in CI."""
  pytest.importorskip("tunix")
  out = _run(capsys, "sample", "--size", "toy-1m", "--batch", "2", "--prompt_len", "8",
             "--new_tokens", "4", "--repeats", "1", "--skip_hf", "--tunix")
  assert _number(r"tunix sampler:\s+([\d.]+) ms", out) > 0
  assert _number(r"rj\.generate / tunix = ([\d.]+)x", out) > 0
  # the same weights and prompts, greedy: the same tokens until a near-tie flips one (float
  # rounding differs between the two implementations); weights or prompts mapped wrongly would
  # agree by chance only (1 in the vocabulary)
  assert _number(r"greedy tokens equal on ([\d.]+)% of positions", out) >= 50.0


def test_bench_rl_against_tunix_on_the_same_shapes(capsys):
  pytest.importorskip("tunix")
  out = _run(capsys, "rl", *RL_TINY, "--no-trl", "--tunix")
  assert _number(r"tunix GRPOLearner step:\s+([\d.]+) ms", out) > 0
  assert _number(r"ratio rlvr_jax / tunix = ([\d.]+)x", out) > 0
  assert _number(r"completion length mean ([\d.]+)", out) == 4.0


def test_bench_attention_checks_each_kernel_against_f32(capsys):
  from rlvr_jax.bench import attention
  out = _run(capsys, "attention", "--size", "toy-1m", "--rows", "2", "--seq", "32",
             "--segments", "2", "--repeats", "1")
  assert "machine: " in out
  assert _number(r"xla\s+([\d.]+) ms", out) > 0
  # in bf16 the error against the f32 reference is bf16's: well above 0 and well below 1
  results = attention.run("toy-1m", rows=2, seq=32, segments=2, dtype="bfloat16", repeats=1)
  assert results["status"]["exit"] == 0
  assert 1e-4 < max(results["xla"][k] for k in attention.ERROR_NAMES) < 5e-2


def test_bench_attention_verdict_and_useful_flops():
  from rlvr_jax.bench import attention
  xla = {"out": 4e-3, "dq": 5e-3, "dk": 4e-3, "dv": 4e-3}
  assert attention.computes_the_same({"out": 5e-3, "dq": 6e-3, "dk": 5e-3, "dv": 4e-3}, xla)
  assert attention.computes_the_same(dict(xla, dv=4 * 4e-3 + 1e-3), xla)      # the bound itself
  assert not attention.computes_the_same(dict(xla, dk=0.03), xla)            # one gradient off
  positions, segments = attention.packed_layout(3, 16, 2)    # 14 real tokens: documents of 7
  assert attention.useful_flops(positions, segments, 4, 8) == 3 * 4 * 4 * 8 * 3 * 2 * 28


def test_attention_packed_layout_restarts_positions_per_segment():
  from rlvr_jax.bench.attention import packed_layout
  positions, segments = packed_layout(2, 16, 3)     # 14 real slots in 3 documents, 2 padding
  assert segments.tolist()[0] == [1] * 4 + [2] * 5 + [3] * 5 + [0, 0]
  assert positions.tolist()[1] == [0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 0]


def _dots_in_loops(closed_jaxpr) -> list[tuple[int, int]]:
  """(trip count, dot_general count) of each loop body (scan; while: count -1) in a jaxpr,
  nested jaxprs included."""
  loops = []

  def dots(jp) -> int:
    return sum(e.primitive.name == "dot_general" for e in jp.eqns)

  def walk(jp):
    for eqn in jp.eqns:
      if eqn.primitive.name == "scan":
        loops.append((eqn.params["length"], dots(eqn.params["jaxpr"].jaxpr)))
      elif eqn.primitive.name == "while":
        loops.append((-1, dots(eqn.params["body_jaxpr"].jaxpr)))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub)
  walk(closed_jaxpr.jaxpr)
  return loops


@pytest.mark.parametrize("cache_slots", [0, 12])
def test_the_decode_roofline_probe_runs_every_step_in_one_loop_with_its_attention_products(
    cache_slots):
  import rlvr_jax as rj
  from rlvr_jax.bench.sample import decode_matmuls_program
  from rlvr_jax.model import transformer
  cfg = rj.get_model_config("toy-1m", num_layers=2)
  params = jax.jit(transformer.init_params_fn(cfg))(jax.random.key(0))
  program, args = decode_matmuls_program(cfg, params, 4, steps=5, cache_slots=cache_slots)
  jaxpr = jax.make_jaxpr(program)(*args)
  # q/k/v/o/gate/up/down per layer, then the head; with a cache, two attention products a layer
  assert _dots_in_loops(jaxpr) == [(5, 2 * (7 + (2 if cache_slots else 0)) + 1)]
  x, logits, kv = program(*args)
  assert logits.shape == (4, cfg.vocab_size) and len(kv) == 2
  assert bool(jax.numpy.all(jax.numpy.isfinite(logits)))
