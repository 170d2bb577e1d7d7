"""gsi.rundir.merge on synthetic shard run dirs: the merged run equals the unsharded one; bad shard sets are refused."""

import json

import pytest

from gsi.rundir import merge as M
from gsi.rundir.results import summarize

PARAMS = {"small": 1000, "big": 5000, "reward": 2000}
EXPERIMENT = {
    "model": {"name": "tiny"},
    "method": {"name": "gsi", "n": 2, "beta": 1.0},
    "dataset": {"name": "math500", "limit": 6, "offset": 0},
    "generation": {"temperature": 0.7, "max_steps": 3, "max_step_tokens": 16},
    "seed": 0,
    "shard": None,
    "beta": 1.0,
}


def record(pos: int, local_index: int) -> dict:
    """A result record for problem number `pos` of the unsharded run, at `local_index` within its shard."""
    return {
        "index": local_index, "id": f"p{pos:03d}", "problem": f"problem {pos}", "reference": str(pos),
        "final_text": f"answer {pos}", "extracted": str(pos), "correct": pos % 3 == 0, "grade_rule": "exact",
        "stop_reason": "eos" if pos % 2 else "max_steps", "steps": 1 + pos % 3, "acceptance": True,
        "accepted_steps": pos % 2, "steps_by": {"small": 1, "big": pos % 3}, "draft_tokens": 10 + pos,
        "accepted_draft_tokens": pos, "time_s": 0.5,
        "tokens": {r: {"generated": 10 * (pos + 1), "context": 100 + pos} for r in ("small", "big", "reward")},
    }


def write_run(d, experiment, records, *, summary=True, params=PARAMS):
    d.mkdir(parents=True)
    (d / "experiment.json").write_text(json.dumps(experiment))
    with open(d / "results.jsonl", "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    if summary:
        s = summarize(records, flops_per_token={r: 2.0 * params.get(r, 0) for r in PARAMS}, has_acceptance=True)
        s.update(method="gsi", dataset="math500", model="tiny", seed=0, beta=experiment["beta"], params=params,
                 wall_time_s=3.0, measured={})
        (d / "summary.json").write_text(json.dumps(s))
    return d


def make_shards(root, n=7, k=2, *, experiment=EXPERIMENT, skip=(), **kw):
    dirs = []
    for i in range(k):
        if i in skip:
            continue
        recs = [record(pos, local) for local, pos in enumerate(range(i, n, k))]
        dirs.append(write_run(root / f"{i}_shard={i}" / f"{k}", {**experiment, "shard": f"{i}/{k}"}, recs, **kw))
    return dirs


def test_merge_equals_unsharded(tmp_path):
    n, k = 7, 3
    dirs = make_shards(tmp_path / "sweep", n=n, k=k)
    out = tmp_path / "merged"
    summary = M.merge(out, dirs)

    unsharded = [record(pos, pos) for pos in range(n)]
    merged = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert merged == unsharded  # every problem once, in the dataset's order, with its unsharded index
    expected = summarize(unsharded, flops_per_token={r: 2.0 * p for r, p in PARAMS.items()}, has_acceptance=True)
    for key, value in expected.items():
        assert summary[key] == value, key
    assert summary["params"] == PARAMS and summary["beta"] == 1.0 and summary["method"] == "gsi"
    assert summary["flops"]["total"] > 0
    assert summary["wall_time_s"] == pytest.approx(3.0 * k)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert json.loads((out / "experiment.json").read_text()) == EXPERIMENT  # shard: null, like an unsharded run


def test_cli_takes_a_sweep_dir(tmp_path, capsys):
    make_shards(tmp_path / "sweep", n=5, k=2)
    (tmp_path / "sweep" / ".submitit" / "1_0").mkdir(parents=True)  # job logs are not run dirs
    assert M.main([str(tmp_path / "out"), str(tmp_path / "sweep")]) == 0
    assert "merged 2 shards, 5 problems" in capsys.readouterr().out
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 5
    # The output exists now: refused without --force.
    assert M.main([str(tmp_path / "out"), str(tmp_path / "sweep")]) == 1
    assert "--force" in capsys.readouterr().err
    assert M.main([str(tmp_path / "out"), str(tmp_path / "sweep"), "--force"]) == 0


def test_refuses_missing_shard(tmp_path):
    dirs = make_shards(tmp_path, n=8, k=4, skip=(2,))
    with pytest.raises(M.MergeError, match=r"missing shard\(s\) 2/4"):
        M.merge(tmp_path / "out", dirs)


def test_refuses_shard_given_twice(tmp_path):
    dirs = make_shards(tmp_path / "a", n=4, k=2) + make_shards(tmp_path / "b", n=4, k=2)[:1]
    with pytest.raises(M.MergeError, match="more than once: 0/2"):
        M.merge(tmp_path / "out", dirs)


def test_refuses_overlapping_shards(tmp_path):
    dirs = make_shards(tmp_path, n=6, k=2)
    # Shard 1/2 also holds problem 0 (as if shard selection had changed between runs).
    with open(dirs[1] / "results.jsonl", "a") as f:
        f.write(json.dumps(record(0, 3)) + "\n")
    with pytest.raises(M.MergeError, match=r"overlap: 0/2 and 1/2 both hold 1 problem\(s\) \(p000\)"):
        M.merge(tmp_path / "out", dirs, allow_incomplete=True)


@pytest.mark.parametrize("key,value", [("beta", 2.0), ("seed", 1),
                                       ("method", {**EXPERIMENT["method"], "n": 4}),
                                       ("generation", {**EXPERIMENT["generation"], "max_steps": 5})])
def test_refuses_different_experiments(tmp_path, key, value):
    a = make_shards(tmp_path / "a", n=4, k=2)
    b = make_shards(tmp_path / "b", n=4, k=2, experiment={**EXPERIMENT, key: value})
    with pytest.raises(M.MergeError, match=f"different experiments .*differ in: {key}"):
        M.merge(tmp_path / "out", [a[0], b[1]])


def test_refuses_different_k_and_non_shards(tmp_path):
    a = make_shards(tmp_path / "a", n=4, k=2)
    b = make_shards(tmp_path / "b", n=4, k=3)
    with pytest.raises(M.MergeError, match="different ways: k = 2, 3"):
        M.merge(tmp_path / "out", [a[0], *b[1:]])
    whole = write_run(tmp_path / "whole", EXPERIMENT, [record(p, p) for p in range(4)])
    with pytest.raises(M.MergeError, match="not a shard"):
        M.merge(tmp_path / "out", [whole])
    (tmp_path / "empty").mkdir()
    with pytest.raises(M.MergeError, match="no run dir"):
        M.merge(tmp_path / "out", [tmp_path / "empty"])


def test_refuses_unfinished_shards_unless_allowed(tmp_path):
    dirs = make_shards(tmp_path, n=6, k=2)
    (dirs[0] / "summary.json").unlink()  # still running, or killed before the end
    with pytest.raises(M.MergeError, match=r"unfinished shard\(s\): 0/2 .*no readable summary.json, 3 results so far"):
        M.merge(tmp_path / "out", dirs)
    # Results appended after the summary was written: a resumed run that has not finished yet.
    summary = M.merge(tmp_path / "out", dirs, allow_incomplete=True)
    assert summary["incomplete_shards"] == ["0/2"] and summary["n_problems"] == 6
    assert summary["params"] == PARAMS  # from the finished shard

    dirs = make_shards(tmp_path / "again", n=6, k=2)
    with open(dirs[1] / "results.jsonl", "a") as f:
        f.write(json.dumps(record(99, 3)) + "\n")
    with pytest.raises(M.MergeError, match="4 results, its summary.json says 3"):
        M.merge(tmp_path / "out2", dirs)


def test_reads_shards_without_touching_them(tmp_path):
    dirs = make_shards(tmp_path, n=6, k=2)
    path = dirs[1] / "results.jsonl"
    torn = path.read_bytes() + b'{"index": 3, "id": "p007", "fin'  # a job killed mid-write
    path.write_bytes(torn)
    summary = M.merge(tmp_path / "out", dirs)
    assert summary["n_problems"] == 6
    assert path.read_bytes() == torn


def test_params_from_any_shard_and_must_agree(tmp_path):
    dirs = make_shards(tmp_path, n=4, k=2)
    s0 = json.loads((dirs[0] / "summary.json").read_text())
    s0["params"] = {}  # resumed with nothing left to do: no engines, no sizes
    (dirs[0] / "summary.json").write_text(json.dumps(s0))
    assert M.merge(tmp_path / "out", dirs)["params"] == PARAMS
    s0["params"] = {**PARAMS, "big": 1}
    (dirs[0] / "summary.json").write_text(json.dumps(s0))
    with pytest.raises(M.MergeError, match="different model sizes"):
        M.merge(tmp_path / "out", dirs, force=True)


def test_a_bad_shard_is_a_merge_error(tmp_path):
    for bad in ("4/4", "-1/2", "1", "a/b"):
        (tmp_path / "experiment.json").write_text(json.dumps({"shard": bad}))
        with pytest.raises(M.MergeError, match="experiment.json: shard must"):
            M.load_shard(tmp_path)


def test_truncated_summary_or_experiment_is_a_clear_error(tmp_path):
    """A shard killed while writing summary.json counts as unfinished (not a JSONDecodeError); an unreadable or
    missing experiment.json is named."""
    dirs = make_shards(tmp_path, n=6, k=2)
    text = (dirs[0] / "summary.json").read_text()
    (dirs[0] / "summary.json").write_text(text[: len(text) // 2])
    with pytest.raises(M.MergeError, match=r"unfinished shard\(s\): 0/2 .*no readable summary.json"):
        M.merge(tmp_path / "out", dirs)
    assert M.merge(tmp_path / "out", dirs, allow_incomplete=True)["incomplete_shards"] == ["0/2"]
    (dirs[1] / "experiment.json").write_bytes(b'{"shard": "1/')
    with pytest.raises(M.MergeError, match=r"experiment.json is unreadable"):
        M.merge(tmp_path / "out2", dirs)
    (dirs[1] / "experiment.json").unlink()
    with pytest.raises(M.MergeError, match=r"no run dir \(experiment.json\) in it"):
        M.merge(tmp_path / "out3", dirs)
