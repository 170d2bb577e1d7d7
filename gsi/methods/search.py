"""What the response-level methods share (best-of-n per response, beam search, DVTS, particle filtering):
aggregating a response's per-step PRM rewards, choosing one response from a pool (best, sampled, majority or
reward-weighted vote), and the branches (partial responses) that a method samples and scores, many per problem,
with the Method base helpers.

`select_response` is also what experiments/pool_curves.py replays over subsets of a stored pool, so a pool curve
at n and a direct run at n choose the same response from the same draws.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np

from grading.extract import extract_answer
from grading.normalize import normalize
from gsi.methods.base import hard_choice, soft_choice
from gsi.runtime.state import ROLES, ProblemState, StepRecord, stop_reason_after

AGGREGATES = ("last", "min", "prod")
SELECTIONS = ("soft", "hard", "majority", "weighted_majority")


def aggregate(rewards: Sequence[float | None], how: str) -> float:
    """A response's score from its per-step rewards (search-and-learn's aggregate_scores); 0 without rewards."""
    rs = [r for r in rewards if r is not None]
    if not rs:
        return 0.0
    if how == "last":
        return rs[-1]
    if how == "min":
        return min(rs)
    if how == "prod":
        return math.prod(rs)
    raise ValueError(f"aggregate must be one of {AGGREGATES}, got {how!r}")




def answer_keys(texts: Sequence[str]) -> list[str | None]:
    """The normalised final answer of each response (None: no answer), so "1/2" and "\\frac{1}{2}" vote as one."""
    answers = [extract_answer(t) for t in texts]
    return [normalize(a) if a is not None else None for a in answers]


def select_response(scores: Sequence[float], answers: Sequence[str | None] | None, selection: str,
                    rng: np.random.Generator, beta: float = 1.0) -> tuple[int, np.ndarray | None]:
    """The chosen response's index, and the selection probabilities when they are defined (soft/hard).

    soft: softmax(beta * score); hard: the best score (ties uniformly at random); majority: the most frequent
    answer; weighted_majority: the answer with the largest summed score. A vote's tie between answers is broken
    at random; the reported response is the best-scored one with the winning answer. Responses without an
    answer do not vote; if none has one, the best-scored response is taken.
    """
    if selection == "hard":
        return hard_choice(scores, rng)
    if selection == "soft":
        return soft_choice([beta * x for x in scores], rng)
    votes: dict[str, float] = defaultdict(float)
    for a, sc in zip(answers, scores):
        if a is not None:
            votes[a] += 1.0 if selection == "majority" else sc
    if not votes:
        return int(max(range(len(scores)), key=lambda k: scores[k])), None
    best = max(votes.values())
    winners = sorted(a for a, v in votes.items() if v == best)
    winner = winners[int(rng.integers(len(winners)))]
    return max((k for k, a in enumerate(answers) if a == winner), key=lambda k: scores[k]), None


class Branch:
    """A partial response of one problem (a beam, a particle, a response-level best-of-n track): what the Method
    helpers (sample, rewards) are awaited on for it, like a problem state.

    Its own: its steps and context; its name (`track`), which seeds its requests as (seed, problem#track, step,
    role); and how far each role's prefix cache has read along it (`read`, `pending`: gsi.runtime.state), since
    branches of one problem diverge after their common prefix. The problem's: the ledger. Every call on a branch
    charges the problem's `tokens`, `tokens_nocache` and `empty_candidates` by itself.
    """

    final_text = None

    def __init__(self, owner: ProblemState, track: str, steps: list[StepRecord], context: list[int],
                 read: dict[str, int]):
        self.owner, self.track = owner, track
        self.steps, self.context = steps, context
        self.read = dict(read)
        self.pending: dict = {r: {} for r in ROLES}
        self.done, self.stop_reason = False, None
        self.uid, self.parent = None, None  # beam search's tree (its trace)

    @property
    def id(self) -> str:
        return f"{self.owner.id}#{self.track}"

    @property
    def problem(self) -> str:
        return self.owner.problem

    @property
    def tokens(self) -> dict:
        return self.owner.tokens

    @property
    def tokens_nocache(self) -> dict:
        return self.owner.tokens_nocache

    @property
    def empty_candidates(self) -> int:
        return self.owner.empty_candidates

    @empty_candidates.setter
    def empty_candidates(self, n: int) -> None:
        self.owner.empty_candidates = n

    # The ledger's rules (gsi.runtime.state), on this branch's steps and marks and the problem's counts.
    step_index = ProblemState.step_index
    response_text = ProblemState.response_text
    count_nocache = ProblemState.count_nocache
    charge = ProblemState.charge
    extend = ProblemState.extend

    def child(self, track: str, step: StepRecord | None = None) -> Branch:
        """A branch that continues this one, by `step` when given: it starts where this one's caches are, and past
        `step` for every role that read it as one of this branch's candidates."""
        b = Branch(self.owner, track, list(self.steps), list(self.context), self.read)
        if step is not None:
            b.pending = {r: dict(p) for r, p in self.pending.items()}
            b.steps.append(step)
            b.extend(step.token_ids)
        return b

    def finish_if(self, step, *, max_steps: int, room: int) -> None:
        """The stop rules (gsi.runtime.state.stop_reason_after) after `step`, the branch's last step."""
        reason = stop_reason_after(self, step, max_steps=max_steps, room=room)
        if reason:
            self.done, self.stop_reason = True, reason


def branches(s: ProblemState, tracks: Sequence[str], lengths: dict[str, int]) -> list[Branch]:
    """Branches of problem `s` at its prompt. They share the prompt: each role in `lengths` (its prompt length in
    its own tokens) reads it once, charged to the problem, and every branch starts past it."""
    for role, n in lengths.items():
        s.charge(role, n, [], generated=False)
    read = {r: lengths.get(r, 0) for r in ROLES}
    return [Branch(s, t, [], list(s.prompt_ids), read) for t in tracks]


def finish_with(s: ProblemState, steps, context, stop_reason: str | None) -> None:
    """End problem `s` with the chosen response."""
    s.steps = list(steps)
    s.context = list(context)
    s.final_text = "".join(x.text for x in s.steps)
    s.done, s.stop_reason = True, stop_reason
