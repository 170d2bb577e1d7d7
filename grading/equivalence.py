"""Deciding whether an extracted answer is equivalent to the reference.

`decide(pred, ref)` returns ``(correct, rule)``. When both answers are plain numbers, exact rational arithmetic
decides alone (rule ``numeric``): math-verify rounds to 6 decimals / 15 significant digits and would call
0.0000001 and 0.0000002, or 10^20 and 10^20+1, equal. Otherwise math-verify is asked first; when it says no, a
second opinion runs, and the first of its rules that says yes decides:

``string``    the normalised strings (normalize.py) are equal; word answers ("Sunday") compare case-insensitively.
``choice``    the reference is a choice letter A-E (``B``, ``(B)``, ``\\text{(B)}``) and the prediction names the
              same letter (``(B)``, ``B``, ``(B) 12``).
``numeric``   both are plain numbers (integers, decimals, ``\\frac{a}{b}``, ``a/b``, scientific notation
              ``4.5e33`` / ``4.5\\times10^{33}``, thousands separators). An integer reference must be matched exactly
              (27 == 27.0 == 027, but 10000 != 10000.5); otherwise exact for exact numbers and relative tolerance
              1e-4 (Qwen2.5-Math's ``isclose`` tolerance) when either side is a decimal, i.e. a rounded number.
``tuple`` / ``interval`` / ``set`` / ``multi`` / ``matrix``
              element-wise comparison (each element by these same rules, recursively). Parenthesised tuples are
              ordered; intervals need the same brackets ((1,2] != [1,2]); ``\\{...\\}`` sets and bare comma lists
              ("1, 2" vs "2,1": several answers) are unordered; unions of intervals are unordered; ``pmatrix`` /
              ``bmatrix`` cell by cell. A bare list also matches a parenthesised tuple in the same order.
``equation``  both are equations ``lhs = rhs`` (long lhs; a short ``x =`` is dropped by the normaliser) whose
              ``lhs - rhs`` agree up to a nonzero constant factor.
``sympy``     both parse with safe_sympy.py (no code evaluation) and agree: exactly, or at 5 sample points for
              expressions with variables, with the numeric tolerances above for constants.

Percentages (documented choice): a percent sign is a unit. ``x%`` equals ``x`` (the unit dropped, as the
MATH normaliser does: "what percent ...? 50") and equals ``x/100`` (its value: 50% == 0.5). Without a percent
sign on either side no scaling is tried, so 50 != 0.5 (Qwen2.5-Math also tries the reference x100 and /100
unconditionally, which marks 0.5 correct for "50 people"; we do not). When both sides carry %, only the
numbers are compared (0.5% != 50%).

Degrees and units are dropped by the normaliser (30^\\circ == 30; 5 cm == 5); no degree/radian conversion.

When nothing says yes the verdict is ``(False, "mismatch")``.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from grading.mathverify import math_verify_equal
from grading.normalize import assignment, clean, has_percent, normalize
from grading.numbers import MIXED_NUMBER, REL_TOL, numeric_equal, parse_number
from grading.safe_sympy import ParseError, parse_latex_safe

__all__ = ["decide", "math_verify_equal", "second_opinion", "REL_TOL"]

EXACT_TOL = 1e-9
MAX_ITEMS = 50
MAX_STRUCT_DEPTH = 6
MAX_PARSE_DEPTH = 25



# ---------------------------------------------------------------------------------------------- structure
_OPEN = "([{"
_CLOSE = ")]}"


def _split_top(s: str, sep: str) -> list[str]:
    """Split at `sep` outside all brackets (``\\{``/``\\}`` count as brackets)."""
    parts, depth, start, i, n = [], 0, 0, 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


def _outer_spans(s: str) -> bool:
    """Whether the bracket opening s[0] closes at the last character (any bracket kinds may pair: intervals)."""
    depth = 0
    for i, c in enumerate(s):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth == 0:
                return i == len(s) - 1
    return False


_MATRIX = re.compile(r"^\\begin\{([pbvBV]?matrix|array|smallmatrix)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.DOTALL)


class _Struct:
    __slots__ = ("kind", "open", "close", "items")

    def __init__(self, kind: str, items: list, open_: str = "", close: str = ""):
        self.kind, self.items, self.open, self.close = kind, items, open_, close


def _structure(s: str) -> _Struct | None:
    s = s.strip()
    if not s:
        return None
    m = _MATRIX.match(s)
    if m:
        rows = [r for r in (x.strip() for x in re.split(r"\\\\", m.group(2))) if r]
        cells = [[c.strip() for c in r.split("&")] for r in rows]
        return _Struct("matrix", cells)
    parts = _split_top(s, "\\cup")
    if len(parts) > 1:
        return _Struct("union", parts)
    if s.startswith("\\{") and s.endswith("\\}"):
        return _Struct("set", [x for x in _split_top(s[2:-2], ",") if x])
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _outer_spans(s):
        items = _split_top(s[1:-1], ",")
        if len(items) >= 2:
            return _Struct("bracket", items, s[0], s[-1])
        return None
    items = _split_top(s, ",")
    if len(items) >= 2:
        return _Struct("list", [x for x in items if x])
    items = _split_top(s, ";")
    if len(items) >= 2:
        return _Struct("list", [x for x in items if x])
    return None


def _unordered(a: list[str], b: list[str], depth: int) -> bool:
    if len(a) != len(b):
        return False
    used = [False] * len(b)
    for x in a:
        for j, y in enumerate(b):
            if not used[j] and _element_equal(x, y, depth + 1):
                used[j] = True
                break
        else:
            return False
    return True


def _ordered(a: list[str], b: list[str], depth: int) -> bool:
    return len(a) == len(b) and all(_element_equal(x, y, depth + 1) for x, y in zip(a, b))


def structured_equal(pred: str, ref: str, depth: int = 0) -> tuple[bool, str] | None:
    """(equal, rule) when at least one side is a tuple/interval/set/list/matrix, else None."""
    if depth > MAX_STRUCT_DEPTH:
        return (False, "mismatch")
    p, r = _structure(pred), _structure(ref)
    if p is None and r is None:
        return None
    if p is None or r is None:
        return (False, "mismatch")
    if len(p.items) > MAX_ITEMS or len(r.items) > MAX_ITEMS:
        return (False, "mismatch")
    if p.kind == "matrix" or r.kind == "matrix":
        if p.kind != r.kind or len(p.items) != len(r.items):
            return (False, "mismatch")
        ok = all(_ordered(pr, rr, depth) for pr, rr in zip(p.items, r.items))
        return (ok, "matrix")
    if p.kind == "union" or r.kind == "union":
        if p.kind != r.kind:
            return (False, "mismatch")
        return (_unordered(p.items, r.items, depth), "interval")
    if p.kind == "bracket" and r.kind == "bracket":
        same = (p.open, p.close) == (r.open, r.close)
        if len(r.items) == 2 and not same:
            return (False, "mismatch")  # (1,2] vs [1,2]: different intervals
        rule = "tuple" if (r.open, r.close) == ("(", ")") else "interval"
        return (_ordered(p.items, r.items, depth), rule)
    if p.kind in ("set", "list") and r.kind in ("set", "list"):
        return (_unordered(p.items, r.items, depth), "set" if "set" in (p.kind, r.kind) else "multi")
    if {p.kind, r.kind} == {"list", "bracket"}:
        b = p if p.kind == "bracket" else r
        if (b.open, b.close) == ("(", ")"):
            return (_ordered(p.items, r.items, depth), "tuple")
    return (False, "mismatch")


def _element_equal(a: str, b: str, depth: int) -> bool:
    st = structured_equal(a, b, depth)
    if st is not None:
        return st[0]
    return _scalar_equal(a, b)[0]


# ---------------------------------------------------------------------------------------------- scalars
_CHOICE_REF = re.compile(r"^\(?([A-E])\)?$")
_CHOICE_PRED = re.compile(r"^(?:\(([A-Ea-e])\)(?:\s.*)?|([A-E])[.:]?)$", re.DOTALL)
_WORDS = re.compile(r"^[A-Za-z][A-Za-z ]+$")


def choice_equal(pred_clean: str, ref_clean: str) -> bool:
    r = _CHOICE_REF.match(ref_clean.strip())
    if not r:
        return False
    p = _CHOICE_PRED.match(pred_clean.strip())
    if not p:
        return False
    return (p.group(1) or p.group(2)).upper() == r.group(1)


def _unwrap_parens(s: str) -> str:
    for _ in range(5):
        if len(s) >= 2 and s[0] == "(" and s[-1] == ")" and _outer_spans(s) and "," not in s:
            s = s[1:-1].strip()
        else:
            break
    return s


def _tolerance(p, r) -> float:
    return REL_TOL if (p.has_decimal or r.has_decimal) else EXACT_TOL


def sympy_equal(pred: str, ref: str, ref_is_int: bool = False) -> bool:
    """Equivalence through safe_sympy (no code evaluation); False when either side does not parse."""
    try:
        p = parse_latex_safe(pred)
        r = parse_latex_safe(ref)
    except (ParseError, ValueError, TypeError, ZeroDivisionError, RecursionError, OverflowError):
        return False
    import sympy

    try:
        d = p.expr - r.expr
        if d == 0:
            return True
        syms = sorted(d.free_symbols, key=lambda s: s.name)
        tol = EXACT_TOL if ref_is_int else _tolerance(p, r)
        if not syms:
            exact_inputs = ref_is_int or not (p.has_decimal or r.has_decimal)
            if exact_inputs and p.expr.is_Rational and r.expr.is_Rational:
                return False  # two exact rationals that differ (d != 0): no float tolerance (10^{12}+1 != 10^{12})
            a, b = _num(p.expr), _num(r.expr)
            if a is None or b is None:
                return False
            return abs(a - b) <= tol * max(abs(a), abs(b), 1e-300)
        # identity test at sample points
        points = [Fraction(37, 100), Fraction(191, 100), Fraction(-23, 10), Fraction(53, 7), Fraction(-2, 9)]
        good = 0
        for base in points:
            subs = {s: sympy.Rational(base.numerator + 3 * j * base.denominator, base.denominator)
                    for j, s in enumerate(syms)}
            a, b = _num(p.expr.subs(subs)), _num(r.expr.subs(subs))
            if a is None or b is None:
                continue
            if abs(a - b) > max(tol, 1e-9) * max(abs(a), abs(b), 1.0):
                return False
            good += 1
        return good >= 3
    except Exception:  # noqa: BLE001 - sympy failures mean "no opinion"
        return False


def _num(e) -> complex | None:
    try:
        v = complex(e.evalf(30))
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None
    if math.isfinite(v.real) and math.isfinite(v.imag):
        return v
    return None


def equation_equal(pred: str, ref: str) -> bool:
    """Both `lhs = rhs`: lhs - rhs agree up to a nonzero constant factor (checked at sample points)."""
    ps, rs = _split_top(pred, "="), _split_top(ref, "=")
    if len(ps) != 2 or len(rs) != 2:
        return False
    import sympy

    try:
        pl, pr = parse_latex_safe(ps[0]).expr, parse_latex_safe(ps[1]).expr
        rl, rr = parse_latex_safe(rs[0]).expr, parse_latex_safe(rs[1]).expr
    except (ParseError, ValueError, TypeError, ZeroDivisionError, RecursionError, OverflowError):
        return False
    try:
        dp, dr = pl - pr, rl - rr
        if dp == 0 or dr == 0:
            return False
        syms = sorted(dp.free_symbols | dr.free_symbols, key=lambda s: s.name)
        if not syms or dp.free_symbols != dr.free_symbols:
            return False
        ratio = None
        good = 0
        for base in (Fraction(37, 100), Fraction(191, 100), Fraction(-23, 10), Fraction(53, 7)):
            subs = {s: sympy.Rational(base.numerator + 3 * j * base.denominator, base.denominator)
                    for j, s in enumerate(syms)}
            a, b = _num(dp.subs(subs)), _num(dr.subs(subs))
            if a is None or b is None:
                continue
            if abs(b) < 1e-12:
                if abs(a) > 1e-9:
                    return False
                continue
            q = a / b
            if ratio is None:
                if abs(q) < 1e-12:
                    return False
                ratio = q
            elif abs(q - ratio) > 1e-9 * max(abs(q), 1.0):
                return False
            good += 1
        return good >= 3
    except Exception:  # noqa: BLE001
        return False


def _same_variable(pred: str, ref: str) -> tuple[bool, str, str]:
    """Two assignments must name the same variable ("x=1" vs "y=1" differ); their values are compared then.
    Returns (possible, pred_value, ref_value). One-sided "x =" prefixes are dropped by the normaliser."""
    pa, ra = assignment(pred), assignment(ref)
    if pa and ra:
        return pa[0] == ra[0], pa[1], ra[1]
    return True, pred, ref


def _scalar_equal(pred_raw: str, ref_raw: str) -> tuple[bool, str]:
    possible, pred_raw, ref_raw = _same_variable(pred_raw, ref_raw)
    if not possible:
        return False, "mismatch"
    pc, rc = clean(pred_raw), clean(ref_raw)
    pn, rn = normalize(pred_raw), normalize(ref_raw)
    if pn and pn == rn:
        return True, "string"
    if _WORDS.match(pc) and _WORDS.match(rc) and pn.lower() == rn.lower():
        return True, "string"
    pu, ru = _unwrap_parens(pn), _unwrap_parens(rn)
    if pu and pu == ru:
        return True, "string"
    if choice_equal(pc, rc):
        return True, "choice"
    if numeric_equal(pu, ru, has_percent(pred_raw), has_percent(ref_raw)):
        return True, "numeric"
    if "=" in pc and "=" in rc and equation_equal(pc, rc):
        return True, "equation"
    r_num = parse_number(ru)
    if MIXED_NUMBER.match(pu) or MIXED_NUMBER.match(ru):
        return False, "mismatch"  # a mixed number is a number, not 3 * 1/2 (the numeric rule decided)
    if "=" not in pc and "=" not in rc and sympy_equal(_unwrap_parens(pc), _unwrap_parens(rc),
                                                       ref_is_int=bool(r_num and r_num.is_int_literal)):
        return True, "sympy"
    return False, "mismatch"


def second_opinion(pred: str, ref: str) -> tuple[bool, str]:
    """The rule-based opinion (everything but math-verify)."""
    possible, pred, ref = _same_variable(pred, ref)
    if not possible:
        return False, "mismatch"
    pc, rc = clean(pred), clean(ref)
    if normalize(pred) == normalize(ref) and normalize(ref):
        return True, "string"
    if choice_equal(pc, rc):
        return True, "choice"
    st = structured_equal(pc, rc)
    if st is not None:
        return st if st[0] else (False, "mismatch")
    return _scalar_equal(pred, ref)


def nesting_depth(s: str) -> int:
    """Maximum bracket nesting depth of s (all of ( [ { count)."""
    depth = best = 0
    for c in s:
        if c in _OPEN:
            depth += 1
            if depth > best:
                best = depth
        elif c in _CLOSE and depth > 0:
            depth -= 1
    return best


def decide(pred: str, ref: str) -> tuple[bool, str]:
    """(correct, rule): math-verify first, then the second opinion (module doc).

    Exception: when both answers are plain numbers the numeric rule alone decides, with exact rational
    arithmetic. math-verify compares numbers after rounding to 6 decimals and at 15 significant digits, so it
    calls 0.0000001 and 0.0000002 equal, and 10^20 and 10^20+1.

    Answers nested deeper than MAX_PARSE_DEPTH brackets skip math-verify: its ANTLR parser takes exponential
    time on such input (a hostile answer would otherwise hold a worker for the whole time limit). The
    second opinion still compares them (its own parser refuses depth > 60)."""
    numeric = _plain_numbers_equal(pred, ref)
    if numeric is not None:
        return (True, "numeric") if numeric else (False, "mismatch")
    if max(nesting_depth(pred), nesting_depth(ref)) <= MAX_PARSE_DEPTH and math_verify_equal(pred, ref):
        return True, "math_verify"
    return second_opinion(pred, ref)


def _plain_numbers_equal(pred: str, ref: str) -> bool | None:
    """When both answers are plain numbers, exact rational arithmetic decides (None otherwise)."""
    possible, pred, ref = _same_variable(pred, ref)
    if not possible:
        return None
    p, r = _unwrap_parens(normalize(pred)), _unwrap_parens(normalize(ref))
    if parse_number(p) is None or parse_number(r) is None:
        return None
    return numeric_equal(p, r, has_percent(pred), has_percent(ref))
