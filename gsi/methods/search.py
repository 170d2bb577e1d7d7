"""What the response-level methods share (best-of-n per response, beam search, DVTS, particle filtering):
aggregating a response's per-step PRM rewards, choosing one response from a pool (best, sampled, majority or
reward-weighted vote), and the per-track views through which a method samples and scores many partial responses
of one problem with the Method base helpers.

`select_response` is also what experiments/pool_curves.py replays over subsets of a stored pool, so a pool curve
at n and a direct run at n choose the same response from the same draws.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np

from gsi.methods.base import hard_choice, soft_choice
from gsi.runtime.state import ProblemState

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


def check_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"method.{key} must be one of {tuple(allowed)}, got {value!r}")


def answer_keys(texts: Sequence[str]) -> list[str | None]:
    """The normalised final answer of each response (None: no answer), so "1/2" and "\\frac{1}{2}" vote as one."""
    from grading.extract import extract_answer
    from grading.normalize import normalize

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


def track_view(s: ProblemState, track: str, steps=None, context=None, parent: ProblemState | None = None
               ) -> ProblemState:
    """A partial response of problem `s` seen as a problem state of its own: the base helpers build its requests
    (its id names the track, so its samples get their own seeds: (seed, problem, track, step, role)) and count
    its tokens, which `absorb` then moves to the problem.

    Token accounting (gsi.runtime.state): a view that continues `parent` (another view) starts where the roles' prefix
    caches are, i.e. past what each role read for the parent, and past the tokens it adds to the parent's context
    when a role read them as the parent's candidate; a fresh view starts at 0 (`share_prompt` charges the prompt
    once per problem)."""
    v = ProblemState(index=s.index, id=f"{s.id}#{track}", problem=s.problem, reference=s.reference,
                     prompt_ids=s.prompt_ids, context=list(s.prompt_ids) if context is None else context,
                     steps=[] if steps is None else steps)
    if parent is not None:
        v.read = dict(parent.read)
        added = tuple(v.context[len(parent.context):])
        for role, pending in parent.pending.items():
            end = pending.get(added) if added else None
            if end is not None:
                v.read[role] = max(v.read[role], end)
    return v


def share_prompt(owner: ProblemState, views: Sequence[ProblemState], lengths: dict[str, int]) -> None:
    """The views of one problem share its prompt: each role in `lengths` (its prompt length in its own tokens)
    reads it once, charged to the problem, and every view starts past it."""
    for role, n in lengths.items():
        owner.charge(role, n, [], generated=False)
        for v in views:
            v.read[role] = max(v.read[role], n)


def _add(into: dict, counts: dict) -> None:
    for k, v in counts.items():
        if isinstance(v, dict):
            _add(into.setdefault(k, {}), v)
        elif isinstance(v, (int, float)):
            into[k] = into.get(k, 0) + v


def absorb(owner: ProblemState, views: Sequence[ProblemState]) -> None:
    """Move the token counts the base helpers put on track views to the problem that owns them."""
    for v in views:
        _add(owner.tokens, v.tokens)
        _add(owner.tokens_nocache, v.tokens_nocache)
        owner.empty_candidates += v.empty_candidates
        v.tokens = {r: {k: 0 for k in c} for r, c in v.tokens.items()}
        v.tokens_nocache = {r: {k: 0 for k in c} for r, c in v.tokens_nocache.items()}
        v.empty_candidates = 0


def finish_with(s: ProblemState, steps, context, stop_reason: str | None) -> None:
    """End problem `s` with the chosen response."""
    s.steps = list(steps)
    s.context = list(context)
    s.final_text = "".join(x.text for x in s.steps)
    s.done, s.stop_reason = True, stop_reason
