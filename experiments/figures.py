"""The report's figures: accuracy against ideal FLOPs (or π_B's generated tokens), acceptance against the
threshold, accuracy against n. Each is drawn from the configurations (seeds pooled) and writes its .png, .pdf and
.csv (experiments/plotting.py)."""

from __future__ import annotations

from pathlib import Path

from experiments.plotting import (beta_styles, csv_point, dataset_panels, declutter_labels, finish_figure, group_by,
                                  label_styles, legend_handles, log_flops_axis, new_figure, pareto_front,
                                  readable_accuracy_axis, spread_note)
from experiments.runs import Run, fmt_num


def big_tokens_per_problem(r: Run) -> float | None:
    return r.big_generated / r.n_problems if r.big_generated is not None and r.n_problems else None


def plot_accuracy_vs_flops(runs: list[Run], path: Path | None = None, *, per_problem: bool = False,
                           x: str = "flops"):
    """One point per configuration (seeds pooled; error bar: the interval), configurations of one method, u/δ
    and β joined in order of n, and the Pareto frontier over all of a panel. x="flops": the ideal FLOPs (log
    axis); x="big_tokens": π_B's generated tokens per problem (linear: π_S-only methods sit at 0), what GSI saves."""
    from matplotlib.lines import Line2D

    if x == "big_tokens":
        runs = [r for r in runs if r.accuracy is not None and big_tokens_per_problem(r) is not None]
        cost = big_tokens_per_problem
        title = "Accuracy against π_B's generated tokens"
    else:
        runs = [r for r in runs if r.accuracy is not None and r.flops_total > 0]
        cost = (lambda r: r.flops_per_problem) if per_problem else (lambda r: r.flops_total)  # noqa: E731
        title = "Accuracy against ideal FLOPs" + (" per problem" if per_problem else "")
    if not runs:
        return None
    style, betas = label_styles([r.label for r in runs]), beta_styles(runs)
    panels = dataset_panels(runs)
    fig, axes = new_figure(len(panels), f"{title} ({spread_note(runs)})")
    points = []
    from matplotlib.transforms import offset_copy

    nudged = False
    for ax, (panel, rs) in zip(axes, panels):
        labels = []
        drawn: dict[tuple, int] = {}  # (x, y) -> series already drawn there
        for (label, beta), mine in group_by(rs, lambda r: (r.label, r.beta)).items():
            mine.sort(key=lambda r: (r.n or 0, cost(r)))
            st = style[label]
            xs = [cost(r) for r in mine]
            y = [100 * r.accuracy for r in mine]
            lo = [100 * (r.accuracy - r.ci_low) if r.ci_low is not None else 0 for r in mine]
            hi = [100 * (r.ci_high - r.accuracy) if r.ci_high is not None else 0 for r in mine]
            # Identical results of different configurations (beam search and DVTS at n = width) would hide each
            # other: a series with a point where another series already is, is drawn a few points to the right.
            spots = [(round(xi, 9), round(yi, 9)) for xi, yi in zip(xs, y)]
            k = max(drawn.get(spot, 0) for spot in spots)
            for spot in spots:
                drawn[spot] = max(drawn.get(spot, 0), k + 1)
            nudged |= k > 0
            where = offset_copy(ax.transData, fig=fig, x=5 * k, y=0, units="points") if k else ax.transData
            ax.errorbar(xs, y, yerr=[lo, hi], color=st["color"], marker=st["marker"], ms=5.5, capsize=2,
                        elinewidth=0.7, lw=1.1, ls=betas.get(beta, "-") if len(mine) > 1 else "none", alpha=0.9,
                        transform=where)
            for r, xi, yi in zip(mine, xs, y):
                if r.n is not None:
                    labels.append((xi, yi, str(r.n), st["color"]))
                points.append(csv_point(panel, f"{label}, β={fmt_num(beta)}", r, xi, yi))
        front = pareto_front([(cost(r), 100 * r.accuracy) for r in rs])
        fx, fy = zip(*front)
        ax.plot(fx, fy, color="0.2", lw=7, alpha=0.13, solid_capstyle="round", zorder=0)
        points += [csv_point(panel, "Pareto frontier", None, xi, yi) for xi, yi in front]
        if x == "big_tokens":
            ax.set_xlabel("π_B generated tokens per problem (mean over seeds)")
            ax.set_xlim(left=min(-0.03 * max(cost(r) for r in rs), -1))
        else:
            log_flops_axis(ax)
            ax.set_xlabel("ideal FLOPs per problem (log scale)" if per_problem
                          else "ideal FLOPs, all roles (token-granular, full prefix cache; log scale)")
        declutter_labels(ax, labels)
        counts = sorted({r.n_problems for r in rs})
        note = f"{counts[0]} problems" if len(counts) == 1 else "runs differ in problem count!"
        ax.set_title(f"{panel} ({note})", fontsize=10)
        ax.set_ylabel("accuracy (%)")
        readable_accuracy_axis(ax)
        ax.grid(True, which="major", alpha=0.3)
    pareto = Line2D([], [], color="0.2", lw=7, alpha=0.13, label="Pareto frontier")
    labels = Line2D([], [], ls="none", label="(point labels: n)")
    extra = [pareto, labels] + ([Line2D([], [], ls="none", label="(identical points: set 5 pt apart)")] if nudged
                                else [])
    return finish_figure(fig, path, points, legend_handles(style, betas, extra))


# One panel per threshold scale (gsi.reporting.thresholds): GSI's score thresholds are converted to u (u = s/β).
THRESHOLD_AXES = {
    ("gsi", "u"): ("GSI (u)", "GSI: threshold u on the tilted reward r̃ (a score threshold s as u = s/β)"),
    ("gsi", "r"): ("GSI, raw r", "GSI (raw r): threshold on the PRM reward r"),
    ("rsd", "δ"): ("RSD (δ)", "RSD: threshold δ on the PRM reward r"),
}


def plot_acceptance_vs_threshold(runs: list[Run], path: Path | None = None):
    """Acceptance against the threshold, one panel per scale (GSI's u on the tilted reward, unbounded; GSI's raw
    r; RSD's δ on r, in [0, 1]) per dataset: step-level acceptance (accepted steps / steps, filled markers, solid)
    and token-level (accepted draft tokens / drafted tokens, the RSD paper's; open markers, dashed).
    Configurations that differ only in the threshold are joined. Drawn only when some configuration was run at
    two thresholds or more (else there is no curve to show: the acceptance rates are in the table)."""
    from matplotlib.lines import Line2D

    runs = [r for r in runs if r.acceptance_rate is not None and r.threshold is not None]
    scale = lambda r: (r.method, r.threshold_axis)  # noqa: E731
    curve = lambda r: (r.dataset, r.model, scale(r), r.variant, r.n, r.beta)  # noqa: E731
    swept_keys = {k for k, g in group_by(runs, curve).items() if len({r.threshold for r in g}) > 1}
    if not swept_keys:
        return None
    kinds = [k for k in THRESHOLD_AXES if any(scale(r) == k and curve(r) in swept_keys for r in runs)]
    runs = [r for r in runs if scale(r) in kinds]
    datasets = dataset_panels(runs)
    name = lambda r: f"{r.variant}, n = {r.n}"  # noqa: E731 - colour per method and n (no labels on the lines)
    style, betas = label_styles([name(r) for r in runs]), beta_styles(runs)
    fig, axes = new_figure(len(datasets) * len(kinds), "Acceptance rate against the threshold", cols=len(kinds))
    points = []
    for d, (title, rs_all) in enumerate(datasets):
        for c, kind in enumerate(kinds):
            ax = axes[d * len(kinds) + c]
            rs = [r for r in rs_all if scale(r) == kind]
            short, axis_name = THRESHOLD_AXES[kind]
            ax.set_title(f"{title}: {short}", fontsize=10)
            for (variant, n, beta), mine in group_by(rs, lambda r: (r.variant, r.n, r.beta)).items():
                mine.sort(key=lambda r: r.threshold)
                st = style[name(mine[0])]
                x = [r.threshold for r in mine]
                swept = len(set(x)) > 1
                for metric, attr, fill, ls in (("steps", "acceptance_rate", st["color"], "-"),
                                               ("tokens", "acceptance_rate_tokens", "white", "--")):
                    pts = [(xi, 100 * getattr(r, attr), r) for xi, r in zip(x, mine) if getattr(r, attr) is not None]
                    if not pts:
                        continue
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], color=st["color"], marker=st["marker"],
                            mfc=fill, ms=5.5 if swept else 4.5, lw=1.2, alpha=1.0 if swept else 0.5,
                            ls=(ls if len(betas) <= 1 else betas.get(beta, ls)) if swept else "none")
                    points += [csv_point(title, f"{variant}, n={n}, β={fmt_num(beta)}", r, xi, yi, ci=False,
                                      metric=f"acceptance_{metric}") for xi, yi, r in pts]
            ax.set_xlabel(axis_name if rs else f"(no {short} runs)")
            ax.set_ylabel("accepted (%)")
            ax.set_ylim(-3, 103)
            ax.grid(True, alpha=0.3)
    extra = [Line2D([], [], color="0.3", marker="o", ls="-", label="steps accepted"),
             Line2D([], [], color="0.3", marker="o", mfc="white", ls="--", label="draft tokens accepted"),
             Line2D([], [], ls="none", label="(faint: no threshold sweep)")]
    return finish_figure(fig, path, points, legend_handles(style, betas, extra))


def plot_accuracy_vs_n(runs: list[Run], path: Path | None = None):
    """Accuracy against n; configurations of one method, u/δ and β joined by a line (interval as a band); u and
    δ are in the legend, not on the lines."""
    runs = [r for r in runs if r.accuracy is not None and r.n is not None]
    if not runs:
        return None
    style, betas = label_styles([r.label for r in runs]), beta_styles(runs)
    panels = dataset_panels(runs)
    fig, axes = new_figure(len(panels), f"Accuracy against n, samples per step ({spread_note(runs)})")
    points, any_band = [], False
    for ax, (title, rs) in zip(axes, panels):
        groups = group_by(rs, lambda r: (r.label, r.beta))
        bands = sum(len({r.n for r in g}) > 1 for g in groups.values()) <= 4  # more would be a muddle
        for i, ((label, beta), mine) in enumerate(groups.items()):
            mine.sort(key=lambda r: r.n)
            st = style[label]
            # Series side by side at each n so that their intervals do not overlap, all within ±2.5% of n (wider
            # read as another n); the CSV keeps the exact n.
            dodge = 2 ** (0.07 * (i / (len(groups) - 1) - 0.5)) if len(groups) > 1 else 1.0
            x = [r.n * dodge for r in mine]
            y = [100 * r.accuracy for r in mine]
            line = len(set(x)) > 1
            ax.plot(x, y, color=st["color"], marker=st["marker"], ms=5, lw=1.3,
                    ls=betas.get(beta, "-") if line else "none", alpha=1.0 if line else 0.45)
            if all(r.ci_low is not None for r in mine):
                any_band = True
                if bands and line:
                    ax.fill_between(x, [100 * r.ci_low for r in mine], [100 * r.ci_high for r in mine],
                                    color=st["color"], alpha=0.07, lw=0)
                else:  # too many series for bands: the interval as a thin bar at each point
                    ax.vlines(x, [100 * r.ci_low for r in mine], [100 * r.ci_high for r in mine], color=st["color"],
                              lw=0.8, alpha=0.6)
            points += [csv_point(title, f"{label}, β={fmt_num(beta)}", r, r.n, yi) for r, yi in zip(mine, y)]
        ns = sorted({r.n for r in rs})
        if len(ns) > 1 and ns[0] > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.minorticks_off()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("n")
        ax.set_ylabel("accuracy (%)")
        readable_accuracy_axis(ax)
        ax.grid(True, alpha=0.3)
    from matplotlib.lines import Line2D

    band = Line2D([], [], color="0.5", lw=6, alpha=0.15, label="95% interval (band or bar)")
    return finish_figure(fig, path, points, legend_handles(style, betas, [band] if any_band else []))
