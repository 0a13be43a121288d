"""Evaluation: pass@k / avg@k / maj@k against independent references, and the harness end to end
(canned responses of known correctness through a stand-in sampler; a tiny random model through
`rlvr-jax eval` on a run checkpoint)."""
import itertools
import json
import math
import os
import sys
from fractions import Fraction
from types import SimpleNamespace

import jax
import numpy as np
import pytest

import rlvr_jax as rj
from rlvr_jax import sampling
from rlvr_jax.data.domains import all_corpus_text
from rlvr_jax.data.records import domain_records
from rlvr_jax.eval import harness
from rlvr_jax.eval import metrics as M
from rlvr_jax.tokenizer import DEFAULT_SYSTEM_PROMPT, load_tokenizer, train_sentencepiece


# ---------------------------------------------------------------------------------- pass@k
def brute_pass_at_k(n, c, k):
  """Fraction of the k-subsets of n samples (the first c correct) holding a correct sample."""
  subsets = list(itertools.combinations(range(n), k))
  hits = sum(any(i < c for i in s) for s in subsets)
  return hits / len(subsets)


def test_pass_at_k_matches_brute_force_enumeration():
  for n in range(1, 8):
    for c in range(0, n + 1):
      for k in range(1, n + 1):
        assert M.pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_edge_cases():
  assert M.pass_at_k(16, 0, 1) == 0.0
  assert M.pass_at_k(16, 0, 16) == 0.0
  assert M.pass_at_k(16, 16, 1) == 1.0
  assert M.pass_at_k(16, 1, 16) == 1.0           # k = n: any correct sample is drawn
  assert M.pass_at_k(16, 4, 1) == pytest.approx(4 / 16)
  assert M.pass_at_k(5, 3, 3) == 1.0             # c > n - k


def test_pass_at_k_large_n_is_exact():
  for n, c, k in [(1000, 5, 16), (500, 1, 64), (2048, 100, 256), (300, 17, 3)]:
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert M.pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)


@pytest.mark.parametrize("args", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5), (4.0, 2, 1)])
def test_pass_at_k_rejects_bad_arguments(args):
  with pytest.raises(ValueError):
    M.pass_at_k(*args)


def test_summarize_and_avg_at_k():
  correct = np.array([[1, 0, 0, 0], [1, 1, 0, 1]], bool)
  out = M.summarize(correct, ks=(1, 2, 8))
  assert set(out) == {"avg@4", "pass@1", "pass@2"}
  assert out["avg@4"] == pytest.approx((1 / 4 + 3 / 4) / 2)
  assert out["pass@2"] == pytest.approx((0.5 + 1.0) / 2)      # 1 - C(3,2)/C(4,2) = 1/2; c=3 -> 1
  assert M.avg_at_k([1, 0, 1, 1], 2) == 0.5
  assert M.avg_at_k([True, False, True, True]) == 0.75
  with pytest.raises(ValueError):
    M.avg_at_k([1, 0], 3)


# ---------------------------------------------------------------------------------- maj@k
def test_maj_at_k_hand_cases():
  assert M.maj_at_k(["1", "2", "2"], "2") == 1.0
  assert M.maj_at_k(["1", "2", "2"], "1") == 0.0
  assert M.maj_at_k(["1", "2", "2"], "1", k=1) == 1.0        # only the first sample votes
  # normalisation: 0.5, 1/2 and \frac{1}{2} are one answer (3 votes) against "3" (2 votes)
  assert M.maj_at_k(["3", "0.5", "1/2", "3", "\\frac{1}{2}"], "1/2") == 1.0
  # ties go to the answer seen first
  assert M.majority_vote(["4", "3", "3", "4"]) == ("4", 0)
  assert M.maj_at_k(["4", "3", "3", "4"], "3") == 0.0
  # samples without an answer do not vote
  assert M.majority_vote([None, None, "7"]) == ("7", 2)
  assert M.maj_at_k([None, "", None], "7") == 0.0
  assert M.majority_vote([None, None]) == (None, None)


def test_check_ks():
  assert M.check_ks((16, 1, 4, 8, 4), 8) == (1, 4, 8)
  with pytest.raises(ValueError):
    M.check_ks((0, 2), 8)
  with pytest.raises(ValueError):
    M.check_ks((1,), 0)


# ---------------------------------------------------------------------------------- harness (stand-in sampler)
@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  path = train_sentencepiece([all_corpus_text(0, 30)], tmp_path_factory.mktemp("sp") / "tok", 400)
  return load_tokenizer(path)


@pytest.fixture(scope="module")
def records():
  return domain_records("arith", "eval", 5, seed=0)


K = 4
MAX_NEW = 48


def canned(records):
  """Per record: K sampled texts (correct counts 0, 1, 2, 4, 3) and a greedy text (correct for
  even prompts). Prompt 0's last sample is a ramble that never stops (clipped)."""
  out = {}
  for p, r in enumerate(records):
    a = int(r["answer"])
    box = lambda x: f"Step 1: I think.\nSo the answer is \\boxed{{{x}}}."
    right, w1, w2 = box(a), box(a + 1), box(a + 2)
    samples = [
        ["I do not know.", w1, w2, "la " * 200],
        [w1, right, w1, w2],
        [w1, right, right, w1],
        [right, right, right, right],
        [right, box(f"{a}.0"), w1, right],
    ][p]
    out[r["problem"]] = {"samples": samples, "greedy": right if p % 2 == 0 else w1}
  return out


class FakeSampler:
  """Stands in for sampling.generate: finds each prompt's problem in its decoded text and returns
  the canned responses + the stop id, padded; records every call."""

  def __init__(self, tok, table):
    self.tok, self.table, self.calls = tok, table, []

  def __call__(self, cfg, params, prompts, prompt_lengths, key, *, max_new_tokens, temperature,
               top_k, top_p, num_samples, eos_id, pad_id, **kw):
    self.calls.append(dict(batch=prompts.shape[0], num_samples=num_samples,
                           temperature=temperature, eos_id=tuple(eos_id), pad_id=pad_id,
                           max_new_tokens=max_new_tokens))
    stop = eos_id[0]
    rows, lengths = [], []
    for i in range(prompts.shape[0]):
      text = self.tok.decode(prompts[i, :prompt_lengths[i]])
      entry = next(v for prob, v in self.table.items() if prob in text)
      texts = [entry["greedy"]] if temperature == 0 else entry["samples"]
      assert len(texts) == num_samples
      for t in texts:
        ids = (self.tok.encode(t) + [stop])[:max_new_tokens]
        lengths.append(len(ids))
        rows.append(ids + [pad_id] * (max_new_tokens - len(ids)))
    return SimpleNamespace(tokens=np.array(rows, np.int32), lengths=np.array(lengths, np.int32))


CFG = rj.get_model_config("toy-1m", vocab_size=512, num_layers=1, hidden_size=32,
                          intermediate_size=64, num_heads=2, num_kv_heads=1, head_dim=16,
                          max_seq_len=512)

# Hand-computed from the canned table: correct counts c = [0, 1, 2, 4, 3] of K = 4.
EXPECTED = {
    "avg@4": 10 / 20,
    "pass@1": 10 / 20,
    "pass@2": (0 + (1 - 3 / 6) + (1 - 1 / 6) + 1 + 1) / 5,   # 1 - C(4-c, 2)/C(4, 2)
    "pass@4": 4 / 5,
    "maj@4": 2 / 5,       # p0 tie -> first wrong; p1 wrong; p2 tie -> wrong; p3, p4 right
    "greedy_acc": 3 / 5,
    "clip_frac": 1 / 20,
}


def expected_length_mean(tok, records):
  lengths = []
  for entry in canned(records).values():
    for t in entry["samples"]:
      lengths.append(min(len(tok.encode(t)) + 1, MAX_NEW))
  return float(np.mean(lengths))


@pytest.mark.parametrize("batch_size", [2, 8])
def test_harness_metrics_equal_hand_computed_values(tok, records, monkeypatch, batch_size):
  fake = FakeSampler(tok, canned(records))
  monkeypatch.setattr(sampling, "generate", fake)
  metrics, rows = harness.evaluate(CFG, None, tok, {"arith_eval": records}, k=K, ks=(1, 2, 4, 8),
                                   max_new_tokens=MAX_NEW, template="toy", batch_size=batch_size,
                                   key=jax.random.key(0))
  expected = {f"eval/arith_eval/{k}": v for k, v in EXPECTED.items()}
  expected["eval/arith_eval/length_mean"] = expected_length_mean(tok, records)
  assert set(metrics) == set(expected)                 # pass@8 > k is not reported
  for key, value in expected.items():
    assert metrics[key] == pytest.approx(value, abs=1e-9), key
  # one batch shape for every call (last partial batch padded), k samples then a greedy pass
  n_batches = math.ceil(5 / batch_size)
  assert [c["batch"] for c in fake.calls] == [batch_size] * (2 * n_batches)
  assert [c["num_samples"] for c in fake.calls] == [K] * n_batches + [1] * n_batches
  assert [c["temperature"] for c in fake.calls] == [1.0] * n_batches + [0.0] * n_batches
  assert fake.calls[0]["eos_id"] == (tok.chat_stop_id("toy"), tok.eos_id)
  assert fake.calls[0]["pad_id"] == tok.pad_id and fake.calls[0]["max_new_tokens"] == MAX_NEW
  # padding rows are dropped: exactly 5 * K sampled rows and 5 greedy rows
  assert len(rows["arith_eval"]) == 5 * K + 5


def test_prompts_are_the_chat_prompts(tok, records, monkeypatch):
  fake = FakeSampler(tok, canned(records))
  seen = []

  def spy(cfg, params, prompts, prompt_lengths, key, **kw):
    seen.extend(prompts[i, :prompt_lengths[i]].tolist() for i in range(prompts.shape[0]))
    return fake(cfg, params, prompts, prompt_lengths, key, **kw)

  monkeypatch.setattr(sampling, "generate", spy)
  harness.evaluate(CFG, None, tok, {"a": records[:2]}, k=K, ks=(1,), max_new_tokens=MAX_NEW,
                   template="toy", batch_size=2, greedy=False)
  want = [tok.encode_chat([{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                           {"role": "user", "content": r["problem"]}], template="toy")
          for r in records[:2]]
  assert seen == want


def test_make_eval_fn_writes_jsonl(tok, records, monkeypatch, tmp_path):
  table = canned(records)
  monkeypatch.setattr(sampling, "generate", FakeSampler(tok, table))
  eval_fn = harness.make_eval_fn(CFG, tok, {"arith_eval": records}, workdir=str(tmp_path), k=K,
                                 ks=(1, 2, 4), max_new_tokens=MAX_NEW, template="toy",
                                 batch_size=2)
  metrics = eval_fn(None, 7)
  assert metrics["eval/arith_eval/avg@4"] == pytest.approx(0.5)
  assert metrics["eval/arith_eval/pass@4"] == pytest.approx(0.8)
  path = tmp_path / "eval" / "7" / "arith_eval.jsonl"
  assert sorted(os.listdir(path.parent)) == ["arith_eval.jsonl"]     # no temp file left
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  assert len(rows) == 5 * K + 5
  sampled = [r for r in rows if r["mode"] == "sample"]
  greedy = [r for r in rows if r["mode"] == "greedy"]
  for p, rec in enumerate(records):
    texts = table[rec["problem"]]["samples"]
    mine = [r for r in sampled if r["prompt_index"] == p]
    assert [r["sample"] for r in mine] == list(range(K))
    for r, text in zip(mine, texts):
      assert r["prompt_id"] == rec["id"] and r["label"] == rec["answer"]
      assert r["set"] == "arith_eval"
      if r["finished"]:
        assert r["response"] == text
        assert r["length"] == len(tok.encode(text)) + 1
      else:                                              # the clipped ramble
        assert text.startswith("la ") and r["length"] == MAX_NEW
      box = text.rsplit("\\boxed{", 1)[-1].split("}")[0] if "\\boxed{" in text else None
      assert r["extracted"] == box
      assert r["correct"] == (box is not None and float(box) == float(rec["answer"]))
    g = next(r for r in greedy if r["prompt_index"] == p)
    assert g["correct"] == (p % 2 == 0) and g["sample"] == 0
  assert sum(r["correct"] for r in sampled) == 10
  # a second evaluation with the same params gives the same numbers
  assert eval_fn(None, 8) == metrics


def test_bad_input_fails_early(tok, records, monkeypatch):
  def boom(*a, **kw):
    raise AssertionError("the sampler must not be reached")

  monkeypatch.setattr(sampling, "generate", boom)
  kw = dict(k=2, ks=(1,), max_new_tokens=8, template="toy", batch_size=2)
  with pytest.raises(ValueError, match="record 1.*no 'problem'"):
    harness.evaluate(CFG, None, tok, {"s": [records[0], {"answer": "3"}]}, **kw)
  with pytest.raises(ValueError, match="no 'answer'"):
    harness.evaluate(CFG, None, tok, {"s": [{"problem": "2+2?"}]}, **kw)
  with pytest.raises(ValueError, match="is empty"):
    harness.evaluate(CFG, None, tok, {"s": []}, **kw)
  with pytest.raises(ValueError, match=records[0]["id"]):
    harness.evaluate(CFG.replace(max_seq_len=64), None, tok, {"s": records[:1]}, **kw)
  with pytest.raises(ValueError, match="set name"):
    harness.evaluate(CFG, None, tok, {"a/b": records}, **kw)
  with pytest.raises(ValueError, match="batch_size"):
    harness.evaluate(CFG, None, tok, {"s": records}, **{**kw, "batch_size": 0})
  with pytest.raises(ValueError, match="ks"):
    harness.evaluate(CFG, None, tok, {"s": records}, **{**kw, "ks": (0,)})


def test_format_table():
  text = harness.format_table({"eval/a/avg@4": 0.5, "eval/a/length_mean": 12.25,
                               "eval/bb/avg@4": 1.0, "train/loss": 3.0})
  lines = text.splitlines()
  assert lines[0].split() == ["set", "avg@4", "length_mean"]
  assert lines[1].split() == ["a", "0.5000", "12.2"] and lines[2].split() == ["bb", "1.0000", "-"]


# ---------------------------------------------------------------------------------- the command
def test_eval_command_on_a_run_checkpoint(tok, tmp_path, capsys, monkeypatch):
  """`rlvr-jax eval` on a run checkpoint of a tiny random model (real sampler, 8 CPU devices):
  files and keys, and the greedy responses equal a direct rj.generate greedy call."""
  from rlvr_jax import cli
  from rlvr_jax.model import transformer as T
  from rlvr_jax.train import checkpoints

  params = jax.jit(T.init_params_fn(CFG))(jax.random.key(3))
  run_dir = tmp_path / "run"
  checkpoints.write_config_json(str(run_dir), {"data": {"tokenizer": str(tok.path)}}, CFG)
  ckpts = checkpoints.RunCheckpoints(str(run_dir), keep=2, keep_best=0, async_save=False)
  ckpts.save(5, {"params": params, "step": np.int32(5)})
  ckpts.close()

  out_dir = tmp_path / "eval_out"
  config = os.path.join(os.path.dirname(__file__), "..", "configs", "toy", "eval.py")
  argv = ["rlvr-jax", "eval", f"--config={config}", f"--workdir={out_dir}",
          f"--config.init.from_checkpoint={run_dir}:5", "--config.eval.n=3",
          "--config.eval.splits=eval", "--config.eval.k=2", "--config.eval.ks=(1,2)",
          "--config.eval.max_new_tokens=6", "--config.eval.batch_size=8"]
  # ml_collections reads --config.* overrides from sys.argv (cli does not pass sys_argv=argv)
  monkeypatch.setattr(sys, "argv", argv)
  # cli.main points the compile cache at RLVR_JAX_COMPILE_CACHE: keep the test session's
  monkeypatch.setenv("RLVR_JAX_COMPILE_CACHE", jax.config.jax_compilation_cache_dir or "")
  rc = cli.main(argv)
  assert rc == 0
  assert "arith_eval" in capsys.readouterr().out
  doc = json.loads((out_dir / "eval_metrics.json").read_text())
  assert doc["step"] == 5 and doc["tag"] == "5"
  keys = {f"eval/arith_eval/{m}" for m in
          ("avg@2", "pass@1", "pass@2", "maj@2", "greedy_acc", "length_mean", "clip_frac")}
  assert set(doc["metrics"]) == keys
  for k in keys - {"eval/arith_eval/length_mean"}:
    assert 0.0 <= doc["metrics"][k] <= 1.0
  assert 1.0 <= doc["metrics"]["eval/arith_eval/length_mean"] <= 6.0
  logged = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
  assert len(logged) == 1 and logged[0]["step"] == 5
  assert logged[0]["eval/arith_eval/pass@2"] == doc["metrics"]["eval/arith_eval/pass@2"]
  assert list((out_dir / "tensorboard").glob("events.out.tfevents.*"))     # the run loop's writer
  rows = [json.loads(line) for line in
          (out_dir / "eval" / "5" / "arith_eval.jsonl").read_text().splitlines()]
  assert len(rows) == 3 * 2 + 3
  assert all(1 <= r["length"] <= 6 for r in rows)

  # independent path: the chat prompts + one rj.generate greedy call on the original params
  recs = domain_records("arith", "eval", 3, seed=0)
  prompts = [tok.encode_chat([{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                              {"role": "user", "content": rec["problem"]}], template="toy")
             for rec in recs]
  width = max(map(len, prompts))
  block = np.array([p + [tok.pad_id] * (width - len(p)) for p in prompts], np.int32)
  out = rj.generate(CFG, params, block, np.array([len(p) for p in prompts], np.int32),
                    jax.random.key(0), max_new_tokens=6, temperature=0.0,
                    eos_id=(tok.chat_stop_id("toy"), tok.eos_id), pad_id=tok.pad_id)
  for p, rec in enumerate(recs):
    n = int(out.lengths[p])
    g = next(r for r in rows if r["mode"] == "greedy" and r["prompt_index"] == p)
    assert g["length"] == n
    assert g["response"] == tok.decode(np.asarray(out.tokens[p, :n]))
    assert g["prompt_id"] == rec["id"]


def toy_eval_config():
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "toy_eval_config", os.path.join(os.path.dirname(__file__), "..", "configs", "toy", "eval.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def test_eval_sets_from_config(tmp_path):
  config = toy_eval_config()
  config.eval.n = 3
  path = tmp_path / "mine.jsonl"
  path.write_text("\n".join(json.dumps({"id": f"q{i}", "question": f"What is {i}+1?",
                                        "answer": str(i + 1)}) for i in range(4)) + "\n")
  config.eval.files = f"{path},other={path}"
  config.eval.limit = 2
  sets = harness.eval_sets_from_config(config.eval)
  assert list(sets) == ["arith_eval", "arith_ood", "mine", "other"]
  assert [r["id"] for r in sets["arith_ood"]] == [r["id"] for r in
                                                  domain_records("arith", "ood", 3, seed=0)]
  assert [(r["problem"], r["answer"]) for r in sets["mine"]] == [("What is 0+1?", "1"),
                                                                 ("What is 1+1?", "2")]
  opts = harness.options_from_config(config.eval)
  assert (opts.k, opts.ks, opts.template, opts.system_prompt) == (16, (1, 4, 8, 16), "toy",
                                                                  "default")
  config.eval.domains, config.eval.files = "", ""
  with pytest.raises(ValueError, match="no eval sets"):
    harness.eval_sets_from_config(config.eval)


def test_eval_command_needs_one_source(tmp_path):
  config = toy_eval_config()
  config.mesh.data = -1
  config.eval.batch_size = 8
  with pytest.raises(ValueError, match="exactly one"):
    harness.run(config, str(tmp_path))
  config.init.from_checkpoint = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="missing"):
    harness.run(config, str(tmp_path))
