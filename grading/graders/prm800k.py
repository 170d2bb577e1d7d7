"""The PRM800K grader's rules (openai/prm800k `grading/grader.py` + `math_normalize.py`), which the GSI reference code
uses (gsi-reference.md §6), rewritten without evaluating model text.

Verdict: correct when (a) the Hendrycks-MATH normalised strings are equal, or (b) the PRM800K-normalised strings
are equal, or (c) element by element (a tuple or interval splits into its elements; the brackets must match):
two plain fractions a/b must be the same string (unreduced fractions are wrong), an integer must be matched by an
integer (no sympy), anything else is correct when sympy simplifies (truth) - (given) to 0. The GSI code first
takes the last \\boxed{} of both sides (a side without one is used whole).

Where this differs from the original, on purpose:
* sympy's `parse_expr` (Python eval) is replaced by grading.safe_sympy, fed the same normalised text
  (sqrt, pi, ^); numbers stay exact (the original's floats can miss 0.1 + 0.2 = 0.3); `e` and `i` are plain
  symbols, as lower-cased names are in sympy's namespace. Input it cannot parse gets no sympy opinion.
* The GSI code grades the whole rendered chat, so an unboxed response finds the system prompt's empty
  \\boxed{} and is wrong; here the response alone is graded and a response without \\boxed{} is `no_answer`
  (the same verdict, without the Minerva prompt's \\boxed{5} false positive).
Time and memory are bounded by the caller's worker process (grading.safety), as for our grader.
"""

from __future__ import annotations

import re

from grading.verdict import MAX_ANSWER_CHARS, MAX_TEXT_CHARS, Verdict, reference_text

__all__ = ["grade_local", "grade_answer", "normalize_answer", "normalize", "last_boxed_gsi"]


# ---------------------------------------------------------------------------------------------- extraction
def last_boxed_gsi(text: str) -> str | None:
    """The content of the last `\\boxed{` with its braces matched (None when there is none or it never closes)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


# ---------------------------------------------------------------------------------------------- Hendrycks MATH
def _fix_fracs(s: str) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for sub in parts[1:]:
        out += "\\frac"
        if sub[:1] == "{":
            out += sub
            continue
        if len(sub) < 2:
            return s
        a, b, rest = sub[0], sub[1], sub[2:]
        out += "{" + a + "}{" + b + "}" + rest if b != "{" else "{" + a + "}" + b + rest
    return out


def _fix_a_slash_b(s: str) -> str:
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    return "\\frac{" + str(a) + "}{" + str(b) + "}" if s == f"{a}/{b}" else s


def _fix_sqrt(s: str) -> str:
    if "\\sqrt" not in s:
        return s
    parts = s.split("\\sqrt")
    out = parts[0]
    for sub in parts[1:]:
        if not sub:
            raise ValueError("\\sqrt without an argument")  # the original's IndexError
        out += "\\sqrt" + sub if sub[0] == "{" else "\\sqrt{" + sub[0] + "}" + sub[1:]
    return out


def _strip_string(s: str) -> str:
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:  # "\text{ " marks units on the right
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise ValueError("several \\text{ } groups")  # the original's failed assert: input kept as is
        s = parts[0]
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    halves = s.split("=")
    if len(halves) == 2 and len(halves[0]) <= 2:
        s = halves[1]
    s = _fix_sqrt(s).replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


def normalize_answer(answer: str | None) -> str | None:
    """Hendrycks MATH's normaliser, as PRM800K ships it (any failure keeps the stripped input)."""
    if answer is None:
        return None
    answer = answer.strip()
    try:
        m = re.search(r"^\\text\{(?P<text>.+?)\}$", answer)
        if m is not None:
            answer = m.group("text").strip()
        return _strip_string(answer)
    except Exception:  # noqa: BLE001 - the original's bare except
        return answer


# ---------------------------------------------------------------------------------------------- PRM800K
_UNITS = ["degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week", "month", "year",
          "foot", "feet", "inch", "yard"]
_UNIT_RES = [re.compile(f"{u}(es)?(s)? *(\\^[0-9]+)?") for u in _UNITS]
_BAD_SUBSTRINGS = ("^{", "^(")
_BAD_REGEXES = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))
_TUPLE_CHARS = "()[]"


def _latex_to_text(expr: str) -> str:
    from pylatexenc import latex2text

    expr = expr.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac")
    expr = latex2text.LatexNodes2Text().latex_to_text(expr)
    for a, b in (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*")):
        expr = expr.replace(a, b)
    return expr.strip()


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _is_int(x: float) -> bool:
    try:
        return abs(x - int(round(x))) <= 1e-7
    except (OverflowError, ValueError):
        return False


def _is_frac(s: str) -> bool:
    return bool(re.search(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$", s))


_COMMAS = re.compile(r"(\d)(,)(\d\d\d)($|\D)")


def _strip_commas(s: str) -> str:
    """Thousands separators only (a tuple's commas stay)."""
    while True:
        nxt = _COMMAS.sub(r"\1\3\4", s)
        if nxt == s:
            return s
        s = nxt


def _str_is_int(s: str) -> bool:
    try:
        return _is_int(float(_strip_commas(s)))
    except ValueError:
        return False


def normalize(expr: str | None) -> str | None:
    """PRM800K's `_normalize`: units and words dropped, LaTeX to text (pylatexenc), lower case, integers canonical."""
    if expr is None:
        return None
    m = re.search(r"^\\text\{(?P<text>.+?)\}$", expr)
    if m is not None:
        expr = m.group("text")
    expr = expr.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    expr = expr.replace(" or ", " , ").replace(" and ", " , ")
    expr = expr.replace("million", "*10^6").replace("billion", "*10^9").replace("trillion", "*10^12")
    for rx in _UNIT_RES:
        expr = rx.sub("", expr)
    expr = re.sub(r"\^ *\\circ", "", expr)
    if expr[:1] == "{" and expr[-1:] == "}":
        expr = expr[1:-1]
    expr = re.sub(r",\\! *", "", expr)
    if _is_float(expr) and _is_int(float(expr)):
        expr = str(int(round(float(expr))))
    if "\\" in expr:
        try:
            expr = _latex_to_text(expr)
        except Exception:  # noqa: BLE001 - the original keeps the input when pylatexenc fails
            pass
    expr = re.sub(r"- *", "-", expr)
    expr = re.sub(r"([0-9]) +([0-9])", r"\1+\2", expr)  # a mixed number "7 3/4" -> 7+3/4
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    if _str_is_int(expr):
        expr = str(int(float(expr.replace(",", ""))))
    return expr


def _should_allow_eval(expr: str) -> bool:
    letters = {c for c in expr.replace("sqrt", "").replace("frac", "") if c.isalpha()}
    if len(letters) > 2:
        return False
    return not any(b in expr for b in _BAD_SUBSTRINGS) and not any(rx.search(expr) for rx in _BAD_REGEXES)


_NAMES = re.compile(r"[a-z]+")
_KNOWN = {"sqrt": "\\sqrt", "pi": "\\pi", "sin": "\\sin", "cos": "\\cos", "tan": "\\tan", "log": "\\log",
          "ln": "\\ln", "exp": "\\exp"}


def _to_safe_latex(expr: str) -> str:
    """The normalised text in the syntax of grading.safe_sympy: known names become commands, other names are split
    into one-letter symbols (sympy's split_symbols), and e / i stay symbols."""
    def name(m: re.Match) -> str:
        w = m.group(0)
        if w in _KNOWN:
            return _KNOWN[w] + " "
        return " ".join({"e": "\\epsilon", "i": "\\iota"}.get(c, c) for c in w) + " "

    return _NAMES.sub(name, expr.replace("**", "^"))


def equal_under_sympy(truth: str, given: str) -> bool:
    """simplify((truth) - (given)) == 0, on safely parsed input; refused like the original (> 2 letters, ^{...})."""
    import sympy

    from grading.safe_sympy import ParseError, parse_latex_safe

    expr = f"({truth})-({given})"
    if not _should_allow_eval(expr):
        return False
    try:
        diff = parse_latex_safe(_to_safe_latex(expr)).expr
        return sympy.simplify(diff) == 0
    except (ParseError, TypeError, ValueError, ZeroDivisionError, AttributeError, RecursionError):
        return False


def _split_tuple(expr: str) -> list[str]:
    expr = _strip_commas(expr)
    if not expr:
        return []
    if (len(expr) > 2 and expr[0] in _TUPLE_CHARS and expr[-1] in _TUPLE_CHARS
            and all(ch not in expr[1:-1] for ch in _TUPLE_CHARS)):
        return [e.strip() for e in expr[1:-1].split(",")]
    return [expr]


def grade_answer(given: str | None, truth: str) -> tuple[bool, str]:
    """(correct, rule) for two extracted answers, by PRM800K's `grade_answer`."""
    if given is None:
        return False, "no_answer"
    if normalize_answer(truth) == normalize_answer(given):
        return True, "string"
    truth_n, given_n = normalize(truth), normalize(given)
    if truth_n is None:
        return False, "no_reference"
    if truth_n == given_n:
        return True, "string"
    if not given_n:
        return False, "mismatch"
    truth_el, given_el = _split_tuple(truth_n), _split_tuple(given_n)
    if len(truth_el) > 1 and (truth_n[0] != given_n[0] or truth_n[-1] != given_n[-1]):
        return False, "mismatch"
    if len(truth_el) != len(given_el):
        return False, "mismatch"
    rules = set()
    for t, g in zip(truth_el, given_el):
        if _is_frac(t) and _is_frac(g):
            ok, rule = t == g, "string"  # unreduced fractions are wrong: no simplify
        elif _str_is_int(t) != _str_is_int(g):
            ok, rule = False, "mismatch"
        else:
            ok, rule = equal_under_sympy(t, g), "sympy"
        if not ok:
            return False, "mismatch"
        rules.add(rule)
    return True, "tuple" if len(truth_el) > 1 else rules.pop()


def grade_local(generated_text, reference_answer, on_extracted=None) -> Verdict:
    """Grade in this process (no time limit: grading.grade(..., grader="prm800k") runs it in a worker)."""
    text = generated_text if isinstance(generated_text, str) else ("" if generated_text is None else str(generated_text))
    ref = reference_text(reference_answer)
    if len(ref) > MAX_ANSWER_CHARS:
        return Verdict(False, "refused_too_long", None, ref[:200])
    truth = last_boxed_gsi(ref)
    truth = ref.strip() if truth is None else truth
    norm_ref = normalize_answer(truth) or ""
    if len(text) > MAX_TEXT_CHARS:
        return Verdict(False, "refused_too_long", None, norm_ref)
    given = last_boxed_gsi(text)
    if given is None or not given.strip():
        return Verdict(False, "no_answer", given or None, norm_ref)
    if len(given) > MAX_ANSWER_CHARS:
        return Verdict(False, "refused_too_long", given[:200], norm_ref)
    if not truth:
        return Verdict(False, "no_reference", given, norm_ref)
    if on_extracted is not None:
        on_extracted(given, norm_ref)
    correct, rule = grade_answer(given, truth)
    return Verdict(bool(correct), rule, given, norm_ref)
