"""The `rlvr-jax rl` loop (rlvr_jax.rl.loop) and the model-aware data protocols (rl.protocols):
an end-to-end run that writes metrics.jsonl with the RL keys and resumes, the protocol chain
with a stubbed sampler, and bad configs failing before anything compiles."""
import importlib.util
import json
import os

import jax
import numpy as np
import pytest

import rlvr_jax as rj
from rlvr_jax.data import protocols as data_protocols
from rlvr_jax.rl import loop as rl_loop
from rlvr_jax.rl import protocols as rl_protocols
from rlvr_jax.run import loop as run_loop
from rlvr_jax.run.errors import EXIT_PREEMPTED, ResumeMismatchError
from rlvr_jax.train import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RL_KEYS = ("reward/mean", "reward/true_mean", "reward/agreement", "reward/zero_var_frac",
           "response/length_mean", "policy/clip_frac", "policy/entropy", "policy/kl",
           "grad_norm", "loss", "lr")
PERF_KEYS = ("perf/sample_s", "perf/reward_s", "perf/update_s", "perf/samples_per_sec")


def load_config(name="rl.py"):
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "configs", "toy", name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def tiny_config(init_dir: str):
  """configs/toy/rl.py scaled down to seconds: a tiny random model, 8 prompts x 2 samples of 6
  tokens, 2 minibatches, one eval set of 8 problems."""
  c = load_config()
  c.init.from_hf = init_dir
  c.steps = 2
  c.batch_size = 8
  c.eval_every = 2
  c.checkpoint_every = 0                    # only the final / preemption checkpoints
  c.progress_bar = False
  c.rl.group_size = 2
  c.rl.max_new_tokens = 6
  c.rl.minibatches = 2
  c.rl.dynamic_sampling = "none"            # a random model's groups are all zero-variance
  c.data.n_pool = 16
  c.data.max_prompt_len = 96
  c.eval.n = 8
  c.eval.k = 2
  c.eval.ks = (1, 2)
  c.eval.batch_size = 8
  c.eval.max_new_tokens = 6
  c.eval.greedy = False
  return c


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_run_writes_metrics_resumes_and_stops_on_signal(init_dir, tmp_path, monkeypatch):
  workdir = str(tmp_path / "rl")
  c = tiny_config(init_dir)
  c.rl.profile_phases = True                # the per-phase times (PERF_KEYS) every step
  assert rl_loop.run(c, workdir) == 0
  records = read_metrics(workdir)
  by_step = {}
  for r in records:
    by_step.setdefault(r["step"], {}).update(r)
  assert sorted(by_step) == [0, 1, 2]
  assert "eval/arith_eval/avg@2" in by_step[0] and "eval/arith_eval/pass@2" in by_step[0]
  for s in (1, 2):
    missing = [k for k in RL_KEYS if k not in by_step[s]]
    assert not missing, (s, missing)
    assert 0.0 <= by_step[s]["reward/mean"] <= 1.0
    assert by_step[s]["policy/ratio_dev_first"] < 1e-4
    assert by_step[s]["num_updates"] == 2
  assert all(k in by_step[2] for k in PERF_KEYS)            # step 1 holds the compilation
  assert not any(k in by_step[1] for k in PERF_KEYS)
  assert "eval/arith_eval/avg@2" in by_step[2]
  assert checkpoints.run_steps(workdir) == [2]
  assert os.path.exists(os.path.join(workdir, "data", "train.jsonl"))
  assert os.path.exists(os.path.join(workdir, "tokenizer.model"))
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["stage"] == "rl"
  state_params = checkpoints.load_params(workdir, 2)
  _, init_params = rj.load_hf(init_dir)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state_params),
                                                   jax.tree.leaves(init_params)))

  c.steps = 3                       # resume: only step 3 runs
  with pytest.raises(ResumeMismatchError, match=r"steps 2 -> 3.*resume_overrides=True"):
    rl_loop.run(c, workdir)         # a changed config is refused before anything is written
  assert [r["step"] for r in read_metrics(workdir)] == [r["step"] for r in records]
  c.resume_overrides = True
  assert rl_loop.run(c, workdir) == 0
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["resume_history"] == [{"step": 2, "changed": {"steps": [2, 3]}}]
  resumed = read_metrics(workdir)[len(records):]
  assert [r["step"] for r in resumed] == [3]
  assert all(k in resumed[0] for k in RL_KEYS)
  assert "eval/arith_eval/avg@2" in resumed[0]
  assert checkpoints.run_steps(workdir) == [2, 3]

  # preemption (a stop signal seen before step 5): a checkpoint at step 4, rerun resumes there
  seen = []
  monkeypatch.setattr(run_loop, "any_process", lambda flag: seen.append(1) or
                      len(seen) > 1)
  c.steps = 6
  c.reward.host_verifier = True            # and the host-verifier path of the loop
  assert rl_loop.run(c, workdir) == EXIT_PREEMPTED
  assert checkpoints.run_steps(workdir) == [3, 4]
  assert read_metrics(workdir)[-1]["step"] == 4


def test_resample_refills_zero_variance_groups_from_new_prompts(init_dir, tmp_path):
  """dynamic_sampling="resample": a random model never answers right, so every group has zero
  reward variance; each step samples resample_rounds more batches, then trains on the first
  batch's groups with the loss masked (no update to the policy loss)."""
  c = tiny_config(init_dir)
  c.steps, c.eval_every, c.rl.minibatches = 1, 0, 1
  c.rl.dynamic_sampling, c.rl.resample_rounds = "resample", 2
  assert rl_loop.run(c, str(tmp_path / "rl")) == 0
  (row,) = [r for r in read_metrics(str(tmp_path / "rl")) if r["step"] == 1]
  assert row["reward/mean"] == 0.0 and row["reward/zero_var_frac"] == 1.0
  assert row["dynamic/rounds"] == 3 and row["dynamic/varied_frac"] == 0.0
  assert row["pg_loss"] == 0.0


def test_protocol_chain_with_stubbed_sampler(tmp_path, monkeypatch):
  """Difficulty filter -> stratified N-subset -> γ label replacement -> saved variant, reused
  on the next call; the sampler is replaced by a stub with known solve counts / answers."""
  c = load_config()
  c.data.n_pool = 40
  c.data.difficulty_filter = True
  c.data.n_train = 12
  c.data.label_noise = 0.5
  calls = []

  def fake_rows(cfg, params, tok, records, *, num_samples, key, name, **options):
    calls.append((name, num_samples, len(records)))
    rows = []
    for i, r in enumerate(records):
      truth = r["true_answer"]
      solved = int(r["id"][-2:], 16) % (num_samples + 1)      # 0..num_samples, from the id
      for s in range(num_samples):
        correct = s < solved if name == "solve_counts" else s == 0
        wrong = f"9{truth}" if s % 3 else f"8{truth}"          # 9x twice as often as 8x
        rows.append({"prompt_id": r["id"], "correct": correct,
                     "extracted": truth if correct else wrong})
    return rows

  monkeypatch.setattr(rl_protocols, "_sample_rows", fake_rows)
  workdir = str(tmp_path)
  records, report = rl_protocols.prepare_train_records(c, workdir, None, None, None)
  assert calls == [("solve_counts", 16, 40), ("wrong_answers", 96, 12)]
  pool = rl_protocols.pool_records(c)
  counts = {r["id"]: int(r["id"][-2:], 16) % 17 for r in pool}
  kept = data_protocols.difficulty_filter(counts)
  want_ids = data_protocols.stratified_subset({i: counts[i] for i in kept}, 12, seed=0)
  assert [r["id"] for r in records] == want_ids
  assert report["difficulty_kept"] == len(kept)
  replaced = [r for r in records if r["answer"] != r["true_answer"]]
  assert len(replaced) == 6                                   # γ = 0.5 of 12
  assert all(r["answer"] == "9" + r["true_answer"] for r in replaced)
  assert report["label_noise"]["realised_gamma"] == 0.5

  def no_sampling(*a, **k):
    raise AssertionError("the saved training set must be reused")
  monkeypatch.setattr(rl_protocols, "_sample_rows", no_sampling)
  again, _ = rl_protocols.prepare_train_records(c, workdir, None, None, None)
  assert again == json.loads(json.dumps(records))
  c.data.label_noise = 0.3
  with pytest.raises(ValueError, match="label_noise"):
    rl_protocols.prepare_train_records(c, workdir, None, None, None)


def test_bad_configs_fail_before_compiling(init_dir, tmp_path, monkeypatch):
  def no_compile(*a, **k):
    raise AssertionError("nothing may be jitted for a bad config")
  monkeypatch.setattr(rl_loop.step_lib, "jit_rl_phases", no_compile)
  monkeypatch.setattr(rl_loop.step_lib, "jit_rl_step", no_compile)

  c = tiny_config(init_dir)
  c.reward.weights.exact_match = 1.0
  with pytest.raises(ValueError, match="unknown reward 'exact_match'"):
    rl_loop.run(c, str(tmp_path / "a"))

  c = tiny_config(init_dir)
  c.rl.minibatches = 3                       # 8 prompts x 2 samples = 16 rows
  with pytest.raises(ValueError, match="do not divide into rl.minibatches"):
    rl_loop.run(c, str(tmp_path / "b"))

  c = tiny_config(init_dir)
  c.batch_size = 6                           # 8 devices
  with pytest.raises(ValueError, match="batch_size"):
    rl_loop.run(c, str(tmp_path / "c"))

  c = tiny_config(init_dir)
  c.rl.group_size = 1                        # no group baseline: every advantage would be 0
  with pytest.raises(ValueError, match="rl.group_size=1: every advantage estimator"):
    rl_loop.run(c, str(tmp_path / "g"))

  c = tiny_config(init_dir)
  c.rl.fused_step, c.rl.profile_phases = True, True   # the fused step has no phases to time
  with pytest.raises(ValueError, match="rl.profile_phases times the sample"):
    rl_loop.run(c, str(tmp_path / "p"))

  path = tmp_path / "unlabelled.jsonl"
  path.write_text("".join(json.dumps({"problem": f"What is {i} + 1?", "answer": ""}) + "\n"
                          for i in range(4)))
  c = tiny_config(init_dir)
  c.data.domains = ""
  c.data.files = str(path)
  with pytest.raises(ValueError, match="the dataset has no labels"):
    rl_loop.run(c, str(tmp_path / "d"))
  with pytest.raises(ValueError, match="has no answer label"):
    rl_loop.check_labels([{"id": "x", "answer": ""}],
                         rl_loop.step_lib.RewardSpec.make({"boxed_answer_match": 1.0},
                                                          {"boxed_ids": (5,), "close_id": 6}))


@pytest.mark.parametrize("name", ["rl.py", "rl_scarce_n8.py", "rl_noisy_g05.py", "rl_majority.py",
                                  "rl_self_certainty.py"])
def test_toy_configs_resolve(name):
  """Every toy RL config builds its settings and reward spec (names, options, noise) cleanly."""
  from rlvr_jax.data import builtin
  c = load_config(name)
  tok = builtin.resolve_tokenizer("")
  settings = rl_loop.rl_settings(c, tok)
  reward = rl_loop.reward_spec(c, tok)
  assert settings.group_size >= 2 and reward.names


def _run_mode(c, workdir, fused: bool, n_devices: int, monkeypatch, calls: list):
  """rl_loop.run of `c` in one mode on the first n_devices devices; (metrics by step without
  perf/ keys, final params as host arrays)."""
  make_mesh = rl_loop.sharding.make_mesh
  with monkeypatch.context() as m:
    m.setattr(rl_loop.sharding, "make_mesh",
              lambda shape=(-1, 1, 1), devices=None: make_mesh(
                  shape, jax.devices()[:n_devices] if devices is None else devices))
    block = jax.block_until_ready

    def counted(x):       # the loop's own waits (rl/loop.py), not the library's
      import inspect
      if inspect.stack()[1].filename == rl_loop.__file__:
        calls.append(inspect.stack()[1].function)
      return block(x)
    m.setattr(jax, "block_until_ready", counted)
    c.rl.fused_step = fused
    assert rl_loop.run(c, workdir) == 0
  by_step = {}
  for r in read_metrics(workdir):
    by_step.setdefault(r["step"], {}).update(
        {k: v for k, v in r.items() if not k.startswith("perf/")})
  return by_step, checkpoints.load_params(workdir, int(c.steps))


@pytest.mark.parametrize("n_devices", [1, 8])
@pytest.mark.parametrize("dynamic", ["none", "mask"])
def test_phase_mode_and_fused_step_agree(init_dir, tmp_path, monkeypatch, n_devices, dynamic):
  """The same config through the phase mode (three jits, no host wait: rl.profile_phases off)
  and the fused step (one jit) for 3 steps: the same metrics and parameters.

  The rollouts are sampled from the same params with the same keys (step_keys), so as long as
  the two graphs compute the sampler's logits to the same bits every step draws the same
  tokens; a single flipped token would change everything after it, so this is a bitwise test
  of the sampling path in practice. Rewards: Bernoulli(0.5) noise over the boxed match (a random
  model never answers right), so about half of the groups of 2 have zero reward variance and
  "mask" drops them while the rest train. The update is the same function of the same inputs
  in both modes; XLA may still fuse the two programs differently (the fused one sees the
  sampler's outputs and the update together), which can reorder f32 sums: two summation
  orders of n terms differ by at most n eps sum|x_i| (Higham eq. 4.4; tests/test_rl_step.py),
  and the longest sums here are the weight gradients' over the 16 rows x (96 + 6) positions,
  n = 1632 (n eps ~ 2e-4), through 3 steps x 2 AdamW updates of lr 2e-4: the parameters agree
  to rtol = atol = n eps, the metrics (means of O(1) terms) to rtol = atol = n eps as well. In
  practice (XLA:CPU) both come out bitwise equal.
  """
  c = tiny_config(init_dir)
  c.steps, c.eval_every, c.eval_at_end = 3, 0, False
  c.rl.dynamic_sampling = dynamic
  c.reward.noise, c.reward.noise_q = "bernoulli", 0.5
  calls = []
  phased, p_params = _run_mode(c, str(tmp_path / "phased"), False, n_devices, monkeypatch, calls)
  assert calls == []               # the default phase mode never waits on the device to time it
  fused, f_params = _run_mode(c, str(tmp_path / "fused"), True, n_devices, monkeypatch, calls)
  assert sorted(phased) == sorted(fused) == [1, 2, 3]
  n_eps = 16 * (96 + 6) * float(np.finfo(np.float32).eps)
  for s in (1, 2, 3):
    assert sorted(phased[s]) == sorted(fused[s])
    for k in phased[s]:
      a, b = phased[s][k], fused[s][k]
      if a is None or b is None:        # NaN metrics are written as null
        assert a is None and b is None, (s, k, a, b)
        continue
      np.testing.assert_allclose(a, b, rtol=n_eps, atol=n_eps, err_msg=f"step {s} {k}")
  assert 0.0 < phased[1]["reward/zero_var_frac"] < 1.0          # some groups train, some not
  if dynamic == "mask":
    assert phased[1]["reward/zero_var_frac"] > 0
  for x, y in zip(jax.tree.leaves(p_params), jax.tree.leaves(f_params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=n_eps, atol=n_eps)
  _, init_params = rj.load_hf(init_dir)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(p_params),
                                                   jax.tree.leaves(init_params)))


def test_fused_step_auto_is_fused_unless_the_host_must_act():
  c = load_config()
  assert c.rl.fused_step == "auto" and not c.rl.profile_phases
  c.rl.dynamic_sampling = "mask"
  assert rl_loop.use_fused_step(c)
  for field, value in (("reward.host_verifier", True), ("rl.dynamic_sampling", "resample"),
                       ("rl.profile_phases", True)):
    d = load_config()
    d.rl.dynamic_sampling = "mask"
    section, name = field.split(".")
    d[section][name] = value
    assert not rl_loop.use_fused_step(d), field
  c.rl.fused_step = False                    # the old values keep their meaning
  assert not rl_loop.use_fused_step(c)
  c.rl.fused_step = True
  assert rl_loop.use_fused_step(c)
  del c.rl["fused_step"]                     # a config without the field: auto
  assert rl_loop.use_fused_step(c)
  c.rl.fused_step = "sometimes"
  with pytest.raises(ValueError, match="rl.fused_step='sometimes' must be 'auto', True or False"):
    rl_loop.use_fused_step(c)
  from rlvr_jax.run import workdir as workdir_lib    # a resume may switch modes
  assert workdir_lib._is_free("rl.fused_step") and workdir_lib._is_free("rl.profile_phases")
