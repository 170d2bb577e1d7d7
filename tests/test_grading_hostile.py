"""Hostile model output: the grader must not crash, must not run code, and must return within its time limit.

Every call is timed; the limit is TIMEOUT seconds of grading plus SLACK for process hand-off and, after a
killed worker, starting its replacement (a fork from the preloaded fork server: milliseconds).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import grading
from grading import grade, lifetime

TIMEOUT = 2.0  # seconds of the worker's CPU time
# The limit is CPU time: a loaded machine stretches it in wall-clock time by any factor, so these tests assert
# verdicts, not durations (a hostile input that hung the grader would hang the test, and the CPU limit is what
# tests/test_grading_lifetime.py checks).
MARKER = Path(f"/tmp/pwned_{uuid.uuid4().hex}")

PAYLOADS = [
    f"__import__('os').system('touch {MARKER}')",
    f"__import__(\"os\").system(\"touch {MARKER}\")",
    f"exec(\"import os; os.system('touch {MARKER}')\")",
    f"eval(\"__import__('os').system('touch {MARKER}')\")",
    f"1+__import__('os').system('touch {MARKER}')",
    f"().__class__.__base__.__subclasses__()[0]; __import__('os').system('touch {MARKER}')",
    f"lambda: __import__('os').system('touch {MARKER}')",
    f"\\text{{__import__('os').system('touch {MARKER}')}}",
    f"\\operatorname{{__import__}}('os').system('touch {MARKER}')",
    f"$__import__('os').system('touch {MARKER}')$",
    f"open('{MARKER}', 'w').write('x')",
    f"Symbol('x').__class__.__init__.__globals__['__builtins__']['__import__']('os').system('touch {MARKER}')",
]

HOSTILE = [
    "{" * 5000,
    "}" * 5000,
    "\\boxed{" + "{" * 1990 + "}",
    "\\boxed{" + "{" * 1000 + "1" + "}" * 1000 + "}",
    "\\boxed{" + "\\frac{1}{" * 250 + "2" + "}" * 250 + "}",
    "\\boxed{" + "\\frac{" * 3000 + "}",
    "\\boxed{" + "\\sqrt{" * 300 + "2" + "}" * 300 + "}",
    "\\boxed{" + "(" * 1500 + "1" + ")" * 1500 + "}",
    "\\boxed{" + "1" * 100_000 + "}",
    "\\boxed{" + "1" * 1999 + "}",
    "\\boxed{9**9**9**9}",
    "\\boxed{9^{9^{9^{9}}}}",
    "\\boxed{10^{10^{10}}}",
    "\\boxed{2^{2^{2^{2^{2^{2}}}}}}",
    "\\boxed{(10^{100})!}",
    "\\boxed{1000000!}",
    "\\boxed{\\binom{10^{9}}{10^{5}}}",
    "\\boxed{" + "\\sum_{i=1}^{10^{9}}" * 50 + "i}",
    "\\boxed{" + "\\prod_{k=1}^{10^{6}}" * 20 + "k}",
    "\\boxed{\\int_0^{10^{9}} \\int_0^{x} e^{x^{y}} dy dx}",
    "\\boxed{x^{100000}-(x+1)^{100000}}",
    "\\boxed{\\begin{pmatrix}" + "1&" * 400 + "1\\end{pmatrix}^{1000}}",
    "\\boxed{{{}",
    "\\boxed{}}}}",
    "text ends with \\boxed{",
    "\\boxed{" * 20_000,
    "the answer is " + "$" * 5000,
    "the answer is " + "\\(" * 3000,
    "\\boxed{1" + "\\text{ cm}" * 150 + "x}",
    "\\boxed{1 " + "a" * 1900 + "1}",
    "\\boxed{" + ",".join(["(1,2]"] * 300) + "}",
    "\\boxed{" + "\\cup".join(["(1,2]"] * 200) + "}",
    "\\boxed{" + "=".join(["x"] * 600) + "}",
    "\\boxed{\\frac{1}{0}}",
    "\\boxed{0^{-1}}",
    "\\boxed{\\infty - \\infty}",
    "\\boxed{\\x00\\xff\ud7ff}",
    "\\boxed{" + "\\\\" * 999 + "}",
    "the final answer is " + "1" * 90_000,
]


def _no_marker():
    assert not MARKER.exists(), f"code from the model output ran: {MARKER} was created"


def _timed(text, ref):
    return grade(text, ref, timeout=TIMEOUT), None


@pytest.fixture(autouse=True, scope="module")
def _warm_pool_and_cleanup():
    grade("\\boxed{1}", "1")  # start the pool (fork server start-up is not part of any call's time limit)
    yield
    if MARKER.exists():
        MARKER.unlink()


def test_payloads_never_run():
    cases = []
    for p in PAYLOADS:
        cases += [("\\boxed{" + p + "}", "5"), ("the answer is " + p, "5"), ("\\boxed{5}", p),
                  ("\\boxed{" + p + "}", p), (p, p)]
    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda c: _timed(*c), cases))
    for (text, ref), (v, dt) in zip(cases, results):
        assert isinstance(v, grading.Verdict)
        assert v.rule in grading.RULES
    _no_marker()
    # the same string on both sides may match as a string; it must never match anything else
    assert not grade("\\boxed{" + PAYLOADS[0] + "}", "5")


@pytest.mark.slow
def test_hostile_inputs_return_in_time():
    refs = ["5", "\\frac{1}{2}", "(1,2]"]
    cases = [(h, refs[i % len(refs)]) for i, h in enumerate(HOSTILE)]
    cases += [("\\boxed{5}", h[:3000]) for h in HOSTILE[:12]]  # hostile references too
    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda c: _timed(*c), cases))
    for (text, ref), (v, dt) in zip(cases, results):
        assert isinstance(v, grading.Verdict), text[:80]
        assert v.rule in grading.RULES, v
        assert not (v.correct and v.rule in ("timeout", "error", "refused_too_long")), v
    _no_marker()
    # the pool is healthy afterwards
    assert grade("\\boxed{\\frac{2}{4}}", "0.5")


def test_text_processing_is_fast_on_hostile_strings():
    """Extraction and normalisation run before the (time-limited) comparison; they must stay linear-ish."""
    from grading.equivalence import _structure, nesting_depth
    from grading.extract import extract_answer
    from grading.normalize import clean, has_percent, normalize

    for h in HOSTILE + PAYLOADS:
        t = time.process_time()  # this process's CPU time: linear-ish whatever the machine's load
        extract_answer(h)
        s = h[: grading.MAX_ANSWER_CHARS]
        normalize(s), clean(s), has_percent(s), nesting_depth(s), _structure(s)
        assert time.process_time() - t < 1.0, h[:80]


def test_long_inputs_are_refused():
    v = grade("\\boxed{" + "1" * 100_000 + "}", "1")
    assert v.rule == "refused_too_long" and not v
    v = grade("\\boxed{5}" + " " * 100_000, "5")
    assert v.rule == "refused_too_long" and not v
    v = grade("\\boxed{" + "1" * 3000 + "}", "1" * 3000)
    assert v.rule == "refused_too_long" and not v


_TOKENS = [
    "\\boxed{", "{", "}", "\\frac{", "\\sqrt{", "^", "_", "(", ")", "[", "]", "\\{", "\\}", ",", "=", "+", "-",
    "*", "/", "**", "!", "9", "99", "9**9**9", "x", "e", "i", "\\pi", "\\infty", "\\sum_{i=1}^{n}", "\\int",
    "\\text{", "\\left(", "\\right)", "\\cup", "\\\\", "&", "\\begin{pmatrix}", "\\end{pmatrix}", "%", "\\%",
    "$", " ", "\n", "the answer is ", "__import__('os')", ".system(", "'touch " + str(MARKER) + "'", ")",
    "\\boxed 5", "\\fbox{", "1,000", "0.5", "10^{", "\\cdot", "\\times", "\\dfrac", "\\mathrm{~cm}",
]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(parts=st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=60),
       ref=st.sampled_from(["5", "\\frac{1}{2}", "(1,2]", "x^2+1", "1, 2", "50\\%", "\\text{(B)}"]),
       repeat=st.integers(min_value=1, max_value=200))
def test_hypothesis_token_soup(parts, ref, repeat):
    text = "".join(parts)
    if repeat > 150:  # sometimes a long, deeply repetitive string
        text = text * (repeat * 10)
    v, dt = _timed(text, ref)
    assert isinstance(v, grading.Verdict) and v.rule in grading.RULES
    _no_marker()


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(inner=st.text(min_size=0, max_size=300), ref=st.text(min_size=0, max_size=40))
def test_hypothesis_arbitrary_text(inner, ref):
    v, dt = _timed("so \\boxed{" + inner + "}", ref)
    assert isinstance(v, grading.Verdict) and v.rule in grading.RULES
    _no_marker()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(depth=st.integers(min_value=1, max_value=400),
       opener=st.sampled_from(["{", "\\frac{", "\\sqrt{", "(", "\\left(", "^{", "\\boxed{", "\\sum_{", "[", "\\{"]),
       closed=st.booleans())
def test_hypothesis_deep_nesting(depth, opener, closed):
    closer = {"{": "}", "\\frac{": "}{1}", "\\sqrt{": "}", "(": ")", "\\left(": "\\right)", "^{": "}",
              "\\boxed{": "}", "\\sum_{": "}", "[": "]", "\\{": "\\}"}[opener]
    body = opener * depth + "2" + (closer * depth if closed else "")
    v, dt = _timed("\\boxed{" + body + "}", "2")
    assert isinstance(v, grading.Verdict) and v.rule in grading.RULES
    _no_marker()


def test_positive_control_payload_runs_under_sympify(tmp_path):
    """The payloads are real: sympy's string parser executes them (in a throwaway subprocess here). So the
    marker assertions above can fail, and the grader must never hand model output to sympify/parse_expr."""
    import subprocess
    import sys

    marker = tmp_path / "control_marker"
    payload = f"__import__('os').system('touch {marker}')"
    subprocess.run([sys.executable, "-c", f"import sympy; sympy.sympify({payload!r})"], timeout=120,
                   capture_output=True)
    assert marker.exists()


def test_marker_absent_at_end():
    _no_marker()
    assert not any(p.name.startswith(MARKER.name) for p in Path("/tmp").iterdir())


# --------------------------------------------------------------------------------------- inputs that are not text
class _StrRaises:
    def __str__(self):
        raise RuntimeError("__str__ raised")

    __repr__ = __str__


class _StrSubclass(str):  # a str subclass whose methods lie: the grader must read its characters, not call them
    def __str__(self):
        raise RuntimeError("__str__ raised")

    def __len__(self):
        raise RuntimeError("__len__ raised")


def _unpicklable():
    import threading

    return threading.Lock()


NOT_TEXT = [
    ("10**5000 as text", 10**5000, "1", "no_answer"),  # ValueError (int str limit) before
    ("10**5000 as reference", "\\boxed{1}", 10**5000, "refused_too_long"),
    ("10**200000 as text", 10**200_000, "1", "refused_too_long"),  # never converted: more digits than the limit
    ("__str__ raises, text", _StrRaises(), "1", "invalid_input"),
    ("__str__ raises, reference", "\\boxed{1}", _StrRaises(), "invalid_input"),
    ("unpicklable reference", "\\boxed{1}", _unpicklable(), "invalid_input"),
    ("lambda reference", "\\boxed{1}", lambda: "1", "invalid_input"),
    ("unpicklable text", _unpicklable(), "1", "invalid_input"),
    ("list reference", "\\boxed{1}", ["1"], "invalid_input"),
    ("dict text", {"text": "\\boxed{1}"}, "1", "invalid_input"),
]


@pytest.mark.parametrize("text,ref,rule", [c[1:] for c in NOT_TEXT], ids=[c[0] for c in NOT_TEXT])
def test_non_text_input_gives_a_verdict(text, ref, rule):
    v = grade(text, ref, timeout=TIMEOUT)
    assert isinstance(v, grading.Verdict) and not v and v.rule == rule, v
    assert rule in grading.RULES


def test_text_like_inputs_are_read_as_text():
    from fractions import Fraction

    assert grade(_StrSubclass("\\boxed{7}"), _StrSubclass("7")).rule == "numeric"
    assert grade(b"so \\boxed{\\frac{1}{2}}", Fraction(1, 2))
    assert grade("\\boxed{3}", 3) and grade("\\boxed{27}", 27.0) and not grade("\\boxed{3}", 4)
    assert grade(None, "3").rule == "no_answer" and grade("\\boxed{3}", None).rule == "no_reference"


_ANY = st.deferred(lambda: st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=4000, max_value=120_000).map(lambda k: 10**k),
    st.floats(), st.fractions(), st.decimals(), st.complex_numbers(), st.text(max_size=50), st.binary(max_size=50),
    st.builds(_StrRaises), st.builds(_StrSubclass, st.text(max_size=20)), st.just(_unpicklable()),
    st.just(lambda: 0), st.lists(_ANY, max_size=3), st.dictionaries(st.text(max_size=3), _ANY, max_size=2),
    st.tuples(_ANY), st.sampled_from([object(), type, ..., NotImplemented, range(3), memoryview(b"\\boxed{1}")])))


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(text=_ANY, ref=_ANY)
def test_hypothesis_any_python_value(text, ref):
    """grade() never raises, whatever it is given: a Verdict with one of RULES, correct only on a real rule."""
    v = grade(text, ref, timeout=TIMEOUT)
    assert isinstance(v, grading.Verdict) and v.rule in grading.RULES
    assert isinstance(v.reference, str) and (v.extracted is None or isinstance(v.extracted, str))
    if v.correct:
        assert v.rule not in ("invalid_input", "refused_too_long", "timeout", "error", "no_answer"), v


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(text=_ANY, ref=_ANY)
def test_hypothesis_any_python_value_in_process(text, ref):
    """The same for the in-process pipeline (grade_local), which the workers run."""
    from grading.verdict import grade_local

    v = grade_local(text, ref)
    assert isinstance(v, grading.Verdict) and v.rule in grading.RULES
