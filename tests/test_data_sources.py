"""Readers, real-data layouts, bad rows, atomic writes, TFDS round trip and the data protocols."""
import importlib.util
import json
import logging
import os
import re
import sys
from collections import Counter

import numpy as np
import pytest

from rlvr_jax.data import materialize as M
from rlvr_jax.data import protocols as PR
from rlvr_jax.data import records as R
from rlvr_jax.data import sources as S

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


def fx(name):
  return os.path.join(FIX, name)


# ----------------------------------------------------------------------------------- readers


def test_jsonl_source_skips_blank_lines_and_names_lines():
  src = S.JsonlSource(fx("gsm8k.jsonl"))
  assert len(src) == 3  # line 2 is blank
  assert src[1]["question"].startswith("A shop sells 400 pens")
  assert src.where(1).endswith("gsm8k.jsonl:line 3")
  assert src[-1]["answer"].endswith("#### 3")
  with pytest.raises(IndexError):
    src[3]


def test_parquet_source_reads_nested_verl_rows():
  src = S.ParquetSource(fx("verl.parquet"))
  assert len(src) == 3
  row = src[2]  # second row group (row_group_size=2)
  assert row["prompt"] == [{"content": "How many primes are below 20?", "role": "user"}]
  assert row["reward_model"] == {"ground_truth": "", "style": "rule"}
  assert src.where(2).endswith("verl.parquet:row 2")


def test_text_source_units():
  f = S.TextSource(fx("corpus.txt"))
  assert len(f) == 1 and f[0]["text"].count("\n") == 7
  lines = S.TextSource(fx("corpus.txt"), unit="line")
  assert [lines[i]["text"] for i in range(len(lines))] == [
      "Addition is commutative: a + b = b + a.", "It holds for all numbers.",
      "Multiplication distributes over addition.", "A kilometre is 1000 metres."]
  paras = S.TextSource(fx("corpus.txt"), unit="paragraph")
  assert len(paras) == 3 and paras[0]["text"] == ("Addition is commutative: a + b = b + a.\n"
                                                  "It holds for all numbers.")
  assert paras.where(2).endswith("corpus.txt:line 7")


def test_open_source_dispatch_and_missing(tmp_path):
  assert isinstance(S.open_source(fx("math.jsonl")), S.JsonlSource)
  assert isinstance(S.open_source(fx("verl.parquet")), S.ParquetSource)
  assert isinstance(S.open_source(fx("corpus.txt")), S.TextSource)
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    S.open_source(str(tmp_path / "nope.jsonl"))


def test_array_record_and_jsonl_writes_round_trip(tmp_path):
  rows = [{"id": f"x{i}", "text": "é" * i, "n": i} for i in range(5)]
  assert M.write_array_record(rows, tmp_path / "a.array_record") == 5
  src = S.ArrayRecordSource(tmp_path / "a.array_record")
  assert [src[i] for i in range(5)] == rows
  assert src.where(4).endswith("a.array_record:record 4")
  assert M.write_jsonl(rows, tmp_path / "a.jsonl") == 5
  src = S.JsonlSource(tmp_path / "a.jsonl")
  assert [src[i] for i in range(5)] == rows


def test_failed_write_leaves_nothing_half_written(tmp_path):
  path = tmp_path / "out.jsonl"

  def rows(fail_at):
    for i in range(10):
      if i == fail_at:
        raise RuntimeError("generator died")
      yield {"i": i}

  with pytest.raises(RuntimeError):
    M.write_jsonl(rows(5), path)
  assert os.listdir(tmp_path) == []  # no final file and no temporary left behind
  M.write_jsonl(rows(-1), path)
  before = path.read_bytes()
  with pytest.raises(RuntimeError):
    M.write_jsonl(rows(3), path)
  assert path.read_bytes() == before and os.listdir(tmp_path) == ["out.jsonl"]
  with pytest.raises(RuntimeError):
    M.write_array_record(rows(2), tmp_path / "x.array_record")
  assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]


# ----------------------------------------------------------------------------------- layouts


def test_gsm8k_layout():
  recs, counts = R.load_records(fx("gsm8k.jsonl"))
  assert counts == {"rows": 3, "kept": 3, "dropped_missing_answer": 0, "dropped_too_long": 0}
  assert [r["answer"] for r in recs] == ["72", "1200", "3"]  # "#### 1,200" -> 1200
  assert recs[0]["thinking"].startswith("Natalia sold 48/2") and "####" not in recs[0]["thinking"]
  assert recs[0]["problem"].startswith("Natalia sold clips")
  assert R.detect_layout(json.loads(open(fx("gsm8k.jsonl")).readline())) == "gsm8k"


def test_math_layout_boxed_and_missing_answer_policy():
  recs, counts = R.load_records(fx("math.jsonl"))
  assert counts["rows"] == 4 and counts["kept"] == 3 and counts["dropped_missing_answer"] == 1
  assert [r["answer"] for r in recs] == ["\\frac{1}{2}", "1024", "7"]
  assert [r["difficulty"] for r in recs] == [2, 1, 1]
  assert recs[1]["id"] == "test/algebra/7.json" and recs[1]["meta"]["type"] == "Algebra"
  with pytest.raises(S.DataError, match=r"math\.jsonl:line 3: no answer found .*\\boxed"):
    R.load_records(fx("math.jsonl"), policy=R.Policy(missing_answer="error"))


def test_qa_layout_numbers_and_prompt_field():
  recs, _ = R.load_records(fx("qa.jsonl"))
  assert [(r["id"], r["problem"][:8], r["answer"]) for r in recs] == [
      ("q1", "What is ", "42"), ("q2", "Name the", "Na"), ("q3", "What is ", "1/2")]
  assert recs[1]["difficulty"] == 2


def test_verl_parquet_layout():
  recs, counts = R.load_records(fx("verl.parquet"))
  assert counts["kept"] == 2 and counts["dropped_missing_answer"] == 1
  a, b = recs
  assert a["answer"] == "55" and a["system"].startswith("Please reason step by step")
  assert a["problem"] == "What is the sum of the first 10 positive integers?"
  assert a["messages"][0]["role"] == "system" and len(a["messages"]) == 2
  assert a["id"] == "skywork_or1_math-0" and a["split"] == "train"
  assert a["domain"] == "skywork_or1_math"
  # ground_truth '["\\frac{3}{4}", "0.75"]' (a JSON list): first is the label, all kept.
  assert b["answer"] == "\\frac{3}{4}" and b["meta"]["answers"] == ["\\frac{3}{4}", "0.75"]
  for r in recs:
    R.check_record(r)


def test_verl_bad_rows_name_the_field():
  where = "train.parquet:row 4"
  with pytest.raises(S.DataError, match=r"train\.parquet:row 4: field 'prompt\[0\]'"):
    R.normalize_row({"prompt": [{"role": "user"}], "reward_model": {"ground_truth": "1"}},
                    where=where)
  with pytest.raises(S.DataError, match=r"row 4: field 'reward_model' must be an object"):
    R.normalize_row({"prompt": [{"role": "user", "content": "q"}], "reward_model": "1"},
                    where=where)
  with pytest.raises(S.DataError, match=r"row 4: field 'prompt' has no 'user' message"):
    R.normalize_row({"prompt": [{"role": "system", "content": "q"}],
                     "reward_model": {"ground_truth": "1"}}, where=where)


def test_malformed_rows_name_file_line_and_field():
  src = S.open_source(fx("malformed.jsonl"))
  expected = {
      1: r"malformed\.jsonl:line 2: field 'problem' must be a string, got int",
      2: r"malformed\.jsonl:line 3: not valid JSON",
      3: r"malformed\.jsonl:line 4: expected a JSON object per line, got list",
      4: r"malformed\.jsonl:line 5: field 'question' is empty",
  }
  record, status = R.normalize_row(src[0], where=src.where(0))
  assert status == "ok" and record["answer"] == "2"
  for i, pattern in expected.items():
    with pytest.raises(S.DataError, match=pattern):
      R.normalize_row(src[i], where=src.where(i))
  with pytest.raises(S.DataError, match=r"line 2: field 'problem' must be a string"):
    R.load_records(fx("malformed.jsonl"))


def test_too_long_policy_and_text_rows():
  row = {"problem": "x" * 50, "answer": "1"}
  pol = R.Policy(max_prompt_chars=20)
  assert R.normalize_row(row, where="f:line 1", policy=pol) == (None, "too_long")
  with pytest.raises(S.DataError, match=r"f:line 1: field 'problem' has 50 characters"):
    R.normalize_row(row, where="f:line 1", policy=R.Policy(max_prompt_chars=20, too_long="error"))
  with pytest.raises(S.DataError, match="no problem field"):
    R.normalize_row({"title": "t"}, where="f:line 2")
  assert R.text_record({"text": "doc"}, where="c") == "doc"
  with pytest.raises(S.DataError, match=r"c: field 'text' must be a string"):
    R.text_record({"text": 3}, where="c")
  with pytest.raises(ValueError):
    R.Policy(missing_answer="ignore")


def _write_parquet(path, rows, row_group_size):
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
  return str(path)


def _one_line(err):
  assert "\n" not in str(err.value)
  return str(err.value)


def test_truncated_or_corrupt_parquet_names_the_file(tmp_path):
  """A cut-off Parquet file (footer lost) fails on opening, one whose row group is damaged
  fails on reading that group: both a DataError (a ValueError) naming the file."""
  rows = [{"problem": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(9)]
  good = _write_parquet(tmp_path / "good.parquet", rows, row_group_size=3)
  data = open(good, "rb").read()
  cut = tmp_path / "cut.parquet"
  cut.write_bytes(data[:len(data) // 2])
  pattern = (rf"^{re.escape(str(cut))}: not a readable Parquet file \(.*\); it is truncated or "
             r"corrupt .*: re-download or re-write it$")
  with pytest.raises(S.DataError, match=pattern) as err:
    S.ParquetSource(cut)
  _one_line(err)
  with pytest.raises(ValueError, match=pattern):       # through open_source / load_records
    R.load_records(str(cut))

  import pyarrow.parquet as pq
  offset = pq.ParquetFile(good).metadata.row_group(1).column(0).data_page_offset
  damaged = bytearray(data)
  damaged[offset:offset + 16] = b"\xab" * 16            # row group 1's first page header
  bad = tmp_path / "bad.parquet"
  bad.write_bytes(bytes(damaged))
  src = S.ParquetSource(bad)
  assert src[0] == rows[0]                             # row group 0 is intact
  with pytest.raises(S.DataError, match=rf"^{re.escape(str(bad))}: not a readable Parquet file "
                                        r"at row group 1 \(rows 3-5\) \(.*\); it is truncated"
                     ) as err:
    src[4]
  _one_line(err)


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def test_rows_without_an_answer_are_counted_logged_and_none_is_an_error(tmp_path, caplog):
  """Dropped rows come back in the counts and are logged with why and where; a file none of
  whose rows has an answer fails naming the file, the row count and the fields looked for."""
  rows = [{"problem": f"What is {i} + 1?", "answer": str(i + 1) if i % 2 else ""}
          for i in range(5)]
  path = _write_jsonl(tmp_path / "some.jsonl", rows)
  with caplog.at_level(logging.WARNING, logger=R.__name__):
    recs, counts = R.load_records(path)
  assert counts == {"rows": 5, "kept": 2, "dropped_missing_answer": 3, "dropped_too_long": 0}
  assert [r["answer"] for r in recs] == ["2", "4"]
  assert re.search(rf"{re.escape(path)}: dropped 3 of its 5 rows: 3 without an answer \(looked "
                   r"for: layout 'qa': 'answer', then 'solution'; first: .*some\.jsonl:line 1\)",
                   caplog.text)

  unlabelled = [{"problem": f"What is {i} + 1?", "answer": ""} for i in range(10)]
  unlabelled.append({"problem": "Half of 3?", "solution": "It is 1.5, no box."})   # math layout
  path = _write_jsonl(tmp_path / "unlabelled.jsonl", unlabelled)
  want = (rf"^{re.escape(path)}: none of its 11 rows has an answer, so the dataset has no labels "
          r"\(looked for: layout 'math': 'answer', then the last \\boxed\{\.\.\.\} of "
          r"'solution'; layout 'qa': 'answer', then 'solution'\); give the rows an answer "
          r"field, or set the layout \(data\.layout\) to the one the file follows: verl, "
          r"gsm8k, math, qa$")
  for source in (path, S.open_source(path)):          # a path, or a reader as run.py passes
    with pytest.raises(S.DataError, match=want) as err:
      R.load_records(source)
    _one_line(err)
  with pytest.raises(S.DataError, match=r"none of the first 3 of its 11 rows has an answer"):
    R.load_records(path, limit=3)

  mixed = _write_jsonl(tmp_path / "mixed.jsonl", [
      {"problem": "What is 1 + 1?", "answer": ""},
      {"problem": "What is 2 + 2? " * 5, "answer": "4"}])
  with pytest.raises(S.DataError, match=rf"^{re.escape(mixed)}: none of its 2 rows is usable: 1 "
                                        r"without an answer .*; 1 with a problem over "
                                        r"max_prompt_chars=20 characters \(first: .*line 2\); "
                                        r"give the rows answers, or raise max_prompt_chars$"):
    R.load_records(mixed, policy=R.Policy(max_prompt_chars=20))

  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n")
  with pytest.raises(S.DataError, match=rf"^{re.escape(str(empty))}: has no rows"):
    R.load_records(str(empty))


def test_sft_data_files_without_answers_fail_naming_the_file(tmp_path):
  """The SFT run's data.files loader raises the records error, naming the file, before its own
  generic "no SFT examples: set config.data.domains and/or config.data.files"."""
  import ml_collections
  from rlvr_jax.train import run
  path = _write_jsonl(tmp_path / "train.jsonl",
                      [{"question": f"What is {i} + 1?"} for i in range(4)])
  config = ml_collections.ConfigDict(dict(
      seed=0, data=dict(domains="", files=path, layout="auto", n_train=4, n_eval=2,
                        difficulty=0)))
  with pytest.raises(S.DataError, match=rf"^{re.escape(path)}: none of its 4 rows has an answer"):
    run._problem_records(config)


# -------------------------------------------------------------------------------------- TFDS


def test_tfds_builder_round_trip_without_tensorflow(tmp_path):
  from rlvr_jax.data import tfds_builder as TB
  from rlvr_jax.data.domains import get_domain
  assert importlib.util.find_spec("tensorflow") is None
  path = TB.prepare("arith", tmp_path, n_train=12, n_eval=4, n_ood=3, seed=2)
  assert os.path.isfile(os.path.join(path, "dataset_info.json"))
  assert not any(n.startswith("incomplete") for n in os.listdir(os.path.dirname(path)))
  dom = get_domain("arith")
  for split, n in (("train", 12), ("eval", 4), ("ood", 3)):
    src = TB.synthetic_source("arith", split, tmp_path, n_train=12, n_eval=4, n_ood=3, seed=2)
    assert len(src) == n
    got = {r["id"]: r for r in TB.tfds_records(src)}
    want = {r["id"]: r for r in map(R.from_example, dom.generate(split, n, 2))}
    assert got == want  # every field, steps and meta included (order is TFDS's)
  # A prepared dataset is also readable by name from its data_dir, as on Cloud TPU.
  by_name = S.tfds_source(f"rlvr_synthetic/{TB.config_name('arith', 2, 12, 4, 3)}", "eval",
                          data_dir=str(tmp_path))
  assert len(by_name) == 4 and isinstance(by_name[0]["problem"], str)
  assert "tensorflow" not in sys.modules
  with pytest.raises(S.DataError, match="cannot open TFDS dataset"):
    S.tfds_source("rlvr_synthetic/not_prepared", "train", data_dir=str(tmp_path))


# -------------------------------------------------------------------------------- materialise


def test_run_generates_files_manifest_and_report(tmp_path):
  cfg = M.get_config()
  cfg.domains, cfg.n_train, cfg.n_eval, cfg.n_ood = "arith", 6, 2, 0
  cfg.formats, cfg.corpus_docs = "jsonl,array_record", 2
  assert M.run(cfg, str(tmp_path)) == 0
  out = tmp_path / "data"
  manifest = json.loads((out / "MANIFEST.json").read_text())
  files = {f["path"]: f for f in manifest["files"]}
  assert set(files) == {"arith/train.jsonl", "arith/train.array_record", "arith/eval.jsonl",
                        "arith/eval.array_record", "corpus/arith.jsonl"}
  assert files["arith/train.jsonl"]["records"] == 6
  assert files["arith/eval.array_record"]["sha256"] == M.file_sha256(out / "arith/eval.array_record")
  a = S.JsonlSource(out / "arith/train.jsonl")
  b = S.ArrayRecordSource(out / "arith/train.array_record")
  assert [a[i] for i in range(6)] == [b[i] for i in range(6)]
  report = json.loads((out / "inspect.json").read_text())
  ds = report["datasets"]["arith/train"]
  assert ds["records"] == 6 and ds["unit"] == "chars"
  assert sum(c for _, _, c in ds["lengths"]["prompt"]["histogram"]) == 6
  assert ds["lengths"]["answer"]["max"] == max(len(a[i]["answer"]) for i in range(6))


def test_inspect_with_tokenizer_counts_tokens(tmp_path):
  from rlvr_jax import tokenizer as T
  recs, _ = R.load_records(fx("qa.jsonl"))
  text = [r["problem"] + " " + r["answer"] for r in recs] * 20
  tok = T.load_tokenizer(T.train_sentencepiece(text, tmp_path / "sp", 300))
  rep = M.inspect_records(recs, tok, template="toy", system_prompt=None, n_examples=2)
  assert rep["unit"] == "tokens" and rep["records"] == 3
  want = sorted(len(tok.encode_chat([{"role": "user", "content": r["problem"]}], template="toy"))
                for r in recs)
  assert (rep["lengths"]["prompt"]["min"], rep["lengths"]["prompt"]["max"]) == (want[0], want[-1])
  assert rep["examples"][0]["prompt_decoded"] == "<s><|user|>What is 6 times 7?<|end|><|assistant|>"
  assert M.length_summary([1, 1, 2, 5], bins=4)["histogram"] == [
      [1.0, 2.0, 2], [2.0, 3.0, 1], [3.0, 4.0, 0], [4.0, 5.0, 1]]


# --------------------------------------------------------------------------------- protocols


def _counts_example():
  # Bins (solve count -> bin = count - 1): count 1 has 5 problems, count 2 one, 3 three, 15 two;
  # counts 0 and 16 are filtered out.
  counts = {}
  for c, n in ((1, 5), (2, 1), (3, 3), (15, 2), (0, 4), (16, 3)):
    for k in range(n):
      counts[f"c{c}-{k}"] = c
  return counts


def test_difficulty_filter_keeps_1_to_15():
  counts = _counts_example()
  kept = PR.difficulty_filter(counts)
  assert len(kept) == 11 and all(1 <= counts[k] <= 15 for k in kept)
  with pytest.raises(ValueError, match="outside"):
    PR.difficulty_filter({"a": 17})


def test_stratified_subset_round_robin_hand_computed():
  counts = _counts_example()
  # Ascending order, N = 8: pass 1 takes one from bins 0, 1, 2, 14 (4); pass 2 from 0, 2, 14
  # (bin 1 is empty now) (7); pass 3 from bin 0 (8). Per bin: {0: 3, 1: 1, 2: 2, 14: 2}.
  pick = PR.stratified_subset(counts, 8, seed=0, bin_order="ascending")
  assert len(pick) == len(set(pick)) == 8
  assert PR.bin_histogram(pick, counts) == {0: 3, 1: 1, 2: 2, 14: 2}
  assert [counts[k] for k in pick[:4]] == [1, 2, 3, 15] and [counts[k] for k in pick[4:7]] == \
      [1, 3, 15]
  # Shuffled bin order: passes 1-2 are the same 7 draws in some order; the 8th comes from bin 0
  # or bin 2 (the only bins left non-empty after two passes).
  for seed in range(6):
    pick = PR.stratified_subset(counts, 8, seed=seed)
    h = PR.bin_histogram(pick, counts)
    assert h in ({0: 3, 1: 1, 2: 2, 14: 2}, {0: 2, 1: 1, 2: 3, 14: 2})
    assert sorted(counts[k] for k in pick[:4]) == [1, 2, 3, 15]
  assert PR.stratified_subset(counts, 8, seed=3) == PR.stratified_subset(counts, 8, seed=3)
  everything = PR.stratified_subset(counts, 11, seed=1)
  assert sorted(everything) == sorted(PR.difficulty_filter(counts))
  with pytest.raises(ValueError, match="only 11"):
    PR.stratified_subset(counts, 12, seed=0)


def test_upsample_indices_uniform():
  idx = PR.upsample_indices(3, 8, seed=0)
  c = Counter(idx.tolist())
  assert len(idx) == 8 and sorted(c.values()) == [2, 3, 3] and set(c) == {0, 1, 2}
  assert Counter(PR.upsample_indices(8, 64, seed=0).tolist()) == {i: 8 for i in range(8)}
  np.testing.assert_array_equal(PR.upsample_indices(70, 64, seed=0), np.arange(70))


def test_replace_labels_rate_and_unavailable_answers():
  recs = [{"id": f"p{i}", "answer": str(i), "true_answer": str(i), "meta": {}}
          for i in range(10)]
  table = {f"p{i}": str(100 + i) for i in range(10)}
  del table["p3"], table["p4"]
  table["p5"] = "5.0"  # equal to the true answer "5" after normalisation
  new, rep = PR.replace_labels(recs, table, gamma=0.7, seed=0)
  assert rep["selected"] == 7
  assert rep["replaced"] + rep["no_wrong_answer"] + rep["wrong_equals_true"] == 7
  for r_old, r in zip(recs, new):
    assert r["true_answer"] == r_old["answer"]
    if r["id"] in rep["replaced_ids"]:
      assert r["answer"] == table[r["id"]] and r["meta"]["label_replaced"]
    else:
      assert r["answer"] == r_old["answer"]
  assert rep["realised_gamma"] == rep["replaced"] / 10
  # Same seed, same choice, whatever the record order.
  _, rep2 = PR.replace_labels(recs[::-1], table, gamma=0.7, seed=0)
  assert sorted(rep2["replaced_ids"]) == sorted(rep["replaced_ids"])
  full, rep = PR.replace_labels(recs, {r["id"]: "x" for r in recs}, gamma=1.0, seed=1)
  assert rep["replaced"] == 10 and all(r["answer"] == "x" for r in full)
  assert PR.replace_labels(recs, table, gamma=0.0, seed=0)[1]["replaced"] == 0


def test_heldout_and_hash_splits():
  ids = [f"i{k}" for k in range(20)]
  train, held = PR.heldout_split(ids, seed=0, n_heldout=5)
  assert len(held) == 5 and set(train) | set(held) == set(ids) and not set(train) & set(held)
  assert PR.heldout_split(ids[::-1], seed=0, n_heldout=5)[1] == held[::-1]
  recs = [{"problem": f"problem {k}"} for k in range(200)] + [{"problem": "problem 7"}]
  kept, held = PR.hash_split(recs, 0.25)
  assert 20 < len(held) < 80 and len(kept) + len(held) == 201
  in_held = {r["problem"] for r in held}
  assert not in_held & {r["problem"] for r in kept}  # duplicates land together
