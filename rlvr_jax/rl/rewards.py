"""Reward functions: pure, jittable, in token space; and a host verifier with the same contract.

Every in-graph reward has the signature

    reward(batch: Rollout, labels: int32[N, A] | None, key, **static_options) -> float32[N]

`labels` holds the token ids of each sample's canonical answer string, right-padded with -1 and
repeated for the samples of one prompt. Static options (token ids of `\\boxed{`, `}`, `<think>`,
...) come from the tokenizer and are bound once with `combine_rewards` / `functools.partial`; they
are Python values, so a missing or bad option fails at trace time, before anything compiles.

Limitation of the token-space verifier: answers are compared token by token, exactly. The same
answer tokenized two ways (or written `0.5` vs `1/2`) does not match, so labels and responses must
use one canonical tokenization (the built-in tokenizer makes every digit a single token). For real
math, decode on the host and use `host_verifier_reward` (rlvr_jax.data.answers.equivalent:
sympy-based equivalence via the `math-verify` package, the matcher eval uses too).

Registry `REWARDS` (name -> fn): boxed_answer_match, format, majority_vote, self_certainty,
neg_entropy, seq_loglik. `host_verified(values)` wraps the host verifier's precomputed verdicts as
a reward of the same signature (it replaces boxed_answer_match with reward.host_verifier).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlvr_jax.rl.rollout import Rollout

RewardFn = Callable[..., jax.Array]


# What rewards see of a rollout: the sampler's Rollout itself (rollout.py), under its former name.
# Any object with its attributes works (tokens int32[N, T], lengths int32[N], logprobs / entropy /
# self_certainty float32[N, T] or None, mask float32[N, T] or None).
RolloutBatch = Rollout


# ------------------------------------------------------------------------ token-space helpers
def _check_ids(name: str, ids, allow_empty: bool = False) -> tuple[int, ...]:
  try:
    ids = tuple(int(i) for i in ids)
  except TypeError:
    raise ValueError(f"{name} must be a static tuple of token ids (from the tokenizer), got "
                     f"{ids!r}") from None
  if not ids and not allow_empty:
    raise ValueError(f"{name} must be a non-empty tuple of token ids (from the tokenizer)")
  if any(i < 0 for i in ids):
    raise ValueError(f"{name} must hold non-negative token ids, got {ids}")
  return ids


def _check_id(name: str, i) -> int:
  if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
    raise ValueError(f"{name} must be a static non-negative token id (int), got {i!r}")
  return int(i)


def _positions(tokens_NT: jax.Array) -> jax.Array:
  return jnp.arange(tokens_NT.shape[1], dtype=jnp.int32)[None, :]


def valid_mask(batch) -> jax.Array:
  """float32[N, T]: batch.mask, or 1 on positions < lengths when the batch has no mask."""
  if getattr(batch, "mask", None) is not None:
    return jnp.asarray(batch.mask, jnp.float32)
  return (_positions(batch.tokens) < batch.lengths[:, None]).astype(jnp.float32)


def pattern_starts(tokens_NT: jax.Array, lengths_N: jax.Array, pattern: Sequence[int]) -> jax.Array:
  """bool[N, T]: True at t where tokens[t : t+K] == pattern and the whole match lies in the
  valid region (t + K <= length). K = len(pattern) >= 1 (static)."""
  pattern = _check_ids("pattern", pattern)
  k, t = len(pattern), tokens_NT.shape[1]
  hit_NT = jnp.ones(tokens_NT.shape, bool)
  for offset, tok in enumerate(pattern):  # loop over the (short, static) pattern only
    shifted_NT = jnp.pad(tokens_NT[:, offset:], ((0, 0), (0, min(offset, t))), constant_values=-1)
    hit_NT = hit_NT & (shifted_NT == tok)
  return hit_NT & (_positions(tokens_NT) + k <= lengths_N[:, None])


def _first_at_or_after(hit_NT: jax.Array, start_N: jax.Array) -> jax.Array:
  """First t >= start with hit, else T."""
  t = hit_NT.shape[1]
  pos = _positions(hit_NT)
  return jnp.min(jnp.where(hit_NT & (pos >= start_N[:, None]), pos, t), axis=1)


class BoxedSpan(NamedTuple):
  open_pos: jax.Array  # int32[N] start of the last `\boxed{` match, -1 when none
  start: jax.Array     # int32[N] first answer token
  end: jax.Array       # int32[N] position of the matching close brace (T when unclosed)
  closed: jax.Array    # bool[N] a last `\boxed{` exists and its brace is closed in the valid region


def last_boxed_span(tokens_NT: jax.Array, lengths_N: jax.Array, *, boxed_ids: Sequence[int],
                    close_id: int, open_brace_id: int | None = None) -> BoxedSpan:
  """Locate the LAST occurrence of `boxed_ids` in each row's valid region and its close brace.

  The answer is tokens[start:end]. With `open_brace_id`, nested `{`/`}` tokens inside the answer
  are balanced (`\\boxed{\\frac{1}{2}}`); without it the first `close_id` ends the answer. When
  the last `\\boxed{` is never closed the row has no answer (an earlier closed one does not count).
  """
  boxed_ids = _check_ids("boxed_ids", boxed_ids)
  close_id = _check_id("close_id", close_id)
  tokens_NT = jnp.asarray(tokens_NT, jnp.int32)
  lengths_N = jnp.asarray(lengths_N, jnp.int32)
  t = tokens_NT.shape[1]
  pos = _positions(tokens_NT)
  hit_NT = pattern_starts(tokens_NT, lengths_N, boxed_ids)
  open_pos_N = jnp.max(jnp.where(hit_NT, pos, -1), axis=1)
  start_N = open_pos_N + len(boxed_ids)
  inside_NT = (pos >= start_N[:, None]) & (pos < lengths_N[:, None]) & (open_pos_N[:, None] >= 0)
  is_close_NT = tokens_NT == close_id
  delta_NT = -is_close_NT.astype(jnp.int32)
  if open_brace_id is not None:
    delta_NT = delta_NT + (tokens_NT == _check_id("open_brace_id", open_brace_id)).astype(jnp.int32)
  depth_NT = jnp.cumsum(jnp.where(inside_NT, delta_NT, 0), axis=1)
  is_end_NT = inside_NT & is_close_NT & (depth_NT == -1)
  end_N = jnp.min(jnp.where(is_end_NT, pos, t), axis=1)
  return BoxedSpan(open_pos_N, start_N, end_N, (open_pos_N >= 0) & (end_N < t))


def _gather_span(tokens_NT: jax.Array, span: BoxedSpan, width: int) -> jax.Array:
  """int32[N, width]: tokens[start + j] for j < end - start, -1 beyond (and where unclosed)."""
  t = tokens_NT.shape[1]
  j = jnp.arange(width, dtype=jnp.int32)[None, :]
  idx_NA = jnp.clip(span.start[:, None] + j, 0, t - 1)
  got_NA = jnp.take_along_axis(jnp.asarray(tokens_NT, jnp.int32), idx_NA, axis=1)
  keep_NA = span.closed[:, None] & (j < (span.end - span.start)[:, None])
  return jnp.where(keep_NA, got_NA, -1)


def extract_boxed_tokens(tokens_NT: jax.Array, lengths_N: jax.Array, *, boxed_ids: Sequence[int],
                         close_id: int, max_answer_len: int, open_brace_id: int | None = None
                         ) -> tuple[jax.Array, jax.Array]:
  """The last boxed answer of each row as token ids.

  Returns (answers int32[N, max_answer_len] right-padded with -1, valid bool[N]); valid is False
  when there is no closed last box, the box is empty, or the answer is longer than max_answer_len
  (it cannot be represented, so it is treated as no answer).
  """
  span = last_boxed_span(tokens_NT, lengths_N, boxed_ids=boxed_ids, close_id=close_id,
                         open_brace_id=open_brace_id)
  n_len = span.end - span.start
  valid_N = span.closed & (n_len > 0) & (n_len <= max_answer_len)
  answers_NA = jnp.where(valid_N[:, None], _gather_span(tokens_NT, span, max_answer_len), -1)
  return answers_NA, valid_N


def _check_labels(labels, n: int, who: str) -> jax.Array:
  if labels is None:
    raise ValueError(f"reward {who!r} compares answers with labels, but labels is None: the "
                     f"dataset has no answer labels; use a labelled dataset or a proxy reward "
                     f"(majority_vote, self_certainty, neg_entropy, seq_loglik)")
  if getattr(labels, "ndim", None) != 2 or labels.shape[0] != n:
    raise ValueError(f"reward {who!r}: labels must be int32[N={n}, A] (answer token ids "
                     f"right-padded with -1), got shape {getattr(labels, 'shape', None)}")
  return jnp.asarray(labels, jnp.int32)


# ------------------------------------------------------------------------------ rewards
def boxed_answer_match(batch, labels, key=None, *, boxed_ids: Sequence[int], close_id: int,
                       open_brace_id: int | None = None) -> jax.Array:
  """1.0 where the last `\\boxed{...}` answer equals the label token for token, else 0.0.

  labels: int32[N, A] right-padded with -1. An answer longer or shorter than the label, an
  unclosed last box, or an empty label (all -1) gives 0. float32[N].
  """
  del key
  labels_NA = _check_labels(labels, batch.tokens.shape[0], "boxed_answer_match")
  span = last_boxed_span(batch.tokens, batch.lengths, boxed_ids=boxed_ids, close_id=close_id,
                         open_brace_id=open_brace_id)
  a = labels_NA.shape[1]
  label_len_N = jnp.sum(labels_NA >= 0, axis=1)
  got_NA = _gather_span(batch.tokens, span, a)
  j = jnp.arange(a)[None, :]
  same_N = jnp.all(jnp.where(j < label_len_N[:, None], got_NA == labels_NA, True), axis=1)
  ok_N = span.closed & (span.end - span.start == label_len_N) & (label_len_N > 0) & same_N
  return ok_N.astype(jnp.float32)


def format_reward(batch, labels=None, key=None, *, think_close_ids: Sequence[int],
                  boxed_ids: Sequence[int], close_id: int, think_open_ids: Sequence[int] = (),
                  open_brace_id: int | None = None) -> jax.Array:
  """1.0 where `<think>` ... `</think>` occur in order and the last box is closed, non-empty and
  starts after `</think>`; else 0.0. float32[N].

  think_open_ids may be () when the prompt template already opens the think block: then only
  `</think>` followed by a boxed answer is required.
  """
  del labels, key
  think_open_ids = _check_ids("think_open_ids", think_open_ids, allow_empty=True)
  think_close_ids = _check_ids("think_close_ids", think_close_ids)
  tokens_NT = jnp.asarray(batch.tokens, jnp.int32)
  lengths_N = jnp.asarray(batch.lengths, jnp.int32)
  n, t = tokens_NT.shape
  if think_open_ids:
    open_at_N = _first_at_or_after(pattern_starts(tokens_NT, lengths_N, think_open_ids),
                                   jnp.zeros((n,), jnp.int32))
    has_open_N = open_at_N < t
    after_open_N = open_at_N + len(think_open_ids)
  else:
    has_open_N = jnp.ones((n,), bool)
    after_open_N = jnp.zeros((n,), jnp.int32)
  close_at_N = _first_at_or_after(pattern_starts(tokens_NT, lengths_N, think_close_ids),
                                  after_open_N)
  has_close_N = has_open_N & (close_at_N < t)
  span = last_boxed_span(tokens_NT, lengths_N, boxed_ids=boxed_ids, close_id=close_id,
                         open_brace_id=open_brace_id)
  boxed_after_N = (span.closed & (span.end > span.start)
                   & (span.open_pos >= close_at_N + len(think_close_ids)))
  return (has_close_N & boxed_after_N).astype(jnp.float32)


def majority_vote_labels(answer_tokens_PVA: jax.Array, valid_PV: jax.Array) -> jax.Array:
  """Pseudo-labels int32[P, A]: per prompt, the most common answer among its V votes.

  answer_tokens_PVA: extracted answers right-padded with -1 (`extract_boxed_tokens`); valid_PV:
  whether an answer was extracted (rows without one do not vote). Ties go to the answer whose
  first occurrence has the lowest index. A prompt without any vote gets an all -1 label (which
  `boxed_answer_match` scores 0 for every sample).
  """
  ans = jnp.asarray(answer_tokens_PVA, jnp.int32)
  valid = jnp.asarray(valid_PV, bool)
  same_PVV = jnp.all(ans[:, :, None, :] == ans[:, None, :, :], axis=-1)
  same_PVV = same_PVV & valid[:, :, None] & valid[:, None, :]
  counts_PV = jnp.sum(same_PVV, axis=2)
  # Every member of an answer class has the class count; argmax takes the first index reaching
  # the maximum, i.e. the first occurrence of the earliest-appearing class among the tied ones.
  best_P = jnp.argmax(counts_PV, axis=1)
  label_PA = jnp.take_along_axis(ans, best_P[:, None, None], axis=1)[:, 0]
  has_vote_P = jnp.any(valid, axis=1)
  return jnp.where(has_vote_P[:, None], label_PA, -1)


def majority_vote_reward(batch, labels=None, key=None, *, group_size: int,
                         boxed_ids: Sequence[int], close_id: int, max_answer_len: int = 32,
                         open_brace_id: int | None = None) -> jax.Array:
  """1.0 where a sample's boxed answer equals the majority answer of its own group, else 0.0.

  Votes come from the group_size samples of each prompt in this batch (ignores labels). For the
  paper's "vote over V, train on G < V" score all V samples (group_size=V) and keep the first G
  rows of each prompt, as `RewardSpec.build` does. Answers longer than max_answer_len do not vote
  and score 0. float32[N].
  """
  del labels, key
  n = batch.tokens.shape[0]
  if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1 \
      or n % group_size:
    raise ValueError(f"majority_vote: group_size={group_size!r} must be a positive int dividing "
                     f"the batch size {n}")
  answers_NA, valid_N = extract_boxed_tokens(batch.tokens, batch.lengths, boxed_ids=boxed_ids,
                                             close_id=close_id, max_answer_len=max_answer_len,
                                             open_brace_id=open_brace_id)
  p = n // group_size
  labels_PA = majority_vote_labels(answers_NA.reshape(p, group_size, -1),
                                   valid_N.reshape(p, group_size))
  labels_NA = jnp.repeat(labels_PA, group_size, axis=0)
  ok_N = valid_N & jnp.all(answers_NA == labels_NA, axis=1) & (labels_NA[:, 0] >= 0)
  return ok_N.astype(jnp.float32)


def _masked_row_mean(x_NT: jax.Array, mask_NT: jax.Array) -> jax.Array:
  x_NT = jnp.where(mask_NT > 0, jnp.asarray(x_NT, jnp.float32), 0.0)
  return jnp.sum(x_NT * mask_NT, axis=1) / jnp.maximum(jnp.sum(mask_NT, axis=1), 1.0)


def _need_stat(batch, field: str, who: str) -> jax.Array:
  x = getattr(batch, field, None)
  if x is None:
    raise ValueError(f"reward {who!r} needs batch.{field} (per-token statistic from the sampler); "
                     f"the rollout batch has none: enable it in the sampler")
  return x


def self_certainty_reward(batch, labels=None, key=None) -> jax.Array:
  """Mean over valid tokens of the sampler's per-token self-certainty
  (logsumexp(z) - mean(z), z the rollout logits). 0 for rows without valid tokens. float32[N]."""
  del labels, key
  return _masked_row_mean(_need_stat(batch, "self_certainty", "self_certainty"), valid_mask(batch))


def neg_entropy_reward(batch, labels=None, key=None) -> jax.Array:
  """RENT: minus the mean token entropy over valid tokens. float32[N]."""
  del labels, key
  return -_masked_row_mean(_need_stat(batch, "entropy", "neg_entropy"), valid_mask(batch))


def seq_loglik_reward(batch, labels=None, key=None, *, length_norm: bool = False) -> jax.Array:
  """Sum of the sampled tokens' log-probs over valid tokens (divided by the number of valid
  tokens when length_norm). float32[N]."""
  del labels, key
  mask_NT = valid_mask(batch)
  logp_NT = jnp.where(mask_NT > 0, jnp.asarray(_need_stat(batch, "logprobs", "seq_loglik"),
                                                jnp.float32), 0.0)
  total_N = jnp.sum(logp_NT * mask_NT, axis=1)
  if length_norm:
    total_N = total_N / jnp.maximum(jnp.sum(mask_NT, axis=1), 1.0)
  return total_N


REWARDS: dict[str, RewardFn] = {
    "boxed_answer_match": boxed_answer_match,
    "format": format_reward,
    "majority_vote": majority_vote_reward,
    "self_certainty": self_certainty_reward,
    "neg_entropy": neg_entropy_reward,
    "seq_loglik": seq_loglik_reward,
}

# Rewards that compare with dataset labels (the RL loop checks the dataset has them up front).
LABEL_REWARDS = frozenset({"boxed_answer_match"})


def _options_of(fn: RewardFn) -> dict[str, inspect.Parameter]:
  return {p.name: p for p in inspect.signature(fn).parameters.values()
          if p.kind is inspect.Parameter.KEYWORD_ONLY}


def get_reward(name: str) -> RewardFn:
  if name not in REWARDS:
    raise ValueError(f"unknown reward {name!r}; choose one of {sorted(REWARDS)}")
  return REWARDS[name]


def build_rewards(weights: Mapping[str, float], *, fns: Mapping[str, RewardFn] | None = None,
                  **options: Any) -> dict[str, tuple[float, Callable[..., jax.Array]]]:
  """{name: (weight, fn(batch, labels, key))} with the static options each reward takes bound.

  `options` are shared: each is passed to every chosen reward with a keyword of that name (token
  ids serve both boxed_answer_match and format). An option no chosen reward accepts, or a required
  one missing, is a ValueError naming it. `fns` replaces registry entries by name for this build
  (a wrapper such as `host_verified`, whose keyword options are bound the same way).
  """
  if not weights:
    raise ValueError(f"no reward selected; give {{name: weight}} with names from {sorted(REWARDS)}")
  fns = dict(fns or {})
  built, used = {}, set()
  for name, weight in weights.items():
    fn = fns[name] if name in fns else get_reward(name)
    accepted = _options_of(fn)
    missing = [p.name for p in accepted.values()
               if p.default is inspect.Parameter.empty and p.name not in options]
    if missing:
      raise ValueError(f"reward {name!r} needs option(s) {missing} (static token ids / sizes); "
                       f"its options are {sorted(accepted)}")
    kwargs = {k: v for k, v in options.items() if k in accepted}
    used.update(kwargs)

    def bound(batch, labels=None, key=None, _fn=fn, _kw=kwargs):
      return _fn(batch, labels, key, **_kw)

    built[name] = (float(weight), bound)
  unused = sorted(set(options) - used)
  if unused:
    raise ValueError(f"reward option(s) {unused} are not used by any of the chosen rewards "
                     f"{sorted(weights)}")
  return built


def combine_rewards(weights: Mapping[str, float], *, fns: Mapping[str, RewardFn] | None = None,
                    **options: Any) -> Callable[..., jax.Array]:
  """One reward fn(batch, labels, key) -> float32[N]: sum_i weight_i * reward_i, summed in the
  order of `weights` (`fns`: registry entries replaced by name, see build_rewards).

  Each reward gets its own key (split from `key`; a key is only needed by random rewards).
  """
  built = build_rewards(weights, fns=fns, **options)

  def combined(batch, labels=None, key=None):
    keys = (jax.random.split(key, len(built)) if key is not None else [None] * len(built))
    total = jnp.zeros((batch.tokens.shape[0],), jnp.float32)
    for k, (weight, fn) in zip(keys, built.values()):
      total = total + weight * fn(batch, labels, k)
    return total

  return combined


def host_verified(values_N) -> RewardFn:
  """A registry-compatible reward whose values the host verifier computed beforehand
  (`score.host_rewards`: decoded responses checked by `host_verifier_reward`): fn(batch, labels,
  key) returns values_N float32[N], one per row of `batch`. It stands in for boxed_answer_match
  when reward.host_verifier is on (`RewardSpec.build`)."""

  def reward(batch, labels=None, key=None):
    del labels, key
    v_N = jnp.asarray(values_N, jnp.float32)
    if v_N.shape != (batch.tokens.shape[0],):
      raise ValueError(f"host_verified: {v_N.shape} host rewards for {batch.tokens.shape[0]} "
                       f"rows; give float32[N], one per rollout row")
    return v_N

  return reward


# ------------------------------------------------------------------------ host-side verifier
def boxed_answers_match(text: str, label: str) -> bool:
  """Host check: the last \\boxed{} answer of `text` is `label` by
  rlvr_jax.data.answers.equivalent (the one matcher eval and the data protocols use too)."""
  from rlvr_jax.data.answers import equivalent, extract_boxed
  return equivalent(extract_boxed(text), label)


def math_verify_match(text: str, label: str) -> bool:
  """The same check as boxed_answers_match (kept as a name): answers.equivalent is math-verify
  backed (`\\frac{1}{2}` == `0.5`) with a fast path, a cache and thread-safe timeouts."""
  return boxed_answers_match(text, label)


def default_verifier() -> Callable[[str, str], bool]:
  """The host verifier: math_verify_match (math-verify is a dependency of the package)."""
  return math_verify_match


def host_verifier_reward(texts: Sequence[str], labels: Sequence[str],
                         verify_fn: Callable[[str, str], bool] | None = None) -> np.ndarray:
  """float32[N] rewards (1.0 / 0.0) from decoded responses, the contract of the in-graph rewards.

  texts: N decoded responses; labels: N canonical answers (repeat per sample);
  verify_fn(text, label) -> bool, default `default_verifier()`. Runs on the host (not jittable).
  """
  if len(texts) != len(labels):
    raise ValueError(f"host_verifier_reward: {len(texts)} texts but {len(labels)} labels; give "
                     f"one label per response (repeat each prompt's label for its samples)")
  for i, label in enumerate(labels):
    if label is None:
      raise ValueError(f"host_verifier_reward: label of row {i} is None; the dataset needs an "
                       f"answer label for every prompt")
  fn = verify_fn if verify_fn is not None else default_verifier()
  return np.asarray([1.0 if fn(text, label) else 0.0 for text, label in zip(texts, labels)],
                    np.float32)
