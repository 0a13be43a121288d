"""The paper's datasets (rlvr_jax/data/paper_sets.py): fixtures shaped like the real files load to
the expected problem records; GPQA options shuffle deterministically; bad rows name their file and
row; the in/out-of-domain division; `paper:NAME:PATH` entries in eval.files and data.files."""
import csv
import json
import os
import re

import ml_collections
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlvr_jax.data import paper_sets as P
from rlvr_jax.data import records as R
from rlvr_jax.data import sources as S
from rlvr_jax.data.sources import DataError

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "paper_sets")


def fx(name: str) -> str:
  return os.path.join(FIX, name)


def load(name: str, **kw) -> list[dict]:
  return P.load_paper_set(name, fx(name), **kw)


def write_jsonl(path, rows) -> str:
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


# ------------------------------------------------------------------------------ each set loads

EXPECTED = {
    "skywork_or1_math": (["skywork_or1_math-0", "skywork_or1_math-1", "skywork_or1_math-2"],
                         ["2", "\\frac{1}{2}", "8"], "math", "train"),
    "scp116k": (["scp116k-0", "scp116k-1", "scp116k-3"], ["9", "2", "10"], "science", "train"),
    "math500": (["math500-test/precalculus/807.json", "math500-test/algebra/2592.json",
                 "math500-test/counting_and_probability/190.json"],
                ["\\left( 3, \\frac{\\pi}{2} \\right)", "26000", "56"], "math", "eval"),
    "aime24": (["aime24-2024-I-1", "aime24-2024-I-2", "aime24-2024-II-4"], ["204", "25", "33"],
               "math", "eval"),
    "aime25": (["aime25-0", "aime25-1", "aime25-2"], ["70", "588", "468"], "math", "eval"),
    "amc": (["amc-0", "amc-1", "amc-2"], ["27", "36", "45"], "math", "eval"),
    "minerva": (["minerva-0", "minerva-1", "minerva-2"], ["1.6e-6", "800", "\\frac{3}{4}"],
                "math", "eval"),
    "olympiadbench": (["olympiadbench-1606", "olympiadbench-2231", "olympiadbench-2498"],
                      ["2", "2, 3", "4 \\sqrt{2}"], "math", "eval"),
    "gsm8k": (["gsm8k-0", "gsm8k-1", "gsm8k-2"], ["18", "3", "70000"], "math", "eval"),
}


def test_registry_covers_the_study():
  assert set(EXPECTED) | {"gpqa_diamond"} == set(P.PAPER_SETS)
  for name, ps in P.PAPER_SETS.items():
    assert ps.name == name and ps.role in P.ROLES and ps.domain in P.DOMAINS and ps.files
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", ps.hf_id)
  assert P.PAPER_SETS["gpqa_diamond"].domain == "science"
  assert [n for n, ps in P.PAPER_SETS.items() if ps.role == "train"] == ["skywork_or1_math",
                                                                         "scp116k"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_set_loads_its_fixture(name):
  ids, answers, domain, split = EXPECTED[name]
  records = load(name)
  assert [r["id"] for r in records] == ids
  assert [r["answer"] for r in records] == answers
  assert [r["true_answer"] for r in records] == answers
  for r in records:
    R.check_record(r)
    assert (r["domain"], r["split"], r["meta"]["source_set"]) == (domain, split, name)
    assert r["messages"] is None and r["problem"].strip()
    assert r["meta"]["where"].startswith(fx(name))
  assert load(name) == records                    # stable
  assert load(name, limit=2) == records[:2]


def test_problem_texts_and_extras():
  m5 = load("math500")
  assert m5[0]["problem"].startswith("Convert the point $(0,3)$")
  assert (m5[0]["difficulty"], m5[0]["meta"]["subject"]) == (2, "Precalculus")
  assert "\\boxed{26000}" in m5[1]["solution"]
  assert load("aime24")[1]["problem"].startswith("There exist real numbers $x$ and $y$")
  assert load("amc")[0]["problem"].startswith("Cities $A$ and $B$")
  ob = load("olympiadbench")
  assert ob[2]["problem"] == "A square has side length $4$.\n\nWhat is the length of its diagonal?"
  assert ob[0]["solution"] == "The answer is $2$ moves. ...\n\nAn alternative argument ..."
  assert ob[1]["meta"]["category"] == "Algebra"
  gsm = load("gsm8k")
  assert gsm[0]["problem"].startswith("Janet's ducks lay 16 eggs")
  assert gsm[0]["thinking"].endswith("She makes 9 * 2 = $<<9*2=18>>18.")
  assert "####" not in gsm[0]["thinking"]
  assert all("/main/" in r["meta"]["where"] for r in gsm)      # not the socratic config


def test_skywork_reads_the_math_split_through_the_verl_parsing(caplog):
  records = load("skywork_or1_math")
  assert [r["meta"]["data_source"] for r in records] == [
      "train-math-deepscaler", "train-math-numinamath1.5_olympiads", "train-math-still3"]
  assert records[0]["problem"] == "What is the remainder when $2^{10}$ is divided by 7?"
  assert all(r["system"] == "" for r in records)
  # the code split next to it is not read; the row with an empty ground-truth list is dropped
  assert all("code" not in r["meta"]["where"] for r in records)
  assert "dropped 1 of its 4 rows" in caplog.text
  files = P.set_files(P.PAPER_SETS["skywork_or1_math"], fx("skywork_or1_math"))
  assert [os.path.basename(f) for f in files] == ["math-00000-of-00001.parquet"]


def test_scp116k_takes_the_answer_from_an_agreeing_solution():
  records = {r["id"]: r for r in load("scp116k")}
  assert records["scp116k-0"]["meta"]["subject"] == "Physics"
  assert records["scp116k-1"]["answer"] == "2"       # o1's box: it agrees with the reference
  assert records["scp116k-3"]["answer"] == "10"      # r1's box (o1 disagrees)
  assert records["scp116k-1"]["solution"] == "n = m / M = 36 / 18 = 2 mol."
  assert "scp116k-2" not in records                  # no solution agrees: no answer, dropped


# ----------------------------------------------------------------------------------- GPQA


def _options(problem: str) -> dict[str, str]:
  return dict(re.findall(r"^([ABCD])\) (.*)$", problem, re.M))


def test_gpqa_multiple_choice_is_deterministic_and_the_letter_is_right():
  records = load("gpqa_diamond")
  assert [r["id"] for r in records] == ["gpqa_diamond-recj4ZG4Ok9cfMaXn",
                                        "gpqa_diamond-rec0yTRmO1oAbmTfU",
                                        "gpqa_diamond-recA1b2C3d4E5f6G7"]
  for r in records:
    R.check_record(r)
    options = _options(r["problem"])
    assert sorted(options) == ["A", "B", "C", "D"]
    assert r["answer"] in options
    assert r["problem"].endswith(P.MC_INSTRUCTION)
    assert (r["domain"], r["split"]) == ("science", "eval")
  first = records[0]
  assert first["problem"].startswith("Two quantum states with energies E1 and E2")
  assert _options(first["problem"])[first["answer"]] == "10^-4 eV"
  assert _options(records[1]["problem"])[records[1]["answer"]] == "10"      # stripped
  third = _options(records[2]["problem"])
  assert third[records[2]["answer"]] == "an origin of replication"
  assert 'a centromere, as in "yeast" chromosomes' in third.values()      # CSV quoting
  assert records[1]["meta"]["subject"] == "Chemistry"
  assert records[0]["solution"].startswith("By the uncertainty principle")
  assert load("gpqa_diamond") == records
  # the order depends on the seed and the record id only
  letters = {seed: [r["answer"] for r in load("gpqa_diamond", seed=seed)] for seed in range(12)}
  assert len({tuple(v) for v in letters.values()}) > 1
  assert {a for v in letters.values() for a in v} == set("ABCD")
  for seed in (0, 5):
    for r in load("gpqa_diamond", seed=seed):
      order = P.option_order(seed, r["id"])
      assert sorted(order) == [0, 1, 2, 3] and "ABCD"[order.index(0)] == r["answer"]


def test_multiple_choice_labels_every_option_once():
  problem, letter = P.multiple_choice("Q?", " right ", ["w1", "w2 ", "w3"], seed=3, row_id="x")
  options = _options(problem)
  assert options[letter] == "right"
  assert sorted(options.values()) == ["right", "w1", "w2", "w3"]
  assert P.multiple_choice("Q?", "right", ["w1", "w2", "w3"], seed=3, row_id="x")[1] == letter


# ------------------------------------------------------------------------------ other layouts


def test_aime25_yentinglin_parquet_and_case_variants(tmp_path):
  d = tmp_path / "aime25" / "data"
  d.mkdir(parents=True)
  pq.write_table(pa.table({"id": pa.array([0, 1], pa.int64()), "problem": ["P0", "P1"],
                           "answer": ["70", "588"], "solution": ["s0", "s1"],
                           "url": ["u0", "u1"], "year": ["2025", "2025"]}),
                 str(d / "train-00000-of-00001.parquet"))
  records = P.load_paper_set("aime25", str(tmp_path / "aime25"))
  assert [(r["id"], r["problem"], r["answer"]) for r in records] == [
      ("aime25-0", "P0", "70"), ("aime25-1", "P1", "588")]
  lower = write_jsonl(tmp_path / "aime24.jsonl", [
      {"id": "2024-I-1", "problem": "Find x.", "answer": 204, "solution": "x"}])
  assert [(r["id"], r["answer"]) for r in P.load_paper_set("aime24", lower)] == [
      ("aime24-2024-I-1", "204")]


def test_olympiadbench_parquet_lists_and_config_choice(tmp_path):
  d = tmp_path / "OlympiadBench"
  for config in ("OE_TO_physics_en_COMP", "OE_TO_maths_en_COMP"):
    (d / config).mkdir(parents=True)
    pq.write_table(pa.table({
        "id": pa.array([7], pa.int64()), "question": [f"{config} question"],
        "solution": pa.array([["step 1", "step 2"]], pa.list_(pa.string())),
        "final_answer": pa.array([["$\\frac{1}{2}$"]], pa.list_(pa.string())),
        "context": pa.array([None], pa.string()), "subject": ["Math"]}),
        str(d / config / f"{config}.parquet"))
  records = P.load_paper_set("olympiadbench", str(d))
  assert [(r["problem"], r["answer"], r["solution"]) for r in records] == [
      ("OE_TO_maths_en_COMP question", "\\frac{1}{2}", "step 1\n\nstep 2")]


def test_scp116k_json_array_and_parquet(tmp_path):
  rows = [{"domain": "Physics", "problem": "P", "matched_solution": "so \\boxed{3}",
           "o1_solution": None, "is_o1_solution_same_with_matched_solution": None}]
  (tmp_path / "scp.json").write_text(json.dumps(rows))
  got = P.load_paper_set("scp116k", str(tmp_path / "scp.json"))
  assert [(r["id"], r["answer"], r["meta"]["where"]) for r in got] == [
      ("scp116k-0", "3", f"{tmp_path / 'scp.json'}:item 0")]
  pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "scp.parquet"))
  assert P.load_paper_set("scp116k", str(tmp_path / "scp.parquet"))[0]["answer"] == "3"


# -------------------------------------------------------------------------------- bad input


def test_bad_rows_name_file_row_and_field(tmp_path):
  path = write_jsonl(tmp_path / "test.jsonl", [
      {"problem": "ok", "answer": "1", "unique_id": "a"},
      {"problem": "no answer here", "solution": "...", "unique_id": "b"}])
  with pytest.raises(DataError, match=re.escape(f"{path}:line 2: field 'answer' is missing") +
                     ".*every math500 problem needs its answer"):
    P.load_paper_set("math500", path)
  path = write_jsonl(tmp_path / "m.jsonl", [{"question": 12, "answer": "3"}])
  with pytest.raises(DataError, match=re.escape(f"{path}:line 1: field 'question' must be a "
                                                "string, got int")):
    P.load_paper_set("minerva", path)
  bad = tmp_path / "aime.parquet"
  pq.write_table(pa.table({"ID": ["a", "b"], "Problem": ["P", None], "Answer": [1, 2]}), str(bad))
  with pytest.raises(DataError, match=re.escape(f"{bad}:row 1: field 'Problem' is missing") +
                     ".*ID, Problem, Solution, Answer.*Maxwell-Jia/AIME_2024"):
    P.load_paper_set("aime24", str(bad))
  gsm = write_jsonl(tmp_path / "g.jsonl", [{"question": "Q", "answer": "no final part"}])
  with pytest.raises(DataError, match=re.escape(f"{gsm}:line 1: field 'answer' has no '####")):
    P.load_paper_set("gsm8k", gsm)
  sky = tmp_path / "math-0.parquet"
  pq.write_table(pa.Table.from_pylist([{"prompt": "just text", "reward_model": "oops"}]),
                 str(sky))
  with pytest.raises(DataError, match=re.escape(f"{sky}:row 0: field 'reward_model'")):
    P.load_paper_set("skywork_or1_math", str(sky))


def test_bad_gpqa_row_names_its_csv_line(tmp_path):
  with open(fx("gpqa_diamond/gpqa_diamond.csv"), newline="", encoding="utf-8") as f:
    cols = next(csv.reader(f))
  row = {c: "" for c in cols}
  row.update({"Question": "Q", "Correct Answer": "a", "Incorrect Answer 1": "b",
              "Incorrect Answer 2": "c", "Record ID": "recX"})
  path = tmp_path / "gpqa_diamond.csv"
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols)
    w.writeheader()
    w.writerow({**row, "Incorrect Answer 3": "d", "Record ID": "recY"})
    w.writerow(row)
  with pytest.raises(DataError, match=re.escape(f"{path}:line 3: field 'Incorrect Answer 3' is "
                                                "missing or empty") + ".*Idavidrein/gpqa"):
    P.load_paper_set("gpqa_diamond", str(tmp_path))


def test_missing_files_unknown_names_and_bad_specs(tmp_path):
  with pytest.raises(DataError, match=re.escape(f"paper set math500: {tmp_path} holds none of "
                                                "its files") + ".*hf download "
                     "HuggingFaceH4/MATH-500 --repo-type dataset"):
    P.load_paper_set("math500", str(tmp_path))
  with pytest.raises(DataError, match="no such file or directory: .*nowhere"):
    P.load_paper_set("amc", str(tmp_path / "nowhere"))
  with pytest.raises(DataError, match="unknown paper set 'math501'; known sets: skywork_or1_math"):
    P.load_paper_set("math501", str(tmp_path))
  for spec in ("paper:math500", "paper:math500:", "paper::x"):
    with pytest.raises(DataError, match="paper:NAME:PATH"):
      S.open_source(spec)
  with pytest.raises(DataError, match="unknown paper set 'nope'"):
    S.open_source("paper:nope:/x")


# ---------------------------------------------------------------------------------- division


def test_split_for_follows_the_paper():
  math = P.split_for("math")
  assert math == {"in_domain": ["math500", "aime24", "aime25", "amc", "minerva",
                                "olympiadbench"],
                  "out_of_domain": ["gpqa_diamond"]}
  science = P.split_for("SCIENCE", with_gsm8k=True)
  assert science["in_domain"] == ["gpqa_diamond"]
  assert science["out_of_domain"] == math["in_domain"] + ["gsm8k"]
  assert P.split_for("math", with_gsm8k=True)["in_domain"][-1] == "gsm8k"
  for division in (math, science):
    for name in division["in_domain"] + division["out_of_domain"]:
      assert P.PAPER_SETS[name].role == "eval"
  with pytest.raises(ValueError, match="'math' or 'science'"):
    P.split_for("graph")


def test_eval_files_spec(tmp_path, monkeypatch):
  spec = P.eval_files_spec("math", "/data/sets/")
  entries = spec.split(",")
  assert entries[0] == "math500=paper:math500:/data/sets/math500"
  assert entries[-1] == "gpqa_diamond=paper:gpqa_diamond:/data/sets/gpqa_diamond"
  assert len(entries) == 7
  assert P.eval_files_spec("science", "gs://b/sets").startswith(
      "gpqa_diamond=paper:gpqa_diamond:gs://b/sets/gpqa_diamond,math500=")
  monkeypatch.chdir(tmp_path)
  assert P.eval_files_spec("math", "rel").startswith(f"math500=paper:math500:{tmp_path}/rel/")
  with pytest.raises(ValueError, match="must not contain"):
    P.eval_files_spec("math", "/a,b")


# ---------------------------------------------------------------------------- config hooks


def test_eval_files_paper_entries_end_to_end():
  from rlvr_jax.eval import harness
  from rlvr_jax.run import paths
  config = ml_collections.ConfigDict({"eval": {
      "domains": "", "files": P.eval_files_spec("math", FIX, with_gsm8k=True), "limit": 0,
      "layout": "auto"}})
  paths.resolve_config_paths(config)            # the CLI's path pass keeps the entries intact
  assert config.eval.files == P.eval_files_spec("math", FIX, with_gsm8k=True)
  sets = harness.eval_sets_from_config(config.eval)
  division = P.split_for("math", with_gsm8k=True)
  assert list(sets) == division["in_domain"] + division["out_of_domain"]
  for name, records in sets.items():
    assert records == load(name)
  # a name of the user's choosing, a forced layout, and the eval limit
  config.eval.files = f"gpqa=paper:gpqa_diamond:{fx('gpqa_diamond')}"
  config.eval.layout, config.eval.limit = "gsm8k", 2
  sets = harness.eval_sets_from_config(config.eval)
  assert list(sets) == ["gpqa"] and sets["gpqa"] == load("gpqa_diamond")[:2]


def test_data_files_paper_entry_feeds_the_rl_pool():
  from rlvr_jax.rl import protocols as rl_protocols
  config = ml_collections.ConfigDict({"data": {
      "domains": "", "files": f"paper:skywork_or1_math:{fx('skywork_or1_math')},"
                              f"paper:scp116k:{fx('scp116k')}",
      "layout": "auto", "n_pool": 0, "pool_limit": 0, "protocol_seed": 0, "difficulty": 0}})
  pool = rl_protocols.pool_records(config)
  assert [r["id"] for r in pool] == EXPECTED["skywork_or1_math"][0] + EXPECTED["scp116k"][0]
  assert {r["domain"] for r in pool} == {"math", "science"}
  records, counts = R.load_records(S.open_source(f"paper:scp116k:{fx('scp116k')}"))
  assert counts == {"rows": 4, "kept": 3, "dropped_missing_answer": 1, "dropped_too_long": 0}
  assert records == load("scp116k")


# ------------------------------------------------------------------------------------ buckets


def test_bucket_copy_is_cached(tmp_path, monkeypatch):
  monkeypatch.setenv("RLVR_JAX_CACHE", str(tmp_path / "cache"))
  ps = P.PAPER_SETS["skywork_or1_math"]
  local = P._cached_copy(ps, fx("skywork_or1_math"))     # epath reads local paths like URLs
  assert [os.path.relpath(p, os.path.dirname(os.path.dirname(local[0]))) for p in local] == [
      os.path.join("data", "math-00000-of-00001.parquet")]
  assert local[0].startswith(str(tmp_path / "cache" / "paper_sets"))
  before = os.stat(local[0]).st_mtime_ns
  assert P._cached_copy(ps, fx("skywork_or1_math")) == local
  assert os.stat(local[0]).st_mtime_ns == before
  strip = lambda rs: [{**r, "meta": {**r["meta"], "where": ""}} for r in rs]
  assert strip(P.load_paper_set("skywork_or1_math", local[0])) == strip(load("skywork_or1_math"))
  calls = []
  monkeypatch.setattr(P, "_cached_copy", lambda ps, url: calls.append(url) or local)
  assert P.set_files(ps, "gs://bucket/sets/skywork_or1_math") == local
  assert calls == ["gs://bucket/sets/skywork_or1_math"]
