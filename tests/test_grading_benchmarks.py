"""The grader against the shipped benchmarks: each dataset's own worked answer must grade as correct.

Data: $GSI_DATA_DIR, else the `shared/data` folder next to the repository (see shared/data/README.md);
skipped with a message when absent. References come from gsi.data.benchmarks (the ones runs grade against).

What is graded, per dataset (the "solution's own final answer"):
  math500   the solution text (its last \\boxed{}) against `answer`: two independent fields.
  aime24    the AoPS solution text (last \\boxed{} / \\framebox{}, often \\textbf{(073)}) against `answer`.
  minerva   the solution text against its own last \\boxed{} (the reference is defined that way): checks that
            extraction is stable and every reference is equivalent to itself after normalisation.
  olympiad  no \\boxed{} in solutions, so: the raw `final_answer[0]` with its `$...$` and the `unit` field
            appended, boxed, against the reference ($ removed): checks delimiters, units, answer lists.
  amc23     no solutions, so: the integer a model writes (\\boxed{27}) against the raw float answer 27.0.
  gsm8k     the worked solution with "#### X" turned into "The answer is X." (the fallback extraction, and
            thousands separators such as 2,125) against the reference (commas removed).

Each must agree on >= 99.5% of rows. A negative control pairs row i's text with row i+1's reference: the
grader may accept such a pair only when the two references are the same answer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from grading import grade_many
from grading.normalize import normalize
from gsi.data import REGISTRY, load_problems

DATA = Path(os.environ.get("GSI_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
MIN_AGREEMENT = 0.995

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data not found at {DATA} (set GSI_DATA_DIR)")


def _pairs(name: str):
    spec = REGISTRY[name]
    if not spec.local_file:
        pytest.skip(f"{name} is generated, not a benchmark file (tests/test_toy.py checks its solutions)")
    problems = load_problems(SimpleNamespace(name=name, data_dir=str(DATA), local_file=spec.local_file))
    raw = [json.loads(line) for line in (DATA / spec.local_file).read_text(encoding="utf-8").splitlines()
           if line.strip()]
    # Rows a dataset leaves out on purpose (spec.skip_ids, each with its reason in gsi/data/benchmarks.py) are not graded.
    raw = [r for r in raw if str(next((r[f] for f in spec.id_fields if r.get(f) is not None), "")) not in spec.skip_ids]
    assert len(raw) == len(problems)
    if name in ("math500", "minerva", "aime24"):
        pairs = [(p.solution, p.reference) for p in problems]
    elif name == "olympiad":
        pairs = [("\\boxed{" + r["final_answer"][0] + (r.get("unit") or "") + "}", p.reference)
                 for p, r in zip(problems, raw)]
    elif name == "amc23":
        pairs = [("\\boxed{%d}" % int(r["answer"]), r["answer"]) for r in raw]
    elif name == "gsm8k":
        pairs = [(r["answer"].replace("####", "The answer is") + ".", p.reference) for p, r in zip(problems, raw)]
    else:  # a newly registered dataset: its solution's last \boxed{}, if it has solutions
        pairs = [(p.solution, p.reference) for p in problems if p.solution and "\\boxed" in p.solution]
    return problems, pairs


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_benchmark_agreement(name):
    problems, pairs = _pairs(name)
    if not pairs:
        pytest.skip(f"{name}: nothing to grade")
    verdicts = grade_many(pairs, timeout=10)
    misses = [(p.id, v.rule, v.extracted, v.reference) for p, v in zip(problems, verdicts) if not v]
    agreement = 1 - len(misses) / len(pairs)
    report = "\n".join(f"  {name} id={i}: rule={r} extracted={e!r} reference={ref!r}" for i, r, e, ref in misses)
    print(f"\n{name}: {len(pairs) - len(misses)}/{len(pairs)} agree ({agreement:.2%})" + ("\n" + report if report else ""))
    assert agreement >= MIN_AGREEMENT, f"{name}: agreement {agreement:.2%} < {MIN_AGREEMENT:.1%}\n{report}"
    assert not any(r in ("timeout", "error") for _, r, _, _ in misses), report


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_benchmark_negative_control(name):
    """Row i's answer against row i+1's reference: accepted only if the two references are the same answer."""
    problems, pairs = _pairs(name)
    if len(pairs) < 2:
        pytest.skip(f"{name}: too few rows")
    n = len(pairs)
    shifted = [(pairs[i][0], pairs[(i + 1) % n][1]) for i in range(n)]
    verdicts = grade_many(shifted, timeout=10)
    wrongly = []
    for i, v in enumerate(verdicts):
        if v:
            a, b = str(pairs[i][1]), str(pairs[(i + 1) % n][1])
            if normalize(a) != normalize(b):
                wrongly.append((problems[i].id, a, b, v.rule))
    assert not wrongly, f"{name}: different references accepted: {wrongly[:10]}"
    assert sum(map(bool, verdicts)) <= 0.1 * n
