"""Google's tunix (0.1.7) as a same-run reference for `bench sample` and `bench rl`: the same
weights (written as a Hugging Face safetensors directory by `rj.save_hf`) loaded into tunix's
Llama-3 model, then timed through tunix's own sampler and GRPO learner.

tunix pins older safetensors/tokenizers than the test and TRL extras, so it gets its own venv:

  python3 -m venv .venv-tunix && .venv-tunix/bin/pip install -e '.[tunix]'
  .venv-tunix/bin/rlvr-jax bench sample --skip_hf --tunix

Only the bench imports this module, and only when asked (`--tunix`).
"""
from __future__ import annotations

import numpy as np

INSTALL_HINT = ("tunix is not installed in this environment: make a venv for it "
                "(python3 -m venv .venv-tunix && .venv-tunix/bin/pip install -e '.[tunix]') and "
                "run the bench from there")


def import_tunix():
  """tunix's modules the bench uses, or SystemExit with the install hint."""
  try:
    import tunix
    from tunix.generate import sampler
    from tunix.models.llama3 import model, params
  except ImportError as e:
    raise SystemExit(f"--tunix: {INSTALL_HINT} ({e})") from None
  return tunix, sampler, model, params


def tunix_version() -> str:
  from importlib import metadata
  try:
    return metadata.version("google-tunix")
  except metadata.PackageNotFoundError:
    return "?"


def llama_config(cfg):
  """tunix's Llama-3 ModelConfig for our ModelConfig (a llama-family config without biases)."""
  _, _, model, _ = import_tunix()
  if cfg.family != "llama" or cfg.qkv_bias or cfg.rope_scaling:
    raise SystemExit(f"--tunix: only plain Llama configs map onto tunix's Llama-3 model "
                     f"(got family={cfg.family!r}, qkv_bias={cfg.qkv_bias}, "
                     f"rope_scaling={cfg.rope_scaling})")
  return model.ModelConfig(
      num_layers=cfg.num_layers, vocab_size=cfg.vocab_size, embed_dim=cfg.hidden_size,
      hidden_dim=cfg.intermediate_size, num_heads=cfg.num_heads, head_dim=cfg.head_dim,
      num_kv_heads=cfg.num_kv_heads, rope_theta=int(cfg.rope_theta), norm_eps=cfg.rms_norm_eps,
      weight_tying=cfg.tie_embeddings)


def load_model(hf_dir: str, cfg):
  """tunix's Llama-3 nnx model holding the weights of the safetensors in `hf_dir`."""
  import jax.numpy as jnp
  _, _, _, params = import_tunix()
  return params.create_model_from_safe_tensors(hf_dir, llama_config(cfg), mesh=None,
                                               dtype=jnp.dtype(cfg.dtype))


class IdTokenizer:
  """The tokenizer interface tunix's sampler checks for, for prompts given as token ids. -1 is
  pad, BOS and EOS: no real token equals it, so every prompt position is attended to and no
  completion stops early (decoding runs exactly the steps asked for)."""

  def encode(self, text):
    raise NotImplementedError("the bench feeds token ids")

  def decode(self, ids):
    return " ".join(map(str, ids))

  def bos_id(self):
    return -1

  def eos_id(self):
    return -1

  def pad_id(self):
    return -1


def sampler_fn(model, cfg, prompts_BP: np.ndarray, new_tokens: int, temperature: float,
               seed: int = 0):
  """A callable that runs tunix's sampler (its jitted prefill, then its jitted decode
  while_loop, as `Sampler.__call__` runs them, minus the host-side tokenising and detokenising)
  on `prompts_BP` for `new_tokens` tokens and returns the new tokens [B, new_tokens] once they
  are ready. Greedy at temperature 0, else a draw from the full tempered softmax (top_p=1)."""
  import jax
  import jax.numpy as jnp
  _, sampler, _, _ = import_tunix()
  b, p = prompts_BP.shape
  total = p + new_tokens
  tunix_sampler = sampler.Sampler(model, IdTokenizer(), sampler.CacheConfig(
      cache_size=total, num_layers=cfg.num_layers, num_kv_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim))
  tunix_sampler.eos_ids = jnp.array([-1])           # what __call__ sets from eos_tokens
  prompts = jnp.asarray(prompts_BP, jnp.int32)
  weights = tunix_sampler._flattened_transformer_state

  def run():
    state = tunix_sampler.init_sample_state(
        prompts, total_sampling_steps=total, include_logits=False, forbidden_token_ids=None,
        temperature=temperature, top_p=1.0 if temperature else None, top_k=None,
        seed=jax.random.key(seed), beam_size=None)
    state = tunix_sampler._compiled_prefill_fn(weights, state, None, echo=False)
    state = tunix_sampler._compiled_decode_fn(weights, state)
    return jax.block_until_ready(state.token_buffer[:, p:])
  return run


def grpo_rounds(hf_dir: str, cfg, tokenizer, prompt_ids: np.ndarray, group: int,
                max_new_tokens: int, rounds: int, our_round, exact_length: bool, lr: float,
                beta: float, epsilon: float, stop_id: int) -> dict:
  """tunix's GRPOLearner (vanilla rollout, actor and reference colocated on one device) on the
  weights in `hf_dir` and the prompts `prompt_ids` (as the texts `tokenizer` turns back into
  exactly those ids): rounds + 1 steps, the first a warm-up; each timed around the learner's
  global step (generate, rewards, reference log-probs, loss, backward, optimizer), with
  `our_round` run after each timed step. exact_length: every completion `max_new_tokens` long;
  else each stops at `stop_id`. The optimizer matches ours: global-norm clip 1, then AdamW
  (no weight decay) at a constant `lr`."""
  import time

  import jax
  import optax
  import statistics

  from rlvr_jax.bench import timed_into
  import_tunix()
  from tunix.rl import rl_cluster as cluster_lib
  from tunix.rl.grpo import grpo_learner
  from tunix.rl.rollout import base_rollout
  b, p = prompt_ids.shape
  texts = [" ".join(f"t{i}" for i in row) for row in prompt_ids]
  tokenizer.bos_token = None            # tunix prepends the BOS it is given: give none
  assert [tokenizer.encode(t, add_special_tokens=False) for t in texts] == prompt_ids.tolist(), \
      "prompt ids differ"
  mesh = jax.make_mesh((1, 1), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2,
                       devices=jax.devices()[:1])
  optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0))
  config = cluster_lib.ClusterConfig(
      role_to_mesh={role: mesh for role in (cluster_lib.Role.ACTOR, cluster_lib.Role.REFERENCE,
                                            cluster_lib.Role.ROLLOUT)},
      rollout_engine="vanilla", offload_to_cpu=False,
      training_config=cluster_lib.RLTrainingConfig(
          actor_optimizer=optimizer, eval_every_n_steps=10**9, max_steps=rounds + 1,
          pbar_description=None),
      rollout_config=base_rollout.RolloutConfig(
          max_tokens_to_generate=max_new_tokens, max_prompt_length=p,
          kv_cache_size=p + max_new_tokens, temperature=1.0, top_p=1.0, top_k=None,
          eos_tokens=[-1] if exact_length else [stop_id]))
  cluster = cluster_lib.RLCluster(actor=load_model(hf_dir, cfg), reference=load_model(hf_dir, cfg),
                                  tokenizer=tokenizer, cluster_config=config)

  def reward_fn(prompts, completions, **kwargs):
    return [float(len(c) % 7) for c in completions]
  learner = grpo_learner.GRPOLearner(
      rl_cluster=cluster, reward_fns=reward_fn,
      algo_config=grpo_learner.GRPOConfig(num_generations=group, num_iterations=1, beta=beta,
                                          epsilon=epsilon, loss_agg_mode="token-mean"))
  times = {"step": [], "generate": [], "reward": [], "lengths": []}
  acc = {"generate": 0.0, "reward": 0.0, "lengths": []}

  cluster.generate = timed_into(
      acc, "generate", cluster.generate,
      lambda out: acc["lengths"].extend(len(ids) for ids in out.tokens))
  learner._compute_rewards = timed_into(acc, "reward", learner._compute_rewards)
  global_step = learner._run_global_step
  steps = {"n": 0}

  def timed_step(*a, **k):
    acc.update(generate=0.0, reward=0.0, lengths=[])
    t0 = time.perf_counter()
    out = global_step(*a, **k)
    dt = time.perf_counter() - t0
    steps["n"] += 1
    if steps["n"] > 1:                  # the first step is the warm-up (compiles)
      times["step"].append(dt)
      for k in ("generate", "reward"):
        times[k].append(acc[k])
      times["lengths"].extend(acc["lengths"])
      our_round()
    return out
  learner._run_global_step = timed_step
  learner.train([{"prompts": np.array(texts)} for _ in range(rounds + 2)])
  if len(times["step"]) != rounds:
    raise RuntimeError(f"tunix ran {len(times['step'])} timed steps, expected {rounds}")
  return {"step_s": statistics.median(times["step"]),
          "generate_s": statistics.median(times["generate"]),
          "reward_s": statistics.median(times["reward"]),
          "length_mean": float(np.mean(times["lengths"])),
          "info": f"tunix {tunix_version()}, vanilla rollout, jax {jax.__version__}"}
