"""The configuration table: its cells (report.md's Markdown, the console's rich table) and the CSVs (runs.csv,
configs.csv: every Run field at full precision)."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from experiments.runs import Run, fmt_num
from gsi.reporting.report import console
from gsi.roles import ROLES


def fmt_flops(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def fmt_acc(r: Run) -> str:
    if r.accuracy is None:
        return "-"
    if r.ci_low is None:
        return fmt_pct(r.accuracy)
    return f"{fmt_pct(r.accuracy)} [{fmt_pct(r.ci_low)}, {fmt_pct(r.ci_high)}]"


# "ideal FLOPs": token-granular, every problem's prefix computed once (gsi.rundir.results); "executed FLOPs": what the
# engines reported prefilling and generating (whole KV blocks, resends). "step loop": without engine start-up.
TABLE_HEADER = ["method", "dataset", "model", "n", "β", "threshold", "problems", "seeds", "accuracy % [95% CI]",
                "acceptance % (steps)", "acceptance % (tokens)", "π_B generated tokens", "step loop",
                "ideal FLOPs", "executed FLOPs", "ideal FLOPs π_S", "ideal FLOPs π_B", "ideal FLOPs PRM", "run"]


def fmt_tokens(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} s"


def table_rows(runs: list[Run], root: Path | None = None) -> list[list[str]]:
    rows = []
    for r in runs:
        wheres = r.paths if len(r.paths) > 1 and r.shards is None and len(r.seeds) > 1 else [r.path]
        if root is not None:
            wheres = [w if w.startswith("wandb:") else os.path.relpath(w, root) for w in wheres]
        seeds = ",".join(fmt_num(s) for s in r.seeds) if r.seeds else fmt_num(r.seed)
        rows.append([r.variant + (f" [shards {r.shards}]" if r.shards else ""), r.dataset, r.model, fmt_num(r.n),
                     fmt_num(r.beta), r.threshold_text or "-", str(r.n_problems), seeds, fmt_acc(r),
                     fmt_pct(r.acceptance_rate), fmt_pct(r.acceptance_rate_tokens), fmt_tokens(r.big_generated),
                     fmt_seconds(r.step_loop_s), fmt_flops(r.flops_total), fmt_flops(r.flops_executed),
                     fmt_flops(r.flops["small"]), fmt_flops(r.flops["big"]), fmt_flops(r.flops["reward"]),
                     " ".join(f"`{w}`" for w in wheres)])
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---" if i in (0, 1, 2, len(header) - 1) else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def print_table(runs: list[Run], file=None) -> None:
    t = Table(title=f"{len(runs)} configurations", show_lines=False)
    for i, h in enumerate(TABLE_HEADER[:-1]):
        t.add_column(h, justify="left" if i < 3 else "right", no_wrap=True)
    for row in table_rows(runs):
        t.add_row(*row[:-1])
    console(file).print(t)


def _csv_rows(runs: list[Run]) -> list[dict]:
    rows = []
    for r in runs:
        d = asdict(r)
        d.update({f"flops_{role}": r.flops[role] for role in ROLES}, overrides=" ".join(r.overrides),
                 label=r.label, n_seeds=r.n_seeds, seeds=" ".join(fmt_num(s) for s in r.seeds),
                 paths=" ".join(r.paths))
        for k in ("flops", "config", "key"):
            d.pop(k)
        rows.append(d)
    return rows


def write_csv(path: Path, runs: list[Run]) -> None:
    fields = ["path", "method", "variant", "label", "dataset", "model", "n", "beta", "threshold", "threshold_axis",
              "threshold_text", "seed", "n_seeds", "seeds", "n_problems", "accuracy", "ci_low", "ci_high", "interval",
              "acc_std", "acceptance_rate", "acceptance_rate_tokens", "big_generated", "step_loop_s", "flops_total",
              "flops_executed", "flops_small", "flops_big", "flops_reward", "wall_time_s", "shards", "paths",
              "overrides"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(_csv_rows(runs))
