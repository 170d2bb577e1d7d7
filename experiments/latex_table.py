"""The configuration table as LaTeX (booktabs), for a paper: `python -m experiments.report ... --latex`.

One row per configuration: method, dataset, n, β, threshold (on its own scale: u, δ, or a score threshold
converted, u = s/β), accuracy with its 95% interval, π_B's generated tokens per problem, the step loop's time
(engine start-up excluded) per problem, ideal and executed FLOPs per problem. No folder paths. Needs
\\usepackage{booktabs} (and amsmath for \\text in the header).
"""

from __future__ import annotations

import math

COLUMNS = ["Method", "Dataset", "$n$", r"$\beta$", "Threshold", r"Accuracy (\%) [95\% CI]",
           r"$\pi_B$ tokens / problem", "Step loop (s / problem)", "Ideal FLOPs / problem",
           "Executed FLOPs / problem"]

_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_SYMBOLS = {"π_S": r"$\pi_S$", "π_B": r"$\pi_B$", "β": r"$\beta$", "δ": r"$\delta$", "r̃": r"$\tilde r$",
            "≥": r"$\geq$", "∪": r"$\cup$"}


def tex(text) -> str:
    """Plain text (a method label, a dataset name) as LaTeX: specials escaped, the Greek letters in math."""
    parts = [str(text)]
    for sym in _SYMBOLS:  # split out the symbols first: escaping would break "π_B" apart
        parts = [q for p in parts for q in _split_keep(p, sym)]
    return "".join(_SYMBOLS[p] if p in _SYMBOLS else "".join(_ESCAPES.get(ch, ch) for ch in p) for p in parts)


def _split_keep(text: str, sym: str) -> list[str]:
    if text in _SYMBOLS:
        return [text]
    pieces = text.split(sym)
    out = [pieces[0]]
    for piece in pieces[1:]:
        out += [sym, piece]
    return [p for p in out if p]


def sci(x: float | None) -> str:
    """1.23e12 -> $1.23 \\times 10^{12}$."""
    if x is None or not math.isfinite(x):
        return "--"
    if x == 0:
        return "0"
    e = math.floor(math.log10(abs(x)))
    return rf"${x / 10 ** e:.2f} \times 10^{{{e}}}$"


def per_problem(x: float | None, n: int) -> float | None:
    return None if x is None or not n else x / n


def row(r) -> list[str]:
    acc = "--" if r.accuracy is None else f"{100 * r.accuracy:.1f}"
    if r.accuracy is not None and r.ci_low is not None:
        acc += f" [{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]"
    big = per_problem(r.big_generated, r.n_problems)
    loop = per_problem(r.step_loop_s, r.n_problems)
    return [tex(r.variant), tex(r.dataset), "--" if r.n is None else str(r.n),
            "--" if r.beta is None else f"{r.beta:g}", tex(r.threshold_text) if r.threshold_text else "--", acc,
            "--" if big is None else f"{big:,.0f}".replace(",", "{,}"), "--" if loop is None else f"{loop:.2f}",
            sci(r.flops_per_problem if r.flops_total else None), sci(per_problem(r.flops_executed, r.n_problems))]


def latex_table(configs, caption: str | None = None) -> str:
    intervals = sorted({c.interval for c in configs if c.accuracy is not None})
    note = caption or ("Accuracy with its 95\\% interval (" + tex("; ".join(intervals) or "Wilson") + "); ideal "
                       "FLOPs count every token once per problem (full prefix cache), executed FLOPs are what the "
                       "engines ran; the step loop excludes engine start-up.")
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{ll" + "r" * (len(COLUMNS) - 2) + "}",
             r"\toprule", " & ".join(COLUMNS) + r" \\", r"\midrule"]
    lines += [" & ".join(row(c)) + r" \\" for c in configs]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{note}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"
