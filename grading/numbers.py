"""Plain numbers: parsed into exact fractions (integers, decimals, fractions, mixed numbers, scientific notation)
and compared exactly, or to a relative tolerance when one side is inexact (grading.equivalence's `numeric` rule).
"""

from __future__ import annotations

from fractions import Fraction
import re

from grading.normalize import canonical_number

__all__ = ["REL_TOL", "MIXED_NUMBER", "parse_number", "numeric_equal"]

REL_TOL = 1e-4

_SCI = [
    re.compile(r"^(-?\d+(?:\.\d+)?)[eE]([-+]?\d{1,4})$"),
    re.compile(r"^(-?\d+(?:\.\d+)?)(?:\\times|\\cdot|\*|x)10\^\{?([-+]?\d{1,4})\}?$"),
]
_POW10 = re.compile(r"^(-?)10\^\{?([-+]?\d{1,4})\}?$")
_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}$")
MIXED_NUMBER = re.compile(r"^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")
_MAX_POW10 = 1000


class _Num:
    __slots__ = ("value", "is_int_literal", "inexact")

    def __init__(self, value: Fraction, is_int_literal: bool, inexact: bool):
        self.value = value
        self.is_int_literal = is_int_literal
        self.inexact = inexact


def parse_number(norm: str) -> _Num | None:
    """A plain number in normalised form (see normalize.normalize), or None."""
    if not norm or len(norm) > 500:
        return None
    c = canonical_number(norm)
    if c is not None:
        return _Num(Fraction(c), "." not in c, "." in c)
    if norm == "\\frac{1}{2}":
        return _Num(Fraction(1, 2), False, False)
    m = MIXED_NUMBER.match(norm)
    if m:  # a mixed number: 3\frac{1}{2} = 7/2 (the MATH convention)
        den = int(m.group(4))
        if den == 0:
            return None
        v = int(m.group(2)) + Fraction(int(m.group(3)), den)
        return _Num(-v if m.group(1) else v, False, False)
    m = _FRAC.match(norm)
    if m:
        a, b = Fraction(m.group(2)), Fraction(m.group(3))
        if b == 0:
            return None
        v = a / b * (-1 if m.group(1) else 1)
        return _Num(v, False, "." in m.group(2) + m.group(3))
    for rx in _SCI:
        m = rx.match(norm)
        if m:
            e = int(m.group(2))
            if abs(e) > _MAX_POW10:
                return None
            return _Num(Fraction(m.group(1)) * Fraction(10) ** e, False, True)
    m = _POW10.match(norm)
    if m:
        e = int(m.group(2))
        if abs(e) > _MAX_POW10:
            return None
        return _Num(Fraction(10) ** e * (-1 if m.group(1) else 1), False, False)
    return None


def _close(a: Fraction, b: Fraction, rel: float) -> bool:
    if a == b:
        return True
    if rel <= 0:
        return False
    scale = max(abs(a), abs(b))
    return abs(a - b) <= Fraction(rel) * scale


def _numbers_equal(p: _Num, r: _Num, p_scale: Fraction = Fraction(1), r_scale: Fraction = Fraction(1)) -> bool:
    pv, rv = p.value * p_scale, r.value * r_scale
    if r.is_int_literal and r_scale == 1:
        return pv == rv
    rel = REL_TOL if (p.inexact or r.inexact) else 0.0
    return _close(pv, rv, rel)


def numeric_equal(pred_norm: str, ref_norm: str, pred_pct: bool, ref_pct: bool) -> bool:
    p, r = parse_number(pred_norm), parse_number(ref_norm)
    if p is None or r is None:
        return False
    if _numbers_equal(p, r):
        return True
    hundredth = Fraction(1, 100)
    if pred_pct and not ref_pct:
        return _numbers_equal(p, r, p_scale=hundredth)
    if ref_pct and not pred_pct:
        return _numbers_equal(p, r, r_scale=hundredth)
    return False

