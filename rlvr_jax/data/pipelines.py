"""grain input pipelines for CPT, SFT and RL: deterministic for a seed, sharded per process,
checkpointable (`get_state` / `set_state`, JSON-serialisable, so orbax's
`grain.checkpoint.CheckpointSave/Restore` can store the iterator in a train checkpoint).

    ds = cpt_dataset(docs, tok, seq_len=L, batch_size=B, seed=0)      # a grain.IterDataset
    it = iter(ds); batch = next(it); state = it.get_state(); it.set_state(state)
    it.accounting()                                                    # token / example counts

Each function returns a grain `IterDataset` of batches (dicts of numpy arrays). Iterating it
gives a `grain.DatasetIterator` with `get_state()`, `set_state(state)` and `accounting()`.

Sharding. Records are split into `shard_count` contiguous, disjoint slices that together cover
the data (sizes differ by at most one; `drop_uneven=True` cuts them to the same size); process
`shard_index` reads its slice only, then shuffles it. Defaults come from
`grain.sharding.ShardByJaxProcess()` (jax.process_index / process_count). `batch_size` is the
per-process batch: the global batch is batch_size * shard_count.

Order. A seeded global shuffle of the (shard's) records per epoch (grain
`MapDataset.shuffle(seed)` then `.repeat(num_epochs)`, reshuffled every epoch); num_epochs=None
repeats forever. Same arguments, same batches.

Token batches (CPT and SFT) are int32[B, L] arrays:
  tokens       the input ids (pad_id where there is no token)
  targets      the id to predict at each position: targets[b, t] = tokens[b, t+1] when position
               t+1 holds a token of the same segment, else pad_id
  loss_mask    1 where targets[b, t] is trained on, else 0. CPT: every position whose next token
               is in the same segment (so padding, the last token of each segment and the last
               column never are). SFT: additionally only where that next token is an assistant
               token (the reply and its end-of-turn / eos marker), never a prompt token.
  segment_ids  1, 2, ... for the documents / examples of a row in order, 0 on padding
  positions    0, 1, ... restarting at every segment, 0 on padding
The loss is sum(loss_mask * -log p(targets | tokens[:t+1])) / sum(loss_mask), with attention
restricted to equal segment_ids (model.transformer.forward(segment_ids=, positions=)).

CPT packing. Documents are tokenized (+ eos, optional bos), concatenated and cut into rows of
exactly seq_len tokens (grain.experimental.ConcatThenSplitIterDataset): a document longer than
a row, or straddling a row boundary, continues in the next row as a new segment whose positions
restart at 0. Only the very last row of a finite stream has padding. No token is dropped
silently: `accounting()` reports docs_in, tokens_in (after tokenization), tokens_out (non-pad
tokens in emitted batches), tokens_remainder (tokens in a last partial batch that was not
emitted, drop_remainder=True), tokens_buffered (inside the packer right now), segments_out,
rows_out, pad_out, loss_tokens_out. Once the stream is exhausted
tokens_in == tokens_out + tokens_remainder, and at any time
tokens_in == tokens_out + tokens_remainder + tokens_buffered.

SFT. Prompt = the chat template applied to [system, user] with the generation prompt
(tok.encode_chat); reply = the thinking trace + solution (thinking=True, `think_format`) or the
solution only, followed by the template's end-of-turn marker (eos for the "plain" template), so
the reply ends with tok.chat_stop_id(template). Prompt and reply are tokenized separately (the
sampler sees exactly these prompt ids at generation time). An example longer than seq_len is
dropped (truncation="drop") or has its reply cut to fit (truncation="truncate"; a prompt that
alone fills seq_len is still dropped): counts in accounting(). Rows are padded, one example per
row, or packed first-fit (pack=True, grain.experimental.FirstFitPackIterDataset; examples are
never split).

RL batches (see rl_dataset): prompt token ids right-padded, prompt lengths, the label and its
token ids, and metadata.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import numpy as np

from rlvr_jax.data import answers as answers_lib
from rlvr_jax.data.records import Policy, text_record
from rlvr_jax.data.sources import DataError

DEFAULT_THINK_FORMAT = "<think>\n{thinking}\n</think>\n\n{solution}"
TOKEN_KEYS = ("tokens", "targets", "loss_mask", "segment_ids", "positions")
RL_ARRAY_KEYS = ("prompt_tokens", "prompt_lengths", "answer_tokens", "answer_lengths",
                 "true_answer_tokens", "difficulty", "index")
RL_STRING_KEYS = ("label", "true_label", "domain", "example_id")


def _default_system_prompt() -> str:
  from rlvr_jax.tokenizer import DEFAULT_SYSTEM_PROMPT
  return DEFAULT_SYSTEM_PROMPT


# ---------------------------------------------------------------------------------- sharding


@dataclasses.dataclass(frozen=True)
class Shard:
  index: int
  count: int
  drop_uneven: bool = False


def resolve_shard(shard_index: int | None = None, shard_count: int | None = None,
                  drop_uneven: bool = False) -> Shard:
  """A Shard from explicit arguments, else from grain.sharding.ShardByJaxProcess()."""
  if (shard_index is None) != (shard_count is None):
    raise ValueError("pass both shard_index and shard_count, or neither (then the JAX process "
                     "index / count are used)")
  if shard_index is None:
    opts = grain.sharding.ShardByJaxProcess(drop_remainder=drop_uneven)
    shard_index, shard_count = opts.shard_index, opts.shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
  return Shard(int(shard_index), int(shard_count), drop_uneven)


def shard_bounds(n: int, shard: Shard) -> tuple[int, int]:
  """[start, stop) of shard `shard.index` of n items: contiguous, disjoint, covering (sizes
  differ by at most one; with drop_uneven every shard has n // count items)."""
  if shard.drop_uneven:
    size = n // shard.count
    return shard.index * size, (shard.index + 1) * size
  return shard.index * n // shard.count, (shard.index + 1) * n // shard.count


# ------------------------------------------------------------------------- grain building blocks


class _IndexedSource:
  """src[i] -> (i, src[i]) so map functions can name the source row of a bad record."""

  def __init__(self, src, start: int, stop: int):
    self._src, self._start, self._stop = src, start, stop

  def __len__(self):
    return self._stop - self._start

  def __getitem__(self, i):
    j = self._start + int(i)
    return j, self._src[j]


def _where(src, i: int) -> str:
  fn = getattr(src, "where", None)
  return fn(i) if fn is not None else f"<records>:row {i}"


def _ordered(src, shard: Shard, seed: int, shuffle: bool, num_epochs: int | None
             ) -> grain.MapDataset:
  start, stop = shard_bounds(len(src), shard)
  if stop <= start:
    raise ValueError(f"shard {shard.index} of {shard.count} is empty: the source has only "
                     f"{len(src)} records")
  ds = grain.MapDataset.source(_IndexedSource(src, start, stop))
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  return ds


DROP_HINTS = {
    "dropped_too_long": "raise seq_len, or truncation='truncate'",
    "dropped_prompt_too_long": "raise seq_len (SFT) or data.max_prompt_len (RL)",
    "dropped_no_trace": "use thinking=False, or records that have a reasoning trace",
    "docs_empty": "the documents tokenise to nothing: check text_key / text_fn",
    "dropped_label_too_long": "raise data.max_answer_len",
    "truncated": "raise seq_len to keep whole replies",
}


def _endless_pass_size(src, shard: Shard, num_epochs: int | None) -> int | None:
  """Records of `src` in this shard (one pass of `_ordered`) when the passes repeat without end,
  else None: a finite dataset that drops everything simply ends (empty), it cannot spin."""
  start, stop = shard_bounds(len(src), shard)
  return stop - start if num_epochs is None else None


class _CountingIterDataset(grain.IterDataset):
  """Consumes `_counts` (dict of increments) and `_keep` (bool) from each element, keeps the
  running totals in its (checkpointed) state and drops the elements with _keep False.

  pass_size: elements in one pass over the source (this shard's records). When a whole pass is
  dropped (the first pass of a fresh iterator, or any 2 * pass_size elements in a row, which
  always cover one whole pass), no later pass can keep anything either, so iteration fails with
  a DataError naming the drop counts, instead of spinning forever over a repeated source."""

  def __init__(self, parent: grain.IterDataset, keys: Sequence[str], pass_size: int | None = None):
    super().__init__(parent)
    self._keys = tuple(keys)
    self._pass_size = pass_size

  def __iter__(self):
    return _CountingIterator(self._parent.__iter__(), self._keys, self._pass_size)


class _CountingIterator(grain.DatasetIterator):

  def __init__(self, parent, keys, pass_size=None):
    super().__init__(parent)
    self.counts = dict.fromkeys(keys, 0)
    self._pass_size = pass_size
    self._dropped_in_a_row = 0
    self._at_first_pass = True        # a fresh iterator starts at a pass boundary

  def __next__(self):
    while True:
      element = dict(next(self._parent))
      for k, v in element.pop("_counts").items():
        self.counts[k] = self.counts.get(k, 0) + int(v)
      if element.pop("_keep"):
        self._dropped_in_a_row = 0
        self._at_first_pass = False
        return element
      self._dropped_in_a_row += 1
      limit = self._pass_size * (1 if self._at_first_pass else 2) if self._pass_size else 0
      if limit and self._dropped_in_a_row >= limit:
        dropped = {k: v for k, v in self.counts.items() if v and k in DROP_HINTS}
        hints = "; ".join(f"{k}: {DROP_HINTS[k]}" for k in dropped)
        raise DataError(f"all {self._pass_size} examples of a whole pass over the data were "
                        f"dropped, so there is nothing to batch (counts so far: {dropped}); "
                        f"{hints}")

  def get_state(self):
    return {"parent": self._parent.get_state(), "counts": dict(self.counts)}

  def set_state(self, state):
    self._parent.set_state(state["parent"])
    self.counts = {k: int(v) for k, v in state["counts"].items()}
    self._dropped_in_a_row, self._at_first_pass = 0, False


def _find_counters(it) -> list[_CountingIterator]:
  out, todo, seen = [], [it], set()
  while todo:
    node = todo.pop()
    if id(node) in seen:
      continue
    seen.add(id(node))
    if isinstance(node, _CountingIterator):
      out.append(node)
    todo.extend(getattr(node, "_parents", ()))
  return out


def _tuples_for_slices(state):
  """JSON turns tuples into lists; grain's ConcatThenSplit compares its remainder slices with
  the tuple (-1, -1), so restore the tuples before handing a state back (grain 0.2.18)."""
  if isinstance(state, dict):
    out = {}
    for k, v in state.items():
      if k == "remainder_slices" and isinstance(v, dict):
        out[k] = {kk: tuple(vv) if isinstance(vv, list) else vv for kk, vv in v.items()}
      else:
        out[k] = _tuples_for_slices(v)
    return out
  if isinstance(state, list):
    return [_tuples_for_slices(v) for v in state]
  return state


class _BatchIterDataset(grain.IterDataset):
  """Groups rows into batches of `batch_size` with `collate(rows) -> batch`, counting what goes
  out and what is left in a last partial batch.

  count(row) -> {name: int}: added to f"{name}_out" for emitted rows and f"{name}_remainder"
  for the rows of a dropped last partial batch. With drop_remainder=False the last batch is
  filled with `pad_row()` rows instead. `static_counts` (eager preprocessing) are reported too.
  """

  def __init__(self, parent, *, batch_size: int, collate: Callable, count: Callable,
               drop_remainder: bool, pad_row: Callable | None, count_names: Sequence[str],
               static_counts: Mapping[str, int] | None = None, info: Mapping | None = None):
    super().__init__(parent)
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.batch_size = batch_size
    self._collate, self._count, self._pad_row = collate, count, pad_row
    self._drop_remainder = drop_remainder
    self._count_names = tuple(count_names)
    self.static_counts = dict(static_counts or {})
    self.info = dict(info or {})

  def __iter__(self):
    return _BatchIterator(self._parent.__iter__(), self)


class _BatchIterator(grain.DatasetIterator):

  def __init__(self, parent, ds: _BatchIterDataset):
    super().__init__(parent)
    self._ds = ds
    self._exhausted = False
    self.counts = {"batches_out": 0, "rows_out": 0, "rows_remainder": 0,
                   **{f"{n}_{s}": 0 for n in ds._count_names for s in ("out", "remainder")}}
    self._counters = _find_counters(parent)

  def _add(self, rows, suffix):
    for row in rows:
      for k, v in self._ds._count(row).items():
        self.counts[f"{k}_{suffix}"] += int(v)
    self.counts[f"rows_{suffix}"] += len(rows)

  def __next__(self):
    if self._exhausted:
      raise StopIteration
    rows = []
    while len(rows) < self._ds.batch_size:
      try:
        rows.append(next(self._parent))
      except StopIteration:
        self._exhausted = True
        break
    if not rows:
      raise StopIteration
    if len(rows) < self._ds.batch_size:
      if self._ds._drop_remainder:
        self._add(rows, "remainder")
        raise StopIteration
      self._add(rows, "out")
      rows = rows + [self._ds._pad_row() for _ in range(self._ds.batch_size - len(rows))]
    else:
      self._add(rows, "out")
    self.counts["batches_out"] += 1
    return self._ds._collate(rows)

  def get_state(self):
    return {"parent": self._parent.get_state(), "counts": dict(self.counts),
            "exhausted": self._exhausted}

  def set_state(self, state):
    self._parent.set_state(_tuples_for_slices(state["parent"]))
    self.counts = {k: int(v) for k, v in state["counts"].items()}
    self._exhausted = bool(state["exhausted"])

  def accounting(self) -> dict[str, int]:
    """Counts so far: the upstream counters (tokenization, drops), then what was emitted."""
    out = dict(self._ds.static_counts)
    for c in self._counters:
      for k, v in c.counts.items():
        out[k] = out.get(k, 0) + v
    out.update(self.counts)
    if "tokens_in" in out and "tokens_out" in out:
      out["tokens_buffered"] = out["tokens_in"] - out["tokens_out"] - out["tokens_remainder"]
    return out


# ------------------------------------------------------------------------------------ rows


def _pad_value(tok) -> int:
  pad = getattr(tok, "pad_id", None)
  return int(pad) if pad is not None and pad >= 0 else 0


def _token_batch(rows: Sequence[Mapping[str, np.ndarray]], pad_id: int) -> dict[str, np.ndarray]:
  """Stacks packed/padded rows into the token batch of the module docstring."""
  tokens = np.stack([r["tokens"] for r in rows]).astype(np.int32)
  seg = np.stack([_segments(r) for r in rows]).astype(np.int32)
  pos = np.stack([r.get("tokens_positions", r.get("positions")) for r in rows]).astype(np.int32)
  valid = seg > 0
  tokens = np.where(valid, tokens, pad_id).astype(np.int32)
  pos = np.where(valid, pos, 0).astype(np.int32)
  same_next = np.zeros_like(valid)
  same_next[:, :-1] = valid[:, :-1] & (seg[:, 1:] == seg[:, :-1])
  if "assistant" in rows[0]:
    assistant = np.stack([r["assistant"] for r in rows]).astype(bool)
    same_next[:, :-1] &= assistant[:, 1:]
  targets = np.full_like(tokens, pad_id)
  targets[:, :-1] = np.where(same_next[:, :-1], tokens[:, 1:], pad_id)
  batch = {"tokens": tokens, "targets": targets.astype(np.int32),
           "loss_mask": same_next.astype(np.int32), "segment_ids": seg, "positions": pos}
  if "answer" in rows[0]:
    answer_mask = np.zeros_like(same_next)
    answer_BL = np.stack([r["answer"] for r in rows]).astype(bool)
    answer_mask[:, :-1] = same_next[:, :-1] & answer_BL[:, 1:]
    batch["answer_mask"] = answer_mask.astype(np.int32)
  return batch


def _segments(row) -> np.ndarray:
  """Segment ids of a packed row (grain names them tokens_segment_ids) or a padded row."""
  return row["tokens_segment_ids"] if "tokens_segment_ids" in row else row["segment_ids"]


def _token_row_counts(row) -> dict[str, int]:
  seg = _segments(row)
  n = int(np.count_nonzero(seg))
  return {"tokens": n, "pad": len(seg) - n, "segments": int(seg.max()) if n else 0}


def _empty_row(seq_len: int, with_assistant: bool, with_answer: bool = False
               ) -> Callable[[], dict]:
  def make():
    row = {"tokens": np.zeros(seq_len, np.int32), "segment_ids": np.zeros(seq_len, np.int32),
           "positions": np.zeros(seq_len, np.int32)}
    if with_assistant:
      row["assistant"] = np.zeros(seq_len, np.int32)
    if with_answer:
      row["answer"] = np.zeros(seq_len, np.int32)
    return row
  return make


def _read_options(read_threads: int, prefetch: int) -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=max(1, read_threads), prefetch_buffer_size=max(1, prefetch))


# -------------------------------------------------------------------------------------- CPT


def cpt_dataset(docs: Sequence[Any], tokenizer, *, seq_len: int, batch_size: int, seed: int = 0,
                num_epochs: int | None = 1, shuffle: bool = True, add_bos: bool = False,
                add_eos: bool = True, drop_remainder: bool = True,
                text_fn: Callable[[Any], str] | None = None, text_key: str = "text",
                shard_index: int | None = None, shard_count: int | None = None,
                drop_uneven: bool = False, read_threads: int = 4,
                prefetch: int = 256) -> grain.IterDataset:
  """Packed language-modelling batches of int32[batch_size, seq_len] (module docstring).

  docs: a random-access sequence (list, or a reader from sources.py) of strings, of {"text"}
    rows (`text_key`), or of anything `text_fn(row) -> str` turns into a document.
  tokenizer: has encode(text, add_bos=, add_eos=) -> list[int] and pad_id / eos_id.
  add_bos / add_eos: wrap every document. A document with no tokens is dropped and counted
    (docs_empty). drop_remainder: a last partial batch is not emitted (its tokens are counted
    as tokens_remainder); False pads it with empty rows instead.
  Returns an IterDataset; its iterator has get_state/set_state/accounting().
  """
  if seq_len < 2:
    raise ValueError(f"seq_len must be >= 2, got {seq_len}")
  shard = resolve_shard(shard_index, shard_count, drop_uneven)
  pad_id = _pad_value(tokenizer)

  def tokenize(item):
    i, row = item
    try:
      text = text_fn(row) if text_fn is not None else text_record(row, where=_where(docs, i),
                                                                    text_key=text_key)
    except DataError:
      raise
    except Exception as e:
      raise DataError(f"{_where(docs, i)}: cannot make a document of this row: {e}") from e
    ids = np.asarray(tokenizer.encode(text, add_bos=add_bos, add_eos=add_eos), np.int32)
    return {"tokens": ids, "_keep": len(ids) > 0,
            "_counts": {"docs_in": 1, "tokens_in": len(ids), "docs_empty": int(len(ids) == 0)}}

  ds = _ordered(docs, shard, seed, shuffle, num_epochs).map(tokenize)
  it = ds.to_iter_dataset(_read_options(read_threads, prefetch))
  it = _CountingIterDataset(it, ("docs_in", "docs_empty", "tokens_in"),
                            _endless_pass_size(docs, shard, num_epochs))
  it = grain.experimental.ConcatThenSplitIterDataset(it, length_struct={"tokens": seq_len})
  counts = lambda row: {**_token_row_counts(row),
                        "loss_tokens": _row_loss_tokens(row)}
  return _BatchIterDataset(
      it, batch_size=batch_size, collate=lambda rows: _token_batch(rows, pad_id),
      count=counts, drop_remainder=drop_remainder, pad_row=_empty_row(seq_len, False),
      count_names=("tokens", "pad", "segments", "loss_tokens"),
      info={"kind": "cpt", "seq_len": seq_len, "batch_size": batch_size, "shard": shard.index,
            "shard_count": shard.count})


def _row_loss_tokens(row) -> int:
  seg = _segments(row)
  same = (seg[:-1] > 0) & (seg[1:] == seg[:-1])
  if "assistant" in row:
    same &= np.asarray(row["assistant"][1:], bool)
  return int(np.count_nonzero(same))


# -------------------------------------------------------------------------------------- SFT


def prompt_messages(record: Mapping[str, Any], system_prompt: str | None) -> list[dict]:
  """The chat prompt of a problem record: its original `messages` when it has them (verl
  data, used verbatim), else [system, user]; the system turn is the record's own `system`,
  else `system_prompt` (None or "" for no system turn)."""
  msgs = record.get("messages")
  if msgs:
    return [{"role": m["role"], "content": m["content"]} for m in msgs]
  system = record.get("system") or system_prompt
  out = [{"role": "system", "content": system}] if system else []
  out.append({"role": "user", "content": record["problem"]})
  return out


def final_solution(record: Mapping[str, Any]) -> str:
  """The record's solution when it states a \\boxed{} answer, else the solution followed by
  "The final answer is \\boxed{TRUE_ANSWER}." (the boxed true answer alone when there is no
  solution text)."""
  sol = (record.get("solution") or "").strip()
  if "\\boxed" in sol:
    return sol
  box = "The final answer is \\boxed{" + str(record.get("true_answer", record["answer"])) + "}."
  return f"{sol}\n\n{box}" if sol else box


def assistant_reply(record: Mapping[str, Any], *, thinking: bool,
                    think_format: str = DEFAULT_THINK_FORMAT) -> str | None:
  """The SFT target text: think_format(thinking, solution) or the solution only; None when
  thinking=True and the record has no thinking trace."""
  solution = final_solution(record)
  if not thinking:
    return solution
  trace = (record.get("thinking") or "").strip()
  if not trace:
    return None
  return think_format.format(thinking=trace, solution=solution)


def encode_sft_example(record: Mapping[str, Any], tokenizer, *, template: str,
                       system_prompt: str | None, thinking: bool,
                       think_format: str = DEFAULT_THINK_FORMAT
                       ) -> tuple[list[int], list[int]] | None:
  """(prompt ids, reply ids) of one SFT example; the reply ends with the template's stop id.
  None when the record has no reply in this mode (thinking=True without a trace)."""
  reply = assistant_reply(record, thinking=thinking, think_format=think_format)
  if reply is None:
    return None
  from rlvr_jax.tokenizer import chat_turn_end
  prompt = tokenizer.encode_chat(prompt_messages(record, system_prompt), template=template,
                                 add_generation_prompt=True)
  completion = tokenizer.encode(reply + chat_turn_end(template))
  stop = tokenizer.chat_stop_id(template)
  if not completion or completion[-1] != stop:
    completion = completion + [stop]
  return prompt, completion


def answer_token_mask(tokenizer, ids: Sequence[int]) -> np.ndarray:
  """int32[len(ids)]: 1 on the tokens that overlap the content of a `\\boxed{...}` span of the
  decoded text (the answer tokens of a reply), else 0.

  Token i covers the characters between the decodings of ids[:i] and ids[:i+1], so the mask
  follows the tokenizer's own segmentation (O(len(ids)²) decodes: meant for held-out sets).
  """
  ends = [len(tokenizer.decode(ids[:i + 1], skip_special=False)) for i in range(len(ids))]
  spans = answers_lib.boxed_spans(tokenizer.decode(ids, skip_special=False))
  mask = np.zeros(len(ids), np.int32)
  begin = 0
  for i, end in enumerate(ends):
    if any(begin < hi and lo < end for lo, hi in spans):
      mask[i] = 1
    begin = max(begin, end)
  return mask


_SFT_COUNTS = ("examples_in", "dropped_no_trace", "dropped_too_long", "dropped_prompt_too_long",
               "truncated", "tokens_truncated", "tokens_in")


def sft_dataset(records: Sequence[Mapping[str, Any]], tokenizer, *, seq_len: int,
                batch_size: int, template: str, seed: int = 0, num_epochs: int | None = 1,
                shuffle: bool = True, thinking: bool = True,
                think_format: str = DEFAULT_THINK_FORMAT, system_prompt: str | None = "default",
                truncation: str = "drop", pack: bool = False, pack_bins: int | None = None,
                drop_remainder: bool = True, shard_index: int | None = None,
                shard_count: int | None = None, drop_uneven: bool = False,
                read_threads: int = 4, prefetch: int = 256,
                answer_mask: bool = False, global_batches: bool = True) -> grain.IterDataset:
  """SFT batches of int32[batch_size, seq_len] with loss only on assistant tokens.

  global_batches=True (default): every process encodes all the records in the same order and
  batches GLOBAL batches of batch_size x shard_count rows, keeping its own contiguous rows of
  each, so the global batch does not depend on the number of processes (SFT sets are small
  enough to encode on every host). False: each process encodes only its slice of the records.

  records: problem records (records.py schema). template: a tokenizer chat template name.
  system_prompt: "default" (tokenizer.DEFAULT_SYSTEM_PROMPT, the paper's), a string, or None.
  thinking: reply = think_format(thinking, solution) (records without a trace are dropped and
    counted, dropped_no_trace) or, False, the solution only.
  truncation: "drop" an example longer than seq_len (dropped_too_long) or "truncate" its reply
    (truncated, tokens_truncated; a prompt of >= seq_len tokens is dropped_prompt_too_long).
  pack: first-fit pack examples into rows (pack_bins open rows, default batch_size) instead of
    one example per row.
  answer_mask: batches also hold `answer_mask` int32[B, L], the loss mask restricted to targets
    inside the reply's `\\boxed{...}` answers (`answer_token_mask`; costly, for held-out sets),
    from which the eval step measures teacher-forced answer-token accuracy.
  accounting(): examples_in, the drop/truncation counts, tokens_in (kept tokens, after
    truncation), then tokens/pad/segments/loss_tokens _out and _remainder, rows, batches.
  """
  if truncation not in ("drop", "truncate"):
    raise ValueError(f"truncation must be 'drop' or 'truncate', got {truncation!r}")
  if seq_len < 2:
    raise ValueError(f"seq_len must be >= 2, got {seq_len}")
  tokenizer.check_template(template)
  if system_prompt == "default":
    system_prompt = _default_system_prompt()
  shard = resolve_shard(shard_index, shard_count, drop_uneven)
  order = Shard(0, 1) if global_batches else shard     # the records this process encodes
  rows_per_batch = batch_size * shard.count if global_batches else batch_size
  pad_id = _pad_value(tokenizer)

  def encode(item):
    i, record = item
    counts = dict.fromkeys(_SFT_COUNTS, 0)
    counts["examples_in"] = 1
    try:
      pair = encode_sft_example(record, tokenizer, template=template, system_prompt=system_prompt,
                                thinking=thinking, think_format=think_format)
    except (KeyError, TypeError, ValueError) as e:
      raise DataError(f"{_where(records, i)}: cannot build an SFT example: {e}") from e
    if pair is None:
      counts["dropped_no_trace"] = 1
      return {"_keep": False, "_counts": counts}
    prompt, completion = pair
    total = len(prompt) + len(completion)
    if total > seq_len:
      if truncation == "drop":
        counts["dropped_too_long"] = 1
        return {"_keep": False, "_counts": counts}
      if len(prompt) >= seq_len:
        counts["dropped_prompt_too_long"] = 1
        return {"_keep": False, "_counts": counts}
      counts["truncated"] = 1
      counts["tokens_truncated"] = total - seq_len
      completion = completion[:seq_len - len(prompt)]
    ids = np.asarray(prompt + completion, np.int32)
    assistant = np.zeros(len(ids), np.int32)
    assistant[len(prompt):] = 1
    counts["tokens_in"] = len(ids)
    channels = {"tokens": ids, "assistant": assistant}
    if answer_mask:
      channels["answer"] = np.concatenate([np.zeros(len(prompt), np.int32),
                                           answer_token_mask(tokenizer, completion)])
    if pack:
      return {**channels, "_keep": True, "_counts": counts}
    n = len(ids)
    row = {"tokens": np.full(seq_len, pad_id, np.int32), "segment_ids": np.zeros(seq_len, np.int32),
           "positions": np.zeros(seq_len, np.int32)}
    for name, values in channels.items():
      if name != "tokens":
        row[name] = np.zeros(seq_len, np.int32)
      row[name][:n] = values
    row["segment_ids"][:n], row["positions"][:n] = 1, np.arange(n)
    return {**row, "_keep": True, "_counts": counts}

  ds = _ordered(records, order, seed, shuffle, num_epochs).map(encode)
  it = ds.to_iter_dataset(_read_options(read_threads, prefetch))
  it = _CountingIterDataset(it, _SFT_COUNTS,
                            _endless_pass_size(records, order, num_epochs))
  if pack:
    channels_of_row = ("tokens", "assistant") + (("answer",) if answer_mask else ())
    it = grain.experimental.FirstFitPackIterDataset(
        it, length_struct=dict.fromkeys(channels_of_row, seq_len),
        num_packing_bins=pack_bins or rows_per_batch, shuffle_bins=False)
  counts = lambda row: {**_token_row_counts(row), "loss_tokens": _row_loss_tokens(row)}
  lo, hi = (shard.index * batch_size, (shard.index + 1) * batch_size) \
      if global_batches and shard.count > 1 else (0, rows_per_batch)
  return _BatchIterDataset(
      it, batch_size=rows_per_batch, collate=lambda rows: _token_batch(rows[lo:hi], pad_id),
      count=counts, drop_remainder=drop_remainder, pad_row=_empty_row(seq_len, True, answer_mask),
      count_names=("tokens", "pad", "segments", "loss_tokens"),
      info={"kind": "sft", "seq_len": seq_len, "batch_size": batch_size, "template": template,
            "thinking": thinking, "pack": pack, "shard": shard.index,
            "shard_count": shard.count, "global_batches": global_batches})


# --------------------------------------------------------------------------------------- RL


def render_prompt(record: Mapping[str, Any], tokenizer, *, template: str,
                  system_prompt: str | None = "default", prompt_suffix: str = "") -> list[int]:
  """Prompt ids of a problem record: its chat prompt (prompt_messages) in `template` with the
  generation prompt, plus `prompt_suffix` (e.g. "<think>\\n" for thinking models), encoded as
  tok.encode_chat does (bos where the template wants it)."""
  if system_prompt == "default":
    system_prompt = _default_system_prompt()
  messages = prompt_messages(record, system_prompt)
  if not prompt_suffix:
    return tokenizer.encode_chat(messages, template=template, add_generation_prompt=True)
  tmpl = tokenizer.check_template(template)
  text = tokenizer.apply_chat_template(messages, template=template, add_generation_prompt=True)
  return tokenizer.encode(text + prompt_suffix, add_bos=tmpl.add_bos)


def answer_row(ids: Sequence[int], width: int) -> np.ndarray:
  """int32[width]: answer token ids right-padded with -1; all -1 when the answer is empty or
  longer than `width` (an answer that cannot be represented whole can never be matched)."""
  row = np.full(width, -1, np.int32)
  if 0 < len(ids) <= width:
    row[:len(ids)] = ids
  return row


def rl_dataset(records: Sequence[Mapping[str, Any]], tokenizer, *, batch_size: int,
               max_prompt_len: int, template: str, max_answer_len: int = 32, seed: int = 0,
               num_epochs: int | None = None, shuffle: bool = True, repeat_to_fill: bool = True,
               system_prompt: str | None = "default", prompt_suffix: str = "",
               policy: Policy = Policy(), shard_index: int | None = None,
               shard_count: int | None = None, drop_uneven: bool = False,
               global_batches: bool = True) -> grain.IterDataset:
  """RL prompt batches. Prompts are tokenized up front (RL sets are small), then batched.

  global_batches=True (default): every process reads all the records and builds the same
  sequence of GLOBAL batches of batch_size x shard_count prompts (the same shuffle, the same
  upsampling), then keeps its own contiguous rows of each: the global batch is the same whatever
  the number of processes, so a run on 2 hosts trains on exactly the prompts of a 1-host run.
  False: each process reads only its contiguous slice of the records and batches those.

  Each batch:
    prompt_tokens   int32[B, max_prompt_len]  right-padded with tokenizer.pad_id
    prompt_lengths  int32[B]
    answer_tokens   int32[B, max_answer_len]  the label encoded on its own (no bos/eos),
                    padded with -1
    answer_lengths  int32[B]
    true_answer_tokens  int32[B, max_answer_len]  the true label encoded the same way; all -1
                    when it is longer than max_answer_len (it can then never be matched; the
                    row is kept, as the true label only measures reward/true_mean)
    difficulty      int32[B]   (-1 unknown)
    index           int32[B]   the record's position in `records`
    label           str[B]     the label rewards are computed against (maybe a noisy one)
    true_label      str[B]     the ground truth (validation, reward/true_mean)
    domain, example_id  str[B]
  (RL_ARRAY_KEYS go to the device; RL_STRING_KEYS stay on the host.)

  A prompt longer than max_prompt_len, or a label longer than max_answer_len tokens, is
  dropped and counted (dropped_prompt_too_long / dropped_label_too_long) or raises DataError,
  per policy.too_long. repeat_to_fill: when this shard has fewer prompts n than batch_size,
  each epoch is protocols.upsample_indices(n, batch_size): every prompt batch_size // n times
  (leftover slots to distinct seeded prompts), shuffled, one batch per epoch. num_epochs=None
  repeats forever. accounting(): prompts_in, dropped_*, prompts (kept), upsampled_to, plus
  rows/batches out.
  """
  if system_prompt == "default":
    system_prompt = _default_system_prompt()
  tokenizer.check_template(template)
  shard = resolve_shard(shard_index, shard_count, drop_uneven)
  start, stop = (0, len(records)) if global_batches else shard_bounds(len(records), shard)
  rows_per_batch = batch_size * shard.count if global_batches else batch_size
  pad_id = _pad_value(tokenizer)
  items: list[dict] = []
  counts = {"prompts_in": 0, "dropped_prompt_too_long": 0, "dropped_label_too_long": 0}
  for i in range(start, stop):
    record, where = records[i], _where(records, i)
    counts["prompts_in"] += 1
    try:
      ids = render_prompt(record, tokenizer, template=template, system_prompt=system_prompt,
                          prompt_suffix=prompt_suffix)
      label = str(record["answer"])
      ans = tokenizer.encode(label)
    except (KeyError, TypeError) as e:
      raise DataError(f"{where}: not a problem record ({e}); see records.py for the schema"
                      ) from e
    for what, n, limit in (("prompt", len(ids), max_prompt_len),
                           ("label", len(ans), max_answer_len)):
      if n > limit:
        if policy.too_long == "error":
          raise DataError(f"{where}: field {'problem' if what == 'prompt' else 'answer'!r}: the "
                          f"{what} is {n} tokens, over the limit of {limit}; raise "
                          f"max_{what if what == 'prompt' else 'answer'}_len or use "
                          "Policy(too_long='drop')")
        counts[f"dropped_{what}_too_long"] += 1
        break
    else:
      p = np.full(max_prompt_len, pad_id, np.int32)
      p[:len(ids)] = ids
      true_label = str(record.get("true_answer", label))
      true_ans = ans if true_label == label else tokenizer.encode(true_label)
      items.append({"prompt_tokens": p, "prompt_lengths": np.int32(len(ids)),
                    "answer_tokens": answer_row(ans, max_answer_len),
                    "answer_lengths": np.int32(len(ans)),
                    "true_answer_tokens": answer_row(true_ans, max_answer_len),
                    "difficulty": np.int32(record.get("difficulty", -1)),
                    "index": np.int32(i), "label": label, "true_label": true_label,
                    "domain": str(record.get("domain", "")),
                    "example_id": str(record.get("id", i))})
  counts["prompts"] = len(items)
  if not items:
    raise DataError(f"no usable prompts in shard {shard.index} of {shard.count} "
                    f"({counts}); check max_prompt_len / max_answer_len")
  ds = grain.MapDataset.source(items)
  counts["upsampled_to"] = len(items)
  if repeat_to_fill and len(items) < rows_per_batch:
    from rlvr_jax.data.protocols import upsample_indices
    idx = upsample_indices(len(items), rows_per_batch, seed)
    counts["upsampled_to"] = len(idx)
    ds = grain.MapDataset.source(idx).map(lambda j: items[int(j)])
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=1,
                                            prefetch_buffer_size=4 * rows_per_batch))
  collate = _rl_batch
  if global_batches and shard.count > 1:
    lo, hi = shard.index * batch_size, (shard.index + 1) * batch_size
    collate = lambda rows: _rl_batch(rows[lo:hi])   # noqa: E731 - this process's rows
  return _BatchIterDataset(
      it, batch_size=rows_per_batch, collate=collate, count=lambda row: {},
      drop_remainder=True, pad_row=None, count_names=(), static_counts=counts,
      info={"kind": "rl", "batch_size": batch_size, "max_prompt_len": max_prompt_len,
            "max_answer_len": max_answer_len, "shard": shard.index,
            "shard_count": shard.count, "global_batches": global_batches})


def _rl_batch(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
  out = {k: np.stack([r[k] for r in rows]).astype(np.int32) for k in RL_ARRAY_KEYS}
  for k in RL_STRING_KEYS:
    out[k] = np.asarray([r[k] for r in rows], dtype=object)
  return out


__all__ = ["cpt_dataset", "sft_dataset", "rl_dataset", "render_prompt", "prompt_messages",
           "assistant_reply", "final_solution", "encode_sft_example", "resolve_shard",
           "shard_bounds", "Shard", "answer_row", "TOKEN_KEYS", "RL_ARRAY_KEYS", "RL_STRING_KEYS",
           "DEFAULT_THINK_FORMAT"]
