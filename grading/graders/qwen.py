"""The Qwen2.5-Math evaluation's rules (QwenLM/Qwen2.5-Math `evaluation/parser.py` `extract_answer` / `strip_string`
and `evaluation/grader.py` `math_equal`), which the RSD code grades with (rsd-reference.md §6), rewritten without
evaluating model text.

Extraction, in order: Minerva's "final answer is $...$. I hope"; the last `boxed` (braces matched, or the text
up to `$`); the text after "he answer is"; after "final answer is"; after "答案是"; else the LAST NUMBER of the
text. Then `strip_string` (units, `\\text{}`, `$`, `%`, degrees, number words, short "x=" prefixes, fractions).
A choice-letter reference (A-E: MMLU-STEM) uses the multiple-choice reader on the whole text instead: the first
standalone A-E after the last "answer is"/"choice is", else the last standalone A-E of the upper-cased text (so a
late English "a" reads as (A), as in the original). The reference goes through `strip_string` too.

`math_equal`, in order: case-insensitive string match; a choice letter; numbers (commas dropped, `%` read as /100,
the reference also tried x100 and /100, relative tolerance 1e-4); strings equal once brackets are dropped;
bracketed lists element by element (bracket kinds are NOT compared: (1,2] == [1,2]); pmatrix/bmatrix cell by
cell; equations lhs - (rhs) up to sign; a short "x=" dropped on one side; then sympy: string or structural
equality, `equals`, simplify(a - b) == 0, numerically within 1e-4, matrices rounded to 3 decimals.

Where this differs from the original, on purpose:
* No `parse_expr` (Python eval) and no sympy `parse_latex`: expressions are parsed by grading.safe_sympy, then by
  latex2sympy2_extended (an ANTLR parse tree, as math-verify uses; the original bundles latex2sympy2 itself).
* The original picks its extraction and unit rules by dataset name; here the multiple-choice reader is chosen by
  the reference being a letter A-E, and unit words are always stripped (the original skips that for Minerva).
* Number words ("five" -> 5) are converted only when the whole answer is number words (word2number also picks
  them out of longer text).
Time and memory are bounded by the caller's worker process (grading.safety): the original's 3 s per answer.
"""

from __future__ import annotations

import math
import re

from grading.graders.prm800k import _fix_fracs  # Hendrycks MATH's helper: both evaluations copy it verbatim
from grading.verdict import MAX_ANSWER_CHARS, MAX_TEXT_CHARS, Verdict, reference_text

__all__ = ["grade_local", "math_equal", "extract_answer", "strip_string", "choice_answer_clean"]

CHOICES = ("A", "B", "C", "D", "E")
MAX_DEPTH = 8  # recursion through bracketed lists and matrices


# ---------------------------------------------------------------------------------------------- normalisation
def _fix_a_slash_b(s: str) -> str:
    parts = s.split("/")
    if len(parts) != 2:
        return s
    a, b = parts
    try:
        a2 = a if "sqrt" in a else str(int(a))
        b2 = b if "sqrt" in b else str(int(b))
    except ValueError:
        return s
    return "\\frac{" + a2 + "}{" + b2 + "}" if s == f"{a2}/{b2}" else s


_UNIT_TEXTS = [
    "east", "degree", "mph", "kmph", "ft", "m sqaure", " m east", "sq m", "deg", "mile", "q .", "monkey", "prime",
    "ratio", "profit of rs", "rd", "o", "gm", "p . m", "lb", "tile", "per", "dm", "lt", "gain", "ab", "way", "west",
    "a .", "b .", "c .", "d .", "e .", "f .", "g .", "h .", "t", "a", "h", "no change", "men", "soldier", "pie", "bc",
    "excess", "st", "inches", "noon", "percent", "by", "gal", "kmh", "c", "acre", "rise", "a . m", "th", "π r 2",
    "sq", "mark", "l", "toy", "coin", "sq . m", "gallon", "° f", "profit", "minw", "yr", "women", "feet", "am", "pm",
    "hr", "cu cm", "square", "v â € ™", "are", "rupee", "rounds", "cubic", "cc", "mtr", "s", "ohm", "number", "kmph",
    "day", "hour", "minute", "min", "second", "man", "woman", "sec", "cube", "mt", "sq inch", "mp", "∏ cm ³",
    "hectare", "more", "sec", "unit", "cu . m", "cm 2", "rs .", "rs", "kg", "g", "month", "km", "m", "cm", "mm",
    "apple", "liter", "loss", "yard", "pure", "year", "increase", "decrease", "d", "less", "Surface", "litre",
    "pi sq m", "s .", "metre", "meter", "inch",
]
_UNIT_TEXTS += [t + "s" for t in _UNIT_TEXTS]
# The original builds each pattern from the unit text as a regex ("q ." matches "q x" too): kept.
_UNIT_RES = [re.compile(r"(^|\W)" + u + r"($|\W)") for u in _UNIT_TEXTS]

_ONES = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}


def convert_word_number(text: str) -> str:
    """'twenty five' -> '25' when the whole text is number words; anything else unchanged."""
    words = text.lower().replace("-", " ").split()
    if not words or any(w not in _ONES and w not in _TENS and w not in _SCALES and w != "and" for w in words):
        return text
    total, current, seen = 0, 0, False
    for w in words:
        if w in _ONES:
            current += _ONES[w]
        elif w in _TENS:
            current += _TENS[w]
        elif w == "hundred":
            current = max(current, 1) * 100
        elif w in _SCALES:
            total += max(current, 1) * _SCALES[w]
            current = 0
        else:
            continue
        seen = True
    return str(total + current) if seen else text


def strip_string(s: str, skip_unit: bool = False) -> str:
    s = str(s).strip().replace("\n", "").rstrip(".").replace("\\!", "")
    s = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", s)
    s = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", s).replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}")
    t = re.sub(r"\\text{.*?}$", "", s).strip()
    if t and t != s:
        s = t
    if not skip_unit:
        for _ in range(2):
            for rx in _UNIT_RES:
                t = rx.sub(r"\1\2", s)
                if t:
                    s = t
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "").replace("$", "")
    s = s.replace("\\(", "").replace("\\)", "")
    s = convert_word_number(s)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    for key in ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"):
        s = s.replace(key, "")
    s = s.replace("\\emptyset", "{}").replace("(-\\infty,\\infty)", "\\mathbb{R}")
    s = s.replace("\\%", "").replace("%", "").replace(" .", " 0.").replace("{.", "{0.")
    if ((s.startswith("{") and s.endswith("}")) or (s.startswith("(") and s.endswith(")"))
            or (s.startswith("[") and s.endswith("]"))) and s.isalnum():
        s = s[1:-1]  # (never true: the brackets are not alphanumeric; kept as in the original)
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty").replace("and", "").replace("\\mathbf", "")
    s = re.sub(r"\\mbox{.*?}", "", s)
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", s)
    s = re.sub(r"(\d+)\.0*$", r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    halves = s.split("=")
    if len(halves) == 2 and len(halves[0]) <= 2:
        s = halves[1]
    s = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s).replace(" ", "")
    return _fix_a_slash_b(_fix_fracs(s))


# ---------------------------------------------------------------------------------------------- extraction
_TRIGGERS = ("choice is", "answer is")


def choice_answer_clean(pred: str) -> str:
    """The multiple-choice reader (parser.py's version, used for MMLU-STEM)."""
    pred = pred.strip("\n")
    if any(pred.count(t) > 1 for t in _TRIGGERS):  # few-shot output: keep the first chunk
        pred = pred.split("\n\n")[0]
    parts = re.split("|".join(_TRIGGERS), pred)
    flag = len(parts) > 1
    if flag:
        pred = parts[-1]
    pred = pred.strip("\n").rstrip(".").rstrip("/").strip(" ").lstrip(":")
    letters = re.findall(r"\b(A|B|C|D|E)\b", pred.upper())
    cands = letters if letters else [pred.strip().strip(".")]
    pred = (cands[0] if flag else cands[-1]) if cands else ""
    return pred.rstrip(".").rstrip("/")


def _after_boxed(text: str) -> str:
    ans = text.split("boxed")[-1]
    if not ans:
        return ""
    if ans[0] != "{":
        return ans.split("$")[0].strip()
    depth, out = 1, []
    for c in ans[1:]:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                break
        out.append(c)
    return "".join(out)


def extract_answer(text: str, multiple_choice: bool = False) -> str:
    text = text.replace("\u043a\u0438", "")
    if multiple_choice:
        return choice_answer_clean(text)
    if "final answer is $" in text and "$. I hope" in text:
        pred = text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    elif "boxed" in text:
        pred = _after_boxed(text)
    elif "he answer is" in text:
        pred = text.split("he answer is")[-1].strip()
    elif "final answer is" in text:
        pred = text.split("final answer is")[-1].strip()
    elif "答案是" in text:
        pred = text.split("答案是")[1].strip().split("\n\n")[0].strip()
    else:
        numbers = re.findall(r"-?\d*\.?\d+", text.replace(",", ""))
        pred = numbers[-1] if numbers else ""
    pred = re.sub(r"\n\s*", "", pred)
    if pred[:1] == ":":
        pred = pred[1:]
    if pred[-1:] == ".":
        pred = pred[:-1]
    if pred[-1:] == "/":
        pred = pred[:-1]
    return strip_string(pred)


# ---------------------------------------------------------------------------------------------- equivalence
def _parse_digits(num) -> float | None:
    num = str(num).replace(",", "")
    try:
        return float(num)
    except ValueError:
        if num.endswith("%"):
            num = num[:-1].rstrip("\\") if num[:-1].endswith("\\") else num[:-1]
            try:
                return float(num) / 100
            except ValueError:
                pass
    return None


def _numeric_equal(a: float, b: float) -> bool:
    return math.isclose(b, a, rel_tol=1e-4)


def _str_to_pmatrix(s: str) -> str:
    mats = re.findall(r"\{.*,.*\}", s.strip())
    return ", ".join(r"\begin{pmatrix}" + m.strip("{}").replace(",", "\\") + r"\end{pmatrix}" for m in mats)


_SIZE_GUARD = re.compile(r"too (?:large|long|deep|many)")


def _parse(s: str):
    """A sympy object for s, or s itself: the safe parser first, then latex2sympy2_extended (never eval)."""
    from grading.safe_sympy import ParseError, parse_latex_safe

    for candidate in (s.replace("\\\\", "\\"), s):
        try:
            return parse_latex_safe(candidate).expr
        except ParseError as e:
            if _SIZE_GUARD.search(str(e)):
                return s  # a number too big to build: latex2sympy would try to, until the time limit
        except (RecursionError, ValueError, TypeError, ZeroDivisionError):
            pass
    try:
        from latex2sympy2_extended import latex2sympy

        return latex2sympy(s)
    except Exception:  # noqa: BLE001 - unparseable: compared as a string
        return s


def symbolic_equal(a: str, b: str) -> bool:
    import sympy

    x, y = _parse(a), _parse(b)
    try:
        if str(x) == str(y) or x == y:
            return True
    except Exception:  # noqa: BLE001
        pass
    if isinstance(x, str) or isinstance(y, str):
        return False
    try:
        if x.equals(y) or sympy.simplify(x - y) == 0:
            return True
    except Exception:  # noqa: BLE001
        pass
    try:
        if abs(x.lhs - x.rhs).equals(abs(y.lhs - y.rhs)):
            return True
    except Exception:  # noqa: BLE001
        pass
    try:
        if _numeric_equal(float(sympy.N(x)), float(sympy.N(y))):
            return True
    except Exception:  # noqa: BLE001
        pass
    try:
        if x.shape == y.shape and x.applyfunc(lambda v: round(v, 3)).equals(y.applyfunc(lambda v: round(v, 3))):
            return True
    except Exception:  # noqa: BLE001
        pass
    return False


_MAT_OPEN = ("\\begin{pmatrix}", "\\begin{bmatrix}")
_MAT_CLOSE = ("\\end{pmatrix}", "\\end{bmatrix}")


def _matrix_equal(pred: str, ref: str, depth: int) -> bool:
    cut = lambda s: [ln.strip() for ln in s[len("\\begin{pmatrix}"): -len("\\end{pmatrix}")].split("\\\\") if ln.strip()]  # noqa: E731
    p_lines, r_lines = cut(pred), cut(ref)
    if len(p_lines) != len(r_lines):
        return False
    for p, r in zip(p_lines, r_lines):
        pp, rr = p.split("&"), r.split("&")
        if len(pp) != len(rr) or not all(_math_equal(a, b, depth + 1)[0] for a, b in zip(pp, rr)):
            return False
    return True


def math_equal(prediction: str | None, reference: str | None) -> bool:
    return _math_equal(prediction, reference, 0)[0]


def _math_equal(prediction, reference, depth: int) -> tuple[bool, str]:
    """(correct, rule) by the Qwen2.5-Math `math_equal` rules (see the module doc)."""
    if prediction is None or reference is None or depth > MAX_DEPTH:
        return False, "mismatch"
    if prediction.strip().lower() == reference.strip().lower():
        return True, "string"
    if reference in CHOICES and choice_answer_clean(prediction) == reference:
        return True, "choice"
    p_num, r_num = _parse_digits(prediction), _parse_digits(reference)
    if p_num is not None and r_num is not None:
        ok = any(_numeric_equal(p_num, item) for item in (r_num / 100, r_num, r_num * 100)
                 if math.isfinite(item) or item == p_num)
        return ok, "numeric" if ok else "mismatch"
    if not prediction:
        return False, "mismatch"
    reference, prediction = str(reference).strip(), str(prediction).strip()
    if "pmatrix" in prediction and "pmatrix" not in reference:
        reference = _str_to_pmatrix(reference)
    p_str, r_str = prediction, reference
    if ((prediction.startswith("[") and prediction.endswith("]") and not reference.startswith("("))
            or (prediction.startswith("(") and prediction.endswith(")") and not reference.startswith("["))):
        p_str, r_str = p_str.strip("[]()"), r_str.strip("[]()")
    for ch in "{}()":
        p_str, r_str = p_str.replace(ch, ""), r_str.replace(ch, "")
    if p_str.lower() == r_str.lower():
        return True, "string"
    bracketed = re.compile(r"(\(|\[).+(\)|\])")
    if bracketed.match(prediction) and bracketed.match(reference):
        pp, rr = prediction[1:-1].split(","), reference[1:-1].split(",")
        if len(pp) == len(rr) and all(_math_equal(a, b, depth + 1)[0] for a, b in zip(pp, rr)):
            return True, "tuple"
    if (prediction.startswith(_MAT_OPEN) and prediction.endswith(_MAT_CLOSE) and reference.startswith(_MAT_OPEN)
            and reference.endswith(_MAT_CLOSE) and _matrix_equal(prediction, reference, depth)):
        return True, "matrix"
    if prediction.count("=") == 1 and reference.count("=") == 1:
        pl, pr = prediction.split("=")
        rl, rr = reference.split("=")
        p_eq, r_eq = f"{pl.strip()} - ({pr.strip()})", f"{rl.strip()} - ({rr.strip()})"
        if symbolic_equal(p_eq, r_eq) or symbolic_equal(f"-({p_eq})", r_eq):
            return True, "equation"
    elif prediction.count("=") == 1 and len(prediction.split("=")[0].strip()) <= 2 and "=" not in reference:
        if _math_equal(prediction.split("=")[1], reference, depth + 1)[0]:
            return True, "equation"
    elif reference.count("=") == 1 and len(reference.split("=")[0].strip()) <= 2 and "=" not in prediction:
        if _math_equal(prediction, reference.split("=")[1], depth + 1)[0]:
            return True, "equation"
    if symbolic_equal(prediction, reference):
        return True, "sympy"
    return False, "mismatch"


def grade_local(generated_text, reference_answer, on_extracted=None) -> Verdict:
    """Grade in this process (no time limit: grading.grade(..., grader="qwen") runs it in a worker)."""
    text = generated_text if isinstance(generated_text, str) else ("" if generated_text is None else str(generated_text))
    raw_ref = reference_text(reference_answer).strip()
    if len(raw_ref) > MAX_ANSWER_CHARS:
        return Verdict(False, "refused_too_long", None, raw_ref[:200])
    multiple_choice = raw_ref in CHOICES
    ref = raw_ref if multiple_choice else strip_string(raw_ref)
    if len(text) > MAX_TEXT_CHARS:
        return Verdict(False, "refused_too_long", None, ref)
    pred = extract_answer(text, multiple_choice=multiple_choice)
    if not pred.strip():
        return Verdict(False, "no_answer", None, ref)
    if len(pred) > MAX_ANSWER_CHARS:
        return Verdict(False, "refused_too_long", pred[:200], ref)
    if not ref:
        return Verdict(False, "no_reference", pred, ref)
    if on_extracted is not None:
        on_extracted(pred, ref)
    correct, rule = _math_equal(pred, ref, 0)
    return Verdict(bool(correct), rule, pred, ref)
