"""Grader behaviour: extraction, normalisation, the equivalence table, the worker pool and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import grading
from grading import Verdict, grade, grade_many, lifetime
from grading.boxed import last_boxed
from grading.extract import answer_is_fallback, extract_answer
from grading.normalize import canonical_number, has_percent, normalize

REPO = Path(__file__).resolve().parents[1]

# (prediction inside \boxed{}, reference, expected verdict)
EQUIVALENCE = [
    # integers, signs, leading zeros, thousands separators, integer-valued floats
    ("5", "5", True),
    ("5", "6", False),
    ("-5", "5", False),
    ("-5", "-5", True),
    ("+5", "5", True),
    ("025", "25", True),
    ("25", "025", True),
    ("27", "27.0", True),
    ("27.0", "27", True),
    ("27.00", "27", True),
    ("27.5", "27", False),
    ("10000.5", "10000", False),
    ("10001", "10000", False),
    ("1,000", "1000", True),
    ("1000", "1,000", True),
    ("1{,}000", "1000", True),
    ("1\\,000", "1000", True),
    ("1,234,567", "1234567", True),
    ("0", "0", True),
    ("-0", "0", True),
    ("0", "1", False),
    ("100", "10", False),
    ("0.0000001", "0.0000002", False),
    ("100000000000000000001", "100000000000000000000", False),
    ("10^{12}+1", "1000000000000", False),
    ("10^{12}", "1000000000000", True),
    # fractions and decimals
    ("\\frac{1}{2}", "0.5", True),
    ("0.5", "\\frac{1}{2}", True),
    ("\\frac12", "\\frac{1}{2}", True),
    ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
    ("\\tfrac{1}{2}", "1/2", True),
    ("1/2", "\\frac{1}{2}", True),
    ("2/4", "\\frac{1}{2}", True),
    ("\\frac{2}{4}", "0.5", True),
    ("\\frac{1}{3}", "0.5", False),
    ("\\frac{1}{3}", "0.3333", True),
    ("\\frac{1}{3}", "0.33", False),
    ("0.333", "\\frac{1}{3}", False),
    ("\\frac{-1}{2}", "-\\frac{1}{2}", True),
    ("-\\frac{1}{2}", "\\frac{1}{2}", False),
    (".5", "0.5", True),
    ("0.50", "0.5", True),
    ("0.25", "\\frac{1}{4}", True),
    ("\\frac{3}{4}", "\\frac{4}{3}", False),
    ("\\frac{7}{2}", "3.5", True),
    ("3\\frac{1}{2}", "\\frac{7}{2}", True),
    ("3\\frac{1}{2}", "1.5", False),
    ("3.14", "3.15", False),
    ("2.00001", "2", False),
    # scientific notation
    ("4.5e33", "4.5\\times10^{33}", True),
    ("4.5 \\times 10^{33}", "4.5e33", True),
    ("1.5\\times10^{3}", "1500", True),
    ("1500", "1.5 \\times 10^3", True),
    ("1.5\\times10^{-3}", "0.0015", True),
    ("1.5\\times10^{3}", "150", False),
    ("6.0 \\times 10^{23}", "6 \\times 10^{23}", True),
    ("2.5e-3", "0.0025", True),
    ("3e8", "3 \\times 10^8", True),
    ("3e8", "3 \\times 10^9", False),
    # radicals, pi, symbolic constants
    ("\\sqrt{2}", "\\sqrt2", True),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("2\\sqrt{2}", "\\sqrt{2}", False),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", True),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{2}", False),
    ("\\sqrt[3]{8}", "2", True),
    ("\\sqrt{12}", "2\\sqrt3", True),
    ("3\\sqrt{5}", "\\sqrt{45}", True),
    ("\\sqrt{5}", "5", False),
    ("\\pi", "\\pi", True),
    ("2\\pi", "\\pi", False),
    ("\\frac{\\pi}{2}", "\\frac{1}{2}\\pi", True),
    ("\\frac{\\pi}{2}", "\\frac{\\pi}{3}", False),
    ("\\pi r^2", "\\pi r^{2}", True),
    ("3.14", "\\pi", False),
    ("e^{2}", "e^2", True),
    ("2^{10}", "1024", True),
    ("2^{10}", "1000", False),
    ("10^{-2}", "0.01", True),
    # algebraic expressions
    ("x^2+2x+1", "(x+1)^2", True),
    ("x^2-1", "(x-1)(x+1)", True),
    ("x^2+1", "(x+1)^2", False),
    ("2x+3", "3+2x", True),
    ("2x+3", "2x-3", False),
    ("\\frac{x}{2}", "0.5x", True),
    ("a+b", "b+a", True),
    ("a-b", "b-a", False),
    ("\\frac{1}{x+1}", "\\frac{1}{1+x}", True),
    ("x^3", "x^2", False),
    ("3n+1", "1+3n", True),
    ("n(n+1)", "n^2+n", True),
    ("\\frac{n(n+1)}{2}", "\\frac{n^2+n}{2}", True),
    ("2^{n}", "2^{n+1}", False),
    # equations and short "x =" prefixes
    ("x=3", "3", True),
    ("3", "x=3", True),
    ("x = 3", "x=3", True),
    ("k=2", "2", True),
    ("x=4", "3", False),
    ("y=2x+3", "2x+3", True),
    ("y = 2x + 3", "y=3+2x", True),
    ("y=2x+3", "y=2x-3", False),
    ("2x+2y=4", "x+y=2", True),
    ("x+y=2", "x-y=2", False),
    ("\\theta = \\frac{\\pi}{4}", "\\frac{\\pi}{4}", True),
    # negative numbers
    ("-3", "-3", True),
    ("-3", "3", False),
    ("-\\frac{3}{4}", "-0.75", True),
    ("(-3)", "-3", True),
    ("-2.5", "-\\frac{5}{2}", True),
    # tuples (ordered)
    ("(1,2)", "(1,2)", True),
    ("(1, 2)", "(1,2)", True),
    ("(1,2)", "(2,1)", False),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
    ("(3, \\frac{\\pi}{2})", "(3, \\frac{\\pi}{3})", False),
    ("(1,2,3)", "(1,2)", False),
    ("(0.5, 2)", "(\\frac{1}{2}, 2)", True),
    ("(1,-2)", "(1,2)", False),
    ("(1,2),(3,4)", "(3,4),(1,2)", True),
    ("(1,2),(3,4)", "(1,2),(3,5)", False),
    # multiple answers (unordered)
    ("1, 2", "2,1", True),
    ("1,2", "1,2", True),
    ("2, 1", "1, 2", True),
    ("1, 2", "1, 3", False),
    ("1, 2, 3", "1, 2", False),
    ("-2, 0, 2", "2,-2,0", True),
    ("69,84", "84, 69", True),
    ("2 \\text{ and } 3", "2, 3", True),
    ("\\{1, 2\\}", "2, 1", True),
    ("\\{1,2\\}", "\\{1,3\\}", False),
    ("x=1, y=2", "x=1, y=2", True),
    ("y=2, x=1", "x=1, y=2", True),
    ("x=1, y=2", "x=2, y=1", False),
    ("y=1", "x=1", False),
    # intervals: open and closed ends differ
    ("(1,2]", "(1,2]", True),
    ("(1,2]", "[1,2]", False),
    ("[1,2)", "[1,2]", False),
    ("(1,2)", "[1,2]", False),
    ("[1, 2]", "[1,2]", True),
    ("(-\\infty, 3)", "(-\\infty,3)", True),
    ("(-\\infty, 3)", "(-\\infty,3]", False),
    ("(-\\infty,1)\\cup(2,\\infty)", "(2,\\infty)\\cup(-\\infty,1)", True),
    ("(-\\infty,1)\\cup(2,\\infty)", "(-\\infty,1]\\cup(2,\\infty)", False),
    ("[0, \\frac{1}{2}]", "[0, 0.5]", True),
    ("(0,\\infty)", "(0,\\infty)", True),
    # units
    ("5 \\text{ cm}", "5", True),
    ("5\\text{cm}", "5", True),
    ("5", "5\\text{ cm}", True),
    ("6 \\text{ cm}", "5", False),
    ("12 \\text{ square units}", "12", True),
    ("10 \\mbox{ inches}", "10", True),
    ("1.6 \\mathrm{~cm}", "1.6", True),
    ("4.5e33 \\mathrm{ergs} \\mathrm{s}^{-1}", "4.5e33", True),
    ("\\$5", "5", True),
    ("\\$1,000.00", "1000", True),
    ("5 \\text{ dollars}", "5", True),
    ("18 \\text{ meters}", "81", False),
    ("\\frac{600}{7} km/h", "\\frac{600}{7}", True),
    ("5 m/s", "5", True),
    ("5 \\text{ m/s}", "5", True),
    ("2 x", "2", False),
    # percentages (a percent sign is a unit; see grading/equivalence.py)
    ("50\\%", "50", True),
    ("50", "50\\%", True),
    ("50\\%", "0.5", True),
    ("0.5", "50\\%", True),
    ("50", "0.5", False),
    ("0.5", "50", False),
    ("0.5\\%", "50\\%", False),
    ("25\\%", "0.25", True),
    ("25\\%", "0.5", False),
    ("12.5\\%", "12.5", True),
    ("50 \\text{ percent}", "50", True),
    # degrees
    ("30^\\circ", "30", True),
    ("30^{\\circ}", "30", True),
    ("30", "30^\\circ", True),
    ("30 \\text{ degrees}", "30", True),
    ("45^\\circ", "30", False),
    ("90^\\circ", "90^{\\circ}", True),
    # multiple choice
    ("(B)", "B", True),
    ("B", "(B)", True),
    ("\\text{(B)}", "B", True),
    ("\\textbf{(B)}", "B", True),
    ("(C)", "B", False),
    ("C", "B", False),
    ("(B) 12", "B", True),
    ("\\text{(A)}", "\\text{(A)}", True),
    ("(D)", "(E)", False),
    ("E = mc^2", "E", False),
    # \text answers
    ("\\text{Sunday}", "\\text{Sunday}", True),
    ("\\text{Sunday}", "Sunday", True),
    ("\\text{sunday}", "\\text{Sunday}", True),
    ("\\text{Monday}", "\\text{Sunday}", False),
    ("\\text{even}", "\\text{odd}", False),
    ("\\textbf{(113) }", "113", True),
    ("(113)", "113", True),
    # matrices and vectors
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}2\\\\1\\end{pmatrix}", False),
    ("\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 5 \\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", False),
    ("\\begin{pmatrix} \\frac{1}{2} \\\\ 0.5 \\end{pmatrix}", "\\begin{pmatrix}0.5\\\\\\frac12\\end{pmatrix}", True),
    # complex numbers
    ("3+4i", "4i+3", True),
    ("3-4i", "3+4i", False),
    ("i", "\\sqrt{-1}", True),
    # odd formatting
    ("5.", "5", True),
    ("\\left(\\frac{1}{2}\\right)", "\\frac{1}{2}", True),
    ("\\displaystyle\\frac{1}{2}", "\\frac{1}{2}", True),
    ("\\!5", "5", True),
    ("$5$", "5", True),
    ("\\boxed{7}", "7", True),
    ("3 + 4", "7", True),
    ("3 + 4", "8", False),
    ("", "5", False),
    # garbled answers: math-verify parses a fragment (a \frac{a}{b}, the last part of an "=" chain) when the
    # whole does not parse; that fragment must not make the answer correct (unbalanced brackets, trailing
    # operators, dangling \frac, stray colons)
    ("\\frac{1}{4} \\cdot 9 + (", "\\frac{1}{4}", False),
    ("\\frac{1}{4} \\cdot 9 - 3 + (", "\\frac{1}{4}", False),
    ("\\frac{1}{4} \\cdot 9 + 7:", "\\frac{1}{4}", False),
    ("\\frac{7}{2} + {{}}", "\\frac{7}{2}", False),
    ("\\frac{7}{2} + {{}} +", "\\frac{7}{2}", False),
    ("\\frac{7}{2} + {{(}}", "\\frac{7}{2}", False),
    ("\\frac{7}{2} +", "\\frac{7}{2}", False),
    ("\\frac{7}{2} -", "\\frac{7}{2}", False),
    ("\\frac{7}{2} \\cdot", "\\frac{7}{2}", False),
    ("\\frac{7}{2} \\times", "\\frac{7}{2}", False),
    ("\\frac{7}{2} /", "\\frac{7}{2}", False),
    ("\\frac{7}{2}^", "\\frac{7}{2}", False),
    ("\\frac{7}{2} =", "\\frac{7}{2}", False),
    ("\\frac{7}{2}:", "\\frac{7}{2}", False),
    ("\\frac{7}{2} : 9", "\\frac{7}{2}", False),
    ("\\frac{1}{4} + (9", "\\frac{1}{4}", False),
    ("\\frac{1}{4})", "\\frac{1}{4}", False),
    ("\\frac{1}{4} (", "\\frac{1}{4}", False),
    ("(\\frac{1}{4}", "\\frac{1}{4}", False),
    ("\\left(\\frac{1}{4}", "\\frac{1}{4}", False),
    ("\\frac{1}{4} [", "\\frac{1}{4}", False),
    ("\\frac{1}{4}]", "\\frac{1}{4}", False),
    ("\\frac{1}{4} + \\frac{2}{}", "\\frac{1}{4}", False),
    ("\\frac{1}{4} + \\frac", "\\frac{1}{4}", False),
    ("\\frac{1}{4} + \\frac{", "\\frac{1}{4}", False),
    ("\\frac{1}{4} \\cdot \\sqrt{", "\\frac{1}{4}", False),
    ("\\sqrt{2} + (", "\\sqrt{2}", False),
    ("2\\pi -", "2\\pi", False),
    ("2\\pi \\cdot (", "2\\pi", False),
    ("x^2 + (", "x^2", False),
    ("x^2 + 1 +", "x^2 + 1", False),
    ("3 + 4 +", "7", False),
    ("3 + 4 + (", "7", False),
    ("7 + (", "7", False),
    ("( = 3 = 5", "5", False),
    ("[ = 5 = 5", "5", False),
    ("y = 2x + ( = 3", "3", False),
    ("\\frac{3}{5} \\cdot )", "\\frac{3}{5}", False),
    ("\\frac{3}{5}\\}", "\\frac{3}{5}", False),
    ("\\frac{3}{5}, (", "\\frac{3}{5}", False),
    # ... while the well-formed neighbours of those garbled answers still grade as correct
    ("\\frac{1}{4} \\cdot 9 - 2", "\\frac{1}{4}", True),
    ("\\frac{1}{4} \\cdot (9 - 8)", "\\frac{1}{4}", True),
    ("\\frac{7}{2} + {0}", "\\frac{7}{2}", True),
]

GARBLED = [(p, r) for p, r, e in EQUIVALENCE[EQUIVALENCE.index(("", "5", False)) + 1:] if not e]


def _case_id(case):
    pred, ref, expected = case
    return f"{pred!r}~{ref!r}->{expected}"


@pytest.fixture(scope="module")
def table_verdicts():
    texts = [("The final result is \\boxed{" + p + "}.", r) for p, r, _ in EQUIVALENCE]
    return dict(zip(range(len(EQUIVALENCE)), grade_many(texts, timeout=10)))


def test_equivalence_table_is_large_and_balanced():
    assert len(EQUIVALENCE) >= 150
    trues = sum(1 for *_, e in EQUIVALENCE if e)
    assert 0.3 < trues / len(EQUIVALENCE) < 0.8


@pytest.mark.parametrize("index", range(len(EQUIVALENCE)), ids=[_case_id(c) for c in EQUIVALENCE])
def test_equivalence(index, table_verdicts):
    pred, ref, expected = EQUIVALENCE[index]
    v = table_verdicts[index]
    assert bool(v) is expected, f"{pred!r} vs {ref!r}: {v}"
    assert v.rule not in ("timeout", "error"), v


def test_second_opinion_alone_agrees_with_table():
    """The rule-based second opinion (no math-verify) must get every table row right on its own, so it is a
    real cross-check and not a rubber stamp."""
    from grading.equivalence import second_opinion

    wrong = []
    for pred, ref, expected in EQUIVALENCE:
        x = extract_answer("\\boxed{" + pred + "}")
        got = second_opinion(x, ref)[0] if x else False
        if got is not expected:
            wrong.append((pred, ref, expected))
    assert not wrong, wrong


def test_math_verify_alone_refuses_garbled_answers():
    """math-verify's opinion on its own (not only the final verdict): a fragment that parsed is not an answer."""
    from grading.equivalence import math_verify_equal

    assert len(GARBLED) >= 30
    accepted = [(p, r) for p, r in GARBLED if math_verify_equal(p, r)]
    assert not accepted, accepted
    assert math_verify_equal("\\frac{1}{4} \\cdot 9 - 2", "\\frac{1}{4}")  # the parser still works
    assert math_verify_equal("x = y = 5", "5")  # a whole equation chain still reads as its last value


def test_garbled_answer_after_answer_is():
    """The same garbage reached through the "the answer is" extraction, not a box."""
    for text in ("The answer is \\frac{1}{4} \\cdot 9 + (.", "the final answer is $\\frac{1}{4} \\cdot 9 + ($"):
        v = grade(text, "\\frac{1}{4}")
        assert not v and v.rule == "mismatch", (text, v)


def test_equivalence_single_grade_matches_batch(table_verdicts):
    # grade() and grade_many() are the same function: spot-check a few
    for i in (0, 1, 22, 60):
        p, r, _ = EQUIVALENCE[i]
        assert grade("\\boxed{" + p + "}", r) == table_verdicts[i]


# ------------------------------------------------------------------------------------------------- extraction
def test_last_boxed_wins():
    v = grade("First \\boxed{3}, then on reflection \\boxed{4}.", "4")
    assert v.correct and v.extracted == "4"
    assert not grade("First \\boxed{4}, then on reflection \\boxed{3}.", "4")


def test_nested_braces():
    assert last_boxed("so \\boxed{\\frac{1}{\\sqrt{2}}} done") == "\\frac{1}{\\sqrt{2}}"
    assert last_boxed("\\boxed{\\{1,2\\}}") == "\\{1,2\\}"
    v = grade("thus $\\boxed{\\left(\\frac{1}{2}, \\frac{3}{4}\\right)}$", "\\left(\\frac12,\\frac34\\right)")
    assert v.correct, v


def test_boxed_in_middle_of_text():
    text = "We get \\boxed{12} as the count.\n\nThis checks out since 12 = 3 * 4, no other case works."
    assert extract_answer(text) == "12"
    assert grade(text, "12")


def test_box_variants():
    assert last_boxed("\\boxed 5$ ok") == "5"
    assert last_boxed("answer \\fbox{7}") == "7"
    assert last_boxed("answer $\\framebox{204}$ minutes") == "204"
    assert last_boxed("\\boxed{\\boxed{9}}") == "9"
    assert last_boxed("\\boxed {8}") == "8"
    assert last_boxed("\\boxedx{8}") is None


def test_unterminated_last_box_falls_back_to_previous_complete_one():
    assert last_boxed("\\boxed{5} and later \\boxed{6") == "5"
    assert last_boxed("\\boxed{") is None


def test_the_stop_rule_and_the_references_read_boxes_as_the_grader_does():
    """One reader (grading/boxed.py): a response stops on a box exactly when the grader finds one in it, and a
    reference taken from a worked solution is the box the grader would read there."""
    from gsi.data.benchmarks import _ref_minerva
    from gsi.runtime.state import has_complete_boxed

    texts = ["\\boxed{5}", "x \\boxed{5} and later \\boxed{6", "\\boxed{", "\\boxed{\\{}", "\\fbox{7}", "\\boxed 5$",
             "a \\boxed{\\frac{1}{2}} b", "\\boxed{\\boxed{9}}", "no box", "\\boxedx{8}"]
    for text in texts:
        assert has_complete_boxed(text) == (last_boxed(text) is not None), text
        assert _ref_minerva({"solution": text}) == (last_boxed(text) or None), text


def test_answer_is_fallback():
    assert extract_answer("So the answer is 42.") == "42"
    assert extract_answer("Hence the answer is $\\frac{1}{2}$.") == "\\frac{1}{2}"
    assert extract_answer("The final answer is $5$. I hope it is correct.") == "5"
    assert extract_answer("Final answer: 3.5") == "3.5"
    assert answer_is_fallback("the answer is 1.5 meters. Next") == "1.5 meters"
    assert grade("Thus, the answer is 7.", "7")
    assert not grade("Thus, the answer is 8.", "7")
    # a boxed answer has priority over the phrase
    assert extract_answer("The answer is 3, or rather \\boxed{4}") == "4"


def test_no_answer():
    v = grade("I could not solve this problem, sorry; 7 maybe", "7")
    assert not v.correct and v.rule == "no_answer" and v.extracted is None
    v = grade("", "7")
    assert not v and v.rule == "no_answer"
    v = grade("\\boxed{}", "7")
    assert not v and v.rule == "no_answer"


def test_only_the_generated_text_counts():
    # The grader sees only what it is given: a boxed value elsewhere (e.g. a system prompt) is not considered.
    assert grade("no box here", "5").rule == "no_answer"


# ------------------------------------------------------------------------------------------------- normaliser
@pytest.mark.parametrize("raw,norm", [
    ("\\dfrac{1}{2}", "\\frac{1}{2}"), ("\\frac12", "\\frac{1}{2}"), ("1/2", "\\frac{1}{2}"), ("0.5", "\\frac{1}{2}"),
    ("27.0", "27"), ("027", "27"), ("1,000", "1000"), ("5\\text{ cm}", "5"), ("30^\\circ", "30"), ("x = 3", "3"),
    ("\\$5", "5"), ("50\\%", "50"), ("\\left( 1, 2 \\right)", "(1,2)"), ("\\sqrt2", "\\sqrt{2}"), ("5.", "5"),
    ("\\text{(B)}", "(B)"), ("\\frac{-1}{2}", "-\\frac{1}{2}"), ("2 x", "2x"), ("5m", "5m"), ("5 m", "5"),
])
def test_normalize(raw, norm):
    assert normalize(raw) == norm


def test_canonical_number_and_percent():
    assert canonical_number("0010.500") == "10.5"
    assert canonical_number("-0.0") == "0"
    assert canonical_number("1,2") is None
    assert canonical_number("abc") is None
    assert has_percent("50\\%") and has_percent("50%") and has_percent("50 percent")
    assert not has_percent("50") and not has_percent("\\frac{1}{2}")


# ------------------------------------------------------------------------------------------------- verdicts
def test_verdict_is_frozen_and_truthy():
    v = Verdict(True, "string", "5", "5")
    assert bool(v) and not Verdict(False, "mismatch", "4", "5")
    with pytest.raises(Exception):
        v.correct = False  # type: ignore[misc]


def test_verdict_fields():
    v = grade("so \\boxed{\\dfrac{1}{2}}", "$0.5$")
    assert v.correct
    assert v.extracted == "\\dfrac{1}{2}"
    assert v.reference == "\\frac{1}{2}"
    assert v.rule in grading.RULES


def test_numeric_reference_types():
    # AMC stores 27.0 as a float: the integer answer must match
    assert grade("\\boxed{27}", 27.0)
    assert grade("\\boxed{27}", "27.0")
    assert not grade("\\boxed{28}", 27.0)


def test_refuses_too_long_inputs():
    v = grade("x" * (grading.MAX_TEXT_CHARS + 1) + "\\boxed{5}", "5")
    assert not v and v.rule == "refused_too_long"
    v = grade("\\boxed{" + "1" * (grading.MAX_ANSWER_CHARS + 5) + "}", "5")
    assert not v and v.rule == "refused_too_long"
    v = grade("\\boxed{5}", "5" * (grading.MAX_ANSWER_CHARS + 5))
    assert not v and v.rule == "refused_too_long"


def test_timeout_returns_verdict_and_pool_recovers():
    v = grade("\\boxed{9^{9^{9^{9}}}}", "5", timeout=1.0)
    assert not v.correct and v.rule in ("timeout", "mismatch"), v
    if v.rule == "timeout":
        assert v.extracted == "9^{9^{9^{9}}}"  # reported by the worker before the slow part
    assert grade("\\boxed{5}", "5", timeout=5.0)  # the pool replaced the killed worker


def test_grade_is_thread_safe():
    results: dict[int, Verdict] = {}

    def work(i: int) -> None:
        results[i] = grade(f"\\boxed{{{i}}}", str(i if i % 2 == 0 else i + 1))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 24
    assert all(bool(results[i]) == (i % 2 == 0) for i in range(24))


def test_grade_many_preserves_order():
    pairs = [(f"\\boxed{{{i}}}", str(i if i % 3 else i + 1)) for i in range(300)]
    vs = grade_many(pairs, workers=2)
    assert [bool(v) for v in vs] == [bool(i % 3) for i in range(300)]
    assert [v.extracted for v in vs] == [str(i) for i in range(300)]


# ------------------------------------------------------------------------------------------------- CLI
def _write_results(path: Path) -> None:
    rows = [
        {"id": "a", "final_text": "so \\boxed{5}", "reference": "5", "correct": True},
        {"id": "b", "final_text": "so \\boxed{\\frac{1}{2}}", "reference": "0.5", "correct": False,
         "extracted": "\\frac{1}{2}"},
        {"id": "c", "final_text": "so \\boxed{6}", "reference": "5", "correct": True},
        {"id": "d", "final_text": "nothing", "reference": "5", "correct": False, "dataset": "x"},
    ]
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, "{this is not json")
    lines.insert(3, json.dumps({"id": "e", "reference": "1"}))  # no final_text
    path.write_text("\n".join(lines) + "\n")


def test_cli_check(tmp_path):
    f = tmp_path / "results.jsonl"
    _write_results(f)
    r = subprocess.run([sys.executable, "-m", "grading", "check", str(f), "--dataset-field", "dataset"],
                       cwd=REPO, capture_output=True, text=True, timeout=120, env=_env())
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert f"{f}:3" in out and f"{f}:4" in out  # malformed lines named with file:line
    assert "0.5000" in out  # old accuracy 2/4
    assert "2 disagreement" in out  # b (now correct) and c (now wrong)
    rows = _table_rows(out)
    assert ["2", "b", "False", "True"] in [r[:4] for r in rows]  # line 2 of the file: id b
    assert ["5", "c", "True", "False"] in [r[:4] for r in rows]


def _table_rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.count("│") >= 4]


def test_cli_check_in_process(tmp_path, capsys, monkeypatch):
    from grading.__main__ import main

    monkeypatch.setenv("COLUMNS", "200")
    f = tmp_path / "results.jsonl"
    _write_results(f)
    assert main(["check", str(f)]) == 0
    out = capsys.readouterr().out
    assert "not valid JSON" in out and "missing key" in out
    assert "0.5000" in out and "2 disagreement" in out


def test_cli_grade(capsys):
    from grading.__main__ import main

    assert main(["grade", "\\boxed{0.5}", "\\frac12"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["correct"] is True and out["extracted"] == "0.5"


def _env():
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "200"
    return env


_GARBAGE_TAILS = [" + (", " - 3 + (", " + 7:", ":", " +", " -", " \\cdot", " \\times", " /", "^", " =", " (", ")",
                  " [", "]", "\\}", " + {{}}", " + \\frac{2}{}", " + \\frac", " \\cdot )", ", (", " = ( = 1"]


def test_hypothesis_garbage_tail_never_counts_for_math_verify():
    """Property: a correct answer followed by a dangling operator, bracket or colon is not correct for
    math-verify (which parsed only the correct prefix before) nor for the grader."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from grading.equivalence import decide, math_verify_equal

    answers = st.one_of(
        st.integers(-999, 999).map(str),
        st.tuples(st.integers(1, 99), st.integers(2, 99)).map(lambda ab: "\\frac{%d}{%d}" % ab),
        st.integers(2, 50).map(lambda n: "\\sqrt{%d}" % n),
        st.sampled_from(["x^2 + 1", "2\\pi", "\\frac{\\pi}{4}", "3 + 4i", "e^{2}", "\\ln 2"]))

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(answer=answers, tail=st.sampled_from(_GARBAGE_TAILS))
    def check(answer, tail):
        pred = answer + tail
        assert not math_verify_equal(pred, answer), (pred, answer)
        assert not decide(pred, answer)[0], (pred, answer, decide(pred, answer))

    check()
