"""What a line of results.jsonl holds (`make_record`), and the grading of a run's answers: the configured grader,
the pooled responses of response-level methods, and the one retry of an answer whose grading timed out."""

from __future__ import annotations

import logging
from typing import Iterable, Protocol

import grading
from gsi.config.access import get
from gsi.roles import POLICIES, ROLES
from gsi.rundir.results import ResultsFile

log = logging.getLogger(__name__)


class AnswerGrader(Protocol):
    """What a run grades with: the configured `Grader`, or a stand-in (tests, experiments/synthetic.py)."""

    def grade(self, text: str, reference: str) -> grading.Verdict: ...

    def grade_many(self, pairs: Iterable[tuple[str, str]]) -> list[grading.Verdict]: ...


class Grader:
    """grading's rules `name` (grading.graders) under `timeout` seconds per answer, as the run config's `grader`
    section sets them."""

    def __init__(self, name: str = "ours", timeout: float = 5.0):
        self.name, self.timeout = name, timeout

    @classmethod
    def from_config(cls, cfg) -> "Grader":
        name = get(cfg, "grader.name", "ours")
        return cls(str(getattr(name, "value", name)), float(get(cfg, "grader.timeout", 5.0)))

    def grade(self, text: str, reference: str) -> grading.Verdict:
        return grading.grade(text, reference, timeout=self.timeout, grader=self.name)

    def grade_many(self, pairs: Iterable[tuple[str, str]]) -> list[grading.Verdict]:
        return grading.grade_many(pairs, timeout=self.timeout, grader=self.name)


def make_record(state, verdict, seconds: float, has_acceptance: bool, trace: bool) -> dict:
    rec = {
        "index": state.index,
        "id": state.id,
        "problem": state.problem,
        "reference": state.reference,
        "final_text": state.response_text,
        "extracted": verdict.extracted,
        "correct": bool(verdict.correct),
        "grade_rule": verdict.rule,
        "stop_reason": state.stop_reason,
        "steps": len(state.steps),
        "acceptance": has_acceptance,
        "accepted_steps": sum(bool(s.accepted) for s in state.steps) if has_acceptance else 0,
        "steps_by": {r: sum(s.source == r for s in state.steps) for r in POLICIES},
        # Draft tokens (methods with an accept test): of the drafts put to the test, of all n drafts, and of
        # the drafts that passed it.
        "chosen_draft_tokens": sum(s.chosen_draft_tokens for s in state.steps) if has_acceptance else 0,
        "drafted_tokens": sum(s.drafted_tokens for s in state.steps) if has_acceptance else 0,
        "accepted_draft_tokens": sum(len(s.token_ids) for s in state.steps if s.accepted) if has_acceptance else 0,
        "empty_candidates": state.empty_candidates,
        # With a prefix cache (each role reads the context once) and without (gsi.runtime.state).
        "tokens": {r: dict(state.tokens[r]) for r in ROLES},
        "tokens_nocache": {r: dict(state.tokens_nocache[r]) for r in ROLES},
        "time_s": seconds,
    }
    if trace:
        rec["trace"] = state.trace
    return rec


def grade_pool(grader: AnswerGrader, pool: list[dict], reference: str) -> list[dict]:
    """Each pooled response with its grade (experiments/pool_curves.py votes and scores over them)."""
    verdicts = grader.grade_many([(r["text"], reference) for r in pool])
    return [{**r, "extracted": v.extracted, "correct": bool(v.correct)} for r, v in zip(pool, verdicts)]


def retry_timeouts(grader: AnswerGrader, results: ResultsFile, done: dict) -> None:
    """Grade each answer graded "timeout" once more, after the run's other grading (the engines idle now): the
    limit is the grading worker's CPU time, so this settles only answers that need about the limit, and makes
    their verdict not depend on what else ran beside the first try. The retry's verdict stands; the record says
    it was retried (`grade_retried`), so a resume does not retry it again."""
    redo = [r for r in done.values() if r.get("grade_rule") == "timeout" and not r.get("grade_retried")]
    if not redo:
        return
    for rec in redo:
        v = grader.grade(rec["final_text"], rec["reference"])
        rec.update(correct=bool(v.correct), grade_rule=v.rule, extracted=v.extracted, grade_retried=True)
    log.info("graded %d answer(s) that timed out once more: %d correct now", len(redo),
             sum(r["correct"] for r in redo))
    results.rewrite(done.values())
