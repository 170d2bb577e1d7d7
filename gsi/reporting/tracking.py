"""Experiment tracking: W&B or nothing. Never the only copy of a number (results.jsonl and summary.json are),
and a tracker failure never fails the run.

`logger=wandb` makes one W&B run per Hydra job:
- name: the method and the job's overrides (hydra.job.override_dirname), or method_dataset outside Hydra;
- group: the sweep folder's name under `-m` (one group per sweep); job_type: the method;
- config: the whole composed config, resolved, plus where the run's files are (`_run`);
- tags: method, dataset, model config and the small/big model pair, plus `logger.tags`;
- live, per finished problem (x axis `progress/problems_done`): running accuracy and acceptance rate, tokens
  and FLOPs by role (FLOPs need the parameter counts: `params=` to `on_problem`, else they come at the end),
  engine busy time by role;
- at the end: summary.json as the run summary, a per-problem table `problems`, and an artifact
  `results-<run id>` (type `results`) holding results.jsonl and summary.json (alias `complete`; a run that
  fails or is interrupted logs what it has, alias `partial`);
- the run's state is honest: a crash or an interruption ends it with a non-zero exit code (W&B: failed), a
  SLURM preemption or requeue marks it preempting first (W&B: preempted; the requeued job resumes it);
- config: the composed config plus `provenance` (gsi.rundir.provenance: versions, commit, models, data).

Everything wandb writes goes under `<run folder>/wandb/`: its run files, cache, config and data folders and its
temporary files (staging, and its service's sockets when the folder's path is short enough for a Unix socket;
else those go to a private folder in the system temp folder, removed when the run closes). Nothing goes under
the home folder. `WANDB_MODE=offline` (or
`logger.mode=offline`) needs no network: `wandb sync <run folder>/wandb/wandb/offline-run-*` uploads later.
An online run that cannot start (no API key, no network) is started offline instead; if that fails too, or
wandb is missing, the run goes on with a warning and without a tracker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from gsi.cluster.slurm import in_slurm_job, terminating
from gsi.reporting.metrics import TABLE_COLUMNS, RunningTotals, claim_columns, table_row

log = logging.getLogger(__name__)

# Where wandb would otherwise write (defaults under ~ and the working folder): all inside <out>/wandb.
_WANDB_DIRS = {"WANDB_DIR": "", "WANDB_CACHE_DIR": "cache", "WANDB_CONFIG_DIR": "config",
               "WANDB_DATA_DIR": "data", "WANDB_ARTIFACT_DIR": "artifacts"}


class NullTracker:
    def on_problem(self, record: dict, **progress) -> None:
        pass

    def finish(self, summary: dict, records: list[dict]) -> None:
        pass

    def close(self, exc: BaseException | None = None) -> None:
        pass


def exit_code_of(exc: BaseException | None) -> int:
    """The exit status a run that ended with `exc` has (None: it finished): what W&B shows as its state (0:
    finished, anything else: failed)."""
    if exc is None:
        return 0
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return 1


def preempted(exc: BaseException | None) -> bool:
    """Whether the run is stopping because SLURM is taking the job away (preemption, requeue, time limit): the
    W&B run is marked preempting, so that it shows as preempted (and a requeued job resumes it), not crashed."""
    if exc is None:
        return False
    if terminating():
        return True
    if in_slurm_job() and exit_code_of(exc) == 143:  # SIGTERM inside a SLURM job
        return True
    return bool(os.environ.get("SLURM_JOB_ID")) and exit_code_of(exc) == 143


def build_tracker(cfg, out):
    name = cfg.logger.name
    if name == "none":
        return NullTracker()
    if name == "wandb":
        try:
            return WandbTracker(cfg, Path(out))
        except Exception as e:  # noqa: BLE001 - a tracker never fails the run
            log.warning("W&B tracking is off for this run (%s: %s); results are still written to %s",
                        type(e).__name__, e, out)
            return NullTracker()
    raise ValueError(f"logger={name!r} is not implemented (none | wandb)")


def own_run_id(path: Path, name: str) -> str | None:
    """The W&B run id a resumed job continues: the one its own folder recorded for a run of the same name. A file
    written for another name (a folder copied or reused for another job) is not resumed: a new run starts."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        rec = json.loads(text)
    except ValueError:  # written before the name was recorded: the bare id
        return text
    if not isinstance(rec, dict) or not rec.get("id"):
        log.warning("%s is not a W&B run record; starting a new run", path)
        return None
    if rec.get("name") != name:
        log.warning("%s records W&B run %s of job %r, not this job (%r); starting a new run", path, rec["id"],
                    rec.get("name"), name)
        return None
    return str(rec["id"])


# ---------------------------------------------------------------------------------------------------------------
# Naming


def hydra_job_info() -> dict:
    """What Hydra knows about this job ({} outside @hydra.main)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:  # noqa: BLE001 - not under Hydra (or no Hydra at all)
        return {}
    info = {"override_dirname": hc.job.override_dirname or "", "overrides": list(hc.overrides.task),
            "job_num": hc.job.get("num"), "mode": str(hc.mode.name if hc.mode is not None else "")}
    if hc.mode == RunMode.MULTIRUN:
        info["sweep_dir"] = str(hc.sweep.dir)
    return info


def sweep_group(sweep_dir: str | None) -> str | None:
    """The sweep folder's name; under a date folder (the default `<date>/<time>...` layout) the date joins it, so
    that groups stay unique from one day to the next."""
    if not sweep_dir:
        return None
    p = Path(sweep_dir)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.parent.name):
        return f"{p.parent.name}_{p.name}"
    return p.name


def run_name(cfg, info: dict) -> str:
    method = cfg.method.name
    overrides = info.get("override_dirname", "")
    return f"{method}:{overrides}" if overrides else f"{method}_{cfg.dataset.name}"


def run_tags(cfg) -> list[str]:
    def short(path: str) -> str:
        path = str(path).rstrip("/")
        return path.replace("tiny://", "tiny-") if path.startswith("tiny://") else path.split("/")[-1]

    pair = f"{short(cfg.model.small.path)}>{short(cfg.model.big.path)}"
    tags = [f"method:{cfg.method.name}", f"dataset:{cfg.dataset.name}", f"model:{cfg.model.name}", pair]
    tags += [str(t) for t in (cfg.logger.tags or [])]
    return list(dict.fromkeys(t[:64] for t in tags))  # W&B caps tags at 64 characters


# ---------------------------------------------------------------------------------------------------------------
# Keeping wandb's files inside the run folder


@contextlib.contextmanager
def _temp_dir_in(path: Path, service_dir: Path | None = None):
    """tempfile uses `path` as its temp folder, and child processes started meanwhile (wandb's service: its
    sockets and port files) use `service_dir` (default: `path`)."""
    path.mkdir(parents=True, exist_ok=True)
    old_env, old_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(service_dir or path)
    tempfile.tempdir = str(path)
    try:
        yield
    finally:
        tempfile.tempdir = old_tempdir
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env


# A Unix socket's path has at most 107 bytes; wandb's service puts "/wandb_symon-<pid>-<pid>-<13 digits>.sock"
# (47 bytes at most) in its temp folder.
_MAX_SOCKET_DIR = 107 - 47
_SOCKET_PREFIX = "gsi-wandb-"


def _socket_tmp_base() -> str:
    """Where the private socket folder is made: the system temp folder, or /tmp when that is itself too deep for a
    socket path (a TMPDIR inside a deep job or test folder)."""
    base = tempfile.gettempdir()
    folder = os.path.join(base, _SOCKET_PREFIX + "X" * 8)  # mkdtemp adds 8 random characters
    return base if len(folder) <= _MAX_SOCKET_DIR else "/tmp"


def _repo_root() -> str | None:
    for parent in Path(__file__).resolve().parents:
        if (parent / ".git").exists():
            return str(parent)
    return None


class WandbTracker:
    """One W&B run per job. Every call is guarded: the first W&B error is logged and turns the tracker off."""

    def __init__(self, cfg, out: Path):
        self.out = Path(out)
        self.root = self.out / "wandb"
        self.tmp = self.root / "tmp"
        self.service_tmp = self.tmp
        self._private_tmp: Path | None = None
        self.params: dict = {}
        self.run = None
        self.wandb = None
        self._old_env = {k: os.environ.get(k) for k in _WANDB_DIRS}
        try:
            self._start(cfg)
        except BaseException:
            self.close()  # whatever got started, and the environment as it was
            raise

    def _start(self, cfg) -> None:
        from omegaconf import OmegaConf

        for key, sub in _WANDB_DIRS.items():
            (self.root / sub).mkdir(parents=True, exist_ok=True)
            os.environ[key] = str(self.root / sub)

        info = hydra_job_info()
        config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # plain strings for W&B
        self.method_cfg, self.beta = dict(config.get("method") or {}), config.get("beta")
        config["_run"] = {"output_dir": str(self.out.resolve()), **info}
        with contextlib.suppress(OSError, ValueError):  # what produced the numbers (gsi.rundir.provenance)
            config["provenance"] = json.loads((self.out / "experiment.json").read_text())["provenance"]
        mode = str(cfg.logger.mode or "online")
        run_id_file = self.root / "run_id"
        self.kwargs = dict(
            project=cfg.logger.project, entity=cfg.logger.entity or None, name=run_name(cfg, info),
            group=sweep_group(info.get("sweep_dir")), job_type=cfg.method.name, tags=run_tags(cfg), config=config,
            dir=str(self.root),
            # A resumed run (same folder) continues the same W&B run.
            id=None,
        )
        own = own_run_id(run_id_file, self.kwargs["name"])
        if own:
            self.kwargs.update(id=own, resume="allow")
        # Running totals over every finished problem, including those a resumed run found on disk.
        self.totals = RunningTotals()
        results = self.out / "results.jsonl"
        if results.exists():
            for line in results.read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self.totals.add(json.loads(line))

        if len(str(self.tmp.resolve())) > _MAX_SOCKET_DIR:
            # Too deep for a Unix socket (wandb would fall back to /tmp and leave it to chance): a private folder
            # in the system temp folder, for the service's sockets only, removed when the run closes.
            self._private_tmp = self.service_tmp = Path(tempfile.mkdtemp(prefix=_SOCKET_PREFIX,
                                                                         dir=_socket_tmp_base()))
        with _temp_dir_in(self.tmp, self.service_tmp):
            import wandb  # lazily: only logger=wandb pays for it

            self.wandb = wandb
            try:
                self.run = self._init(mode)
            except Exception as e:  # noqa: BLE001
                if mode in ("offline", "disabled"):
                    raise
                log.warning("W&B could not start %s (%s: %s); logging offline into %s instead (upload it "
                            "later with `wandb sync`)", mode, type(e).__name__, e, self.root)
                mode = "offline"
                self.run = self._init(mode)
        run_id_file.write_text(json.dumps({"id": self.run.id, "name": self.kwargs["name"]}) + "\n")
        self.run.define_metric("progress/problems_done")
        for prefix in ("progress/total", "progress/fraction", "running/*", "engine/*"):
            self.run.define_metric(prefix, step_metric="progress/problems_done")
        log.info("W&B run %s (%s, %s mode) in %s", self.run.name, self.run.id, mode, self.root)

    def _init(self, mode: str):
        # create_new: a run some earlier job of this process left open is never handed back as this job's run
        # (wandb's default returns it: one job's results under another job's name and config).
        settings = self.wandb.Settings(mode=mode, init_timeout=30, quiet=True, git_root=_repo_root(),
                                       reinit="create_new")
        return self.wandb.init(**self.kwargs, settings=settings)

    # -- guarded calls --------------------------------------------------------------------------------------------
    def _guard(self, what: str, fn, *args) -> None:
        if self.run is None:
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            log.warning("W&B %s failed (%s: %s); tracking is off for the rest of this run (results are on disk)",
                        what, type(e).__name__, e)
            self._shutdown(exit_code=1)

    def on_problem(self, record: dict, *, done_count: int | None = None, total: int | None = None,
                   engine_stats: dict | None = None, params: dict | None = None, **_) -> None:
        if params:
            self.params = dict(params)
        self._guard("log", self._log_progress, record, done_count, total, engine_stats)

    def finish(self, summary: dict, records: list[dict]) -> None:
        if summary.get("params"):
            self.params = dict(summary["params"])
        self._guard("finish", self._finish, summary, records)

    def close(self, exc: BaseException | None = None) -> None:
        """End the W&B run: finished when `exc` is None, else failed with the run's exit status (preempting first
        when SLURM is taking the job away). The results on disk so far are logged as an artifact either way."""
        if self.run is not None:
            if preempted(exc):
                self._guard("mark_preempting", self.run.mark_preempting)
            self._guard("artifact", self._log_results, exc is None)
        self._shutdown(exit_code=exit_code_of(exc))
        for key, value in self._old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    # -- the work ---------------------------------------------------------------------------------------------------
    def _log_progress(self, record, done_count, total, engine_stats) -> None:
        self.totals.add(record)
        self.run.log(self.totals.metrics(self.params, done_count=done_count, total=total, engine_stats=engine_stats))

    def _finish(self, summary: dict, records: list[dict]) -> None:
        table = self.wandb.Table(columns=list(TABLE_COLUMNS),
                                 data=[table_row(r, self.params) for r in records])
        with _temp_dir_in(self.tmp, self.service_tmp):  # the table is staged through a temporary file
            self.run.log({"problems": table})
        # Exactly summary.json's keys and values (nested dicts stay nested), and the claim's columns.
        self.run.summary.update(json.loads(json.dumps(summary)))
        self.run.summary.update({"claim": claim_columns(summary, self.method_cfg, self.beta)})

    def _log_results(self, complete: bool) -> None:
        files = [self.out / name for name in ("results.jsonl", "summary.json", "experiment.json")]
        files = [f for f in files if f.is_file()]
        if not files:
            return
        art = self.wandb.Artifact(f"results-{self.run.id}", type="results",
                                  description="results.jsonl, summary.json and experiment.json of the run",
                                  metadata={"output_dir": str(self.out.resolve()), "complete": complete})
        for f in files:
            art.add_file(str(f), name=f.name)
        with _temp_dir_in(self.tmp, self.service_tmp):
            self.run.log_artifact(art, aliases=["latest", "complete" if complete else "partial"])

    def _shutdown(self, exit_code: int) -> None:
        run, self.run = self.run, None
        wandb, self.wandb = self.wandb, None
        if wandb is None:
            self._remove_private_tmp()
            return
        with _temp_dir_in(self.tmp, self.service_tmp):
            if run is not None:
                try:
                    run.finish(exit_code=exit_code)
                except Exception as e:  # noqa: BLE001
                    log.warning("W&B finish failed (%s: %s)", type(e).__name__, e)
            try:
                wandb.teardown()  # stop wandb's service too: the next job of a sweep starts its own, in its folder
            except Exception as e:  # noqa: BLE001
                log.warning("W&B teardown failed (%s: %s)", type(e).__name__, e)
        with contextlib.suppress(OSError):
            self.tmp.rmdir()  # empty once wandb has cleaned up after itself (else when the process exits)
        self._remove_private_tmp()

    def _remove_private_tmp(self) -> None:
        if self._private_tmp is not None:
            shutil.rmtree(self._private_tmp, ignore_errors=True)
            self._private_tmp = None
