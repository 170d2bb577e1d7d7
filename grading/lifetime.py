"""A grading worker's own limits: it ends its task when the task runs too long, and itself when its run is gone.

The pool (safety.py) kills a worker that misses the caller's deadline. That needs a live caller: if the run is
killed (SIGKILL, OOM killer, a cancelled SLURM job) while a worker grades `\\boxed{9^{9^{9^{9}}}}`, nothing
would stop it. So the worker polices itself, with mechanisms that act even while its main thread sits in one
long C call holding the GIL (a big-integer power), where no Python code runs:

* Per task (`LimitedTask`): the limit is CPU time, not wall-clock time, so that a verdict does not depend on
  how loaded the machine is (a busy node must not grade a slow-to-verify correct answer wrong where an idle one
  grades it right). A CPU-time timer (setitimer ITIMER_PROF, user + system time of the process, sub-second
  resolution; SIGPROF left at its default action, which terminates the process in the kernel) ends the task at
  its limit, RLIMIT_CPU (SIGXCPU, whole seconds) a second later as a backstop. Wall-clock time never ends a
  task that is computing: the caller keeps a guard (`wall_guard`: many times the limit) that ends a worker only
  when its CPU time did not grow over a whole guard window (a task that waits without computing); under any
  load a computing worker reaches its CPU limit first (`cpu_seconds`). Core dumps are off (RLIMIT_CORE 0) so
  such an end leaves no file behind.
* Parent death (`watch_parent`): on Linux, prctl(PR_SET_PDEATHSIG, SIGKILL): the kernel kills the worker when
  the process that forked it dies. With the 'forkserver' start method that parent is the fork server, which
  exits when the run's end of its "alive" pipe closes; CPython hands every forkserver child a copy of that pipe
  (so that it could start processes of its own), which would keep the fork server, and so the worker, alive
  for as long as the worker computes: the worker closes its copy. With 'spawn' the parent is the thread that
  started the worker, which may be a short-lived grade_many thread, so no PDEATHSIG there.
* A watchdog thread waits for the run's process to end (a pidfd where the OS has one, else polling its pid)
  and then exits the worker: the portable fallback, and the guard for a fork server kept alive by someone
  else's processes. It cannot run while a C call holds the GIL; the per-task limits bound that case.

The resource tracker exits by itself once every process holding its pipe (run, fork server, workers) is gone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["watch_parent", "task_limits", "LimitedTask", "KILLED_BY_LIMIT", "limit_for", "wall_guard",
           "check_timeout", "MAX_TIMEOUT", "cpu_seconds"]

_LIMIT_SIGNALS = ("SIGPROF", "SIGXCPU", "SIGALRM")
# exit codes (negative signal numbers, as multiprocessing reports them) of a worker ended by its own task limit
KILLED_BY_LIMIT = tuple(-getattr(signal, n) for n in _LIMIT_SIGNALS if hasattr(signal, n))

LIMIT_GRACE = 1.0  # seconds; the caller's wall-clock guard counts from its send, the worker's from the receipt
# The wall-clock guard window: WALL_FACTOR x the CPU limit + WALL_SLACK seconds. The caller ends a worker only
# when its CPU time did not grow over a whole window, so on a loaded node (load 30 on 2 cores: a worker gets a
# fifteenth of a core) a slow but computing answer still reaches its CPU limit, and wall-clock time never decides a
# verdict (a fixed 10x guard did, at load 33: tests/test_grading_load.py).
WALL_FACTOR, WALL_SLACK = 10.0, 10.0
# The largest per-answer limit accepted: an answer no grader settles in 10 CPU minutes is not worth the wait, and
# the wall-clock guard (10x) must stay a number of seconds a run can afford.
MAX_TIMEOUT = 600.0


def check_timeout(timeout) -> float | None:
    """`timeout` as float seconds of CPU time per answer, or None (no limit); ValueError saying what is accepted
    otherwise (inf, nan, <= 0, over MAX_TIMEOUT, not a number)."""
    if timeout is None:
        return None
    import math
    import numbers

    t = float(timeout) if isinstance(timeout, numbers.Real) and not isinstance(timeout, bool) else math.nan
    if not (math.isfinite(t) and 0 < t <= MAX_TIMEOUT):
        raise ValueError(f"timeout={timeout!r}: must be a finite number of seconds in (0, {MAX_TIMEOUT:g}] (the CPU "
                         "time a grading worker may spend on one answer; past it the answer is graded 'timeout')")
    return t


def wall_guard(limit: float | None) -> float | None:
    """The wall-clock guard window of a task with a CPU-time `limit`: many times the limit (see WALL_FACTOR)."""
    return None if limit is None else WALL_FACTOR * limit + WALL_SLACK


def cpu_seconds(pid: int) -> float | None:
    """The CPU time (user + system) process `pid` has used, or None where it cannot be read (gone, no psutil)."""
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except Exception:  # noqa: BLE001 - gone, permission, no psutil: the caller then treats the window as idle
        return None
_PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 0.5


def limit_for(timeout: float | None) -> float | None:
    """The CPU-time limit the worker enforces for a task the caller gives `timeout` seconds: the timeout itself
    (the worker is the only one that can measure its own CPU time exactly; the caller keeps a wall-clock guard)."""
    return check_timeout(timeout)


def _set_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError, TypeError):
        return False


def _close_forkserver_alive_fd() -> None:
    """Drop this process's copy of the fork server's "alive" pipe (see the module doc). Private CPython state,
    present since 3.4; absent or None outside a forkserver child."""
    try:
        from multiprocessing import forkserver

        fs = getattr(forkserver, "_forkserver", None)
        fd = getattr(fs, "_forkserver_alive_fd", None)
        if fd is not None:
            fs._forkserver_alive_fd = None
            os.close(fd)
    except (ImportError, OSError, AttributeError):
        pass


def _wait_for_exit(pid: int) -> None:
    """Block until process `pid` has ended."""
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        except OSError:  # an old kernel, or not allowed: poll below
            pidfd = None
    if pidfd is not None:
        import select

        try:
            select.select([pidfd], [], [])  # readable once the process has exited; no pid-reuse race
        finally:
            os.close(pidfd)
        return
    import time

    ppid = os.getppid()
    while True:
        if ppid == pid and os.getppid() != ppid:  # reparented: our parent (the run) is gone
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:  # exists (someone else's process now, at worst: the pid was reused)
            pass
        time.sleep(_POLL_SECONDS)


def watch_parent(run_pid: int | None, *, pdeathsig: bool) -> None:
    """Make this worker process end when its run (`run_pid`) ends; call first thing in the worker."""
    _close_forkserver_alive_fd()
    if pdeathsig:
        _set_pdeathsig()
    if run_pid is None:
        return

    def watchdog():
        _wait_for_exit(run_pid)
        os._exit(1)  # the run is gone: nobody will read this worker's answer

    threading.Thread(target=watchdog, name="grading-watchdog", daemon=True).start()


def _resource():
    try:
        import resource

        return resource
    except ImportError:  # not on POSIX: the caller's deadline and the watchdog remain
        return None


class LimitedTask:
    """Context manager: the current task ends the process once it has used `limit` seconds of CPU time (the
    caller's guard ends a worker that stops computing; see the module doc)."""

    def __init__(self, limit: float | None):
        self.limit = limit
        self._cpu_soft = None

    def __enter__(self):
        if self.limit is None:
            return self
        if hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_PROF, max(self.limit, 0.001))
        res = _resource()
        if res is not None:
            try:
                soft, hard = res.getrlimit(res.RLIMIT_CPU)
                used = res.getrusage(res.RUSAGE_SELF)
                cap = int(used.ru_utime + used.ru_stime + self.limit) + 2  # whole seconds: after ITIMER_PROF
                if hard != res.RLIM_INFINITY:
                    cap = min(cap, hard)
                res.setrlimit(res.RLIMIT_CPU, (cap, hard))
                self._cpu_soft = soft
            except (ValueError, OSError):
                self._cpu_soft = None
        return self

    def __exit__(self, *exc):
        if self.limit is None:
            return False
        if hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_PROF, 0)
        res = _resource()
        if res is not None and self._cpu_soft is not None:
            try:
                res.setrlimit(res.RLIMIT_CPU, (self._cpu_soft, res.getrlimit(res.RLIMIT_CPU)[1]))
            except (ValueError, OSError):
                pass
        return False


def task_limits() -> None:
    """Once per worker: the signals of the per-task limits keep their default action (terminate), and a
    terminated worker writes no core file."""
    for name in _LIMIT_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_DFL)
    res = _resource()
    if res is not None:
        try:
            res.setrlimit(res.RLIMIT_CORE, (0, res.getrlimit(res.RLIMIT_CORE)[1]))
        except (ValueError, OSError):
            pass
