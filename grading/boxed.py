"""The one reader of box commands: `\\boxed{...}`, `\\fbox{...}`, `\\framebox[..]{...}` and the bare `\\boxed 5`.

A box counts when its braces close (``\\{``/``\\}`` escapes do not count): a `\\boxed{` cut off at the token
limit is no answer, and an earlier complete box is used instead. The grader reads answers with it
(grading.extract), the datasets read references from worked solutions with it (gsi.data.benchmarks), and a
response stops once it holds a box (gsi.runtime.state), so the three agree on what an answer is. (The ported
graders, grading/graders, keep their own codebases' readers: their verdicts are theirs.)

Linear in the input length: one pass to pair braces, no nested quantifiers, no recursion.
"""

from __future__ import annotations

import re

__all__ = ["last_boxed", "strip_boxed", "has_complete_boxed"]

_BOX_CMD = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")


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


def has_complete_boxed(text: str) -> bool:
    """True when `text` holds a box whose braces close (an answer `last_boxed` reads)."""
    return last_boxed(text) is not None
