"""The step loop: every unfinished problem of the run advances one step per round.

Lock-step (`scheduler.mode=lockstep`): each round takes up to `batch_size` unfinished problems, in order; the
method makes one engine call per role for the whole batch; finished problems leave and the next ones join, so
engines see large batches while each problem stops at its own pace. (The reference code loops over problems one
at a time.) But within a round the roles take turns: while pi_S drafts, pi_B and the PRM idle.

Overlapped (`scheduler.mode=overlap`, the default): `scheduler.cohorts` cohorts of up to `batch_size` problems
each (so cohorts x batch_size problems in flight), each stepped by its own thread with the same loop. Each role engine serves one call at a time (its own
lock), so the cohorts fall out of phase by themselves: while cohort A is on pi_B, cohort B drafts on pi_S. The
method code is unchanged; every request is seeded by (seed, problem, step, role) and engine results do not depend
on batch composition, so a problem's steps are the same as under lock-step (only the order in which problems
finish, and timings, differ). A method whose `step` touches state shared between problems declares
`cohort_safe = False` and is refused here.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from contextlib import nullcontext
from typing import Callable, Iterable

from gsi.runtime.concurrency import run_concurrently
from gsi.methods.base import Method, StepContext
from gsi.runtime.state import STOP_CONTEXT, ProblemState

LOCKSTEP, OVERLAP = "lockstep", "overlap"


def run_steps(states: Iterable[ProblemState], method: Method, ctx: StepContext, *, batch_size: int,
              on_finish: Callable[[ProblemState, float], None], on_round: Callable[[list], None] | None = None) -> None:
    _check_batch_size(batch_size)
    pending = list(states)
    started: dict[int, float] = {}
    while pending:
        _round(pending[:batch_size], method, ctx, started, on_finish, on_round)
        pending = [s for s in pending if not s.done]


def run_steps_overlapped(states: Iterable[ProblemState], method: Method, ctx: StepContext, *, batch_size: int,
                         cohorts: int, on_finish: Callable[[ProblemState, float], None],
                         on_round: Callable[[list], None] | None = None) -> None:
    """`cohorts` threads of up to `batch_size` problems each (an engine call is as large as lock-step's: a decode
    call lasts as long as its longest sample, so smaller calls would cost the busiest role more; docs/benchmarks.md);
    a cohort refills from the shared queue, in order, as its problems finish. `on_finish` and `on_round` are
    called under one lock (they write results and progress). After a cohort fails (an engine error, a stop
    request) the others finish their current round and stop; then the first error is raised."""
    if not getattr(method, "cohort_safe", True):
        raise ValueError(f"method {getattr(method, 'name', method)!r} shares state between problems and cannot be "
                         "stepped in cohorts: use scheduler.mode=lockstep")
    _check_batch_size(batch_size)
    queue = deque(states)
    lock = threading.Lock()
    failed = threading.Event()

    def cohort() -> None:
        batch: list[ProblemState] = []
        started: dict[int, float] = {}
        try:
            while not failed.is_set():
                with lock:
                    while len(batch) < batch_size and queue:
                        batch.append(queue.popleft())
                if not batch:
                    return
                _round(batch, method, ctx, started, on_finish, on_round, report_lock=lock)
                batch = [s for s in batch if not s.done]
        except BaseException:
            failed.set()
            raise

    n = max(1, min(cohorts, math.ceil(len(queue) / batch_size)))
    run_concurrently([cohort] * n, name="gsi-cohort")


def _round(batch: list[ProblemState], method: Method, ctx: StepContext, started: dict[int, float],
           on_finish: Callable[[ProblemState, float], None], on_round: Callable[[list], None] | None,
           report_lock=None) -> None:
    """One round of `batch` (both schedulers): problems whose next step would not fit stop, the others advance one
    step; then the round is reported (under `report_lock`) and a round that changed nothing is refused."""
    before = [_progress(s) for s in batch]
    now = time.perf_counter()
    for s in batch:
        started.setdefault(s.index, now)
        if ctx.max_tokens(len(s.context)) < 1:
            s.done, s.stop_reason = True, STOP_CONTEXT
    live = [s for s in batch if not s.done]
    if live:
        method.step(live)
    now = time.perf_counter()
    with report_lock or nullcontext():
        if on_round:
            on_round(live)
        for s in batch:
            if s.done:
                on_finish(s, now - started.pop(s.index))
    if [_progress(s) for s in batch] == before:
        name = getattr(method, "name", type(method).__name__)
        raise RuntimeError(f"method {name} made no progress in a round: none of its {len(batch)} "
                           "problems gained a step, a token or a stop (a method must advance every live problem "
                           "by one step or finish it); stopping instead of looping forever")


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:  # an empty batch would make no progress, forever
        raise ValueError(f"batch_size={batch_size}: must be >= 1 (problems advanced together per round)")


def _progress(s: ProblemState) -> tuple:
    """What a round must change for at least one problem: finished, a step more, or tokens spent (response-level
    methods advance private tracks and count their tokens)."""
    return s.done, len(s.steps), len(s.context), repr(s.tokens)


def step_all(states: Iterable[ProblemState], method: Method, ctx: StepContext, *, batch_size: int,
             mode: str = OVERLAP, cohorts: int = 2, on_finish: Callable[[ProblemState, float], None],
             on_round: Callable[[list], None] | None = None) -> None:
    """The run's scheduler by `scheduler.mode`."""
    mode = str(getattr(mode, "value", mode))
    if mode == LOCKSTEP or cohorts <= 1:
        run_steps(states, method, ctx, batch_size=batch_size, on_finish=on_finish, on_round=on_round)
    elif mode == OVERLAP:
        run_steps_overlapped(states, method, ctx, batch_size=batch_size, cohorts=cohorts, on_finish=on_finish,
                             on_round=on_round)
    else:
        raise ValueError(f"scheduler.mode={mode!r}: expected {LOCKSTEP} or {OVERLAP}")
