"""Grading of final answers for math reasoning: `grade(generated_text, reference)` -> `Verdict`.

    >>> from grading import grade
    >>> v = grade("... so the answer is \\\\boxed{\\\\frac{1}{2}}.", "0.5")
    >>> bool(v), v.rule, v.extracted
    (True, 'math_verify', '\\\\frac{1}{2}')

Pipeline (one module each): extract.py (the last \\\\boxed{} of the text, else "the answer is ..."),
normalize.py (MATH/PRM800K-style normaliser), equivalence.py (math-verify first, then a rule-based second
opinion with a safe sympy check from safe_sympy.py), safety.py (every call runs in a worker process under a
time limit and a memory cap; model output is never evaluated as code), lifetime.py (a worker's own per-task
limit, and its exit when the run is gone). `python -m grading check FILE`
re-grades a results file. Other graders' rules (grading/graders: `prm800k`, the GSI code's; `qwen`, the RSD code's)
run in the same workers: `grade(text, reference, grader="qwen")`, `python -m grading check --grader qwen FILE`.

Workers are started with multiprocessing's 'forkserver' method (or 'spawn'), which re-imports the calling
script: keep a script's top-level code under `if __name__ == "__main__":`. Environment knobs:
GRADING_WORKER_MEMORY_MB (address-space cap per worker, default 4096; 0 = none), GRADING_START_METHOD.

No dependency on the `gsi` package.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from grading.graders import DEFAULT, check_name
from grading.lifetime import MAX_TIMEOUT, check_timeout
from grading.safety import close_pool, default_workers, get_pool
from grading.verdict import MAX_ANSWER_CHARS, MAX_TEXT_CHARS, RULES, Verdict

__all__ = ["grade", "grade_many", "Verdict", "RULES", "MAX_TEXT_CHARS", "MAX_ANSWER_CHARS", "close_pool",
           "check_timeout", "MAX_TIMEOUT"]


def grade(generated_text: str, reference_answer: str, *, timeout: float = 5.0, grader: str | None = None) -> Verdict:
    """Grade one generated text against a reference answer, in a worker process under `timeout` seconds of CPU
    time (finite, in (0, MAX_TIMEOUT]: ValueError otherwise, see check_timeout), by `grader`'s rules
    (grading.graders: ours (None), prm800k, qwen; an unknown name raises ValueError).

    Never raises for bad text: an answer that runs too long gives Verdict(False, "timeout"), an over-long input
    Verdict(False, "refused_too_long"), no answer Verdict(False, "no_answer"), an input that is not text (not a
    str, bytes or number, or one whose conversion raises) Verdict(False, "invalid_input"). Safe to call from any
    thread.
    """
    grader = _grader_arg(grader)
    return get_pool().grade(generated_text, reference_answer, timeout=timeout, grader=grader)


def _grader_arg(grader: str | None) -> str | None:
    """None for ours (the worker's default message), else a checked grading.graders name."""
    name = check_name(grader)
    return None if name == DEFAULT else name


def grade_many(pairs: Iterable[tuple[str, str]], *, timeout: float = 5.0, workers: int | None = None,
               grader: str | None = None) -> list[Verdict]:
    """Grade (generated_text, reference) pairs in parallel worker processes; results are in input order. A pair
    graded "timeout" is graded once more after all the others (by then the workers have the machine to themselves;
    the limit is CPU time, so this only settles answers that need about the limit), and that verdict stands."""
    grader = _grader_arg(grader)
    check_timeout(timeout)  # a bad limit is the caller's error, not an answer's: raise before grading anything
    pairs = list(pairs)
    n = max(1, workers or default_workers())
    pool = get_pool(min_size=n)

    def one(tr):
        return pool.grade(tr[0], tr[1], timeout=timeout, grader=grader)

    if n == 1 or len(pairs) <= 1:
        verdicts = [one(tr) for tr in pairs]
    else:
        with ThreadPoolExecutor(max_workers=min(n, len(pairs)), thread_name_prefix="grade") as ex:
            verdicts = list(ex.map(one, pairs))
    for i, v in enumerate(verdicts):
        if v.rule == "timeout":
            verdicts[i] = one(pairs[i])
    return verdicts
