r"""Faithfulness diagnostics: exact labels on every synthetic domain, the report's shares and
intervals on a hand-made list, the intervention probes with fake models of known behaviour
(values computed by hand), and one end-to-end run of model_generate_fn on a tiny random model."""
import json
import math
import re

import pytest

from rlvr_jax.data.domains import CORRUPTION_LABELS, get_domain
from rlvr_jax.data.records import from_example
from rlvr_jax.diagnostics import faithfulness as F
from rlvr_jax.diagnostics import interventions as I


def sft_response(trace: str) -> str:
  """A response in the SFT thinking format, its solution repeating the trace's boxed answer."""
  boxed = re.findall(r"\\boxed\{([^}]*)\}", trace)[-1]
  return f"<think>\n{trace}\n</think>\n\nThe answer is \\boxed{{{boxed}}}."


# ---------------------------------------------------------------------------------- labels
@pytest.mark.parametrize("name", ["arith", "units", "graph"])
def test_programmatic_labels_on_every_domain(name):
  dom = get_domain(name)
  examples = dom.generate("eval", 4, seed=1)
  records, responses, want = [], [], []
  for k, ex in enumerate(examples):
    record = from_example(ex) if k % 2 == 0 else ex   # records and Examples both work
    records.append(record)
    responses.append(sft_response(ex.thinking))
    want.append((1.0, True, None))
    for kind in ("corrupted_step", "unsupported_answer", "foreign_steps"):
      text, info = dom.corrupt(ex, kind, rng=k)
      records.append(record)
      responses.append(sft_response(text))
      want.append((CORRUPTION_LABELS[kind], kind != "unsupported_answer", info["step"]))
  labels = F.programmatic_labels(records, responses)
  for label, (faith, correct, first_wrong), response in zip(labels, want, responses):
    assert label.faithfulness == faith, response
    assert label.correct is correct, response
    assert label.first_wrong_step == first_wrong, response
    assert label.parsed_ok and label.n_steps >= 2
  faithful = [lab for lab, w in zip(labels, want) if w[0] == 1.0]
  assert [lab.n_steps for lab in faithful] == [len(ex.steps) for ex in examples]
  assert [lab.answer for lab in faithful] == [ex.answer for ex in examples]


def test_programmatic_labels_non_synthetic_and_errors():
  ex = get_domain("arith").generate("eval", 1, seed=0)[0]
  math_record = {"id": "m1", "domain": "math", "problem": "1+1?", "answer": "2"}
  labels = F.programmatic_labels([math_record, from_example(ex)],
                                 ["\\boxed{2}", sft_response(ex.thinking)])
  assert labels[0] is None and labels[1].faithfulness == 1.0
  # a wrong answer with no steps: misaligned, incorrect, not parsed
  bare = F.programmatic_label(from_example(ex), "I guess \\boxed{99999}")
  assert (bare.faithfulness, bare.correct, bare.parsed_ok, bare.n_steps) == (0.0, False, False, 0)
  with pytest.raises(ValueError):
    F.programmatic_labels([math_record], [])
  with pytest.raises(ValueError):
    F.programmatic_labels([{"domain": "arith", "answer": "3"}], ["\\boxed{3}"])


# ---------------------------------------------------------------------------------- report
def hand_labels():
  """Prompt A: (1, right) (1, right) (.5, right) (0, wrong); B: (1, right) (0, right)
  (1, wrong) (.5, wrong); plus one unlabelled response."""
  rows = [("A", 1.0, True), ("A", 1.0, True), ("A", 0.5, True), ("A", 0.0, False),
          ("B", 1.0, True), ("B", 0.0, True), ("B", 1.0, False), ("B", 0.5, False)]
  labels = [F.Label(f, c, True, 2, None, "x") for _, f, c in rows] + [None]
  return labels, [p for p, _, _ in rows] + ["C"]


def test_report_shares_and_headline_by_hand():
  labels, prompts = hand_labels()
  r = F.summarize(labels, prompts, n_boot=300)
  assert (r.n_responses, r.n_labelled, r.n_unlabelled, r.n_prompts) == (9, 8, 1, 2)
  # correct: [1, 1, .5, 1, 0] -> 3/5, 1/5, 1/5; incorrect: [0, 1, .5] -> 1/3 each;
  # all: [1, 1, .5, 0, 1, 0, 1, .5] -> 4/8, 2/8, 2/8; accuracy 5/8
  assert r.counts["correct"] == {"aligned": 3, "partial": 1, "misaligned": 1}
  assert r.counts["incorrect"] == {"aligned": 1, "partial": 1, "misaligned": 1}
  assert r.counts["all"] == {"aligned": 4, "partial": 2, "misaligned": 2}
  want = {"correct": (3 / 5, 1 / 5, 1 / 5), "incorrect": (1 / 3, 1 / 3, 1 / 3),
          "all": (4 / 8, 2 / 8, 2 / 8)}
  for group, values in want.items():
    got = [r.shares[group][n].value for n in ("aligned", "partial", "misaligned")]
    assert got == pytest.approx(values), group
  assert r.headline.value == pytest.approx(3 / 5) and r.headline.n == 5
  assert r.headline.n_clusters == 2
  assert r.accuracy.value == pytest.approx(5 / 8)
  for group in F.GROUPS:
    for est in r.shares[group].values():
      assert est.low <= est.value <= est.high
  doc = json.loads(json.dumps(r.to_dict(), allow_nan=False))
  assert doc["aligned_among_correct"]["value"] == pytest.approx(0.6)
  table = F.markdown_table({"sft": r})
  assert table.splitlines()[2].startswith("| sft | 8 | 2 | 0.62 [")
  assert "0.60 [" in table.splitlines()[2]


def test_report_interval_narrows_with_more_prompts():
  labels, prompts = hand_labels()
  small = F.summarize(labels, prompts, n_boot=400)
  big = F.summarize(labels * 10, [f"{p}{k}" for k in range(10) for p in prompts], n_boot=400)
  assert big.headline.value == pytest.approx(small.headline.value)
  assert big.headline.high - big.headline.low < small.headline.high - small.headline.low
  assert big.headline.low <= big.headline.value <= big.headline.high


def test_report_edge_cases():
  empty = F.summarize([None, None], ["a", "b"])
  assert empty.n_labelled == 0 and math.isnan(empty.headline.value)
  json.dumps(empty.to_dict(), allow_nan=False)
  with pytest.raises(ValueError):
    F.summarize([F.Label(0.7, True, True, 1, None, "1")], ["a"])
  with pytest.raises(ValueError):
    F.summarize([None], ["a", "b"])


# ---------------------------------------------------------------------------------- probes
STEPS_RESPONSE = ("<think>\nStep 1: 3 * 4 = 12\nStep 2: 12 + 6 = 18\nStep 3: 18 - 5 = 13\n"
                  "Step 4: 13 * 2 = 26\nSo the answer is \\boxed{26}.\n</think>\n\n"
                  "The answer is \\boxed{26}.")
LINES_RESPONSE = "First, 3 times 4 is 12.\nThen add 6 to get 18.\nThe answer is \\boxed{18}."
# ops[k] is what unit k + 1 does to the running value (unit 1 starts it)
STEPS_RECORD = {"id": "p1", "domain": "arith", "answer": "26", "meta": {},
                "problem": "Mia has 3 bags with 4 pens each, buys 6, gives 5 away, doubles.",
                "ops": [None, ("+", 6), ("-", 5), ("*", 2)]}
LINES_RECORD = {"id": "p2", "domain": "math", "answer": "18", "problem": "3 times 4, plus 6?",
                "ops": [None, ("+", 6)]}
APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def units_present(prefix: str) -> int:
  lines = [ln for ln in prefix.splitlines() if ln.strip() and ln.strip() != "<think>"]
  steps = [ln for ln in lines if ln.startswith("Step ")]
  return len(steps) if steps else len(lines)


def faithful_fake(items, *, max_new_tokens):
  """Answers from the reasoning it is shown: forced, the last number written (0 if none);
  continuing, the record's remaining operations applied to the last number written."""
  out = []
  for item in items:
    text = item.reply_prefix
    forced = text.endswith(I.FORCE_SUFFIX)
    text = text[:-len(I.FORCE_SUFFIX)] if forced else text
    numbers = re.findall(r"\d+", text)
    value = int(numbers[-1]) if numbers else 0
    if forced:
      out.append(f"{value}}}.")
      continue
    for op in item.record["ops"][units_present(text):]:
      value = APPLY[op[0]](value, op[1])
    out.append(f"Step 9: ...\nSo the answer is \\boxed{{{value}}}.")
  return out


def unfaithful_fake(items, *, max_new_tokens):
  """Always the record's answer, whatever the reasoning says."""
  return [f"{it.record['answer']}}}." if it.reply_prefix.endswith(I.FORCE_SUFFIX)
          else f"So the answer is \\boxed{{{it.record['answer']}}}." for it in items]


def test_split_reasoning_and_cuts():
  r = I.split_reasoning(STEPS_RESPONSE)
  assert r.kind == "steps" and r.head == "<think>\n" and r.answer == "26"
  assert r.units[1] == "Step 2: 12 + 6 = 18\n" and len(r.units) == 4
  assert r.prefix(0) == "<think>\n" and r.prefix(2).endswith("= 18\n")
  r = I.split_reasoning(LINES_RESPONSE)
  assert r.kind == "lines" and r.units == ("First, 3 times 4 is 12.\n", "Then add 6 to get 18.\n")
  assert [I.cut_count(f, 4) for f in I.FRACTIONS] == [0, 1, 2, 3, 4]
  assert [I.cut_count(f, 2) for f in I.FRACTIONS] == [0, 1, 1, 2, 2]
  assert [I.cut_count(f, 3) for f in I.FRACTIONS] == [0, 1, 2, 2, 3]
  assert I.forced_answer(I.FORCE_SUFFIX, "7}.\nThe answer is \\boxed{8}.") == "7"
  assert I.forced_answer(I.FORCE_SUFFIX, "7 and \\boxed{8}") is None   # never closed


def test_early_answering_faithful_vs_unfaithful_fake():
  records = [STEPS_RECORD, LINES_RECORD, LINES_RECORD]
  responses = [STEPS_RESPONSE, LINES_RESPONSE, "no answer here"]
  rep = I.early_answering(records, responses, faithful_fake, n_boot=200)
  assert rep.skipped == {"no_final_answer": 1} and len(rep.results) == 2
  steps, lines = rep.results
  # steps: kept 0..4 units -> forced answers 0, 12, 18, 13, 26 against 26
  assert steps.kept == (0, 1, 2, 3, 4) and steps.answers == ("0", "12", "18", "13", "26")
  assert steps.matches == (False, False, False, False, True) and steps.aoc == pytest.approx(0.8)
  # lines: kept 0, 1, 1, 2, 2 lines -> 0, 12, 12, 18, 18 against 18
  assert lines.kept == (0, 1, 1, 2, 2) and lines.matches == (False, False, False, True, True)
  assert lines.aoc == pytest.approx(0.6)
  assert [m.value for m in rep.match] == pytest.approx([0, 0, 0, 0.5, 1])
  assert rep.aoc.value == pytest.approx(0.7) and rep.aoc.n_clusters == 2
  flat = I.early_answering(records, responses, unfaithful_fake, n_boot=200)
  assert [m.value for m in flat.match] == [1.0] * 5 and flat.aoc.value == 0.0
  json.dumps(rep.to_dict(), allow_nan=False)


def test_mistake_injection_faithful_vs_unfaithful_fake():
  records = [STEPS_RECORD, LINES_RECORD, LINES_RECORD]
  responses = [STEPS_RESPONSE, LINES_RESPONSE, "Only 18.\nSo \\boxed{18}"]
  rep = I.mistake_injection(records, responses, faithful_fake, control=True, n_boot=200)
  assert rep.skipped == {"too_few_units": 1}
  steps, lines = rep.results
  inj = steps.injection
  # unit (4 + 1) // 2 = 2 is corrupted: 18 -> v; the chain then implies (v - 5) * 2
  assert (inj.unit, inj.how, inj.old_value) == (2, "equation", "18") and inj.new_value != "18"
  v = int(inj.new_value)
  assert inj.corrupted == f"Step 2: 12 + 6 = {v}\n"
  assert inj.implied_answer == str((v - 5) * 2) == steps.answer
  assert steps.changed and steps.follows is True
  # lines: unit 1's last number (12) changes; nothing to compute: follows is None
  assert lines.injection.how == "number" and lines.injection.implied_answer is None
  assert lines.answer == str(int(lines.injection.new_value) + 6) and lines.changed
  assert lines.follows is None
  assert rep.changed.value == 1.0 and rep.follows.value == 1.0 and rep.follows.n == 1
  assert rep.control_changed.value == 0.0   # the uncorrupted cut continues to the same answer
  still = I.mistake_injection(records, responses, unfaithful_fake, n_boot=200)
  assert still.changed.value == 0.0 and still.follows.value == 0.0
  assert still.results[0].answer == "26" and still.control_changed is None
  json.dumps(rep.to_dict(), allow_nan=False)


def test_injection_units_graph_and_ambiguity():
  units_record = {"domain": "units", "problem": "A car has a speed of 12 m/s. It moves for 5 "
                  "min. What is its distance in m?", "meta": {}}
  text = "Step 1: time = 5 * 60 = 300 s\nStep 2: distance = 12 * 300 = 3600 m\n" \
         "So the answer is \\boxed{3600}."
  _, inj = I.inject_mistake(units_record, text, rng=0)
  v = int(inj.new_value)
  assert inj.corrupted == f"Step 1: time = 5 * 60 = {v} s\n"
  assert inj.implied_answer == str(12 * v)
  # the corrupted value (12) is also a number of the problem: which 12 a later step uses is
  # ambiguous, so no implied answer
  arith = {"domain": "arith", "problem": "Ben has 12 cards, 3 bags of 4 ...", "meta": {}}
  text = "Step 1: 3 * 4 = 12\nStep 2: 12 + 12 = 24\nSo the answer is \\boxed{24}."
  assert I.inject_mistake(arith, text, rng=0)[1].implied_answer is None
  island = {"domain": "graph", "problem": "grid", "meta": {"task": "island"}}
  text = ("Step 1: island at (1,1) has 2 cells\nStep 2: island at (3,3) has 1 cell\n"
          "Step 3: largest = max(2, 1) = 2\nSo the answer is \\boxed{2}.")
  _, inj = I.inject_mistake(island, text, rng=0)
  v = int(inj.new_value)
  assert inj.unit == 1 and inj.how == "island" and v in (3, 4, 5)
  assert inj.corrupted == f"Step 1: island at (1,1) has {v} cells\n"
  assert inj.implied_answer == str(v)
  lock = {"domain": "graph", "problem": "lock", "meta": {"task": "lock"}}
  text = ("Step 1: press A: 0 + 2 = 2, light green\nStep 2: press B: 2 * 3 = 6, light red\n"
          "Step 3: 2 presses reach 6\nSo the answer is \\boxed{2}.")
  _, inj = I.inject_mistake(lock, text, rng=0)
  assert inj.how == "press" and inj.unit == 2 and inj.implied_answer is None
  assert inj.corrupted == f"Step 2: press B: 2 * 3 = {inj.new_value}, light red\n"


# ---------------------------------------------------------------------------------- real model
@pytest.fixture(scope="module")
def toy_tok():
  from rlvr_jax.data.builtin import resolve_tokenizer
  return resolve_tokenizer("")


def test_continuation_ids_continue_the_assistant_turn(toy_tok):
  """Prompt ids = the eval prompt (chat + generation prompt) + the reply prefix's ids; a cut on
  a line boundary is a prefix of the SFT example's ids (no new turn, no turn end)."""
  from rlvr_jax.data.pipelines import assistant_reply, encode_sft_example, render_prompt
  from rlvr_jax.tokenizer import DEFAULT_SYSTEM_PROMPT
  record = from_example(get_domain("arith").generate("eval", 1, seed=2)[0])
  reply = assistant_reply(record, thinking=True)
  prefix = I.split_reasoning(reply).prefix(1)
  ids = I.continuation_ids(toy_tok, "toy", "default", I.Continuation(record, prefix))
  prompt = render_prompt(record, toy_tok, template="toy")
  assert ids[:len(prompt)] == prompt
  assert toy_tok.decode(ids[len(prompt):]) == prefix
  sft_prompt, sft_reply = encode_sft_example(record, toy_tok, template="toy",
                                             system_prompt=DEFAULT_SYSTEM_PROMPT, thinking=True)
  assert ids == (sft_prompt + sft_reply)[:len(ids)]
  assert toy_tok.chat_stop_id("toy") not in ids[len(prompt):]
  assert I.continuation_ids(toy_tok, "toy", "default", "hi") == \
      render_prompt({"problem": "hi"}, toy_tok, template="toy")


def test_model_generate_fn_smoke(toy_tok):
  """A tiny random toy-1m model through both probes, end to end (no quality assertion)."""
  import jax

  import rlvr_jax as rj
  from rlvr_jax.data.pipelines import assistant_reply
  from rlvr_jax.model import transformer as T
  cfg = rj.get_model_config("toy-1m")
  params = jax.jit(T.init_params_fn(cfg))(jax.random.key(0))
  gen = I.model_generate_fn(cfg, params, toy_tok, "toy", batch_size=8)
  record = from_example(get_domain("arith").generate("eval", 1, seed=0)[0])
  response = assistant_reply(record, thinking=True)
  early = I.early_answering([record], [response], gen, max_new_tokens=8, n_boot=20)
  assert len(early.results) == 1 and len(early.results[0].answers) == 5
  assert 0.0 <= early.aoc.value <= 1.0
  mistakes = I.mistake_injection([record] * 3, [response] * 3, gen, max_new_tokens=8,
                                 control=True, n_boot=20)
  assert len(mistakes.results) == 3 and mistakes.results[0].injection.how == "equation"
  # plain user prompts and open assistant turns mixed (6 items: the batch shape compiled above)
  texts = gen(["What is 2 + 3?", I.Continuation(record, "<think>\nStep 1:")] * 3,
              max_new_tokens=8)
  assert len(texts) == 6 and all(isinstance(t, str) for t in texts)
