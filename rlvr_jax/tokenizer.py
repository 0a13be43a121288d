"""Tokenizers: one interface over sentencepiece `.model` files and HF `tokenizer.json`; chat templates.

    tok = load_tokenizer(path)              # a .model file, a tokenizer.json, or a directory
    ids = tok.encode("2+2=?", add_bos=True)
    ids_BL, lengths_B = tok.encode_batch(texts, max_len=64)          # int32, padded with pad_id
    text = tok.decode(ids)
    prompt = tok.apply_chat_template(messages, template="chatml")     # str
    ids = tok.encode_chat(messages, template="chatml")                # str -> ids, bos as the template wants

Special ids. `bos_id`, `eos_id`, `pad_id` are ints, or None where the tokenizer has no such token.
Pad rule: `pad_id` is the tokenizer's own pad token when it has one, else `eos_id` (Llama 3 and
Qwen2.5 base tokenizers have no pad token). `encode(add_bos=True)` prepends bos only when the
tokenizer has one (Qwen2.5 has none); `add_eos=True` needs an eos token.

Decoding never stops early: every id is decoded, except that pad ids are always removed (where
pad is eos, only the runs of it at either end of the row, which cannot be told from padding) and
ids the tokenizer does not know (negative, or past its vocabulary, which a model's padded
embedding can produce) decode to nothing.
`skip_special=True` also drops special tokens: for HF tokenizers the added tokens marked
`special` (`<|begin_of_text|>`, `<|eot_id|>`, `<|im_start|>`, ...); for sentencepiece the control
pieces (bos, eos, pad) and the chat role markers (user-defined pieces spelled `<|...|>`).
`<think>`, `</think>` and `\\boxed{` are text, never dropped.

Built-in sentencepiece models (`train_sentencepiece`): BPE with byte fallback (no text is ever
<unk>), identity normalisation, no dummy prefix and no whitespace folding, so
`decode(encode(s)) == s` for every string; digits are split into single tokens (arithmetic).
Reserved ids: pad=0 `<pad>`, unk=1 `<unk>`, bos=2 `<s>`, eos=3 `</s>`, then the user-defined
symbols of TOY_SPECIAL_SYMBOLS (ids 4..10): the "toy" chat template's `<|system|>`, `<|user|>`,
`<|assistant|>`, `<|end|>`; the thinking tags `<think>`, `</think>`; and `\\boxed{`, so the answer
marker the rewards look for is one token a tiny model can learn. User-defined symbols are always
cut out of input text as one token; control pieces (`<s>`, `</s>`, `<pad>`) never are.

Chat templates (`CHAT_TEMPLATES`; each message a dict with `role` in system/user/assistant and a
`content` string; a system message may only come first). With S the system text, U a user turn,
A an assistant turn:
  plain   "S\\n\\nUser: U\\n\\nAssistant: " (no system: starts at "User:"); a past assistant turn is
          "Assistant: A\\n\\n". No end marker: a reply ends with the tokenizer's eos.
  llama3  Meta-Llama-3-Instruct's template: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>
          \\n\\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\\n\\nU<|eot_id|><|start_header_id|>
          assistant<|end_header_id|>\\n\\n"; contents are stripped of surrounding whitespace as the
          official Jinja template does (`| trim`). Llama 3.1/3.2 templates add a date header to the
          system turn; this one does not. Turn end `<|eot_id|>`.
  chatml  Qwen2/2.5: "<|im_start|>system\\nS<|im_end|>\\n<|im_start|>user\\nU<|im_end|>\\n<|im_start|>
          assistant\\n". Turn end `<|im_end|>` (then "\\n" before the next turn). Unlike Qwen's own
          template no default system prompt is inserted when there is no system message: pass one
          (DEFAULT_SYSTEM_PROMPT is the paper's).
  toy     "<|system|>S<|end|><|user|>U<|end|><|assistant|>" for built-in sentencepiece models;
          turn end `<|end|>`.
For every template, rendering a conversation that ends with an assistant turn A (without a
generation prompt) equals the same conversation without A rendered with the generation prompt,
followed by A + chat_turn_end(template) + the template's turn separator; so SFT examples are
`prompt + reply + chat_turn_end(template)` and generation stops at `tok.chat_stop_id(template)`.
"""
from __future__ import annotations

import abc
import dataclasses
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np

# The paper's system prompt (Qwen2.5-Math's; docs/PROTOCOL.md: "think step by step and put the
# final answer in \boxed{}").
DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

# User-defined symbols of built-in sentencepiece models, in id order starting at 4.
TOY_SPECIAL_SYMBOLS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<think>", "</think>",
                       "\\boxed{")
SP_RESERVED = {"pad": (0, "<pad>"), "unk": (1, "<unk>"), "bos": (2, "<s>"), "eos": (3, "</s>")}

ROLES = ("system", "user", "assistant")
PAD_SIDES = ("right", "left")
OVERFLOW_MODES = ("error", "truncate", "truncate_left")
_ROLE_MARKER = re.compile(r"^<\|[^|]+\|>$")


# ------------------------------------------------------------------------------------------------
# Chat templates
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """A chat format.

  render(messages, add_generation_prompt) -> str; `turn_end` closes an assistant turn (what SFT
  trains the model to emit and generation stops at; "" = the tokenizer's eos); `add_bos`: whether
  encode_chat prepends the tokenizer's bos id (False where the text carries it or the family has
  none); `markers`: strings that must be single tokens of a tokenizer used with this template.
  """
  name: str
  render: Callable[[list[dict], bool], str]
  turn_end: str
  add_bos: bool
  markers: tuple[str, ...]


def _render_plain(messages: list[dict], add_generation_prompt: bool) -> str:
  parts = []
  for m in messages:
    if m["role"] == "system":
      parts.append(m["content"] + "\n\n")
    elif m["role"] == "user":
      parts.append("User: " + m["content"] + "\n\n")
    else:
      parts.append("Assistant: " + m["content"] + "\n\n")
  if add_generation_prompt:
    parts.append("Assistant: ")
  return "".join(parts)


def _render_llama3(messages: list[dict], add_generation_prompt: bool) -> str:
  parts = ["<|begin_of_text|>"]
  for m in messages:
    parts.append(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>")
  if add_generation_prompt:
    parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
  return "".join(parts)


def _render_chatml(messages: list[dict], add_generation_prompt: bool) -> str:
  parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
  if add_generation_prompt:
    parts.append("<|im_start|>assistant\n")
  return "".join(parts)


def _render_toy(messages: list[dict], add_generation_prompt: bool) -> str:
  parts = [f"<|{m['role']}|>{m['content']}<|end|>" for m in messages]
  if add_generation_prompt:
    parts.append("<|assistant|>")
  return "".join(parts)


CHAT_TEMPLATES: dict[str, ChatTemplate] = {
    "plain": ChatTemplate("plain", _render_plain, turn_end="", add_bos=True, markers=()),
    "llama3": ChatTemplate("llama3", _render_llama3, turn_end="<|eot_id|>", add_bos=False,
                           markers=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                                    "<|eot_id|>")),
    "chatml": ChatTemplate("chatml", _render_chatml, turn_end="<|im_end|>", add_bos=False,
                           markers=("<|im_start|>", "<|im_end|>")),
    "toy": ChatTemplate("toy", _render_toy, turn_end="<|end|>", add_bos=True,
                        markers=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")),
}


def get_chat_template(template: str) -> ChatTemplate:
  """The registered ChatTemplate called `template`; ValueError listing the known names otherwise."""
  if template not in CHAT_TEMPLATES:
    raise ValueError(f"Unknown chat template {template!r}; known templates: {sorted(CHAT_TEMPLATES)}")
  return CHAT_TEMPLATES[template]


def chat_turn_end(template: str) -> str:
  """The string that ends an assistant turn in `template` ("" for plain: the reply ends with eos)."""
  return get_chat_template(template).turn_end


def _check_messages(messages: Sequence[dict]) -> list[dict]:
  if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
    raise ValueError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r:.80}")
  out = []
  for i, m in enumerate(messages):
    if not isinstance(m, dict) or "role" not in m or "content" not in m:
      raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {m!r:.80}")
    if m["role"] not in ROLES:
      raise ValueError(f"messages[{i}] has role {m['role']!r}; roles are {ROLES}")
    if not isinstance(m["content"], str):
      raise ValueError(f"messages[{i}]['content'] must be a str, got {type(m['content']).__name__}")
    if m["role"] == "system" and i != 0:
      raise ValueError(f"messages[{i}] is a system message; only the first message may be one")
    out.append({"role": m["role"], "content": m["content"]})
  return out


def render_chat(messages: Sequence[dict], template: str, add_generation_prompt: bool = True) -> str:
  """Renders `messages` ([{'role': system|user|assistant, 'content': str}, ...]) in `template`.

  Tokenizer-free; Tokenizer.apply_chat_template also checks the template's markers are tokens.
  """
  tmpl = get_chat_template(template)
  return tmpl.render(_check_messages(messages), add_generation_prompt)


# ------------------------------------------------------------------------------------------------
# The interface
# ------------------------------------------------------------------------------------------------

class _IdsAndLengths(NamedTuple):
  ids: np.ndarray      # int32[B, L]
  lengths: np.ndarray  # int32[B]


class EncodedBatch(_IdsAndLengths):
  """`(ids int32[B, L], lengths int32[B])`, a namedtuple (unpacks as a pair, is a JAX pytree);
  `.num_truncated` counts the rows encode_batch cut to max_len."""
  num_truncated: int = 0


class Tokenizer(abc.ABC):
  """Common interface. Subclasses provide the id/text mapping; batching and chat live here."""

  # ---- provided by subclasses ----
  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids the tokenizer can produce (max id + 1); a model's embedding may be larger."""

  @property
  @abc.abstractmethod
  def bos_id(self) -> int | None: ...

  @property
  @abc.abstractmethod
  def eos_id(self) -> int | None: ...

  @property
  @abc.abstractmethod
  def pad_id(self) -> int | None:
    """The tokenizer's pad token id, else eos_id (see module docstring)."""

  @abc.abstractmethod
  def _encode_many(self, texts: list[str]) -> list[list[int]]:
    """Ids of each text, no bos/eos added; special tokens written in the text are recognised."""

  @abc.abstractmethod
  def _decode_one(self, ids: list[int], skip_special: bool) -> str:
    """Text of known, non-pad ids."""

  @abc.abstractmethod
  def token_to_id(self, token: str) -> int | None:
    """Id of the vocabulary entry `token` (spelled as the tokenizer spells it), None if absent."""

  @abc.abstractmethod
  def id_to_token(self, token_id: int) -> str:
    """Vocabulary entry of `token_id`; IndexError outside [0, vocab_size)."""

  # ---- encode ----
  def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    """Ids of `text`; bos prepended if add_bos and the tokenizer has one; eos appended if add_eos."""
    return self._encode_texts([text], add_bos, add_eos)[0]

  def _encode_texts(self, texts: Sequence[str], add_bos: bool, add_eos: bool) -> list[list[int]]:
    for i, text in enumerate(texts):
      if not isinstance(text, str):
        raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
    if add_eos and self.eos_id is None:
      raise ValueError(f"add_eos=True but {self!r} has no eos token")
    prefix = [self.bos_id] if add_bos and self.bos_id is not None else []
    suffix = [self.eos_id] if add_eos else []
    return [prefix + ids + suffix for ids in self._encode_many(list(texts))]

  def encode_batch(self, texts: Sequence[str], *, max_len: int | None = None, add_bos: bool = False,
                   add_eos: bool = False, pad_side: str = "right",
                   on_overflow: str = "error") -> EncodedBatch:
    """Encodes `texts` into one padded array.

    Returns EncodedBatch `(ids int32[B, L], lengths int32[B])`, padded with pad_id on `pad_side`;
    L = max_len, or the longest row when max_len is None. A row longer than max_len raises
    ValueError (on_overflow="error"), or keeps its first ("truncate") or last ("truncate_left")
    max_len tokens (bos/eos included in the count); `.num_truncated` counts such rows.
    """
    if pad_side not in PAD_SIDES:
      raise ValueError(f"pad_side={pad_side!r}; choose one of {PAD_SIDES}")
    if on_overflow not in OVERFLOW_MODES:
      raise ValueError(f"on_overflow={on_overflow!r}; choose one of {OVERFLOW_MODES}")
    if isinstance(texts, str):
      raise TypeError("encode_batch takes a list of strings, got one str (use encode)")
    if max_len is not None and max_len < 0:
      raise ValueError(f"max_len={max_len} must be >= 0")
    rows = self._encode_texts(list(texts), add_bos, add_eos)
    width = max((len(r) for r in rows), default=0) if max_len is None else max_len
    num_truncated = 0
    for i, row in enumerate(rows):
      if len(row) > width:
        if on_overflow == "error":
          raise ValueError(f"texts[{i}] is {len(row)} tokens, longer than max_len={width}; "
                           "shorten it or pass on_overflow='truncate' / 'truncate_left'")
        rows[i] = row[:width] if on_overflow == "truncate" else row[len(row) - width:]
        num_truncated += 1
    if self.pad_id is None and any(len(r) < width for r in rows):
      raise ValueError(f"{self!r} has neither a pad nor an eos token to pad with")
    ids_BL = np.full((len(rows), width), self.pad_id if self.pad_id is not None else 0, np.int32)
    lengths_B = np.array([len(r) for r in rows], np.int32)
    for i, row in enumerate(rows):
      if row:
        if pad_side == "right":
          ids_BL[i, :len(row)] = row
        else:
          ids_BL[i, width - len(row):] = row
    batch = EncodedBatch(ids_BL, lengths_B)
    batch.num_truncated = num_truncated
    return batch

  # ---- decode ----
  def decode(self, ids: Any, *, skip_special: bool = True) -> str:
    """Text of `ids` (list or 1-D array); pad and unknown ids removed, see the module docstring."""
    flat = np.asarray(ids, dtype=np.int64).reshape(-1)
    kept = flat[(flat >= 0) & (flat < self.vocab_size)].tolist()
    pad = self.pad_id
    if pad is not None and pad != self.eos_id:
      kept = [i for i in kept if i != pad]
    elif pad is not None:  # pad is eos: only the runs at either end can be padding
      start, stop = 0, len(kept)
      while start < stop and kept[start] == pad:
        start += 1
      while stop > start and kept[stop - 1] == pad:
        stop -= 1
      kept = kept[start:stop]
    return self._decode_one(kept, skip_special)

  def decode_batch(self, ids_BL: Any, lengths: Any = None, *, skip_special: bool = True) -> list[str]:
    """Texts of the rows of `ids_BL` (int[B, L]); with `lengths` (int[B]) row i is cut to
    ids_BL[i, :lengths[i]] first (right-padded rows, e.g. sampler output)."""
    arr = np.asarray(ids_BL)
    if arr.ndim != 2:
      raise ValueError(f"decode_batch takes int[B, L], got shape {arr.shape}")
    if lengths is not None:
      lengths = np.asarray(lengths).reshape(-1)
      if lengths.shape[0] != arr.shape[0]:
        raise ValueError(f"lengths has {lengths.shape[0]} entries for {arr.shape[0]} rows")
      return [self.decode(row[:int(n)], skip_special=skip_special) for row, n in zip(arr, lengths)]
    return [self.decode(row, skip_special=skip_special) for row in arr]

  # ---- chat ----
  def check_template(self, template: str) -> ChatTemplate:
    """The ChatTemplate, after checking each of its markers is one token of this tokenizer."""
    tmpl = get_chat_template(template)
    checked = self.__dict__.setdefault("_checked_templates", set())
    if template in checked:
      return tmpl
    missing = [m for m in tmpl.markers if self._single_token_id(m) is None]
    if missing:
      usable = [n for n, t in CHAT_TEMPLATES.items()
                if all(self._single_token_id(m) is not None for m in t.markers)]
      raise ValueError(f"Chat template {template!r} needs the tokens {missing}, which {self!r} does "
                       f"not have as single tokens; templates this tokenizer supports: {usable}")
    checked.add(template)
    return tmpl

  def _single_token_id(self, text: str) -> int | None:
    ids = self._encode_many([text])[0]
    return ids[0] if len(ids) == 1 else None

  def apply_chat_template(self, messages: Sequence[dict], *, template: str,
                          add_generation_prompt: bool = True) -> str:
    """`messages` rendered in `template` (a CHAT_TEMPLATES name), as a string."""
    self.check_template(template)
    return render_chat(messages, template, add_generation_prompt)

  def encode_chat(self, messages: Sequence[dict], *, template: str,
                  add_generation_prompt: bool = True) -> list[int]:
    """Ids of the rendered conversation, with bos prepended where the template wants it."""
    tmpl = self.check_template(template)
    text = render_chat(messages, template, add_generation_prompt)
    return self.encode(text, add_bos=tmpl.add_bos)

  def chat_stop_id(self, template: str) -> int:
    """The id generation stops at in `template`: its turn-end token, or eos_id for plain."""
    tmpl = self.check_template(template)
    stop = self._single_token_id(tmpl.turn_end) if tmpl.turn_end else self.eos_id
    if stop is None:
      raise ValueError(f"{self!r} has no eos token to stop {template!r} generation at")
    return stop


# ------------------------------------------------------------------------------------------------
# sentencepiece
# ------------------------------------------------------------------------------------------------

class SentencePieceTokenizer(Tokenizer):
  """A sentencepiece `.model` file (built-in models from train_sentencepiece, or any other)."""

  def __init__(self, path: str | os.PathLike | None = None, *, model_proto: bytes | None = None):
    import sentencepiece as spm
    if (path is None) == (model_proto is None):
      raise ValueError("SentencePieceTokenizer takes exactly one of path or model_proto")
    self.path = None if path is None else Path(path)
    if self.path is not None:
      if not self.path.is_file():
        raise FileNotFoundError(f"sentencepiece model {self.path} does not exist")
      model_proto = self.path.read_bytes()
    self._proto = model_proto
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    except Exception as e:  # sentencepiece raises RuntimeError/OSError on a corrupt proto
      raise ValueError(f"{self.path or 'model_proto'} is not a valid sentencepiece model: {e}") from e
    sp = self._sp
    n = sp.get_piece_size()
    self._pieces = [sp.id_to_piece(i) for i in range(n)]
    self._control = frozenset(i for i in range(n) if sp.is_control(i))
    self._unk = sp.unk_id()
    markers = {i for i, p in enumerate(self._pieces)
               if _ROLE_MARKER.match(p) and not (i in self._control or sp.is_byte(i) or i == self._unk)}
    self._special = self._control | frozenset(markers)
    self._piece_ids = {p: i for i, p in enumerate(self._pieces)}
    self._bos = sp.bos_id() if sp.bos_id() >= 0 else None
    self._eos = sp.eos_id() if sp.eos_id() >= 0 else None
    self._pad = sp.pad_id() if sp.pad_id() >= 0 else self._eos

  def __getstate__(self):
    return {"path": self.path, "model_proto": self._proto}

  def __setstate__(self, state):
    self.__init__(model_proto=state["model_proto"])
    self.path = state["path"]

  def __repr__(self):
    return f"SentencePieceTokenizer({str(self.path) if self.path else '<proto>'!r}, vocab={self.vocab_size})"

  @property
  def vocab_size(self) -> int:
    return len(self._pieces)

  @property
  def bos_id(self) -> int | None:
    return self._bos

  @property
  def eos_id(self) -> int | None:
    return self._eos

  @property
  def pad_id(self) -> int | None:
    return self._pad

  @property
  def special_ids(self) -> frozenset[int]:
    """Ids dropped by decode(skip_special=True): control pieces and `<|...|>` markers."""
    return self._special

  def _encode_many(self, texts: list[str]) -> list[list[int]]:
    return self._sp.encode(texts) if texts else []

  def _decode_one(self, ids: list[int], skip_special: bool) -> str:
    out, run = [], []
    for i in ids:
      if skip_special and i in self._special:
        continue
      if i in self._control:  # sentencepiece renders control pieces as "": spell them out
        out.append(self._sp.decode(run))
        out.append(self._pieces[i])
        run = []
      else:
        run.append(i)
    out.append(self._sp.decode(run))
    return "".join(out)

  def token_to_id(self, token: str) -> int | None:
    return self._piece_ids.get(token)

  def id_to_token(self, token_id: int) -> str:
    if not 0 <= token_id < len(self._pieces):
      raise IndexError(f"token id {token_id} is outside [0, {len(self._pieces)}) of {self!r}")
    return self._pieces[token_id]


def _corpus_sentences(corpus: str | os.PathLike | Iterable[str]) -> list[str]:
  """Non-empty lines of a corpus file or of an iterable of texts, in order."""
  if isinstance(corpus, (str, os.PathLike)):
    path = Path(corpus)
    if not path.is_file():
      raise FileNotFoundError(f"corpus file {path} does not exist (pass a text file path, or a list "
                              "of strings to train on)")
    texts: Iterable[str] = [path.read_text(encoding="utf-8")]
  else:
    texts = corpus
  lines = []
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"corpus[{i}] must be a str, got {type(text).__name__}")
    lines.extend(line for line in text.split("\n") if line)
  return lines


def train_sentencepiece(corpus: str | os.PathLike | Iterable[str], model_prefix: str | os.PathLike,
                        vocab_size: int, *, user_defined_symbols: Sequence[str] = TOY_SPECIAL_SYMBOLS,
                        model_type: str = "bpe", character_coverage: float = 0.9995,
                        split_digits: bool = True, seed: int = 0) -> Path:
  """Trains a sentencepiece model deterministically; returns the path `{model_prefix}.model`.

  corpus: a text file path (str or PathLike), or an iterable of strings. Training uses its
  non-empty lines in order on one thread, so the same corpus and arguments give a byte-identical
  model. Ids: pad=0, unk=1, bos=2, eos=3, then `user_defined_symbols` (4, 5, ...), the 256 byte
  pieces, then learned pieces. See the module docstring for the normalisation choices.
  """
  import sentencepiece as spm
  symbols = list(user_defined_symbols)
  floor = len(SP_RESERVED) + len(symbols) + 256
  if vocab_size <= floor:
    raise ValueError(f"vocab_size={vocab_size} leaves no room for learned pieces: 4 reserved + "
                     f"{len(symbols)} user-defined + 256 byte pieces = {floor}")
  sentences = _corpus_sentences(corpus)
  if not sentences:
    raise ValueError("the corpus is empty: train_sentencepiece needs some text")
  out = Path(f"{os.fspath(model_prefix)}.model")
  out.parent.mkdir(parents=True, exist_ok=True)
  longest = max(len(s.encode("utf-8")) for s in sentences)
  spm.set_random_generator_seed(seed)
  writer = io.BytesIO()
  ids = {f"{k}_id": v[0] for k, v in SP_RESERVED.items()}
  pieces = {f"{k}_piece": v[1] for k, v in SP_RESERVED.items()}
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=writer, vocab_size=vocab_size,
        model_type=model_type, byte_fallback=True, user_defined_symbols=symbols,
        normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, split_digits=split_digits,
        character_coverage=character_coverage, num_threads=1, input_sentence_size=0,
        shuffle_input_sentence=False, max_sentence_length=max(4192, longest + 1), minloglevel=2,
        **ids, **pieces)
  except RuntimeError as e:
    msg = str(e)
    if "Vocabulary size too high" in msg:
      raise ValueError(f"corpus too small for vocab_size={vocab_size} ({msg.split('.', 1)[-1].strip()}); "
                       "lower vocab_size or add text") from e
    raise
  tmp = out.with_name(out.name + ".tmp")
  tmp.write_bytes(writer.getvalue())
  os.replace(tmp, out)
  return out


# ------------------------------------------------------------------------------------------------
# HF tokenizer.json
# ------------------------------------------------------------------------------------------------

# Used only where neither argument nor tokenizer_config.json / special_tokens_map.json names one.
_KNOWN_BOS = ("<|begin_of_text|>", "<s>", "<bos>")
_KNOWN_EOS = ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>")
_KNOWN_PAD = ("<pad>", "<|pad|>")


def _token_content(value: Any) -> str | None:
  """A special-token entry of tokenizer_config.json: a str, an AddedToken dict, or null."""
  if isinstance(value, dict):
    return value.get("content")
  return value


class HFTokenizer(Tokenizer):
  """A Hugging Face `tokenizer.json` through the `tokenizers` library.

  path: the tokenizer.json file, or a directory holding it. bos/eos/pad tokens come from the
  arguments, else `tokenizer_config.json` (then `special_tokens_map.json`) beside it, else from
  well-known token names (`<|begin_of_text|>`, `<|end_of_text|>`, `<|endoftext|>`, `<s>`, ...);
  pad falls back to eos. Ids are exactly `tokenizers.Tokenizer.encode(text,
  add_special_tokens=False).ids` (the file's post-processor, e.g. Llama 3's automatic bos, is not
  applied: bos/eos are added by the add_bos/add_eos flags).
  """

  def __init__(self, path: str | os.PathLike, *, bos_token: str | None = None,
               eos_token: str | None = None, pad_token: str | None = None):
    import tokenizers
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
      raise FileNotFoundError(f"HF tokenizer file {file} does not exist (expected a tokenizer.json "
                              "file or a directory containing one)")
    self.path = file
    try:
      self._tok = tokenizers.Tokenizer.from_file(str(file))
    except Exception as e:
      raise ValueError(f"{file} is not a valid tokenizer.json: {e}") from e
    self._vocab = self._tok.get_vocab(with_added_tokens=True)
    self._vocab_size = max(self._vocab.values()) + 1 if self._vocab else 0
    added = self._tok.get_added_tokens_decoder()
    self._special = frozenset(i for i, t in added.items() if t.special)
    self.config = self._read_config(file.parent)
    tokens = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token}
    known = {"bos_token": _KNOWN_BOS, "eos_token": _KNOWN_EOS, "pad_token": _KNOWN_PAD}
    ids: dict[str, int | None] = {}
    for key, explicit in tokens.items():
      if explicit is not None:
        name, source = explicit, "argument"
      elif key in self.config:
        name, source = _token_content(self.config[key]), self.config["_source"]
      else:
        name = next((t for t in known[key] if t in self._vocab), None)
        source = "known token names"
      if name is not None and name not in self._vocab:
        raise ValueError(f"{key} {name!r} (from {source}) is not a token of {file}")
      ids[key] = None if name is None else self._vocab[name]
    self._bos, self._eos = ids["bos_token"], ids["eos_token"]
    self._pad = ids["pad_token"] if ids["pad_token"] is not None else self._eos

  @staticmethod
  def _read_config(directory: Path) -> dict:
    """bos/eos/pad entries of tokenizer_config.json, then special_tokens_map.json; '_source' names
    the file they came from."""
    config: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
      file = directory / name
      if file.is_file():
        try:
          data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
          raise ValueError(f"{file} is not valid JSON: {e}") from e
        found = {k: data[k] for k in ("bos_token", "eos_token", "pad_token") if k in data}
        if found:
          config.update(found)
          config["_source"] = str(file)
    return config

  def __getstate__(self):
    return {"path": self.path, "tok": self._tok.to_str(), "ids": (self._bos, self._eos, self._pad),
            "config": self.config}

  def __setstate__(self, state):
    import tokenizers
    self.path, self.config = state["path"], state["config"]
    self._tok = tokenizers.Tokenizer.from_str(state["tok"])
    self._vocab = self._tok.get_vocab(with_added_tokens=True)
    self._vocab_size = max(self._vocab.values()) + 1 if self._vocab else 0
    self._special = frozenset(i for i, t in self._tok.get_added_tokens_decoder().items() if t.special)
    self._bos, self._eos, self._pad = state["ids"]

  def __repr__(self):
    return f"HFTokenizer({str(self.path)!r}, vocab={self.vocab_size})"

  @property
  def vocab_size(self) -> int:
    return self._vocab_size

  @property
  def bos_id(self) -> int | None:
    return self._bos

  @property
  def eos_id(self) -> int | None:
    return self._eos

  @property
  def pad_id(self) -> int | None:
    return self._pad

  @property
  def special_ids(self) -> frozenset[int]:
    """Ids dropped by decode(skip_special=True): added tokens marked special."""
    return self._special

  def _encode_many(self, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)] if texts else []

  def _decode_one(self, ids: list[int], skip_special: bool) -> str:
    return self._tok.decode(ids, skip_special_tokens=skip_special)

  def token_to_id(self, token: str) -> int | None:
    return self._vocab.get(token)

  def id_to_token(self, token_id: int) -> str:
    token = self._tok.id_to_token(token_id) if 0 <= token_id < self._vocab_size else None
    if token is None:
      raise IndexError(f"token id {token_id} is not in the vocabulary of {self!r}")
    return token


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------

_EXPECTED = ("expected a sentencepiece .model file, a tokenizer.json file, or a directory "
             "containing tokenizer.json or a .model file")


def load_tokenizer(path: str | os.PathLike, **kwargs) -> Tokenizer:
  """The tokenizer at `path`: a `.model` file (sentencepiece), a `tokenizer.json` file (HF), or a
  directory holding `tokenizer.json` (preferred) or one `.model` file (`tokenizer.model` if there
  are several). kwargs go to HFTokenizer (bos_token=, eos_token=, pad_token=).
  FileNotFoundError names the path and what was expected."""
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"Tokenizer path {path} does not exist; {_EXPECTED}")
  if path.is_dir():
    if (path / "tokenizer.json").is_file():
      return HFTokenizer(path, **kwargs)
    models = sorted(path.glob("*.model"))
    if len(models) > 1 and (path / "tokenizer.model").is_file():
      models = [path / "tokenizer.model"]
    if len(models) == 1:
      return SentencePieceTokenizer(models[0])
    found = sorted(p.name for p in path.iterdir())[:20]
    what = f"several .model files {[m.name for m in models]}" if models else f"only {found}"
    raise FileNotFoundError(f"No tokenizer in directory {path}: it holds {what}; {_EXPECTED}")
  if path.suffix == ".model":
    return SentencePieceTokenizer(path)
  if path.suffix == ".json":
    return HFTokenizer(path, **kwargs)
  raise FileNotFoundError(f"{path} is not a tokenizer file; {_EXPECTED}")
