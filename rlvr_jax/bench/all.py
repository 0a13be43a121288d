"""Every benchmark in one go, written down for comparison across machines.

  rlvr-jax bench all [--out DIR] [--quick] [--skip_hf] [--only forward,train,sample,data,rl]
  .venv/bin/python -m rlvr_jax.bench.all [same flags]

Runs `forward`, `train`, `sample`, `data` and `rl` (each prints its figures as `rlvr-jax bench NAME`
does, after a `machine: ...` line) and writes

  DIR/bench.json   {"machine": {...}, "quick", "settings": {bench: kwargs}, "figures": [rows],
                    "results": {bench: every figure the bench returned}, "seconds", "errors"}
  DIR/bench.md     the machine's description and one table: figure, value, unit, reference
                   (measured in the same run, named), ratio = value / reference

The machine section (CPU model, cores, memory, jax version, backend, device kind and count,
accelerator, python, date, git commit) is what makes two bench.json files comparable: the figure
names are stable. Default sizes are each benchmark's defaults; `--quick` uses tiny sizes (seconds
on a CPU: for tests and CI) and skips the transformers / PyTorch / TRL references, as `--skip_hf`
does at the default sizes. A benchmark that fails is recorded under "errors" (exit status 1);
the others still run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any, Callable

NAMES = ("forward", "train", "sample", "data", "rl")


def _quick_batch() -> int:
  """The smallest batch that splits over every device of the default mesh (data axis)."""
  import jax
  n = jax.device_count()
  return n if n >= 2 else 2


def bench_settings(quick: bool, skip_hf: bool) -> dict[str, dict[str, Any]]:
  """The keyword arguments of each benchmark's run()."""
  if not quick:
    return {"forward": {"torch_side": not skip_hf}, "train": {"torch_side": not skip_hf},
            "sample": {"skip_hf": skip_hf}, "data": {}, "rl": {"trl_side": not skip_hf}}
  from rlvr_jax.data import builtin
  batch = _quick_batch()
  return {
      "forward": dict(size="toy-1m", batch=batch, seq=16, iters=1, torch_side=False),
      "train": dict(size="toy-1m", batch=batch, seq=16, rounds=1, matmul_n=256,
                    torch_side=False),
      "sample": dict(size="toy-1m", batch=2, prompt_len=8, new_tokens=4, repeats=1,
                     skip_hf=True),
      # the built-in toy tokenizer (cached) instead of training one on a few documents
      "data": dict(seq=256, batch=4, batches=3, threads=1, n_examples=16, n_docs=8,
                   tokenizer=builtin.builtin_tokenizer_path()),
      "rl": dict(size="toy-1m", vocab_size=256, num_layers=1, prompts=batch, group=2,
                 prompt_len=4, max_new_tokens=4, rounds=1, matmul_n=256, trl_side=False),
  }


def _row(bench: str, name: str, value, unit: str, reference=None, reference_name: str = "",
         note: str = "") -> dict[str, Any] | None:
  if value is None:
    return None
  ratio = value / reference if reference not in (None, 0) else None
  return {"bench": bench, "name": f"{bench}/{name}", "value": float(value), "unit": unit,
          "reference": None if reference is None else float(reference),
          "reference_name": reference_name if reference is not None else "",
          "ratio": ratio, "note": note}


def figures(bench: str, r: dict[str, float]) -> list[dict[str, Any]]:
  """The table rows of one benchmark's returned dict (name, value, unit, reference, ratio)."""
  g = r.get
  scale = lambda x, k: None if x is None else x * k   # noqa: E731
  rows: list = []
  if bench == "forward":
    rows = [_row(bench, "tokens_per_s", g("ours_tokens_per_s"), "tokens/s",
                 g("torch_tokens_per_s"), "transformers forward"),
            _row(bench, "save_hf", g("save_hf_s"), "s"),
            _row(bench, "load_hf", g("load_hf_s"), "s"),
            _row(bench, "max_abs_logit_diff", g("max_abs_logit_diff"), "")]
  elif bench == "train":
    rows = [_row(bench, "tokens_per_s", g("ours_tokens_per_s"), "tokens/s",
                 g("torch_tokens_per_s"), "PyTorch train step"),
            _row(bench, "step_time", scale(g("ours_step_s"), 1e3), "ms",
                 scale(g("torch_step_s"), 1e3), "PyTorch train step"),
            _row(bench, "mfu", scale(g("ours_mfu"), 100), "%", scale(g("torch_mfu"), 100),
                 "PyTorch MFU", note="of the measured matmul peak"),
            _row(bench, "matmul_peak", scale(g("peak_flops"), 1e-9), "GFLOP/s")]
  elif bench == "sample":
    rows = [_row(bench, "tokens_per_s", g("generate_tokens_per_s"), "tokens/s",
                 g("transformers_tokens_per_s"), "transformers generate"),
            _row(bench, "roofline_share", g("generate_tokens_per_s"), "tokens/s",
                 g("roofline_tokens_per_s"),
                 "decode roofline (the steps' matmuls, attention products included, in one loop)"),
            _row(bench, "decode_time", scale(g("generate_s"), 1e3), "ms",
                 scale(g("memory_bound_s"), 1e3), "memory-bandwidth bound"),
            _row(bench, "bandwidth", scale(g("bandwidth_bytes_per_s"), 1e-9), "GB/s"),
            _row(bench, "greedy_agreement", scale(g("greedy_agreement"), 100), "%",
                 note="greedy tokens equal to transformers'")]
  elif bench == "data":
    ref = g("encode_tokens_per_sec")
    rows = [_row(bench, "encode_tokens_per_s", ref, "tokens/s")]
    for case in ("cpt_packed", "sft_padded", "sft_packed"):
      rows.append(_row(bench, f"{case}_tokens_per_s", g(f"{case}_tokens_per_sec"), "tokens/s",
                       ref, "plain encode loop"))
      rows.append(_row(bench, f"{case}_examples_per_s", g(f"{case}_examples_per_sec"), "ex/s"))
    rows.append(_row(bench, "rl_batches_per_s", g("rl_batches_per_sec"), "batches/s"))
  elif bench == "rl":
    rows = [_row(bench, "completions_per_s", g("ours_completions_per_s"), "completions/s",
                 g("trl_completions_per_s"), "TRL GRPOTrainer step"),
            _row(bench, "step_time", scale(g("ours_step_s"), 1e3), "ms",
                 scale(g("roofline_s"), 1e3), "phase roofline"),
            _row(bench, "sample_time", scale(g("sample_s"), 1e3), "ms",
                 scale(g("roofline_sample_s"), 1e3), "decode roofline",
                 note="rl.profile_phases"),
            _row(bench, "reward_time", scale(g("reward_s"), 1e3), "ms", note="rl.profile_phases"),
            _row(bench, "update_time", scale(g("update_s"), 1e3), "ms",
                 scale(g("roofline_update_s"), 1e3), "useful FLOPs at the matmul peak",
                 note="rl.profile_phases"),
            _row(bench, "update_mfu", scale(g("update_mfu"), 100), "%",
                 note="of the measured matmul peak")]
  return [row for row in rows if row is not None]


def _fmt(x) -> str:
  if x is None:
    return "-"
  if x == 0 or abs(x) >= 100:
    return f"{x:,.0f}"
  if abs(x) >= 1e-3:
    return f"{x:.3g}"
  return f"{x:.2e}"


def markdown(doc: dict[str, Any]) -> str:
  m = doc["machine"]
  lines = ["# rlvr-jax bench all" + (" (--quick)" if doc["quick"] else ""), "",
           "| machine | |", "| --- | --- |"]
  lines += [f"| {k} | {'-' if v is None else v} |" for k, v in m.items()]
  lines += ["", "| figure | value | unit | reference | ratio |", "| --- | ---: | --- | --- | ---: |"]
  for row in doc["figures"]:
    ref = "-" if row["reference"] is None else f"{_fmt(row['reference'])} ({row['reference_name']})"
    ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
    name = row["name"] + (f" ({row['note']})" if row.get("note") else "")
    lines.append(f"| {name} | {_fmt(row['value'])} | {row['unit']} | {ref} | {ratio} |")
  if doc["errors"]:
    lines += ["", "Failed benchmarks:", ""]
    lines += [f"- {name}: {msg}" for name, msg in doc["errors"].items()]
  lines += ["", "Settings (each benchmark's run() arguments): " +
            "; ".join(f"{k} {json.dumps(v, sort_keys=True)}" for k, v in doc["settings"].items()),
            "Seconds per benchmark: " +
            ", ".join(f"{k} {v:.1f}" for k, v in doc["seconds"].items()), ""]
  return "\n".join(lines)


def _runner(name: str) -> Callable[..., dict[str, float]]:
  import importlib
  return importlib.import_module(f"rlvr_jax.bench.{name}").run


def run(out: str, quick: bool = False, skip_hf: bool = False,
        only: tuple[str, ...] = NAMES) -> dict[str, Any]:
  """Runs the benchmarks, writes OUT/bench.json and OUT/bench.md and returns the document."""
  from rlvr_jax.bench import machine_info, machine_line
  from rlvr_jax.run import files
  info = machine_info()
  print(machine_line(info), flush=True)
  settings = {k: v for k, v in bench_settings(quick, skip_hf).items() if k in only}
  doc: dict[str, Any] = {"machine": info, "quick": quick, "settings": settings, "figures": [],
                         "results": {}, "seconds": {}, "errors": {}}
  for name, kwargs in settings.items():
    print(f"\n== bench {name} ==", flush=True)
    t0 = time.perf_counter()
    try:
      result = _runner(name)(**kwargs)
    except Exception as e:  # noqa: BLE001 - one failure is recorded, the others still run
      if os.environ.get("RLVR_JAX_TRACEBACK"):
        traceback.print_exc()
      doc["errors"][name] = f"{type(e).__name__}: {e}".splitlines()[0]
      print(f"bench {name} failed: {doc['errors'][name]}", file=sys.stderr, flush=True)
      result = {}
    doc["seconds"][name] = time.perf_counter() - t0
    doc["results"][name] = {k: float(v) for k, v in (result or {}).items()}
    doc["figures"] += figures(name, doc["results"][name])
  # the settings hold a tokenizer path in quick mode: JSON-safe as they are (str, int, bool)
  files.write_json(os.path.join(out, "bench.json"), doc)
  files.write_text(os.path.join(out, "bench.md"), markdown(doc))
  print("\n" + markdown(doc))
  print(f"wrote {os.path.join(out, 'bench.json')} and {os.path.join(out, 'bench.md')}")
  return doc


def main(argv: list[str] | None = None) -> int:
  """argv as sys.argv: argv[0] is the program name (what `rlvr-jax bench all` passes)."""
  argv = sys.argv if argv is None else argv
  ap = argparse.ArgumentParser(prog=argv[0] if argv else None,
                               description=__doc__.splitlines()[0])
  ap.add_argument("--out", default="bench_results",
                  help="directory of bench.json and bench.md (created; a gs:// URL works too)")
  ap.add_argument("--quick", action="store_true",
                  help="tiny sizes, no transformers/PyTorch references (seconds; tests and CI)")
  ap.add_argument("--skip_hf", action="store_true",
                  help="skip the transformers/PyTorch references at the default sizes")
  ap.add_argument("--only", default=",".join(NAMES),
                  help=f"comma-separated subset of {','.join(NAMES)}")
  args = ap.parse_args(argv[1:])
  only = tuple(n.strip() for n in args.only.split(",") if n.strip())
  unknown = sorted(set(only) - set(NAMES))
  if unknown:
    ap.error(f"--only: unknown benchmark(s) {unknown}; choose from {list(NAMES)}")
  from rlvr_jax.run import paths
  doc = run(paths.resolve(args.out), args.quick, args.skip_hf, only)
  return 1 if doc["errors"] else 0


if __name__ == "__main__":
  sys.exit(main())
