"""What a method plugin is: given the active problems and the three roles, advance each problem by one step.

A method sees problem states and engines only (no files, no W&B, no Hydra). It must make at most one engine
call per role per phase for the whole batch: the scheduler hands it every active problem at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gsi import seeding
from gsi.engines.base import Engines, GenerateRequest, Generator, RewardRequest, Step
from gsi.state import ProblemState, StepRecord, stop_reason_after


@dataclass
class StepContext:
    """The run-wide settings a method needs to build requests and append steps."""

    seed: int
    max_step_tokens: int
    max_steps: int
    window: int  # the smallest context window of the three roles
    trace: bool = False

    def room(self, context_len: int) -> int:
        return self.window - context_len

    def max_tokens(self, context_len: int) -> int:
        return min(self.max_step_tokens, self.room(context_len))

    def rng(self, state: ProblemState, purpose: str, track: int = 0) -> np.random.Generator:
        return seeding.rng(self.seed, state.id, state.step_index, purpose, track)

    def request(self, state: ProblemState, role: str, n: int, context: Sequence[int] | None = None,
                track: int = 0) -> GenerateRequest:
        context = state.context if context is None else context
        seed = seeding.derive_seed(self.seed, state.id, state.step_index, f"gen-{role}", track)
        return GenerateRequest(context=tuple(context), n=n, seed=seed, max_tokens=self.max_tokens(len(context)))

    def append(self, state: ProblemState, step: Step, *, source: str, accepted: bool | None,
               reward: float | None = None, draft_tokens: int = 0, trace: dict | None = None) -> None:
        state.steps.append(StepRecord(text=step.text, token_ids=tuple(step.token_ids), source=source,
                                      accepted=accepted, reward=reward, draft_tokens=draft_tokens))
        state.context.extend(step.token_ids)
        if self.trace and trace is not None:
            state.trace.append({"step": state.step_index - 1, **trace})
        reason = stop_reason_after(state, step, max_steps=self.max_steps, room=self.room(len(state.context)))
        if reason:
            state.done, state.stop_reason = True, reason


class Method(ABC):
    name: str
    has_acceptance = True  # whether steps carry an accept/reject decision
    # Whether `step` touches only the states it is given (and their `scratch`), so that the overlapped scheduler
    # may step several cohorts at once; a method with state shared between problems sets it False.
    cohort_safe = True

    def __init__(self, cfg, engines: Engines, ctx: StepContext):
        self.cfg = cfg
        self.engines = engines
        self.ctx = ctx

    @abstractmethod
    def step(self, states: list[ProblemState]) -> None:
        """Advance every state by one step (or finish it)."""

    @staticmethod
    def concurrently(*calls):
        """Run independent batched engine calls (thunks, to different roles) at the same time; their results in
        order. E.g. `r, lb = self.concurrently(lambda: self.rewards(...), lambda: self.score(big, ...))`."""
        from gsi.concurrency import run_concurrently

        return run_concurrently(calls, name="gsi-call")

    # Batched engine calls shared by the methods, with per-problem token accounting.

    def sample(self, generator: Generator, states: Sequence[ProblemState], n: int, *,
               greedy: bool = False) -> list[list[Step]]:
        if not states:
            return []
        requests = [self.ctx.request(s, generator.role, n) for s in states]
        out = generator.generate(requests, greedy=greedy)
        for s, steps in zip(states, out):
            s.count(generator.role, context=len(s.context), generated=sum(len(c.token_ids) for c in steps))
        return out

    def rewards(self, states: Sequence[ProblemState], candidates: Sequence[Sequence[Step]]) -> list[list[float]]:
        requests = [RewardRequest(problem=s.problem, steps=[*(r.text for r in s.steps), c.text])
                    for s, cands in zip(states, candidates) for c in cands]
        if not requests:
            return [[] for _ in states]
        flat = iter(self.engines.reward.reward(requests))
        out = [[next(flat) for _ in cands] for cands in candidates]
        for s, cands in zip(states, candidates):
            s.count("reward", context=sum(len(s.context) + len(c.token_ids) for c in cands))
        return out

    def score(self, generator: Generator, states: Sequence[ProblemState],
              candidates: Sequence[Sequence[Step]]) -> list[list[float]]:
        contexts = [s.context for s, cands in zip(states, candidates) for _ in cands]
        conts = [c.token_ids for cands in candidates for c in cands]
        if not conts:
            return [[] for _ in states]
        flat = iter(generator.score(contexts, conts))
        out = [[next(flat) for _ in cands] for cands in candidates]
        for s, cands in zip(states, candidates):
            s.count(generator.role, context=sum(len(s.context) + len(c.token_ids) for c in cands))
        return out


def softmax(scores: Sequence[float]) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    x = np.exp(x - x.max())
    return x / x.sum()


def soft_choice(scores: Sequence[float], rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """Draw index i with probability softmax(scores)_i."""
    p = softmax(scores)
    return int(rng.choice(len(p), p=p)), p


def hard_choice(scores: Sequence[float], rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """The best index; ties broken uniformly at random."""
    x = np.asarray(scores, dtype=np.float64)
    best = np.flatnonzero(x == x.max())
    p = np.zeros(len(x))
    p[best] = 1.0 / len(best)
    return int(rng.choice(best)), p


def candidate_trace(cands: Sequence[Step], **columns) -> list[dict]:
    rows = []
    for i, c in enumerate(cands):
        row = {"tokens": len(c.token_ids), "logp": c.logprob}
        for key, values in columns.items():
            if values is not None:
                row[key] = float(values[i])
        rows.append(row)
    return rows
