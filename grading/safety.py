"""Time and memory limits for grading untrusted text: a persistent pool of worker processes.

math-verify's own timeout uses SIGALRM, which only works on the main thread of the main interpreter; it is
disabled (grading.equivalence passes ``parsing_timeout=None`` / ``timeout_seconds=None``) and the limit is
enforced here instead: every grading call runs in a worker process, whose task ends (with the process) once
it has used the limit in CPU time (lifetime.py); the caller gets ``Verdict(False, "timeout")`` and a replacement
worker starts in the background. The limit is CPU time so that the same answers get the same verdicts on an idle
and on a loaded machine; the caller only keeps a far wall-clock guard (lifetime.wall_guard) against a worker that
hangs without computing. No call waits for a killed worker to be reaped or for its replacement to start.

* Workers are started with the 'forkserver' method where available (the fork server preloads sympy and
  math-verify once, so a replacement worker is ready in milliseconds), else 'spawn'. Never plain 'fork': the
  caller may have threads (vLLM, tqdm, the grade_many thread pool).
* Each worker caps its address space (RLIMIT_AS, default 4 GiB, env GRADING_WORKER_MEMORY_MB) so that a
  hostile answer cannot exhaust the machine's memory; a MemoryError becomes ``Verdict(False, "error")``.
* The pool is thread-safe: any thread may call `WorkerPool.grade`; a worker serves one call at a time and a
  caller waits for an idle worker when all are busy. The time limit counts the worker's CPU time from the moment
  it receives the task (not the wait for a free one, nor a worker's start-up).
* Like every non-fork multiprocessing start method, this re-imports the caller's main script in each worker:
  scripts that grade must keep their top-level code under ``if __name__ == "__main__":`` (run.py, pytest and
  ``python -m grading`` do).
* A worker polices itself (lifetime.py): each task has its CPU-time limit (and the far wall-clock guard) inside
  the worker (a worker that ends itself there reads as ``Verdict(False, "timeout")``), and a worker exits when
  its run is gone (PR_SET_PDEATHSIG under the fork server, plus a watchdog thread on the run's pid), so killing
  a run (even with SIGKILL) leaves no worker, fork server or resource tracker behind.
* Only plain strings reach a worker (verdict.input_text): any other input is answered with a Verdict.
* Nothing untrusted is parsed in the calling process: the worker first reports the extracted answer and the
  normalised reference (fast, linear-time code), then the verdict; on a timeout the caller still knows them.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from grading import lifetime, mathverify
from grading.graders import local_grader
from grading.verdict import MAX_ANSWER_CHARS, MAX_TEXT_CHARS, Unusable, Verdict, grade_local, input_text

__all__ = ["WorkerPool", "get_pool", "close_pool", "default_workers"]

STARTUP_TIMEOUT = 180.0
_PRELOAD = ["grading.verdict", "grading.equivalence", "grading.extract", "grading.normalize", "grading.safe_sympy",
            "sympy", "math_verify", "latex2sympy2_extended"]


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _memory_limit_bytes() -> int | None:
    mb = os.environ.get("GRADING_WORKER_MEMORY_MB", "4096")
    try:
        v = int(mb)
    except ValueError:
        return None
    return v * 2**20 if v > 0 else None


def _worker_main(conn, memory_limit: int | None, run_pid: int | None = None,
                 pdeathsig: bool = False) -> None:  # pragma: no cover - runs in the worker process
    lifetime.watch_parent(run_pid, pdeathsig=pdeathsig)  # first: end with the run, whatever happens next
    lifetime.task_limits()
    if memory_limit:
        try:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            cap = memory_limit if hard == resource.RLIM_INFINITY else min(memory_limit, hard)
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        except (ImportError, ValueError, OSError):
            pass
    mathverify.load()  # import math-verify now, not during the first timed call
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        text, ref, *rest = msg
        limit = rest[0] if rest else None  # this task's own limit (lifetime.limit_for), enforced in here
        grader = rest[1] if len(rest) > 1 else None  # a grading.graders name (None: ours)
        try:
            local = grade_local if grader is None else local_grader(grader)
            with lifetime.LimitedTask(limit):
                v = local(text, ref, on_extracted=lambda e, r: conn.send(("prep", e, r)))
            conn.send(("ok", v.correct, v.rule, v.extracted, v.reference))
        except BaseException as e:  # noqa: BLE001 - MemoryError, RecursionError, anything: report, keep serving
            try:
                conn.send(("error", type(e).__name__))
            except BaseException:  # noqa: BLE001
                return


class _Worker:
    def __init__(self, ctx, memory_limit: int | None, pdeathsig: bool | None = None):
        parent, child = ctx.Pipe(duplex=True)
        # PDEATHSIG fires when the thread that started the process ends: safe under the fork server (its main
        # thread forks), or when the caller starts workers from a thread that lives as long as the process
        if pdeathsig is None:
            pdeathsig = ctx.get_start_method() == "forkserver"
        self.proc = ctx.Process(target=_worker_main, args=(child, memory_limit, os.getpid(), pdeathsig),
                                daemon=True, name="grading-worker")
        self.proc.start()
        child.close()
        self.conn = parent
        self.ready = False

    def wait_ready(self, timeout: float) -> bool:
        if self.ready:
            return True
        try:
            if self.conn.poll(timeout):
                self.ready = self.conn.recv() == ("ready",)
        except (EOFError, OSError):
            self.ready = False
        return self.ready

    def ended_by_own_limit(self) -> bool:
        """Whether the worker process ended itself at its task limit (lifetime.LimitedTask)."""
        try:
            self.proc.join(1.0)
            return self.proc.exitcode in lifetime.KILLED_BY_LIMIT
        except (OSError, ValueError, AssertionError):
            return False

    def kill(self) -> None:
        """SIGKILL, without waiting: the process is reaped by a background thread (a join here could hold the
        grading call for seconds on a loaded machine)."""
        try:
            self.proc.kill()
        except (OSError, ValueError, AssertionError, AttributeError):
            pass
        try:
            self.conn.close()
        except OSError:
            pass
        threading.Thread(target=_reap, args=(self.proc,), name="grading-reaper", daemon=True).start()


def _reap(proc) -> None:
    try:
        proc.join(60)
    except (OSError, ValueError, AssertionError):
        pass


class WorkerPool:
    """A fixed set of grading worker processes (grows with `ensure_size`, never shrinks)."""

    def __init__(self, size: int | None = None, *, start_method: str | None = None,
                 memory_limit: int | None = -1):
        method = start_method or os.environ.get("GRADING_START_METHOD") or (
            "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        self._ctx = mp.get_context(method)
        if method == "forkserver":
            self._ctx.set_forkserver_preload(_PRELOAD)
        self._memory_limit = _memory_limit_bytes() if memory_limit == -1 else memory_limit
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._starting = 0  # replacements being started in the background
        self._start_failed: BaseException | None = None
        self._closed = False
        # Workers are started from this one long-lived thread: a spawned worker's PR_SET_PDEATHSIG refers to
        # the thread that started it, which must not be a short-lived grade_many thread (lifetime.py).
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grading-starter")
        self.ensure_size(size or default_workers())

    @property
    def size(self) -> int:
        return len(self._all) + self._starting

    def ensure_size(self, n: int) -> None:
        # Workers start outside the lock: the starter thread may be running a background replacement, which
        # needs the lock to hand its worker over.
        while True:
            with self._cond:
                if len(self._all) + self._starting >= n:
                    return
                self._starting += 1
            w = None
            try:
                w = self._new_worker()
            finally:
                with self._cond:
                    self._starting -= 1
                    if w is not None:
                        self._all.add(w)
                        self._idle.append(w)
                    self._cond.notify_all()

    def _new_worker(self) -> _Worker:
        try:
            return self._starter.submit(_Worker, self._ctx, self._memory_limit, True).result()
        except RuntimeError:  # the starter thread is gone (interpreter shutdown): start one from here
            return _Worker(self._ctx, self._memory_limit)

    def _replace(self, w: _Worker) -> _Worker:
        """A worker that failed to start: kill it and start another now (the caller needs one to grade)."""
        w.kill()
        nw = self._new_worker()
        with self._cond:
            self._all.discard(w)
            self._all.add(nw)
        return nw

    def _discard(self, w: _Worker) -> None:
        """Kill `w` (timed out, crashed, or in doubt) and start its replacement in the background: the grading
        call returns now; the next call takes the replacement once it is idle."""
        w.kill()
        with self._cond:
            self._all.discard(w)
            self._starting += 1
        try:
            self._starter.submit(self._start_replacement)
        except RuntimeError:  # the starter is shut down (pool closing, interpreter exit)
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()

    def _start_replacement(self) -> None:
        nw, err = None, None
        for _ in range(2):
            try:
                nw = _Worker(self._ctx, self._memory_limit, True)
                break
            except Exception as e:  # noqa: BLE001 - reported to the next caller (_acquire)
                err = e
        with self._cond:
            self._starting -= 1
            if nw is None:
                self._start_failed = err
            elif self._closed:
                nw.kill()
            else:
                self._all.add(nw)
                self._idle.append(nw)
            self._cond.notify_all()

    def _acquire(self) -> _Worker:
        with self._cond:
            while not self._idle:
                if self._closed:
                    raise RuntimeError("grading worker pool is closed")
                if not self._all and not self._starting:
                    raise RuntimeError(f"no grading worker could be started ({self._start_failed!r})")
                self._cond.wait()
            if self._closed:
                raise RuntimeError("grading worker pool is closed")
            for i, w in enumerate(self._idle):
                if w.ready:
                    return self._idle.pop(i)
            return self._idle.pop()

    def _release(self, w: _Worker) -> None:
        with self._cond:
            if self._closed:
                w.kill()
                return
            self._idle.append(w)
            self._cond.notify()

    def grade(self, generated_text, reference_answer, *, timeout: float | None = 5.0,
              grader: str | None = None) -> Verdict:
        """Grade in a worker process; an answer whose grading uses more than `timeout` seconds of CPU time gives
        Verdict(False, "timeout") (lifetime.check_timeout says which values are accepted; ValueError otherwise).
        `grader`: a name of grading.graders (None: ours)."""
        timeout = lifetime.check_timeout(timeout)
        # Only plain strings cross to the worker (anything else might not pickle, or run code when converted
        # there); an input that is not text is answered by the worker as Verdict(False, rule), see input_text.
        text, why = input_text(generated_text, MAX_TEXT_CHARS)
        ref, ref_why = input_text(reference_answer, MAX_ANSWER_CHARS, reference=True)
        if ref_why:
            return Verdict(False, ref_why, None, "")
        if why:
            text = Unusable(why)
        elif len(text) > MAX_TEXT_CHARS:
            text = text[: MAX_TEXT_CHARS + 1]  # the worker refuses it; no need to ship megabytes
        if len(ref) > MAX_ANSWER_CHARS:
            ref = ref[: MAX_ANSWER_CHARS + 1]
        w = self._acquire()
        extracted, norm_ref = None, ""
        try:
            for attempt in range(2):
                if w.wait_ready(STARTUP_TIMEOUT):
                    break
                w = self._replace(w)
            else:
                raise RuntimeError(
                    "grading worker process failed to start. Workers are started with multiprocessing's "
                    f"{self._ctx.get_start_method()!r} method, which re-imports the main script: guard a script's "
                    "top-level code with `if __name__ == \"__main__\":`.")
            try:
                w.conn.send((text, ref, lifetime.limit_for(timeout)) if grader is None
                            else (text, ref, lifetime.limit_for(timeout), grader))
                # Normally the worker ends the task at its CPU limit (its pipe then reads EOF, below); this wall-
                # clock deadline only guards against a worker that hangs without computing: at the deadline a
                # worker whose CPU time grew since the last look gets another window (under load it computes
                # slowly but its own CPU limit will end it), one that did not is ended.
                guard = lifetime.wall_guard(timeout)
                deadline = None if guard is None else time.monotonic() + guard + lifetime.LIMIT_GRACE
                cpu_seen = lifetime.cpu_seconds(w.proc.pid)
                while True:
                    remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                    if not w.conn.poll(remaining):
                        cpu_now = lifetime.cpu_seconds(w.proc.pid)
                        if cpu_now is not None and cpu_seen is not None and cpu_now > cpu_seen:
                            cpu_seen, deadline = cpu_now, time.monotonic() + guard
                            continue
                        self._discard(w)
                        w = None
                        return Verdict(False, "timeout", extracted, norm_ref)
                    msg = w.conn.recv()
                    if msg[0] == "prep":
                        extracted, norm_ref = msg[1], msg[2]
                        continue
                    if msg[0] == "ok":
                        return Verdict(bool(msg[1]), msg[2], msg[3], msg[4])
                    # "error": the worker survived an exception (MemoryError...); a fresh one is safer
                    self._discard(w)
                    w = None
                    return Verdict(False, "error", extracted, norm_ref)
            except (EOFError, OSError, BrokenPipeError):
                # the worker died: at its own task limit (a "timeout"), or a crash, an OOM kill ("error")
                rule = "timeout" if w.ended_by_own_limit() else "error"
                self._discard(w)
                w = None
                return Verdict(False, rule, extracted, norm_ref)
            except Exception:  # noqa: BLE001 - e.g. a garbled message: grade() answers with a Verdict, always
                self._discard(w)
                w = None
                return Verdict(False, "error", extracted, norm_ref)
        finally:
            if w is not None:
                self._release(w)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            workers = list(self._all)
            self._idle.clear()
            self._all.clear()
            self._cond.notify_all()
        for w in workers:
            try:
                if w.ready:
                    w.conn.send(None)
            except (OSError, ValueError):
                pass
            w.kill()
        self._starter.shutdown(wait=False)


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def get_pool(min_size: int | None = None) -> WorkerPool:
    """The process-wide pool, started on first use (and grown to `min_size` workers)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._closed:
            _POOL = WorkerPool(max(min_size or 0, default_workers()))
        elif min_size and _POOL.size < min_size:
            _POOL.ensure_size(min_size)
        return _POOL


def close_pool() -> None:
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None


atexit.register(close_pool)
