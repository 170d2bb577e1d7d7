"""Sweep previews (python -m gsi.cluster.preview) and the refusal of a sweep preset run without -m."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

from gsi.cluster.preview import expand, preview

REPO = Path(__file__).resolve().parent.parent


def test_preview_expands_a_preset_as_multirun_would():
    p = preview(["+experiment=tiny_sweep"])
    got = [(j["config"]["method"], j["config"]["n"], j["config"]["beta"]) for j in p["jobs"]]
    assert got == list(itertools.product(["gsi", "rsd"], [1, 2], [1.0, 20.0]))  # Hydra's order
    assert p["n_jobs"] == 8 and all(j["config"]["model"] == "tiny" and j["config"]["limit"] == 2 for j in p["jobs"])
    # A command-line value replaces the preset's sweep of that key; a new sweep multiplies.
    jobs = expand(["+experiment=tiny_sweep", "beta=5", "seed=0,1,2"])
    assert len(jobs) == 2 * 2 * 1 * 3
    assert {o for j in jobs for o in j if o.startswith("beta=")} == {"beta=5"}


def test_preview_resolves_the_slurm_request_per_job():
    p = preview(["+experiment=paper_rsd", "hydra/launcher=submitit_slurm", "dataset=math500", "method.n=16",
                 "hardware=gpu1,gpu3"])
    assert p["n_jobs"] == 6  # 3 beta x 2 hardware
    for j in p["jobs"]:
        gpus = {"gpu1": 1, "gpu3": 3}[j["config"]["hardware"]]
        assert j["launcher"]["gpus_per_node"] == gpus and isinstance(j["launcher"]["mem_gb"], int)
        assert j["launcher"]["launcher"] == "SlurmLauncher" and "${" not in json.dumps(j["launcher"])
        assert j["config"]["threshold"] == "δ = 0.7"


def test_preview_puts_a_score_threshold_on_the_u_scale():
    """paper_gsi's threshold is the reference code's score s > 10 (threshold_on=score): shown as u = s/β, never
    as `u=10` beside gsi_threshold's u on the tilted reward."""
    p = preview(["+experiment=paper_gsi", "dataset=math500", "method.n=16"])
    got = {j["config"]["beta"]: j["config"]["threshold"] for j in p["jobs"]}
    assert got == {10.0: "u = s/β = 1, s = 10", 20.0: "u = s/β = 0.5, s = 10", 40.0: "u = s/β = 0.25, s = 10"}
    p = preview(["+experiment=gsi_threshold", "dataset=math500", "method.threshold=0.3"])
    assert {j["config"]["threshold"] for j in p["jobs"]} == {"u = 0.3"}


def test_cli_table_and_one_job_in_full():
    cmd = [sys.executable, "-m", "gsi.cluster.preview", "+experiment=tiny_sweep"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("8 job(s)") and "method=rsd method.n=2 beta=20" in out.stdout
    out = subprocess.run(cmd + ["--job", "7"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "# job 7: method=rsd method.n=2 beta=20" in out.stdout
    assert "name: rsd" in out.stdout and "${" not in out.stdout
    out = subprocess.run(cmd + ["--job", "8"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "0..7" in out.stderr


def test_sweep_preset_without_multirun_refuses_with_the_fix(tmp_path):
    base = [sys.executable, "-m", "experiments.synthetic", "+experiment=tiny_sweep", f"hydra.run.dir={tmp_path / 'r'}"]
    out = subprocess.run(base, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "+experiment=tiny_sweep is a sweep (2 method x 2 method.n x 2 beta): run it with -m" in out.stderr
    assert "python -m gsi.cluster.preview" in out.stderr and not (tmp_path / "r" / "results.jsonl").exists()
    # Every swept key pinned: exactly one job, as asked.
    out = subprocess.run(base + ["method=gsi", "method.n=1", "beta=1"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "r" / "summary.json").exists()
