"""What a method plugin is: given the active problems and the three roles, advance each problem by one step.

A method sees problem states and engines only (no files, no W&B, no Hydra). It must make at most one engine
call per role per phase for the whole batch: the scheduler hands it every active problem at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gsi.runtime import seeding
from gsi.engines.base import Engines, GenerateRequest, Generator, RewardRequest, Step
from gsi.engines.rewards import split_steps
from gsi.runtime.state import ProblemState, StepRecord, stop_reason_after


def is_empty(step: Step, delimiter: str) -> bool:
    """No text but the delimiter (or EOS at once): nothing a PRM could score."""
    return not split_steps([step.text], delimiter)


@dataclass
class StepContext:
    """The run-wide settings a method needs to build requests and append steps."""

    seed: int
    max_step_tokens: int
    max_steps: int
    window: int  # the smallest context window of the three roles
    trace: bool = False
    delimiter: str = "\n\n"  # generation.step_delimiter: tells empty candidates apart

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
               reward: float | None = None, chosen_draft_tokens: int = 0, drafted_tokens: int = 0,
               trace: dict | None = None) -> None:
        state.steps.append(StepRecord(text=step.text, token_ids=tuple(step.token_ids), source=source,
                                      accepted=accepted, reward=reward, chosen_draft_tokens=chosen_draft_tokens,
                                      drafted_tokens=drafted_tokens))
        state.extend(step.token_ids)
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

    @classmethod
    def check_run(cls, cfg, *, n_problems: int, batch_size: int) -> None:
        """Refuse, before any engine starts, settings this method cannot honour for a run of `n_problems` problems
        advanced `batch_size` at a time (raise ValueError naming the key)."""

    @abstractmethod
    def step(self, states: list[ProblemState]) -> None:
        """Advance every state by one step (or finish it)."""

    @staticmethod
    def concurrently(*calls):
        """Run independent batched engine calls (thunks, to different roles) at the same time; their results in
        order. E.g. `r, lb = self.concurrently(lambda: self.rewards(...), lambda: self.score(big, ...))`."""
        from gsi.runtime.concurrency import run_concurrently

        return run_concurrently(calls, name="gsi-call")

        # Batched engine calls shared by the methods, with per-problem token accounting (gsi.runtime.state).

    def sample(self, generator: Generator, states: Sequence[ProblemState], n: int, *,
               greedy: bool = False) -> list[list[Step]]:
        if not states:
            return []
        requests = [self.ctx.request(s, generator.role, n) for s in states]
        out = generator.generate(requests, greedy=greedy)
        for s, steps in zip(states, out):
            self.count_generated(s, generator.role, steps)
        return out

    def prompt_lengths(self, s: ProblemState, *roles: str) -> dict[str, int]:
        """The problem's prompt length in each role's own tokens (the PRM renders it its own way)."""
        out = {}
        for role in roles:
            n = self.engines.reward.input_length(s.problem, []) if role == "reward" else None
            out[role] = len(s.prompt_ids) if n is None else n
        return out

    def count_generated(self, s: ProblemState, role: str, steps: Sequence[Step]) -> None:
        """One request of n samples at s.context: the n samples share the context."""
        s.count_nocache(role, context=len(s.context), generated=sum(len(c.token_ids) for c in steps))
        s.charge(role, len(s.context), [(c.token_ids, len(c.token_ids)) for c in steps], generated=True)
        s.empty_candidates += sum(is_empty(c, self.ctx.delimiter) for c in steps)

    def rewards(self, states: Sequence[ProblemState], candidates: Sequence[Sequence[Step]]) -> list[list[float]]:
        """The PRM's r of each candidate after the state's steps. An empty candidate gets method.empty_reward
        without a PRM call: the PRM would drop it and score the last accepted step again."""
        empty_reward = float(getattr(self.cfg, "empty_reward", 0.0))
        out = [[empty_reward] * len(cands) for cands in candidates]
        requests, where = [], []
        for k, (s, cands) in enumerate(zip(states, candidates)):
            for i, c in enumerate(cands):
                if not is_empty(c, self.ctx.delimiter):
                    requests.append(RewardRequest(problem=s.problem, steps=[*(r.text for r in s.steps), c.text]))
                    where.append((k, i))
        if requests:
            for (k, i), value in zip(where, self.engines.reward.reward(requests)):
                out[k][i] = value
        for s, cands in zip(states, candidates):
            self._count_rewarded(s, cands)
        return out

    def _count_rewarded(self, s: ProblemState, cands: Sequence[Step]) -> None:
        s.count_nocache("reward", context=sum(len(s.context) + len(c.token_ids) for c in cands))
        scored = [c for c in cands if not is_empty(c, self.ctx.delimiter)]
        if not scored:
            return
        prm = self.engines.reward
        steps = [r.text for r in s.steps]
        prefix = prm.input_length(s.problem, steps)
        if prefix is None:  # the PRM's own token counts are unknown: count the generators' tokens instead
            s.charge("reward", len(s.context), [(c.token_ids, len(c.token_ids)) for c in scored], generated=False)
        else:
            s.charge("reward", prefix, [(c.token_ids, prm.input_length(s.problem, [*steps, c.text]) - prefix)
                                        for c in scored], generated=False)

    def score(self, generator: Generator, states: Sequence[ProblemState],
              candidates: Sequence[Sequence[Step]]) -> list[list[float]]:
        contexts = [s.context for s, cands in zip(states, candidates) for _ in cands]
        conts = [c.token_ids for cands in candidates for c in cands]
        if not conts:
            return [[] for _ in states]
        flat = iter(generator.score(contexts, conts))
        out = [[next(flat) for _ in cands] for cands in candidates]
        for s, cands in zip(states, candidates):
            s.count_nocache(generator.role, context=sum(len(s.context) + len(c.token_ids) for c in cands))
            s.charge(generator.role, len(s.context), [(c.token_ids, len(c.token_ids)) for c in cands],
                     generated=False)
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
        row = {"tokens": len(c.token_ids), "token_ids": list(c.token_ids), "logp": c.logprob}
        for key, values in columns.items():
            if values is not None:
                row[key] = float(values[i])
        rows.append(row)
    return rows
