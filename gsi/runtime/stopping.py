"""How a run stops early: a signal (Ctrl-C, SLURM's SIGTERM), an engine that fails, a full disk.

Each ends with a message that says what is saved and how to resume, and an exit status; the finished problems of
the round in flight are saved first where that is possible (a first signal lets the round finish)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from gsi.cluster.slurm import terminating
from gsi.rundir.results import parse_results

# The run's own logger: these messages are the run's (Hydra's run.log names it).
log = logging.getLogger("gsi.run")


@contextmanager
def disk_full_message(out: Path):
    """No space (or quota) left: say what is safe and what to do instead of a traceback. results.jsonl is fsynced
    per problem, so every complete line is saved; a half-written last line is dropped and redone on resume."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        path = out / "results.jsonl"
        try:
            saved = len(parse_results(path.read_bytes())[0])
        except OSError:
            saved = 0
        print(f"no space left on the disk of {out} ({exc.strerror}{': ' + str(exc.filename) if exc.filename else ''})"
              f": {saved} problems are saved in {path}. Free some space (or move the folder to a larger disk and "
              "point hydra.run.dir at it), then rerun the same command to resume", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


class StopRequested(Exception):
    """Raised between rounds once SIGINT/SIGTERM arrived: everything finished so far is saved."""


def under_submitit() -> bool:
    """submitit installs its own SIGTERM/SIGUSR2 handlers (preemption, requeue): leave SIGTERM to them."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR") or os.environ.get("SUBMITIT_FOLDER"))


class StopOnSignal:
    """SIGINT (Ctrl-C) and SIGTERM: let the current round finish (its finished problems are saved), then stop.
    A second signal stops at once (KeyboardInterrupt). Only in the main thread; under submitit SIGTERM is left
    to submitit's handler so that preemption and requeue keep working."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            sigs = [signal.SIGINT] + ([] if under_submitit() else [signal.SIGTERM])
            for sig in sigs:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s: finishing the current round, then stopping (send it again to stop now)",
                    signal.Signals(signum).name)
        self._watch_engines(signum)

    def _watch_engines(self, signum: int) -> None:
        """A Ctrl-C in a terminal (or SLURM's SIGTERM) reaches vLLM's engine processes too; they shut down and the
        engine call in flight would wait for them forever. If one of them ends, stop now (as a second signal)."""
        try:
            import psutil

            children = psutil.Process().children(recursive=True)
        except Exception:  # no psutil: no watch
            return
        engines = []
        for p in children:
            try:
                if "VLLM" in p.name() + " ".join(p.cmdline()):
                    engines.append(p)
            except psutil.Error:  # gone or a zombie meanwhile: not an engine to watch
                pass
        main = threading.main_thread().ident

        def watch():
            while self._old:
                for p in engines:
                    try:
                        dead = p.status() == psutil.STATUS_ZOMBIE
                    except psutil.Error:
                        dead = True
                    if dead:
                        signal.pthread_kill(main, signum)
                        return
                time.sleep(0.5)

        if engines:
            threading.Thread(target=watch, daemon=True, name="gsi-engine-watch").start()

    def guard(self, method):
        stop = self

        class Guarded:
            def __getattr__(self, name):
                return getattr(method, name)

            def step(self, live):
                if stop.signum is not None:
                    raise StopRequested
                return method.step(live)

        return Guarded()


def failed_role(exc: BaseException, engines) -> str | None:
    """The role whose engine call raised `exc` (the deepest frame whose `self` is one of the role engines)."""
    roles = {id(e): r for r, e in engines.roles().items()}
    found, tb = None, exc.__traceback__
    while tb is not None:
        me = tb.tb_frame.f_locals.get("self")
        if me is not None and id(me) in roles:
            found = roles[id(me)]
        tb = tb.tb_next
    return found


def stopped(exc: BaseException, stop: StopOnSignal, engines, saved: int, total: int, path: Path) -> None:
    """Turn a signal or an engine failure in the step loop into a clear message and an exit status; anything
    else is re-raised unchanged by the caller."""
    where = f"{saved} of {total} problems saved in {path}; rerun the same command to resume"
    if stop.signum is None and terminating():
        stop.signum = signal.SIGTERM  # SLURM is requeueing or preempting the job: not an engine failure
    if stop.signum is not None or isinstance(exc, (StopRequested, KeyboardInterrupt)):
        # (a Ctrl-C in a terminal also reaches vLLM's engine processes, which shut down: their error counts as
        # the interruption)
        signum = stop.signum or signal.SIGINT
        msg = f"interrupted ({signal.Signals(signum).name}): {where}"
        print(msg, file=sys.stderr, flush=True)
        to_log_files(logging.WARNING, msg)
        raise SystemExit(128 + signum) from None
    role = failed_role(exc, engines) if isinstance(exc, Exception) else None
    if role is not None:
        traceback.print_exception(exc, file=sys.stderr)
        msg = f"the {role} engine failed ({type(exc).__name__}: {exc}); {where}"
        print(msg, file=sys.stderr, flush=True)
        to_log_files(logging.ERROR, msg, exc)
        raise SystemExit(1) from exc


def to_log_files(level: int, msg: str, exc: BaseException | None = None) -> None:
    """Also into the log files (Hydra's run.log), which the console prints above do not reach: a job's log must
    say why it ended (an engine that died, or was OOM-killed) without its stderr beside it."""
    record = log.makeRecord(log.name, level, __file__, 0, msg, None,
                            (type(exc), exc, exc.__traceback__) if exc is not None else None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)
