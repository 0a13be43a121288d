"""Token-space rewards, proxies, composition, noise models, host verifier: vs loop references."""
import collections
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax import rl

# A made-up vocabulary: `\boxed{` is three tokens, `{` doubles as the nesting brace.
PAD, EOS = 0, 1
BOX = (5, 6, 7)
LBRACE, RBRACE = 7, 8
THINK_OPEN, THINK_CLOSE = (2, 3), (2, 4)
FRAC = 20
D = {str(i): 10 + i for i in range(10)}  # digits are single tokens
IDS = dict(boxed_ids=BOX, close_id=RBRACE)
MATCH = jax.jit(functools.partial(rl.boxed_answer_match, **IDS))
MATCH_NESTED = jax.jit(functools.partial(rl.boxed_answer_match, open_brace_id=LBRACE, **IDS))


def batch_of(rows, width=16, **stats):
  """Right-padded RolloutBatch from token lists (the length covers the whole list)."""
  tokens = np.full((len(rows), width), PAD, np.int32)
  for i, r in enumerate(rows):
    tokens[i, :len(r)] = r
  lengths = np.array([len(r) for r in rows], np.int32)
  return rl.RolloutBatch(tokens=jnp.asarray(tokens), lengths=jnp.asarray(lengths), **stats)


def labels_of(answers, width=4):
  out = np.full((len(answers), width), -1, np.int32)
  for i, a in enumerate(answers):
    out[i, :len(a)] = a
  return jnp.asarray(out)


# ----------------------------------------------------- loop reference for the boxed matcher
def ref_last_boxed(row, length, boxed=BOX, close=RBRACE, open_brace=None):
  """The answer tokens of the last `\\boxed{` in row[:length], or None (unclosed / absent)."""
  k = len(boxed)
  last = -1
  for i in range(length - k + 1):
    if tuple(row[i:i + k]) == tuple(boxed):
      last = i
  if last < 0:
    return None
  depth = 0
  for j in range(last + k, length):
    if open_brace is not None and row[j] == open_brace:
      depth += 1
    elif row[j] == close:
      if depth == 0:
        return list(row[last + k:j])
      depth -= 1
  return None


def ref_match(row, length, label, **kw):
  ans = ref_last_boxed(row, length, **kw)
  label = [x for x in label if x >= 0]
  return float(ans is not None and len(label) > 0 and ans == label)


def test_boxed_answer_match_hand_rows():
  b = [*BOX]
  rows_and_labels = [
      ([9, *b, D["3"], RBRACE, EOS], [D["3"]], 1.0),                      # boxed in the middle
      ([*b, D["1"], D["2"], RBRACE], [D["1"], D["2"]], 1.0),              # at the start, at the end
      ([9, 9, 9, *b, D["4"], RBRACE, EOS], [D["5"]], 0.0),                # wrong answer
      ([*b, D["1"], RBRACE, 9, *b, D["2"], RBRACE, EOS], [D["2"]], 1.0),  # two boxes: last wins
      ([*b, D["1"], RBRACE, 9, *b, D["2"], RBRACE, EOS], [D["1"]], 0.0),
      ([*b, D["1"], RBRACE, 9, *b, D["1"], EOS], [D["1"]], 0.0),          # last box unclosed
      ([*b, D["1"], D["2"], RBRACE], [D["1"]], 0.0),                      # answer longer than label
      ([*b, D["1"], RBRACE], [D["1"], D["2"]], 0.0),                      # answer shorter
      ([9, 5, 6, 9, D["1"], RBRACE], [D["1"]], 0.0),                      # broken `\boxed{`
      ([9, 9, D["1"]], [D["1"]], 0.0),                                    # no box
      ([*b, RBRACE], [], 0.0),                                            # empty label: never
  ]
  rows = [r for r, _, _ in rows_and_labels]
  batch = batch_of(rows)
  labels = labels_of([lab for _, lab, _ in rows_and_labels])
  got = MATCH(batch, labels, None)
  np.testing.assert_array_equal(got, [want for _, _, want in rows_and_labels])
  assert got.dtype == jnp.float32


def test_boxed_close_brace_beyond_length_does_not_count():
  row = [*BOX, D["7"], RBRACE]
  batch = rl.RolloutBatch(tokens=jnp.asarray([row + [0] * 3]), lengths=jnp.asarray([4]))
  assert float(MATCH(batch, labels_of([[D["7"]]]), None)[0]) == 0.0
  batch = batch._replace(lengths=jnp.asarray([5]))
  assert float(MATCH(batch, labels_of([[D["7"]]]), None)[0]) == 1.0


def test_nested_braces_need_open_brace_id():
  frac = [FRAC, LBRACE, D["1"], RBRACE, LBRACE, D["2"], RBRACE]  # \frac{1}{2}
  batch = batch_of([[*BOX, *frac, RBRACE, EOS]])
  labels = labels_of([frac], width=8)
  assert float(MATCH_NESTED(batch, labels, None)[0]) == 1.0
  # without nesting the first `}` closes the box: the answer is `\frac{1`
  assert float(MATCH(batch, labels, None)[0]) == 0.0
  assert float(MATCH(batch, labels_of([[FRAC, LBRACE, D["1"]]], width=8), None)[0]) == 1.0


@pytest.mark.parametrize("open_brace", [None, LBRACE])
def test_boxed_matcher_equals_loop_reference_on_random_rows(open_brace):
  rng = np.random.default_rng(0 if open_brace is None else 1)
  # a vocabulary dense in `\`, `boxed`, `{`, `}` so boxes, nesting and truncation all occur
  vocab = np.array([5, 6, 7, 8, 10, 11, 12, 5, 6, 7, 8])
  n, t = 256, 14
  tokens = vocab[rng.integers(0, len(vocab), (n, t))].astype(np.int32)
  plant = rng.random(n) < 0.6  # plant a full `\boxed{` pattern in most rows
  for i in np.nonzero(plant)[0]:
    s = rng.integers(0, t - 3)
    tokens[i, s:s + 3] = BOX
    if rng.random() < 0.7:  # usually a short digit answer and its closing brace
      body = list(rng.choice([10, 11, 12], rng.integers(1, 4))) + [RBRACE]
      tokens[i, s + 3:s + 3 + len(body)] = body[:t - s - 3]
  lengths = rng.integers(0, t + 1, n).astype(np.int32)
  ref_answers = [ref_last_boxed(list(tokens[i]), lengths[i], open_brace=open_brace)
                 for i in range(n)]
  # labels: the true answer for some rows, a perturbed one for others
  labels = np.full((n, 6), -1, np.int32)
  for i, a in enumerate(ref_answers):
    lab = list(a) if a is not None and rng.random() < 0.7 else list(rng.choice([10, 11, 12], 2))
    lab = lab[:6]
    labels[i, :len(lab)] = lab
  batch = rl.RolloutBatch(tokens=jnp.asarray(tokens), lengths=jnp.asarray(lengths))
  fn = MATCH if open_brace is None else MATCH_NESTED
  got = np.asarray(fn(batch, jnp.asarray(labels), None))
  want = np.array([ref_match(list(tokens[i]), lengths[i], list(labels[i]), open_brace=open_brace)
                   for i in range(n)])
  np.testing.assert_array_equal(got, want)
  assert 20 < want.sum() < n - 20  # both outcomes well represented

  answers, valid = jax.jit(functools.partial(rl.extract_boxed_tokens, max_answer_len=5,
                                             open_brace_id=open_brace, **IDS))(batch.tokens,
                                                                                  batch.lengths)
  for i, a in enumerate(ref_answers):
    ok = a is not None and 0 < len(a) <= 5
    assert bool(valid[i]) == ok
    if ok:
      assert list(np.asarray(answers[i])) == list(a) + [-1] * (5 - len(a))
    else:
      assert np.all(np.asarray(answers[i]) == -1)


def test_boxed_match_without_labels_fails_before_compiling():
  batch = batch_of([[*BOX, D["1"], RBRACE]])
  with pytest.raises(ValueError, match="labels is None"):
    MATCH.lower(batch, None, None)
  with pytest.raises(ValueError, match="boxed_ids"):
    rl.boxed_answer_match(batch, labels_of([[D["1"]]]), boxed_ids=(), close_id=RBRACE)


# --------------------------------------------------------------------------------- format
FMT = dict(think_open_ids=THINK_OPEN, think_close_ids=THINK_CLOSE, **IDS)


def test_format_reward_hand_rows():
  ans = [*BOX, D["4"], RBRACE]
  rows = [
      [*THINK_OPEN, 9, 9, *THINK_CLOSE, 9, *ans, EOS],        # ok
      [*THINK_OPEN, 9, *THINK_CLOSE, *ans],                   # ok, box right after </think>
      [9, 9, *THINK_CLOSE, *ans, EOS],                        # no <think>
      [*THINK_OPEN, 9, *ans, *THINK_CLOSE, EOS],              # box only inside the think block
      [*THINK_CLOSE, *THINK_OPEN, 9, *ans, EOS],              # tags out of order
      [*THINK_OPEN, 9, *THINK_CLOSE, *BOX, D["4"], EOS],      # unclosed box
      [*THINK_OPEN, 9, *THINK_CLOSE, *BOX, RBRACE, EOS],      # empty box
      [*THINK_OPEN, *ans, *THINK_CLOSE, 9, *ans],             # boxes inside and after: ok
  ]
  batch = batch_of(rows, width=20)
  got = jax.jit(functools.partial(rl.format_reward, **FMT))(batch, None, None)
  np.testing.assert_array_equal(got, [1, 1, 0, 0, 0, 0, 0, 1])
  # when the prompt opens the think block, only </think> then a box is required
  no_open = dict(FMT, think_open_ids=())
  got = jax.jit(functools.partial(rl.format_reward, **no_open))(batch, None, None)
  np.testing.assert_array_equal(got, [1, 1, 1, 0, 1, 0, 0, 1])


# -------------------------------------------------------------------------- majority vote
def test_majority_vote_labels_equal_counter_reference():
  rng = np.random.default_rng(3)
  p, v, a = 64, 9, 3
  pool = np.array([[10, -1, -1], [11, 12, -1], [12, 11, -1], [13, 13, 13], [10, 10, -1]])
  choice = rng.integers(0, len(pool), (p, v))
  choice[:, :] = np.where(rng.random((p, 1)) < 0.3, choice % 2, choice)  # many ties
  answers = pool[choice].astype(np.int32)
  valid = rng.random((p, v)) < 0.75
  valid[0] = False  # a prompt without any vote
  # invalid votes carry junk that must not count
  answers = np.where(valid[..., None], answers, 13).astype(np.int32)
  got = np.asarray(jax.jit(rl.majority_vote_labels)(answers, valid))
  for i in range(p):
    votes = [tuple(answers[i, j]) for j in range(v) if valid[i, j]]
    want = collections.Counter(votes).most_common(1)[0][0] if votes else (-1,) * a
    assert tuple(got[i]) == want, (i, votes)


def test_majority_vote_reward_matches_reference():
  b = [*BOX]
  g = 4
  rows = [
      [*b, D["1"], RBRACE], [*b, D["2"], RBRACE], [*b, D["1"], RBRACE], [9, EOS],  # majority 1
      # 3 vs 4 tie (the last row's last box is unclosed: no vote): 3 came first
      [*b, D["3"], RBRACE], [*b, D["4"], RBRACE], [9], [*b, D["4"], RBRACE, 9, *b],
      [9], [9], [9], [9],                                                            # no votes
  ]
  batch = batch_of(rows)
  fn = jax.jit(functools.partial(rl.majority_vote_reward, group_size=g, **IDS))
  got = fn(batch, None, None)
  np.testing.assert_array_equal(got, [1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0])


# ----------------------------------------------------------------------- proxy rewards
def _stats(n=6, t=5, seed=4):
  rng = np.random.default_rng(seed)
  lengths = np.array([5, 0, 3, 1, 4, 5])[:n]
  return (rng.normal(size=(n, t)).astype(np.float32), rng.uniform(0, 2, (n, t)).astype(np.float32),
          -rng.uniform(0, 3, (n, t)).astype(np.float32), lengths)


@pytest.mark.parametrize("explicit_mask", [False, True])
def test_proxy_rewards_equal_loop_reference(explicit_mask):
  sc, ent, logp, lengths = _stats()
  n, t = sc.shape
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
  tokens = np.full((n, t), 9, np.int32)
  batch = rl.RolloutBatch(tokens=jnp.asarray(tokens), lengths=jnp.asarray(lengths),
                          logprobs=jnp.asarray(logp), entropy=jnp.asarray(ent),
                          self_certainty=jnp.asarray(sc),
                          mask=jnp.asarray(mask) if explicit_mask else None)

  def ref_mean(x, i):
    vals = [float(x[i, j]) for j in range(lengths[i])]
    return sum(vals) / len(vals) if vals else 0.0

  want_sc = [ref_mean(sc, i) for i in range(n)]
  want_rent = [-ref_mean(ent, i) for i in range(n)]
  want_sum = [sum(float(logp[i, j]) for j in range(lengths[i])) for i in range(n)]
  want_norm = [s / lengths[i] if lengths[i] else 0.0 for i, s in enumerate(want_sum)]
  np.testing.assert_allclose(jax.jit(rl.self_certainty_reward)(batch, None, None), want_sc,
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.jit(rl.neg_entropy_reward)(batch, None, None), want_rent,
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.jit(rl.seq_loglik_reward)(batch, None, None), want_sum,
                             rtol=1e-6, atol=1e-6)
  norm = jax.jit(functools.partial(rl.seq_loglik_reward, length_norm=True))(batch, None, None)
  np.testing.assert_allclose(norm, want_norm, rtol=1e-6, atol=1e-6)


def test_proxy_reward_without_statistic_is_a_clear_error():
  batch = batch_of([[9, 9]])
  with pytest.raises(ValueError, match="self_certainty"):
    rl.self_certainty_reward(batch, None, None)


# -------------------------------------------------------------------------- composition
def test_combine_rewards_weighted_sum_under_jit():
  ans = [*BOX, D["4"], RBRACE]
  rows = [[*THINK_OPEN, 9, *THINK_CLOSE, *ans], [*ans], [*THINK_OPEN, *THINK_CLOSE, *BOX, D["5"],
                                                          RBRACE], [9]]
  logp = -np.arange(4 * 16, dtype=np.float32).reshape(4, 16) / 100
  batch = batch_of(rows, logprobs=jnp.asarray(logp))
  labels = labels_of([[D["4"]]] * 4)
  fn = rl.combine_rewards({"boxed_answer_match": 1.0, "format": 0.5, "seq_loglik": 0.1},
                          think_open_ids=THINK_OPEN, think_close_ids=THINK_CLOSE,
                          length_norm=True, **IDS)
  got = jax.jit(fn)(batch, labels, jax.random.key(0))
  correct = np.array([1, 1, 0, 0])
  fmt = np.array([1, 0, 1, 0])
  loglik = np.array([np.mean(logp[i, :len(r)]) for i, r in enumerate(rows)])
  np.testing.assert_allclose(got, correct + 0.5 * fmt + 0.1 * loglik, rtol=1e-6)


def test_combine_rewards_errors():
  with pytest.raises(ValueError, match=r"'accuracy'.*boxed_answer_match.*format.*majority_vote"):
    rl.combine_rewards({"accuracy": 1.0}, **IDS)
  with pytest.raises(ValueError, match=r"needs option.*close_id"):
    rl.combine_rewards({"boxed_answer_match": 1.0}, boxed_ids=BOX)
  with pytest.raises(ValueError, match=r"closing_id"):
    rl.combine_rewards({"boxed_answer_match": 1.0}, closing_id=8, **IDS)
  fn = rl.combine_rewards({"boxed_answer_match": 1.0}, **IDS)
  with pytest.raises(ValueError, match="labels is None"):
    jax.jit(fn).lower(batch_of([[9]]), None, jax.random.key(0))
  assert rl.LABEL_REWARDS == {"boxed_answer_match"}


# --------------------------------------------------------------------------------- noise
N_NOISE = 20_000


def _within(rate, p, n, sigmas=4.0):
  return abs(rate - p) <= sigmas * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12


@pytest.fixture(scope="module")
def binary_rewards():
  return jax.random.bernoulli(jax.random.key(42), 0.4, (N_NOISE,)).astype(jnp.float32)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3, 1.0])
def test_symmetric_flip_rate(binary_rewards, p):
  r = np.asarray(binary_rewards)
  out = np.asarray(jax.jit(rl.symmetric_flip)(binary_rewards, jax.random.key(1), p))
  assert set(np.unique(out)) <= {0.0, 1.0}
  flipped = out != r
  assert _within(flipped.mean(), p, N_NOISE), flipped.mean()
  # flips are independent of the reward value
  assert _within(flipped[r == 1].mean(), p, int((r == 1).sum()))


def test_group_flip_flips_whole_groups(binary_rewards):
  g, p = 4, 0.25
  rewards = jnp.tile(binary_rewards, g)  # 20k groups of 4
  out = np.asarray(jax.jit(rl.group_flip, static_argnums=3)(rewards, jax.random.key(2), p, g))
  flipped = (out != np.asarray(rewards)).reshape(-1, g)
  assert np.all(flipped.all(axis=1) | ~flipped.any(axis=1))  # all or nothing per group
  assert _within(flipped[:, 0].mean(), p, flipped.shape[0]), flipped[:, 0].mean()
  with pytest.raises(ValueError, match="group_size=3"):
    rl.group_flip(jnp.zeros(8), jax.random.key(0), 0.1, 3)


def test_asymmetric_flip_rates(binary_rewards):
  r = np.asarray(binary_rewards)
  fp, fn = 0.15, 0.35
  out = np.asarray(jax.jit(rl.asymmetric_flip)(binary_rewards, jax.random.key(3), fp, fn))
  neg, pos = r == 0, r == 1
  assert _within((out[neg] == 1).mean(), fp, int(neg.sum())), (out[neg] == 1).mean()
  assert _within((out[pos] == 0).mean(), fn, int(pos.sum())), (out[pos] == 0).mean()


def test_bernoulli_reward_rate_ignores_truth(binary_rewards):
  r = np.asarray(binary_rewards)
  q = 0.3
  out = np.asarray(jax.jit(rl.bernoulli_reward)(binary_rewards, jax.random.key(4), q))
  assert _within(out.mean(), q, N_NOISE)
  assert _within(out[r == 1].mean(), q, int((r == 1).sum()))
  assert _within(out[r == 0].mean(), q, int((r == 0).sum()))


def test_noise_registry_and_errors(binary_rewards):
  with pytest.raises(ValueError, match=r"'gaussian'.*asymmetric_flip.*bernoulli"):
    rl.apply_noise("gaussian", binary_rewards, jax.random.key(0))
  with pytest.raises(ValueError, match="p=1.5"):
    rl.symmetric_flip(binary_rewards, jax.random.key(0), 1.5)
  a = rl.apply_noise("symmetric_flip", binary_rewards, jax.random.key(5), p=0.5)
  b = rl.apply_noise("symmetric_flip", binary_rewards, jax.random.key(6), p=0.5)
  assert np.any(np.asarray(a) != np.asarray(b))  # key-driven


def test_with_noise_wraps_a_reward():
  batch = batch_of([[*BOX, D["1"], RBRACE]] * 8)
  labels = labels_of([[D["1"]]] * 8)
  clean = functools.partial(rl.boxed_answer_match, **IDS)
  always = rl.with_noise(clean, "symmetric_flip", p=1.0)
  np.testing.assert_array_equal(jax.jit(always)(batch, labels, jax.random.key(0)), np.zeros(8))


def test_most_frequent_wrong_answer():
  answers = ["5", " 7", "3", "7 ", None, "5", "3", "5", "5"]
  strip = str.strip
  assert rl.most_frequent_wrong_answer(answers, "5", strip) == " 7"  # 7 and 3 tie: 7 came first
  assert rl.most_frequent_wrong_answer(answers + ["3"], "5", strip) == "3"
  assert rl.most_frequent_wrong_answer(["5", None, " 5"], "5", strip) is None
  assert rl.most_frequent_wrong_answer([], "5", strip) is None
  assert rl.most_frequent_wrong_answer(["A", "b", "B"], "a", normalize=str.lower) == "b"
  # default normalisation (rlvr_jax.data.answers): 0.5 and \frac{1}{2} are one wrong answer
  pytest.importorskip("rlvr_jax.data.answers")
  answers = ["3", "0.5", "7", "\\frac{1}{2}", "3.0", "7", "3"]  # 1/2 and 7 tie: 0.5 first
  assert rl.most_frequent_wrong_answer(answers, "3") == "0.5"
  assert rl.most_frequent_wrong_answer(answers + ["7"], "3") == "7"


# ------------------------------------------------------------------------ host verifier
def test_host_verifier_contract_with_custom_fn():
  got = rl.host_verifier_reward(["x=3", "x=4"], ["3", "3"], verify_fn=lambda t, l: t.endswith(l))
  assert got.dtype == np.float32 and got.shape == (2,)
  np.testing.assert_array_equal(got, [1.0, 0.0])
  with pytest.raises(ValueError, match="2 texts but 1 labels"):
    rl.host_verifier_reward(["a", "b"], ["a"], verify_fn=lambda t, l: True)
  with pytest.raises(ValueError, match="row 1"):
    rl.host_verifier_reward(["a", "b"], ["a", None], verify_fn=lambda t, l: True)


def test_host_verifier_math_equivalence():
  pytest.importorskip("math_verify")
  pytest.importorskip("rlvr_jax.data.answers")
  texts = ["so \\boxed{\\frac{1}{2}}", "first \\boxed{3} then \\boxed{0.5}", "\\boxed{3}",
           "the answer is 0.5", "\\boxed{0.5"]
  got = rl.host_verifier_reward(texts, ["0.5"] * 5)
  np.testing.assert_array_equal(got, [1, 1, 0, 0, 0])
  fallback = rl.host_verifier_reward(["\\boxed{7}", "\\boxed{8}"], ["7", "7"],
                                     verify_fn=rl.rewards.boxed_answers_match)
  np.testing.assert_array_equal(fallback, [1, 0])
