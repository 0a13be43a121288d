"""data.trace: SFT on faithful, unfaithful (each kind the synthetic domains offer) or no traces."""
import pytest
from ml_collections import ConfigDict

from rlvr_jax.data import records as records_lib
from rlvr_jax.data.domains import CORRUPTION_LABELS, get_domain
from rlvr_jax.train import run


@pytest.mark.parametrize("domain", ["arith", "units", "graph"])
@pytest.mark.parametrize("kind", sorted(CORRUPTION_LABELS))
def test_unfaithful_records_carry_the_promised_label(domain, kind):
  recs = records_lib.domain_records(domain, "train", 12, seed=3, difficulty=2)
  out = run.unfaithful_records(recs, kind, seed=0)
  assert 0 < len(out) <= len(recs)
  by_id = {r["id"]: r for r in recs}
  dom = get_domain(domain)
  for r in out:
    assert r["thinking"] != by_id[r["id"]]["thinking"]
    assert dom.verify_steps(r, r["thinking"]).faithfulness == CORRUPTION_LABELS[kind]
    assert r["answer"] == by_id[r["id"]]["answer"] and r["solution"] == by_id[r["id"]]["solution"]
  # The same seed gives the same traces (resumes, processes); another seed other ones.
  assert [r["thinking"] for r in run.unfaithful_records(recs, kind, seed=0)] == \
      [r["thinking"] for r in out]
  if kind != "unsupported_answer" or len(out) > 3:
    assert [r["thinking"] for r in run.unfaithful_records(recs, kind, seed=1)] != \
        [r["thinking"] for r in out]


def test_faithful_traces_score_one():
  recs = records_lib.domain_records("arith", "train", 8, seed=0, difficulty=2)
  dom = get_domain("arith")
  assert all(dom.verify_steps(r, r["thinking"]).faithfulness == 1.0 for r in recs)


def _cfg(trace, thinking=True):
  c = ConfigDict({"data": {"trace": trace, "thinking": thinking, "template": "toy",
                           "system_prompt": "default", "truncation": "drop", "pack": False}})
  return c


def test_trace_field_is_checked_and_none_means_solution_only():
  assert run.sft_kwargs(_cfg("none"))["thinking"] is False
  assert run.sft_kwargs(_cfg("faithful"))["thinking"] is True
  assert run.sft_kwargs(_cfg("unfaithful_foreign_steps"))["thinking"] is True
  with pytest.raises(ValueError, match="data.trace='bogus'"):
    run.sft_kwargs(_cfg("bogus"))
  with pytest.raises(ValueError, match="data.thinking=False"):
    run.sft_kwargs(_cfg("unfaithful_corrupted_step", thinking=False))
  with pytest.raises(ValueError, match="none of the 1 training records"):
    run.unfaithful_records([{"id": "x", "problem": "p", "answer": "1"}], "corrupted_step", 0)
