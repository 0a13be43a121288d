"""`rlvr-jax plan`: the planner's parameter layout, sharding and memory against the real model and
the compiled train step (XLA:CPU's memory analysis), fit verdicts, FLOPs, output and errors."""
import contextlib
import io
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlvr_jax as rj
from rlvr_jax import cli, plan, sharding
from rlvr_jax.model import transformer as T
from rlvr_jax.train import optim, state as state_lib, steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QWEN_RL = os.path.join(ROOT, "configs", "qwen2.5_math_1.5b", "rl.py")
TOY_SFT = os.path.join(ROOT, "configs", "toy", "sft.py")
WRAPPER = os.path.join(ROOT, "configs", "plan.py")


def load(path):
  return cli.load_config_module(path).get_config()


def toy_sft(size, batch, seq, remat, *, fsdp=1, microbatches=1):
  c = load(TOY_SFT)
  c.model.size, c.model.remat = size, remat
  c.batch_size, c.seq_len, c.microbatches = batch, seq, microbatches
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, fsdp, 1
  return c


def run_cli(*args):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = cli.main(["rlvr-jax", *args])
  return rc, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("size", ["toy-1m", "qwen2.5-math-1.5b", "llama-3.1-8b"])
def test_param_layout_is_the_models(size):
  """Paths, shapes and logical axes of every leaf equal the model's abstract parameters, so the
  count is exact (tied / untied heads, Qwen's q/k/v biases)."""
  cfg = rj.get_model_config(size)
  boxed = T.abstract_params(cfg)
  specs = nn.get_partition_spec(boxed)
  want = {}
  for path, x in jax.tree_util.tree_flatten_with_path(nn.unbox(boxed))[0]:
    name = "/".join(k.key for k in path)
    want[name] = tuple(x.shape)
  axes = {"/".join(k.key for k in p): tuple(s)
          for p, s in jax.tree_util.tree_flatten_with_path(
              specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0]}
  got = {s.path: s.shape for s in plan.param_specs(cfg)}
  assert got == want
  assert {s.path: s.axes for s in plan.param_specs(cfg)} == axes
  assert plan.num_params(cfg) == cfg.num_params() == sum(int(np.prod(s)) for s in want.values())


def test_params_per_device_follow_the_rule_table():
  """fsdp=2 x tensor=2 on 4 devices: the planner's per-device count equals what device 0 holds."""
  cfg = rj.get_model_config("toy-1m", vocab_size=256, num_layers=2, qkv_bias=True)
  mesh = sharding.make_mesh((1, 2, 2), jax.devices()[:4])
  params = sharding.init_params(cfg, jax.random.key(0), mesh)
  dev0 = jax.devices()[0]
  held = sum(int(np.prod(s.data.shape)) for x in jax.tree.leaves(params)
             for s in x.addressable_shards if s.device == dev0)
  assert plan.params_per_device(cfg, plan.MeshShape(1, 2, 2)) == held
  assert plan.params_per_device(cfg, plan.MeshShape(4, 1, 1)) == plan.num_params(cfg)


# ---------------------------------------------------------------------------------- measured
MEASURED = [  # (size, batch, seq, remat, fsdp, microbatches): fsdp devices
    ("toy-1m", 8, 128, "none", 1, 1),
    ("toy-10m", 4, 128, "full", 1, 1),
    ("toy-7m", 8, 64, "dots", 2, 2),
]


@pytest.mark.parametrize("size,batch,seq,remat,fsdp,micro", MEASURED)
def test_estimate_matches_compiled_train_step(size, batch, seq, remat, fsdp, micro):
  """The planner's params + optimizer + gradients + activations per device against a real
  jitted train step: XLA's compiled memory analysis (argument + temp bytes; the outputs alias
  the donated state; CPU devices report no memory_stats). The activation model is a per-layer
  count of the tensors the backward pass reads, not a fit to XLA:CPU, so it is held to
  0.5x-2x (it lands at 0.86-1.66x)."""
  config = toy_sft(size, batch, seq, remat, fsdp=fsdp, microbatches=micro)
  (p,) = plan.plan_config(config, chips=fsdp)
  cfg = p.cfg
  assert (p.mesh.data, p.mesh.fsdp, p.mesh.tensor) == (1, fsdp, 1)
  mesh = sharding.make_mesh((1, fsdp, 1), jax.devices()[:fsdp])
  opt = optim.make_optimizer(config.optim, int(config.steps))
  state = state_lib.create_train_state(cfg, opt, mesh, jax.random.key(0))
  assert sum(x.size for x in jax.tree.leaves(state.params)) == plan.num_params(cfg)
  step = steps.jit_train_step(cfg, opt, mesh, state_lib.state_shardings(cfg, opt, mesh),
                              microbatches=micro)
  tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, seq + 1), np.int32)
  batch_dev = jax.device_put({"tokens": tokens}, steps.batch_sharding(mesh))
  with sharding.activate(mesh):
    compiled = step.jitted.lower(state, batch_dev).compile()
  stats = jax.devices()[0].memory_stats()
  ma = compiled.memory_analysis()
  measured = ma.argument_size_in_bytes + ma.temp_size_in_bytes
  state, metrics = compiled(state, batch_dev)          # the step runs
  assert np.isfinite(float(metrics["loss"]))
  if stats and stats.get("peak_bytes_in_use"):         # an accelerator: its own peak
    measured = jax.devices()[0].memory_stats()["peak_bytes_in_use"]
  estimate = p.peak_bytes
  state_bytes = p.resident_bytes
  print(f"\n{size} B={batch} T={seq} remat={remat} fsdp={fsdp} micro={micro}: estimate "
        f"{estimate / 2**20:.1f} MiB (state {state_bytes / 2**20:.1f}) vs compiled "
        f"{measured / 2**20:.1f} MiB (arguments {ma.argument_size_in_bytes / 2**20:.1f}, temp "
        f"{ma.temp_size_in_bytes / 2**20:.1f}): {estimate / measured:.2f}x")
  assert 0.5 <= estimate / measured <= 2.0
  # params + AdamW moments: exact up to the step counters and the batch
  assert abs(ma.argument_size_in_bytes - state_bytes) <= 1024 + tokens.nbytes


@pytest.mark.parametrize("scan_unroll", [1, 4])
def test_estimate_matches_compiled_rl_phases(scan_unroll):
  """The RL update (state + reference + max(update backward, optimizer, reference forward)) and
  the sampler's decode phase (KV cache + unstacked weights + buffers) against the compiled
  phases of rl.step.jit_rl_phases (compiled only). With the 4 layers unrolled the recomputed
  layers' working sets are live together (XLA:CPU: 648 against 196 MiB of arguments and
  temporaries)."""
  from rlvr_jax.rl import step as S
  c = load(os.path.join(ROOT, "configs", "toy", "rl.py"))
  c.model.size, c.model.remat, c.model.vocab_size = "toy-1m", "full", 2048
  c.model.scan_unroll = scan_unroll
  c.batch_size, c.rl.group_size, c.rl.microbatches = 4, 8, 2
  c.data.max_prompt_len, c.rl.max_new_tokens, c.eval.domains = 64, 256, ""
  (p,) = plan.plan_config(c, chips=1)
  cfg, (b, g, pl, m) = p.cfg, (4, 8, 64, 256)
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  opt = optim.make_optimizer(c.optim, 10)
  spec = S.RLSpec(cfg, opt, S.RLSettings(group_size=g, max_new_tokens=m, pad_id=0, eos_ids=(2,),
                                         kl_coef=0.001, microbatches=2),
                  S.RewardSpec.make({"boxed_answer_match": 1.0}, {"boxed_ids": (3,),
                                                                  "close_id": 4}))
  abstract = state_lib.abstract_state(cfg, opt, mesh)
  phases = S.jit_rl_phases(spec, mesh, state_lib.state_shardings(cfg, opt, mesh))
  sd, n = jax.ShapeDtypeStruct, b * g
  i32, f32 = jnp.int32, jnp.float32
  rollout = S.Rollout(tokens=sd((n, m), i32), lengths=sd((n,), i32), logprobs=sd((n, m), f32),
                      entropy=sd((n, m), f32), self_certainty=sd((n, m), f32))
  scored = S.Scored(rewards=sd((n,), f32), advantages=sd((n,), f32), loss_mask=sd((n, m), f32))
  with sharding.activate(mesh):
    key = jax.eval_shape(lambda: jax.random.key(0))
    sample = phases.sample.jitted.lower(abstract.params, sd((b, pl), i32), sd((b,), i32),
                                        key).compile().memory_analysis()
    update = phases.update.jitted.lower(abstract, abstract.params, rollout, scored,
                                        sd((b, pl), i32), sd((b,), i32)).compile()
  update = update.memory_analysis()
  per = p.phase_bytes()
  est_update = p.resident_bytes + max(per["update backward"], per["optimizer"],
                                      per["reference forward"])
  got_update = update.argument_size_in_bytes + update.temp_size_in_bytes
  print(f"\nRL update: estimate {est_update / 2**20:.1f} MiB vs compiled {got_update / 2**20:.1f}"
        f" MiB ({est_update / got_update:.2f}x); decode: estimate {per['decode'] / 2**20:.1f} "
        f"MiB vs compiled temp {sample.temp_size_in_bytes / 2**20:.1f} MiB "
        f"({per['decode'] / sample.temp_size_in_bytes:.2f}x)")
  assert 0.5 <= est_update / got_update <= 2.0
  assert 0.5 <= per["decode"] / sample.temp_size_in_bytes <= 2.0


# ---------------------------------------------------------------------------------- verdicts
def test_qwen_math_full_finetuning_fits_v5p_8_not_one_v5e():
  v5e, v5p = plan.get_accelerator("v5e"), plan.get_accelerator("v5p")
  config = load(QWEN_RL)
  (one,) = plan.plan_config(config, chips=1)
  assert (one.mesh.fsdp, one.mesh.devices) == (1, 1)
  # params + AdamW moments + reference, all f32: 16 bytes per parameter > 16 GiB
  assert one.resident_bytes == 16 * plan.num_params(one.cfg)
  assert not plan.fits(one, v5e, 0.9)
  config.mesh.fsdp = 8
  (eight,) = plan.plan_config(config, chips=8)
  assert eight.mesh.fsdp == 8 and plan.fits(eight, v5p, 0.9)
  # SFT-style full fine-tuning of the same model (bf16 compute, remat full, 2k tokens)
  sft = toy_sft("qwen2.5-math-1.5b", 64, 2048, "full", fsdp=-1)
  sft.mesh.data, sft.model.dtype = 1, "bfloat16"
  (s1,) = plan.plan_config(sft, chips=1)
  (s8,) = plan.plan_config(sft, chips=8)
  assert not plan.fits(s1, v5e) and plan.fits(s8, v5p)
  assert s8.mesh.fsdp == 8 and s8.cfg.vocab_size == 151936


def test_rl_kv_cache_and_flops_formulas():
  config = load(QWEN_RL)
  (p,) = plan.plan_config(config, chips=8)
  cfg = p.cfg
  kv = next(i for i in p.items if i.label == "KV cache")
  rows = 64 * 8 // 8                             # batch x group over data x fsdp
  assert kv.bytes == cfg.num_layers * rows * cfg.num_kv_heads * cfg.head_dim * 4096 * 2 * 2
  assert kv.phase == "decode"
  assert plan.train_flops_per_token(cfg, 4096) == pytest.approx(cfg.flops_per_token(4096))
  update = next(f for f in p.flops if f.label.startswith("update"))
  want = 512 * (4096 * plan.train_flops_per_token(cfg, 4096, head=False)
                + 2048 * 6 * cfg.vocab_size * cfg.hidden_size)
  assert update.flops == pytest.approx(want)
  decode = next(f for f in p.flops if f.label.startswith("sampling decode"))
  assert decode.hbm_bytes == 2048 * (plan.params_per_device(cfg, p.mesh) * 4 + kv.bytes)
  secs = plan.step_seconds(p, plan.get_accelerator("v5p"), 0.4)
  assert secs[update.label] == pytest.approx(update.flops / (8 * 459e12 * 0.4))


# ---------------------------------------------------------------------------------- configs
def test_model_from_init_directories(tmp_path):
  hf_dir = tmp_path / "hf"
  hf_dir.mkdir()
  (hf_dir / "config.json").write_text(json.dumps({
      "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 1000,
      "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
      "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
      "rope_theta": 10000.0, "tie_word_embeddings": True, "max_position_embeddings": 512,
      "torch_dtype": "float32"}))
  config = load(QWEN_RL)
  config.init.from_hf = str(hf_dir)
  (p,) = plan.plan_config(config)
  assert p.model_source.endswith("config.json") and p.cfg.num_layers == 3
  assert p.cfg.vocab_size == 1000 and p.cfg.dtype == "bfloat16"   # the config's override
  run = tmp_path / "run"
  run.mkdir()
  model = rj.get_model_config("toy-1m", vocab_size=300).to_dict()
  (run / "config.json").write_text(json.dumps({"model": model}))
  ev = load(os.path.join(ROOT, "configs", "toy", "eval.py"))
  ev.init.from_checkpoint = f"{run}:10"
  (p,) = plan.plan_config(ev, eval_prompt_len=64)
  assert p.stage == "eval" and p.cfg.vocab_size == 300
  assert {i.phase for i in p.items} == {"resident", "prefill", "decode"}
  ev.init.from_checkpoint = ""
  with pytest.raises(ValueError, match="init.from_hf or init.from_checkpoint"):
    plan.plan_config(ev)
  with pytest.raises(ValueError, match="plan takes a cpt, sft, rl, eval or pipeline"):
    plan.plan_config(load(os.path.join(ROOT, "configs", "data.py")))


def test_pipeline_plans_every_stage_on_the_previous_model():
  config = load(os.path.join(ROOT, "configs", "toy", "pipeline.py"))
  config.cpt.model.size = "toy-7m"
  plans = plan.plan_config(config)
  assert [p.stage for p in plans] == ["cpt", "sft", "rl", "eval"]
  assert {p.cfg.hidden_size for p in plans} == {256}          # toy-7m throughout
  assert plans[2].model_source == "stage sft's model"


def test_resolve_mesh():
  assert plan.resolve_mesh(1, -1, 2, chips=16) == plan.MeshShape(1, 8, 2)
  assert plan.resolve_mesh(-1, 1, 1) == plan.MeshShape(1, 1, 1)
  with pytest.raises(ValueError, match="do not divide"):
    plan.resolve_mesh(1, -1, 3, chips=8)
  with pytest.raises(ValueError, match="needs 4 devices but chips=8"):
    plan.resolve_mesh(1, 4, 1, chips=8)


# ---------------------------------------------------------------------------------- command
def test_command_output():
  args = [f"--config={WRAPPER}:{QWEN_RL}", "--config.plan.accelerator=v5p",
          "--config.plan.chips=8"]
  rc, out, err = run_cli("plan", *args)
  assert rc == 0, err
  for text in ("plan of ", "(rl)", "1,543,714,304 params", "data=1 fsdp=8 tensor=1 = 8 chip",
               "memory per device", "resident", "KV cache", "gradients", "peak = resident + ",
               "v5p: fits:", "of 85.50 GiB usable", "step FLOPs", "sampling decode",
               "ideal step time on 8 x v5p at 40% MFU", "HBM floor"):
    assert text in out, text
  assert max(len(line) for line in out.splitlines()) <= 100
  # the same through plain flags (python -m rlvr_jax.plan)
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    assert plan.main(["plan", "--accelerator", "v5p", "--chips=8", f"--config={QWEN_RL}"]) == 0
  assert buf.getvalue() == out
  # no target: a table of every accelerator, -1 mesh axes taken as 1
  rc, out, _ = run_cli("plan", f"--config={TOY_SFT}", "--config.batch_size=4")
  assert rc == 0 and "fsdp=1" in out and "data=-1 taken as 1" in out
  for name in plan.ACCELERATORS:
    assert f"\n  {name} " in out


def test_bad_accelerator_is_one_clear_line():
  with pytest.raises(ValueError) as e:
    plan.get_accelerator("tpu-v4")
  msg = str(e.value)
  assert "\n" not in msg and "'tpu-v4'" in msg and "v5e, v5p, v6e, H100, H200" in msg
  assert plan.get_accelerator("h100").name == "H100"
  rc, out, err = run_cli("plan", f"--config={WRAPPER}:{TOY_SFT}",
                         "--config.plan.accelerator=A100")
  assert rc == 2 and out == ""
  assert err.strip().count("\n") == 0 and "unknown accelerator 'A100'" in err
