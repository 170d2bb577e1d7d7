"""The grading result type and the in-process grading pipeline (no time limit: workers call this)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Verdict", "grade_local", "MAX_TEXT_CHARS", "MAX_ANSWER_CHARS", "RULES"]

MAX_TEXT_CHARS = 100_000  # a generated text longer than this is refused
MAX_ANSWER_CHARS = 2_000  # an extracted or reference answer longer than this is refused

RULES = (
    "math_verify", "string", "choice", "numeric", "tuple", "interval", "set", "multi", "matrix", "equation",
    "sympy",  # correct
    "mismatch", "no_answer", "no_reference", "refused_too_long", "timeout", "error",  # not correct
)


@dataclass(frozen=True)
class Verdict:
    """Outcome of grading one answer.

    correct: whether the extracted answer is equivalent to the reference.
    rule: which rule decided (one of RULES): for correct answers the rule that matched; otherwise "mismatch"
        (all rules said no), "no_answer", "no_reference", "refused_too_long", "timeout" or "error".
    extracted: the extracted final answer (None when there is none or it was not computed).
    reference: the normalised reference answer.
    """

    correct: bool
    rule: str
    extracted: str | None
    reference: str

    def __bool__(self) -> bool:
        return self.correct


def reference_text(reference) -> str:
    """The reference as a string: numbers as clean strings (27.0 -> '27'), a wrapping \\boxed{} removed."""
    if isinstance(reference, bool):
        return str(reference)
    if isinstance(reference, float) and reference.is_integer():
        return str(int(reference))
    if not isinstance(reference, str):
        return "" if reference is None else str(reference)
    return reference


def safe_normalize(reference: str) -> str:
    """normalize() for the Verdict's reference field; falls back to the stripped input on any error."""
    from grading.normalize import normalize

    try:
        return normalize(reference) if len(reference) <= MAX_ANSWER_CHARS else reference[:200]
    except Exception:  # noqa: BLE001
        return reference.strip()


def grade_local(generated_text: str, reference_answer, on_extracted=None) -> Verdict:
    """Grade in this process, without a time limit. Use grading.grade() for untrusted text.

    `on_extracted(extracted, normalised_reference)`, when given, is called once both are known and before the
    (possibly slow) equivalence check; the worker pool uses it to report them even if the check times out."""
    from grading.equivalence import decide
    from grading.extract import extract_answer, strip_boxed
    from grading.normalize import strip_math_delimiters

    text = generated_text if isinstance(generated_text, str) else ("" if generated_text is None else str(generated_text))
    ref = reference_text(reference_answer)
    if len(ref) > MAX_ANSWER_CHARS:
        return Verdict(False, "refused_too_long", None, ref[:200])
    ref = strip_boxed(strip_math_delimiters(ref))
    norm_ref = safe_normalize(ref)
    if len(text) > MAX_TEXT_CHARS:
        return Verdict(False, "refused_too_long", None, norm_ref)
    extracted = extract_answer(text)
    if extracted is None or not extracted.strip():
        return Verdict(False, "no_answer", None, norm_ref)
    if len(extracted) > MAX_ANSWER_CHARS:
        return Verdict(False, "refused_too_long", extracted[:200], norm_ref)
    if not ref.strip():
        return Verdict(False, "no_reference", extracted, norm_ref)
    if on_extracted is not None:
        on_extracted(extracted, norm_ref)
    correct, rule = decide(extracted, ref)
    return Verdict(bool(correct), rule, extracted, norm_ref)
