"""SLURM glue for sweeps through Hydra's submitit launcher (conf/hydra/launcher/submitit_slurm.yaml).

The launcher preset installs `SlurmCallback` as a Hydra callback. It does three things the stock plugin does not:

* In the submitting process (`python run.py -m ...`), it asks SLURM about the jobs with `squeue` when the cluster
  has no accounting (`sacct` fails), instead of letting submitit warn about `sacct` on every poll and wait forever
  on a job that died without writing its result file (cancelled, killed, out of memory).
* In the job, it makes a requeue (`scontrol requeue`, preemption with PreemptMode=REQUEUE) restart cleanly. SLURM
  sends SIGTERM to every process of the job, waits KillWait seconds, kills what is left, and starts the same batch
  script again under the same job id: submitit then reloads the same pickled call, Hydra rebuilds the same run dir
  (the sweep dir's `${now:}` is cached in the pickled config; the subdir is the job number and its overrides), and
  `gsi.run` skips the problems already in results.jsonl. What must not happen is the job's own error being written
  as its result: the vLLM engine processes die on the SIGTERM, the run fails, submitit would pickle that failure as
  the job's outcome and the sweep would report a job that is in fact pending again. So after a SIGTERM a failure
  leaves the process without a result file, and SLURM's own state (requeued, cancelled, timed out) decides.
* Time limits: submitit's SIGUSR2 handler (sent `signal_delay_s` before the limit) calls the launcher's
  `checkpoint()`, which resubmits the same call; `max_num_timeout` bounds how often.

Nothing here imports submitit, vLLM or torch at import time.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

# States in which a job may still produce its result (SLURM's long names, as squeue and sacct print them).
INCOMPLETE_STATES = frozenset({
    "READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "COMPLETING",
    "CONFIGURING", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "PREEMPTED",
})
# A job that squeue no longer knows (it left the controller's memory, MinJobAge after it ended).
GONE = "GONE"

_terminating: dict[str, Any] = {}


def in_slurm_job() -> bool:
    """Inside a job that submitit started on SLURM (not a local run, not a plain sbatch script)."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_JOB_ID" in os.environ


def job_label() -> str:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "?")


def restart_count() -> int:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


# ---------------------------------------------------------------------------------------------------------------
# In the job
# ---------------------------------------------------------------------------------------------------------------
def _on_sigterm(signum, frame) -> None:  # noqa: ARG001
    if not _terminating:
        _terminating.update(signal=signal.Signals(signum).name, at=time.time())
        log.warning("SLURM job %s got %s (requeue, preemption, cancel or time limit): finished problems are in "
                    "results.jsonl; a requeued job resumes from there", job_label(), signal.Signals(signum).name)


def install_job_handlers() -> None:
    """SIGTERM: remember it and carry on (as submitit does: its SIGUSR2 handler may still checkpoint and requeue),
    so that a failure that follows is not reported as the job's result. Main thread only (signal handlers)."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def terminating() -> bool:
    return bool(_terminating)


# ---------------------------------------------------------------------------------------------------------------
# In the submitting process
# ---------------------------------------------------------------------------------------------------------------
def _make_watcher_class():
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SlurmStateWatcher(SlurmInfoWatcher):
        """submitit's watcher, with `squeue` when `sacct` fails (accounting off) and without a warning per poll.

        `squeue --states=all` knows a job until MinJobAge after it ended; a job it no longer lists is GONE, which
        counts as finished: then either its result file exists, or submitit reports the job as failed (with the
        tail of its log) instead of waiting forever.

        A job counts as finished only when two polls in a row see it in a final state. Between a job's requeue
        (a time limit's checkpoint, `scontrol requeue`, preemption) and its next start, one poll can catch it
        COMPLETED, FAILED or unlisted; submitit never asks again about a job its watcher called finished, and
        (its result file not being written yet) reports it as failed, while the job runs on. A job that ends with
        its result is seen by its result file, without the watcher, so only failures wait one more poll."""

        def __init__(self, delay_s: int = 60) -> None:
            super().__init__(delay_s=delay_s)
            self.use_sacct: bool | None = None  # None: not tried yet
            self._final_once: set[str] = set()  # seen in a final state by the last poll only

        def _final(self, job_id: str) -> bool:
            state = self.get_state(job_id, mode="cache").upper().split()[0]  # "CANCELLED by 0" -> CANCELLED
            return state not in INCOMPLETE_STATES

        def is_done(self, job_id: str, mode: str = "standard") -> bool:
            self.get_state(job_id, mode=mode)  # polls when `mode` says so
            return job_id in self._finished

        def update(self) -> None:
            to_check = {x.split("_")[0] for x in self._registered - self._finished}
            if not to_check:
                return
            self._num_calls += 1
            info = None
            if self.use_sacct is not False:
                info = self._sacct(to_check)
            if info is None:
                info = self._squeue(to_check)
            if info is not None:
                self._info_dict.update(info)
            self._last_status_check = time.time()
            if info is None:
                return  # nothing new: neither a confirmation nor a change
            for job_id in self._registered - self._finished:
                if not self._final(job_id):
                    self._final_once.discard(job_id)
                elif job_id in self._final_once:
                    self._finished.add(job_id)
                else:
                    self._final_once.add(job_id)

        def _sacct(self, ids: set[str]) -> dict | None:
            cmd = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"] + [a for i in sorted(ids) for a in ("-j", i)]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as e:
                out = None
                err = str(e)
            else:
                err = (out.stderr or out.stdout).strip()
            if out is None or out.returncode != 0:
                if self.use_sacct is None:
                    log.debug("sacct unavailable (%s): asking squeue for job states",
                              (err.splitlines() or ["no output"])[-1])
                    self.use_sacct = False
                else:  # it worked before: a hiccup of the accounting daemon, try again next time
                    log.debug("sacct failed (%s); squeue this time", err)
                return None
            self.use_sacct = True
            self._output = out.stdout.encode()
            return self.read_info(out.stdout)

        def _squeue(self, ids: set[str]) -> dict | None:
            cmd = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N",
                   f"--jobs={','.join(sorted(ids))}"]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as e:
                log.debug("squeue failed: %s", e)
                return None
            if out.returncode != 0 and "Invalid job id" not in out.stderr:
                log.debug("squeue failed: %s", out.stderr.strip())
                return None  # the controller is busy or down: keep the last known states
            seen: dict[str, dict[str, str]] = {}
            for line in out.stdout.splitlines():
                parts = line.strip().split("|")
                if len(parts) == 3:
                    seen[parts[0]] = {"JobID": parts[0], "State": parts[1], "NodeList": parts[2]}
            info = dict(seen)
            for job_id in self._registered - self._finished:
                if job_id.split("_")[0] in ids and job_id not in seen:
                    info[job_id] = {"JobID": job_id, "State": GONE, "NodeList": ""}
            return info

    return SlurmStateWatcher


def install_watcher(delay_s: int = 60) -> None:
    """Make submitit's SlurmJob poll job states through `SlurmStateWatcher` (the submitting process only)."""
    from submitit.slurm import slurm as submitit_slurm

    if type(submitit_slurm.SlurmJob.watcher).__name__ != "SlurmStateWatcher":
        submitit_slurm.SlurmJob.watcher = _make_watcher_class()(delay_s=delay_s)


def _swept_keys(config: DictConfig) -> set[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    overrides = parser.parse_overrides([str(o) for o in config.hydra.overrides.task])
    return {o.key_or_group for o in overrides if o.is_sweep_override()}


def check_resources_not_swept(config: DictConfig) -> None:
    """The launcher asks SLURM for one set of resources per sweep (from the non-swept `hardware`): sweeping
    `hardware` would run gpu1 jobs on three GPUs, or CPU jobs on GPU nodes. Refuse unless the resources are set."""
    swept = {k for k in _swept_keys(config) if k == "hardware" or k.startswith("hardware.")}
    if not swept:
        return
    given = {str(o).split("=", 1)[0] for o in config.hydra.overrides.hydra}
    if {"hydra.launcher.gpus_per_node", "hydra.launcher.cpus_per_task", "hydra.launcher.mem_gb"} <= given:
        return
    raise SystemExit(
        f"{', '.join(sorted(swept))} is swept, but the SLURM resources of a sweep come from one hardware config "
        "(hydra.launcher.gpus_per_node, cpus_per_task, mem_gb). Run one sweep per hardware option, or set all "
        "three hydra.launcher keys explicitly.")


class SlurmCallback(Callback):
    """Installed by conf/hydra/launcher/submitit_slurm.yaml (`hydra.callbacks.gsi_slurm`)."""

    def __init__(self, poll_s: int = 30) -> None:
        self.poll_s = poll_s

    # submitting process
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_resources_not_swept(config)
        install_watcher(delay_s=self.poll_s)
        log.info("SLURM sweep: job logs in %s/.submitit/", config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        for path in sorted(sweep.rglob("summary.json")):
            if ".submitit" in path.parts:
                continue
            try:
                s = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            acc = s.get("accuracy")
            log.info("%s: %s problems, accuracy %s", path.parent.relative_to(sweep), s.get("n_problems"),
                     f"{acc:.4f}" if isinstance(acc, (int, float)) else acc)

    # in the job (the pickled callback travels with the launcher)
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not in_slurm_job():
            return
        install_job_handlers()
        attempt = restart_count()
        log.info("SLURM job %s on %s%s: run dir %s", job_label(), socket.gethostname(),
                 f" (restart {attempt}: resuming)" if attempt else "", config.hydra.runtime.output_dir)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if not in_slurm_job() or not terminating():
            return
        from hydra.core.utils import JobStatus

        if job_return is not None and job_return.status == JobStatus.FAILED:
            err = job_return._return_value
            log.warning("SLURM job %s stopped after %s (%s: %s); exiting without a result, SLURM requeues or "
                        "ends it", job_label(), _terminating.get("signal"), type(err).__name__, err)
            # Not an Exception: submitit writes no result file, the submitting process asks SLURM instead.
            raise SystemExit(143)


# The launcher preset shadows the plugin's `submitit_slurm` on purpose (same name, so `hydra/launcher=submitit_slurm`
# gets our defaults); Hydra validates it against the plugin's schema and warns that this is deprecated. This module
# is imported in every job before its config is composed (the callback is unpickled with the launcher), which
# keeps the warning out of the job logs.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/submitit_slurm' is validated against ConfigStore schema")
