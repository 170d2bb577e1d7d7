"""The results table printed at the end of a run."""

from __future__ import annotations

import sys
from pathlib import Path

from gsi.roles import ROLES


def _fmt_flops(x: float) -> str:
    for unit, scale in (("PF", 1e15), ("TF", 1e12), ("GF", 1e9), ("MF", 1e6)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f}"


def console(file=None):
    """A rich Console for the run's tables. Outside a terminal (SLURM logs, pipes) rich would shrink tables to 80
    columns and cut headers and values; there the width is whatever the table needs (up to 400 columns)."""
    from rich.console import Console

    stream = file or sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(file=stream, width=None if tty else 400, soft_wrap=not tty)


def print_summary(summary: dict, out: Path | None = None, file=None) -> None:
    from rich.table import Table

    console_ = console(file)
    head = Table(title=f"{summary['method']} on {summary['dataset']} ({summary['model']}, seed {summary['seed']})")
    for col in ("problems", "accuracy", "95% CI", "acceptance (steps)", "acceptance (draft tokens)", "steps",
                "step loop", "wall time (with start-up)"):
        head.add_column(col, justify="right")
    ci = summary.get("accuracy_ci95")
    loop = summary.get("measured", {}).get("step_loop_s")  # this session's step loop, without engine start-up
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    head.add_row(str(summary["n_problems"]), pct(summary["accuracy"]),
                 "-" if not ci else f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}%",
                 pct(summary["acceptance_rate"]), pct(summary["acceptance_rate_tokens"]), str(summary["steps"]),
                 "-" if loop is None else f"{loop:.1f} s", f"{summary['wall_time_s']:.1f} s")
    console_.print(head)

    engine = summary.get("measured", {}).get("engine", {})
    roles = Table(title="compute by role")
    nocache = summary.get("flops_nocache", {})
    executed = summary.get("measured", {}).get("flops_executed", {})
    # ideal: token-granular, each problem's prefix computed once; executed: what the engines reported running
    for col in ("role", "tokens generated", "context tokens", "ideal FLOPs", "executed FLOPs", "FLOPs no cache",
                "prefilled (after cache)", "engine busy"):
        roles.add_column(col, justify="right")
    for role in ROLES:
        tok = summary["tokens"][role]
        e = engine.get(role, {})
        roles.add_row(role, f"{tok['generated']:,}", f"{tok['context']:,}", _fmt_flops(summary["flops"][role]),
                      _fmt_flops(executed[role]) if role in executed else "-",
                      _fmt_flops(nocache[role]) if nocache else "-",
                      f"{e['prefilled_tokens']:,}" if e else "-", f"{e['busy_s']:.1f} s" if e else "-")
    roles.add_row("total", "", "", _fmt_flops(summary["flops"]["total"]),
                  _fmt_flops(sum(executed.values())) if executed else "-",
                  _fmt_flops(nocache["total"]) if nocache else "-", "", "")
    console_.print(roles)
    use = summary.get("measured", {}).get("utilisation")
    if use:
        busy = Table(title="utilisation (step loop)")
        for col in ("wall time", *(f"{r} busy" for r in use["busy_fraction"]), "wall / busiest role",
                    "wall / sum of roles"):
            busy.add_column(col, justify="right")
        ratio = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        busy.add_row(f"{use['wall_s']:.1f} s", *(pct(f) for f in use["busy_fraction"].values()),
                     f"{ratio(use['wall_over_busiest'])} ({use['busiest_role']})", ratio(use["wall_over_sum"]))
        console_.print(busy)
    if out is not None:
        console_.print(f"results: {out / 'results.jsonl'}\nsummary: {out / 'summary.json'}")
