"""One run per folder, and nothing left behind: the folder lock, trace in the experiment identity, results without
experiment.json refused, an unreadable summary.json recomputed, write_json's fsyncs, a full disk's message, and
the scheduler refusing to spin. All on the exact table engines of tests/fault_driver.py (no vLLM)."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gsi.rundir.results import MEASURED_KEYS, ResultsFile, write_json

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GSI_DATA_DIR", str(ROOT.parent / "shared" / "data"))
DRIVER = ROOT / "tests" / "fault_driver.py"
N = 8
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _driver_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fault_driver", DRIVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_once(out: Path, *extra: str, problems: int = N) -> dict:
    return _driver_module().run_once(out, problems, extra=extra)


def ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_runs_on_one_folder_one_runs_the_other_refuses_at_once(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(DRIVER), str(out), "--problems", "4", "--delay", "0.2"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    first = None
    ended: dict[int, float] = {}
    deadline = time.time() + 240
    while len(ended) < 2 and time.time() < deadline:
        for k, p in enumerate(procs):
            if k not in ended and p.poll() is not None:
                ended[k] = time.time()
                first = k if first is None else first
        time.sleep(0.02)
    outs = [p.communicate(timeout=60) for p in procs]
    codes = [p.returncode for p in procs]
    loser, winner = first, 1 - first
    assert codes[loser] != 0 and codes[winner] == 0, (codes, outs)
    message = outs[loser][1]
    assert "in use by another run" in message and f"pid {procs[winner].pid}" in message, message
    assert "Traceback" not in message
    # "At once": the refusal came while the other run was still working (it sleeps 0.2 s per engine call).
    assert ended[winner] - ended[loser] > 2.0
    assert sorted(ids(out)) == sorted(set(ids(out))) and len(ids(out)) == 4  # no problem twice


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    from gsi.rundir.lock import FolderInUse, RunLock

    out = tmp_path / "run"
    run_once(out, problems=2)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gsi.rundir.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
         "print('locked', flush=True); time.sleep(120)", str(out)],
        cwd=ROOT, env={**ENV, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderInUse, match=rf"pid {holder.pid} on .+, started 20"):
            RunLock(out).acquire()
        with pytest.raises(FolderInUse):
            run_once(out, problems=2)
    finally:
        holder.kill()
        holder.wait()
    assert run_once(out, problems=2)["n_problems"] == 2  # SIGKILLed holder: the kernel dropped its lock


def test_trace_is_part_of_the_experiment(tmp_path):
    out = tmp_path / "run"
    run_once(out, problems=4)
    keep = (out / "results.jsonl").read_text().splitlines(keepends=True)[:2]
    (out / "results.jsonl").write_text("".join(keep))  # as if interrupted after 2 problems
    with pytest.raises(SystemExit, match=r"differs in: trace\)"):
        run_once(out, "trace=true", problems=4)
    assert len(ids(out)) == 2  # nothing was added: no traced records among untraced ones
    run_once(out, problems=4)
    assert len(ids(out)) == 4


def test_experiment_json_without_trace_resumes_untraced(tmp_path):
    """A folder written before trace joined the identity holds untraced records: it resumes with trace=false."""
    out = tmp_path / "run"
    run_once(out, problems=3)
    (out / "results.jsonl").write_text((out / "results.jsonl").read_text().splitlines(keepends=True)[0])
    exp = json.loads((out / "experiment.json").read_text())
    del exp["trace"]
    write_json(out / "experiment.json", exp)
    with pytest.raises(SystemExit, match=r"differs in: trace\)"):
        run_once(out, "trace=true", problems=3)
    run_once(out, problems=3)
    assert len(ids(out)) == 3


def test_results_without_experiment_json_are_refused_with_a_way_out(tmp_path):
    out = tmp_path / "run"
    run_once(out, problems=3)
    (out / "experiment.json").unlink()
    before = (out / "results.jsonl").read_bytes()
    with pytest.raises(SystemExit) as info:
        run_once(out, "beta=2", problems=3)
    msg = str(info.value)
    assert "experiment.json is missing" in msg and "mv " in msg and "hydra.run.dir" in msg
    assert (out / "results.jsonl").read_bytes() == before and not (out / "experiment.json").exists()
    os.replace(out / "results.jsonl", out / "results.jsonl.orphan")  # the way out the message gives
    run_once(out, "beta=2", problems=3)
    assert len(ids(out)) == 3


def test_unreadable_summary_is_recomputed_from_results(tmp_path):
    """A finished folder whose summary.json was cut short: the rerun (nothing left to run, so no engines) rewrites
    it from results.jsonl instead of crashing on it."""
    from gsi.run import run

    out = tmp_path / "run"
    driver = _driver_module()
    first = run_once(out, problems=3)
    text = (out / "summary.json").read_text()
    (out / "summary.json").write_text(text[: len(text) // 2])
    again = run(driver.compose(3), out=out)  # engines=None: model sizes come from the models' configs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_problems"] == 3 and summary["accuracy"] == first["accuracy"] == again["accuracy"]
    assert summary["params"]["big"] > 0


def test_write_json_fsyncs_the_file_then_the_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real(fd)

    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "fsync", spy)
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(len(synced)), real_replace(a, b)))
    write_json(tmp_path / "x.json", {"a": 1})
    assert synced == ["file", "dir"] and replaced == [1]  # the data before the rename, the folder after it
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}


def test_full_disk_says_how_many_problems_are_saved(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real = ResultsFile.append
    calls = []

    def append(self, record):
        calls.append(record["id"])
        if len(calls) == 4:  # half a line reaches the disk, then it is full
            with open(self.path, "a") as f:
                f.write(json.dumps(record)[:40])
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real(self, record)

    monkeypatch.setattr(ResultsFile, "append", append)
    with pytest.raises(SystemExit) as info:
        run_once(out)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "3 problems are saved" in err and "rerun the same command" in err and "No space left" in err, err
    monkeypatch.setattr(ResultsFile, "append", real)
    summary = run_once(out)  # space freed: the resume drops the half line and finishes
    assert summary["n_problems"] == N and len(set(ids(out))) == N


def test_full_disk_while_writing_the_summary(tmp_path, monkeypatch, capsys):
    import gsi.run

    out = tmp_path / "run"

    def full(path, obj):
        if Path(path).name == "summary.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_json(path, obj)

    monkeypatch.setattr(gsi.run, "write_json", full)
    with pytest.raises(SystemExit):
        run_once(out, problems=3)
    assert "3 problems are saved" in capsys.readouterr().err


def test_other_os_errors_are_not_reported_as_a_full_disk(tmp_path, monkeypatch):
    def broken(self, record):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(ResultsFile, "append", broken)
    with pytest.raises(OSError, match="Input/output"):
        run_once(tmp_path / "run", problems=2)


# -- the scheduler ----------------------------------------------------------------------------------------------


def _in_thread(fn, timeout: float = 10.0):
    """fn()'s exception, or a failure if it is still running after `timeout` (the old loop spun forever)."""
    box = {}

    def target():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001
            box["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "run_steps is still looping"
    return box.get("exc")


def _states(n=3):
    from gsi.runtime.state import ProblemState

    return [ProblemState(index=i, id=str(i), problem="p", reference="1", prompt_ids=[0], context=[0])
            for i in range(n)]


def _ctx():
    from gsi.methods.base import StepContext

    return StepContext(seed=0, max_step_tokens=8, max_steps=4, window=100)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_scheduler_refuses_an_empty_batch(batch_size):
    from gsi.runtime.scheduler import run_steps

    class Method:
        async def step(self, s):
            raise AssertionError("not called")

    exc = _in_thread(lambda: run_steps(_states(), Method(), _ctx(), batch_size=batch_size, on_finish=lambda s, t: 0))
    assert isinstance(exc, ValueError) and f"batch_size={batch_size}" in str(exc)


def test_scheduler_stops_a_method_that_makes_no_progress():
    from gsi.runtime.scheduler import run_steps

    class Stuck:
        async def step(self, s):
            pass

    exc = _in_thread(lambda: run_steps(_states(), Stuck(), _ctx(), batch_size=2, on_finish=lambda s, t: 0))
    assert isinstance(exc, RuntimeError) and "no progress" in str(exc)


def test_scheduler_accepts_progress_on_private_tracks():
    """Response-level methods advance hidden tracks for a while and only count tokens: that is progress."""
    from gsi.runtime.scheduler import run_steps

    class Tracks:
        async def step(self, s):
            s.count_nocache("small", generated=1)
            s.tokens["small"]["generated"] += 1
            if s.tokens["small"]["generated"] >= 3:
                s.done, s.stop_reason = True, "eos"

    finished = []
    assert _in_thread(lambda: run_steps(_states(), Tracks(), _ctx(), batch_size=2,
                                        on_finish=lambda s, t: finished.append(s.id))) is None
    assert sorted(finished) == ["0", "1", "2"]


def test_cli_on_a_busy_folder_refuses_before_hydra_writes_into_it(tmp_path):
    """run.py takes the lock in its Hydra callback: the refused run neither runs nor overwrites the running one's
    .hydra/config.yaml."""
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gsi.rundir.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
         "print('locked', flush=True); time.sleep(120)", str(out)],
        cwd=ROOT, env={**ENV, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = subprocess.run([sys.executable, "run.py", "model=tiny", "hardware=cpu", "dataset.limit=1",
                               f"hydra.run.dir={out}"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 1 and f"in use by another run (pid {holder.pid} on " in proc.stderr, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["run.lock"]


def test_an_answer_graded_timeout_is_graded_once_more_after_the_run(tmp_path, monkeypatch):
    """The first try of every answer times out (as on a loaded node); the run grades those once more after its
    other grading, records the second verdict, marks it retried, and a resume does not retry again."""
    import grading

    real, calls = grading.grade, []

    def first_try_times_out(text, ref, **how):
        calls.append(text)
        if calls.count(text) == 1 and len(calls) <= 3:
            return grading.Verdict(False, "timeout", None, "")
        return real(text, ref, **how)

    monkeypatch.setattr(grading, "grade", first_try_times_out)
    out = tmp_path / "run"
    summary = run_once(out, problems=3)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["grade_retried"] for r in records), records
    assert all(r["grade_rule"] != "timeout" for r in records)
    assert all([r["correct"], r["grade_rule"]] == [(v := real(r["final_text"], r["reference"])).correct, v.rule]
               for r in records)
    assert summary["accuracy"] == sum(r["correct"] for r in records) / 3
    n = len(calls)
    run_once(out, problems=3)  # nothing to run, nothing timed out: no grading at all
    assert len(calls) == n


def test_records_of_problems_outside_the_selection_are_refused_naming_them(tmp_path):
    """4 records of an 8-problem run appended to a 4-problem run's results.jsonl were counted (n_problems 8)."""
    four, eight = tmp_path / "four", tmp_path / "eight"
    run_once(four, problems=4)
    run_once(eight, problems=8)
    foreign = (eight / "results.jsonl").read_text().splitlines(keepends=True)
    foreign = [line for line in foreign if json.loads(line)["id"] not in ids(four)]
    assert len(foreign) == 4
    with open(four / "results.jsonl", "a") as f:
        f.writelines(foreign)
    before = {p.name: p.read_bytes() for p in four.iterdir() if p.is_file() and p.name != "run.lock"}
    with pytest.raises(SystemExit) as info:
        run_once(four, problems=4)
    msg = str(info.value)
    assert "4 record(s) of problems that this run did not select" in msg, msg
    assert all(repr(json.loads(line)["id"]) in msg for line in foreign), msg
    after = {p.name: p.read_bytes() for p in four.iterdir() if p.is_file() and p.name != "run.lock"}
    assert after == before  # nothing rewritten, summary.json still says 4 problems
    assert json.loads((four / "summary.json").read_text())["n_problems"] == 4


def test_another_version_of_the_data_is_another_experiment(tmp_path):
    """The data's hash is part of the identity: a problem edited in the file (even one outside the selection)
    between a crash and the resume refuses the resume instead of mixing the two versions."""
    src = Path(os.environ["GSI_DATA_DIR"]) / "math500" / "test.jsonl"
    rows = src.read_text().splitlines(keepends=True)[:6]
    data = tmp_path / "data" / "math500"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text("".join(rows))
    out = tmp_path / "run"
    run_once(out, f"dataset.data_dir={tmp_path / 'data'}", problems=3)
    keep = (out / "results.jsonl").read_text().splitlines(keepends=True)[:2]
    (out / "results.jsonl").write_text("".join(keep))  # as if interrupted after 2 problems
    edited = json.loads(rows[5])
    edited["answer"] = "a different answer"
    (data / "test.jsonl").write_text("".join(rows[:5]) + json.dumps(edited) + "\n")
    with pytest.raises(SystemExit, match=r"differs in: data_sha256\)"):
        run_once(out, f"dataset.data_dir={tmp_path / 'data'}", problems=3)
    assert len(ids(out)) == 2
    (data / "test.jsonl").write_text("".join(rows))  # the data as it was: the resume goes ahead
    run_once(out, f"dataset.data_dir={tmp_path / 'data'}", problems=3)
    assert len(ids(out)) == 3


def test_a_failed_start_leaves_a_folder_the_corrected_command_can_use(tmp_path, monkeypatch):
    """A mistyped model path fails when the engines start, after experiment.json was written; the corrected
    command in the same folder (which holds no results) runs instead of being refused as another experiment."""
    import gsi.engines.registry as registry
    from gsi.run import run

    def engines_fail(cfg):
        raise OSError(f"{cfg.model.small.path}: no such model")

    monkeypatch.setattr(registry, "build_engines", engines_fail)
    out = tmp_path / "run"
    driver = _driver_module()
    with pytest.raises(OSError, match="no such model"):
        run(driver.compose(3, ["model.small.path=/no/such/modle"]), out=out)
    assert (out / "experiment.json").is_file() and not (out / "results.jsonl").exists()
    run_once(out, problems=3)  # the corrected command
    assert len(ids(out)) == 3
    exp = json.loads((out / "experiment.json").read_text())
    assert exp["model"]["small"]["path"] == "tiny://small"
    assert exp["provenance"]["models"]["small"]["path"] == "tiny://small"  # the failed start's is gone
    # results now: another experiment is refused again
    with pytest.raises(SystemExit, match=r"differs in: model\)"):
        run(driver.compose(3, ["model.small.path=/no/such/modle"]), out=out)


def test_a_hub_model_missing_offline_fails_at_once_naming_the_key(monkeypatch):
    """It took 184 s of download retries to fail; now before any engine or tokenizer loads."""
    import socket

    from huggingface_hub import constants

    import gsi.engines.registry as registry
    from gsi.config.schema import compose_config
    from gsi.engines.resolve import ConfigError

    cfg = compose_config("model=tiny", "hardware=cpu", "model.big.path=nobody/no-such-model")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=r"model\.big\.path='nobody/no-such-model': not in the local "
                                                   r"Hugging Face cache and HF_HUB_OFFLINE is set"):
        registry.build_engines(cfg)
    # HF_HUB_OFFLINE unset, but no route to the hub
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)

    def unreachable(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(ConfigError, match=r"model\.big\.path=.*cannot be reached: Network is unreachable"):
        registry.build_engines(cfg)
