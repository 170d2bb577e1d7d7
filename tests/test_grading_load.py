"""The same answers get the same verdicts on an idle and on a loaded machine (grading/lifetime.py: the limit is
the worker's CPU time, wall-clock time only a far guard; grade_many grades a "timeout" once more at the end).

Under a wall-clock limit a loaded node graded slow-to-verify answers "timeout" that an idle one graded on their
merits; this grades one fixed set of 200 answers twice, the second time with every core saturated by busy loops
(bounded: they stop by themselves), and wants identical verdicts."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from grading import grade, grade_many

LIMIT = 1.0  # seconds of CPU time per answer
# A handful of answers that take a few tenths of a second of CPU to decide (measured idle: 0.2-0.45 s); on a
# loaded machine each takes several times that in wall-clock time, past LIMIT.
SLOW = [
    ("\\boxed{(x+1)^{40}-(x-1)^{40}}", "2"),
    ("\\boxed{" + "+".join(f"x^{{{i}}}" for i in range(60)) + "}", "x"),
    ("\\boxed{" + "+".join(f"x^{{{i}}}" for i in range(60)) + "}", "+".join(f"x^{{{i}}}" for i in range(60))),
]
HOPELESS = [("\\boxed{9^{9^{9^{9}}}}", "1")]  # never decided: "timeout" on any machine


def _answers() -> list[tuple[str, str]]:
    cheap = []
    for i in range(200 - len(SLOW) - len(HOPELESS)):
        ref = str(i) if i % 4 else f"\\frac{{{i}}}{{{i + 1}}}"
        text = f"so \\boxed{{{ref if i % 3 else i + 2}}}"
        cheap.append((text, ref))
    pairs = cheap[:]
    for k, p in enumerate(SLOW + HOPELESS):  # spread among the cheap ones
        pairs.insert(17 + 41 * k, p)
    return pairs


def _busy_loops(n: int, seconds: float) -> list[subprocess.Popen]:
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


@pytest.mark.slow
def test_verdicts_do_not_depend_on_load():
    pairs = _answers()
    assert len(pairs) == 200
    grade("\\boxed{1}", "1")  # start the pool (and the fork server) before either pass
    idle = [(v.correct, v.rule) for v in grade_many(pairs, timeout=LIMIT, workers=2)]
    loops = _busy_loops(os.cpu_count() or 2, seconds=300)  # every core busy; far beyond the pass, killed below
    try:
        time.sleep(0.5)
        assert all(p.poll() is None for p in loops), "the busy loops did not start"
        loaded = [(v.correct, v.rule) for v in grade_many(pairs, timeout=LIMIT, workers=2)]
        assert all(p.poll() is None for p in loops), "the machine was not loaded for the whole pass"
    finally:
        for p in loops:
            p.kill()
        for p in loops:
            p.wait(10)
    differ = [(pairs[i][0][:40], idle[i], loaded[i]) for i in range(len(pairs)) if idle[i] != loaded[i]]
    assert not differ, differ
    # the set holds answers of every kind: right, wrong, slow to decide, and never decided
    rules = {r for _, r in idle}
    assert "timeout" in rules and sum(c for c, _ in idle) > 50 and sum(not c for c, _ in idle) > 50, rules
    slow = [idle[pairs.index(p)] for p in SLOW]
    assert all(r != "timeout" for _, r in slow), slow
