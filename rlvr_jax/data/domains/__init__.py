r"""Synthetic verifiable reasoning domains: the built-in, download-free stand-ins for the paper's
MATH (`arith`), SCIENCE (`units`) and GRAPH (`graph`) settings.

  from rlvr_jax.data.domains import get_domain
  dom = get_domain("arith")
  train = dom.generate("train", 1000, seed=0)          # levels 1-3
  ood = dom.generate("ood", 200, seed=0)               # levels 4-5, disjoint by content hash
  dom.verify_answer(train[0], "... \\boxed{7}")        # -> bool
  dom.verify_steps(train[0], response).faithfulness    # 1.0 / 0.5 / 0.0
  text, info = dom.corrupt(train[0], "corrupted_step", rng=0)

See base.py for the splits, trace format, faithfulness labels and unfaithful variants, and each
domain module for its problems.
"""
from __future__ import annotations

from rlvr_jax.data.domains import arith, chain, graph, units
from rlvr_jax.data.domains.base import (CORRUPTION_LABELS, CORRUPTIONS, INSTRUCTION, LEVELS,
                                        SPLITS, Domain, Example, StepReport, content_hash,
                                        split_of)

DOMAINS: dict[str, Domain] = {"arith": arith.DOMAIN, "units": units.DOMAIN, "graph": graph.DOMAIN,
                              "chain": chain.DOMAIN}
# The domains whose text the built-in tokenizer is trained on: fixed, so that adding a domain does
# not change the built-in tokenizer (and the runs and caches made with it). `chain` is written in
# words and digits these domains already have.
TOKENIZER_DOMAINS = ("arith", "graph", "units")

__all__ = ["DOMAINS", "get_domain", "all_corpus_text", "Domain", "Example", "StepReport",
           "CORRUPTIONS", "CORRUPTION_LABELS", "INSTRUCTION", "LEVELS", "SPLITS",
           "content_hash", "split_of"]


def get_domain(name: str) -> Domain:
  """The domain called `name`; an unknown name raises ValueError listing the known ones."""
  if name not in DOMAINS:
    raise ValueError(f"unknown domain {name!r}; known domains: {', '.join(sorted(DOMAINS))}")
  return DOMAINS[name]


def all_corpus_text(seed: int, n_per_domain: int) -> str:
  """The text the built-in sentencepiece tokenizer is trained on: `n_per_domain` corpus
  documents of every domain (worked train examples with their traces and solutions, rule and
  fact text), one document after another, separated by blank lines. Deterministic in `seed`."""
  docs = []
  for name in TOKENIZER_DOMAINS:
    dom = DOMAINS[name]
    docs += dom.corpus(n_per_domain, seed)
    docs += [f"{ex.problem}\n{ex.solution}" for ex in dom.generate("train", 8, seed)]
  return "\n\n".join(docs)
