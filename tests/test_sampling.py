"""The in-graph sampler: statistics equal teacher forcing, sampling laws, stopping, errors,
sharding, and greedy parity with transformers' `generate`."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import rlvr_jax as rj
from rlvr_jax import sampling, sharding
from rlvr_jax.model import transformer as T

CFG = rj.get_model_config("toy-1m", vocab_size=48, hidden_size=32, intermediate_size=64,
                          num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, max_seq_len=64)
PAD = 0
PROMPT_LENGTHS = np.array([5, 3, 8, 1], np.int32)
_forward = jax.jit(rj.forward, static_argnums=0)


@pytest.fixture(scope="module")
def params():
  """Random parameters drawn with numpy (no init compile). The lm_head is scaled up so that the
  logits (std ~2) make distributions, top-k and top-p sets far from uniform."""
  rng = np.random.default_rng(0)

  def draw(path, s):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return np.ones(s.shape, np.float32)
    std = 0.4 if "lm_head" in name else 0.02
    return rng.normal(0.0, std, s.shape).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, nn.unbox(T.abstract_params(CFG)))


@pytest.fixture(scope="module")
def prompts():
  toks = np.random.default_rng(1).integers(1, CFG.vocab_size, (4, 8)).astype(np.int32)
  return np.where(np.arange(8)[None] < PROMPT_LENGTHS[:, None], toks, PAD).astype(np.int32)


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _forward_np(params, seqs):
  """float64 logits of rj.forward on int32 rows, run in one fixed [32, 32] shape (one compile)."""
  n, t = seqs.shape
  block = np.full((32, 32), PAD, np.int32)
  block[:n, :t] = seqs
  return np.asarray(_forward(CFG, params, block), np.float64)[:n, :t]


def _teacher_forced_logits(params, prompts, lengths, out, num_samples):
  """float64 logits [N, M, V]: rj.forward on prompt + generated tokens, at each generated slot."""
  n, m = out.tokens.shape
  tokens = np.asarray(out.tokens)
  gen_len = np.asarray(out.lengths)
  seqs = np.full((n, prompts.shape[1] + m), PAD, np.int32)
  for r in range(n):
    b = r // num_samples
    seqs[r, :lengths[b]] = prompts[b, :lengths[b]]
    seqs[r, lengths[b]:lengths[b] + gen_len[r]] = tokens[r, :gen_len[r]]
  logits = _forward_np(params, seqs)
  res = np.zeros((n, m, CFG.vocab_size))
  for r in range(n):
    lb = lengths[r // num_samples]
    res[r, :gen_len[r]] = logits[r, lb - 1:lb - 1 + gen_len[r]]
  return res


@pytest.mark.parametrize("temperature,num_samples", [(1.0, 3), (0.7, 2)])
def test_statistics_equal_teacher_forced_forward(params, prompts, temperature, num_samples):
  out = rj.generate(CFG, params, prompts, PROMPT_LENGTHS, jax.random.key(3), max_new_tokens=6,
                    temperature=temperature, num_samples=num_samples, eos_id=(), pad_id=PAD)
  n = 4 * num_samples
  assert out.tokens.shape == (n, 6) and out.logprobs.shape == (n, 6)
  assert out.tokens.dtype == jnp.int32 and out.logprobs.dtype == jnp.float32
  np.testing.assert_array_equal(out.lengths, 6)
  logits = _teacher_forced_logits(params, prompts, PROMPT_LENGTHS, out, num_samples)
  z = logits / temperature
  logp = _np_log_softmax(z)
  tok = np.asarray(out.tokens)
  want_logprob = np.take_along_axis(logp, tok[..., None], -1)[..., 0]
  np.testing.assert_allclose(out.logprobs, want_logprob, atol=1e-4)
  np.testing.assert_allclose(out.entropy, -(np.exp(logp) * logp).sum(-1), atol=1e-4)
  lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
  np.testing.assert_allclose(out.self_certainty, lse - z.mean(-1), atol=1e-4)
  # Samples of one prompt share its prefill but are drawn independently.
  assert any(len({tuple(r) for r in tok[b * num_samples:(b + 1) * num_samples]}) > 1
             for b in range(4))


def test_greedy_takes_the_first_maximum_like_argmax():
  rng = np.random.default_rng(0)
  logits = rng.integers(-3, 3, (64, 37)).astype(np.float32)      # many ties per row
  logits[5] = -np.inf
  logits[5, 30] = 0.0                                             # a row of masked entries
  logits[6, :] = 2.5                                              # all tied: index 0
  got = np.asarray(jax.jit(sampling.Greedy().__call__)(jnp.asarray(logits), None))
  np.testing.assert_array_equal(got, np.argmax(logits, axis=-1))
  assert got[5] == 30 and got[6] == 0


def test_temperature_sampling_draws_from_tempered_softmax(params, prompts):
  t, s = 0.7, 3000
  out = rj.generate(CFG, params, prompts[:2], PROMPT_LENGTHS[:2], jax.random.key(4),
                    max_new_tokens=1, temperature=t, num_samples=s, eos_id=(), pad_id=PAD)
  logits = _forward_np(params, prompts[:2])
  first = np.asarray(out.tokens[:, 0]).reshape(2, s)
  for b in range(2):
    counts = np.bincount(first[b], minlength=CFG.vocab_size)

    def p_value(temp):
      p = np.exp(_np_log_softmax(logits[b, PROMPT_LENGTHS[b] - 1] / temp))
      big = p * s >= 5                  # pool the rare tokens into one bin
      obs = np.append(counts[big], counts[~big].sum())
      exp = np.append(p[big], p[~big].sum()) * s
      return scipy.stats.chisquare(obs, exp).pvalue
    assert p_value(t) > 1e-4
    assert p_value(1.0) < 1e-6         # the test can tell temperatures apart


def test_top_k_and_top_p_never_emit_masked_tokens(params, prompts):
  k, top_p, t = 4, 0.6, 0.9
  for kw in (dict(top_k=k), dict(top_p=top_p), dict(top_k=k, top_p=top_p)):
    out = rj.generate(CFG, params, prompts, PROMPT_LENGTHS, jax.random.key(5), max_new_tokens=5,
                      temperature=t, num_samples=8, eos_id=(), pad_id=PAD, **kw)
    logits = _teacher_forced_logits(params, prompts, PROMPT_LENGTHS, out, 8)
    tok = np.asarray(out.tokens)
    z_tok = np.take_along_axis(logits, tok[..., None], -1)[..., 0]
    z_sorted = -np.sort(-logits, axis=-1)
    if "top_k" in kw:
      assert np.all(z_tok >= z_sorted[..., k - 1]), kw
    if "top_p" in kw:
      zs = z_sorted[..., :k] if "top_k" in kw else z_sorted
      p = np.exp(_np_log_softmax(zs / t))
      mass_above = ((p * (zs > z_tok[..., None])).sum(-1))
      assert np.all(mass_above < top_p + 1e-5), kw
    assert np.mean(tok != logits.argmax(-1)) > 0.1, kw     # not just greedy
    # logprobs are those of the unfiltered tempered distribution (what a trainer recomputes)
    want = np.take_along_axis(_np_log_softmax(logits / t), tok[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.logprobs, want, atol=1e-4)


def _expected_stop(greedy, eos=(), stops=()):
  """Per-row generated length when stopping at the first EOS or completed stop sequence."""
  n, m = greedy.shape
  lengths = np.full(n, m)
  for r in range(n):
    for i in range(m):
      hit = greedy[r, i] in eos or any(
          i + 1 >= len(s) and tuple(greedy[r, i + 1 - len(s):i + 1]) == s for s in stops)
      if hit:
        lengths[r] = i + 1
        break
  return lengths


def test_eos_and_stop_sequences_end_rows_and_the_loop_exits_early(params, prompts):
  m = 8
  ref = rj.generate(CFG, params, prompts, PROMPT_LENGTHS, jax.random.key(0), max_new_tokens=m,
                    temperature=0.0, eos_id=(), pad_id=PAD)
  assert int(ref.num_steps) == m
  greedy = np.asarray(ref.tokens)
  # greedy statistics use T = 1: log softmax of the raw logits
  logits = _teacher_forced_logits(params, prompts, PROMPT_LENGTHS, ref, 1)
  np.testing.assert_array_equal(greedy, logits.argmax(-1))
  np.testing.assert_allclose(ref.logprobs, _np_log_softmax(logits).max(-1), atol=1e-4)

  # Rows 0, 1, 3 meet an EOS id by step 2, row 2 completes a stop sequence by step 1; the pad id
  # is one of the EOS ids (allowed: stopping looks only at freshly sampled tokens).
  eos = tuple(sorted({int(greedy[r, 2]) for r in (0, 1, 3)}))
  stops = ((int(greedy[2, 0]), int(greedy[2, 1])),)
  pad = eos[0]
  out = rj.generate(CFG, params, prompts, PROMPT_LENGTHS, jax.random.key(0), max_new_tokens=m,
                    temperature=0.0, eos_id=eos, pad_id=pad, stop_sequences=stops)
  want_len = _expected_stop(greedy, eos, stops)
  assert want_len.max() <= 3 and want_len[2] <= 2
  np.testing.assert_array_equal(out.lengths, want_len)
  assert int(out.num_steps) == want_len.max() < m        # the while_loop exited early
  tok = np.asarray(out.tokens)
  stats = [np.asarray(x) for x in (out.logprobs, out.entropy, out.self_certainty)]
  ref_stats = [np.asarray(x) for x in (ref.logprobs, ref.entropy, ref.self_certainty)]
  for r in range(4):
    n = want_len[r]
    np.testing.assert_array_equal(tok[r, :n], greedy[r, :n])
    assert np.all(tok[r, n:] == pad)
    for got, want in zip(stats, ref_stats):
      np.testing.assert_allclose(got[r, :n], want[r, :n], atol=1e-5)
      assert np.all(got[r, n:] == 0)


def test_prompt_buckets_bound_recompiles_and_lengths_can_be_inferred(params, prompts):
  buckets = [sampling.prompt_bucket(n) for n in (1, 8, 9, 33, 64, 65, 130)]
  assert buckets == [8, 8, 16, 64, 64, 128, 192]
  kw = dict(max_new_tokens=8, temperature=0.0, eos_id=(), pad_id=PAD)
  a = rj.generate(CFG, params, prompts, PROMPT_LENGTHS, jax.random.key(0), **kw)
  before = sampling._sample_jit._cache_size()
  # shorter prompts in a wider block, lengths inferred from the padding: same bucket, no recompile
  short = np.full((4, 12), PAD, np.int32)
  short[:, :6] = prompts[:, :6]
  short_len = np.minimum(PROMPT_LENGTHS, 6)
  b = rj.generate(CFG, params, short, None, jax.random.key(0), **kw)
  assert sampling._sample_jit._cache_size() == before
  c = rj.generate(CFG, params, short, short_len, jax.random.key(0), **kw)
  np.testing.assert_array_equal(b.tokens, c.tokens)
  same = PROMPT_LENGTHS <= 6
  np.testing.assert_array_equal(np.asarray(a.tokens)[same], np.asarray(b.tokens)[same])


def test_sample_core_inside_an_outer_jit(params, prompts):
  # unstack_weights=False (weights sliced inside each step) must give what the default gives
  config = sampling.SampleConfig(max_new_tokens=6, pad_id=PAD, temperature=1.0, num_samples=3,
                                 unstack_weights=False)

  @jax.jit
  def step(p, x, lengths, key):
    out = sampling.sample_core(CFG, p, x, lengths, key, config)
    return out.tokens, jnp.sum(out.logprobs)
  tokens, total = step(params, prompts, PROMPT_LENGTHS, jax.random.key(3))
  ref = rj.generate(CFG, params, prompts, PROMPT_LENGTHS, jax.random.key(3), max_new_tokens=6,
                    temperature=1.0, num_samples=3, eos_id=(), pad_id=PAD)
  np.testing.assert_array_equal(tokens, ref.tokens)
  np.testing.assert_allclose(total, np.sum(ref.logprobs), rtol=1e-5)


def test_sharded_greedy_generation_equals_single_device(params, prompts):
  kw = dict(max_new_tokens=8, temperature=0.0, eos_id=(), pad_id=PAD)
  ref = rj.generate(CFG, params, prompts, PROMPT_LENGTHS, jax.random.key(0), **kw)
  mesh = sharding.make_mesh((2, 2, 2))
  p_sharded = jax.device_put(params, sharding.param_shardings(CFG, mesh))
  with sharding.activate(mesh):
    out = rj.generate(CFG, p_sharded, prompts, PROMPT_LENGTHS, jax.random.key(0), **kw)
  assert len(out.tokens.sharding.device_set) == 8
  np.testing.assert_array_equal(out.tokens, ref.tokens)
  np.testing.assert_array_equal(out.lengths, ref.lengths)
  np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-5)


def test_bad_inputs_fail_before_compiling(params, prompts):
  def gen(p=prompts, lengths=PROMPT_LENGTHS, **kw):
    args = dict(max_new_tokens=4, temperature=1.0, eos_id=1, pad_id=PAD)
    args.update(kw)
    return rj.generate(CFG, params, p, lengths, jax.random.key(0), **args)
  before = sampling._sample_jit._cache_size()
  long_prompt = np.ones((1, 70), np.int32)
  with pytest.raises(ValueError, match="longer than the model's max_seq_len"):
    gen(long_prompt, np.array([70]))
  with pytest.raises(ValueError, match="does not fit in the cache"):
    gen(long_prompt[:, :60], np.array([60]), max_new_tokens=8)
  with pytest.raises(ValueError, match="prompt row 1 has length 9 > the prompt block width 8"):
    gen(lengths=np.array([5, 9, 8, 1]))
  with pytest.raises(ValueError, match=r"prompt rows \[3\] are empty"):
    gen(lengths=np.array([5, 3, 8, 0]))
  with pytest.raises(ValueError, match="pad_id=0 is also an EOS id"):
    gen(lengths=None, eos_id=PAD)
  for top_p in (0.0, 1.5, -0.1):
    with pytest.raises(ValueError, match="top_p"):
      gen(top_p=top_p)
  with pytest.raises(ValueError, match="temperature"):
    gen(temperature=-0.5)
  with pytest.raises(ValueError, match="top_k"):
    gen(top_k=-1)
  with pytest.raises(ValueError, match="pad_id=48 is outside the vocabulary"):
    gen(pad_id=48)
  with pytest.raises(ValueError, match="eos_id"):
    gen(eos_id=1000)
  with pytest.raises(ValueError, match="stop_sequences"):
    gen(stop_sequences=[[]])
  with pytest.raises(ValueError, match="prompt row 0 position 2 holds token id 99"):
    bad = prompts.copy()
    bad[0, 2] = 99
    gen(bad)
  with pytest.raises(ValueError, match="max_new_tokens"):
    gen(max_new_tokens=0)
  assert sampling._sample_jit._cache_size() == before


# ------------------------------------------------------------------------- transformers parity
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_greedy_equals_transformers_generate(tmp_path, family):
  pytest.importorskip("rlvr_jax.model.hf", reason="rlvr_jax/model/hf.py (load_hf) not written yet")
  torch = pytest.importorskip("torch")
  import transformers
  torch.manual_seed(0)
  common = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=0)
  if family == "llama":
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    hf_cfg = transformers.LlamaConfig(head_dim=8, tie_word_embeddings=False,
                                      rope_parameters=rope, **common)
    model = transformers.LlamaForCausalLM(hf_cfg)
  else:
    hf_cfg = transformers.Qwen2Config(tie_word_embeddings=True, **common)
    model = transformers.Qwen2ForCausalLM(hf_cfg)
  model = model.eval().to(torch.float32)
  model.save_pretrained(tmp_path)
  cfg, params = rj.load_hf(str(tmp_path), dtype=jnp.float32)

  lengths = np.array([5, 3, 8, 1], np.int32)
  rng = np.random.default_rng(0)
  prompts = np.zeros((4, 8), np.int32)
  for r, n in enumerate(lengths):
    prompts[r, :n] = rng.integers(3, 96, n)
  m = 10
  out = rj.generate(cfg, params, prompts, lengths, jax.random.key(0), max_new_tokens=m,
                    temperature=0.0, eos_id=2, pad_id=0)
  for r, n in enumerate(lengths):
    ids = torch.from_numpy(prompts[r:r + 1, :n].astype(np.int64))
    with torch.inference_mode():
      hf = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                          max_new_tokens=m, eos_token_id=2, pad_token_id=0)
    want = hf[0, n:].numpy()
    assert int(out.lengths[r]) == len(want), (family, r)
    np.testing.assert_array_equal(np.asarray(out.tokens)[r, :len(want)], want,
                                  err_msg=f"{family} row {r}")


@pytest.mark.parametrize("k", [7, 100, 8192])
def test_draw_categorical_matches_softmax_and_never_draws_masked_entries(k):
  """The two-level inverse CDF (blocks of ~sqrt(K), padded when K is not a multiple): 40k
  draws from one row's softmax pass a chi-square test; masked (-inf) entries are never drawn,
  a lone allowed entry in the last (padded) block is always drawn."""
  draw = jax.jit(sampling.draw_categorical)
  z = jax.random.normal(jax.random.key(k), (1, k)) * 2
  tok = np.asarray(draw(jax.random.key(1), jnp.repeat(z, 40000, 0)))
  p = np.asarray(jax.nn.softmax(z[0])).astype(np.float64)
  p /= p.sum()
  counts = np.bincount(tok, minlength=k)
  big = p * 40000 >= 5                  # pool the rare entries into one bin
  obs, exp = counts[big], p[big] * 40000
  if (~big).any():
    obs, exp = np.append(obs, counts[~big].sum()), np.append(exp, p[~big].sum() * 40000)
  assert scipy.stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-4
  # the test can tell the distribution apart from a flatter one
  flat = np.asarray(jax.nn.softmax(z[0] / 1.5)).astype(np.float64)[big]
  if k > 7:
    assert scipy.stats.chisquare(counts[big], flat / flat.sum() * counts[big].sum()).pvalue < 1e-6
  masked = jnp.where(jnp.arange(k) % 3 == 0, z[0], -jnp.inf)
  assert np.all(np.asarray(draw(jax.random.key(2), jnp.repeat(masked[None], 5000, 0))) % 3 == 0)
  lone = jnp.where(jnp.arange(k) == k - 1, 0.0, -jnp.inf)
  assert set(np.asarray(draw(jax.random.key(3), jnp.repeat(lone[None], 50, 0))).tolist()) == {k - 1}


@pytest.mark.parametrize("m,segments,ends", [
    (40, 0, (40,)), (64, 0, (32, 64)), (100, 0, (34, 67, 100)),
    (1024, 0, (256, 512, 768, 1024)), (10, 3, (4, 7, 10)), (4, 4, (1, 2, 3, 4))])
def test_segment_ends(m, segments, ends):
  assert sampling.segment_ends(m, segments) == ends


def test_a_segmented_cache_decodes_the_same_tokens_from_shorter_caches(params, prompts):
  """cache_segments=3: three while_loops over caches of P + 4, P + 7 and P + 10 slots (the
  jaxpr shows them), and the same greedy tokens and statistics as one loop over P + 10."""
  m = 10
  config = sampling.SampleConfig(max_new_tokens=m, pad_id=PAD, temperature=0.0,
                                 cache_segments=3)
  jaxpr = jax.make_jaxpr(lambda p, key: sampling.sample_core(
      CFG, p, prompts, PROMPT_LENGTHS, key, config))(params, jax.random.key(0))
  loops = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "while"]
  slots = [{v.aval.shape[-1] for v in e.outvars if v.aval.ndim == 4 and v.aval.shape[1] == 2
            and v.aval.shape[2] == 8} for e in loops]       # keys [N, K=2, H=8, S]
  assert slots == [{8 + 4}, {8 + 7}, {8 + 10}]
  one = rj.generate(CFG, params, prompts, PROMPT_LENGTHS, jax.random.key(0), max_new_tokens=m,
                    temperature=0.0, eos_id=(), pad_id=PAD, cache_segments=1)
  three = rj.generate(CFG, params, prompts, PROMPT_LENGTHS, jax.random.key(0), max_new_tokens=m,
                      temperature=0.0, eos_id=(), pad_id=PAD, cache_segments=3)
  np.testing.assert_array_equal(three.tokens, one.tokens)
  for name in ("logprobs", "entropy", "self_certainty"):
    np.testing.assert_allclose(getattr(three, name), getattr(one, name), atol=1e-5)
  # rows that stop in the first segment stay stopped; the later loops exit at once
  eos = (int(np.asarray(one.tokens)[0, 1]),)
  stopped = [rj.generate(CFG, params, prompts, PROMPT_LENGTHS, jax.random.key(0),
                         max_new_tokens=m, temperature=0.0, eos_id=eos, pad_id=PAD,
                         cache_segments=n) for n in (1, 3)]
  np.testing.assert_array_equal(stopped[1].tokens, stopped[0].tokens)
  np.testing.assert_array_equal(stopped[1].lengths, stopped[0].lengths)
  assert int(stopped[1].num_steps) == int(stopped[0].num_steps)


@pytest.mark.parametrize("bad", [-1, 11, 2.0])
def test_bad_cache_segments_are_refused_naming_the_field(bad):
  with pytest.raises(ValueError, match="cache_segments="):
    sampling.SampleConfig(max_new_tokens=10, pad_id=0, cache_segments=bad)


def test_rl_settings_carry_cache_segments_to_the_sampler():
  from rlvr_jax.rl.spec import RLSettings
  settings = RLSettings(group_size=2, max_new_tokens=8, pad_id=0, cache_segments=2)
  assert settings.sample_config().cache_segments == 2
  assert RLSettings(group_size=2, max_new_tokens=8, pad_id=0).sample_config().cache_segments == 0
  with pytest.raises(ValueError, match=r"cache_segments=9 must be an integer in \[0, "):
    RLSettings(group_size=2, max_new_tokens=8, pad_id=0, cache_segments=9)
