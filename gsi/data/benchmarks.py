"""The benchmarks read from files: each one's `DatasetSpec` (where it lives, how a row becomes a `Problem`), registered.

Adding a benchmark is one `register(DatasetSpec(...))` entry below (lm-evaluation-harness style): where the
data lives (a local JSONL file under the data directory, and a dataset-hub path/config/split) and how a row maps
to a `Problem` (the problem text, the reference answer, a worked solution if there is one, an id).

Reference answers follow Qwen2.5-Math / RSD (`parse_ground_truth`), except where noted:

| name     | reference                                              | solution                         |
|----------|--------------------------------------------------------|----------------------------------|
| math500  | `answer` (the solution's last \\boxed{} agrees with it  | `solution`                       |
|          |  on every row; tests/test_grading_benchmarks.py checks) |                                  |
| olympiad | `final_answer[0]` with every `$` removed (Qwen's        | `solution` list, joined by blank |
|          |  `.strip("$")` leaves inner ones: "$69$,$84$")          |  lines                           |
| minerva  | last \\boxed{} of `solution` (hub copies: `answer`)     | `solution`                       |
| aime24   | `answer` as a string ("025" stays "025")                | `solution`                       |
| amc23    | `answer` float as a clean string: 27.0 -> "27"          | none                             |
| gsm8k    | text after "####" in `answer`, commas removed           | `answer` (the worked solution)   |
| gaokao2023en | `answer` with every `$` removed (Qwen's parser);    | none                             |
|          |  2 rows without an answer are left out (383 of 385)     |                                  |
| mmlu_stem | the letter "ABCD"[answer]; the problem is the question | none                             |
|          |  + "\nAnswer Choices: (A) ... (B) ..." (Qwen's format) |                                  |

Reading them: gsi/data/loaders.py; choosing a run's problems: gsi/data/selection.py.
"""

from __future__ import annotations

import re

from grading.boxed import last_boxed
from gsi.data.loaders import clean_number, first
from gsi.data.registry import DatasetSpec, register


# ---------------------------------------------------------------------------------------------- references
def _ref_math500(row: dict) -> str | None:
    v = first(row, ("answer",))
    if v is not None:
        return str(v).strip()
    sol = first(row, ("solution",))
    return last_boxed(sol) if isinstance(sol, str) else None


def _ref_olympiad(row: dict) -> str | None:
    v = first(row, ("final_answer", "answer"))
    if isinstance(v, (list, tuple)):
        v = v[0] if v else None
    if v is None:
        return None
    s = re.sub(r"(?<!\\)\$", "", str(v)).strip()
    return s or None


def _ref_minerva(row: dict) -> str | None:
    sol = first(row, ("solution",))
    if isinstance(sol, str):
        b = last_boxed(sol)
        if b:
            return b
    v = first(row, ("answer", "final_answer"))
    return str(v).strip() if v is not None else None


def _ref_plain(row: dict) -> str | None:
    return clean_number(first(row, ("answer", "final_answer", "expected_answer")))


def _ref_gaokao(row: dict) -> str | None:
    v = first(row, ("answer",))
    return str(v).replace("$", "").strip() or None if v is not None else None


def _ref_choice(row: dict) -> str | None:
    v = row.get("answer")
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < len(row.get("choices") or ()) or v > 3:
        return None
    return "ABCD"[v]


def _problem_with_choices(row: dict) -> str | None:
    """MMLU-STEM as the Qwen2.5-Math evaluation (and RSD) asks it: the question, then the four choices."""
    question, choices = first(row, ("question", "problem")), row.get("choices")
    if question is None or not isinstance(choices, (list, tuple)) or len(choices) != 4:
        return None
    options = " ".join(f"({label}) {str(c).strip()}" for label, c in zip("ABCD", choices))
    return f"{str(question).strip()}\nAnswer Choices: {options}"


def _ref_gsm8k(row: dict) -> str | None:
    v = first(row, ("answer",))
    if not isinstance(v, str) or "####" not in v:
        return None
    s = v.split("####")[-1].strip().replace(",", "")
    return s or None


register(DatasetSpec(
    name="math500", hub_path="HuggingFaceH4/MATH-500", hub_config=None, split="test",
    local_file="math500/test.jsonl", reference=_ref_math500, reference_fields=("answer", "solution"),
    description="MATH-500 (PRM800K test split of MATH)",
))
register(DatasetSpec(
    name="olympiad", hub_path="Hothan/OlympiadBench", hub_config="OE_TO_maths_en_COMP", split="train",
    local_file="olympiadbench/test.jsonl", reference=_ref_olympiad, reference_fields=("final_answer", "answer"),
    problem_fields=("question", "problem"),
    description="OlympiadBench, English open-ended competition math, text only",
))
register(DatasetSpec(
    name="minerva", hub_path="math-ai/minervamath", hub_config=None, split="test",
    local_file="minerva_math/test.jsonl", reference=_ref_minerva, reference_fields=("solution", "answer"),
    description="Minerva Math (MIT OCW STEM problems)",
))
register(DatasetSpec(
    name="aime24", hub_path="HuggingFaceH4/aime_2024", hub_config=None, split="train",
    local_file="aime24/test.jsonl", reference=_ref_plain, reference_fields=("answer",),
    description="AIME 2024 (I and II)",
))
register(DatasetSpec(
    name="amc23", hub_path="math-ai/amc23", hub_config=None, split="test",
    local_file="amc23/test.jsonl", reference=_ref_plain, reference_fields=("answer",),
    problem_fields=("question", "problem"), solution_fields=(),
    description="AMC 2023 (12A/12B)",
))
register(DatasetSpec(
    name="gsm8k", hub_path="openai/gsm8k", hub_config="main", split="test",
    local_file="gsm8k/test.jsonl", reference=_ref_gsm8k, reference_fields=("answer",),
    problem_fields=("question", "problem"), solution_fields=("answer",),
    description="GSM8K test",
))

# The RSD paper's two further benchmarks, as the Qwen2.5-Math evaluation reads them (hub copies: the same rows,
# MMLU-STEM's hub copy has 3153 rows against the evaluation's 3018).
register(DatasetSpec(
    name="gaokao2023en", hub_path="MARIO-Math-Reasoning/Gaokao2023-Math-En", hub_config=None, split="train",
    local_file="gaokao2023en/test.jsonl", reference=_ref_gaokao, reference_fields=("answer",),
    problem_fields=("question", "problem"), solution_fields=(),
    # Two rows have an empty `answer` and the answer inside the question ("...answers: $\frac{3}{10}$",
    # "...Answer: A"): not gradable without showing the model its answer; 383 problems remain.
    skip_ids=("HMMT2023General_9", "052023SATS4_11"),
    description="GaoKao 2023 English (Chinese college entrance exam math, translated)",
))
register(DatasetSpec(
    name="mmlu_stem", hub_path="TIGER-Lab/MMLU-STEM", hub_config=None, split="test",
    local_file="mmlu_stem/test.jsonl", reference=_ref_choice, reference_fields=("answer",),
    problem_fields=("question",), solution_fields=(), problem=_problem_with_choices,
    description="MMLU STEM subjects, four-way multiple choice (answer: a letter A-D)",
))
