"""The dataset registry (gsi/data/: registry, benchmarks, loaders, selection): local loading, references, errors, offset/limit/shard selection."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

import gsi.data as data
from grading.boxed import last_boxed
from gsi.data import DatasetError, Problem, load_problems, parse_shard, select
from gsi.data.loaders import rows_to_problems

DATA = Path(os.environ.get("GSI_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data not found at {DATA} (set GSI_DATA_DIR)")

# name -> (record count from shared/data/README.md, a few (index, reference) pairs)
EXPECTED = {
    "math500": (500, [(0, "\\left( 3, \\frac{\\pi}{2} \\right)")]),
    "olympiad": (675, [(0, "2"), (1, "\\frac{1}{2 n+2}"), (13, "69,84")]),
    "minerva": (272, [(0, "1.6")]),
    "aime24": (30, [(0, "204")]),
    "amc23": (40, [(0, "27"), (1, "36")]),
    "gsm8k": (1319, [(0, "18"), (2, "70000")]),
}


def cfg(name, **kw):
    spec = data.REGISTRY[name]
    base = dict(name=name, hub_path=spec.hub_path, hub_config=spec.hub_config, split=spec.split,
                data_dir=str(DATA), local_file=spec.local_file, limit=None, offset=0)
    base.update(kw)
    return SimpleNamespace(**base)


def test_registry_names():
    assert set(EXPECTED) <= set(data.REGISTRY)
    assert data.REGISTRY["olympiad"].hub_config == "OE_TO_maths_en_COMP"
    assert data.REGISTRY["gsm8k"].hub_config == "main"
    assert data.REGISTRY["aime24"].split == "train"


@needs_data
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_local_datasets_load(name):
    count, samples = EXPECTED[name]
    problems = load_problems(cfg(name))
    assert len(problems) == count
    ids = [p.id for p in problems]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(i, str) for i in ids)
    assert all(isinstance(p, Problem) and p.problem.strip() and p.reference.strip() for p in problems)
    for index, reference in samples:
        assert problems[index].reference == reference


@needs_data
def test_reference_conventions():
    m = load_problems(cfg("math500"))
    assert m[0].id == "test/precalculus/807.json" and m[0].solution and "\\boxed" in m[0].solution
    gsm = load_problems(cfg("gsm8k"))
    assert all("," not in p.reference and "####" not in p.reference for p in gsm)
    assert gsm[0].solution.endswith("#### 18")
    amc = load_problems(cfg("amc23"))
    assert all(not p.reference.endswith(".0") for p in amc) and amc[0].solution is None
    aime = load_problems(cfg("aime24"))
    assert [p.reference for p in aime].count("025") == 1  # kept as written; the grader equates 025 and 25
    minerva = load_problems(cfg("minerva"))
    assert all(p.reference == last_boxed(p.solution) for p in minerva)
    olympiad = load_problems(cfg("olympiad"))
    assert all("$" not in p.reference for p in olympiad)


@needs_data
def test_data_dir_relative_to_cwd(monkeypatch):
    monkeypatch.chdir(DATA.parent)
    assert len(load_problems(cfg("aime24", data_dir=DATA.name))) == 30


def test_unknown_dataset_lists_registered_names():
    with pytest.raises(DatasetError) as e:
        load_problems(SimpleNamespace(name="nope", data_dir="/nonexistent"))
    for name in EXPECTED:
        assert name in str(e.value)


def _write(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_malformed_line_names_file_and_line(tmp_path):
    f = _write(tmp_path / "math500" / "test.jsonl", [
        {"problem": "1+1?", "answer": "2", "unique_id": "a"},
        {"problem": "2+2?", "answer": "4", "unique_id": "b"},
        '{"problem": "3+3?", "answer": ',
        {"problem": "4+4?", "answer": "8", "unique_id": "d"},
    ])
    with pytest.raises(DatasetError) as e:
        load_problems(cfg("math500", data_dir=str(tmp_path)))
    assert f"{f}:3" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_non_object_line(tmp_path):
    f = _write(tmp_path / "math500" / "test.jsonl", [{"problem": "1+1?", "answer": "2"}, "[1, 2]"])
    with pytest.raises(DatasetError, match=rf"{f}:2"):
        load_problems(cfg("math500", data_dir=str(tmp_path)))


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_problems(cfg("math500", data_dir=str(tmp_path)))


def test_rows_without_answer_or_problem_are_reported_by_id(tmp_path):
    _write(tmp_path / "aime24" / "test.jsonl", [
        {"id": 10, "problem": "p10", "answer": "1"},
        {"id": 11, "problem": "p11", "answer": None},
        {"id": 12, "problem": "p12", "answer": "3"},
        {"id": 13, "problem": "", "answer": "4"},
        {"id": 14, "problem": "p14", "answer": "  "},
    ])
    with pytest.raises(DatasetError) as e:
        load_problems(cfg("aime24", data_dir=str(tmp_path)))
    msg = str(e.value)
    assert "id=11" in msg and "id=13" in msg and "id=14" in msg
    assert "id=10" not in msg and "id=12" not in msg
    assert "3 row(s)" in msg


def test_missing_field_names_dataset_and_field(tmp_path):
    _write(tmp_path / "gsm8k" / "test.jsonl", [{"question": "q", "solution": "s"}])
    with pytest.raises(DatasetError) as e:
        load_problems(cfg("gsm8k", data_dir=str(tmp_path)))
    assert "gsm8k" in str(e.value) and "answer" in str(e.value)


def test_duplicate_ids_fail(tmp_path):
    _write(tmp_path / "aime24" / "test.jsonl", [
        {"id": 1, "problem": "a", "answer": "1"}, {"id": 1, "problem": "b", "answer": "2"}])
    with pytest.raises(DatasetError, match="duplicate"):
        load_problems(cfg("aime24", data_dir=str(tmp_path)))


def test_ids_default_to_row_index_and_hub_field_names(tmp_path):
    # hub-style Minerva (question/answer, no solution) and rows without any id field
    _write(tmp_path / "minerva_math" / "test.jsonl", [
        {"question": "q0", "answer": "1.5"}, {"question": "q1", "answer": "2"}])
    ps = load_problems(cfg("minerva", data_dir=str(tmp_path)))
    assert [p.id for p in ps] == ["0", "1"]
    assert [p.reference for p in ps] == ["1.5", "2"]
    assert ps[0].problem == "q0" and ps[0].solution is None


def test_olympiad_answer_list_and_dollars(tmp_path):
    _write(tmp_path / "olympiadbench" / "test.jsonl", [
        {"id": 1, "question": "q", "final_answer": ["$69$,$84$"], "solution": ["s1", "s2"]},
        {"id": 2, "question": "q", "final_answer": ["$\\frac{1}{2}$"], "solution": ["s"]},
    ])
    ps = load_problems(cfg("olympiad", data_dir=str(tmp_path)))
    assert [p.reference for p in ps] == ["69,84", "\\frac{1}{2}"]
    assert ps[0].solution == "s1\n\ns2"


def test_amc_float_answers(tmp_path):
    _write(tmp_path / "amc23" / "test.jsonl", [
        {"id": 0, "question": "q", "answer": 27.0}, {"id": 1, "question": "q", "answer": 0.5},
        {"id": 2, "question": "q", "answer": -1.0}])
    assert [p.reference for p in load_problems(cfg("amc23", data_dir=str(tmp_path)))] == ["27", "0.5", "-1"]


# ------------------------------------------------------------------------------------------------ selection
def _problems(n):
    return [Problem(id=str(i), problem=f"p{i}", reference=str(i)) for i in range(n)]


@pytest.mark.parametrize("n,offset,limit,k", [(10, 0, None, 3), (10, 2, 5, 2), (7, 0, 7, 7), (5, 0, None, 8),
                                              (100, 13, 50, 4), (3, 5, None, 2)])
def test_shards_partition_the_slice(n, offset, limit, k):
    probs = _problems(n)
    sl = select(probs, offset, limit)
    assert sl == probs[offset: None if limit is None else offset + limit]
    shards = [select(probs, offset, limit, f"{i}/{k}") for i in range(k)]
    ids = [p.id for s in shards for p in s]
    assert sorted(ids, key=int) == [p.id for p in sl]  # union is the slice
    assert len(ids) == len(set(ids))  # disjoint
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1  # strided: balanced
    for i, s in enumerate(shards):
        assert s == sl[i::k]


def test_select_limit_zero_and_offset_past_end():
    assert select(_problems(5), 0, 0) == []
    assert select(_problems(5), 10, None) == []


@pytest.mark.parametrize("bad", ["3/3", "4/3", "1", "a/b", "1/0", "-1/2", "1/2/3", "", "1 of 2"])
def test_bad_shard_strings(bad):
    with pytest.raises(ValueError, match="shard"):
        select(_problems(4), 0, None, bad)


def test_parse_shard():
    assert parse_shard(None) is None
    assert parse_shard("0/1") == (0, 1)
    assert parse_shard(" 2 / 5 ") == (2, 5)


def test_bad_offset_limit():
    with pytest.raises(ValueError):
        select(_problems(4), -1, None)
    with pytest.raises(ValueError):
        select(_problems(4), 0, -2)


@needs_data
def test_load_problems_applies_offset_limit_then_shard():
    full = load_problems(cfg("gsm8k"))
    part = load_problems(cfg("gsm8k", offset=100, limit=10), shard="1/3")
    assert [p.id for p in part] == [p.id for p in full[100:110][1::3]]
    with pytest.raises(ValueError, match="shard"):
        load_problems(cfg("gsm8k"), shard="3/3")


def test_omegaconf_config(tmp_path):
    from omegaconf import OmegaConf

    _write(tmp_path / "amc23" / "test.jsonl", [{"id": i, "question": f"q{i}", "answer": float(i)} for i in range(6)])
    c = OmegaConf.create({"name": "amc23", "hub_path": "math-ai/amc23", "hub_config": None, "split": "test",
                          "data_dir": str(tmp_path), "local_file": "amc23/test.jsonl", "limit": 4, "offset": 1})
    ps = load_problems(c, shard="0/2")
    assert [p.id for p in ps] == ["1", "3"]


# -- every defect named by file and 1-based line (issue 13) ------------------------------------------------------


def _write_bytes(path: Path, raw: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path


GOOD = b'{"problem": "1+1?", "answer": "2", "unique_id": "a"}\n'


def test_invalid_utf8_names_file_and_line(tmp_path):
    f = _write_bytes(tmp_path / "math500" / "test.jsonl",
                     GOOD + b"\n" + b'{"problem": "caf\xe9?", "answer": "2", "unique_id": "b"}\n')
    with pytest.raises(DatasetError, match=rf"{f}:3: not UTF-8 \(byte 0xe9"):
        load_problems(cfg("math500", data_dir=str(tmp_path)))


def test_missing_and_null_fields_name_the_file_line_counting_blank_lines(tmp_path):
    rows = [GOOD.replace(b'"a"', f'"{i}"'.encode()) for i in range(8)]
    raw = b"".join(rows[:4]) + b"\n\n \n\n" + b"".join(rows[4:])  # lines 5-8 blank
    raw += b'{"problem": "p", "answer": null, "unique_id": "null-answer"}\n'  # line 13
    raw += b'{"answer": "3", "unique_id": "no-problem"}\n'  # line 14
    f = _write_bytes(tmp_path / "math500" / "test.jsonl", raw)
    with pytest.raises(DatasetError) as e:
        load_problems(cfg("math500", data_dir=str(tmp_path)))
    msg = str(e.value)
    assert str(f) in msg and "id=null-answer (line 13): no answer" in msg and "id=no-problem (line 14): no problem" in msg
    assert "row" not in msg.split(":", 1)[1].replace("row(s)", "")


def test_lone_surrogate_names_file_line_and_field(tmp_path):
    f = _write_bytes(tmp_path / "math500" / "test.jsonl",
                     GOOD + b'{"problem": "x \\ud800 y", "answer": "2", "unique_id": "b"}\n')
    with pytest.raises(DatasetError, match=rf"{f}:2: a lone surrogate in problem"):
        load_problems(cfg("math500", data_dir=str(tmp_path)))


@pytest.mark.parametrize("answer", ['{"value": "5"}', "true", '[{"a": 1}]'])
def test_reference_that_is_not_a_string_or_number_is_refused(tmp_path, answer):
    f = _write_bytes(tmp_path / "aime24" / "test.jsonl",
                     GOOD + f'{{"problem": "p", "answer": {answer}, "id": "b"}}\n'.encode())
    with pytest.raises(DatasetError, match=rf"{f}:2: field 'answer' is .*not a string or number"):
        load_problems(cfg("aime24", data_dir=str(tmp_path)))


def test_hub_rows_with_a_dict_reference_are_refused():
    rows = [{"problem": "p", "answer": "5", "unique_id": "a"}, {"problem": "q", "answer": {"value": "5"}, "unique_id": "b"}]
    with pytest.raises(DatasetError, match=r"id=b \(row 1\): field 'answer' is"):
        rows_to_problems(data.REGISTRY["math500"], rows, "hub")


def test_number_and_list_references_still_load(tmp_path):
    _write_bytes(tmp_path / "amc23" / "test.jsonl", b'{"question": "q", "answer": 27.0, "id": 1}\n')
    assert load_problems(cfg("amc23", data_dir=str(tmp_path)))[0].reference == "27"
    _write_bytes(tmp_path / "olympiadbench" / "test.jsonl",
                 b'{"question": "q", "final_answer": ["$69$"], "id": 1}\n')
    assert load_problems(cfg("olympiad", data_dir=str(tmp_path)))[0].reference == "69"


def test_a_byte_order_mark_at_the_start_is_read(tmp_path):
    f = _write(tmp_path / "math500" / "test.jsonl", [
        {"problem": "1+1?", "answer": "2", "unique_id": "a"},
        {"problem": "2+2?", "answer": "4", "unique_id": "b"},
    ])
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    problems = load_problems(cfg("math500", data_dir=str(tmp_path)))
    assert [(p.id, p.problem, p.reference) for p in problems] == [("a", "1+1?", "2"), ("b", "2+2?", "4")]
    # elsewhere than the file's start it is no whitespace: still refused, naming the line
    f.write_bytes(f.read_bytes() + b"\xef\xbb\xbf" + json.dumps({"problem": "x", "answer": "1"}).encode() + b"\n")
    with pytest.raises(DatasetError, match=f"{f}:3"):
        load_problems(cfg("math500", data_dir=str(tmp_path)))


@pytest.mark.parametrize("kw,shard,key", [
    (dict(offset=2), None, "dataset.offset=2"),
    (dict(offset=9, limit=3), None, "dataset.offset=9"),
    (dict(limit=0), None, "dataset.limit=0"),
    (dict(), "3/4", "shard=3/4"),
])
def test_a_selection_of_no_problem_is_refused_naming_the_key(tmp_path, kw, shard, key):
    """It ran with n_problems 0 and accuracy null, exit 0; now an error unless dataset.allow_empty=true."""
    _write(tmp_path / "math500" / "test.jsonl", [
        {"problem": "1+1?", "answer": "2", "unique_id": "a"},
        {"problem": "2+2?", "answer": "4", "unique_id": "b"},
    ])
    with pytest.raises(DatasetError) as e:
        load_problems(cfg("math500", data_dir=str(tmp_path), **kw), shard=shard)
    msg = str(e.value)
    assert msg.startswith(key) and "2 problems" in msg and "dataset.allow_empty=true" in msg, msg
    assert load_problems(cfg("math500", data_dir=str(tmp_path), allow_empty=True, **kw), shard=shard) == []


def test_the_data_hash_covers_the_whole_dataset_not_the_selection(tmp_path):
    rows = [{"problem": f"{i}+1?", "answer": str(i + 1), "unique_id": f"p{i}"} for i in range(4)]
    f = _write(tmp_path / "math500" / "test.jsonl", rows)
    c = cfg("math500", data_dir=str(tmp_path))
    first, h = data.load_selection(c, shard="0/2")
    second, h2 = data.load_selection(c, shard="1/2")
    assert [p.id for p in first] == ["p0", "p2"] and [p.id for p in second] == ["p1", "p3"]
    assert h == h2  # the shards of one experiment share it
    rows[3]["answer"] = "5"  # another version of the data: the selected problems are the same, the data not
    _write(f.parent / f.name, rows)
    again, h3 = data.load_selection(c, shard="0/2")
    assert again == first and h3 != h
