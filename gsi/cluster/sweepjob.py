"""One job of an in-process sweep (`-m` with Hydra's basic launcher): its failure never stops the jobs after it.

Hydra's basic launcher runs the jobs one after another in this process. It records a job that raises an
Exception and goes on, but a SystemExit (how gsi.run reports an engine that died, a full disk, a folder that holds
another experiment) passes through it and ends the whole sweep. Here every failure of a job becomes a
`SweepJobFailed` (an Exception), so the next job runs; after the last job Hydra raises the first failure, whose
message then names every job that failed, and the sweep exits 1. An interruption (Ctrl-C, SIGTERM: exit status
130 or 143) still stops the sweep at once: that is what the user asked for.
SLURM and other launchers run each job in its own process: nothing changes there.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

log = logging.getLogger(__name__)

INTERRUPTED = (130, 143)  # SIGINT, SIGTERM: 128 + signal number


class SweepJobFailed(RuntimeError):
    """A job of an in-process sweep failed. The message lists every job of the sweep that failed so far (Hydra
    raises the first one's after the last job, when the list is complete)."""

    failures: list[str] = []  # this process's sweep: "job <num> (<overrides>): <reason>"

    def __str__(self) -> str:
        return (f"{len(self.failures)} job(s) of the sweep failed (the others ran; rerun the same command to "
                "resume the failed ones): " + "; ".join(self.failures))


def in_process_sweep() -> bool:
    """Whether this job is one of a `-m` sweep that Hydra runs in this process (the basic launcher)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:  # noqa: BLE001 - not under Hydra
        return False
    target = str(hc.launcher.get("_target_", "")) if hc.launcher is not None else ""
    return hc.mode == RunMode.MULTIRUN and target.endswith("BasicLauncher")


def reason(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        if not isinstance(exc.code, int):
            return str(exc.code)
        cause = exc.__cause__  # gsi.run's engine failure: the engine's own error
        return f"exit status {exc.code}" + (f" ({type(cause).__name__}: {cause})" if cause is not None else "")
    return f"{type(exc).__name__}: {exc}"


def job_num():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().job.get("num")


def job_label() -> str:
    from hydra.core.hydra_config import HydraConfig

    job = HydraConfig.get().job
    return f"job {job.get('num')} ({job.override_dirname or job.name})"


@contextmanager
def sweep_job():
    """Wrap one job's run (see the module docstring); outside an in-process sweep it changes nothing."""
    if in_process_sweep() and job_num() == 0:
        SweepJobFailed.failures.clear()  # a new sweep (tests run several in one process)
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            return
        if not in_process_sweep() or isinstance(exc, KeyboardInterrupt) \
                or (isinstance(exc, SystemExit) and exc.code in INTERRUPTED):
            raise
        failure = f"{job_label()}: {reason(exc)}"
        SweepJobFailed.failures.append(failure)
        log.error("%s; going on with the next job", failure)
        raise SweepJobFailed() from exc
