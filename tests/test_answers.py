"""Answer extraction and normalisation rules of rlvr_jax.data.answers (values written by hand)."""
import pytest

from rlvr_jax.data.answers import (answers_match, boxed_spans, extract_answer, extract_boxed,
                                   extract_gsm8k, normalize_answer)


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{42}.", "42"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),                       # nested braces kept
    (r"\boxed{a^{2}+{b}_{1}} done", r"a^{2}+{b}_{1}"),
    (r"first \boxed{1} then \boxed{2} finally \boxed{3}", "3"),      # the last one
    (r"\fbox{7} and then nothing", "7"),
    (r"\boxed{1} then \fbox{9}", "9"),
    (r"\fbox{9} then \boxed{1}", "1"),
    (r"\boxed {12}", "12"),
    (r"$\boxed 5$ is it", "5"),                                      # brace-less form
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),                                # escaped braces
    (r"\boxed{}", ""),
    (r"\boxed{1} and a cut-off \boxed{\frac{1}{", None),             # last box unclosed
    ("no box here", None),
    ("", None),
    (None, None),
])
def test_extract_boxed(text, expected):
  assert extract_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    (r"a \boxed{12} b \fbox{x{y}} c", ["12", "x{y}"]),
    (r"\boxed 5$ and \boxed{}", ["5", ""]),
    (r"\boxed{1} and a cut-off \boxed{\frac{1}{", ["1"]),
    ("no box here", []),
    (None, []),
])
def test_boxed_spans_every_box_in_order(text, expected):
  spans = boxed_spans(text)
  assert [text[a:b] for a, b in spans] == expected
  if spans and extract_boxed(text) is not None:
    assert text[slice(*spans[-1])] == extract_boxed(text)


@pytest.mark.parametrize("text, expected", [
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
    ("#### 1,234", "1234"),
    ("#### $5", "5"),
    ("a #### 1\nb #### 2\ntrailing text", "2"),
    ("#### 42\nThe end.", "42"),
    ("#### -3.5 ", "-3.5"),
    ("####", None),
    ("no marker", None),
])
def test_extract_gsm8k(text, expected):
  assert extract_gsm8k(text) == expected


def test_extract_answer_styles():
  both = "#### 3\nSo \\boxed{4}."
  assert extract_answer(both) == "4"
  assert extract_answer(both, "gsm8k") == "3"
  assert extract_answer(both, "boxed") == "4"
  assert extract_answer("reasoning\n#### 11") == "11"
  assert extract_answer("nothing") is None
  with pytest.raises(ValueError, match="unknown style"):
    extract_answer(both, "last_number")


@pytest.mark.parametrize("raw, canonical", [
    ("3.0", "3"), ("03", "3"), ("+3", "3"), ("6/2", "3"), ("3.", "3"), (" 3 ", "3"),
    ("0.5", "1/2"), (".5", "1/2"), ("1/2", "1/2"), (r"\frac{1}{2}", "1/2"),
    (r"\dfrac{2}{4}", "1/2"),
    (r"\tfrac12", "1/2"), (r"\frac12", "1/2"), (r"-\frac{3}{4}", "-3/4"), ("-0.75", "-3/4"),
    ("$1,000$", "1000"), ("1{,}000", "1000"), ("12,345.5", "24691/2"),
    (r"\text{5}", "5"), (r"x = 5", "5"), ("{5}", "5"), (r"50\%", "50"), ("50%", "50"),
    (r"10^\circ", "10"), (r"10^{\circ}", "10"), (r"\$7", "7"),
    (r"\left( 1, 2 \right)", "(1,2)"), ("(1,2)", "(1,2)"), ("1,2", "1,2"),
    (r"\text{(B)}", "(B)"), (r"\mathrm{cm}", "cm"), (r"2\sqrt{3}", r"2\sqrt{3}"),
    ("{a}{b}", "{a}{b}"), ("", ""), (None, ""),
])
def test_normalize_answer(raw, canonical):
  assert normalize_answer(raw) == canonical


@pytest.mark.parametrize("pred, label, same", [
    ("3.0", "3", True), ("1/2", "0.5", True), (r"\dfrac{1}{2}", ".5", True),
    ("1,000", "1000", True), (r"\$1000.", "1000", True), (r"\left(1,2\right)", "(1, 2)", True),
    ("0.333", "1/3", False), ("12", "1,2", False), ("3", "4", False),
    (None, "3", False), ("3", None, False), ("", "", False), ("  ", "", False),
    # answers_match is answers.equivalent (math-verify backed): forms no string rule unites
    (r"\sqrt{8}", r"2\sqrt{2}", True), ("2x+1", "1+2x", True), ("50%", "0.5", True),
    ("(1,2]", "[1,2]", False),
])
def test_answers_match(pred, label, same):
  assert answers_match(pred, label) is same
