"""A small LaTeX-expression parser that builds sympy objects WITHOUT evaluating any code.

sympy's own `parse_expr` / `sympify` / `S("...")` run Python `eval` on the string, so they must never see model
output. This module tokenises the answer itself and builds sympy objects only from what it recognises:

* numbers (kept exact: ``0.25`` becomes ``Rational(1, 4)``), single-letter symbols (``x_1``, ``\\alpha`` too),
  ``e`` (Euler's number), ``i`` (imaginary unit), ``\\pi``, ``\\infty``;
* ``+ - * / ^``, ``\\cdot``, ``\\times``, ``\\div``, implicit multiplication (``2x``, ``3\\sqrt{2}``);
* ``\\frac{}{}``, ``\\sqrt{}``, ``\\sqrt[n]{}``, ``(...)``, ``{...}``, ``[...]``, ``|...|``;
* ``\\sin \\cos \\tan \\sec \\csc \\cot \\arcsin \\arccos \\arctan \\sinh \\cosh \\tanh \\ln \\log \\exp``.

Anything else raises `ParseError` (the caller then simply has no sympy opinion). Size guards keep a hostile
answer from making sympy compute something huge: an integer power needs |exponent| <= 1000 and a result under
~20,000 digits, rational intermediates are capped at the same size, nesting at depth 60 and input at 400 tokens.
"""

from __future__ import annotations

import re
from fractions import Fraction

import sympy

__all__ = ["ParseError", "parse_latex_safe", "ParsedExpr"]

MAX_TOKENS = 400
MAX_DEPTH = 60
MAX_BITS = 70_000  # ~21,000 decimal digits
MAX_EXPONENT = 1000
MAX_NUMBER_CHARS = 100


class ParseError(ValueError):
    """The string is not an expression this parser supports (or it is too big)."""


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<cmd>\\[A-Za-z]+)|(?P<esc>\\.)|(?P<letter>[A-Za-z])|(?P<char>[-+*/^()\[\]{}_|!,=<>']))"
)

_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
    "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega",
    "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Upsilon", "Phi", "Psi", "Omega",
}
_FUNCS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "sec": sympy.sec, "csc": sympy.csc, "cot": sympy.cot,
    "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan, "sinh": sympy.sinh, "cosh": sympy.cosh,
    "tanh": sympy.tanh, "ln": sympy.log, "log": sympy.log, "exp": sympy.exp,
}
_MUL_CMDS = {"\\cdot", "\\times", "\\ast"}
_DIV_CMDS = {"\\div"}


def _tokenize(s: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    n = len(s)
    while pos < n:
        m = _TOKEN.match(s, pos)
        if not m:
            if s[pos:].strip() == "":
                break
            raise ParseError(f"unexpected character {s[pos]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        if len(out) > MAX_TOKENS:
            raise ParseError("too many tokens")
        pos = m.end()
    return out


class ParsedExpr:
    """A parsed expression and whether it contained a decimal literal (a rounded number)."""

    __slots__ = ("expr", "has_decimal")

    def __init__(self, expr: sympy.Expr, has_decimal: bool):
        self.expr = expr
        self.has_decimal = has_decimal


def _check_size(v):
    if isinstance(v, sympy.Rational):
        if max(abs(v.p).bit_length(), abs(v.q).bit_length()) > MAX_BITS:
            raise ParseError("number too large")
    return v


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]):
        self.toks = tokens
        self.i = 0
        self.depth = 0
        self.has_decimal = False

    # -- helpers
    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise ParseError("unexpected end")
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, value: str) -> None:
        t = self.next()
        if t[1] != value:
            raise ParseError(f"expected {value!r}, got {t[1]!r}")

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError("nesting too deep")

    def leave(self):
        self.depth -= 1

    # -- grammar
    def parse(self):
        e = self.expr()
        if self.peek() is not None:
            raise ParseError(f"trailing input at {self.peek()[1]!r}")
        return e

    def expr(self):
        self.enter()
        e = self.term()
        while (t := self.peek()) is not None and t[1] in ("+", "-"):
            self.next()
            r = self.term()
            e = _check_size(e + r if t[1] == "+" else e - r)
        self.leave()
        return e

    def starts_atom(self, t) -> bool:
        if t is None:
            return False
        kind, v = t
        if kind in ("num", "letter"):
            return True
        if kind == "cmd":
            name = v[1:]
            return name in ("frac", "sqrt", "pi", "infty") or name in _GREEK or name in _FUNCS
        return v in ("(", "{", "[")

    def term(self):
        e = self.unary()
        while True:
            t = self.peek()
            if t is None:
                break
            if t[1] in ("*",) or t[1] in _MUL_CMDS:
                self.next()
                e = _check_size(e * self.unary())
            elif t[1] == "/" or t[1] in _DIV_CMDS:
                self.next()
                d = self.unary()
                if d == 0:
                    raise ParseError("division by zero")
                e = _check_size(e / d)
            elif self.starts_atom(t):
                e = _check_size(e * self.power())
            else:
                break
        return e

    def unary(self):
        t = self.peek()
        if t is not None and t[1] in ("+", "-"):
            self.next()
            self.enter()
            v = self.unary()
            self.leave()
            return -v if t[1] == "-" else v
        return self.power()

    def power(self):
        base = self.atom()
        t = self.peek()
        if t is not None and t[1] == "^":
            self.next()
            exp = self.exponent()
            return self.make_pow(base, exp)
        return base

    def exponent(self):
        t = self.peek()
        if t is None:
            raise ParseError("missing exponent")
        if t[1] == "{":
            self.next()
            e = self.expr()
            self.expect("}")
            return e
        if t[1] in ("+", "-"):
            self.next()
            v = self.exponent()
            return -v if t[1] == "-" else v
        if t[0] == "num" and len(t[1]) > 1 and t[1][1:2].isdigit():
            # LaTeX semantics: x^23 is x^2 * 3
            self.toks[self.i] = ("num", t[1][1:])
            return sympy.Integer(int(t[1][0]))
        return self.atom()

    def make_pow(self, base, exp):
        if exp.is_Number:
            if base.is_Number and base in (0, 1, -1):
                if base == 0 and exp.is_negative:
                    raise ParseError("division by zero")
                return sympy.Pow(base, exp)
            if abs(exp) > MAX_EXPONENT:
                raise ParseError("exponent too large")
            if isinstance(base, sympy.Rational) and exp.is_Integer:
                bits = max(abs(base.p).bit_length(), abs(base.q).bit_length())
                if bits * abs(int(exp)) > MAX_BITS:
                    raise ParseError("power too large")
        elif exp.free_symbols == set() and not exp.is_Number:
            # a constant exponent that sympy left unevaluated (sqrt(2), pi): fine, stays symbolic
            pass
        return _check_size(sympy.Pow(base, exp))

    def group(self):
        """A {...} group, or a single atom (\\frac12 after normalisation is \\frac{1}{2} anyway)."""
        t = self.peek()
        if t is not None and t[1] == "{":
            self.next()
            e = self.expr()
            self.expect("}")
            return e
        return self.atom()

    def atom(self):
        self.enter()
        try:
            return self._atom()
        finally:
            self.leave()

    def _atom(self):
        kind, v = self.next()
        if kind == "num":
            if len(v) > MAX_NUMBER_CHARS:
                raise ParseError("number literal too long")
            if "." in v:
                self.has_decimal = True
            f = Fraction(v)
            return sympy.Rational(f.numerator, f.denominator)
        if kind == "letter":
            if v == "e":
                base = sympy.E
            elif v == "i":
                base = sympy.I
            else:
                base = sympy.Symbol(v)
            t = self.peek()
            if t is not None and t[1] == "_":
                self.next()
                sub = self.subscript()
                return sympy.Symbol(f"{v}_{sub}")
            return base
        if kind == "char":
            if v == "(":
                e = self.expr()
                self.expect(")")
                return e
            if v == "[":
                e = self.expr()
                self.expect("]")
                return e
            if v == "{":
                e = self.expr()
                self.expect("}")
                return e
            if v == "|":
                e = self.expr()
                self.expect("|")
                return sympy.Abs(e)
            raise ParseError(f"unexpected {v!r}")
        if kind == "cmd":
            name = v[1:]
            if name == "frac":
                num = self.group()
                den = self.group()
                if den == 0:
                    raise ParseError("division by zero")
                return _check_size(num / den)
            if name == "sqrt":
                t = self.peek()
                if t is not None and t[1] == "[":
                    self.next()
                    n = self.expr()
                    self.expect("]")
                    arg = self.group()
                    if n == 0:
                        raise ParseError("zeroth root")
                    return sympy.root(arg, n) if n.is_Number else sympy.Pow(arg, 1 / n)
                return sympy.sqrt(self.group())
            if name == "pi":
                return sympy.pi
            if name == "infty":
                return sympy.oo
            if name in _GREEK:
                t = self.peek()
                if t is not None and t[1] == "_":
                    self.next()
                    return sympy.Symbol(f"{name}_{self.subscript()}")
                return sympy.Symbol(name)
            if name in _FUNCS:
                return self.function(name)
            raise ParseError(f"unsupported command {v}")
        raise ParseError(f"unsupported token {v!r}")

    def subscript(self) -> str:
        t = self.next()
        if t[1] == "{":
            parts = []
            while (u := self.next())[1] != "}":
                if u[0] not in ("num", "letter"):
                    raise ParseError("complex subscript")
                parts.append(u[1])
                if len(parts) > 5:
                    raise ParseError("long subscript")
            return "".join(parts)
        if t[0] in ("num", "letter"):
            return t[1]
        raise ParseError("bad subscript")

    def function(self, name: str):
        f = _FUNCS[name]
        power = None
        base = None
        t = self.peek()
        if name == "log" and t is not None and t[1] == "_":
            self.next()
            base = self.group()
            t = self.peek()
        if t is not None and t[1] == "^":
            self.next()
            power = self.exponent()
        t = self.peek()
        if t is not None and t[1] == "(":
            self.next()
            arg = self.expr()
            self.expect(")")
        elif t is not None and t[1] == "{":
            arg = self.group()
        else:
            arg = self.power()
        val = sympy.log(arg, base) if base is not None else f(arg)
        if power is not None:
            val = self.make_pow(val, power)
        return val


def parse_latex_safe(s: str) -> ParsedExpr:
    """Parse a (normalised) LaTeX expression into sympy without evaluating code; raises ParseError."""
    if len(s) > 2000:
        raise ParseError("input too long")
    toks = _tokenize(s)
    if not toks:
        raise ParseError("empty")
    p = _Parser(toks)
    e = p.parse()
    if not isinstance(e, sympy.Basic) or e.has(sympy.zoo, sympy.nan):
        raise ParseError("undefined value")
    return ParsedExpr(e, p.has_decimal)
