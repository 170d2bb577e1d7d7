"""Answer-string normalisation (Hendrycks MATH / PRM800K style, with Qwen2.5-Math's additions).

`normalize(s)` maps an answer to a canonical string so that plain string equality decides the easy cases:
``\\dfrac{1}{2}`` / ``\\frac12`` / ``1/2`` -> ``\\frac{1}{2}``, ``27.0`` / ``027`` / ``+27`` -> ``27``,
``1,000`` -> ``1000``, ``5\\text{ cm}`` -> ``5``, ``30^\\circ`` -> ``30``, ``x = 3`` -> ``3``, ``\\$5`` -> ``5``,
``50\\%`` -> ``50`` (the percent sign is remembered separately by `has_percent`; see equivalence.py).

Every step is a simple regex or string operation, linear in the input (inputs are at most a few thousand
characters: the grader refuses longer ones before this runs).
"""

from __future__ import annotations

import re

__all__ = ["normalize", "clean", "has_percent", "strip_math_delimiters", "canonical_number", "assignment",
           "UNIT_WORDS"]

# Unit words stripped after a plain number ("5 cm", "12 square units"); only whole trailing words, and only when
# what remains is a number, so "2 x" or "n m" are never touched.
UNIT_WORDS = {
    "unit", "units", "sq", "square", "cubic", "cu",
    "cm", "mm", "km", "m", "meter", "meters", "metre", "metres", "centimeter", "centimeters", "centimetre",
    "centimetres", "millimeter", "millimeters", "kilometer", "kilometers", "kilometre", "kilometres",
    "in", "inch", "inches", "ft", "foot", "feet", "yd", "yard", "yards", "mile", "miles", "mi", "mph", "kmh",
    "kph", "s", "sec", "secs", "second", "seconds", "min", "mins", "minute", "minutes", "h", "hr", "hrs", "hour",
    "hours", "day", "days", "week", "weeks", "month", "months", "year", "years", "yr", "yrs",
    "g", "gram", "grams", "kg", "kilogram", "kilograms", "mg", "lb", "lbs", "pound", "pounds", "oz", "ounce",
    "ounces", "ton", "tons", "l", "liter", "liters", "litre", "litres", "ml", "gallon", "gallons", "quart",
    "quarts", "cup", "cups", "pint", "pints", "dollar", "dollars", "cent", "cents", "usd", "euro", "euros",
    "degree", "degrees", "deg", "radian", "radians", "rad", "percent", "percentage", "point", "points",
    "people", "person", "persons", "students", "ways", "times", "items", "pieces", "marbles", "eggs",
    "j", "kj", "ev", "kev", "mev", "w", "kw", "v", "a", "hz", "khz", "mhz", "ghz", "k", "pa", "kpa", "n",
    "ergs", "erg", "nm", "um", "pc", "kpc", "mpc", "au", "ly", "atm", "mol", "moles", "c", "f",
}
# single letters are unit words only inside \text{}/\mathrm{} or with a space after a plain number ("5 m")

_TEXT_CMDS = r"(?:text|textbf|textit|textrm|textsf|texttt|mathrm|mathbf|mathit|mathsf|mathtt|mbox|operatorname|rm|bf)"
_TEXT_GROUP = re.compile(r"\\" + _TEXT_CMDS + r"\s*\{([^{}]*)\}")
# one trailing unit group: \text{ cm}, \mathrm{~m}^2, \mbox{ inches}, \text{m}/\text{s}
_UNIT_TAIL = re.compile(
    r"\\(?:text|mathrm|mbox|textrm|rm)\s*\{\s*~?\s*[A-Za-z][A-Za-z .~/\-]*\}(?:\s*\^\s*\{?-?\d\}?|\s*/\s*[A-Za-z]+)*\s*$"
)
_PLAIN_NUMBER = r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:\\frac\{\d+\}\{\d+\})?|[-+]?\\frac\{\d+\}\{\d+\}"
_SHORT_LHS = re.compile(r"^\s*([A-Za-z](?:_\{?\w{1,3}\}?)?|\\[A-Za-z]+)\s*(?<![<>!\\])=(?!=)(?P<rhs>[^=]+)$")
_THOUSANDS = re.compile(r"^([-+]?)(\d{1,3}(?:,\d{3})+)(\.\d+)?$")
_NUMBER = re.compile(r"^([-+]?)(\d*)(?:\.(\d*))?$")
_SLASH_FRACTION = re.compile(r"^([-+]?)(\d+)\s*/\s*(\d+)$")


def strip_math_delimiters(s: str) -> str:
    """Remove $...$, \\(...\\), \\[...\\] wrappers and any remaining unescaped $ signs."""
    s = s.strip()
    for a, b in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
        if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
            s = s[len(a) : len(s) - len(b)].strip()
    s = re.sub(r"(?<!\\)\$", "", s)
    return s.strip()


def has_percent(s: str) -> bool:
    """Whether the answer ends in a percent sign or the word percent."""
    t = s.strip().rstrip(".").rstrip("$").strip()
    t = re.sub(r"\\(?:text|mbox|mathrm)\s*\{\s*(%|percent)\s*\}$", r"\1", t)
    return bool(re.search(r"(?:\\%|%|\bpercent|\bpercentage)\s*\}?$", t))


_FRAC_ARG = r"(\\[A-Za-z]+|[A-Za-z0-9])"
_FRAC_BARE_BARE = re.compile(r"\\frac\s*" + _FRAC_ARG + r"\s*" + _FRAC_ARG)
_FRAC_BARE_GROUP = re.compile(r"\\frac\s*" + _FRAC_ARG + r"\s*\{")
_FRAC_GROUP_BARE = re.compile(r"\\frac\s*\{([^{}]*)\}\s*" + _FRAC_ARG)


def _fix_fracs(s: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1{x} -> \\frac{1}{x}, \\frac{a}b -> \\frac{a}{b} (Hendrycks' _fix_fracs, as
    three linear regex rewrites)."""
    s = _FRAC_BARE_BARE.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_BARE_GROUP.sub(r"\\frac{\1}{", s)
    s = _FRAC_GROUP_BARE.sub(r"\\frac{\1}{\2}", s)
    return s


def _fix_sqrt(s: str) -> str:
    """\\sqrt2 -> \\sqrt{2}, \\sqrt x -> \\sqrt{x}."""
    return re.sub(r"\\sqrt\s*(?![\[{\s])(\\[A-Za-z]+|[A-Za-z0-9])", r"\\sqrt{\1}", s)


def canonical_number(s: str) -> str | None:
    """'027' -> '27', '27.0' -> '27', '1,000' -> '1000', '.5' -> '0.5', '-0' -> '0', '+3' -> '3'; None if not a
    plain decimal number."""
    t = s.strip()
    m = _THOUSANDS.match(t)
    if m:
        t = m.group(1) + m.group(2).replace(",", "") + (m.group(3) or "")
    m = _NUMBER.match(t)
    if not m or (not m.group(2) and not m.group(3)):
        return None
    sign, whole, frac = m.group(1), m.group(2).lstrip("0") or "0", (m.group(3) or "").rstrip("0")
    if len(whole) > 400:
        return None
    out = whole + ("." + frac if frac else "")
    if out == "0":
        return "0"
    return ("-" if sign == "-" else "") + out


_NUMBER_HEAD = re.compile(r"^(?P<head>" + _PLAIN_NUMBER + r")(?P<sep>\s*)(?P<rest>[A-Za-z][A-Za-z.^{}0-9 /]*)$")


def _strip_units(s: str) -> str:
    # trailing \text{unit} groups, only after something that contains a digit ("5\text{ cm}", not "\text{A}")
    for _ in range(8):
        m = _UNIT_TAIL.search(s)
        if not m:
            break
        head = s[: m.start()].rstrip()
        if not head or not any(c.isdigit() for c in head):
            break
        s = head
    m = _NUMBER_HEAD.match(s)
    if m:
        words = [re.split(r"[\^{]", w.rstrip("."), maxsplit=1)[0].lower()
                 for w in m.group("rest").replace("/", " ").split()]
        if 0 < len(words) <= 4 and all(w in UNIT_WORDS for w in words):
            # a single letter counts only after a space ("5 m"; "5m" may be 5*m)
            if not (len(words) == 1 and len(words[0]) == 1 and not m.group("sep")):
                s = m.group("head")
    return s


def clean(s: str, keep_lhs: bool = False) -> str:
    """Normalise an answer but keep single spaces between tokens (for the expression parser).
    `keep_lhs` keeps a short "x =" prefix (to compare the variable names of two assignments)."""
    s = str(s).strip()
    s = strip_math_delimiters(s)
    s = s.replace("\n", " ").replace("\r", " ").replace("\t", " ")
    # spacing commands and sizing
    s = s.replace("{,}", ",")
    s = re.sub(r"(?<!\\)\\[,;:! ]|\\q?quad\b|~", " ", s)
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big|biggl|biggr|bigg|Bigg)(?![A-Za-z])\s*\.?", "", s)
    s = re.sub(r"\\(?:displaystyle|textstyle|scriptstyle)(?![A-Za-z])", "", s)
    s = re.sub(r"\\[dtc]frac(?![A-Za-z])", r"\\frac", s)
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\lbrace", "\\{").replace("\\rbrace", "\\}").replace("\\lvert", "|").replace("\\rvert", "|")
    # degrees
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|°", "", s)
    s = re.sub(r"\\text\{\s*degrees?\s*\}", "", s)
    # money and percent (has_percent() keeps the information)
    s = s.replace("\\$", "").replace("\\%", "").replace("%", "")
    s = re.sub(r"\\text\{\s*percent(?:age)?\s*\}", "", s)
    s = re.sub(r"\s*\b(?:percent|percentage)\s*$", "", s)
    # units, then unwrap remaining \text{...}
    s = _strip_units(s.strip())
    for _ in range(5):
        s2 = _TEXT_GROUP.sub(r"\1", s)
        if s2 == s:
            break
        s = s2
    s = re.sub(r"\s*\b(?:degrees?)\s*$", "", s)
    s = _strip_units(s.strip())
    s = s.strip()
    # trailing full stop (not a decimal point) and stray punctuation
    while s and s[-1] in ".,;" and not s.endswith("\\" + s[-1]):
        s = s[:-1].rstrip()
    # a short "x = " prefix (x=3, k = 2, \theta=...)
    m = None if keep_lhs else _SHORT_LHS.match(s)
    if m:
        s = m.group("rhs").strip()
    s = _fix_sqrt(s)
    s = _fix_fracs(s)
    # " and " joins answers: "2 and 3" -> "2, 3"
    s = re.sub(r"\s+and\s+|\\text\{\s*and\s*\}|\\text\{\s*or\s*\}|\s+or\s+", ", ", s)
    s = re.sub(r"\s+", " ", s).strip()
    # plain numbers
    num = canonical_number(s.replace(" ", ""))
    if num is not None:
        return num
    m = _SLASH_FRACTION.match(s)
    if m:
        return ("-" if m.group(1) == "-" else "") + "\\frac{" + m.group(2) + "}{" + m.group(3) + "}"
    return s


def assignment(s: str) -> tuple[str, str] | None:
    """(variable, value) when the answer is a short assignment such as "x = 3" or "\\theta=\\frac{\\pi}{4}"."""
    m = _SHORT_LHS.match(clean(s, keep_lhs=True))
    if not m:
        return None
    return m.group(1).replace(" ", ""), m.group("rhs").strip()


def normalize(s: str) -> str:
    """Canonical answer string for string comparison (spaces removed)."""
    s = clean(s)
    s = s.replace(" ", "")
    # \frac{a}{b} with a leading sign inside: keep one canonical place for '-'
    s = re.sub(r"^\\frac\{-(\d+)\}\{(\d+)\}$", r"-\\frac{\1}{\2}", s)
    if s in ("0.5", "\\frac{1}{2}"):
        return "\\frac{1}{2}"
    return s
