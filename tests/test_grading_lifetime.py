"""A grading worker never outlives its run, and ends a task that runs too long by itself (grading/lifetime.py).

The power tower \\boxed{9^{9^{9^{9}}}} keeps a worker's main thread in one C call (a huge integer power) for
many minutes: no Python code runs in that process meanwhile, so only kernel-enforced mechanisms can stop it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from grading import lifetime
from grading.safety import WorkerPool, _Worker

REPO = Path(__file__).resolve().parents[1]
TOWER = "so \\boxed{9^{9^{9^{9}}}}"

linux_only = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")

RUN_SCRIPT = """
import os, sys
from grading import grade
from grading.safety import get_pool
if __name__ == "__main__":
    assert grade("\\\\boxed{1}", "1")  # start the pool (and the fork server, the resource tracker)
    print("pids", *[w.proc.pid for w in get_pool()._all], flush=True)
    print("grading", flush=True)
    grade(sys.argv[1], "1", timeout=600)  # a caller deadline far beyond the test: only the lifeline can act
    print("returned", flush=True)
"""


def _tagged(tag: str) -> list[int]:
    """Processes whose environment carries the tag: the run and everything it started (the fork server and
    resource tracker are exec'd with the run's environment; workers are forked from the fork server)."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            env = (p / "environ").read_bytes()
            state = next((ln for ln in (p / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if f"GRADING_TEST_TAG={tag}".encode() in env.split(b"\0") and "Z" not in state.split()[1:2]:
            found.append(int(p.name))
    return found


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
@linux_only
@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_killing_the_run_leaves_no_grading_process(tmp_path, start_method):
    tag = uuid.uuid4().hex
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT)
    env = dict(os.environ, GRADING_TEST_TAG=tag, GRADING_START_METHOD=start_method,
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.Popen([sys.executable, str(script), TOWER], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 240
        while "grading" not in lines and time.monotonic() < deadline:
            line = run.stdout.readline()
            if not line:
                break
            lines.append(line.split()[0] if line.split() else "")
            if line.startswith("pids"):
                workers = [int(x) for x in line.split()[1:]]
        assert "grading" in lines, f"the run did not start grading: {lines}"
        # wait until a worker is really computing the tower (burning CPU), then kill the run without warning
        busy = None
        t0 = time.monotonic()
        while busy is None and time.monotonic() - t0 < 60:
            time.sleep(1.0)
            busy = next((w for w in workers if Path(f"/proc/{w}").exists() and _cpu_seconds(w) > 0.5), None)
        assert busy is not None, "no worker started computing"
        before = _tagged(tag)
        assert run.pid in before and busy in before and len(before) >= 4, before  # run, fork server, tracker, worker
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        t_kill = time.monotonic()
        left = _tagged(tag)
        while left and time.monotonic() - t_kill < 10:
            time.sleep(0.2)
            left = _tagged(tag)
        details = {p: Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")[:120] for p in left
                   if Path(f"/proc/{p}").exists()}
        assert not left, f"still running 10 s after the run was killed: {details}"
    finally:
        if run.poll() is None:
            run.kill()
        for p in _tagged(tag):  # only our own tagged processes, should the test have failed
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


def test_a_task_ends_at_its_own_limit_without_the_caller():
    """The worker ends a task past its limit by itself: here no caller deadline kills it."""
    import multiprocessing as mp

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    w = _Worker(mp.get_context(method), None)
    try:
        assert w.wait_ready(120)
        t = time.monotonic()
        w.conn.send((TOWER, "1", 1.0))  # a 1 s limit inside the worker
        w.proc.join(20)
        assert w.proc.exitcode is not None, "the worker kept computing past its own limit"
        assert w.proc.exitcode in lifetime.KILLED_BY_LIMIT, w.proc.exitcode
        assert time.monotonic() - t < 15
    finally:
        w.kill()


def test_own_limit_is_reported_as_timeout(monkeypatch):
    """A worker that ended itself at its limit gives Verdict(False, "timeout"), and the pool recovers."""
    monkeypatch.setattr(lifetime, "limit_for", lambda timeout: 0.5)  # the worker's limit before the caller's
    pool = WorkerPool(1)
    try:
        t = time.monotonic()
        v = pool.grade(TOWER, "1", timeout=60)
        assert v.rule == "timeout" and not v, v
        assert time.monotonic() - t < 30
        assert pool.grade("\\boxed{2}", "2")
    finally:
        pool.close()


def test_limited_task_restores_limits():
    """Between tasks the worker runs without a timer and with its CPU limit as before."""
    resource = pytest.importorskip("resource")
    before = resource.getrlimit(resource.RLIMIT_CPU)
    with lifetime.LimitedTask(50.0):
        soft, _ = resource.getrlimit(resource.RLIMIT_CPU)
        assert soft != resource.RLIM_INFINITY and soft <= time.process_time() + 53
        assert 49 < signal.getitimer(signal.ITIMER_PROF)[0] <= 50.1  # the limit: CPU time (rounded to ticks)
        # no wall-clock timer in the worker: a computing task on a loaded node must reach its CPU limit
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
    assert resource.getrlimit(resource.RLIMIT_CPU) == before
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0 and signal.getitimer(signal.ITIMER_PROF)[0] == 0
    assert lifetime.limit_for(None) is None and lifetime.limit_for(5) == 5.0


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_watchdog_notices_the_end_of_a_process(monkeypatch, pidfd):
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
        monkeypatch.setattr(lifetime, "_POLL_SECONDS", 0.05)
    elif not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd_open here")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        done = threading.Event()
        threading.Thread(target=lambda: (lifetime._wait_for_exit(proc.pid), done.set()), daemon=True).start()
        assert not done.wait(0.5), "returned while the process was alive"
        proc.kill()
        proc.wait()
        assert done.wait(5), "did not notice the process ended"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_timed_out_call_does_not_wait_for_the_replacement_worker(monkeypatch):
    """The replacement of a killed worker starts in the background: here it cannot start until the call that
    timed out has returned (a call that waited for it would deadlock and fail below)."""
    import grading.safety as safety

    returned = threading.Event()
    real_worker = safety._Worker
    starts = []

    def gated_worker(*args, **kwargs):
        starts.append(returned.wait(60))  # True: the grading call returned before this start went ahead
        return real_worker(*args, **kwargs)

    pool = WorkerPool(1)
    try:
        monkeypatch.setattr(safety, "_Worker", gated_worker)
        v = pool.grade(TOWER, "1", timeout=0.5)
        # the replacement waits at the gate; growing the pool meanwhile must not deadlock with it
        grow = threading.Thread(target=pool.ensure_size, args=(2,), daemon=True)
        grow.start()
        while pool._starting < 2 and grow.is_alive():
            time.sleep(0.01)
        returned.set()
        grow.join(120)
        assert not grow.is_alive(), "growing the pool deadlocked with a background replacement"
        assert v.rule == "timeout" and not v, v
        assert pool.grade("\\boxed{2}", "2")  # served by the replacement once it is up
        assert starts == [True, True] and pool.size == 2, (starts, pool.size)
    finally:
        returned.set()
        pool.close()


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 0, -1, 1e7, "5", True])
def test_a_timeout_that_means_nothing_is_refused(bad):
    """inf / nan / 1e7 used to grade every answer 'error', 0 and -1 every answer 'timeout'."""
    import grading

    with pytest.raises(ValueError, match="timeout=.*finite number of seconds in \\(0, 600\\]"):
        grading.grade("The answer is \\boxed{1}", "1", timeout=bad)
    with pytest.raises(ValueError, match="timeout="):
        grading.grade_many([("\\boxed{1}", "1")], timeout=bad)
    assert grading.grade("The answer is \\boxed{1}", "1", timeout=lifetime.MAX_TIMEOUT)


@pytest.mark.slow
@linux_only
def test_guard_ends_a_worker_that_stops_computing(monkeypatch):
    """The caller's wall-clock guard ends a worker whose CPU time stops growing (here: SIGSTOP), and only then;
    the pool recovers with a fresh worker."""
    monkeypatch.setattr(lifetime, "WALL_FACTOR", 1.0)
    monkeypatch.setattr(lifetime, "WALL_SLACK", 1.0)  # a 2 s window for a 1 s limit
    pool = WorkerPool(1)
    try:
        assert pool.grade("\\boxed{2}", "2")
        (w,) = list(pool._all)
        out = {}
        th = threading.Thread(target=lambda: out.setdefault("v", pool.grade(TOWER, "1", timeout=1.0)))
        th.start()
        time.sleep(0.3)
        os.kill(w.proc.pid, signal.SIGSTOP)  # waits without computing, forever
        th.join(120)
        assert not th.is_alive(), "a stopped worker was waited for forever"
        assert out["v"].rule == "timeout" and not out["v"], out
        assert pool.grade("\\boxed{5}", "5", timeout=5.0)
    finally:
        pool.close()


@linux_only
def test_guard_spares_a_worker_that_computes(monkeypatch):
    """A worker still computing when a guard window ends gets another window: with windows far shorter than the
    CPU limit, a computing task still ends at its CPU limit (graded "timeout" by its own limit), never
    by the clock."""
    monkeypatch.setattr(lifetime, "WALL_FACTOR", 0.0)
    # windows of 1 s against a 2 s CPU limit (a window must see a clock tick of CPU time: 10 ms, so a worker
    # that gets 1/30 of a core, at load 60 on 2 cores, still shows growth)
    monkeypatch.setattr(lifetime, "WALL_SLACK", 1.0)
    pool = WorkerPool(1)
    try:
        assert pool.grade("\\boxed{2}", "2")
        (w,) = list(pool._all)
        v = pool.grade(TOWER, "1", timeout=2.0)
        assert v.rule == "timeout"
        w.proc.join(30)
        assert w.proc.exitcode in lifetime.KILLED_BY_LIMIT, w.proc.exitcode  # its own CPU limit, not SIGKILL
    finally:
        pool.close()
