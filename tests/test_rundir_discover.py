"""gsi.rundir.discover (which folders are run folders) and gsi.rundir.summary (summary.json's results part): the one
definition the report, the shard merge and a run share."""

import json

import pytest

from gsi.rundir.discover import find_run_dirs
from gsi.rundir.results import summarize
from gsi.rundir.summary import run_summary


def touch(path, text="{}"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_finds_run_folders_at_any_depth_and_skips_the_tools_folders(tmp_path):
    touch(tmp_path / "sweep" / "0" / "summary.json")
    touch(tmp_path / "sweep" / "0" / "results.jsonl", "")
    touch(tmp_path / "sweep" / "1" / "experiment.json")  # started, nothing finished
    touch(tmp_path / "sweep" / "deep" / "er" / "results.jsonl", "")  # unfinished
    touch(tmp_path / "sweep" / "0" / "wandb" / "summary.json")  # W&B's own files are not a run
    touch(tmp_path / "sweep" / "0" / ".hydra" / "summary.json")
    touch(tmp_path / "sweep" / ".submitit" / "1" / "experiment.json")
    touch(tmp_path / "sweep" / "notes" / "README.txt", "")
    found = find_run_dirs([tmp_path / "sweep"])
    s = tmp_path / "sweep"
    assert found == {s / "0": {"summary.json", "results.jsonl"}, s / "1": {"experiment.json"},
                     s / "deep" / "er": {"results.jsonl"}}
    # A run folder named directly, and named twice: once, in the order first named.
    again = find_run_dirs([s / "deep", s])
    assert list(again)[0] == s / "deep" / "er" and len(again) == 3


def test_a_path_that_is_not_there_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        find_run_dirs([tmp_path / "nope"])


def _record(i, correct, acceptance=True):
    return {"index": i, "id": f"p{i}", "correct": correct, "steps": 2, "accepted_steps": 1, "acceptance": acceptance,
            "steps_by": {"small": 1, "big": 1}, "chosen_draft_tokens": 4, "accepted_draft_tokens": 2,
            "stop_reason": "eos", "time_s": 0.1,
            "tokens": {r: {"generated": 10 + i, "context": 50} for r in ("small", "big", "reward")}}


def test_run_summary_is_the_totals_then_the_identity_in_summary_json_order():
    records = [_record(0, True), _record(1, False), _record(2, True)]
    params = {"small": 1000, "big": 7000, "reward": 3000}
    s = run_summary(records, params, method="gsi", dataset="math500", model="tiny", seed=3, beta=2.0, grader="ours")
    totals = summarize(records, flops_per_token={r: 2.0 * p for r, p in params.items()}, has_acceptance=True)
    assert list(s) == list(totals) + ["method", "dataset", "model", "seed", "beta", "params", "grader"]
    assert {k: s[k] for k in totals} == totals
    assert s["flops"]["big"] == 2.0 * 7000 * sum(10 + i + 50 for i in range(3))
    assert (s["method"], s["seed"], s["beta"], s["params"], s["grader"]) == ("gsi", 3, 2.0, params, "ours")
    # The acceptance rates come from the records' own flag; a role without a parameter count costs nothing.
    no_acc = run_summary([_record(0, True, acceptance=False)], {"small": 10}, method="bon", dataset="d", model="m",
                         seed=0, beta=1.0, grader="ours")
    assert no_acc["acceptance_rate"] is None and no_acc["flops"]["big"] == 0.0
    assert json.loads(json.dumps(s)) == s
