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

from grading.boxed import last_boxed

__all__ = ["extract_answer", "answer_is_fallback"]

_ANSWER_IS = re.compile(r"(?:final\s+answer|the\s+answer)\s*(?:is|:)\s*:?", re.IGNORECASE)


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
