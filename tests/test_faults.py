"""Fault tolerance: kills at random moments, SIGTERM/SIGINT, an engine dying mid-run and a corrupt results line all
end with every finished problem saved once, and a rerun of the same command gives the uninterrupted run's results.

Most runs use tests/fault_driver.py: the real `gsi.run.run` on exact table engines in a subprocess (~2 s to
start, `--delay` per engine call so that signals land mid-run). `run.py` on the tiny vLLM models with its own
engines (Ctrl-C to its whole process group; an EngineCore process killed under it) is tests/test_run.py's.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gsi.rundir.results import MEASURED_KEYS

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GSI_DATA_DIR", str(ROOT.parent / "shared" / "data"))
DRIVER = ROOT / "tests" / "fault_driver.py"
N = 24  # problems per driver run
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _load_driver():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fault_driver", DRIVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finish(out: Path) -> None:
    """A rerun of the same command, in this process (no faults, so no need for a subprocess)."""
    _load_driver().run_once(out, N)


def driver(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(DRIVER), str(out), "--problems", str(N), *extra]


def comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in MEASURED_KEYS}


def lines(out: Path) -> list[str]:
    path = out / "results.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def saved_ids(out: Path) -> list[str]:
    """Ids of the complete lines (a kill may leave a half-written last line, which resume drops)."""
    ids = []
    for line in lines(out):
        try:
            ids.append(json.loads(line)["id"])
        except ValueError:
            pass
    return ids


def records(out: Path) -> dict:
    rows = [json.loads(line) for line in lines(out)]
    return {r["id"]: {k: v for k, v in r.items() if k != "time_s"} for r in rows}


def wait_for_results(proc, out: Path, at_least: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and len(lines(out)) < at_least:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before the fault could be injected"


def assert_same_as_reference(out: Path, reference: Path) -> None:
    ids = saved_ids(out)
    assert len(ids) == N and len(set(ids)) == N, "every problem exactly once"
    assert records(out) == records(reference)
    assert comparable(json.loads((out / "summary.json").read_text())) == \
        comparable(json.loads((reference / "summary.json").read_text()))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    finish(out)
    return out


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun(tmp_path, reference):
    seed = int(os.environ.get("GSI_FAULT_SEED", time.time_ns() % 10**6))
    print(f"kill moments drawn with GSI_FAULT_SEED={seed}")
    rng = random.Random(seed)
    midway = 0
    for attempt in range(5):
        before = len(saved_ids(tmp_path))
        proc = subprocess.Popen(driver(tmp_path, "--delay", "0.03"), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        if attempt == 0:  # during startup
            time.sleep(rng.uniform(0.2, 1.0))
        else:  # at a random moment once this attempt has made progress
            deadline = time.time() + 120
            while proc.poll() is None and len(lines(tmp_path)) <= before and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=300)
        ids = saved_ids(tmp_path)
        assert len(ids) == len(set(ids)), f"seed {seed}, attempt {attempt}: a problem saved twice"
        midway += before < len(ids) < N
    finish(tmp_path)  # the rerun after the last kill
    assert midway >= 3, f"seed {seed}: too few kills landed mid-run to test anything"
    assert_same_as_reference(tmp_path, reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_finished_problems_saved(sig, tmp_path, reference):
    proc = subprocess.Popen(driver(tmp_path, "--delay", "0.03"), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_results(proc, tmp_path, 2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err[-2000:]
    k = len(lines(tmp_path))
    assert 2 <= k < N
    assert f"interrupted ({sig.name}): {k} of {N} problems saved in {tmp_path / 'results.jsonl'}; " \
           "rerun the same command to resume" in err
    assert "Traceback" not in err
    assert len(saved_ids(tmp_path)) == k and not (tmp_path / "summary.json").exists()

    finish(tmp_path)
    assert_same_as_reference(tmp_path, reference)


@pytest.mark.slow
@pytest.mark.parametrize("role,after", [("small", 12), ("big", 5), ("reward", 12)])
def test_engine_dying_mid_run_names_the_role_and_rerun_resumes(role, after, tmp_path, reference):
    out = subprocess.run(driver(tmp_path, "--fail-role", role, "--fail-after", str(after)), env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    k = len(lines(tmp_path))
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"the {role} engine failed (EngineDied: ")
    assert last.endswith(f"{k} of {N} problems saved in {tmp_path / 'results.jsonl'}; rerun the same command to resume")
    assert k < N

    finish(tmp_path)
    assert_same_as_reference(tmp_path, reference)


@pytest.mark.vllm
def test_corrupt_line_in_the_middle_is_reported_and_redone(tiny_engines, make_cfg, tmp_path, caplog):
    from gsi.run import run

    cfg = make_cfg("model=tiny", "hardware=cpu", "dataset=math500", "dataset.limit=4", "method=gsi", "method.n=2",
                   "method.threshold=0.5", "generation.max_steps=3", "generation.max_step_tokens=12")
    first = run(cfg, out=tmp_path, engines=tiny_engines)
    before = records(tmp_path)
    rows = lines(tmp_path)
    rows[1] = rows[1][: len(rows[1]) // 2]  # line 2 of 4: half a record
    (tmp_path / "results.jsonl").write_text("\n".join(rows) + "\n")

    with caplog.at_level(logging.WARNING, logger="gsi.rundir.results"):
        second = run(cfg, out=tmp_path, engines=tiny_engines)
    assert "corrupt line 2" in caplog.text and "redone" in caplog.text
    ids = saved_ids(tmp_path)
    assert len(ids) == 4 and len(set(ids)) == 4
    assert records(tmp_path) == before  # the redone problem makes the same choices
    assert comparable(second) == comparable(first)
