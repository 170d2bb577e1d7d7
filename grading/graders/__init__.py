"""Grader registry: which rules decide whether an answer is correct.

    ours     grading.verdict.grade_local: math-verify plus our rule-based second opinion (the default)
    prm800k  the PRM800K grader's rules, used by the GSI reference code (grading/graders/prm800k.py)
    qwen     the Qwen2.5-Math evaluation's `math_equal`, used by the RSD code (grading/graders/qwen.py)

Each is an in-process function `(generated_text, reference, on_extracted=None) -> Verdict`; grading.grade(...,
grader=NAME) runs it in a worker process under the time and memory limits of grading.safety, so model text is
never evaluated in the caller and never as code. Absolute accuracies are comparable only under the same grader.
"""

from __future__ import annotations

import importlib
from typing import Callable

from grading.verdict import Verdict

__all__ = ["GRADERS", "DEFAULT", "local_grader", "check_name"]

DEFAULT = "ours"
GRADERS: dict[str, str] = {  # name -> "module:function"
    "ours": "grading.verdict:grade_local",
    "prm800k": "grading.graders.prm800k:grade_local",
    "qwen": "grading.graders.qwen:grade_local",
}


def check_name(name: str | None) -> str:
    name = DEFAULT if name is None else str(name)
    if name not in GRADERS:
        raise ValueError(f"unknown grader {name!r}; known: {', '.join(GRADERS)}")
    return name


def local_grader(name: str | None) -> Callable[..., Verdict]:
    module, func = GRADERS[check_name(name)].split(":")
    return getattr(importlib.import_module(module), func)
