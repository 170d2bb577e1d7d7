"""What a method's per-problem program awaits: engine calls for one problem, batched by the runtime.

A method's `async def step(self, s)` is a plain coroutine that the runtime (gsi/runtime/scheduler.py) drives with
`send()`; no asyncio loop. Awaiting a call yields it to the driver, which batches the waiting calls of many
problems per role into one engine call and sends the call's result back:

    steps = await Generate("small", request, greedy=False)      # list[Step], the request's n samples
    logp = await Score("big", context, continuation)            # float: teacher-forced log-prob
    r = await Reward(RewardRequest(problem, steps))             # float: the PRM's value of the last step
    r, lb = await gather(self.rewards(...), self.score(...))    # one problem's independent calls at once

The driver's protocol: a program yields a `Call` or a list of calls (what `gather` yields); it is resumed with
the call's result, or the list of results in order. An empty list is resumed at once with [].

`run_batch` is the one engine call of a batch of calls of one (role, kind, greedy): the thread executor and
bench/simgpu.py's virtual-time executor both call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from gsi.engines.base import GenerateRequest, RewardRequest

GENERATE, SCORE, REWARD = "generate", "score", "reward"


class Call:
    """One engine request of one problem; `await call` returns its result."""

    role: str
    kind: str

    @property
    def batch_key(self) -> tuple:
        """Calls with the same key can share one engine call."""
        return self.role, self.kind

    def __await__(self):
        result = yield self
        return result


@dataclass(eq=False)
class Generate(Call):
    role: str
    request: GenerateRequest
    greedy: bool = False
    kind = GENERATE

    @property
    def batch_key(self) -> tuple:
        return self.role, self.kind, self.greedy


@dataclass(eq=False)
class Score(Call):
    role: str
    context: Sequence[int]
    continuation: Sequence[int]
    kind = SCORE


@dataclass(eq=False)
class Reward(Call):
    request: RewardRequest
    role = "reward"
    kind = REWARD


class _Gather:
    def __init__(self, awaitables):
        self.awaitables = awaitables

    def __await__(self):
        results: list[Any] = [None] * len(self.awaitables)
        running = {}  # position -> (iterator, what it waits for: a Call, or a list of calls)
        for k, a in enumerate(self.awaitables):
            it = a.__await__()
            try:
                running[k] = (it, it.send(None))
            except StopIteration as stop:
                results[k] = stop.value
        while running:
            batch, spans = [], []
            for k, (it, wanted) in running.items():
                calls = wanted if isinstance(wanted, list) else [wanted]
                spans.append((k, len(batch), len(calls)))
                batch.extend(calls)
            answers = (yield batch) if batch else []
            for k, start, n in spans:
                it, wanted = running[k]
                got = answers[start:start + n] if isinstance(wanted, list) else answers[start]
                try:
                    running[k] = (it, it.send(got))
                except StopIteration as stop:
                    results[k] = stop.value
                    del running[k]
        return results


def gather(*awaitables) -> _Gather:
    """Run several awaitables (coroutines, calls) of ONE problem at once; their results in order. Each round, the
    calls all of them wait for go to the driver together (e.g. the PRM and pi_B scoring the same drafts)."""
    return _Gather(awaitables)


def run_batch(engines, role: str, kind: str, calls: Sequence[Call]) -> list:
    """The engine call for `calls` (all of one batch key): one result per call, in order."""
    engine = engines.roles()[role]
    if kind == GENERATE:
        return engine.generate([c.request for c in calls], greedy=calls[0].greedy)
    if kind == SCORE:
        return engine.score([c.context for c in calls], [c.continuation for c in calls])
    if kind == REWARD:
        return engine.reward([c.request for c in calls])
    raise ValueError(f"unknown call kind {kind!r}")
