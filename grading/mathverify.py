"""math-verify's opinion on two answers, asked so that it never evaluates text and never settles for a fragment.

Used first by grading.equivalence.decide; its SIGALRM timeouts are off (the grading worker's CPU limit bounds it).
"""

from __future__ import annotations

import logging

from grading.normalize import strip_math_delimiters

__all__ = ["math_verify_equal", "load"]

logging.getLogger("math_verify").setLevel(logging.ERROR)
logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)

_MV = None


def load():
    global _MV
    if _MV is None:
        import math_verify
        from latex2sympy2_extended.latex2sympy2 import latex2sympy
        from math_verify import LatexExtractionConfig

        # LaTeX extraction only: math-verify's ExprExtractionConfig runs sympy.parse_expr (Python eval) on plain
        # text; the LaTeX path builds sympy objects from an ANTLR parse tree and never evaluates strings.
        # No un-anchored extraction: it would pick any LaTeX fragment (a \frac{1}{4}) out of an answer whose
        # whole does not parse.
        try:
            from math_verify.grader import should_treat_as_complex
        except ImportError:  # a math-verify without it: the parse is the same, only symbols' assumptions differ
            def should_treat_as_complex(latex: str) -> bool:
                return False
        _MV = (math_verify, [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)],
               latex2sympy, should_treat_as_complex)
    return _MV


def _whole_parse(mv, cfg, answer: str):
    """math-verify's parse of the whole answer, or None when only part of it parses.

    math-verify, asked for `\\boxed{answer}`, tries its regex matches one after another until one parses: when
    the whole box fails it settles for a fragment (`\\frac{1}{4} \\cdot 9 + (` parses as its `\\frac{1}{4}`),
    and a chain `a = b = c` whose whole fails falls back to its last part. Here only the first match counts
    (extraction_mode="first_match": for a lone `\\boxed{...}` that is the whole box), and the normalised string
    it matched must parse as a whole with latex2sympy's grammar, which ends in EOF (no last-part fallback)."""
    boxed = "\\boxed{" + strip_math_delimiters(answer) + "}"
    got = mv.parse(boxed, extraction_config=cfg, parsing_timeout=None, extraction_mode="first_match",
                   fallback_mode="first_match")
    exprs = [g for g in got if not isinstance(g, str)]
    strings = [g for g in got if isinstance(g, str)]
    if len(exprs) != 1 or len(strings) != 1:
        return None
    if "=" not in strings[0]:
        return got  # parse_latex_cached's only fallback (the last part of an equation chain) needs an "="
    latex2sympy, treat_as_complex = _MV[2], _MV[3]
    try:  # the same call as math_verify.parser.parse_latex_cached's first try, which is strict
        latex2sympy(strings[0], is_real=not treat_as_complex(strings[0]), convert_degrees=False,
                    normalization_config=None)
    except Exception:  # noqa: BLE001 - not parseable as a whole: math-verify used a part of it
        return None
    return got


def math_verify_equal(pred: str, ref: str) -> bool:
    """math-verify's opinion, with its SIGALRM timeouts disabled (the caller's worker process enforces time).

    Says yes only when both answers parsed as a whole (`_whole_parse`): otherwise the second opinion decides."""
    mv, cfg = load()[:2]
    try:
        gold = _whole_parse(mv, cfg, ref)
        if not gold:
            return False
        target = _whole_parse(mv, cfg, pred)
        if not target:
            return False
        return bool(mv.verify(gold, target, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - any failure inside math-verify is "no opinion"
        return False
