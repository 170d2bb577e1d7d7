"""Final-answer extraction from generated text.

Rules, in order:

1. The LAST complete ``\\boxed{...}`` (also ``\\fbox{...}`` and ``\\framebox{...}``) of the text, with balanced
   braces (``\\{``/``\\}`` escapes do not count). The bare form ``\\boxed 5`` (argument up to the next space or
   ``$``) is understood too. A ``\\boxed{`` whose brace never closes (text cut off at the token limit) is not an
   answer; an earlier complete one is used instead.
2. Otherwise the text after the last "final answer is" / "the answer is" (Minerva's "The final answer is $x$. I
   hope it is correct." included): the first ``$...$`` math there, or the rest of the sentence.
3. Otherwise ``None``: the text has no answer. No "last number in the text" guess: it inflates accuracy.

Everything here is linear in the input length: no nested quantifiers, no recursion.
"""

from __future__ import annotations

import re

__all__ = ["extract_answer", "last_boxed", "answer_is_fallback", "strip_boxed"]

_BOX_CMD = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")
_ANSWER_IS = re.compile(r"(?:final\s+answer|the\s+answer)\s*(?:is|:)\s*:?", re.IGNORECASE)


def _brace_pairs(s: str) -> dict[int, int]:
    """Map each '{' index to the index of its closing '}' (unclosed braces are absent). One linear pass;
    escaped characters (\\{, \\}, \\\\) are skipped."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


_BARE_ARG = re.compile(r"[ \t]+([^\s$]+)")
_OPT_ARG = re.compile(r"[ \t]*(?:\[[^\]\n]{0,50}\])*[ \t]*")


def _box_argument(s: str, cmd_end: int, pairs: dict[int, int]) -> tuple[str, int] | None:
    """(argument, end index) of the box command ending at cmd_end, or None when it is not complete."""
    i = _OPT_ARG.match(s, cmd_end).end()  # \framebox[width][pos]{...}
    if i < len(s) and s[i] == "{":
        j = pairs.get(i)
        if j is None:
            return None
        return s[i + 1 : j], j + 1
    m = _BARE_ARG.match(s, cmd_end)  # "\boxed 5": the argument runs to the next whitespace or '$'
    if m:
        return m.group(1), m.end()
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{} / \\fbox{} / \\framebox{} of `text` (None when there is none)."""
    starts = [m.end() for m in _BOX_CMD.finditer(text)]
    if not starts:
        return None
    pairs = _brace_pairs(text)
    for end in reversed(starts):
        arg = _box_argument(text, end, pairs)
        if arg is not None:
            return strip_boxed(arg[0])
    return None


def strip_boxed(s: str) -> str:
    """Unwrap an answer that is one box command as a whole: \\boxed{\\boxed{5}} -> 5."""
    s = s.strip()
    for _ in range(20):
        m = _BOX_CMD.match(s)
        if not m:
            break
        arg = _box_argument(s, m.end(), _brace_pairs(s))
        if arg is None or arg[1] != len(s):
            break
        s = arg[0].strip()
    return s


MAX_FALLBACK_CHARS = 500
_MATH_SPAN = re.compile(r"\$\$([^$]+)\$\$|\$([^$]+)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")


def answer_is_fallback(text: str) -> str | None:
    """The answer stated after the last 'final answer is' / 'the answer is' in `text`, or None."""
    last = None
    for last in _ANSWER_IS.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end() : last.end() + 2 * MAX_FALLBACK_CHARS].lstrip()
    if not rest:
        return None
    m = _MATH_SPAN.match(rest)
    if m:
        ans = next(g for g in m.groups() if g is not None)
    else:
        first_line = rest.split("\n", 1)[0]
        e = _SENTENCE_END.search(first_line)
        ans = first_line[: e.start()] if e else first_line
        # a math span later in the sentence: "is therefore $5$"
        m2 = _MATH_SPAN.search(ans)
        if m2:
            ans = next(g for g in m2.groups() if g is not None)
    ans = ans.strip().rstrip(".").strip()
    if len(ans) > MAX_FALLBACK_CHARS:
        return None  # not a stated answer but a run of text
    return ans or None


def extract_answer(text: str) -> str | None:
    """The final answer of a generated solution (see the module doc), or None."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed if boxed.strip() else None
    return answer_is_fallback(text)
