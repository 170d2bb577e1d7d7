"""results.jsonl parsing and repair, without engines."""

import json

from gsi.results import ResultsFile, bootstrap_ci, parse_results


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
