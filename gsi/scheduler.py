"""The step loop: every unfinished problem of the run advances one step per round, all of them together.

Each round takes up to `batch_size` unfinished problems, in order; the method makes one engine call per role
for the whole batch; finished problems leave and the next ones join, so engines see large batches while each
problem stops at its own pace. (The reference code loops over problems one at a time.)
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from gsi.methods.base import Method, StepContext
from gsi.state import STOP_CONTEXT, ProblemState


def run_steps(states: Iterable[ProblemState], method: Method, ctx: StepContext, *, batch_size: int,
              on_finish: Callable[[ProblemState, float], None], on_round: Callable[[list], None] | None = None) -> None:
    if batch_size < 1:  # an empty batch would make no progress, forever
        raise ValueError(f"batch_size={batch_size}: must be >= 1 (problems advanced together per round)")
    pending = list(states)
    started: dict[int, float] = {}
    while pending:
        batch = pending[:batch_size]
        before = [_progress(s) for s in batch]
        now = time.perf_counter()
        for s in batch:
            started.setdefault(s.index, now)
            if ctx.max_tokens(len(s.context)) < 1:
                s.done, s.stop_reason = True, STOP_CONTEXT
        live = [s for s in batch if not s.done]
        if live:
            method.step(live)
        if on_round:
            on_round(live)
        now = time.perf_counter()
        for s in batch:
            if s.done:
                on_finish(s, now - started.pop(s.index))
        if [_progress(s) for s in batch] == before:
            name = getattr(method, "name", type(method).__name__)
            raise RuntimeError(f"method {name} made no progress in a round: none of its {len(batch)} "
                               "problems gained a step, a token or a stop (a method must advance every live problem "
                               "by one step or finish it); stopping instead of looping forever")
        pending = [s for s in pending if not s.done]


def _progress(s: ProblemState) -> tuple:
    """What a round must change for at least one problem: finished, a step more, or tokens spent (response-level
    methods advance private tracks and count their tokens)."""
    return s.done, len(s.steps), len(s.context), repr(s.tokens)
