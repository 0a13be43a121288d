"""Tokenizers: sentencepiece training/round trips, HF tokenizer.json parity with `tokenizers`,
padding, and chat templates against transformers' rendering of the official Jinja templates."""
import json
import os
import pickle
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rlvr_jax import tokenizer as T

# ---- texts -------------------------------------------------------------------------------------

ROUND_TRIP_TEXTS = [
    "What is 12 + 30? The answer is \\boxed{42}.",
    "\\boxed{12}",
    "  two leading spaces, three trailing   ",
    "tabs\tand\nnew\n\nlines\r\n",
    "Ünïcödé: naïve café, Straße, 数学题 123, Ελληνικά, العربية, emoji 🧮😀",
    "digits 0123456789 and 3.14159e-10, -7, 1,000,000",
    "<think>Let x = 3. Then 2x = 6.</think> So \\boxed{6}",
    "literal control spellings <s> </s> <pad> <unk> stay text",
    "",
    " ",
    "\n",
]

_WORDS = ["the", "answer", "is", "let", "compute", "sum", "of", "graph", "node", "edge", "lock",
          "island", "step", "think", "so", "we", "get", "then", "value", "number", "largest",
          "solve", "equation", "find", "because", "therefore", "café", "数学", "größe"]
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "zu", "an", "el", "or", "ix"]


def make_corpus(n_lines=3000, seed=0):
  """A small synthetic corpus: words, made-up words, numbers, arithmetic and chat lines."""
  rng = random.Random(seed)
  lines = []
  for _ in range(n_lines):
    kind = rng.random()
    if kind < 0.3:
      a, b = rng.randint(0, 999), rng.randint(0, 999)
      lines.append(f"Compute {a} + {b}. <think>{a} + {b} = {a + b}</think> \\boxed{{{a + b}}}")
    elif kind < 0.4:
      lines.append(f"<|user|>What is {rng.randint(0, 99)} * 3?<|end|><|assistant|>ok<|end|>")
    else:
      words = []
      for _ in range(rng.randint(3, 25)):
        r = rng.random()
        if r < 0.5:
          words.append(rng.choice(_WORDS))
        elif r < 0.85:
          words.append("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))))
        else:
          words.append(str(rng.randint(0, 10000)))
      lines.append(" ".join(words) + rng.choice([".", "?", "!", ",", ""]))
  return lines


SP_VOCAB = 600


@pytest.fixture(scope="module")
def corpus():
  return make_corpus()


@pytest.fixture(scope="module")
def sp_path(tmp_path_factory, corpus):
  return T.train_sentencepiece(corpus, tmp_path_factory.mktemp("sp") / "toy", SP_VOCAB)


@pytest.fixture(scope="module")
def sp(sp_path):
  return T.SentencePieceTokenizer(sp_path)


# ---- sentencepiece -----------------------------------------------------------------------------

def test_sp_round_trip_and_no_unk(sp):
  for text in ROUND_TRIP_TEXTS:
    ids = sp.encode(text)
    assert sp.decode(ids) == text, text
    assert 1 not in ids, f"unk in encoding of {text!r}"  # byte fallback: nothing is <unk>
    assert all(0 <= i < SP_VOCAB for i in ids)


def test_sp_reserved_and_user_defined_ids(sp):
  import sentencepiece as spm
  raw = spm.SentencePieceProcessor(model_file=str(sp.path))
  assert (sp.pad_id, sp.bos_id, sp.eos_id) == (0, 2, 3)
  assert (raw.pad_id(), raw.unk_id(), raw.bos_id(), raw.eos_id()) == (0, 1, 2, 3)
  assert sp.vocab_size == SP_VOCAB == raw.get_piece_size()
  assert [sp.id_to_token(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
  symbols = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<think>", "</think>", "\\boxed{"]
  for k, sym in enumerate(symbols):
    assert sp.token_to_id(sym) == 4 + k == raw.piece_to_id(sym)
    assert sp.encode(sym) == [4 + k]  # always one token inside text
  assert sp.encode("x\\boxed{7}")[1] == 10
  assert sp.token_to_id("no-such-piece-zz") is None
  # control spellings in text are never control ids
  assert not {0, 2, 3} & set(sp.encode("<s> </s> <pad>"))
  # digits are single tokens
  ids = sp.encode("9081726354")
  assert len(ids) == 10 and [sp.decode([i]) for i in ids] == list("9081726354")
  with pytest.raises(IndexError, match="outside"):
    sp.id_to_token(SP_VOCAB)
  # encode equals the sentencepiece library's own ids (bos/eos by flag)
  text = ROUND_TRIP_TEXTS[0]
  assert sp.encode(text, add_bos=True, add_eos=True) == [2] + raw.encode(text) + [3]


def test_sp_training_is_deterministic(tmp_path, corpus, sp_path):
  # same corpus given as a list, then as a file, in another directory: byte-identical model
  a = T.train_sentencepiece(corpus, tmp_path / "a" / "m", SP_VOCAB)
  corpus_file = tmp_path / "corpus.txt"
  corpus_file.write_text("\n".join(corpus) + "\n", encoding="utf-8")
  b = T.train_sentencepiece(corpus_file, tmp_path / "b" / "m", SP_VOCAB)
  ref = sp_path.read_bytes()
  assert a.read_bytes() == ref and b.read_bytes() == ref
  # ... and in a fresh process with a different hash seed
  script = textwrap.dedent(f"""
      import sys
      from rlvr_jax.tokenizer import train_sentencepiece
      train_sentencepiece(sys.argv[1], sys.argv[2], {SP_VOCAB})
  """)
  env = dict(os.environ, PYTHONHASHSEED="12345")
  subprocess.run([sys.executable, "-c", script, str(corpus_file), str(tmp_path / "c" / "m")],
                 check=True, timeout=120, env=env)
  assert (tmp_path / "c" / "m.model").read_bytes() == ref
  # a different corpus gives a different model (the comparison can fail)
  other = T.train_sentencepiece(make_corpus(seed=1), tmp_path / "d" / "m", SP_VOCAB)
  assert other.read_bytes() != ref
  ids = T.SentencePieceTokenizer(a).encode(ROUND_TRIP_TEXTS[4])
  assert ids == T.SentencePieceTokenizer(sp_path).encode(ROUND_TRIP_TEXTS[4])


def test_sp_training_errors(tmp_path):
  with pytest.raises(ValueError, match="no room"):
    T.train_sentencepiece(["abc"], tmp_path / "m", 200)
  with pytest.raises(ValueError, match="corpus too small"):
    T.train_sentencepiece(["tiny corpus"] * 5, tmp_path / "m", 5000)
  with pytest.raises(ValueError, match="empty"):
    T.train_sentencepiece(["", "\n"], tmp_path / "m", 500)
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    T.train_sentencepiece(tmp_path / "nope.txt", tmp_path / "m", 500)


def test_sp_decode_special_and_pad(sp):
  text = "<think>so</think> \\boxed{5}"
  ids = sp.encode(text, add_bos=True, add_eos=True)
  padded = ids + [sp.pad_id] * 3
  assert sp.decode(padded) == text
  assert sp.decode(padded, skip_special=False) == "<s>" + text + "</s>"
  chat = sp.encode("<|user|>hi<|end|><|assistant|>yo<|end|>")
  assert sp.decode(chat) == "hiyo"
  assert sp.decode(chat, skip_special=False) == "<|user|>hi<|end|><|assistant|>yo<|end|>"
  # ids a padded embedding can produce but the tokenizer does not know decode to nothing
  assert sp.decode([SP_VOCAB + 5] + sp.encode("ok") + [-1]) == "ok"
  assert sp.decode(np.array(sp.encode("ok"), np.int32)) == "ok"


# ---- batching ----------------------------------------------------------------------------------

def test_encode_batch_padding_and_lengths(sp):
  texts = ["a short one", "", "a noticeably longer sentence with \\boxed{123}"]
  rows = [sp.encode(t, add_bos=True) for t in texts]
  lens = [len(r) for r in rows]
  ids, lengths = sp.encode_batch(texts, add_bos=True)
  assert ids.dtype == np.int32 and lengths.dtype == np.int32
  assert ids.shape == (3, max(lens)) and lengths.tolist() == lens
  for i, r in enumerate(rows):
    assert ids[i, :lens[i]].tolist() == r
    assert (ids[i, lens[i]:] == sp.pad_id).all()
  width = max(lens) + 5
  left = sp.encode_batch(texts, add_bos=True, max_len=width, pad_side="left")
  assert left.ids.shape == (3, width) and left.num_truncated == 0
  for i, r in enumerate(rows):
    assert left.ids[i, width - lens[i]:].tolist() == r
    assert (left.ids[i, :width - lens[i]] == sp.pad_id).all()
  assert sp.decode_batch(ids) == texts
  assert sp.decode_batch(ids, lengths) == texts
  empty_ids, empty_lengths = sp.encode_batch([], max_len=4)
  assert empty_ids.shape == (0, 4) and empty_lengths.shape == (0,)


def test_encode_batch_overflow(sp):
  texts = ["one two three four five six seven", "hi"]
  full = sp.encode(texts[0], add_eos=True)
  n = len(full) - 2
  with pytest.raises(ValueError, match=r"texts\[0\].*max_len"):
    sp.encode_batch(texts, max_len=n, add_eos=True)
  right = sp.encode_batch(texts, max_len=n, add_eos=True, on_overflow="truncate")
  assert right.num_truncated == 1 and right.ids[0].tolist() == full[:n]
  assert right.lengths.tolist() == [n, len(sp.encode("hi")) + 1]
  left = sp.encode_batch(texts, max_len=n, add_eos=True, on_overflow="truncate_left")
  assert left.num_truncated == 1 and left.ids[0].tolist() == full[2:]
  with pytest.raises(ValueError, match="pad_side"):
    sp.encode_batch(texts, pad_side="middle")
  with pytest.raises(TypeError, match=r"texts\[1\]"):
    sp.encode_batch(["ok", None])


# ---- HF tokenizer.json -------------------------------------------------------------------------

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Meta-Llama-3-8B-Instruct's chat_template.
LLAMA3_JINJA = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
                "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] "
                "| trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content "
                "%}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
                "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

# Qwen2.5-Instruct's chat_template.
QWEN25_JINJA = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eot_id|>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_byte_level_bpe(directory, corpus, pattern, specials, *, nfc, bos_post_processor,
                         config):
  """A Llama 3 / Qwen2-style byte-level BPE tokenizer.json (regex split + ByteLevel), trained
  locally with the `tokenizers` library; specials appended after the BPE vocabulary."""
  from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
  from tokenizers import processors, trainers
  tok = Tokenizer(models.BPE())
  if nfc:
    tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(corpus, trainer)
  tok.add_special_tokens(specials)
  if bos_post_processor:
    bos = specials[0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
  directory.mkdir(parents=True, exist_ok=True)
  tok.save(str(directory / "tokenizer.json"))
  if config is not None:
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
  return directory


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, corpus):
  return build_byte_level_bpe(
      tmp_path_factory.mktemp("llama3"), corpus, LLAMA3_PATTERN, LLAMA3_SPECIALS, nfc=False,
      bos_post_processor=True,
      config={"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
              "eos_token": "<|eot_id|>", "chat_template": LLAMA3_JINJA})


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory, corpus):
  return build_byte_level_bpe(
      tmp_path_factory.mktemp("qwen2"), corpus, QWEN2_PATTERN, QWEN_SPECIALS, nfc=True,
      bos_post_processor=False,
      config={"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None,
              "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
              "chat_template": QWEN25_JINJA})


HF_TEXTS = ROUND_TRIP_TEXTS + [
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "It's 12,345 apples; they've 678 oranges!!",
]


@pytest.mark.parametrize("which", ["llama", "qwen"])
def test_hf_ids_equal_tokenizers_library(which, llama_dir, qwen_dir):
  import tokenizers
  directory = llama_dir if which == "llama" else qwen_dir
  ref = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
  tok = T.HFTokenizer(directory / "tokenizer.json")
  for text in HF_TEXTS:
    ids = tok.encode(text)
    assert ids == ref.encode(text, add_special_tokens=False).ids, text
    assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=True)
    if ids and ids[-1] != tok.pad_id:
      assert tok.decode(ids, skip_special=False) == ref.decode(ids, skip_special_tokens=False)
    if not any(s in text for s in LLAMA3_SPECIALS + QWEN_SPECIALS):
      assert tok.decode(ids) == text  # byte-level BPE round trip (inputs are NFC already)
  batch, lengths = tok.encode_batch(HF_TEXTS)
  for i, text in enumerate(HF_TEXTS):
    assert batch[i, :lengths[i]].tolist() == ref.encode(text, add_special_tokens=False).ids
  # specials in the text are single ids
  specials = LLAMA3_SPECIALS if which == "llama" else QWEN_SPECIALS
  for s in specials:
    assert tok.encode(s) == [ref.token_to_id(s)] and tok.token_to_id(s) == ref.token_to_id(s)
  assert tok.vocab_size == ref.get_vocab_size(with_added_tokens=True)


def test_hf_special_ids_and_padding(llama_dir, qwen_dir):
  import tokenizers
  lref = tokenizers.Tokenizer.from_file(str(llama_dir / "tokenizer.json"))
  llama = T.load_tokenizer(llama_dir)
  assert isinstance(llama, T.HFTokenizer)
  assert llama.bos_id == lref.token_to_id("<|begin_of_text|>")
  assert llama.eos_id == lref.token_to_id("<|eot_id|>")
  assert llama.pad_id == llama.eos_id  # no pad token: falls back to eos
  # add_bos reproduces the file's own post-processor (Llama 3 prepends bos)
  assert llama.encode("Hello there", add_bos=True) == lref.encode("Hello there").ids
  # pad is eos here: trailing/leading runs are padding, an eos inside the row stays visible
  inner = "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>hey"
  row = [llama.pad_id] + llama.encode(inner) + [llama.pad_id] * 3
  assert llama.decode(row, skip_special=False) == inner
  assert llama.decode(row) == "user\n\nhihey"
  qref = tokenizers.Tokenizer.from_file(str(qwen_dir / "tokenizer.json"))
  qwen = T.load_tokenizer(qwen_dir / "tokenizer.json")
  assert qwen.bos_id is None
  assert qwen.eos_id == qref.token_to_id("<|im_end|>")
  assert qwen.pad_id == qref.token_to_id("<|endoftext|>")
  assert qwen.encode("Hello", add_bos=True) == qref.encode("Hello").ids  # no bos to add
  ids, lengths = qwen.encode_batch(["a", "a b c d"], add_eos=True)
  assert ids[0, lengths[0]:].tolist() == [qwen.pad_id] * (ids.shape[1] - lengths[0])
  assert ids[0, lengths[0] - 1] == qwen.eos_id
  # skip_special drops specials, pad is always stripped
  text = "The answer is \\boxed{4}."
  row = qwen.encode("<|im_start|>assistant\n" + text + "<|im_end|>") + [qwen.pad_id] * 2
  assert qwen.decode(row) == "assistant\n" + text
  assert qwen.decode(row, skip_special=False) == "<|im_start|>assistant\n" + text + "<|im_end|>"
  # explicit arguments win over the config file; unknown names fail naming the file
  assert T.HFTokenizer(qwen_dir, eos_token="<|endoftext|>").eos_id == qref.token_to_id("<|endoftext|>")
  with pytest.raises(ValueError, match="tokenizer.json"):
    T.HFTokenizer(qwen_dir, pad_token="<|nope|>")


def test_hf_without_config_uses_known_token_names(tmp_path, llama_dir):
  import shutil
  d = tmp_path / "bare"
  d.mkdir()
  shutil.copy(llama_dir / "tokenizer.json", d / "tokenizer.json")
  tok = T.load_tokenizer(d)
  assert tok.bos_id == tok.token_to_id("<|begin_of_text|>")
  assert tok.eos_id == tok.token_to_id("<|end_of_text|>") == tok.pad_id


def test_pickle_round_trip(sp, llama_dir):
  hf = T.load_tokenizer(llama_dir)
  for tok in (sp, hf):
    clone = pickle.loads(pickle.dumps(tok))
    text = ROUND_TRIP_TEXTS[4]
    assert clone.encode(text, add_bos=True) == tok.encode(text, add_bos=True)
    assert (clone.bos_id, clone.eos_id, clone.pad_id) == (tok.bos_id, tok.eos_id, tok.pad_id)


# ---- chat templates ----------------------------------------------------------------------------

SYSTEM_USER = [{"role": "system", "content": T.DEFAULT_SYSTEM_PROMPT},
               {"role": "user", "content": "What is $2+3$?  "}]
MULTI_TURN = SYSTEM_USER + [{"role": "assistant", "content": " 2+3=5, so \\boxed{5}. "},
                            {"role": "user", "content": "And 2*3?"}]


def test_default_system_prompt():
  assert T.DEFAULT_SYSTEM_PROMPT == (
      "Please reason step by step, and put your final answer within " + "\\" + "boxed{}.")


@pytest.mark.parametrize("which,template", [("llama", "llama3"), ("qwen", "chatml")])
def test_templates_match_transformers(which, template, llama_dir, qwen_dir):
  from transformers import AutoTokenizer
  directory = llama_dir if which == "llama" else qwen_dir
  hf = AutoTokenizer.from_pretrained(str(directory))
  tok = T.load_tokenizer(directory)
  for messages in (SYSTEM_USER, MULTI_TURN):
    for gen in (True, False):
      want = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
      assert tok.apply_chat_template(messages, template=template, add_generation_prompt=gen) == want
  # and the ids of the rendered prompt equal transformers' tokenization of it
  want_text = hf.apply_chat_template(SYSTEM_USER, tokenize=False, add_generation_prompt=True)
  want_ids = hf(want_text, add_special_tokens=False)["input_ids"]
  assert tok.encode_chat(SYSTEM_USER, template=template) == want_ids
  assert tok.chat_stop_id(template) == hf.convert_tokens_to_ids(T.chat_turn_end(template))


def test_plain_and_toy_templates(sp):
  s, u = T.DEFAULT_SYSTEM_PROMPT, "What is $2+3$?  "
  assert T.render_chat(SYSTEM_USER, "plain") == s + "\n\nUser: " + u + "\n\nAssistant: "
  assert T.render_chat(SYSTEM_USER[1:], "plain") == "User: " + u + "\n\nAssistant: "
  toy = sp.apply_chat_template(SYSTEM_USER, template="toy")
  assert toy == "<|system|>" + s + "<|end|><|user|>" + u + "<|end|><|assistant|>"
  ids = sp.encode_chat(SYSTEM_USER, template="toy")
  assert ids[:2] == [sp.bos_id, sp.token_to_id("<|system|>")]
  assert ids[-1] == sp.token_to_id("<|assistant|>") and sp.decode(ids, skip_special=False) == "<s>" + toy
  assert sp.chat_stop_id("toy") == sp.token_to_id("<|end|>")
  assert sp.chat_stop_id("plain") == sp.eos_id
  assert sp.encode_chat(SYSTEM_USER, template="plain")[0] == sp.bos_id


@pytest.mark.parametrize("template,sep,strip", [("plain", "\n\n", False), ("llama3", "", True),
                                                ("chatml", "\n", False), ("toy", "", False)])
def test_reply_appends_to_generation_prompt(template, sep, strip):
  """prompt(with generation prompt) + reply + turn end + separator == the rendered longer chat."""
  reply = "Step: 2+3=5. \\boxed{5}" + ("" if strip else "  ")
  prompt = T.render_chat(SYSTEM_USER, template, add_generation_prompt=True)
  longer = T.render_chat(SYSTEM_USER + [{"role": "assistant", "content": reply}], template,
                         add_generation_prompt=False)
  assert longer == prompt + reply + T.chat_turn_end(template) + sep


def test_template_errors(sp):
  with pytest.raises(ValueError, match=r"chatml.*llama3.*plain.*toy"):
    T.render_chat(SYSTEM_USER, "vicuna")
  with pytest.raises(ValueError, match="vicuna"):
    T.chat_turn_end("vicuna")
  with pytest.raises(ValueError, match=r"<\|begin_of_text\|>.*\['plain', 'toy'\]"):
    sp.apply_chat_template(SYSTEM_USER, template="llama3")
  with pytest.raises(ValueError, match=r"messages\[1\].*system"):
    T.render_chat([SYSTEM_USER[1], SYSTEM_USER[0]], "chatml")
  with pytest.raises(ValueError, match=r"messages\[0\].*role 'tool'"):
    T.render_chat([{"role": "tool", "content": "x"}], "chatml")


# ---- loading -----------------------------------------------------------------------------------

def test_load_tokenizer_dispatch_and_missing(tmp_path, sp_path, llama_dir):
  import shutil
  assert isinstance(T.load_tokenizer(sp_path), T.SentencePieceTokenizer)
  assert isinstance(T.load_tokenizer(llama_dir / "tokenizer.json"), T.HFTokenizer)
  sp_dir = tmp_path / "spdir"
  sp_dir.mkdir()
  shutil.copy(sp_path, sp_dir / "tokenizer.model")
  assert isinstance(T.load_tokenizer(sp_dir), T.SentencePieceTokenizer)
  missing = tmp_path / "no" / "such" / "tokenizer.json"
  with pytest.raises(FileNotFoundError) as e:
    T.load_tokenizer(missing)
  assert str(missing) in str(e.value) and ".model" in str(e.value) and "tokenizer.json" in str(e.value)
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match=r"empty.*config\.json.*tokenizer\.json"):
    T.load_tokenizer(empty)
  with pytest.raises(FileNotFoundError, match="tokenizer.model"):
    T.SentencePieceTokenizer(tmp_path / "tokenizer.model")
