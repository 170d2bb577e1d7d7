"""What a method plugin is: a per-problem program that advances one problem by one step, and the helpers it
awaits (sample, rewards, score), which charge the problem's token ledger.

A method sees problem states and engines only (no files, no W&B, no Hydra). It never batches: the runtime
(gsi/runtime/scheduler.py) merges the calls of many problems into one engine call per role.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gsi.runtime import seeding
from gsi.engines.base import Engines, GenerateRequest, Generator, RewardRequest, Step
from gsi.engines.rewards import split_steps
from gsi.runtime.calls import Generate, Reward, Score, gather
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
    """A method is a per-problem program: `async def step(self, s)` advances problem `s` by one step (or finishes
    it), awaiting engine calls through the helpers below; the runtime (gsi/runtime/scheduler.py) drives many
    problems' programs at once and batches their calls per role. A step may touch only its own problem (and its
    `scratch`); a method whose rule spans problems sets `needs_lockstep` and keeps that rule in `end_round`."""

    name: str
    has_acceptance = True  # whether steps carry an accept/reject decision
    # True: the method keeps state shared across the problems of a round (RSD's run-wide patience), so the runtime
    # runs it in lock-step rounds whatever scheduler.mode says and calls `end_round` after each round.
    needs_lockstep = False

    def __init__(self, cfg, engines: Engines, ctx: StepContext):
        self.cfg = cfg
        self.engines = engines
        self.ctx = ctx

    @property
    def policy(self) -> Generator:
        """The generator of a single-policy method (baseline, best-of-n, the PRM searches): `method.policy`."""
        return self.engines.small if self.cfg.policy == "small" else self.engines.big

    @classmethod
    def check_run(cls, cfg, *, n_problems: int, batch_size: int) -> None:
        """Refuse, before any engine starts, settings this method cannot honour for a run of `n_problems` problems
        advanced `batch_size` at a time (raise ValueError naming the key)."""

    @abstractmethod
    async def step(self, s: ProblemState) -> None:
        """Advance problem `s` by one step (or finish it)."""

    def end_round(self, states: list[ProblemState]) -> None:
        """Lock-step only (`needs_lockstep`): called after every problem of a round (`states`) took its step."""

    # Engine calls for one problem, each charging the problem's ledger (gsi.runtime.state) itself. `s` is whatever
    # ProblemState the calls are made for: its id and step index seed the requests, its marks and counts are charged.

    async def sample(self, role: str, s: ProblemState, n: int, *, greedy: bool = False,
                     context: Sequence[int] | None = None, track: int = 0) -> list[Step]:
        """n samples of `role` after `context` (default s.context), seeded by (seed, s.id, s.step_index, role,
        track) exactly as StepContext.request derives it."""
        context = s.context if context is None else context
        steps = await Generate(role, self.ctx.request(s, role, n, context=context, track=track), greedy)
        self.count_generated(s, role, steps, context=context)
        return steps

    def prompt_lengths(self, s: ProblemState, *roles: str) -> dict[str, int]:
        """The problem's prompt length in each role's own tokens (the PRM renders it its own way)."""
        out = {}
        for role in roles:
            n = self.engines.reward.input_length(s.problem, []) if role == "reward" else None
            out[role] = len(s.prompt_ids) if n is None else n
        return out

    def count_generated(self, s: ProblemState, role: str, steps: Sequence[Step],
                        context: Sequence[int] | None = None) -> None:
        """One request of n samples at `context` (default s.context): the n samples share the context."""
        n_context = len(s.context if context is None else context)
        s.count_nocache(role, context=n_context, generated=sum(len(c.token_ids) for c in steps))
        s.charge(role, n_context, [(c.token_ids, len(c.token_ids)) for c in steps], generated=True)
        s.empty_candidates += sum(is_empty(c, self.ctx.delimiter) for c in steps)

    async def rewards(self, s: ProblemState, candidates: Sequence[Step], *, steps: Sequence[str] | None = None,
                      context: Sequence[int] | None = None) -> list[float]:
        """The PRM's r of each candidate after `steps` (the texts of the previous steps, default s.steps; `context`
        their token ids, default s.context, for the accounting). An empty candidate gets method.empty_reward
        without a PRM call: the PRM would drop it and score the last accepted step again."""
        steps = [r.text for r in s.steps] if steps is None else list(steps)
        context = s.context if context is None else context
        out = [float(getattr(self.cfg, "empty_reward", 0.0))] * len(candidates)
        where = [i for i, c in enumerate(candidates) if not is_empty(c, self.ctx.delimiter)]
        values = await gather(*(Reward(RewardRequest(problem=s.problem, steps=[*steps, candidates[i].text]))
                                for i in where))
        for i, value in zip(where, values):
            out[i] = value
        self._count_rewarded(s, candidates, steps, len(context))
        return out

    def _count_rewarded(self, s: ProblemState, cands: Sequence[Step], steps: list[str], n_context: int) -> None:
        s.count_nocache("reward", context=sum(n_context + len(c.token_ids) for c in cands))
        scored = [c for c in cands if not is_empty(c, self.ctx.delimiter)]
        if not scored:
            return
        prm = self.engines.reward
        prefix = prm.input_length(s.problem, steps)
        if prefix is None:  # the PRM's own token counts are unknown: count the generators' tokens instead
            s.charge("reward", n_context, [(c.token_ids, len(c.token_ids)) for c in scored], generated=False)
        else:
            s.charge("reward", prefix, [(c.token_ids, prm.input_length(s.problem, [*steps, c.text]) - prefix)
                                        for c in scored], generated=False)

    async def score(self, role: str, s: ProblemState, candidates: Sequence[Step],
                    context: Sequence[int] | None = None) -> list[float]:
        """Teacher forcing: `role`'s log-prob of each candidate after `context` (default s.context)."""
        context = s.context if context is None else context
        out = await gather(*(Score(role, tuple(context), c.token_ids) for c in candidates))
        s.count_nocache(role, context=sum(len(context) + len(c.token_ids) for c in candidates))
        s.charge(role, len(context), [(c.token_ids, len(c.token_ids)) for c in candidates], generated=False)
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
