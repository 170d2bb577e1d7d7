"""The grading result type and the in-process grading pipeline (no time limit: workers call this)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from grading.boxed import strip_boxed
from grading.extract import extract_answer
from grading.normalize import normalize, strip_math_delimiters

__all__ = ["Verdict", "grade_local", "input_text", "Unusable", "MAX_TEXT_CHARS", "MAX_ANSWER_CHARS", "RULES"]

MAX_TEXT_CHARS = 100_000  # a generated text longer than this is refused
MAX_ANSWER_CHARS = 2_000  # an extracted or reference answer longer than this is refused

RULES = (
    "math_verify", "string", "choice", "numeric", "tuple", "interval", "set", "multi", "matrix", "equation",
    "sympy",  # correct
    "mismatch", "no_answer", "no_reference", "refused_too_long", "timeout", "error", "invalid_input",  # not correct
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


@dataclass(frozen=True)
class Unusable:
    """Stands in for an input that `input_text` refused, so that a worker can answer with its rule (and the
    normalised reference) without ever receiving the original object (which may not even pickle)."""

    rule: str


def _digits(n: int, limit: int) -> str | None:
    """The decimal digits of an int, or None when it has more than `limit` of them (checked before converting:
    str() of a huge int is quadratic, and past sys.get_int_max_str_digits() it raises ValueError)."""
    if n.bit_length() * 0.30103 > limit + 1:
        return None
    try:
        return int.__repr__(n)  # int.__repr__, not str(): an IntEnum or a subclass's __str__ is not its value
    except ValueError:  # more digits than the interpreter's str() limit (4300): convert without it
        import decimal

        return str(decimal.Decimal(n))


def input_text(value, limit: int, *, reference: bool = False) -> tuple[str, str | None]:
    """A grading input as a plain str: ``(text, None)``, or ``("", rule)`` when it cannot be graded.

    Accepted: str (subclasses copied to a plain str), None (""), bytes (UTF-8, bad bytes replaced), and numbers
    (27.0 -> "27" for a reference; bool as "True"/"False"). rule "refused_too_long" for an int with more than
    `limit` digits (never converted); "invalid_input" for anything else (a list, an object: its str() is a
    repr, not an answer) and for a value whose conversion raises. Never raises, never calls code of the value
    beyond its type's own conversion to text."""
    try:
        if isinstance(value, str):
            return str.__getitem__(value, slice(None)), None  # a plain str even for a subclass
        if value is None:
            return "", None
        if isinstance(value, Unusable):
            return "", value.rule
        if isinstance(value, (bytes, bytearray)):
            return bytes(value[: 4 * limit + 4]).decode("utf-8", errors="replace"), None
        if isinstance(value, bool):
            return ("True" if value else "False"), None
        if isinstance(value, int):
            digits = _digits(value, limit)
            return (digits, None) if digits is not None else ("", "refused_too_long")
        if isinstance(value, float):
            if reference and value.is_integer():
                digits = _digits(int(value), limit)
                return (digits, None) if digits is not None else ("", "refused_too_long")
            return float.__repr__(value), None
        if isinstance(value, numbers.Number):  # Fraction, Decimal, numpy scalars
            text = str(value)
            return (text, None) if type(text) is str else ("", "invalid_input")
    except Exception:  # noqa: BLE001 - a conversion that raises: the input is not usable text
        return "", "invalid_input"
    return "", "invalid_input"


def reference_text(reference) -> str:
    """The reference as a string: numbers as clean strings (27.0 -> '27'); "" when it is not usable text."""
    return input_text(reference, MAX_ANSWER_CHARS, reference=True)[0]


def safe_normalize(reference: str) -> str:
    """normalize() for the Verdict's reference field; falls back to the stripped input on any error."""
    try:
        return normalize(reference) if len(reference) <= MAX_ANSWER_CHARS else reference[:200]
    except Exception:  # noqa: BLE001
        return reference.strip()


def grade_local(generated_text: str, reference_answer, on_extracted=None) -> Verdict:
    """Grade in this process, without a time limit. Use grading.grade() for untrusted text.

    `on_extracted(extracted, normalised_reference)`, when given, is called once both are known and before the
    (possibly slow) equivalence check; the worker pool uses it to report them even if the check times out."""
    from grading.equivalence import decide  # sympy and math-verify: loaded by the grading workers only

    text, why = input_text(generated_text, MAX_TEXT_CHARS)
    ref, ref_why = input_text(reference_answer, MAX_ANSWER_CHARS, reference=True)
    if ref_why:
        return Verdict(False, ref_why, None, "")
    if len(ref) > MAX_ANSWER_CHARS:
        return Verdict(False, "refused_too_long", None, ref[:200])
    ref = strip_boxed(strip_math_delimiters(ref))
    norm_ref = safe_normalize(ref)
    if why:
        return Verdict(False, why, None, norm_ref)
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
