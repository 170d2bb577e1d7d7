"""results.jsonl parsing and repair, without engines."""

import json
import os

from gsi.rundir.results import ResultsFile, bootstrap_ci, parse_results


def line(i):
    return json.dumps({"id": f"p{i}", "correct": True}).encode() + b"\n"


def test_parse_flags_corrupt_torn_and_duplicate_lines():
    raw = line(0) + b"{not json\n" + line(1) + line(0) + line(2).rstrip(b"\n")
    records, bad, dup = parse_results(raw)
    assert list(records) == ["p0", "p1"]
    assert bad == [2, 5]  # the corrupt line, and the last line whose newline never made it
    assert dup == [4]


def test_load_rewrites_the_file_without_bad_lines(tmp_path, caplog):
    path = tmp_path / "results.jsonl"
    path.write_bytes(line(0) + b'{"id": "p1", "corr' + b"\n" + line(2))
    records = ResultsFile(path).load()
    assert list(records) == ["p0", "p2"]
    assert "corrupt line 2" in caplog.text
    assert path.read_bytes() == line(0) + line(2)
    ResultsFile(path).append({"id": "p1", "correct": False})
    assert list(ResultsFile(path).load()) == ["p0", "p2", "p1"]


def test_bootstrap_ci_brackets_the_mean():
    lo, hi = bootstrap_ci([1] * 30 + [0] * 70)
    assert lo < 0.3 < hi and hi - lo < 0.25
    assert bootstrap_ci([]) is None


def test_accuracy_interval_does_not_collapse_at_0_or_100_percent():
    """A percentile bootstrap of 2 of 2 correct is [100%, 100%]; the Wilson interval is honest about n = 2."""
    from gsi.rundir.results import proportion_ci, summarize

    rec = {"correct": True, "steps": 1, "accepted_steps": 0, "draft_tokens": 0, "accepted_draft_tokens": 0,
           "stop_reason": "eos", "tokens": {r: {"generated": 1, "context": 1} for r in ("small", "big", "reward")}}
    lo, hi = summarize([rec, dict(rec)], flops_per_token={"small": 1, "big": 1, "reward": 1},
                       has_acceptance=False)["accuracy_ci95"]
    assert hi == 1.0 and 0.2 < lo < 0.5
    lo, hi = proportion_ci(0, 2)
    assert lo == 0.0 and 0.5 < hi < 0.8
    # Wilson vs Clopper-Pearson ("exact"), 30 of 100: both bracket 0.3; the exact one is the wider.
    w, cp = proportion_ci(30, 100), proportion_ci(30, 100, method="exact")
    assert w[0] < 0.3 < w[1] and cp[0] <= w[0] and cp[1] >= w[1]
    assert proportion_ci(0, 0) is None


def test_each_append_is_on_disk_before_it_returns(tmp_path, monkeypatch):
    """A finished problem counts as saved once append returns: its line is flushed and fsynced (a power cut after
    that keeps it), so a resume never redoes nor loses it."""
    path = tmp_path / "results.jsonl"
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append((os.fstat(fd).st_ino, os.fstat(fd).st_size))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    results = ResultsFile(path)
    for i in range(3):
        results.append({"id": f"p{i}", "correct": True})
        # the file itself, synced with this record's line in it
        assert synced and synced[-1] == (path.stat().st_ino, path.stat().st_size), synced
    assert len(synced) == 3
