"""Provenance: what produced a run's numbers is recorded (versions, commit, grader, model fingerprints, dataset
hashes), pins reach the hub loaders, and a resume after the code changed warns instead of refusing."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from gsi.rundir import provenance
from gsi.config.schema import compose_config

REPO = Path(__file__).resolve().parent.parent
DATA = Path("/work/shared/data")


def test_collect_names_versions_commit_grader_models_and_data(tmp_path, monkeypatch):
    # A local model folder (fingerprinted from its files) and a local dataset file (hashed).
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"a": 1}')
    (model / "model.safetensors").write_bytes(b"weights")
    data = tmp_path / "data" / "math500"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text('{"problem": "1+1", "answer": "2", "unique_id": "a"}\n')
    cfg = compose_config("model=tiny", "hardware=cpu", f"model.big.path={model}", f"dataset.data_dir={tmp_path / 'data'}")
    from gsi.data import load_problems

    prov = provenance.collect(cfg, load_problems(cfg.dataset))
    assert prov["packages"]["transformers"] and prov["packages"]["math-verify"] and "vllm" in prov["packages"]
    assert len(prov["git"]["commit"]) == 40 and isinstance(prov["git"]["dirty"], bool)
    assert all((REPO / f).exists() for f in prov["git"]["changed_files"])  # paths, not cut ones
    assert prov["grader"]["name"] and prov["grader"]["source_sha256"] and prov["grader"]["math_verify"]
    big = prov["models"]["big"]
    assert big["fingerprint"] == provenance.folder_fingerprint(model)
    (model / "model.safetensors").write_bytes(b"weights2")  # other weights: another fingerprint
    assert provenance.folder_fingerprint(model) != big["fingerprint"]
    ds = prov["dataset"]
    assert ds["source"] == "local" and ds["sha256"] == hashlib.sha256((data / "test.jsonl").read_bytes()).hexdigest()
    assert ds["problems"] == 1 and len(ds["problems_sha256"]) == 64
    # A hub model: its configured revision, and the cached commit (None: not downloaded here).
    hub = provenance.model_revision("Qwen/Qwen2.5-Math-7B-Instruct", "abc123")
    assert hub == {"path": "Qwen/Qwen2.5-Math-7B-Instruct", "revision": "abc123", "commit": None}


def test_large_weight_files_are_hashed_by_head_and_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "FULL_HASH_BYTES", 3 << 20)
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"a" * (4 << 20))
    h1 = provenance.sha256_file(f, partial_over=provenance.FULL_HASH_BYTES)
    with open(f, "r+b") as fh:
        fh.seek((4 << 20) - 10)
        fh.write(b"b")  # the tail changed
    assert provenance.sha256_file(f, partial_over=provenance.FULL_HASH_BYTES) != h1


def test_run_records_provenance_and_resumes_with_another_commit(tmp_path, monkeypatch, caplog):
    """experiment.json carries the provenance outside the identity: the same folder resumes; a commit change
    between the crash and the resume is warned about and recorded, not refused."""
    from experiments.synthetic import synthetic_run

    out = tmp_path / "run"
    synthetic_run(["method=gsi", "method.n=2"], out, n_problems=3)
    exp = json.loads((out / "experiment.json").read_text())
    prov = exp["provenance"]
    assert prov["git"]["commit"] and prov["models"]["small"]["path"] == "tiny://small"
    from gsi.models import tiny

    if (tiny.tiny_dir() / "small").is_dir():  # built (the vLLM tests build them): fingerprinted from its files
        assert prov["models"]["small"]["fingerprint"] not in (None, hashlib.sha256().hexdigest())
        assert prov["models"]["small"]["fingerprint"] != prov["models"]["big"]["fingerprint"]
    assert prov["dataset"]["problems"] == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["provenance"]["packages"] == prov["packages"]
    (out / "summary.json").unlink()
    # Same code: a resume adds nothing.
    synthetic_run(["method=gsi", "method.n=2"], out, n_problems=3)
    assert "provenance_resumed" not in json.loads((out / "experiment.json").read_text())
    # "Another commit": the resume warns and records both.
    real = provenance.git_state
    monkeypatch.setattr(provenance, "git_state", lambda *a: {**real(), "commit": "0" * 40})
    caplog.set_level(logging.WARNING, logger="gsi.rundir.provenance")
    synthetic_run(["method=gsi", "method.n=2"], out, n_problems=3)
    exp = json.loads((out / "experiment.json").read_text())
    assert exp["provenance"]["git"]["commit"] == prov["git"]["commit"]
    assert [p["git"]["commit"] for p in exp["provenance_resumed"]] == ["0" * 40]
    assert "git.commit" in caplog.text
    # The identity check still refuses another experiment.
    with pytest.raises(SystemExit, match="different experiment"):
        synthetic_run(["method=gsi", "method.n=4"], out, n_problems=3)


def test_dataset_revision_pins_the_hub_download(monkeypatch):
    import datasets

    from gsi.data import load_problems

    seen = {}

    def fake_load(path, name=None, split=None, revision=None, **kw):
        seen.update(path=path, revision=revision)
        return datasets.Dataset.from_list([{"problem": "p", "answer": "1", "unique_id": "x"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = compose_config("dataset=math500", "dataset.data_dir=null", "dataset.revision=deadbeef")
    assert len(load_problems(cfg.dataset)) == 1 and seen["revision"] == "deadbeef"


def test_model_revision_reaches_vllm(monkeypatch):
    from gsi.engines.plan import Plan
    from gsi.engines.resolve import ResolvedModel
    from gsi.engines.specs import engine_specs

    cfg = compose_config("hardware=gpu1", "model.big.revision=v1.2")
    plan = Plan.__new__(Plan)
    plan.placement = "gpu1"
    plan.models = {r: ResolvedModel(r, f"org/{r}", False) for r in ("small", "big", "reward")}
    plan.adapter = "qwen_prm"
    specs = {s.role: s.kwargs for s in engine_specs(cfg, plan)}
    assert specs["big"]["revision"] == specs["big"]["tokenizer_revision"] == "v1.2"
    assert "revision" not in specs["small"]


def test_missing_data_folder_names_itself_and_the_fix(tmp_path):
    from gsi.data import DatasetError, load_problems

    cfg = compose_config("dataset=math500", f"dataset.data_dir={tmp_path / 'nope'}")
    with pytest.raises(DatasetError, match=r"nope.*not a folder.*unset GSI_DATA_DIR"):
        load_problems(cfg.dataset)
    cfg = compose_config("dataset=olympiad", f"dataset.data_dir={tmp_path}")
    with pytest.raises(DatasetError, match=r"no such file.*dataset.data_dir=null"):
        load_problems(cfg.dataset)


def test_a_resume_on_a_tree_edited_again_is_warned_about(tmp_path, caplog):
    """Edit a file, start a run, edit another file, resume: commit, branch and the dirty flag are all the same,
    the working tree's diff is not; the resume warns and records both (provenance_resumed)."""
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    (repo / "a.py").write_text("A = 1\n")
    (repo / "b.py").write_text("B = 1\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    clean = provenance.git_state(repo)
    assert clean["dirty"] is False and clean["diff_sha256"] is None
    (repo / "a.py").write_text("A = 2\n")
    started = provenance.git_state(repo)
    (repo / "b.py").write_text("B = 2\n")
    resumed = provenance.git_state(repo)
    same = ("commit", "dirty", "branch")
    assert [started[k] for k in same] == [resumed[k] for k in same] and started["dirty"] is True
    assert started["diff_sha256"] != resumed["diff_sha256"]
    assert provenance.git_state(repo)["diff_sha256"] == resumed["diff_sha256"]  # a hash of the diff, nothing else

    out = tmp_path / "run"
    out.mkdir()
    (out / "experiment.json").write_text("{}")
    provenance.record(out, {"git": started})
    provenance.record(out, {"git": dict(started)})  # the same tree: nothing to say
    assert "provenance_resumed" not in json.loads((out / "experiment.json").read_text())
    caplog.set_level(logging.WARNING, logger="gsi.rundir.provenance")
    provenance.record(out, {"git": resumed})
    exp = json.loads((out / "experiment.json").read_text())
    assert [p["git"]["diff_sha256"] for p in exp["provenance_resumed"]] == [resumed["diff_sha256"]]
    assert "git.diff_sha256" in caplog.text
    # A record written before the diff was hashed: unknown, not a difference.
    old = {k: v for k, v in started.items() if k != "diff_sha256"}
    assert provenance.differences({"git": old}, {"git": resumed}) == []
