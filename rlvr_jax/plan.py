r"""`rlvr-jax plan`: memory per device, FLOPs and ideal time of one step of a run config, and
whether it fits an accelerator, before anything is compiled or downloaded.

  rlvr-jax plan --config=configs/plan.py:configs/qwen2.5_math_1.5b/rl.py \
      --config.plan.accelerator=v5p --config.plan.chips=8 [--config.mesh.fsdp=8 ...]
  python -m rlvr_jax.plan --accelerator=v5p --chips=8 \
      --config=configs/qwen2.5_math_1.5b/rl.py [--config.x=y ...]
  rlvr-jax plan --config=configs/toy/sft.py          (no target: every accelerator, 1 chip)

The planned config is any cpt / sft / rl / eval config, or a pipeline config (every stage is
planned; sft builds on cpt's model, rl on sft's, eval on the last trained stage's). The
target is `plan.*` (configs/plan.py wraps the planned config and adds that section; `python -m
rlvr_jax.plan` turns --accelerator / --chips / --headroom / --mfu / --eval_prompt_len into
it): plan.accelerator (one of ACCELERATORS; '' = a verdict for each), plan.chips (devices; a
mesh axis of -1 takes the rest, as sharding.make_mesh does; 0 = the product of the fixed axes),
plan.headroom (usable share of HBM, 0.9), plan.mfu (model FLOPs utilisation of the ideal time,
0.4), plan.eval_prompt_len (prompt block of an eval config, which does not fix one: 256).

Model: init.from_hf's config.json or init.from_checkpoint's config.json when given and
present, else the named size model.size (vocab_size 0 = the tokenizer's: the built-in toy
tokenizer's 1024 for a toy size without data.tokenizer, else the size's own), then the
config's model.* overrides, as the run resolves them.

Notation: N parameters (N_body without the embedding and lm_head), L layers, d hidden, f mlp,
n heads, k kv heads, h head_dim, V vocab; p / c bytes of param_dtype / dtype (compute); mesh
(data, fsdp, tensor) = (D, F, t); a dimension sharded over t is written x_t = x / t.

Memory per device (bytes). Parameters are sharded by sharding.RULES: every leaf's dimension is
divided by the mesh axes its logical name maps to (embed -> fsdp; vocab, heads, kv_heads, mlp ->
tensor; norms replicated), so a matrix holds ~1/(F·t) of itself per device.
  parameters     N_dev·p                 (the f32 master weights with param_dtype float32)
  optimizer      2·N_dev·p               AdamW μ and ν: optax keeps them in the parameters'
                                         dtype (f32 with f32 master weights; no second copy)
  reference      N_dev·p                 RL: the frozen initial params, same shardings
  gradients      4·N_dev (+ N_dev·p)     f32 gradients / accumulator (+ one microbatch's
                                         gradient in param_dtype when microbatches > 1)
  activations    tokens_dev·(L·A_keep + A_layer) + head_tokens_dev·H
                 tokens_dev = rows/(D·F) · sequence length, per microbatch
  gathered       2·W_layer·c + V·d_t·c   fsdp > 1: one layer's weights all-gathered in compute
                                         dtype, the next one prefetched, and the output head
  optimizer      gradients + 1.5·N_dev·p  the update after the backward pass (activations dead):
                                         new μ, ν and the update tree exist before the non-finite
                                         guard selects them (1.0-1.7 trees live on XLA:CPU)
Per token and layer, with S the attention context (T, or prompt + response in RL):
  A_layer (remat none: everything the backward pass reads)
    = c·(4d + 3·n_t·h + 4·k_t·h + 4·f_t) + 8d + (8 + c)·n_t·S + S
      residual, two norm outputs; q, k, v before and after RoPE; attention output; the MLP's
      gate, up, silu(gate), product; f32 RMSNorm inputs; the scores (f32: jax.nn's XLA
      attention materialises them; the model gives it causal query blocks, so n_t·S stands
      for the ~10/16 of the square it computes, transformer.score_share), probs in f32 and c,
      the mask
  A_keep = A_layer                                      remat none
         = c·d                                          remat full (the layer input: nn.scan carry)
         = c·(3d + 2·n_t·h + 2·k_t·h + 2·f_t) + 4·n_t·S   remat dots (outputs of every dot)
         = c·(3d + n_t·h + 2·k_t·h + 2·f_t)             remat dots_no_batch (not the attention
                                                        einsums, which have batch dimensions)
  plus one layer's A_layer as the working set of its backward (its recompute under remat);
  H = 8·V_t (+ c·V_t when c < 4): f32 logits and their f32 gradient (and the compute-dtype
  matmul output) on the tokens that reach the output head (RL: the M response positions).
Sampler (RL rollouts, eval):
  KV cache       L·rows_dev·k_t·h·(P + M)·2·c      rows_dev = prompts·samples/(D·F)
  + the unstacked layer weights (W_layers·p, SampleConfig.unstack_weights), the N×M output
  buffers (16 B per token) and logits (3 × 4·V_t per row); prefill: one layer's A_layer over
  prompts_dev·P tokens plus the P-slot cache.
Peak = resident (parameters, optimizer, reference) + the largest phase (backward | optimizer |
RL reference forward | prefill | decode | eval decode). Checked against XLA:CPU's compiled memory
on toy sizes in f32 (tests/test_plan.py holds the train step and the RL update and decode phases
to 0.5-2x; at the tests' XLA optimisation level they land at 0.86-1.66x, 0.96-1.26x and
0.90-0.95x).

FLOPs of one step (model FLOPs: remat recompute not counted, the MFU convention of
bench/train.py):
  train          B·T·(6·(N_body + V·d) + 12·L·T·n·h)           (ModelConfig.flops_per_token)
  forward token  2·N_body + 2·V·d [head] + 4·L·S·n·h
  RL sampling    prefill B·P tokens (head on the last one) + decode B·V_s·M tokens, S = P + M
                 (decode attends every cache slot, masked)
  RL reference   B·G·(P + M) forward tokens, head on the M response positions (if kl_coef or
                 log_kl; once more for the trainer's old log-probs when minibatches > 1)
  RL update      epochs·B·G·(P + M)·(6·N_body + 12·L·S·n·h) + epochs·B·G·M·6·V·d
Ideal time = FLOPs / (chips · peak bf16 FLOP/s · MFU); decode is at least its HBM floor
M · (N_dev·p + KV cache per device) / HBM bandwidth (every step reads the weights and the
whole cache). Not modelled: communication (fsdp all-gathers every layer's weights in every
decode step), host work, resampled prompt batches.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import Any, Sequence

import numpy as np

from rlvr_jax import specs
from rlvr_jax.model.config import ModelConfig
from rlvr_jax.model.transformer import score_share

GIB = 2 ** 30
KIND_NAMES = ("cpt", "sft", "rl", "eval")
DEFAULTS = dict(accelerator="", chips=0, headroom=0.9, mfu=0.4, eval_prompt_len=256)


# ---------------------------------------------------------------------------------- targets
@dataclasses.dataclass(frozen=True)
class Accelerator:
  """One chip: HBM (GiB), dense bf16 peak FLOP/s and HBM bandwidth (bytes/s, spec sheets)."""
  name: str
  hbm_gib: float
  peak_flops: float
  hbm_bandwidth: float

  @property
  def hbm_bytes(self) -> float:
    return self.hbm_gib * GIB


ACCELERATORS: dict[str, Accelerator] = {a.name: a for a in (
    Accelerator("v5e", 16, 197e12, 819e9),
    Accelerator("v5p", 95, 459e12, 2765e9),
    Accelerator("v6e", 32, 918e12, 1640e9),
    Accelerator("H100", 80, 989e12, 3350e9),     # SXM, dense bf16
    Accelerator("H200", 141, 989e12, 4800e9),
)}


def get_accelerator(name: str) -> Accelerator:
  """The accelerator named `name` (case-insensitive); ValueError (one line) otherwise."""
  for key, acc in ACCELERATORS.items():
    if str(name).strip().lower() == key.lower():
      return acc
  raise ValueError(f"unknown accelerator {name!r}; choose one of {', '.join(ACCELERATORS)} "
                   f"(name the chip; give the device count with --chips / plan.chips)")


@dataclasses.dataclass(frozen=True)
class MeshShape:
  data: int
  fsdp: int
  tensor: int

  @property
  def devices(self) -> int:
    return self.data * self.fsdp * self.tensor

  @property
  def batch_shards(self) -> int:
    return self.data * self.fsdp

  def size(self, axis: str) -> int:
    return getattr(self, axis)


def resolve_mesh(data: int, fsdp: int, tensor: int, chips: int = 0) -> MeshShape:
  """(data, fsdp, tensor) with one -1 taking the remaining of `chips` devices (as
  sharding.make_mesh does); chips=0: the product of the fixed axes (-1 -> 1)."""
  shape = [int(data), int(fsdp), int(tensor)]
  if shape.count(-1) > 1:
    raise ValueError(f"mesh {tuple(shape)}: at most one of mesh.data/fsdp/tensor may be -1")
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh {tuple(shape)}: each axis must be >= 1 or -1")
  known = int(np.prod([s for s in shape if s != -1]))
  chips = int(chips)
  if chips < 0:
    raise ValueError(f"chips={chips} must be >= 0 (0 = the product of the fixed mesh axes)")
  if not chips:
    chips = known
  if -1 in shape:
    if chips % known:
      raise ValueError(f"mesh {tuple(shape)}: {chips} chips do not divide by {known}; give a "
                       f"multiple of {known} chips or change the mesh")
    shape[shape.index(-1)] = chips // known
  elif known != chips:
    raise ValueError(f"mesh {tuple(shape)} needs {known} devices but chips={chips}; change "
                     f"mesh.data/fsdp/tensor so their product is {chips} (or use -1 for one)")
  return MeshShape(*shape)


# ---------------------------------------------------------------------------------- parameters
@dataclasses.dataclass(frozen=True)
class ParamSpec:
  """One parameter leaf: its path, shape and logical axis names (model/transformer.py)."""
  path: str
  shape: tuple[int, ...]
  axes: tuple[str, ...]

  @property
  def size(self) -> int:
    return int(np.prod(self.shape))


def param_specs(cfg: ModelConfig) -> tuple[ParamSpec, ...]:
  """The decoder's parameter leaves, as model/transformer.py lays them out (layers stacked)."""
  L, d, f, v = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
  n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  lay = "layers/"
  specs = [ParamSpec("embed_tokens/embedding", (v, d), ("vocab", "embed")),
           ParamSpec(lay + "input_layernorm/scale", (L, d), ("layers", "norm")),
           ParamSpec(lay + "post_attention_layernorm/scale", (L, d), ("layers", "norm"))]
  for name, heads, axis in (("q", n, "heads"), ("k", k, "kv_heads"), ("v", k, "kv_heads")):
    specs.append(ParamSpec(f"{lay}self_attn/{name}_proj/kernel", (L, d, heads, h),
                           ("layers", "embed", axis, "head_dim")))
    if cfg.qkv_bias:
      specs.append(ParamSpec(f"{lay}self_attn/{name}_proj/bias", (L, heads, h),
                             ("layers", axis, "head_dim")))
  specs += [ParamSpec(lay + "self_attn/o_proj/kernel", (L, n, h, d),
                      ("layers", "heads", "head_dim", "embed")),
            ParamSpec(lay + "mlp/gate_proj/kernel", (L, d, f), ("layers", "embed", "mlp")),
            ParamSpec(lay + "mlp/up_proj/kernel", (L, d, f), ("layers", "embed", "mlp")),
            ParamSpec(lay + "mlp/down_proj/kernel", (L, f, d), ("layers", "mlp", "embed")),
            ParamSpec("norm/scale", (d,), ("norm",))]
  if not cfg.tie_embeddings:
    specs.append(ParamSpec("lm_head/kernel", (d, v), ("embed", "vocab")))
  return tuple(specs)


def num_params(cfg: ModelConfig) -> int:
  """Σ leaf sizes = L·(d·(n + 2k)·h + n·h·d + 3·d·f + 2d [+ (n + 2k)·h biases]) + d
  + V·d·(1 if tied else 2)."""
  return sum(s.size for s in param_specs(cfg))


def _rules() -> dict[str, Any]:
  from rlvr_jax import sharding
  return dict(sharding.RULES)


def shard_size(spec: ParamSpec, mesh: MeshShape, rules: dict[str, Any] | None = None,
               axes: Sequence[str] = ("data", "fsdp", "tensor")) -> int:
  """Elements of `spec` on one device: each dimension divided (rounded up) by the mesh axes
  (among `axes`) its logical name maps to in the rule table."""
  rules = _rules() if rules is None else rules
  total = 1
  for dim, name in zip(spec.shape, spec.axes):
    mapped = rules.get(name)
    mapped = () if mapped is None else (mapped,) if isinstance(mapped, str) else tuple(mapped)
    div = int(np.prod([mesh.size(a) for a in mapped if a in axes]))
    total *= -(-dim // div)
  return total


def params_per_device(cfg: ModelConfig, mesh: MeshShape, *, layers_only: bool = False,
                      axes: Sequence[str] = ("data", "fsdp", "tensor")) -> int:
  rules = _rules()
  return sum(shard_size(s, mesh, rules, axes) for s in param_specs(cfg)
             if not layers_only or s.path.startswith("layers/"))


# ---------------------------------------------------------------------------------- per token
def _bytes(dtype: str) -> int:
  return int(np.dtype(dtype).itemsize) if dtype != "bfloat16" else 2


def layer_bytes_per_token(cfg: ModelConfig, context: int, tensor: int, policy: str) -> float:
  """Bytes one layer keeps per token for the backward pass under remat `policy` ('working' =
  what the whole layer holds while it runs: A_layer of the module docstring)."""
  c, d, h = _bytes(cfg.dtype), cfg.hidden_size, cfg.head_dim
  nh, kh = cfg.num_heads / tensor * h, cfg.num_kv_heads / tensor * h
  ft, nt = cfg.intermediate_size / tensor, cfg.num_heads / tensor
  scores = nt * context * score_share(context)       # XLA's attention in causal query blocks
  if policy in ("none", "working"):
    return c * (4 * d + 3 * nh + 4 * kh + 4 * ft) + 8 * d + (8 + c) * scores + context
  if policy == "full":
    return c * d
  if policy == "dots":
    return c * (3 * d + 2 * nh + 2 * kh + 2 * ft) + 4 * scores
  if policy == "dots_no_batch":
    return c * (3 * d + nh + 2 * kh + 2 * ft)
  raise ValueError(f"remat={policy!r} is not one of none, full, dots, dots_no_batch")


def head_bytes_per_token(cfg: ModelConfig, tensor: int) -> float:
  """H = 8·V_t (+ c·V_t when the compute dtype is narrower than f32)."""
  c, vt = _bytes(cfg.dtype), cfg.vocab_size / tensor
  return 8 * vt + (c * vt if c < 4 else 0)


def forward_flops_per_token(cfg: ModelConfig, context: int, head: bool = True) -> float:
  """2·N_body (+ 2·V·d) + 4·L·S·n·h."""
  body = 2 * cfg.num_params(include_embeddings=False)
  attn = 4 * cfg.num_layers * context * cfg.num_heads * cfg.head_dim
  return body + attn + (2 * cfg.vocab_size * cfg.hidden_size if head else 0)


def train_flops_per_token(cfg: ModelConfig, context: int, head: bool = True) -> float:
  """6·N_body (+ 6·V·d) + 12·L·S·n·h (= ModelConfig.flops_per_token with the head)."""
  return 3 * forward_flops_per_token(cfg, context, head)


# ---------------------------------------------------------------------------------- the plan
@dataclasses.dataclass(frozen=True)
class Item:
  """One memory term per device: `phase` is 'resident' or the phase it is live in."""
  label: str
  bytes: float
  phase: str
  how: str = ""


@dataclasses.dataclass(frozen=True)
class FlopItem:
  """FLOPs of one part of a step; `hbm_bytes` > 0 marks a decode loop whose time is at least
  hbm_bytes / bandwidth (bytes each device reads over the whole loop)."""
  label: str
  flops: float
  hbm_bytes: float = 0.0


@dataclasses.dataclass(frozen=True)
class StagePlan:
  """The plan of one stage: its model, mesh and batch, memory terms per device and FLOPs."""
  stage: str                    # cpt | sft | rl | eval
  cfg: ModelConfig
  model_source: str
  mesh: MeshShape
  mesh_note: str
  batch: str
  items: tuple[Item, ...]
  flops: tuple[FlopItem, ...]
  notes: tuple[str, ...]

  @property
  def resident_bytes(self) -> float:
    return sum(i.bytes for i in self.items if i.phase == "resident")

  def phase_bytes(self) -> dict[str, float]:
    out: dict[str, float] = {}
    for i in self.items:
      if i.phase != "resident":
        out[i.phase] = out.get(i.phase, 0.0) + i.bytes
    return out

  @property
  def largest_phase(self) -> tuple[str, float]:
    phases = self.phase_bytes()
    if not phases:
      return "", 0.0
    name = max(phases, key=phases.get)
    return name, phases[name]

  @property
  def peak_bytes(self) -> float:
    """Resident terms plus the largest phase."""
    return self.resident_bytes + self.largest_phase[1]

  def total(self, phase: str) -> float:
    return sum(i.bytes for i in self.items if i.phase == phase)

  @property
  def step_flops(self) -> float:
    return sum(f.flops for f in self.flops)


def fits(plan: StagePlan, acc: Accelerator, headroom: float = 0.9) -> bool:
  return plan.peak_bytes <= headroom * acc.hbm_bytes


def step_seconds(plan: StagePlan, acc: Accelerator, mfu: float = 0.4) -> dict[str, float]:
  """Ideal seconds per part of the step: FLOPs / (chips · peak · mfu), and for a decode loop
  at least its HBM floor (bytes per device / bandwidth)."""
  rate = plan.mesh.devices * acc.peak_flops * mfu
  return {f.label: max(f.flops / rate, f.hbm_bytes / acc.hbm_bandwidth) for f in plan.flops}


# ---------------------------------------------------------------------------------- config
def stage_spec(config) -> specs.RunSpec:
  """The RunSpec of a planned stage config (a wrapped config's `plan` section left out)."""
  if isinstance(config, specs.RunSpec):
    return config
  doc = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  doc.pop("plan", None)
  return specs.parse(doc)


def config_kind(config) -> str:
  """'pipeline', 'cpt', 'sft', 'rl' or 'eval' (ValueError for other configs)."""
  if isinstance(config, specs.RunSpec):
    return config.stage or "eval"
  keys = set(config.keys())
  if "stages" in keys:
    return "pipeline"
  stage = str(config.get("stage") or "")
  if stage in ("cpt", "sft", "rl"):
    return stage
  if "eval" in keys and "init" in keys and "steps" not in keys:
    return "eval"
  raise ValueError("plan takes a cpt, sft, rl, eval or pipeline config; this one has no "
                   "`stage` (cpt | sft | rl), `stages` or eval section (data / convert / "
                   "diagnose configs run no model step)")


def resolve_model(config, base: ModelConfig | None = None,
                  base_source: str = "") -> tuple[ModelConfig, str]:
  """(ModelConfig, where it came from): `base` (the previous pipeline stage's), else
  init.from_hf / init.from_checkpoint's config.json when present on this disk (nothing is
  fetched or loaded), else model.size; then the config's model.* overrides (run.init: the
  runs' resolver and override rule)."""
  from rlvr_jax.data.builtin import tokenizer_source
  from rlvr_jax.model.sizes import SIZES
  from rlvr_jax.run import init as init_lib
  spec = stage_spec(config)
  if base is not None:
    init_lib.resolve_source(spec, local=True)   # refuses init.from_hf and init.from_checkpoint
    return init_lib.model_config(spec, base=base), base_source
  source = init_lib.resolve_source(spec, local=True)
  if source.loaded:
    return init_lib.model_config(spec, source), source.description
  # a config that names no size plans nothing (the run would default to toy-1m)
  size = (spec.raw.get("model") or {}).get("size") if spec.raw else spec.model.size
  if not size:
    raise ValueError("no model to plan: init.from_hf / init.from_checkpoint is not a "
                     "directory with a config.json, and the config has no model.size")
  if size not in SIZES:
    raise ValueError(f"model.size={size!r} is not one of {sorted(SIZES)}")
  description = source.description
  vocab = spec.model.vocab_size
  if not vocab and str(size).startswith("toy-") and \
      not tokenizer_source(spec.data.tokenizer, from_checkpoint=spec.init.from_checkpoint):
    from rlvr_jax.data.builtin import TOY_VOCAB_SIZE
    vocab = TOY_VOCAB_SIZE
    description += f", vocab {vocab} of the built-in toy tokenizer"
  return init_lib.model_config(spec, source, vocab_size=vocab), description


def _mesh(config, chips: int) -> tuple[MeshShape, str]:
  raw = stage_spec(config).mesh.shape
  mesh = resolve_mesh(*raw, chips=chips)
  note = ""
  if -1 in raw:
    axis = ("data", "fsdp", "tensor")[raw.index(-1)]
    note = (f"{axis}=-1: the remaining of {mesh.devices} chip(s)" if chips else
            f"{axis}=-1 taken as 1: no plan.chips given")
  return mesh, note


def _divisibility(cfg: ModelConfig, mesh: MeshShape, batches: dict[str, int]) -> list[str]:
  notes = []
  for name in ("num_heads", "num_kv_heads", "intermediate_size", "vocab_size"):
    if getattr(cfg, name) % mesh.tensor:
      notes.append(f"model {name}={getattr(cfg, name)} does not divide over tensor="
                   f"{mesh.tensor} (the run refuses it)")
  if cfg.hidden_size % mesh.fsdp:
    notes.append(f"hidden_size={cfg.hidden_size} does not divide over fsdp={mesh.fsdp} (the run "
                 f"refuses it)")
  for what, rows in batches.items():
    if rows % mesh.batch_shards:
      notes.append(f"{what}={rows} does not divide over data x fsdp = {mesh.batch_shards} (the "
                   f"run refuses it; rounded up here)")
  return notes


def _ceil_div(a: int, b: int) -> int:
  return -(-int(a) // int(b))


def _state_items(cfg: ModelConfig, mesh: MeshShape, *, reference: bool) -> list[Item]:
  n_dev, p = params_per_device(cfg, mesh), _bytes(cfg.param_dtype)
  share = f"N/{mesh.fsdp * mesh.tensor}" if mesh.fsdp * mesh.tensor > 1 else "N"
  items = [Item("parameters", n_dev * p, "resident", f"{share} x {p} B ({cfg.param_dtype})"),
           Item("optimizer: AdamW mu, nu", 2 * n_dev * p, "resident",
                f"2 x {share} x {p} B ({cfg.param_dtype})")]
  if reference:
    items.append(Item("reference parameters", n_dev * p, "resident",
                      f"{share} x {p} B (frozen initial model)"))
  return items


def _grad_items(cfg: ModelConfig, mesh: MeshShape, microbatches: int, phase: str) -> list[Item]:
  n_dev, p = params_per_device(cfg, mesh), _bytes(cfg.param_dtype)
  extra = n_dev * p if microbatches > 1 else 0
  how = "f32" + (f" accumulator + {p} B microbatch grad" if extra else "")
  return [Item("gradients", 4 * n_dev + extra, phase, how)]


def _optimizer_items(cfg: ModelConfig, mesh: MeshShape, microbatches: int) -> list[Item]:
  """The optimizer update after the backward pass (activations are dead by then)."""
  n_dev, p = params_per_device(cfg, mesh), _bytes(cfg.param_dtype)
  return _grad_items(cfg, mesh, microbatches, "optimizer") + [
      Item("AdamW update temporaries", 1.5 * n_dev * p, "optimizer",
           "new mu, nu, update before the finite select: 1.5 x N_dev x p")]


def _activation_items(cfg: ModelConfig, mesh: MeshShape, rows_dev: int, seq: int,
                      head_tokens_dev: int, phase: str, *, backward: bool = True) -> list[Item]:
  """Activations of `rows_dev` rows of `seq` tokens on one device (module docstring)."""
  t, tokens = mesh.tensor, rows_dev * seq
  remat = cfg.remat if backward else "forward"
  # the backward of an unrolled layer scan (model.scan_unroll) holds that many layers' working
  # sets at once (measured against XLA:CPU's compiled update, tests/test_plan.py)
  unrolled = min(cfg.scan_unroll, cfg.num_layers) if backward else 1
  working = unrolled * tokens * layer_bytes_per_token(cfg, seq, t, "working")
  head = head_tokens_dev * head_bytes_per_token(cfg, t)
  items = []
  if backward:
    keep = tokens * cfg.num_layers * layer_bytes_per_token(cfg, seq, t, cfg.remat)
    items.append(Item(f"activations kept (remat {remat})", keep, phase,
                      f"{cfg.num_layers} layers x {rows_dev} row(s) x {seq} tokens"))
  items += [Item("layer working set", working, phase,
                 f"{'one layer' if unrolled == 1 else f'{unrolled} layers (scan_unroll)'}"
                 f"{' recomputed' if backward and cfg.remat != 'none' else ''}, {tokens} tokens"),
            Item(f"output head (f32 logits{' + grad' if backward else ''})", head, phase,
                 f"{head_tokens_dev} tokens x {cfg.vocab_size // t} vocab")]
  if mesh.fsdp > 1:
    c = _bytes(cfg.dtype)
    layer = params_per_device(cfg, mesh, layers_only=True, axes=("tensor",)) / cfg.num_layers
    head_w = cfg.vocab_size * cfg.hidden_size / t
    items.append(Item("all-gathered weights (fsdp)", (2 * layer + head_w) * c, phase,
                      f"2 layers + output head in {cfg.dtype}"))
  return items


def _sampler_items(cfg: ModelConfig, mesh: MeshShape, prompts: int, samples: int, p_len: int,
                   m_len: int, prefix: str = "") -> tuple[list[Item], float]:
  """Memory of one sampler call (prefill and decode phases) and the bytes one decode step
  reads per device (weights + the whole cache)."""
  c, p, t = _bytes(cfg.dtype), _bytes(cfg.param_dtype), mesh.tensor
  rows_dev = _ceil_div(prompts * samples, mesh.batch_shards)
  prompts_dev = _ceil_div(prompts, mesh.batch_shards)
  kv_t = _ceil_div(cfg.num_kv_heads, t)
  slot = cfg.num_layers * kv_t * cfg.head_dim * 2 * c
  cache = slot * rows_dev * (p_len + m_len)
  prefill_cache = slot * prompts_dev * p_len
  weights = params_per_device(cfg, mesh, layers_only=True) * p
  buffers = rows_dev * m_len * 16 + 3 * rows_dev * cfg.vocab_size / t * 4
  pre, dec = f"{prefix}prefill", f"{prefix}decode"
  items = [Item("layer working set",
                prompts_dev * p_len * layer_bytes_per_token(cfg, p_len, t, "working"), pre,
                f"{prompts_dev} prompt(s) x {p_len} tokens"),
           Item("KV cache of the prompt block", prefill_cache, pre, f"{p_len} slots"),
           Item("KV cache", cache, dec,
                f"{cfg.num_layers} x {rows_dev} rows x {kv_t} x {cfg.head_dim} x "
                f"{p_len + m_len} x 2 x {c} B"),
           Item("unstacked layer weights", weights, dec, f"{cfg.param_dtype} copy"),
           Item("output buffers and logits", buffers, dec,
                f"{rows_dev} rows x ({m_len} x 16 B + 3 x V_t x 4 B)")]
  read_per_step = params_per_device(cfg, mesh) * p + cache
  return items, read_per_step


def _train_plan(config, stage: str, cfg: ModelConfig, source: str, chips: int) -> StagePlan:
  spec = stage_spec(config)
  mesh, mesh_note = _mesh(spec, chips)
  b, seq = spec.batch_size, spec.seq_len
  micro = max(spec.microbatches, 1)
  rows_dev = _ceil_div(_ceil_div(b, micro), mesh.batch_shards)
  items = _state_items(cfg, mesh, reference=False)
  items += _grad_items(cfg, mesh, micro, "backward")
  items += _activation_items(cfg, mesh, rows_dev, seq, rows_dev * seq, "backward")
  items += _optimizer_items(cfg, mesh, micro)
  notes = _divisibility(cfg, mesh, {"batch_size/microbatches": b // micro})
  if seq > cfg.max_seq_len:
    notes.append(f"seq_len={seq} exceeds the model's max_seq_len={cfg.max_seq_len}")
  batch = (f"{b} sequences x {seq} tokens"
           + (f" in {micro} microbatches" if micro > 1 else "")
           + f"; {rows_dev} row(s) per device per microbatch")
  flops = (FlopItem(f"train: {b} x {seq} tokens x (6N + 12 L T n h)",
                    b * seq * train_flops_per_token(cfg, seq)),)
  return StagePlan(stage, cfg, source, mesh, mesh_note, batch, tuple(items), flops,
                   tuple(notes))


def _rl_plan(config, cfg: ModelConfig, source: str, chips: int) -> StagePlan:
  spec = stage_spec(config)
  r = spec.rl
  mesh, mesh_note = _mesh(spec, chips)
  b, g = spec.batch_size, r.group_size
  votes = r.vote_samples or g
  p_len, m_len = spec.data.max_prompt_len, r.max_new_tokens
  k_mb, k_micro, epochs = max(r.minibatches, 1), max(r.microbatches, 1), max(r.epochs, 1)
  rows = b * g
  chunk = _ceil_div(rows, k_mb * k_micro)
  rows_dev = _ceil_div(chunk, mesh.batch_shards)
  seq = p_len + m_len
  with_ref = r.kl_coef != 0 or r.log_kl
  old_trainer = r.old_logprobs == "trainer"
  trainer_pass = (old_trainer and epochs * k_mb > 1) or (r.log_mismatch and k_mb > 1)

  items = _state_items(cfg, mesh, reference=True)
  sample_items, read_per_step = _sampler_items(cfg, mesh, b, votes, p_len, m_len)
  items += sample_items
  if with_ref or trainer_pass:
    items += _activation_items(cfg, mesh, rows_dev, seq, rows_dev * m_len, "reference forward",
                               backward=False)
  items += _grad_items(cfg, mesh, k_micro, "update backward")
  items += _activation_items(cfg, mesh, rows_dev, seq, rows_dev * m_len, "update backward")
  items += _optimizer_items(cfg, mesh, k_micro)
  evaluates = (spec.eval_every or spec.eval_at_end) and (spec.eval.domains or spec.eval.files)
  if evaluates:
    eb, ek, em = spec.eval.batch_size, spec.eval.k, spec.eval.max_new_tokens
    eval_items, _ = _sampler_items(cfg, mesh, eb, ek, p_len, em, prefix="eval ")
    items += [i for i in eval_items if i.phase == "eval decode"]

  notes = _divisibility(cfg, mesh, {"batch_size": b, "rows per microbatch": chunk})
  if seq > cfg.max_seq_len:
    notes.append(f"data.max_prompt_len + rl.max_new_tokens = {seq} exceeds max_seq_len="
                 f"{cfg.max_seq_len}")
  if r.dynamic_sampling == "resample":
    notes.append(f"dynamic_sampling=resample: up to {r.resample_rounds}"
                 f" more sampler calls per step (not counted in the FLOPs)")
  if mesh.fsdp > 1:
    notes.append("fsdp > 1: every decode step all-gathers each layer's weights (communication "
                 "not modelled in the time)")
  batch = (f"{b} prompts x {votes} samples = {b * votes} rollout rows of {p_len} prompt + "
           f"{m_len} new tokens; update: {epochs} epoch(s) x {k_mb} minibatch(es) x {k_micro} "
           f"microbatch(es) = {chunk} rows per microbatch, {rows_dev} per device")
  if evaluates:
    batch += f"; eval: {eb} prompts x {ek} samples of {p_len} + {em} tokens"
  fwd_rows = rows * ((1 if with_ref else 0) + (1 if trainer_pass else 0))
  prefill = (b * p_len * forward_flops_per_token(cfg, p_len, head=False)
             + b * 2 * cfg.vocab_size * cfg.hidden_size)
  decode = b * votes * m_len * forward_flops_per_token(cfg, seq)
  forward = fwd_rows * (seq * forward_flops_per_token(cfg, seq, head=False)
                        + m_len * 2 * cfg.vocab_size * cfg.hidden_size)
  update = epochs * rows * (seq * train_flops_per_token(cfg, seq, head=False)
                            + m_len * 6 * cfg.vocab_size * cfg.hidden_size)
  flops = [FlopItem(f"sampling prefill: {b} x {p_len} tokens", prefill),
           FlopItem(f"sampling decode: {b * votes} rows x {m_len} tokens", decode,
                    hbm_bytes=m_len * read_per_step)]
  if fwd_rows:
    what = " + ".join(w for w, on in (("reference", with_ref), ("trainer", trainer_pass)) if on)
    flops.append(FlopItem(f"{what} forward: {fwd_rows} rows x {seq} tokens", forward))
  flops.append(FlopItem(f"update: {epochs} x {rows} rows x {seq} tokens (6N + attention)",
                        update))
  return StagePlan("rl", cfg, source, mesh, mesh_note, batch, tuple(items), tuple(flops),
                   tuple(notes))


def _eval_plan(config, cfg: ModelConfig, source: str, chips: int,
               eval_prompt_len: int) -> StagePlan:
  spec = stage_spec(config)
  mesh, mesh_note = _mesh(spec, chips)
  e = spec.eval
  b, k, m_len = e.batch_size, e.k, e.max_new_tokens
  p_len = int(eval_prompt_len)
  n_dev, p = params_per_device(cfg, mesh), _bytes(cfg.param_dtype)
  items = [Item("parameters", n_dev * p, "resident", f"{cfg.param_dtype}")]
  sample_items, read_per_step = _sampler_items(cfg, mesh, b, k, p_len, m_len)
  items += sample_items
  notes = _divisibility(cfg, mesh, {"eval.batch_size": b})
  notes.append(f"prompt block {p_len} tokens assumed (plan.eval_prompt_len; the harness pads "
               f"to a bucket of the longest prompt)")
  batch = (f"{b} prompts x {k} samples = {b * k} rows of {p_len} prompt + {m_len} new tokens "
           f"per sampler call")
  flops = (FlopItem(f"prefill: {b} x {p_len} tokens",
                    b * p_len * forward_flops_per_token(cfg, p_len, head=False)),
           FlopItem(f"decode: {b * k} rows x {m_len} tokens",
                    b * k * m_len * forward_flops_per_token(cfg, p_len + m_len),
                    hbm_bytes=m_len * read_per_step))
  return StagePlan("eval", cfg, source, mesh, mesh_note, batch, tuple(items), flops,
                   tuple(notes))


def plan_config(config, *, chips: int = 0,
                eval_prompt_len: int = 256) -> tuple[StagePlan, ...]:
  """The plan of every stage of `config` (one for a cpt / sft / rl / eval config)."""
  kind = config_kind(config)
  if kind != "pipeline":
    cfg, source = _model_for(config, kind)
    return (_stage_plan(config, kind, cfg, source, chips, eval_prompt_len),)
  stages = [s.strip() for s in str(config.stages).split(",") if s.strip()]
  unknown = [s for s in stages if s not in KIND_NAMES]
  if unknown:
    raise ValueError(f"config.stages has unknown stages {unknown}; choose from {KIND_NAMES}")
  plans, prev = [], None
  for stage in stages:
    sub = config[stage]
    base, base_source = (None, "") if prev is None else (prev.cfg, f"stage {prev.stage}'s model")
    sub = stage_spec(sub)
    own_init = sub.init.from_hf or sub.init.from_checkpoint
    if own_init or stage == "cpt":
      base = None
    cfg, source = _model_for(sub, stage, base, base_source)
    plan = _stage_plan(sub, stage, cfg, source, chips, eval_prompt_len)
    plans.append(plan)
    if stage != "eval":
      prev = plan
  return tuple(plans)


def _model_for(config, kind: str, base: ModelConfig | None = None, base_source: str = ""):
  if kind == "eval" and base is None:
    init = stage_spec(config).init
    has = init.from_hf or init.from_checkpoint
    if not has:
      raise ValueError("an eval config names its model by init.from_hf or "
                       "init.from_checkpoint (a directory with a config.json); set one")
  return resolve_model(config, base, base_source)


def _stage_plan(config, kind, cfg, source, chips, eval_prompt_len) -> StagePlan:
  if kind in ("cpt", "sft"):
    return _train_plan(config, kind, cfg, source, chips)
  if kind == "rl":
    return _rl_plan(config, cfg, source, chips)
  return _eval_plan(config, cfg, source, chips, eval_prompt_len)


def smallest_chips(plan_fn, acc: Accelerator, headroom: float, limit: int = 4096) -> int | None:
  """The smallest power-of-two chip count whose plan (plan_fn(chips)) fits `acc`."""
  chips = 1
  while chips <= limit:
    try:
      if fits(plan_fn(chips), acc, headroom):
        return chips
    except ValueError:
      pass
    chips *= 2
  return None


# ---------------------------------------------------------------------------------- output
def fmt_bytes(x: float) -> str:
  for unit, scale in (("GiB", GIB), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
    if abs(x) >= scale or unit == "KiB":
      return f"{x / scale:.2f} {unit}"
  return f"{x:.0f} B"


def fmt_count(x: float) -> str:
  for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if x >= scale:
      return f"{x / scale:.3g}{unit}"
  return f"{x:.0f}"


def fmt_flops(x: float) -> str:
  for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
    if x >= scale:
      return f"{x / scale:.2f} {unit}"
  return f"{x / 1e6:.2f} MFLOP"


def fmt_seconds(s: float) -> str:
  if s >= 120:
    return f"{s / 60:.1f} min"
  if s >= 1:
    return f"{s:.2f} s"
  return f"{s * 1e3:.2f} ms"


def format_plan(plan: StagePlan, acc: Accelerator | None, *, headroom: float = 0.9,
                mfu: float = 0.4, title: str = "", smallest: dict[str, int | None] | None = None
                ) -> str:
  """The plan as text (lines <= 100 columns): model, mesh, batch, memory per device by phase,
  the verdict per accelerator, the step's FLOPs and its ideal time."""
  cfg, mesh = plan.cfg, plan.mesh
  n = num_params(cfg)
  lines = [title or f"plan of the {plan.stage} stage"]
  lines += _wrap(f"  model   {plan.model_source}: {n:,} params ({fmt_count(n)}; "
                 f"{fmt_count(cfg.num_params(include_embeddings=False))} without embeddings)",
                 " " * 10)
  lines += _wrap(f"          {cfg.num_layers} layers, d={cfg.hidden_size}, mlp="
                 f"{cfg.intermediate_size}, {cfg.num_heads} heads / {cfg.num_kv_heads} kv x "
                 f"{cfg.head_dim}, vocab {cfg.vocab_size}{', tied' if cfg.tie_embeddings else ''}"
                 f"; compute {cfg.dtype}, params {cfg.param_dtype}, remat {cfg.remat}",
                 " " * 10)
  lines.append(f"  mesh    data={mesh.data} fsdp={mesh.fsdp} tensor={mesh.tensor} = "
               f"{mesh.devices} chip(s)" + (f" ({plan.mesh_note})" if plan.mesh_note else ""))
  lines += _wrap(f"  batch   {plan.batch}", " " * 10)
  lines.append("")
  largest, _ = plan.largest_phase
  lines.append("  memory per device")
  for phase in ["resident", *plan.phase_bytes()]:
    total = plan.resident_bytes if phase == "resident" else plan.total(phase)
    tag = " (largest phase)" if phase == largest else ""
    lines.append(f"    {phase + tag:<42}{fmt_bytes(total):>12}")
    for it in plan.items:
      if it.phase == phase:
        row = f"      {it.label:<38}{fmt_bytes(it.bytes):>12}   {it.how}"
        lines += _wrap(row, " " * 59)
  peak = f"resident + {largest}" if largest else "resident"
  lines.append(f"    {'peak = ' + peak:<42}{fmt_bytes(plan.peak_bytes):>12}")
  lines.append("")
  lines.append(f"  step FLOPs (model FLOPs; remat recompute not counted)"
               f"{fmt_flops(plan.step_flops):>{100 - 55}}")
  for f in plan.flops:
    lines.append(f"    {f.label:<81}{fmt_flops(f.flops):>15}")
  lines.append("")
  if acc is not None:
    lines += _verdict_lines(plan, acc, headroom, mfu, smallest)
  else:
    lines.append(f"  {'accelerator':<12}{'usable HBM':>12}  {'verdict':<13}{'use':>5}"
                 f"{'ideal step':>13}   smallest power-of-two slice that fits")
    for a in ACCELERATORS.values():
      usable = headroom * a.hbm_bytes
      verdict = "fits" if fits(plan, a, headroom) else "DOES NOT FIT"
      s = (smallest or {}).get(a.name, 0)
      lines.append(f"  {a.name:<12}{fmt_bytes(usable):>12}  {verdict:<13}"
                   f"{100 * plan.peak_bytes / usable:>4.0f}%"
                   f"{fmt_seconds(sum(step_seconds(plan, a, mfu).values())):>13}   "
                   f"{_chips(s) if smallest is not None else '(no -1 mesh axis)'}".rstrip())
    lines += _wrap(f"  (usable = {headroom:g} x HBM; ideal step at {100 * mfu:.0f}% MFU of the "
                   f"bf16 peak on {mesh.devices} chip(s), decode at least its HBM floor)", "   ")
  for note in plan.notes:
    lines += _wrap(f"  note: {note}", "        ")
  return "\n".join(lines)


def _chips(n: int | None) -> str:
  return "> 4096 chips" if not n else f"{n} chip" + ("s" if n > 1 else "")


def _verdict_lines(plan: StagePlan, a: Accelerator, headroom: float, mfu: float,
                   smallest: dict[str, int | None] | None) -> list[str]:
  """The fit verdict and ideal step time on one accelerator, with the time of each part."""
  usable = headroom * a.hbm_bytes
  verdict = "fits" if fits(plan, a, headroom) else "DOES NOT FIT"
  line = (f"  {a.name}: {verdict}: {fmt_bytes(plan.peak_bytes)} of {fmt_bytes(usable)} usable "
          f"({headroom:g} x {a.hbm_gib:g} GiB), {100 * plan.peak_bytes / usable:.0f}%")
  if smallest is not None and a.name in smallest:
    line += f"; smallest power-of-two slice that fits: {_chips(smallest[a.name])}"
  lines = _wrap(line, "    ")
  secs = step_seconds(plan, a, mfu)
  lines += _wrap(f"  ideal step time on {plan.mesh.devices} x {a.name} at {100 * mfu:.0f}% MFU "
                 f"({a.peak_flops / 1e12:g} TFLOP/s bf16 each): "
                 f"{fmt_seconds(sum(secs.values()))}", "    ")
  if len(plan.flops) > 1 or any(f.hbm_bytes for f in plan.flops):
    parts = []
    for f in plan.flops:
      floor = (f" (HBM floor {fmt_seconds(f.hbm_bytes / a.hbm_bandwidth)} at "
               f"{a.hbm_bandwidth / 1e9:g} GB/s)" if f.hbm_bytes else "")
      parts.append(f"{f.label.split(':')[0]} {fmt_seconds(secs[f.label])}{floor}")
    lines += _wrap("    = " + " + ".join(parts), "      ")
  return lines


def _wrap(text: str, indent: str, width: int = 100) -> list[str]:
  import textwrap
  return textwrap.wrap(text, width=width, subsequent_indent=indent, break_on_hyphens=False) \
      or [text]


def options(config) -> dict[str, Any]:
  """plan.* of a wrapped config (configs/plan.py), DEFAULTS for the rest; checked."""
  out = dict(DEFAULTS)
  section = config["plan"] if "plan" in config.keys() else {}
  for key in DEFAULTS:
    if key in section and section[key] is not None:
      out[key] = type(DEFAULTS[key])(section[key])
  if out["accelerator"]:
    get_accelerator(out["accelerator"])
  if not 0 < out["headroom"] <= 1:
    raise ValueError(f"plan.headroom={out['headroom']} must lie in (0, 1]")
  if not 0 < out["mfu"] <= 1:
    raise ValueError(f"plan.mfu={out['mfu']} must lie in (0, 1]")
  if out["eval_prompt_len"] < 1:
    raise ValueError(f"plan.eval_prompt_len={out['eval_prompt_len']} must be >= 1")
  return out


def report(config, **opts) -> str:
  """The text `rlvr-jax plan` prints for `config` (plan.* options, or `opts`)."""
  o = {**options(config), **opts}
  acc = get_accelerator(o["accelerator"]) if o["accelerator"] else None
  plans = plan_config(config, chips=o["chips"], eval_prompt_len=o["eval_prompt_len"])
  name = ""
  if "plan" in config.keys() and config["plan"].get("config"):
    name = str(config["plan"]["config"])
  out = []
  for plan in plans:
    smallest = None
    sub = config[plan.stage] if len(plans) > 1 else config
    if -1 in stage_spec(sub).mesh.shape:
      def plan_at(chips, sub=sub, plan=plan):
        return _stage_plan(sub, plan.stage, plan.cfg, plan.model_source, chips,
                           o["eval_prompt_len"])
      accs = [acc] if acc else list(ACCELERATORS.values())
      smallest = {a.name: smallest_chips(plan_at, a, o["headroom"]) for a in accs}
    if len(plans) > 1:
      title = f"plan of {name + ': ' if name else 'the pipeline: '}stage {plan.stage}"
    else:
      title = f"plan of {name} ({plan.stage})" if name else f"plan of the {plan.stage} config"
    out.append(format_plan(plan, acc, headroom=o["headroom"], mfu=o["mfu"], title=title,
                           smallest=smallest))
  return "\n\n".join(out)


def run(config, workdir: str | None = None) -> int:
  """`rlvr-jax plan`: prints the plan of the config (module docstring); needs no workdir."""
  del workdir
  print(report(config))
  return 0


# ---------------------------------------------------------------------------------- flags
_OWN_FLAGS = ("accelerator", "chips", "headroom", "mfu", "eval_prompt_len")


def wrapped_argv(argv: Sequence[str], wrapper: str) -> list[str]:
  """`--accelerator=v5p --chips=8 --config=X [--config.a=b]` -> the `rlvr-jax plan` argv
  `--config=WRAPPER:X --config.plan.accelerator=v5p --config.plan.chips=8 [--config.a=b]`."""
  out, own = [], []
  args = list(argv)
  i = 0
  while i < len(args):
    a = args[i]
    m = re.match(r"^--(\w+)(?:=(.*))?$", a)
    if m and m.group(1) in _OWN_FLAGS:
      value = m.group(2)
      if value is None:
        if i + 1 >= len(args):
          raise ValueError(f"--{m.group(1)} needs a value")
        value, i = args[i + 1], i + 1
      own.append(f"--config.plan.{m.group(1)}={value}")
    elif a.startswith("--config="):
      out.append(f"--config={wrapper}:{a.split('=', 1)[1]}")
    elif a == "--config" and i + 1 < len(args):
      out.append(f"--config={wrapper}:{args[i + 1]}")
      i += 1
    else:
      out.append(a)
    i += 1
  return out + own


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m rlvr_jax.plan --accelerator=NAME --chips=N --config=PATH [--config.x=y]`."""
  from rlvr_jax import cli
  argv = list(sys.argv if argv is None else argv)
  wrapper = os.path.join(cli.REPO_ROOT, "configs", "plan.py")
  if not os.path.isfile(wrapper):
    print(f"rlvr-jax plan: error: {wrapper} not found (run from a checkout of the repository)",
          file=sys.stderr)
    return 2
  try:
    rest = wrapped_argv(argv[1:], wrapper)
  except ValueError as e:
    print(f"rlvr-jax plan: error: {e}", file=sys.stderr)
    return 2
  return cli.main(["rlvr-jax", "plan", *rest])


if __name__ == "__main__":
  sys.exit(main())
