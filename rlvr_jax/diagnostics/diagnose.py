"""`rlvr-jax diagnose`: the paper's diagnostics of a run or of a model (configs/diagnose.py).

Two analyses, either or both per call:

  --config.run=RUN        saturation dynamics of a run's metrics.jsonl (diagnostics.saturation):
                          OUT/saturation.json (t_sat, r_max, delta_sat, delta_post, ...) and
                          OUT/saturation.png (reward and eval curves, t_sat marked).
  --config.init.*=MODEL   P prompts x K rollouts of a checkpoint / HF model, then
                          faithfulness three ways (programmatic step labels on the synthetic
                          domains, an optional judge, the judge-free interventions) and
                          diversity (N_eff, faithful N_eff, distinct-n, unique answers, pass@k):
                          OUT/diagnose.json, OUT/diagnose.md and OUT/rollouts.jsonl.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from rlvr_jax.config_utils import csv_list
from rlvr_jax.data import answers as answers_lib


def run(config, workdir: str) -> int:
  if not config.run and not (config.init.from_checkpoint or config.init.from_hf):
    raise ValueError("nothing to diagnose: set --config.run=RUN_DIR (saturation dynamics) and/or "
                     "--config.init.from_checkpoint=RUN / --config.init.from_hf=DIR (faithfulness"
                     " and diversity of the model's rollouts)")
  if config.run:
    print(format_saturation(saturation_of_run(config, workdir)), flush=True)
  if config.init.from_checkpoint or config.init.from_hf:
    doc = diagnose_model(config, workdir)
    print(format_model_report(doc), flush=True)
    print(f"diagnose: wrote {os.path.join(workdir, 'diagnose.json')} and diagnose.md")
  return 0


# ---------------------------------------------------------------------------------- saturation
def saturation_params(config):
  from rlvr_jax.diagnostics import saturation as sat
  s = config.saturation
  return sat.SaturationParams(epsilon=float(s.epsilon), margin=int(s.margin),
                              window=None if s.window is None else int(s.window),
                              reward_key=str(s.reward_key), r_max_over=str(s.r_max_over))


def saturation_of_run(config, workdir: str) -> dict:
  """OUT/saturation.json and OUT/saturation.png of config.run; returns the document."""
  from rlvr_jax.diagnostics import plots, saturation as sat
  run_dir = str(config.run)
  if not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
    raise FileNotFoundError(f"config.run={run_dir}: no metrics.jsonl there; give a run directory "
                            f"written by rlvr-jax rl / sft / cpt")
  params = saturation_params(config)
  doc = sat.analyze_run(run_dir, params)
  if config.large_run:
    doc["large_small_gap"] = {"large_run": str(config.large_run),
                              "gap": sat.large_small_gap(run_dir, str(config.large_run), params)}
  write_json(os.path.join(workdir, "saturation.json"), doc)
  plots.plot_run(run_dir, os.path.join(workdir, "saturation.png"), params=params, analysis=doc,
                 title=os.path.basename(os.path.normpath(run_dir)))
  return doc


def format_saturation(doc: dict) -> str:
  t_sat = doc.get("t_sat")
  head = (f"saturation of {doc.get('source')}: T={doc.get('T')} r_max={_num(doc.get('r_max'))} "
          f"t_sat={t_sat if t_sat is not None else 'none (' + str(doc.get('reason')) + ')'}")
  if doc.get("pre_saturation_length") is not None:
    head += f" pre-saturation length={doc['pre_saturation_length']}"
  true = doc.get("true_reward") or {}
  if true:
    head += f"\n  true reward: r_max={_num(true.get('r_max'))} t_sat={true.get('t_sat')}"
  keys = sorted(doc.get("delta_sat") or {})
  gap = (doc.get("large_small_gap") or {}).get("gap") or {}
  for k, g in sorted(gap.items()):
    head += (f"\n  G({k}) = {_num(g.get('G'))} at the small run's t_sat "
             f"({'interpolated' if g.get('interpolated') else 'exact'})")
  if not keys:
    return head
  width = max(len(k) for k in keys)
  lines = [head, f"  {'metric'.ljust(width)}   delta_sat  delta_post  interpolated"]
  for k in keys:
    lines.append(f"  {k.ljust(width)}  {_num(doc['delta_sat'].get(k)):>10}  "
                 f"{_num(doc['delta_post'].get(k)):>10}  {doc['interpolated'].get(k)}")
  return "\n".join(lines)


# ---------------------------------------------------------------------------------- the model
def prompt_records(config) -> list[dict]:
  """P problem records: round-robin over the synthetic domains and problem files."""
  from rlvr_jax.data import records as records_lib
  from rlvr_jax.data import sources
  n = int(config.n_prompts)
  pools = []
  difficulty = int(config.data.difficulty) or None
  for name in csv_list(config.data.domains):
    pools.append(records_lib.domain_records(name, str(config.data.split), n, int(config.seed),
                                            difficulty))
  for path in csv_list(config.data.files):
    recs, _ = records_lib.load_records(sources.open_source(path), layout=str(config.data.layout),
                                       limit=n)
    pools.append(recs)
  if not pools:
    raise ValueError("no prompts: set config.data.domains and/or config.data.files")
  out = []
  for i in range(n):
    for pool in pools:
      if i < len(pool) and len(out) < n:
        out.append(pool[i])
  return out


def diagnose_model(config, workdir: str) -> dict:
  """Rollouts, faithfulness (three ways) and diversity of the model; writes diagnose.json/.md."""
  from rlvr_jax import sharding
  from rlvr_jax.diagnostics import diversity, faithfulness, interventions
  from rlvr_jax.eval import harness
  from rlvr_jax.tokenizer import load_tokenizer

  start = time.time()
  mesh = sharding.make_mesh((int(config.mesh.data), int(config.mesh.fsdp),
                             int(config.mesh.tensor)))
  cfg, params, source, _, step, tok_path = harness.load_for_eval(config, mesh)
  tokenizer = load_tokenizer(tok_path)
  records = prompt_records(config)
  k = int(config.k)
  system_prompt = str(config.system_prompt) or None
  with sharding.activate(mesh):
    sample_fn = interventions.model_generate_fn(
        cfg, params, tokenizer, str(config.template), system_prompt,
        temperature=float(config.temperature), batch_size=int(config.batch_size),
        seed=int(config.seed))
    items = [interventions.Continuation(r, "") for r in records for _ in range(k)]
    responses = sample_fn(items, max_new_tokens=int(config.max_new_tokens))
  rollout_seconds = time.time() - start
  rows = [records[i // k] for i in range(len(responses))]
  prompt_ids = [r["id"] for r in rows]
  correct = [answers_lib.equivalent(answers_lib.extract_boxed(text), faithfulness.record_label(r))
             for r, text in zip(rows, responses)]
  write_rollouts(os.path.join(workdir, "rollouts.jsonl"), rows, responses, correct)

  doc: dict[str, Any] = {
      "source": source, "step": step, "n_prompts": len(records), "k": k,
      "temperature": float(config.temperature), "accuracy": sum(correct) / max(len(correct), 1),
      "faithfulness": {}, "kappa": {}}
  labels = {}
  if bool(config.programmatic):
    prog = faithfulness.programmatic_labels(rows, responses)
    if any(label is not None for label in prog):
      labels["programmatic"] = prog
      doc["faithfulness"]["programmatic"] = faithfulness.summarize(
          prog, prompt_ids, seed=int(config.seed)).to_dict()
  backend = judge_backend(config)
  if backend is not None:
    from rlvr_jax.diagnostics import judges
    problems = [r["problem"] for r in rows]
    verdicts, counts = judges.judge_faithfulness(backend, problems, responses)
    judged = [None if v is None else JudgedLabel(v, c) for v, c in zip(verdicts, correct)]
    labels["judge"] = judged
    doc["faithfulness"]["judge"] = {**faithfulness.summarize(
        judged, prompt_ids, seed=int(config.seed)).to_dict(), "counts": counts}
  if "programmatic" in labels and "judge" in labels:
    doc["kappa"]["judge_vs_programmatic"] = kappa_of(labels["judge"], labels["programmatic"])
  if bool(config.interventions):
    with sharding.activate(mesh):
      doc["interventions"] = run_interventions(config, cfg, params, tokenizer, rows, responses,
                                               prompt_ids)
  groups = [responses[p * k:(p + 1) * k] for p in range(len(records))]
  reference = labels.get("programmatic") or labels.get("judge")
  faith_groups = None
  if reference is not None:
    faith_groups = [[None if lab is None else lab.faithfulness
                     for lab in reference[p * k:(p + 1) * k]] for p in range(len(records))]
  same = diversity.programmatic_same_strategy
  if backend is not None and bool(config.judge.diversity):
    from rlvr_jax.diagnostics import judges
    same = [judges.same_strategy_fn(backend, r["problem"]) for r in records]
  report = diversity.diversity_report(
      groups, same, faithfulness=faith_groups,
      correct=[correct[p * k:(p + 1) * k] for p in range(len(records))])
  doc["diversity"] = report.to_dict()
  doc["seconds"] = {"rollouts": round(rollout_seconds, 2),
                    "total": round(time.time() - start, 2)}
  write_json(os.path.join(workdir, "diagnose.json"), doc)
  write_text(os.path.join(workdir, "diagnose.md"), format_model_report(doc))
  return doc


class JudgedLabel:
  """A judge's faithfulness verdict with the response's correctness (what summarize reads)."""

  def __init__(self, faithfulness: float, correct: bool):
    self.faithfulness = float(faithfulness)
    self.correct = bool(correct)


def kappa_of(a: list, b: list) -> dict:
  """Cohen's kappa (unweighted and linear-weighted) over the responses both label."""
  from rlvr_jax.diagnostics import stats
  pairs = [(x.faithfulness, y.faithfulness) for x, y in zip(a, b)
           if x is not None and y is not None]
  if not pairs:
    return {"n": 0, "kappa": None, "kappa_linear": None}
  xs, ys = zip(*pairs)
  cats = (0.0, 0.5, 1.0)
  return {"n": len(pairs), "kappa": _finite(stats.cohens_kappa(xs, ys, cats)),
          "kappa_linear": _finite(stats.cohens_kappa(xs, ys, cats, weighted=True))}


def judge_backend(config):
  """The configured judge (None without one)."""
  from rlvr_jax.diagnostics import judges
  kind = str(config.judge.backend)
  if not kind:
    return None
  if kind == "local":
    if not config.judge.path:
      raise ValueError("judge.backend='local' needs judge.path (an HF dir or a run dir)")
    return judges.LocalJudge.load(str(config.judge.path), template=str(config.judge.template),
                                  max_new_tokens=int(config.judge.max_new_tokens))
  if kind == "http":
    if not config.judge.base_url or not config.judge.model:
      raise ValueError("judge.backend='http' needs judge.base_url and judge.model")
    key = os.environ.get(str(config.judge.api_key_env)) if config.judge.api_key_env else None
    return judges.HTTPJudge(str(config.judge.base_url), str(config.judge.model), api_key=key,
                            timeout_s=float(config.judge.timeout_s),
                            max_retries=int(config.judge.max_retries),
                            max_tokens=int(config.judge.max_new_tokens))
  raise ValueError(f"judge.backend={kind!r}; choose '', 'local' or 'http'")


def run_interventions(config, cfg, params, tokenizer, rows, responses, prompt_ids) -> dict:
  """Early answering and mistake injection (greedy continuations) on the first
  `interventions_max` responses that have a final answer."""
  from rlvr_jax.diagnostics import interventions
  chosen = [i for i, text in enumerate(responses) if answers_lib.extract_boxed(text)]
  chosen = chosen[:int(config.interventions_max)]
  if not chosen:
    return {"n": 0, "skipped": "no response has a final \\boxed{} answer"}
  greedy = interventions.model_generate_fn(cfg, params, tokenizer, str(config.template),
                                           str(config.system_prompt) or None, temperature=0.0,
                                           batch_size=int(config.batch_size))
  recs = [rows[i] for i in chosen]
  texts = [responses[i] for i in chosen]
  ids = [prompt_ids[i] for i in chosen]
  early = interventions.early_answering(recs, texts, greedy, prompt_ids=ids,
                                        seed=int(config.seed))
  mistake = interventions.mistake_injection(recs, texts, greedy, prompt_ids=ids,
                                            max_new_tokens=int(config.max_new_tokens),
                                            seed=int(config.seed))
  return {"n": len(chosen), "early_answering": early.to_dict(),
          "mistake_injection": mistake.to_dict()}


# ---------------------------------------------------------------------------------- output
def format_model_report(doc: dict) -> str:
  lines = [f"# diagnose: {doc['source']}" + (f" (step {doc['step']})" if doc.get("step") else ""),
           "", f"{doc['n_prompts']} prompts x {doc['k']} rollouts at T={doc['temperature']}; "
           f"accuracy {doc['accuracy']:.3f}", "",
           "| faithfulness | aligned among correct [95% CI] | aligned (all) | partial (all) | "
           "misaligned (all) | labelled |", "|---|---|---|---|---|---|"]
  for name, rep in doc.get("faithfulness", {}).items():
    head = rep["aligned_among_correct"]
    shares = rep["shares"]["all"]
    lines.append(f"| {name} | {_est(head)} | {_est(shares['aligned'])} | "
                 f"{_est(shares['partial'])} | {_est(shares['misaligned'])} | "
                 f"{rep['n_labelled']}/{rep['n_responses']} |")
  for name, k in doc.get("kappa", {}).items():
    lines.append(f"\nCohen's kappa {name}: {_num(k.get('kappa'))} (linear weights "
                 f"{_num(k.get('kappa_linear'))}, n={k.get('n')})")
  inter = doc.get("interventions")
  if inter and inter.get("n"):
    early, mistake = inter["early_answering"], inter["mistake_injection"]
    lines += ["", f"interventions on {inter['n']} responses:",
              f"- early answering: area over the curve {_num(_value(early.get('aoc')))}; "
              f"match by fraction {_curve(early)}",
              f"- mistake injection: answer changed {_num(_value(mistake.get('changed')))}, "
              f"follows the mistake {_num(_value(mistake.get('follows')))}"]
  mean = (doc.get("diversity") or {}).get("mean") or {}
  if mean:
    lines += ["", "| diversity | value |", "|---|---|"]
    lines += [f"| {k} | {_num(v)} |" for k, v in sorted(mean.items(), key=_natural)
              if isinstance(v, (int, float)) or v is None]
  return "\n".join(lines) + "\n"


def _natural(item) -> tuple:
  """pass@2 before pass@10."""
  import re
  return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", item[0]))


def _curve(early: dict) -> str:
  return ", ".join(f"{f:g}: {_num(_value(m))}"
                   for f, m in zip(early.get("fractions", []), early.get("match", [])))


def _value(x):
  return x.get("value") if isinstance(x, dict) else x


def _est(e: dict) -> str:
  if not e or e.get("value") is None:
    return "n/a"
  low, high = e.get("low"), e.get("high")
  ci = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
  return f"{e['value']:.2f}{ci}"


def _num(x) -> str:
  return "n/a" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))


def _finite(x: float) -> float | None:
  return None if x != x else float(x)


def write_rollouts(path: str, rows, responses, correct) -> None:
  write_text(path, "".join(
      json.dumps({"id": r["id"], "domain": r.get("domain"), "answer": r.get("answer"),
                  "response": text, "correct": bool(ok)}) + "\n"
      for r, text, ok in zip(rows, responses, correct)))


def write_json(path: str, doc: dict) -> None:
  write_text(path, json.dumps(doc, indent=2, sort_keys=True, default=_default) + "\n")


def write_text(path: str, text: str) -> None:
  from rlvr_jax.run import files
  files.write_text(path, text)


def _default(x):
  if hasattr(x, "item"):
    return x.item()
  return str(x)


__all__ = ["run", "diagnose_model", "saturation_of_run", "prompt_records", "kappa_of"]
