"""The grader group (grading/graders): ours, prm800k (the GSI code's PRM800K rules) and qwen (the RSD code's
Qwen2.5-Math `math_equal`), where they agree and where they documentedly differ; their safety; their use by a run
and by `python -m grading check --grader`."""

from __future__ import annotations

import json
import time

import pytest

import grading
from grading.graders import GRADERS, local_grader

# (generated text, reference, ours, prm800k, qwen, why they differ)
TABLE = [
    # all three agree
    ("So \\boxed{\\frac{1}{2}}.", "0.5", True, True, True, "a fraction is its decimal"),
    ("\\boxed{5.0}", "5", True, True, True, "an integer-valued float"),
    ("\\boxed{2x+2}", "2(x+1)", True, True, True, "sympy simplifies the difference to 0"),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", True, True, True, "sympy"),
    ("\\boxed{5\\text{ cm}}", "5", True, True, True, "a unit on the right"),
    ("\\boxed{1,000}", "1000", True, True, True, "thousands separator"),
    ("\\boxed{\\left(1,\\frac12\\right)}", "(1,\\frac{1}{2})", True, True, True, "a tuple"),
    ("\\boxed{B}", "B", True, True, True, "a choice letter"),
    ("\\boxed{7}", "5", False, False, False, "wrong"),
    ("\\boxed{\\frac{1}{3}}", "0.5", False, False, False, "wrong"),
    ("no answer here at all", "5", False, False, False, "no answer and no number"),
    # they differ, as documented
    ("\\boxed{2/4}", "1/2", True, False, True, "PRM800K: unreduced fractions are wrong"),
    ("\\boxed{50\\%}", "0.5", True, False, True, "PRM800K drops % without scaling"),
    ("\\boxed{50}", "0.5", False, False, True, "Qwen also tries the reference x100 and /100"),
    ("\\boxed{(1,2]}", "[1,2]", False, False, True, "Qwen does not compare bracket kinds"),
    ("The answer is 5.", "5", True, False, True, "GSI's PRM800K path needs a \\boxed{}"),
    ("adding them we get 5", "5", False, False, True, "Qwen falls back to the last number of the text"),
    ("I pick \\boxed{B} as a final choice", "B", True, True, False,
     "Qwen's multiple-choice reader takes the last standalone letter: the article 'a'"),
    ("\\boxed{five}", "5", False, False, True, "Qwen turns number words into digits"),
]
NAMES = ("ours", "prm800k", "qwen")


def test_registry_matches_the_config_enum():
    from gsi.config.schema import GraderName

    assert set(GRADERS) == {g.value for g in GraderName} == set(NAMES)
    with pytest.raises(ValueError, match="unknown grader 'nope'"):
        grading.grade("\\boxed{1}", "1", grader="nope")


@pytest.mark.parametrize("row", TABLE, ids=[r[5] for r in TABLE])
def test_table_in_process(row):
    text, ref, *want, _ = row
    got = [local_grader(g)(text, ref).correct for g in NAMES]
    assert got == want


def test_graders_differ_somewhere_pairwise():
    # the table has power: each pair of graders disagrees on at least one row
    cols = {g: [r[2 + i] for r in TABLE] for i, g in enumerate(NAMES)}
    assert cols["ours"] != cols["prm800k"] != cols["qwen"] != cols["ours"]


@pytest.mark.parametrize("name", NAMES)
def test_table_through_the_worker_pool(name):
    i = NAMES.index(name)
    verdicts = grading.grade_many([(r[0], r[1]) for r in TABLE], grader=name, timeout=20)
    assert [v.correct for v in verdicts] == [r[2 + i] for r in TABLE]
    from grading import RULES

    assert all(v.rule in RULES for v in verdicts)


@pytest.mark.parametrize("name", ["prm800k", "qwen"])
def test_model_text_is_never_evaluated(name, tmp_path):
    marker = tmp_path / "pwned"
    for payload in (f"__import__('os').system('touch {marker}')", f"exec(\"open('{marker}','w')\")",
                    f"(lambda: open('{marker}', 'w'))()"):
        v = grading.grade(f"\\boxed{{{payload}}}", "1", grader=name, timeout=20)
        assert not v.correct
    assert not marker.exists()


@pytest.mark.parametrize("name", ["prm800k", "qwen"])
def test_huge_expressions_are_bounded_in_time(name):
    for text in ("\\boxed{10^{10^{10}}}", "\\boxed{(10^{10^{10}})!}", "\\boxed{9^{9^{9^{9}}}}-1"):
        t0 = time.monotonic()
        v = grading.grade(text, "1", grader=name, timeout=3)
        assert not v.correct and time.monotonic() - t0 < 30, (text, v)


def test_prm800k_unit_details():
    from grading.graders import prm800k

    assert prm800k.normalize_answer("\\dfrac12") == "\\frac{1}{2}"
    assert prm800k.normalize_answer("0.5") == "\\frac{1}{2}"
    assert prm800k.normalize("\\frac{x+1}{2}") == "x+1/2"  # pylatexenc's frac: PRM800K's own quirk, kept
    assert prm800k.normalize("10 \\text{ degrees}") == "10"
    assert prm800k.last_boxed_gsi("a \\boxed{1} b \\boxed{\\frac{2}{3}} c") == "\\frac{2}{3}"
    assert prm800k.grade_answer("3,4", "(3,4)") == (False, "mismatch")  # the brackets must match
    assert prm800k.grade_answer("x+y+z", "z+y+x") == (False, "mismatch")  # > 2 letters: no sympy (original)


def test_qwen_unit_details():
    from grading.graders import qwen

    assert qwen.strip_string("\\dfrac{1}{2}") == "\\frac{1}{2}"
    assert qwen.strip_string("x = 5") == "5"
    assert qwen.strip_string("10 \\text{ cm}") == "10"
    assert qwen.extract_answer("final answer is $3$. I hope it is correct.") == "3"
    assert qwen.extract_answer("\\boxed 7$") == "7"
    assert qwen.choice_answer_clean("The answer is (C). A is wrong") == "C"
    assert qwen.math_equal("y=2x+1", "2x+1") and qwen.math_equal("2x-y+1=0", "y=2x+1")
    assert qwen.math_equal("0.3333", "\\frac{1}{3}") and not qwen.math_equal("0.33", "\\frac{1}{3}")


def test_cli_check_regrades_under_another_grader(tmp_path):
    from grading.__main__ import main

    path = tmp_path / "results.jsonl"
    rows = [{"id": str(i), "final_text": r[0], "reference": r[1], "correct": r[2], "grader": "ours"}
            for i, r in enumerate(TABLE)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["check", str(path), "--grader", "qwen", "--timeout", "20"]) == 0
    summary = json.loads((tmp_path / "summary.qwen.json").read_text())
    want = sum(r[4] for r in TABLE) / len(TABLE)
    assert summary["grader"] == "qwen" and summary["accuracy"] == pytest.approx(want)
    assert summary["old_accuracy"] == pytest.approx(sum(r[2] for r in TABLE) / len(TABLE))
    assert summary["old_grader"] == "ours" and summary["n_problems"] == len(TABLE)
    assert summary["disagreements"] == sum(r[2] != r[4] for r in TABLE)
    regraded = [json.loads(line) for line in (tmp_path / "regraded.qwen.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in regraded] == [r[4] for r in TABLE]


def test_a_run_records_and_uses_its_grader(make_cfg, tmp_path):
    """A run on exact-table engines (no vLLM) whose every answer is \\boxed{1800}: GSM8K's first reference is 18,
    which only the Qwen rules accept (reference x100). The grader is in experiment.json, summary.json and every
    results line; `check --grader qwen` on the `ours` run gives the qwen run's accuracy."""
    from grading.__main__ import main
    from gsi.engines.table import table_engines
    from gsi.run import run

    texts = [f"{w} \\boxed{{1800}}\n\n" for w in ("So", "Thus", "Hence", "Then")]
    summaries = {}
    for name in ("ours", "qwen"):
        cfg = make_cfg("model=tiny", "hardware=cpu", "method=rsd", "dataset=gsm8k", "dataset.limit=2",
                       f"grader={name}")
        engines = table_engines([0.25] * 4, [0.25] * 4, [0.9] * 4, texts=texts)
        out = tmp_path / name
        summaries[name] = run(cfg, out=out, engines=engines)
        assert json.loads((out / "experiment.json").read_text())["grader"]["name"] == name
        assert json.loads((out / "summary.json").read_text())["grader"] == name
        records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert [r["grader"] for r in records] == [name, name]
    assert summaries["ours"]["accuracy"] == 0.0 and summaries["qwen"]["accuracy"] == 0.5
    assert main(["check", str(tmp_path / "ours" / "results.jsonl"), "--grader", "qwen"]) == 0
    assert json.loads((tmp_path / "ours" / "summary.qwen.json").read_text())["accuracy"] == 0.5


def test_a_folder_resumes_only_under_its_grader(make_cfg, tmp_path):
    from gsi.engines.table import table_engines
    from gsi.run import run

    def go(*extra):
        cfg = make_cfg("model=tiny", "hardware=cpu", "method=rsd", "dataset=gsm8k", "dataset.limit=2", *extra)
        return run(cfg, out=tmp_path, engines=table_engines([0.5, 0.5], [0.5, 0.5], [0.9, 0.9],
                                                            texts=["So \\boxed{1}\n\n", "Thus \\boxed{2}\n\n"]))

    go()
    with pytest.raises(SystemExit, match="differs in: grader"):
        go("grader=qwen")
    # a folder written before runs recorded their grader was graded by ours: it resumes under ours only
    exp = json.loads((tmp_path / "experiment.json").read_text())
    del exp["grader"]
    (tmp_path / "experiment.json").write_text(json.dumps(exp))
    assert go()["n_problems"] == 2
    with pytest.raises(SystemExit, match="differs in: grader"):
        go("grader=prm800k")
