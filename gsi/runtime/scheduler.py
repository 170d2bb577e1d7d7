"""The runtime: drives many problems' programs (a method's `async def step(s)`) and batches their engine calls.

Each problem in flight loops `while not done: check room; await method.step(s)`. The driver runs every runnable
program until it waits on calls (gsi/runtime/calls.py); then it submits, per role, the waiting calls (of one
kind) as one engine call through an `Executor`: the thread executor runs each call in a thread of its own. When
requests return, their programs resume. So roles on devices of their own work at once (pi_S drafts for problem A
while pi_B scores for problem B) and each call is as large as the waiting work. Everything but the engine calls
runs in the calling thread: `on_finish` and `on_round` need no lock.

Roles that share a device (every in-process role on the CPU, or on one GPU under gpu1: the engines'
`shared_devices`, gsi.engines.placement) run at most `hardware.device_calls` (1) engine calls at once on it, under
every policy: concurrent calls there add no compute, they only slow each other and come out smaller. While the
device works, every role's requests wait, and the next call is the waiting group (a role and batch key) that holds
the problem whose current step started first, then the largest: problems that fell behind (GSI's fallbacks to
pi_B) finish their step and join the others' next call, so calls stay as large as lock-step's
(docs/benchmarks.md, "On the CPU").

Policies (`scheduler.mode`, default `async` on every hardware), one driver:
- `async`: up to `max_in_flight` problems (default batch_size), each advancing as soon as its own calls return; a
  finished problem's slot is refilled from the queue at once. A role's waiting calls from all problems are merged
  into its next call when its engine is idle; a role whose engine takes concurrent calls (the remote roles: the
  vLLM server batches continuously; `Executor.concurrent`) gets them at once instead, joining its running decode,
  and an executor may hand a call's requests back one by one as each ends (bench/simgpu.py's iteration-level
  engines do): continuous batching across problems.
- `lockstep`: a step barrier over `batch_size` problems: every problem of the round takes its step before any
  takes the next; finished problems leave and the next ones join at the round boundary. A phase's calls go out
  together when none is in flight, one call per role and phase (a role that problems still rolling out could
  bring requests to waits for them: `_hold`). A method with state shared across problems (`needs_lockstep`:
  RSD's run-wide patience) always runs this way; its `end_round(states)` ends each round.
- `cohorts`: max(1, max_in_flight // batch_size) cohorts of batch_size problems, each with its own barrier, and
  one cohort's calls per engine call (the former `overlap` scheduler, kept as a benchmark row).

Results do not depend on the policy: every request is seeded by (seed, problem, step, role, track) and an
engine's results do not depend on the batch it is in, so a problem's steps are the same (only the order in which
problems finish, and timings, differ). tests/test_runtime.py checks this for every method.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import Counter, deque
from typing import Callable, Hashable, Iterable

from gsi.methods.base import Method, StepContext
from gsi.runtime.calls import Call, run_batch
from gsi.runtime.state import ROLES, STOP_CONTEXT, ProblemState

ASYNC, LOCKSTEP, COHORTS = "async", "lockstep", "cohorts"
MODES = (ASYNC, LOCKSTEP, COHORTS)


class Executor:
    """Runs engine calls on `engines` (gsi.engines.base.Engines) for the driver. `submit` hands it one call (a
    batch of requests of one batch key) and returns a ticket; `wait_any` blocks until some of the calls' requests
    end and says which.

    A whole-call executor (`concurrent(role)` False, the default) gets at most one call per role at a time (the
    driver sees to it) and hands back each call whole. A role for which `concurrent(role)` is True takes calls
    while others run (continuous batching: vLLM's AsyncLLM, the HTTP server, bench/simgpu.py's iteration-level
    engine), and the executor may hand back a call's requests in parts, each when it ends; under `async` the
    driver then submits a role's waiting requests at once instead of waiting for its engine to be idle."""

    engines = None

    def concurrent(self, role: str) -> bool:
        return False

    def device(self, role: str) -> Hashable | None:
        """The device `role` shares with other roles (None: a device of its own): on it, at most `device_calls()`
        engine calls run at once, whichever roles they are for. The engines say (gsi.engines.placement's
        `shared_devices`, set by the registry)."""
        return (getattr(self.engines, "shared_devices", None) or {}).get(role)

    def device_calls(self) -> int:
        return int(getattr(self.engines, "device_calls", 1))

    def submit(self, role: str, kind: str, calls: list[Call]) -> Hashable:
        raise NotImplementedError

    def wait_any(self) -> tuple[Hashable, list[int] | None, list | None, BaseException | None]:
        """(ticket, positions, results, None): the results of those positions of that call (positions None: all
        of it, in order); or (ticket, None, None, the exception)."""
        raise NotImplementedError


class ThreadExecutor(Executor):
    """Each call in a thread of its own; the caller waits with a timeout so that the main thread still runs its
    signal handlers (Ctrl-C, SIGTERM) meanwhile. A role whose engine sets `concurrent_calls` (the remote roles:
    the vLLM server batches concurrent HTTP requests continuously) takes several calls at once."""

    def __init__(self, engines):
        self.engines = engines
        self.finished: queue.Queue = queue.Queue()
        self.tickets = itertools.count()

    def concurrent(self, role: str) -> bool:
        roles = self.engines.roles() if self.engines is not None else {}
        return bool(getattr(roles.get(role), "concurrent_calls", False))

    def submit(self, role: str, kind: str, calls: list[Call]) -> int:
        ticket = next(self.tickets)

        def work():
            try:
                self.finished.put((ticket, None, run_batch(self.engines, role, kind, calls), None))
            except BaseException as exc:  # noqa: BLE001 - handed to the driver, which raises it
                self.finished.put((ticket, None, None, exc))

        threading.Thread(target=work, name=f"gsi-{role}", daemon=True).start()
        return ticket

    def wait_any(self):
        while True:
            try:
                return self.finished.get(timeout=0.2)
            except queue.Empty:
                pass


class _Program:
    """One problem in flight: its current step's coroutine and the calls it waits for."""

    def __init__(self, state: ProblemState, group: "_Group", seq: int):
        self.state, self.group, self.seq = state, group, seq
        self.coro = None
        self.answers: list = []
        self.missing = 0
        self.roles: set[str] = set()  # the roles it waits on
        self.step_at = 0  # when its current step started (the driver's count of started steps)
        self.as_list = False


class _Group:
    """Problems that share a step barrier (one problem under `async`)."""

    def __init__(self, gid: int, size: int):
        self.gid, self.size = gid, size
        self.members: list[_Program] = []
        self.running = 0
        self.before: list[tuple] = []
        self.live: list[ProblemState] = []


class _Driver:
    def __init__(self, method: Method, ctx: StepContext, *, group_size: int, groups: int, merge: bool,
                 phased: bool, concurrent: bool, executor: Executor, on_finish, on_round):
        self.method, self.ctx, self.executor = method, ctx, executor
        self.merge, self.on_finish, self.on_round = merge, on_finish, on_round
        self.phased, self.concurrent = phased, concurrent
        self.groups = [_Group(g, group_size) for g in range(groups)]
        self.queue: deque[ProblemState] = deque()
        self.started: dict[int, float] = {}
        self.ready: list[tuple[_Program, object]] = []
        self.waiting: dict[str, list[tuple[Call, _Program, int]]] = {r: [] for r in ROLES}
        self.busy: dict = {}  # ticket -> [role, its (call, program, position) entries, requests not yet back]
        self.in_flight: Counter = Counter()  # calls in flight per role
        self.on_device: Counter = Counter()  # calls in flight per device (None: the roles' own devices)
        self.steps = itertools.count()  # the order in which problems' steps start (`_next_on_device`)
        self.seq = 0
        # Set when starting a step raised (run.py's stop guard after SIGINT/SIGTERM): no step starts any more,
        # the steps under way finish (their finished problems are saved), then it is raised.
        self.stopping: Exception | None = None

    def run(self, states: Iterable[ProblemState]) -> None:
        self.queue.extend(states)
        try:
            for g in self.groups:
                self._start_round(g)
            while True:
                self._resume_ready()
                self._dispatch()
                if not self.busy:
                    if self.ready:
                        continue
                    break
                ticket, positions, results, exc = self.executor.wait_any()
                if exc is not None:
                    self._settle(ticket, None)
                    raise exc
                self._deliver(ticket, positions, results)
            if self.stopping is not None:
                raise self.stopping
            stuck = [p.state.id for g in self.groups for p in g.members]
            if stuck or self.queue:  # a program waits on nothing the driver knows of: a bug, never a silent end
                raise RuntimeError(f"the runtime stopped with problems unfinished: {stuck} in flight, "
                                   f"{len(self.queue)} queued")
        except KeyboardInterrupt:
            raise
        except BaseException:
            self._drain()
            raise
        finally:
            for g in self.groups:
                for p in g.members:
                    if p.coro is not None:
                        p.coro.close()

    # -- rounds ---------------------------------------------------------------------------------------------------
    def _start_round(self, g: _Group) -> None:
        """Refill the group from the queue (in order), stop problems whose next step would not fit, and start the
        others' steps (a round with no live problem ends at once, and the next one starts)."""
        while True:
            while len(g.members) < g.size and self.queue:
                g.members.append(_Program(self.queue.popleft(), g, self.seq))
                self.seq += 1
            if not g.members:
                return
            now = time.perf_counter()
            g.before = [_progress(p.state) for p in g.members]
            for p in g.members:
                s = p.state
                self.started.setdefault(s.index, now)
                if self.ctx.max_tokens(len(s.context)) < 1:
                    s.done, s.stop_reason = True, STOP_CONTEXT
            live = []
            for p in g.members:
                if p.state.done or self.stopping is not None:
                    continue
                try:
                    p.coro = self.method.step(p.state)
                    p.step_at = next(self.steps)
                except Exception as exc:  # noqa: BLE001 - a stop request (run.py's guard): raised once idle
                    self.stopping = exc
                    break
                live.append(p)
                self.ready.append((p, None))
            g.live, g.running = [p.state for p in live], len(live)
            if live or self.stopping is not None:
                return
            self._close_round(g)

    def _close_round(self, g: _Group) -> None:
        """Every live problem of the round took its step: report, check progress, let finished problems leave."""
        end_round = getattr(self.method, "end_round", None)
        if end_round is not None:
            end_round(g.live)
        now = time.perf_counter()
        if self.on_round:
            self.on_round(g.live)
        for p in g.members:
            if p.state.done:
                self.on_finish(p.state, now - self.started.pop(p.state.index))
        if [_progress(p.state) for p in g.members] == g.before:
            name = getattr(self.method, "name", type(self.method).__name__)
            raise RuntimeError(f"method {name} made no progress in a round: none of its {len(g.members)} "
                               "problems gained a step, a token or a stop (a method must advance a live problem "
                               "by one step or finish it); stopping instead of looping forever")
        g.members = [p for p in g.members if not p.state.done]

    # -- programs -------------------------------------------------------------------------------------------------
    def _resume_ready(self) -> None:
        """Run every resumable program until it waits on calls or ends its step (in admission order, so that a
        batch lists its problems in order, as lock-step always did)."""
        while self.ready:
            batch, self.ready = sorted(self.ready, key=lambda pv: pv[0].seq), []
            for p, value in batch:
                self._advance(p, value)

    def _advance(self, p: _Program, value) -> None:
        try:
            wanted = p.coro.send(value)
        except StopIteration:
            p.coro = None
            p.group.running -= 1
            if p.group.running == 0:
                self._close_round(p.group)
                self._start_round(p.group)
            return
        p.as_list = isinstance(wanted, list)
        calls = wanted if p.as_list else [wanted]
        if not calls:
            self.ready.append((p, []))
            return
        p.answers, p.missing = [None] * len(calls), len(calls)
        p.roles = {getattr(call, "role", None) for call in calls}
        for k, call in enumerate(calls):
            if not isinstance(call, Call):
                raise TypeError(f"method {getattr(self.method, 'name', self.method)!r} awaited {call!r}: a step "
                                "may only await gsi.runtime.calls calls (or coroutines that do)")
            self.waiting[call.role].append((call, p, k))

    def _deliver(self, ticket, positions, results) -> None:
        entries = self.busy[ticket][1]
        at = range(len(entries)) if positions is None else positions
        if len(results) != len(at):
            raise RuntimeError(f"an engine returned {len(results)} results for {len(at)} requests")
        for i, value in zip(at, results):
            call, p, k = entries[i]
            p.answers[k] = value
            p.missing -= 1
            if p.missing == 0:
                p.roles = set()
                self.ready.append((p, p.answers if p.as_list else p.answers[0]))
        self._settle(ticket, len(at))

    def _settle(self, ticket, count: int | None) -> None:
        """`count` more of the call's requests are back (None: all of them, or it failed)."""
        entry = self.busy[ticket]
        entry[2] = 0 if count is None else entry[2] - count
        if entry[2] <= 0:
            del self.busy[ticket]
            self.in_flight[entry[0]] -= 1
            self.on_device[self.executor.device(entry[0])] -= 1

    # -- engine calls ---------------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Submit the waiting calls: per role, all of them that share a batch key (and, for cohorts, a cohort) in
        one call, when the role's engine is idle; under `async` with a role that takes concurrent calls
        (continuous batching), every waiting call at once. Lock-step submits a phase's calls together, when none
        is in flight, and holds back a role that some problems could still bring requests to (`_hold`). Roles
        that share a device run at most `device_calls` calls on it at once (`_next_on_device` picks them)."""
        if self.phased and self.busy:
            return
        roles = [r for r in ROLES if self.waiting[r]
                 and (not self.in_flight[r] or (self.concurrent and self.executor.concurrent(r)))]
        if self.phased:
            roles = self._hold(roles)
        shared = [r for r in roles if self.executor.device(r) is not None]
        for role in roles:
            if role in shared:
                continue
            while self.waiting[role]:
                self._submit(role, self._groups(role)[0])
                if not (self.concurrent and self.executor.concurrent(role)):
                    break
        while shared:
            picked = self._next_on_device(shared)
            if picked is None:
                break
            role, take = picked
            self._submit(role, take)
            if not (self.waiting[role] and self.concurrent and self.executor.concurrent(role)):
                shared.remove(role)

    def _groups(self, role: str) -> list[list[tuple[Call, _Program, int]]]:
        """The role's waiting calls by what can share one engine call (batch key; cohort unless merged), in the
        order of each group's oldest call."""
        groups: dict = {}
        for e in self.waiting[role]:
            groups.setdefault((e[0].batch_key, None if self.merge else e[1].group.gid), []).append(e)
        return list(groups.values())

    def _next_on_device(self, roles: list[str]):
        """The next call on a shared device with a free slot, as (role, its calls), or None. Oldest step first:
        the group holding the problem whose current step started earliest (so problems that fell behind, e.g.
        GSI's fallbacks to pi_B, finish their step and join the others' next call instead of trailing them in
        calls of their own), then the largest group, then pipeline order. While the device works, every role's
        requests wait and are merged into that role's next call: the calls stay as large as lock-step's."""
        limit = self.executor.device_calls()
        best = None
        for role in roles:
            if self.on_device[self.executor.device(role)] >= limit:
                continue
            for take in self._groups(role):
                rank = (min(p.step_at for _, p, _ in take), -len(take), ROLES.index(role))
                if best is None or rank < best[0]:
                    best = (rank, role, take)
        return None if best is None else best[1:]

    def _submit(self, role: str, take: list[tuple[Call, _Program, int]]) -> None:
        taken = {id(e[0]) for e in take}
        self.waiting[role] = [e for e in self.waiting[role] if id(e[0]) not in taken]
        ticket = self.executor.submit(role, take[0][0].kind, [c for c, _, _ in take])
        self.busy[ticket] = [role, take, len(take)]
        self.in_flight[role] += 1
        self.on_device[self.executor.device(role)] += 1

    def _hold(self, roles: list[str]) -> list[str]:
        """Lock-step: a role whose waiting problems wait on it alone is held while another role has requests from
        problems that do not wait on it, since those may still bring it requests: one call per role and phase
        (beam search's lookahead: candidates that finish at once are scored with the others' rollouts, not in a
        PRM call of their own). If that would hold every role, the first in pipeline order (pi_S, pi_B, the PRM)
        goes: a step scores what it generated."""
        go = []
        for r in roles:
            alone = all(p.roles == {r} for _, p, _ in self.waiting[r])
            others = any(r not in p.roles for o in roles if o != r for _, p, _ in self.waiting[o])
            if not (alone and others):
                go.append(r)
        return go or roles[:1]

    def _drain(self) -> None:
        """After a failure: let the calls in flight end (their engines stay usable), then the error is raised."""
        while self.busy:
            ticket, positions, results, exc = self.executor.wait_any()
            if ticket in self.busy:
                self._settle(ticket, None if exc is not None or positions is None else len(positions))


def step_all(states: Iterable[ProblemState], method: Method, ctx: StepContext, *, batch_size: int,
             mode: str = ASYNC, max_in_flight: int | None = None, on_finish: Callable[[ProblemState, float], None],
             on_round: Callable[[list], None] | None = None, executor: Executor | None = None) -> None:
    """The run's step loop by `scheduler.mode` (see the module docstring). `on_finish(state, seconds)` is called
    once per problem when it ends; `on_round(live)` after each round (a step of one problem under async)."""
    mode = str(getattr(mode, "value", mode))
    if mode not in MODES:
        raise ValueError(f"scheduler.mode={mode!r}: expected one of {', '.join(MODES)}")
    _check_at_least_1("batch_size", batch_size, "problems per lock-step round and engine call")
    in_flight = batch_size if max_in_flight is None else max_in_flight
    _check_at_least_1("scheduler.max_in_flight", in_flight, "problems stepped at once")
    if getattr(method, "needs_lockstep", False):
        mode = LOCKSTEP
    shape = {ASYNC: dict(group_size=1, groups=in_flight, merge=True, phased=False, concurrent=True),
             LOCKSTEP: dict(group_size=batch_size, groups=1, merge=True, phased=True, concurrent=False),
             COHORTS: dict(group_size=batch_size, groups=max(1, in_flight // batch_size), merge=False,
                           phased=False, concurrent=False)}[mode]
    executor = executor or ThreadExecutor(getattr(method, "engines", None))
    _check_at_least_1("hardware.device_calls", executor.device_calls(), "engine calls at once on a shared device")
    _Driver(method, ctx, executor=executor, on_finish=on_finish, on_round=on_round, **shape).run(states)


def run_steps(states: Iterable[ProblemState], method: Method, ctx: StepContext, *, batch_size: int,
              on_finish: Callable[[ProblemState, float], None], on_round: Callable[[list], None] | None = None
              ) -> None:
    """Lock-step rounds of `batch_size` problems (the reference policy)."""
    step_all(states, method, ctx, batch_size=batch_size, mode=LOCKSTEP, on_finish=on_finish, on_round=on_round)


def _check_at_least_1(key: str, value: int, what: str) -> None:
    if value < 1:  # nothing in flight would make no progress, forever
        raise ValueError(f"{key}={value}: must be >= 1 ({what})")


def _progress(s: ProblemState) -> tuple:
    """What a step must change for at least one problem of a round: finished, a step more, or tokens spent
    (response-level methods advance private tracks and count their tokens)."""
    return s.done, len(s.steps), len(s.context), repr(s.tokens)
