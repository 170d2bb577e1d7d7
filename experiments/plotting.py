"""What the report's figures share: a colour and marker per series label, a line style per β, one panel per dataset
(and model), the legend, the log FLOPs axis with labels that all differ, the Pareto frontier, and writing a
figure as .png, .pdf and the .csv of exactly the points it draws. matplotlib is imported where a figure is made
(Agg: no display needed)."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np

from experiments.runs import Run, fmt_num

LINESTYLES = ["-", "--", ":", "-."]
POINT_FIELDS = ["panel", "series", "metric", "n", "beta", "threshold", "x", "y", "y_low", "y_high", "y_std", "seeds",
                "run"]
# Points are drawn under their own colour and marker per series label (the variant with its u or δ).
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#17becf",
           "#bcbd22"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]


def label_styles(labels: list[str]) -> dict[str, dict]:
    """One colour and marker per series label, the same in every figure."""
    natural = lambda v: [float(t) if re.fullmatch(r"[\d.]+", t) else t for t in re.findall(r"[\d.]+|[^\d.]+", v)]  # noqa: E731
    order = sorted(set(labels), key=lambda v: (not v.startswith("GSI"), not v.startswith("RSD"), natural(v)))
    return {v: {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)]} for i, v in enumerate(order)}


def beta_styles(runs: list[Run]) -> dict:
    betas = sorted({r.beta for r in runs if r.beta is not None})
    return {b: LINESTYLES[i % len(LINESTYLES)] for i, b in enumerate(betas)}


def dataset_panels(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    keys = sorted({(r.dataset, r.model) for r in runs})
    multi_model = len({m for _, m in keys}) > 1
    return [(f"{d} ({m})" if multi_model else d, [r for r in runs if (r.dataset, r.model) == (d, m)])
            for d, m in keys]


def new_figure(n_panels: int, title: str, cols: int | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = cols or min(n_panels, 3)
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=12)
    return fig, list(axes.flat[:n_panels])


def legend_handles(style: dict, betas: dict, extra=()) -> list:
    """Colour/marker = method with its u or δ, line style = β (when there is more than one), then extras."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=s["color"], marker=s["marker"], ls="none", ms=7, label=v) for v, s in style.items()]
    if len(betas) > 1:
        handles += [Line2D([], [], color="0.35", ls=ls, lw=1.4, label=f"β = {fmt_num(b)}") for b, ls in betas.items()]
    return handles + list(extra)


def finish_figure(fig, path: Path | None, points: list[dict], handles: list):
    if handles:
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=130, bbox_inches="tight")
        fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")  # vector, for the paper
        with open(path.with_suffix(".csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=POINT_FIELDS)
            w.writeheader()
            w.writerows(points)
    return fig


def csv_point(panel: str, series: str, r: Run | None, x: float, y: float, ci: bool = True, metric: str = "accuracy"
           ) -> dict:
    return {"panel": panel, "series": series, "metric": metric, "n": r.n if r else None,
            "beta": r.beta if r else None, "threshold": r.threshold if r else None, "x": x, "y": y,
            "y_low": 100 * r.ci_low if r and ci and r.ci_low is not None else None,
            "y_high": 100 * r.ci_high if r and ci and r.ci_high is not None else None,
            "y_std": 100 * r.acc_std if r and ci and r.acc_std is not None else None,
            "seeds": " ".join(fmt_num(s) for s in r.seeds) if r else "", "run": r.path if r else ""}


def group_by(rs: list[Run], key) -> dict:
    out: dict = {}
    for r in rs:
        out.setdefault(key(r), []).append(r)
    return out


def eng(x: float, digits: int) -> str:
    """1.5e12 -> '1.5T' with `digits` significant digits, never in exponent notation ('10T', not '1e+01T')."""
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1)):
        if abs(x) >= scale or scale == 1:
            v = x / scale
            decimals = max(0, digits - 1 - (math.floor(math.log10(abs(v))) if v else 0))
            text = f"{v:.{decimals}f}"
            return (text.rstrip("0").rstrip(".") if "." in text else text) + unit
    return str(x)


NICE = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)


def flops_ticks(lo: float, hi: float, max_ticks: int = 6) -> tuple[list[float], list[str]]:
    """Major ticks for a log FLOPs axis over [lo, hi] and labels that are all different: 1-2-5 per decade over a
    wide range; over less than a decade (where 1-2-5 ticks are one or two, and 0-decimal labels repeat: "1T 1T
    2T 2T") round values spaced evenly in log space, so that they do not crowd at the right end."""
    llo, lhi = math.log10(lo), math.log10(hi)
    if lhi - llo >= 1:
        cands = [m * 10.0 ** e for e in range(math.floor(llo), math.ceil(lhi) + 1) for m in (1.0, 2.0, 5.0)]
        ticks = [t for t in cands if lo <= t <= hi]
        if len(ticks) > max_ticks + 2:  # many decades: powers of ten only
            ticks = [t for t in ticks if abs(math.log10(t) - round(math.log10(t))) < 1e-9]
    else:
        cands = sorted(m * 10.0 ** e for e in range(math.floor(llo), math.ceil(lhi) + 1) for m in NICE)
        cands = [t for t in cands if lo <= t <= hi]
        ticks, gap = [], (lhi - llo) / max_ticks
        for t in cands:
            if not ticks or math.log10(t) - math.log10(ticks[-1]) >= gap * 0.999:
                ticks.append(t)
        if len(ticks) < 3:  # a very narrow range: round values evenly spaced in linear space
            from matplotlib.ticker import MaxNLocator

            ticks = [t for t in MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi) if lo <= t <= hi]
    ticks = [float(t) for t in np.unique(ticks)]
    if len(ticks) < 2:
        ticks = [lo, hi]
    # The fewest significant digits that write every tick exactly (so labels are right, and all different).
    for digits in range(1, 7):
        if all(abs(float(f"{t:.{digits}g}") - t) <= 1e-9 * t for t in ticks):
            break
    return ticks, [eng(t, digits) for t in ticks]


def log_flops_axis(ax) -> None:
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    ax.set_xscale("log")
    ax.autoscale_view()
    lo, hi = ax.get_xlim()
    ticks, labels = flops_ticks(lo, hi)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter(labels))
    ax.xaxis.set_minor_locator(NullLocator())


def declutter_labels(ax, labels: list[tuple[float, float, str, str]], min_px: float = 11.0) -> int:
    """Annotate (x, y, text, colour) points, skipping a label whose anchor is within `min_px` pixels of one
    already placed (overlapping points: the legend and the CSV still have them). Returns how many were drawn."""
    ax.figure.canvas.draw_idle()
    placed: list[tuple[float, float]] = []
    for x, y, text, color in labels:
        px, py = ax.transData.transform((x, y))
        if any(abs(px - qx) < min_px * 2 and abs(py - qy) < min_px for qx, qy in placed):
            continue
        placed.append((px, py))
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, -9), fontsize=6.5, color=color)
    return len(placed)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and accuracy (higher), by increasing cost."""
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def spread_note(runs: list[Run]) -> str:
    seeds = sorted({r.n_seeds for r in runs})
    if seeds == [1]:
        return "error bars: Wilson 95% CI"
    k = "/".join(map(str, [s for s in seeds if s > 1]))
    return (f"{k} seeds: mean, 95% interval over problems" + ("; one seed: Wilson 95% CI" if 1 in seeds else ""))

def readable_accuracy_axis(ax) -> None:
    """Accuracies all (nearly) equal, e.g. all 0 with no interval: matplotlib zooms to ±0.04 "%"; show at least
    10 points (never below -2%, and never cutting what is drawn)."""
    lo, hi = ax.get_ylim()
    if hi - lo < 10:
        bottom = max(-2.0, (lo + hi) / 2 - 5)
        ax.set_ylim(min(bottom, lo), max(hi, bottom + 10))

