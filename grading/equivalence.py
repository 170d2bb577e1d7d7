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

import logging
import math
import re
from fractions import Fraction

from grading.normalize import assignment, canonical_number, clean, has_percent, normalize, strip_math_delimiters
from grading.safe_sympy import ParseError, parse_latex_safe

__all__ = ["decide", "math_verify_equal", "second_opinion", "REL_TOL"]

REL_TOL = 1e-4
EXACT_TOL = 1e-9
MAX_ITEMS = 50
MAX_STRUCT_DEPTH = 6
MAX_PARSE_DEPTH = 25

logging.getLogger("math_verify").setLevel(logging.ERROR)
logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)


# ---------------------------------------------------------------------------------------------- math-verify
_MV = None


def _mv():
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
    mv, cfg = _mv()[:2]
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


# ---------------------------------------------------------------------------------------------- numbers
_SCI = [
    re.compile(r"^(-?\d+(?:\.\d+)?)[eE]([-+]?\d{1,4})$"),
    re.compile(r"^(-?\d+(?:\.\d+)?)(?:\\times|\\cdot|\*|x)10\^\{?([-+]?\d{1,4})\}?$"),
]
_POW10 = re.compile(r"^(-?)10\^\{?([-+]?\d{1,4})\}?$")
_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}$")
_MIXED = re.compile(r"^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")
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
    m = _MIXED.match(norm)
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
    if _MIXED.match(pu) or _MIXED.match(ru):
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
