"""The runtime (gsi/runtime/scheduler.py, gsi/runtime/calls.py): every method gives the same records under every
policy; the async policy merges several problems' requests into one engine call while another role works; an
engine error stops the run. Exact table engines, a recording executor (no sleeps, no wall-clock asserts)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from gsi.config.schema import (BaselineConfig, BeamConfig, BoNConfig, DVTSConfig, GSIConfig, PFConfig,
                               RSDConfig)
from gsi.engines.table import table_engines
from gsi.methods import build_method
from gsi.methods.base import StepContext
from gsi.runtime.calls import Call, Generate, gather, run_batch
from gsi.runtime.scheduler import Executor, step_all
from gsi.runtime.state import ProblemState

from table_world import PI_B, PI_S, R, TEXTS  # noqa: E402 - the shared exact tables

METHODS = {
    "gsi": GSIConfig(n=4, beta=2.0, threshold=0.6),
    "gsi_no_fallback": GSIConfig(n=4, beta=2.0, threshold=0.6, fallback=False),
    "rsd": RSDConfig(n=1, beta=2.0, delta=0.6),
    "rsd_bon": RSDConfig(n=3, beta=2.0, delta=0.6, n_big=2),
    "rsd_greedy": RSDConfig(n=1, beta=2.0, delta=0.6, greedy=True),
    # run-wide patience: the runtime runs it in lock-step rounds whatever the mode (else the cut would differ)
    "rsd_patience": RSDConfig(n=1, beta=2.0, delta=0.8, patience=3),
    "bon_small": BoNConfig(n=4, beta=2.0, policy="small"),
    "bon_big_hard": BoNConfig(n=4, beta=2.0, policy="big", selection="hard"),
    "bon_response": BoNConfig(n=3, beta=2.0, level="response", selection="weighted_majority"),
    "baseline": BaselineConfig(n=1, beta=2.0, policy="big"),
    "baseline_greedy": BaselineConfig(n=1, beta=2.0, policy="small", greedy=True),
    "beam": BeamConfig(n=4, width=2, beta=2.0),
    "beam_lookahead": BeamConfig(n=4, width=2, beta=2.0, lookahead=1),
    "dvts": DVTSConfig(n=4, width=2, beta=2.0),
    "pf": PFConfig(n=4, beta=2.0),
}


def states(problems):
    """Prompts of 1 to 9 tokens: with WINDOW, the longer ones run out of room after fewer steps (uneven lengths
    even for greedy methods)."""
    prompts = [[0] * (1 + 2 * (i % 5)) for i in range(problems)]
    return [ProblemState(index=i, id=f"p{i}", problem="x", reference="1", prompt_ids=p, context=list(p))
            for i, p in enumerate(prompts)]


WINDOW = 12


class RecordingExecutor(Executor):
    """Runs each call at once but hands results back in submission order (one at a time), recording for every
    call its role, size and the roles busy when it was issued: a deterministic stand-in for the thread pool."""

    def __init__(self, engines):
        self.engines, self.inflight, self.log = engines, [], []

    def submit(self, role, kind, calls):
        self.log.append({"role": role, "kind": kind, "size": len(calls),
                         "busy": {r for r, *_ in self.inflight}})
        try:
            self.inflight.append((role, len(self.log), None, run_batch(self.engines, role, kind, calls), None))
        except Exception as exc:  # noqa: BLE001 - handed back like the thread executor does
            self.inflight.append((role, len(self.log), None, None, exc))
        return len(self.log)

    def wait_any(self):
        return self.inflight.pop(0)[1:]


class ContinuousExecutor(RecordingExecutor):
    """Continuous batching, deterministically: every role takes calls while others are in flight, and the
    requests come back one at a time, newest call first and each call's requests last to first (the order an
    iteration-level engine may end them in: short requests of a late call before long ones of an early call)."""

    def concurrent(self, role):
        return True

    def wait_any(self):
        role, ticket, _, results, exc = self.inflight[-1]
        if exc is not None or len(results) == 1:
            self.inflight.pop()
            return ticket, None if exc else [0], results, exc
        self.inflight[-1] = (role, ticket, None, results[:-1], None)
        return ticket, [len(results) - 1], results[-1:], None


def recorders(cls):
    """An executor factory for `run_table` that keeps each executor's call log, in order of creation."""
    logs = []

    def make(engines):
        ex = cls(engines)
        logs.append(ex.log)
        return ex

    return logs, make


def run_table(method_cfg, *, mode, problems=40, batch_size=12, max_in_flight=None, engines=None, executor=None):
    engines = engines or table_engines(PI_S, PI_B, R, eos_step=0, texts=TEXTS)
    ctx = StepContext(seed=7, max_step_tokens=8, max_steps=6, window=WINDOW, trace=True)
    method = build_method(OmegaConf.structured(method_cfg), engines, ctx)
    todo, finished = states(problems), []
    step_all(todo, method, ctx, batch_size=batch_size, mode=mode, max_in_flight=max_in_flight,
             on_finish=lambda s, t: finished.append(s.index), executor=executor and executor(engines))
    assert sorted(finished) == list(range(problems))  # every problem finishes once
    return todo, finished, engines


def record(s: ProblemState):
    return (s.response_text, s.stop_reason, [(st.text, st.token_ids, st.source, st.accepted, st.reward,
                                              st.chosen_draft_tokens, st.drafted_tokens) for st in s.steps],
            s.tokens, s.tokens_nocache, s.empty_candidates, s.trace, s.scratch.get("pool"))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_policy_gives_lockstep_results(name):
    ref, order, ref_engines = run_table(METHODS[name], mode="lockstep")
    assert len({len(s.steps) for s in ref}) > 2  # uneven problem lengths
    orders = []
    for mode, in_flight, executor in (("async", 5, None), ("async", 40, None), ("cohorts", 24, None),
                                      ("async", 40, ContinuousExecutor)):
        got, got_order, engines = run_table(METHODS[name], mode=mode, max_in_flight=in_flight, executor=executor)
        orders.append(got_order)
        assert [record(s) for s in got] == [record(s) for s in ref], (mode, in_flight)
        for role in ("small", "big", "reward"):  # the engines did the same work, in other batches
            a, b = ref_engines.roles()[role].stats, engines.roles()[role].stats
            assert (a.requests, a.prompt_tokens, a.generated_tokens) == (b.requests, b.prompt_tokens,
                                                                         b.generated_tokens), (mode, role)
    if name != "rsd_patience":  # (which runs lock-step whatever the mode)
        assert orders[0] != order  # problems finished out of lock-step order: the async policy was in effect


def test_async_merges_several_problems_into_one_call_while_another_role_works():
    log, recording = recorders(RecordingExecutor)
    run_table(METHODS["gsi"], mode="async", problems=24, batch_size=8, executor=recording)
    run_table(METHODS["gsi"], mode="lockstep", problems=24, batch_size=8, executor=recording)
    async_log, lock_log = log
    # pi_S drafts for several problems at once while pi_B works for others (and the reverse)
    assert any(c["role"] == "small" and c["size"] > 1 and "big" in c["busy"] for c in async_log)
    assert any(c["role"] == "big" and c["kind"] == "generate" and c["size"] > 1 and "small" in c["busy"]
               for c in async_log)
    # lock-step: a role waits for the others, except the PRM and pi_B scoring the same drafts at once
    assert not any(c["busy"] - {"big", "reward"} or (c["busy"] and c["role"] == "small") for c in lock_log)
    assert any(c["role"] == "reward" and c["busy"] == {"big"} for c in lock_log)
    # never more than one call in flight per role
    assert all(c["role"] not in c["busy"] for c in async_log + lock_log)


def test_lockstep_makes_one_call_per_role_and_phase():
    ex = []
    run_table(METHODS["baseline"], mode="lockstep", problems=12, batch_size=12,
              executor=lambda e: ex.append(RecordingExecutor(e)) or ex[-1])
    steps = max(len(s.steps) for s in run_table(METHODS["baseline"], mode="lockstep", problems=12,
                                                batch_size=12)[0])
    assert len(ex[0].log) == steps and ex[0].log[0]["size"] == 12


@pytest.mark.parametrize("mode", ["async", "lockstep", "cohorts"])
def test_an_engine_error_stops_the_run_and_names_the_role(mode):
    from gsi.engines.base import Engines
    from gsi.engines.table import TableGenerator, TableReward
    from gsi.runtime.stopping import failed_role
    from gsi.runtime.scheduler import ThreadExecutor

    class Dying(TableGenerator):
        def generate(self, requests, **kw):
            if self.stats.calls >= 2:
                raise RuntimeError("engine died")
            return super().generate(requests, **kw)

    engines = Engines(small=TableGenerator("small", PI_S, eos_step=0, texts=TEXTS),
                      big=Dying("big", PI_B, eos_step=0, texts=TEXTS), reward=TableReward(R, texts=TEXTS))
    finished = []
    ctx = StepContext(seed=7, max_step_tokens=8, max_steps=6, window=10_000)
    method = build_method(OmegaConf.structured(METHODS["gsi"]), engines, ctx)
    todo = states(60)
    with pytest.raises(RuntimeError, match="engine died") as info:
        step_all(todo, method, ctx, batch_size=12, mode=mode, max_in_flight=24,
                 on_finish=lambda s, t: finished.append(s), executor=ThreadExecutor(engines))
    assert failed_role(info.value, engines) == "big"  # found through the engine thread's traceback
    assert len(finished) < 60 and all(s.done for s in finished)  # stopped, saving what finished


def test_gather_runs_one_problems_calls_together_and_nests():
    """gather yields the union of its parts' calls to the driver as one list and hands each part its results."""

    async def two(a, b):
        return await gather(Generate("small", a), Generate("big", b))

    async def program():
        x, (y, z) = await gather(Generate("reward", "r"), two("s", "b"))
        return x, y, z

    coro = program()
    wanted = coro.send(None)
    assert [c.role for c in wanted] == ["reward", "small", "big"] and all(isinstance(c, Call) for c in wanted)
    with pytest.raises(StopIteration) as done:
        coro.send([f"{c.role}:{c.request}" for c in wanted])
    assert done.value.value == ("reward:r", "small:s", "big:b")


def test_a_step_that_awaits_something_else_is_refused():
    import asyncio

    from gsi.methods.base import Method

    class Sleepy(Method):
        name = "sleepy"

        async def step(self, s):
            await asyncio.sleep(0)

    engines = table_engines(PI_S, PI_B, R, eos_step=0, texts=TEXTS)
    ctx = StepContext(seed=7, max_step_tokens=8, max_steps=6, window=10_000)
    with pytest.raises(TypeError, match="sleepy.*gsi.runtime.calls"):
        step_all(states(2), Sleepy(None, engines, ctx), ctx, batch_size=2, on_finish=lambda s, t: None)


@pytest.mark.parametrize("key,kw", [("batch_size", dict(batch_size=0)),
                                    ("scheduler.max_in_flight", dict(batch_size=4, max_in_flight=0))])
def test_nothing_in_flight_is_refused(key, kw):
    engines = table_engines(PI_S, PI_B, R, eos_step=0, texts=TEXTS)
    ctx = StepContext(seed=7, max_step_tokens=8, max_steps=6, window=10_000)
    method = build_method(OmegaConf.structured(METHODS["gsi"]), engines, ctx)
    with pytest.raises(ValueError, match=key):
        step_all(states(2), method, ctx, mode="async", on_finish=lambda s, t: None, **kw)


def test_max_in_flight_is_typed_and_validated(make_cfg):
    from gsi.config.validate import problems

    cfg = make_cfg("model=tiny", "hardware=cpu", "scheduler.mode=async", "scheduler.max_in_flight=3")
    assert cfg.scheduler.mode == "async" and cfg.scheduler.max_in_flight == 3
    assert make_cfg("model=tiny", "hardware=cpu").scheduler.max_in_flight is None  # batch_size
    bad = make_cfg("model=tiny", "hardware=cpu", "scheduler.max_in_flight=0")
    assert any("scheduler.max_in_flight" in e for e in problems(bad))
    with pytest.raises(Exception, match="scheduler.mode"):
        make_cfg("model=tiny", "hardware=cpu", "scheduler.mode=overlap")


@pytest.mark.parametrize("mode", ["async", "lockstep"])
def test_a_stop_request_lets_the_steps_under_way_finish_then_stops(mode):
    """run.py's stop guard raises when a step would start after SIGINT/SIGTERM: no step starts any more, the
    steps under way end (their finished problems are reported), nothing is left in flight, then it is raised."""

    class Stop(Exception):
        pass

    engines = table_engines(PI_S, PI_B, R, eos_step=0, texts=TEXTS)
    ctx = StepContext(seed=7, max_step_tokens=8, max_steps=6, window=WINDOW)
    method = build_method(OmegaConf.structured(METHODS["gsi"]), engines, ctx)
    started, steps_done = [], []

    class Guarded:
        def __getattr__(self, name):
            return getattr(method, name)

        def step(self, s):
            if len(started) == 30:
                raise Stop
            started.append((s.index, s.step_index))
            return method.step(s)

    todo, finished, ex = states(40), [], RecordingExecutor(engines)
    with pytest.raises(Stop):
        step_all(todo, Guarded(), ctx, batch_size=8, mode=mode, on_finish=lambda s, t: finished.append(s),
                 on_round=lambda live: steps_done.extend((s.index, s.step_index - 1) for s in live),
                 executor=ex)
    assert not ex.inflight and finished and all(s.done for s in finished)
    assert sorted(steps_done) == sorted(started)  # every step that started, ended


@pytest.mark.parametrize("name", ["beam_lookahead", "beam", "dvts"])
def test_lockstep_scores_each_round_in_one_prm_call(name):
    """Lock-step holds the PRM while some problems still roll out: candidates that finish at once are scored with
    the others' rollouts, one PRM call per round (lookahead took two: 41 calls where 21 were made before)."""
    (log, recording), rounds = recorders(RecordingExecutor), []
    engines = table_engines(PI_S, PI_B, R, eos_step=0, texts=TEXTS)
    ctx = StepContext(seed=7, max_step_tokens=8, max_steps=6, window=WINDOW)
    method = build_method(OmegaConf.structured(METHODS[name]), engines, ctx)
    step_all(states(24), method, ctx, batch_size=24, mode="lockstep", on_finish=lambda s, t: None,
             on_round=rounds.append, executor=recording(engines))
    prm_calls = [c for c in log[0] if c["role"] == "reward"]
    assert len(rounds) > 2 and len(prm_calls) == len(rounds)


def test_continuous_batching_submits_to_a_busy_role_and_hands_back_requests_one_by_one():
    log, recording = recorders(ContinuousExecutor)
    run_table(METHODS["gsi"], mode="async", problems=24, batch_size=8, executor=recording)
    assert any(c["role"] in c["busy"] for c in log[0])  # a role's next call joined its running one
    run_table(METHODS["gsi"], mode="lockstep", problems=24, batch_size=8, executor=recording)
    assert not any(c["role"] in c["busy"] for c in log[1])  # lock-step: one call per role and phase


def test_threads_send_concurrent_calls_to_roles_that_take_them():
    """Roles whose engines take concurrent calls (the remote servers) get a call per batch of arrivals, in
    threads, while their running calls go on; the records are lock-step's."""
    import threading

    from gsi.runtime.scheduler import ThreadExecutor

    ref = run_table(METHODS["gsi"], mode="lockstep")[0]
    engines = table_engines(PI_S, PI_B, R, eos_step=0, texts=TEXTS)
    gate, overlapped = threading.Barrier(2, timeout=0.2), []
    small_generate = engines.small.generate

    def generate(requests, **kw):  # two calls of pi_S meet here at least once if they overlap
        try:
            gate.wait()
            overlapped.append(True)
        except threading.BrokenBarrierError:
            gate.reset()
        return small_generate(requests, **kw)

    engines.small.generate = generate
    for role in engines.roles().values():
        role.concurrent_calls = True
    got = run_table(METHODS["gsi"], mode="async", max_in_flight=40, engines=engines,
                    executor=lambda e: ThreadExecutor(e))[0]
    assert [record(s) for s in got] == [record(s) for s in ref]
    assert overlapped  # two pi_S calls ran at once


def test_busy_time_counts_overlapping_calls_once():
    import time

    from gsi.engines.base import RoleStats

    stats = RoleStats()
    start = time.perf_counter()
    with stats.timed(1):
        time.sleep(0.01)
        inner = time.perf_counter()
        with stats.timed(2):  # a concurrent call within the first
            time.sleep(0.01)
        inner = time.perf_counter() - inner
        busy = stats.busy_s
    outer = time.perf_counter() - start
    assert busy == 0.0  # the inner call's end: the role is still busy
    assert inner + 0.01 <= stats.busy_s <= outer and (stats.calls, stats.requests) == (2, 3)


def shared_engines(calls: int = 1):
    """Table engines whose three roles share one device (as on the CPU or gpu1), `calls` engine calls at once."""
    engines = table_engines(PI_S, PI_B, R, eos_step=0, texts=TEXTS)
    engines.shared_devices, engines.device_calls = dict.fromkeys(("small", "big", "reward"), "cpu"), calls
    return engines


@pytest.mark.parametrize("name", sorted(METHODS))
def test_roles_on_one_device_take_turns_merging_their_requests_into_lockstep_sized_calls(name):
    """One call at a time across roles on a shared device; while it runs, every role's requests wait and go out
    merged, oldest step first: with every problem in flight, async makes lock-step's calls, one at a time, and
    every policy keeps lock-step's records."""
    (log, recording) = recorders(RecordingExecutor)
    ref = run_table(METHODS[name], mode="lockstep", batch_size=40, executor=recording)[0]
    for mode, in_flight in (("async", 40), ("lockstep", None), ("async", 5)):
        got = run_table(METHODS[name], mode=mode, batch_size=40, max_in_flight=in_flight, engines=shared_engines(),
                        executor=recording)[0]
        assert [record(s) for s in got] == [record(s) for s in ref], mode
        assert not any(c["busy"] for c in log[-1]), mode  # never two calls at once
    own, shared_async, shared_lockstep = log[:3]
    calls = lambda log: [(c["role"], c["kind"], c["size"]) for c in log]  # noqa: E731
    assert sorted(calls(shared_async)) == sorted(calls(own)) == sorted(calls(shared_lockstep))


def test_a_shared_device_runs_device_calls_at_once():
    log, recording = recorders(RecordingExecutor)
    run_table(METHODS["gsi"], mode="async", batch_size=40, max_in_flight=40, engines=shared_engines(2),
              executor=recording)
    assert max(len(c["busy"]) for c in log[0]) == 1  # two calls at once, never three


@pytest.mark.parametrize("placement,remote,shared", [
    ("cpu", {}, ["small", "big", "reward"]),
    ("gpu1", {}, ["small", "big", "reward"]),
    ("gpu3", {}, []),  # a GPU per role
    ("cpu", {"reward": "http://prm:8000"}, ["small", "big"]),  # a server's device is its own
    ("gpu1", {"big": "http://b:8000", "reward": "http://r:8000"}, []),  # one role left shares with no one
])
def test_roles_share_a_device_by_placement(make_cfg, placement, remote, shared):
    from gsi.engines.placement import shared_devices

    cfg = make_cfg("model=tiny", f"hardware={placement}",
                   *[f"+hardware.remote.{r}={u}" for r, u in remote.items()])
    assert sorted(shared_devices(cfg.hardware)) == sorted(shared)
    assert len(set(shared_devices(cfg.hardware).values())) <= 1


def test_device_calls_below_1_is_refused_naming_the_key(make_cfg):
    from gsi.engines.placement import check_hardware

    with pytest.raises(ValueError, match="hardware.device_calls=0"):  # the runtime, before anything waits forever
        run_table(METHODS["gsi"], mode="async", engines=shared_engines(0))

    errors = []
    check_hardware(make_cfg("model=tiny", "hardware=cpu", "hardware.device_calls=0").hardware, errors,
                   check_devices=False)
    assert any("hardware.device_calls=0" in e for e in errors)
    errors = []
    check_hardware(make_cfg("model=tiny", "hardware=cpu").hardware, errors, check_devices=False)
    assert not errors
