r"""`rlvr-jax rl --config=configs/toy/rl.py --workdir=DIR`: the RL run loop.

`run(config, workdir)` initialises from an SFT/CPT run (`init.from_checkpoint=RUN[:STEP]`) or an
HF directory (`init.from_hf=DIR`) (random init when neither is set, for tests), keeps the
initial parameters as the frozen reference model, prepares the training problems with the
model-aware data protocols (rl.protocols: difficulty filter, stratified N-subset, label
replacement; saved in WORKDIR/data and reused on resume), then runs `config.steps` RL steps
(rl.step) in run.loop.run_loop, which owns what every stage shares: resume, the health guard,
preemption, dispatch-ahead metrics and `perf/step_time_s`, eval and checkpoint cadence. It
returns 0 when the run completed and run.errors.EXIT_PREEMPTED (75) when it was preempted
(SIGTERM / SIGINT: a checkpoint is saved; run the same command again to resume). The run
directory is locked, and a resume checks its config first (as in train.loop).

Per step: the host takes the next prompt batch (grain, checkpointed with the state), the device
samples, scores and updates: either the one fused jitted `rl_step` (`rl.fused_step=True`) or
three separate jitted phases, sample, score and update (`rl.fused_step=False`), in which the
host waits only where it needs a value: the host verifier (`reward.host_verifier`) decodes the
rollout before scoring, and the `resample` refill (`rl.dynamic_sampling="resample"`) reads the
groups' reward variances before choosing the groups to train on, and the packed update
(`rl.pack_update`, rl/packing.py) reads the sampled lengths to lay the rows into bins without
padding. The default, `rl.fused_step="auto"`, is the fused step unless one of those (or
`rl.profile_phases`) needs the phases (`use_fused_step`). `rl.profile_phases=True` (phase mode only) waits for each phase
(`jax.block_until_ready`) to measure `perf/sample_s`, `perf/reward_s` and `perf/update_s`, and
so each step's metrics are pulled at once. Every mode computes the same step
(tests/test_rl_loop.py). With rl.stop_after_saturation, while a plateau of the training reward
forms, each step's metrics are pulled before the next step is dispatched (the stop decision
needs them; `_may_stop_next`).

Run directory: config.json, tokenizer.model|json, data/train.jsonl + data/protocol.json (the
training set), checkpoints/ (train state + data-iterator position), metrics.jsonl (one record
per step with the rl.step metrics, perf/*, and eval/* at evaluation steps), tensorboard/, and
eval/<step>/<set>.jsonl (per-sample evaluation rows).

Evaluation: every `eval_every` steps, at step 0 of a fresh run and at the last step, the eval
harness (`make_eval_fn_from_config(config.eval, ...)`: avg@k, pass@k, maj@k, greedy accuracy on
held-out sets, always against the true labels).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time

import jax
import numpy as np

from rlvr_jax import sharding, specs
from rlvr_jax.data import pipelines
from rlvr_jax.diagnostics.saturation import SaturationMonitor
from rlvr_jax.model.config import ModelConfig
from rlvr_jax.rl import packing as packing_lib
from rlvr_jax.rl import protocols as rl_protocols
from rlvr_jax.rl import rewards as rewards_lib
from rlvr_jax.rl import step as step_lib
from rlvr_jax.run import context, paths, workdir as workdir_lib
from rlvr_jax.run import init as init_lib
from rlvr_jax.run.errors import EXIT_PREEMPTED
from rlvr_jax.run.loop import LoopSpec, Stage, restore_or_init, run_loop
from rlvr_jax.train import checkpoints as ckpt_lib
from rlvr_jax.train import loop as train_loop
from rlvr_jax.train import optim
from rlvr_jax.train.state import abstract_state, create_train_state, state_shardings

log = logging.getLogger("rlvr_jax.rl")

DEVICE_KEYS = ("prompt_tokens", "prompt_lengths", "answer_tokens", "true_answer_tokens")


# ---------------------------------------------------------------------------------- config
def stop_ids(tokenizer, template: str) -> tuple[int, ...]:
  """The template's end-of-turn id and the tokenizer's eos (generation stops at either)."""
  ids = [tokenizer.chat_stop_id(template)]
  if tokenizer.eos_id is not None and tokenizer.eos_id not in ids:
    ids.append(tokenizer.eos_id)
  return tuple(int(i) for i in ids)


def reward_spec(config, tokenizer) -> step_lib.RewardSpec:
  """RewardSpec of config.reward: weights (zero weights dropped), noise model and its rates."""
  spec = specs.parse(config)
  r = spec.reward
  weights = {str(k): float(v) for k, v in r.weights.items()}
  names = [k for k, v in weights.items() if v != 0.0]
  for name in names:
    rewards_lib.get_reward(name)   # ValueError naming the unknown reward and the choices
  noise = r.noise
  params = {}
  if noise in ("symmetric_flip", "group_flip"):
    params["p"] = r.noise_p
  elif noise == "asymmetric_flip":
    params["fp_rate"] = r.noise_fp_rate
    params["fn_rate"] = r.noise_fn_rate
  elif noise == "bernoulli":
    params["q"] = r.noise_q
  max_answer_len = spec.data.max_answer_len
  options = step_lib.reward_options(tokenizer, names, max_answer_len=max_answer_len)
  host = r.host_verifier
  if host and fused_setting(spec) is True:
    raise ValueError("reward.host_verifier needs the host between sampling and scoring; set "
                     "rl.fused_step=False")
  return step_lib.RewardSpec.make({n: weights[n] for n in names}, options, noise=noise,
                                  noise_params=params,
                                  close_ids=step_lib.close_brace_ids(tokenizer),
                                  max_answer_len=max_answer_len, host_verifier=host)


def rl_settings(config, tokenizer) -> step_lib.RLSettings:
  """RLSettings of config.rl (specs.RLConfig: the same fields) and the tokenizer's ids."""
  spec = specs.parse(config)
  pad = tokenizer.pad_id if tokenizer.pad_id is not None and tokenizer.pad_id >= 0 else 0
  names = {f.name for f in dataclasses.fields(step_lib.RLSettings)} & \
      {f.name for f in dataclasses.fields(specs.RLConfig)}
  kw = {n: getattr(spec.rl, n) for n in names}
  kw["dual_clip"] = spec.rl.dual_clip if spec.rl.dual_clip > 0 else None
  return step_lib.RLSettings(**kw, pad_id=int(pad),
                             eos_ids=stop_ids(tokenizer, spec.data.template))


def fused_setting(config) -> str | bool:
  """rl.fused_step as "auto", True or False (a missing field is "auto"); ValueError for
  anything else."""
  return specs.parse(config).rl.fused


def use_fused_step(config) -> bool:
  """Whether the run uses the one fused jitted step: rl.fused_step when True / False; "auto"
  (the default): fused unless the host must act between the phases (reward.host_verifier,
  rl.dynamic_sampling="resample", rl.pack_update) or rl.profile_phases times them (module
  docstring)."""
  spec = specs.parse(config)
  value = spec.rl.fused
  if value != "auto":
    return value
  return not (spec.reward.host_verifier or spec.rl.dynamic_sampling == "resample"
              or spec.rl.profile_phases or spec.rl.pack_update)


def validate(config, cfg: ModelConfig, mesh, settings: step_lib.RLSettings) -> None:
  """Every check that can fail before anything compiles (specs.validate); messages name the
  fields."""
  spec = dataclasses.replace(specs.parse(config), stage="rl")
  specs.validate(spec, cfg, mesh, settings=settings)


def check_labels(records, reward: step_lib.RewardSpec) -> None:
  """A label reward needs a label on every training record (names the first one without)."""
  if not reward.needs_labels:
    return
  for i, r in enumerate(records):
    if str(r.get("answer") or "").strip() == "":
      raise ValueError(f"training record {i} (id {r.get('id')!r}) has no answer label, but the "
                       f"reward {[n for n in reward.names if n in rewards_lib.LABEL_REWARDS]} "
                       f"compares with labels; use a labelled dataset or a proxy reward "
                       f"(majority_vote, self_certainty, neg_entropy, seq_loglik)")


# ---------------------------------------------------------------------------------- batches
def device_batch(host: dict, mesh) -> dict:
  """The arrays the step needs (DEVICE_KEYS, all tokenised by the grain pipeline), placed over
  (data, fsdp)."""
  return train_loop.put_batch({k: np.asarray(host[k], np.int32) for k in DEVICE_KEYS}, mesh)


# ---------------------------------------------------------------------------------- the loop
def run(config, workdir: str) -> int:
  """`rlvr-jax rl`: runs or resumes an RL run in `workdir` (module docstring)."""
  run_spec = dataclasses.replace(specs.parse(config), stage="rl")   # the one conversion
  workdir = paths.resolve(workdir)
  with workdir_lib.locked(workdir):
    return _run_locked(run_spec, workdir)


def _run_locked(run_spec: specs.RunSpec, workdir: str) -> int:
  # the init source (both init.* set or a missing one fail here, before the tokenizer that
  # defaults to it is read), the tokenizer, the model config and the mesh, once
  ctx = context.build(run_spec, workdir, "rl", tokenizer_spec=init_lib.tokenizer_path(run_spec))
  settings = rl_settings(ctx.spec, ctx.tokenizer)
  reward = reward_spec(ctx.spec, ctx.tokenizer)
  validate(ctx.spec, ctx.cfg, ctx.mesh, settings)
  updates = ctx.spec.steps * settings.minibatches * settings.epochs
  optimizer = optim.make_optimizer(ctx.spec.optim, updates)
  spec = step_lib.RLSpec(cfg=ctx.cfg, optimizer=optimizer, settings=settings, rewards=reward)
  train_loop.prepare_run_dir(ctx)
  with train_loop.run_status(ctx.workdir, ctx.spec.steps) as outcome:
    outcome[:] = _train(ctx, spec)
  status, step = outcome
  print(f"rl: {status} at step {step} ({workdir})")
  return EXIT_PREEMPTED if status == "preempted" else 0


def _train(ctx: context.RunContext, spec: step_lib.RLSpec):
  run_spec, workdir, cfg, mesh, tokenizer = ctx.spec, ctx.workdir, ctx.cfg, ctx.mesh, ctx.tokenizer
  optimizer, reward = spec.optimizer, spec.rewards
  shardings = state_shardings(cfg, optimizer, mesh)
  initial = init_lib.load_params(run_spec, cfg, mesh, workdir, source=ctx.init)
  if initial is None:
    log.warning("no init.from_checkpoint / init.from_hf: RL starts from random parameters")
    initial = sharding.init_params(cfg, jax.random.fold_in(jax.random.key(run_spec.seed), 7),
                                   mesh)
  ref_params = jax.device_put(jax.tree.map(lambda x: x.astype(cfg.jnp_param_dtype), initial),
                              shardings.params)

  records, _ = rl_protocols.prepare_train_records(run_spec, workdir, cfg, ref_params, tokenizer,
                                                  mesh=mesh)
  check_labels(records, reward)
  data = run_spec.data
  dataset = pipelines.rl_dataset(
      records, tokenizer, batch_size=run_spec.batch_size // jax.process_count(),
      max_prompt_len=data.max_prompt_len, template=data.template,
      max_answer_len=data.max_answer_len, seed=run_spec.seed, num_epochs=None,
      system_prompt=data.system_prompt or None, prompt_suffix=data.prompt_suffix)
  data_iter = iter(dataset)

  eval_fn = None
  if run_spec.eval_every or run_spec.eval_at_end:
    if run_spec.eval.domains or run_spec.eval.files:
      from rlvr_jax.eval import harness
      with sharding.activate(mesh):
        eval_fn = harness.make_eval_fn_from_config(run_spec.eval, cfg, tokenizer,
                                                   workdir=workdir)

  manager = ckpt_lib.RunCheckpoints(workdir, keep=run_spec.keep_checkpoints, keep_best=0)
  try:
    start, state = restore_or_init(
        manager, abstract_state(cfg, optimizer, mesh), data_iter,
        lambda: create_train_state(cfg, optimizer, mesh, jax.random.key(run_spec.seed),
                                   ref_params))    # a copy: ref_params stay the reference
    stage = _stage(ctx, spec, shardings, ref_params, data_iter, eval_fn, start,
                   manager.restored_extra)
    loop = LoopSpec(stage="rl", steps=run_spec.steps, log_every=run_spec.log_every,
                    guard=run_spec.guard_spec, eval_every=run_spec.eval_every,
                    eval_at_end=run_spec.eval_at_end,
                    checkpoint_every=run_spec.checkpoint_every,
                    progress_bar=run_spec.progress_bar, guard_loss=False,
                    skipped_key="skipped_updates")
    status, step = run_loop(loop, stage, state, start, manager, data_iter, workdir)
  finally:
    manager.close()
  if status == "saturated":
    log.warning("rl: stopped at step %d, %d steps after the training reward saturated "
                "(rl.stop_after_saturation)", step, run_spec.rl.stop_after_saturation)
  return status, step


def _stage(ctx: context.RunContext, spec: step_lib.RLSpec, shardings, ref_params, data_iter,
           eval_fn, start, restored_extra) -> Stage:
  """The RL stage of run.loop.run_loop: prompt batches, the fused step or the phases, the eval
  harness, and the saturation monitors (logged, saved with each checkpoint, able to stop)."""
  run_spec, workdir, mesh, tokenizer = ctx.spec, ctx.workdir, ctx.mesh, ctx.tokenizer
  settings, reward = spec.settings, spec.rewards
  def verify_on_host(rollout, batch_host=None):
    return _host_verify(rollout, batch_host, tokenizer, settings, mesh)
  host_fn = verify_on_host if reward.host_verifier else None
  fused = use_fused_step(run_spec)
  profile = run_spec.rl.profile_phases
  if fused:
    step_fn = step_lib.jit_rl_step(spec, mesh, shardings)
  else:
    phases = step_lib.jit_rl_phases(spec, mesh, shardings)
  base_key = jax.random.key(run_spec.seed)
  monitors = saturation_monitors(run_spec, workdir, start, restored_extra)
  stop_after = run_spec.rl.stop_after_saturation
  rows = run_spec.batch_size * settings.group_size

  def next_batch(n: int = 0) -> dict:
    """The next prompt batch on the devices (plus its host rows for the host verifier)."""
    del n
    host = next(data_iter)
    batch = device_batch(host, mesh)
    if host_fn is not None:
      batch["_host"] = host
    return batch
  more_batches = next_batch if settings.dynamic_sampling == "resample" else None
  pack = (functools.partial(plan_packing, settings=settings, mesh=mesh)
          if run_spec.rl.pack_update else None)

  def step(state, batch, n: int):
    key = jax.random.fold_in(base_key, n - 1)
    if fused:
      return (*step_fn(state, ref_params, batch, key), None)
    return _run_phases(phases, state, ref_params, batch, key, host_fn, more_batches, settings,
                       profile=profile, pack=pack)

  def evaluate(params, s: int) -> dict[str, float]:
    with sharding.activate(mesh):
      return eval_fn(params, s)

  def on_metrics(s: int, m: dict[str, float]) -> None:
    for prefix, monitor in monitors.items():
      value = m.get(monitor.params.reward_key)
      if value is None or not np.isfinite(value):
        continue
      for k, v in monitor.update(s, value).items():
        m[prefix + k[len("saturation"):]] = v
      if monitor.message:
        print(f"rl: {'true reward ' if prefix != 'saturation' else ''}{monitor.message}",
              flush=True)

  def should_stop() -> str | None:
    return "saturated" if stop_after and monitors["saturation"].should_stop(stop_after) else None

  return Stage(
      next_batch=next_batch, step=step, progress_key="reward/mean",
      perf=lambda m, dt: {"perf/samples_per_sec": rows / dt,
                          "perf/tokens_per_sec": rows * m["response/length_mean"] / dt},
      evaluate=evaluate if eval_fn is not None else None, on_metrics=on_metrics,
      may_stop=lambda: _may_stop_next(monitors["saturation"], stop_after),
      should_stop=should_stop,
      checkpoint_extra=lambda: {"saturation": {k: m.state_dict() for k, m in monitors.items()}})


def saturation_monitors(config, workdir: str, start: int | None, extra: dict | None
                        ) -> dict[str, SaturationMonitor]:
  """The online saturation monitors of the training reward ("saturation/*") and the true
  reward ("saturation_true/*"), continued from the checkpoint's saved state on a resume (or,
  for a checkpoint saved without it, rebuilt from metrics.jsonl up to the resumed step)."""
  section = specs.parse(config).saturation
  params = {"saturation": section.params("reward/mean"),
            "saturation_true": section.params("reward/true_mean")}
  saved = (extra or {}).get("saturation") or {}
  out = {}
  for name, p in params.items():
    if name in saved:
      out[name] = SaturationMonitor.from_state(saved[name], p)
    elif start:
      out[name] = SaturationMonitor.from_metrics(workdir, up_to_step=start, params=p)
    else:
      out[name] = SaturationMonitor(p)
  return out


def _may_stop_next(monitor: SaturationMonitor, stop_after: int) -> bool:
  """Whether feeding the monitor one more step could make it stop the run
  (rl.stop_after_saturation): only while a plateau is forming or the reward is saturated, as
  the saturation point is the first step of a plateau seen before (diagnostics.saturation).
  Then the loop pulls the pending step's metrics before dispatching the next one."""
  st = monitor.state
  return bool(stop_after) and (st.streak_start is not None or st.saturated_at is not None)


def _host_verify(rollout, host: dict, tokenizer, settings, mesh) -> dict:
  """batch["host_reward"] / ["host_true_reward"] of this process's rollout rows, checked on the
  host (step_lib.host_rewards), as global arrays over (data, fsdp)."""
  tokens, lengths = rollout.tokens, rollout.lengths
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    from jax.sharding import PartitionSpec as P
    tokens, lengths = multihost_utils.global_array_to_host_local_array(
        (tokens, lengths), mesh, P(sharding.BATCH_AXES))
  reward, truth = step_lib.host_rewards(tokenizer, np.asarray(tokens), np.asarray(lengths),
                                        list(host["label"]), list(host["true_label"]),
                                        settings.samples_per_prompt)
  return train_loop.put_batch({"host_reward": reward, "host_true_reward": truth}, mesh)


def _sample_and_score(phases: step_lib.Phases, params, batch, key, host_fn, times):
  """One prompt batch through sample, (host verification,) score. With `times` (profiling)
  each phase is waited on and its time added; without, nothing waits but the host verifier,
  which needs the sampled tokens."""
  k_sample, k_reward = step_lib.step_keys(key)
  host = batch.pop("_host", None)
  wait = jax.block_until_ready if times is not None else (lambda x: x)
  t0 = time.perf_counter()
  rollout = wait(phases.sample(params, batch["prompt_tokens"], batch["prompt_lengths"],
                               k_sample))
  t1 = time.perf_counter()
  if host_fn is not None:
    batch = {**batch, **host_fn(rollout, host)}
  kept, scored, m_score = wait(phases.score(rollout, batch, k_reward))
  if times is not None:
    times["sample"] += t1 - t0
    times["reward"] += time.perf_counter() - t1
  return (kept, scored, batch["prompt_tokens"], batch["prompt_lengths"]), m_score


def _group_variance(scored, g: int) -> np.ndarray:
  """bool[B] on the host: the groups whose rewards are not all equal."""
  r_BG = _gather_rows(scored.rewards).reshape(-1, g)
  return r_BG.max(axis=1) > r_BG.min(axis=1)


def _gather_rows(x) -> np.ndarray:
  """A row-sharded device array as one host array (every process's rows)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(x)


def plan_packing(kept: step_lib.Rollout, prompt_lengths, prompt_width: int,
                 settings: step_lib.RLSettings, mesh) -> tuple[step_lib.Packing, float]:
  """The packing of the trained rows (rl.pack_update): their sampled lengths read on the host
  (the only wait), packed per microbatch and batch shard (rl/packing.plan), placed on the
  devices with the rows' sharding; and the share of the packed positions that hold a real
  token (`perf/pack_fill`; the padded update's share is that of P + M per row)."""
  lengths = _gather_rows(kept.lengths)
  prompt_rows = np.repeat(_gather_rows(prompt_lengths), settings.group_size)
  capacity = prompt_width + int(kept.tokens.shape[1])
  chunks = settings.minibatches * settings.microbatches
  plan = packing_lib.plan(prompt_rows, lengths, capacity=capacity, chunks=chunks,
                          shards=mesh.shape["data"] * mesh.shape["fsdp"])
  rows = sharding.data_sharding(mesh, 1)
  place = lambda x: jax.make_array_from_callback(x.shape, rows, lambda i: x[i])  # noqa: E731
  fill = packing_lib.useful_fraction(prompt_rows, lengths, plan, capacity, chunks)
  return plan.replace(row_bin=place(plan.row_bin), row_start=place(plan.row_start)), fill


def _run_phases(phases: step_lib.Phases, state, ref_params, batch, key, host_fn=None,
                more_batches=None, settings: step_lib.RLSettings | None = None,
                profile: bool = False, pack=None):
  """Sample, (verify on the host,) score and update one after the other: (state, metrics,
  times). With `profile` each phase is waited on and timed (times: seconds per phase, the host
  verification counted as reward time); without, times is None and the host waits only for
  the values it needs (the host verifier's tokens, the resample refill's group variances, the
  sampled lengths `pack` turns into the update's packing), so the update is still running when
  this returns.

  With `more_batches` (dynamic_sampling="resample") further prompt batches are sampled and
  scored, up to settings.resample_rounds, until B groups have nonzero reward variance; the update
  trains on the first B such groups (topped up with the first batch's zero-variance groups,
  which the loss mask drops). The reward metrics stay those of the first batch (the policy's
  unfiltered rollout); dynamic/rounds and dynamic/varied_frac tell how the refill went.
  """
  times = {"sample": 0.0, "reward": 0.0, "update": 0.0} if profile else None
  wait = jax.block_until_ready if profile else (lambda x: x)
  first, m_score = _sample_and_score(phases, state.params, batch, key, host_fn, times)
  kept, scored, prompts, prompt_lengths = first
  if more_batches is not None:
    g, b = settings.group_size, int(prompts.shape[0])
    rounds, varied = [first], [_group_variance(scored, g)]
    while sum(int(v.sum()) for v in varied) < b and len(rounds) <= settings.resample_rounds:
      extra, _ = _sample_and_score(phases, state.params, more_batches(),
                                   jax.random.fold_in(key, len(rounds)), host_fn, times)
      rounds.append(extra)
      varied.append(_group_variance(extra[1], g))
    flat = np.concatenate(varied)
    chosen = list(np.flatnonzero(flat)[:b]) + list(np.flatnonzero(~varied[0]))
    index = np.asarray(chosen[:b], np.int32)
    t = time.perf_counter()
    kept, scored, prompts, prompt_lengths = wait(phases.select(tuple(rounds), index))
    if profile:
      times["reward"] += time.perf_counter() - t
    m_score = {**m_score, "dynamic/rounds": float(len(rounds)),
               "dynamic/varied_frac": float(min(int(flat.sum()), b)) / b}
  t = time.perf_counter()
  if pack is not None:
    packing, fill = pack(kept, prompt_lengths, int(prompts.shape[1]))
    state, m_update = phases.update_packed(state, ref_params, kept, scored, prompts,
                                           prompt_lengths, packing)
    m_update = {**m_update, "perf/pack_fill": fill}
  else:
    state, m_update = phases.update(state, ref_params, kept, scored, prompts, prompt_lengths)
  if profile:
    m_update = jax.block_until_ready(m_update)
    times["update"] = time.perf_counter() - t
  return state, {**m_score, **m_update}, times


__all__ = ["run", "use_fused_step", "fused_setting", "reward_spec", "rl_settings", "validate", "check_labels", "device_batch", "stop_ids", "DEVICE_KEYS"]
