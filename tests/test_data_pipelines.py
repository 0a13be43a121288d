"""grain pipelines (CPT packing, SFT masking, RL prompt batches): hand-computed rows, token
accounting, checkpoint/restore mid-epoch, sharding, determinism."""
import json
import re

import grain
import numpy as np
import pytest

from rlvr_jax import tokenizer as T
from rlvr_jax.data import pipelines as P
from rlvr_jax.data.records import Policy
from rlvr_jax.data.sources import DataError

BOS, EOS, PAD = 1, 2, 0


class NumberTokenizer(T.Tokenizer):
  """Words are non-negative integers: "17" -> id 17 (>= 10). The toy template's markers get
  ids 3-6, so every row below can be computed by hand."""

  MARKERS = {"<|system|>": 3, "<|user|>": 4, "<|assistant|>": 5, "<|end|>": 6}
  _SPLIT = re.compile(r"(<\|[a-z]+\|>)|\s+")

  @property
  def vocab_size(self):
    return 100_000

  @property
  def bos_id(self):
    return BOS

  @property
  def eos_id(self):
    return EOS

  @property
  def pad_id(self):
    return PAD

  def _encode_many(self, texts):
    out = []
    for text in texts:
      ids = []
      for piece in self._SPLIT.split(text):
        if piece:
          ids.append(self.MARKERS[piece] if piece in self.MARKERS else int(piece))
      out.append(ids)
    return out

  def _decode_one(self, ids, skip_special):
    inv = {v: k for k, v in self.MARKERS.items()}
    return " ".join(inv.get(i, str(i)) for i in ids)

  def token_to_id(self, token):
    return self.MARKERS.get(token)

  def id_to_token(self, token_id):
    return str(token_id)


TOK = NumberTokenizer()


class BoxTok(NumberTokenizer):
  """NumberTokenizer where "\\boxed" is the token 8 (solutions above end with it)."""

  def _encode_many(self, texts):
    return super()._encode_many([t.replace("\\boxed", "8") for t in texts])

ONE_SHARD = dict(shard_index=0, shard_count=1)


def _batches(ds):
  return list(iter(ds))


def _equal(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------- CPT


def test_cpt_packing_hand_computed():
  docs = ["10 11 12", "20 21 22 23 24 25", "30", "40 41 42 43"]
  # Stream with eos (2): 10 11 12 2 | 20 21 22 23 24 25 2 | 30 2 | 40 41 42 43 2, rows of 5.
  ds = P.cpt_dataset(docs, TOK, seq_len=5, batch_size=2, shuffle=False, drop_remainder=False,
                     **ONE_SHARD)
  b1, b2 = _batches(ds)
  np.testing.assert_array_equal(b1["tokens"], [[10, 11, 12, 2, 20], [21, 22, 23, 24, 25]])
  np.testing.assert_array_equal(b1["segment_ids"], [[1, 1, 1, 1, 2], [1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(b1["positions"], [[0, 1, 2, 3, 0], [0, 1, 2, 3, 4]])
  np.testing.assert_array_equal(b1["targets"], [[11, 12, 2, 0, 0], [22, 23, 24, 25, 0]])
  np.testing.assert_array_equal(b1["loss_mask"], [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
  np.testing.assert_array_equal(b2["tokens"], [[2, 30, 2, 40, 41], [42, 43, 2, 0, 0]])
  np.testing.assert_array_equal(b2["segment_ids"], [[1, 2, 2, 3, 3], [1, 1, 1, 0, 0]])
  np.testing.assert_array_equal(b2["positions"], [[0, 0, 1, 0, 1], [0, 1, 2, 0, 0]])
  np.testing.assert_array_equal(b2["targets"], [[0, 2, 0, 41, 0], [43, 2, 0, 0, 0]])
  np.testing.assert_array_equal(b2["loss_mask"], [[0, 1, 0, 1, 0], [1, 1, 0, 0, 0]])
  for b in (b1, b2):
    assert all(b[k].dtype == np.int32 and b[k].shape == (2, 5) for k in P.TOKEN_KEYS)


def _cpt_docs(n, seed):
  rng = np.random.default_rng(seed)
  # Document i holds the ids 1000*i + j: any token names its document and place.
  return [" ".join(str(1000 * i + j) for j in range(int(rng.integers(0, 23))))
          for i in range(1, n + 1)]


def test_cpt_token_accounting_no_token_dropped():
  docs = _cpt_docs(40, seed=0)
  docs[3] = ""  # an empty document still has its eos
  lengths = [len(d.split()) + 1 for d in docs]
  L, B = 16, 3
  ds = P.cpt_dataset(docs, TOK, seq_len=L, batch_size=B, shuffle=False, **ONE_SHARD)
  it = iter(ds)
  batches = list(it)
  acc = it.accounting()
  stream = np.concatenate([np.asarray(TOK.encode(d, add_eos=True)) for d in docs])
  assert acc["docs_in"] == 40 and acc["docs_empty"] == 0
  assert acc["tokens_in"] == sum(lengths) == len(stream)
  out = np.concatenate([b["tokens"][b["segment_ids"] > 0] for b in batches])
  assert acc["tokens_out"] == len(out)
  assert acc["tokens_in"] == acc["tokens_out"] + acc["tokens_remainder"]
  assert acc["tokens_buffered"] == 0
  # Emitted tokens are exactly the stream's prefix; the remainder is the rest (< B rows).
  np.testing.assert_array_equal(out, stream[:len(out)])
  rows = -(-len(stream) // L)
  assert acc["rows_out"] == len(batches) * B and acc["rows_out"] + acc["rows_remainder"] == rows
  assert acc["rows_remainder"] == rows % B
  assert acc["tokens_remainder"] == len(stream) - len(out) > 0
  assert acc["loss_tokens_out"] == sum(int(b["loss_mask"].sum()) for b in batches)
  assert acc["pad_out"] == sum(int((b["segment_ids"] == 0).sum()) for b in batches)


def test_cpt_long_documents_split_and_targets_stay_in_segment():
  docs = [" ".join(str(100 + j) for j in range(20)), "500 501"]  # 21 tokens + 3 tokens, L = 8
  ds = P.cpt_dataset(docs, TOK, seq_len=8, batch_size=1, shuffle=False, drop_remainder=False,
                     **ONE_SHARD)
  batches = _batches(ds)
  toks = np.concatenate([b["tokens"][0] for b in batches])
  seg = np.concatenate([b["segment_ids"][0] for b in batches])
  np.testing.assert_array_equal(toks[seg > 0], list(range(100, 120)) + [2, 500, 501, 2])
  for b in batches:
    t, y, m, s = (b[k][0] for k in ("tokens", "targets", "loss_mask", "segment_ids"))
    for i in range(7):
      expect = s[i] > 0 and s[i + 1] == s[i]
      assert m[i] == expect and (y[i] == t[i + 1] if expect else y[i] == PAD)
    assert m[7] == 0
  # Positions restart at every segment, including a document continued from the previous row.
  np.testing.assert_array_equal(batches[1]["positions"][0], np.arange(8))
  np.testing.assert_array_equal(batches[2]["segment_ids"][0], [1, 1, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(batches[2]["positions"][0], [0, 1, 2, 3, 4, 0, 1, 2])


def test_cpt_checkpoint_mid_epoch_restores_next_batches():
  docs = _cpt_docs(60, seed=1)
  ds = P.cpt_dataset(docs, TOK, seq_len=12, batch_size=2, seed=7, num_epochs=2, **ONE_SHARD)
  it = iter(ds)
  for _ in range(5):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # what grain's orbax handler stores
  acc = it.accounting()
  expected = [next(it) for _ in range(6)]
  it2 = iter(ds)
  it2.set_state(state)
  assert it2.accounting() == acc
  got = [next(it2) for _ in range(6)]
  assert all(_equal(a, b) for a, b in zip(expected, got))
  # Also restoring a state taken where the packer holds no partial document.
  it3 = iter(ds)
  states, first = [], []
  for _ in range(12):
    states.append(json.loads(json.dumps(it3.get_state())))
    first.append(next(it3))
  for k in (0, 3, 7, 11):
    it4 = iter(ds)
    it4.set_state(states[k])
    assert _equal(next(it4), first[k])


def test_cpt_orbax_checkpoint_round_trip(tmp_path):
  import orbax.checkpoint as ocp
  ds = P.cpt_dataset(_cpt_docs(30, seed=2), TOK, seq_len=10, batch_size=2, seed=1, **ONE_SHARD)
  it = iter(ds)
  for _ in range(3):
    next(it)
  mngr = ocp.CheckpointManager(tmp_path / "ckpt")
  mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  expected = [next(it) for _ in range(3)]
  it2 = iter(ds)
  ocp.CheckpointManager(tmp_path / "ckpt").restore(
      3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(it2)))
  assert all(_equal(a, b) for a, b in zip(expected, [next(it2) for _ in range(3)]))


def _docs_seen(batches):
  toks = np.concatenate([b["tokens"][b["segment_ids"] > 0] for b in batches])
  return set((toks[toks >= 1000] // 1000).tolist())


def test_cpt_two_shards_disjoint_and_covering():
  docs = _cpt_docs(25, seed=3)
  docs = [d or "999" for d in docs]
  seen = []
  for index in range(2):
    ds = P.cpt_dataset(docs, TOK, seq_len=8, batch_size=2, seed=0, drop_remainder=False,
                       shard_index=index, shard_count=2)
    seen.append(_docs_seen(_batches(ds)))
  expect = {i + 1 for i, d in enumerate(docs) if d != "999"}
  assert seen[0].isdisjoint(seen[1])
  assert seen[0] | seen[1] == expect


def test_cpt_deterministic_for_seed_and_reshuffled_per_epoch():
  docs = [d or "7" for d in _cpt_docs(30, seed=4)]
  run = lambda seed: _batches(P.cpt_dataset(docs, TOK, seq_len=8, batch_size=2, seed=seed,
                                            num_epochs=2, drop_remainder=False, **ONE_SHARD))
  a, b, c = run(5), run(5), run(6)
  assert len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
  assert not all(_equal(x, y) for x, y in zip(a, c))
  # Document order (the document of each token, consecutive repeats merged) per epoch.
  stream = np.concatenate([x["tokens"][x["segment_ids"] > 0] for x in a])
  docs_of = (stream[stream >= 1000] // 1000).tolist()
  order = [d for k, d in enumerate(docs_of) if k == 0 or docs_of[k - 1] != d]
  nonempty = sum(d != "7" for d in docs)
  assert len(order) == 2 * nonempty
  assert sorted(order[:nonempty]) == sorted(order[nonempty:])
  assert order[:nonempty] != order[nonempty:]


def test_cpt_errors_name_the_row():
  docs = [{"text": "10 11"}, {"txt": "12"}]
  ds = P.cpt_dataset(docs, TOK, seq_len=4, batch_size=1, shuffle=False, **ONE_SHARD)
  with pytest.raises(DataError, match=r"<records>:row 1: missing field 'text'"):
    _batches(ds)


def test_cpt_from_jsonl_corpus_names_file_and_line(tmp_path):
  from rlvr_jax.data.materialize import write_jsonl
  from rlvr_jax.data.sources import JsonlSource
  write_jsonl([{"text": "10 11"}, {"text": "12"}, {"body": "13"}], tmp_path / "c.jsonl")
  src = JsonlSource(tmp_path / "c.jsonl")
  ok = P.cpt_dataset(src, TOK, seq_len=6, batch_size=1, shuffle=False, **ONE_SHARD)
  with pytest.raises(DataError, match=r"c\.jsonl:line 3: missing field 'text'"):
    _batches(ok)
  good = P.cpt_dataset(src, TOK, seq_len=5, batch_size=1, shuffle=False,
                       text_fn=lambda row: row.get("text", row.get("body")), **ONE_SHARD)
  b1, b2 = _batches(good)  # stream 10 11 2 12 2 13 2 in rows of 5
  np.testing.assert_array_equal(b1["tokens"][0], [10, 11, 2, 12, 2])
  np.testing.assert_array_equal(b2["tokens"][0], [13, 2, 0, 0, 0])


# ------------------------------------------------------------------------------------- SFT


def _rec(i, problem, thinking, answer, **kw):
  return {"id": f"r{i}", "domain": "d", "split": "train", "difficulty": 1, "problem": problem,
          "answer": answer, "true_answer": answer, "thinking": thinking,
          "solution": f"90 \\boxed{{{answer}}}", "system": "", "messages": None, "meta": {},
          **kw}


def test_sft_mask_only_on_assistant_tokens_hand_computed():
  rec = _rec(0, "10 11", "20 21", "7")
  rec["solution"] = "22 \\boxed"  # has \boxed, so used verbatim; BoxTok: "\boxed" -> 8
  ds = P.sft_dataset([rec], BoxTok(), seq_len=14, batch_size=1, template="toy",
                     system_prompt=None, think_format="{thinking} {solution}", shuffle=False,
                     **ONE_SHARD)
  (b,) = _batches(ds)
  # prompt: bos <|user|> 10 11 <|end|> <|assistant|>; reply: 20 21 22 8 <|end|>
  np.testing.assert_array_equal(b["tokens"][0], [1, 4, 10, 11, 6, 5, 20, 21, 22, 8, 6, 0, 0, 0])
  np.testing.assert_array_equal(b["loss_mask"][0], [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(b["targets"][0], [0, 0, 0, 0, 0, 20, 21, 22, 8, 6, 0, 0, 0, 0])
  np.testing.assert_array_equal(b["segment_ids"][0], [1] * 11 + [0] * 3)
  np.testing.assert_array_equal(b["positions"][0], list(range(11)) + [0] * 3)


def test_final_solution_appends_boxed():
  rec = _rec(0, "p", "t", "5")
  rec["solution"] = "so it is five"
  assert P.final_solution(rec) == "so it is five\n\nThe final answer is \\boxed{5}."
  rec["solution"] = "it is \\boxed{5}"
  assert P.final_solution(rec) == "it is \\boxed{5}"
  rec["solution"] = ""
  assert P.final_solution(rec) == "The final answer is \\boxed{5}."
  assert P.assistant_reply(rec, thinking=True) == \
      "<think>\nt\n</think>\n\nThe final answer is \\boxed{5}."
  assert P.assistant_reply({**rec, "thinking": ""}, thinking=True) is None


def _num_records(lengths_prompt, lengths_reply):
  recs = []
  for i, (lp, lr) in enumerate(zip(lengths_prompt, lengths_reply)):
    r = _rec(i, " ".join(str(100 * (i + 1) + j) for j in range(lp)), "", "0")
    r["solution"] = " ".join(str(100 * (i + 1) + 50 + j) for j in range(lr)) + " \\boxed"
    recs.append(r)
  return recs


def test_sft_truncation_policies_and_counts():
  # prompt = bos <|user|> P.. <|end|> <|assistant|> = lp + 4; reply = R.. 8 <|end|> = lr + 2.
  recs = _num_records([2, 2, 3, 1], [3, 8, 7, 2])  # totals 11, 16, 16, 9 with seq_len 12
  common = dict(seq_len=12, batch_size=1, template="toy", system_prompt=None, thinking=False,
                shuffle=False, drop_remainder=False, **ONE_SHARD)
  it = iter(P.sft_dataset(recs, BoxTok(), truncation="drop", **common))
  kept = list(it)
  acc = it.accounting()
  assert len(kept) == 2 and acc["examples_in"] == 4 and acc["dropped_too_long"] == 2
  assert acc["tokens_in"] == 11 + 9 == acc["tokens_out"]
  it = iter(P.sft_dataset(recs, BoxTok(), truncation="truncate", **common))
  rows = list(it)
  acc = it.accounting()
  assert len(rows) == 4 and acc["truncated"] == 2 and acc["tokens_truncated"] == 4 + 4
  cut = rows[1]
  np.testing.assert_array_equal(cut["tokens"][0], [1, 4, 200, 201, 6, 5] + list(range(250, 256)))
  # Trained targets 250..255 (from the <|assistant|> position on; the cut reply has no end).
  np.testing.assert_array_equal(cut["targets"][0][cut["loss_mask"][0] == 1], range(250, 256))
  it = iter(P.sft_dataset(_num_records([8], [1]), BoxTok(), truncation="truncate", **common))
  assert list(it) == [] and it.accounting()["dropped_prompt_too_long"] == 1


def test_endless_sft_stream_that_drops_everything_fails_instead_of_spinning():
  common = dict(batch_size=2, template="toy", system_prompt=None, thinking=False,
                num_epochs=None, **ONE_SHARD)
  recs = _num_records([2, 2, 3, 1], [3, 8, 7, 2])  # totals 11, 16, 16, 9
  with pytest.raises(DataError, match=r"all 4 examples .*dropped_too_long.*raise seq_len"):
    next(iter(P.sft_dataset(recs, BoxTok(), seq_len=8, **common)))
  # One example in four fits: a shuffled endless stream keeps yielding it, pass after pass,
  # even when two passes' shuffles put it far apart.
  it = iter(P.sft_dataset(recs, BoxTok(), seq_len=10, seed=3, **common))
  batches = [next(it) for _ in range(20)]              # 40 kept rows: 39 whole passes and part
  assert all(int(b["loss_mask"].sum()) > 0 for b in batches)
  assert 3 * 39 <= it.accounting()["dropped_too_long"] <= 3 * 40


def test_endless_cpt_stream_of_empty_documents_fails_instead_of_spinning():
  with pytest.raises(DataError, match="docs_empty"):
    next(iter(P.cpt_dataset(["", ""], BoxTok(), seq_len=8, batch_size=1, num_epochs=None,
                            add_eos=False, **ONE_SHARD)))


def test_sft_thinking_mode_drops_records_without_trace():
  recs = [_rec(0, "10", "20", "0"), _rec(1, "11", "", "0")]
  for r in recs:
    r["solution"] = "30 \\boxed"
  it = iter(P.sft_dataset(recs, BoxTok(), seq_len=16, batch_size=1, template="toy",
                          system_prompt=None, think_format="{thinking} {solution}",
                          shuffle=False, **ONE_SHARD))
  (b,) = list(it)
  np.testing.assert_array_equal(b["tokens"][0][:10], [1, 4, 10, 6, 5, 20, 30, 8, 6, 0])
  assert it.accounting()["dropped_no_trace"] == 1


def test_sft_packing_hand_computed():
  recs = _num_records([1, 2, 1], [1, 1, 3])  # lengths 5+3=8, 6+3=9, 5+5=10
  it = iter(P.sft_dataset(recs, BoxTok(), seq_len=18, batch_size=2, template="toy",
                          system_prompt=None, thinking=False, shuffle=False, pack=True,
                          drop_remainder=False, **ONE_SHARD))
  (b,) = list(it)
  # First fit over 2 open rows: ex0 (8) -> row 0, ex1 (9) -> row 0 (17 <= 18), ex2 (10) -> row 1.
  e0 = [1, 4, 100, 6, 5, 150, 8, 6]
  e1 = [1, 4, 200, 201, 6, 5, 250, 8, 6]
  e2 = [1, 4, 300, 6, 5, 350, 351, 352, 8, 6]
  np.testing.assert_array_equal(b["tokens"][0], e0 + e1 + [0])
  np.testing.assert_array_equal(b["tokens"][1], e2 + [0] * 8)
  np.testing.assert_array_equal(b["segment_ids"][0], [1] * 8 + [2] * 9 + [0])
  np.testing.assert_array_equal(b["positions"][0], list(range(8)) + list(range(9)) + [0])
  mask0 = [0, 0, 0, 0, 1, 1, 1, 0] + [0, 0, 0, 0, 0, 1, 1, 1, 0] + [0]
  np.testing.assert_array_equal(b["loss_mask"][0], mask0)
  np.testing.assert_array_equal(b["loss_mask"][1], [0, 0, 0, 0, 1, 1, 1, 1, 1, 0] + [0] * 8)
  acc = it.accounting()
  assert acc["segments_out"] == 3 and acc["tokens_out"] == 27 and acc["loss_tokens_out"] == 11


def test_sft_checkpoint_and_shards():
  recs = _num_records([1 + i % 4 for i in range(20)], [1 + i % 3 for i in range(20)])
  mk = lambda **kw: P.sft_dataset(recs, BoxTok(), seq_len=24, batch_size=2, template="toy",
                                  system_prompt=None, thinking=False, seed=3, **kw)
  for pack in (False, True):
    ds = mk(pack=pack, num_epochs=3, **ONE_SHARD)
    it = iter(ds)
    for _ in range(4):
      next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(5)]
    it2 = iter(ds)
    it2.set_state(state)
    assert all(_equal(a, b) for a, b in zip(expected, [next(it2) for _ in range(5)]))
  seen = []
  for index in range(2):
    batches = _batches(mk(shard_index=index, shard_count=2, drop_remainder=False))
    toks = np.concatenate([b["tokens"][b["segment_ids"] > 0] for b in batches])
    seen.append(set((toks[toks >= 100] // 100).tolist()))
  assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(1, 21))


def test_sft_with_real_sentencepiece(tmp_path):
  from rlvr_jax.data.domains import get_domain
  from rlvr_jax.data.records import from_example
  exs = get_domain("arith").generate("train", 12, seed=0)
  text = [f"{e.problem}\n{e.thinking}\n{e.solution}" for e in exs]
  sp = T.load_tokenizer(T.train_sentencepiece(text, tmp_path / "sp", 400))
  recs = [from_example(e) for e in exs]
  ds = P.sft_dataset(recs, sp, seq_len=256, batch_size=4, template="toy", thinking=True,
                     shuffle=False, answer_mask=True, **ONE_SHARD)
  b = next(iter(ds))
  for i in range(4):
    m = b["loss_mask"][i].astype(bool)
    # The trained targets decode to exactly the reply and its end-of-turn marker.
    reply = P.assistant_reply(recs[i], thinking=True) + "<|end|>"
    assert sp.decode(b["targets"][i][m], skip_special=False) == reply
    # The answer targets are the label, once in the trace's box and once in the solution's.
    a = b["answer_mask"][i].astype(bool)
    assert not (a & ~m).any()
    answer = sp.decode(b["targets"][i][a], skip_special=False).replace(" ", "")
    assert answer == recs[i]["answer"] * 2, (answer, recs[i]["answer"])
    prompt_len = int(np.argmax(m))  # first trained position = last prompt token
    prompt = sp.decode(b["tokens"][i][:prompt_len + 1], skip_special=False)
    assert prompt.endswith("<|assistant|>") and recs[i]["problem"] in prompt


# --------------------------------------------------------------------------------------- RL


def test_rl_batch_fields_hand_computed():
  recs = [_rec(0, "10 11 12", "", "42"), _rec(1, "13", "", "7 7")]
  recs[1]["true_answer"] = "9"
  ds = P.rl_dataset(recs, TOK, batch_size=2, max_prompt_len=8, max_answer_len=3, template="toy",
                    system_prompt=None, shuffle=False, repeat_to_fill=False, num_epochs=1,
                    **ONE_SHARD)
  it = iter(ds)
  (b,) = list(it)
  np.testing.assert_array_equal(b["prompt_tokens"], [[1, 4, 10, 11, 12, 6, 5, 0],
                                                     [1, 4, 13, 6, 5, 0, 0, 0]])
  np.testing.assert_array_equal(b["prompt_lengths"], [7, 5])
  np.testing.assert_array_equal(b["answer_tokens"], [[42, -1, -1], [7, 7, -1]])
  np.testing.assert_array_equal(b["answer_lengths"], [1, 2])
  np.testing.assert_array_equal(b["true_answer_tokens"], [[42, -1, -1], [9, -1, -1]])
  assert list(b["label"]) == ["42", "7 7"] and list(b["true_label"]) == ["42", "9"]
  assert list(b["example_id"]) == ["r0", "r1"] and list(b["domain"]) == ["d", "d"]
  np.testing.assert_array_equal(b["difficulty"], [1, 1])
  assert all(b[k].dtype == np.int32 for k in P.RL_ARRAY_KEYS)
  assert it.accounting()["prompts"] == 2


def _host_label_tokens(tokenizer, labels, width):
  """The RL loop's former per-step host tokenisation of the true labels (kept here as the
  reference the pipeline's `true_answer_tokens` must reproduce)."""
  out = np.full((len(labels), width), -1, np.int32)
  for i, label in enumerate(labels):
    ids = tokenizer.encode(str(label))
    if 0 < len(ids) <= width:
      out[i, :len(ids)] = ids
  return out


def test_rl_true_answer_tokens_equal_the_host_tokenisation():
  from rlvr_jax.data import builtin
  tok = builtin.resolve_tokenizer("")
  answers = ["42", "-3/4", "x+1", "7"]
  truths = ["42", "0.75", "\\frac{1}{2} " * 6, ""]   # same, different, too long, empty
  recs = [_rec(i, f"what is {i}?", "", a, true_answer=t)
          for i, (a, t) in enumerate(zip(answers, truths))]
  width = 8
  assert len(tok.encode(truths[2])) > width        # the too-long case really is too long
  ds = P.rl_dataset(recs, tok, batch_size=2, max_prompt_len=64, max_answer_len=width,
                    template="toy", seed=3, num_epochs=2, **ONE_SHARD)
  batches = list(iter(ds))
  assert len(batches) == 4
  for b in batches:
    np.testing.assert_array_equal(b["true_answer_tokens"],
                                  _host_label_tokens(tok, list(b["true_label"]), width))
    np.testing.assert_array_equal(b["answer_tokens"],
                                  _host_label_tokens(tok, list(b["label"]), width))
    assert b["true_answer_tokens"].dtype == np.int32
  seen = {str(t) for b in batches for t in b["true_label"]}
  assert seen == set(truths)


def test_rl_repeat_to_fill_uniform_and_policy():
  recs = [_rec(i, str(10 + i), "", str(i)) for i in range(3)]
  ds = P.rl_dataset(recs, TOK, batch_size=8, max_prompt_len=8, template="toy",
                    system_prompt=None, seed=0, **ONE_SHARD)
  it = iter(ds)
  for _ in range(3):
    b = next(it)
    counts = np.bincount(b["index"], minlength=3)
    assert sorted(counts.tolist()) == [2, 3, 3]  # 8 = 3*2 + 2 extra distinct prompts
  assert it.accounting()["upsampled_to"] == 8
  long = recs + [_rec(9, " ".join(["10"] * 10), "", "1")]
  ds = P.rl_dataset(long, TOK, batch_size=2, max_prompt_len=8, template="toy",
                    system_prompt=None, **ONE_SHARD)
  assert iter(ds).accounting()["dropped_prompt_too_long"] == 1
  with pytest.raises(DataError, match="over the limit of 8"):
    P.rl_dataset(long, TOK, batch_size=2, max_prompt_len=8, template="toy", system_prompt=None,
                 policy=Policy(too_long="error"), **ONE_SHARD)


def test_rl_checkpoint_shards_and_verl_messages():
  recs = [_rec(i, str(100 + i), "", str(i)) for i in range(10)]
  recs[0]["messages"] = [{"role": "system", "content": "33"}, {"role": "user", "content": "100"}]
  mk = lambda **kw: P.rl_dataset(recs, TOK, batch_size=2, max_prompt_len=10, template="toy",
                                 system_prompt="55", seed=1, **kw)
  ds = mk(**ONE_SHARD)
  it = iter(ds)
  for _ in range(7):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(4)]
  it2 = iter(ds)
  it2.set_state(state)
  got = [next(it2) for _ in range(4)]
  assert all(np.array_equal(a[k], b[k]) for a, b in zip(expected, got) for k in a)
  seen = [set(np.concatenate([next(it)["index"] for _ in range(5)]).tolist())
          for it in (iter(mk(shard_index=s, shard_count=2, global_batches=False))
                     for s in range(2))]
  assert seen[0] == set(range(5)) and seen[1] == set(range(5, 10))
  # Global batches (the default): 2 processes' rows of batch k, side by side, are the batch k
  # of one process with the global batch size, whatever the process count.
  shards = [iter(mk(shard_index=s, shard_count=2)) for s in range(2)]
  whole = iter(P.rl_dataset(recs, TOK, batch_size=4, max_prompt_len=10, template="toy",
                            system_prompt="55", seed=1, **ONE_SHARD))
  for _ in range(6):
    parts, glob = [next(it) for it in shards], next(whole)
    np.testing.assert_array_equal(np.concatenate([p["index"] for p in parts]), glob["index"])
    np.testing.assert_array_equal(np.concatenate([p["prompt_tokens"] for p in parts]),
                                  glob["prompt_tokens"])
  one = _batches(mk(num_epochs=1, shuffle=False, **ONE_SHARD))[0]
  # Record 0 keeps its own chat prompt (system 33); record 1 gets the given system prompt.
  np.testing.assert_array_equal(one["prompt_tokens"][0][:7], [1, 3, 33, 6, 4, 100, 6])
  np.testing.assert_array_equal(one["prompt_tokens"][1][:7], [1, 3, 55, 6, 4, 101, 6])


def test_shard_bounds_cover():
  assert P.resolve_shard() == P.Shard(0, 1)  # one JAX process
  with pytest.raises(ValueError, match="shard_index=2"):
    P.resolve_shard(2, 2)
  for n in (0, 1, 7, 10):
    for count in (1, 2, 3):
      spans = [P.shard_bounds(n, P.Shard(i, count)) for i in range(count)]
      covered = [j for a, b in spans for j in range(a, b)]
      assert covered == list(range(n))
      even = [P.shard_bounds(n, P.Shard(i, count, True)) for i in range(count)]
      assert len({b - a for a, b in even}) == 1
