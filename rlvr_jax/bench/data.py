"""Input-pipeline benchmark: examples/s and tokens/s of the grain CPT (packing) and SFT pipelines
with a real sentencepiece tokenizer, next to raw tokenization speed measured in the same run.

  .venv/bin/python -m rlvr_jax.bench.data [--seq 512 --batch 16 --batches 60 --threads 4]
  rlvr-jax bench data [same flags]

Data: the synthetic domains (arith, units, graph): CPT documents are their corpus text plus
worked examples (problem, trace, solution); SFT examples are train problems with thinking traces
in the "toy" chat template. The tokenizer is trained on that text (or --tokenizer PATH). Each
pipeline is iterated for one warm-up batch, then `--batches` timed batches (repeating the data
as needed). Reported: documents or examples consumed per second, non-pad tokens emitted per
second, and the ratio to a plain `tokenizer.encode` loop over the same texts (the ceiling a
pipeline that must tokenize can reach on one thread). `--train_tokens_per_sec X` adds the ratio
pipeline tokens/s / X (the issue asks for >= 10x the train step's token rate).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def _texts(n_examples: int, n_docs: int, seed: int):
  from rlvr_jax.data.domains import get_domain
  from rlvr_jax.data.records import from_example
  records, docs = [], []
  for name in ("arith", "units", "graph"):
    dom = get_domain(name)
    exs = dom.generate("train", n_examples, seed)
    records += [from_example(e) for e in exs]
    docs += dom.corpus(n_docs, seed)
    docs += [f"{e.problem}\n{e.thinking}\n{e.solution}" for e in exs]
  return records, docs


def _time_pipeline(ds, batches: int):
  it = iter(ds)
  next(it)  # warm-up: thread pools, first reads
  before = it.accounting()
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  dt = time.perf_counter() - t0
  after = it.accounting()
  delta = {k: after[k] - before.get(k, 0) for k in after}
  return dt, delta


def run(seq: int = 512, batch: int = 16, batches: int = 60, threads: int = 4, seed: int = 0,
        tokenizer: str | None = None, n_examples: int = 400, n_docs: int = 200,
        train_tokens_per_sec: float | None = None) -> dict[str, float]:
  """Runs the benchmark, prints the figures and returns them as a dict."""
  from rlvr_jax import tokenizer as T
  from rlvr_jax.data import pipelines as P
  t0 = time.perf_counter()
  records, docs = _texts(n_examples, n_docs, seed)
  gen_s = time.perf_counter() - t0
  with tempfile.TemporaryDirectory() as tmp:
    if tokenizer:
      tok = T.load_tokenizer(tokenizer)
    else:
      t0 = time.perf_counter()
      tok = T.load_tokenizer(T.train_sentencepiece(docs, os.path.join(tmp, "sp"), 1024))
      print(f"trained a sentencepiece tokenizer (vocab {tok.vocab_size}) on {len(docs)} docs in "
            f"{time.perf_counter() - t0:.2f}s")
  print(f"data bench: seq={seq} batch={batch} timed batches={batches} read threads={threads} "
        f"({os.cpu_count()} cores); {len(docs)} documents and {len(records)} SFT examples "
        f"generated in {gen_s:.2f}s; tokenizer {tok!r}")
  from rlvr_jax.bench import machine_line
  print(machine_line())

  # Reference: a plain encode loop over the CPT documents.
  t0 = time.perf_counter()
  raw_tokens = sum(len(tok.encode(d)) for d in docs)
  raw_s = time.perf_counter() - t0
  raw_tps = raw_tokens / raw_s
  out = {"encode_docs_per_sec": len(docs) / raw_s, "encode_tokens_per_sec": raw_tps}
  print(f"  reference encode loop : {len(docs) / raw_s:10.0f} docs/s  {raw_tps:12.0f} tokens/s")

  common = dict(seq_len=seq, batch_size=batch, seed=seed, num_epochs=None, shard_index=0,
                shard_count=1, read_threads=threads)
  cases = {
      "cpt_packed": (P.cpt_dataset(docs, tok, **common), "docs_in"),
      "sft_padded": (P.sft_dataset(records, tok, template="toy", thinking=True, **common),
                     "examples_in"),
      "sft_packed": (P.sft_dataset(records, tok, template="toy", thinking=True, pack=True,
                                   **common), "examples_in"),
  }
  for name, (ds, unit_key) in cases.items():
    dt, d = _time_pipeline(ds, batches)
    eps, tps = d[unit_key] / dt, d["tokens_out"] / dt
    fill = d["tokens_out"] / max(1, d["tokens_out"] + d["pad_out"])
    out[f"{name}_examples_per_sec"], out[f"{name}_tokens_per_sec"] = eps, tps
    out[f"{name}_fill"] = fill
    extra = f"  {tps / train_tokens_per_sec:6.1f}x train" if train_tokens_per_sec else ""
    print(f"  {name:22s}: {eps:10.0f} ex/s    {tps:12.0f} tokens/s  "
          f"({tps / raw_tps:4.2f}x encode loop, rows {100 * fill:5.1f}% tokens){extra}")
  t0 = time.perf_counter()
  rl = P.rl_dataset(records, tok, batch_size=64, max_prompt_len=seq, template="toy",
                    seed=seed, shard_index=0, shard_count=1)
  build_s = time.perf_counter() - t0
  dt, d = _time_pipeline(rl, batches)
  out["rl_build_prompts_per_sec"] = len(records) / build_s
  out["rl_batches_per_sec"] = batches / dt
  print(f"  rl prompts (build)    : {len(records) / build_s:10.0f} prompts/s tokenized; then "
        f"{batches / dt:8.0f} batches/s of 64")
  return out


def main(argv=None) -> int:
  import sys
  argv = sys.argv if argv is None else argv
  p = argparse.ArgumentParser(prog=argv[0], description=__doc__.split("\n\n")[0])
  p.add_argument("--seq", type=int, default=512)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--batches", type=int, default=60)
  p.add_argument("--threads", type=int, default=4, help="grain read threads")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--tokenizer", default=None, help="a tokenizer path (default: train one)")
  p.add_argument("--examples", type=int, default=400, help="SFT examples per domain")
  p.add_argument("--docs", type=int, default=200, help="corpus documents per domain")
  p.add_argument("--train_tokens_per_sec", type=float, default=None)
  a = p.parse_args(argv[1:])
  run(seq=a.seq, batch=a.batch, batches=a.batches, threads=a.threads, seed=a.seed,
      tokenizer=a.tokenizer, n_examples=a.examples, n_docs=a.docs,
      train_tokens_per_sec=a.train_tokens_per_sec)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
