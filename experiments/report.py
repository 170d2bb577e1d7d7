"""Tables and plots from finished runs.

    python -m experiments.report outputs/sweeps/2026-05-01 outputs/runs/x --out outputs/reports/may
    python -m experiments.report outputs/sweeps --out reports/all --per-problem      # FLOPs per problem on x
    python -m experiments.report --wandb-project me/gsi --out reports/wandb         # W&B runs (online)

Every folder under the given paths that holds a summary.json is a run (a Hydra job folder, or any folder
gsi.run.run wrote); its method settings come from experiment.json (resolved) or .hydra/config.yaml. Folders with
results.jsonl but no summary.json are listed as unfinished. Writes into --out:

    report.md                   the table (one row per run) and the figures
    runs.csv                    the same rows with full-precision numbers
    accuracy_vs_flops.png/.csv  accuracy against FLOPs per method, log x, Pareto frontier (one panel per dataset)
    acceptance_vs_threshold.png/.csv  acceptance rate against GSI's threshold u and RSD's delta
    accuracy_vs_n.png/.csv      accuracy against n per method and beta
    pool_curves.png/.csv        response-level best-of-n runs: best-of-n / majority / weighted vote at every n from
                                one pool, against n and FLOPs (experiments/pool_curves.py)

Each .csv holds exactly the points its figure draws.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from experiments.pool_curves import plot_pool_curves

log = logging.getLogger(__name__)

ROLES = ("small", "big", "reward")


# ---------------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class Run:
    path: str
    method: str  # the method plugin: gsi | rsd | bon | baseline
    variant: str  # what the plots call it: "GSI", "RSD", "soft BoN π_S", ...
    dataset: str
    model: str
    n: int | None
    beta: float | None
    threshold: float | None  # GSI's u, RSD's delta; None for methods without an accept test
    n_problems: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    acceptance_rate: float | None
    acceptance_rate_tokens: float | None
    flops_total: float
    flops: dict = field(default_factory=dict)  # by role
    wall_time_s: float | None = None
    seed: int | None = None
    overrides: list = field(default_factory=list)

    @property
    def flops_per_problem(self) -> float:
        return self.flops_total / self.n_problems if self.n_problems else float("nan")


def find_run_dirs(paths) -> tuple[list[Path], list[Path]]:
    """(finished run folders, unfinished ones), searching each path recursively; W&B's folders are skipped."""
    done, unfinished = [], []
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in ("wandb", ".hydra", "__pycache__"))
            if "summary.json" in filenames:
                done.append(Path(dirpath))
            elif "results.jsonl" in filenames:
                unfinished.append(Path(dirpath))
    return sorted(set(done)), sorted(set(unfinished))


def _method_config(path: Path) -> dict:
    exp = path / "experiment.json"
    if exp.exists():
        return json.loads(exp.read_text()).get("method", {})
    hydra_cfg = path / ".hydra" / "config.yaml"
    if hydra_cfg.exists():
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(hydra_cfg)
        return OmegaConf.to_container(cfg.get("method", {}), resolve=False) or {}
    return {}


def variant_name(method: dict) -> str:
    name = method.get("name", "?")
    policy = {"small": "π_S", "big": "π_B"}.get(method.get("policy"), method.get("policy"))
    if name == "gsi":
        label = "GSI"
        if method.get("threshold_on") == "raw":
            label += " (raw r)"
        if method.get("fallback") is False:
            label += " (no fallback)"
        return label
    if name == "rsd":
        return "RSD"
    if name == "bon":
        label = f"{method.get('selection', 'soft')} BoN {policy}"
        return label + (f" ({method.get('aggregate', 'last')}, response)" if method.get("level") == "response"
                        else "")
    if name == "baseline":
        return f"{policy} {'greedy' if method.get('greedy') else 'sample'}"
    if name in ("beam", "dvts", "pf"):  # the search baselines (experiments/pool_curves.py: their labels)
        from experiments.pool_curves import search_variant

        return search_variant(method, policy)
    return name


def _threshold(method: dict) -> float | None:
    if method.get("name") == "gsi" and method.get("fallback", True):
        return method.get("threshold")
    if method.get("name") == "rsd":
        return method.get("delta")
    return None


def run_from(summary: dict, method: dict, path: str, overrides=()) -> Run:
    ci = summary.get("accuracy_ci95") or [None, None]
    flops = summary.get("flops", {})
    beta = summary.get("beta", method.get("beta"))
    return Run(
        path=str(path), method=summary.get("method", method.get("name", "?")), variant=variant_name(method),
        dataset=summary.get("dataset", "?"), model=summary.get("model", "?"), n=method.get("n"),
        beta=float(beta) if isinstance(beta, (int, float)) else None, threshold=_threshold(method),
        n_problems=summary.get("n_problems", 0), accuracy=summary.get("accuracy"), ci_low=ci[0], ci_high=ci[1],
        acceptance_rate=summary.get("acceptance_rate"), acceptance_rate_tokens=summary.get("acceptance_rate_tokens"),
        flops_total=float(flops.get("total", 0.0)), flops={r: float(flops.get(r, 0.0)) for r in ROLES},
        wall_time_s=summary.get("wall_time_s"), seed=summary.get("seed"), overrides=list(overrides),
    )


def load_run(path: Path) -> Run:
    path = Path(path)
    summary = json.loads((path / "summary.json").read_text())
    overrides = []
    ov = path / ".hydra" / "overrides.yaml"
    if ov.exists():
        from omegaconf import OmegaConf

        overrides = [str(o) for o in OmegaConf.load(ov)]
    return run_from(summary, _method_config(path), str(path), overrides)


def load_wandb_runs(project: str, filters: dict | None = None) -> list[Run]:
    """Runs of a W&B project (entity/project) that gsi's tracker logged: their summary is summary.json and their
    config the composed config. Needs the network and an API key; on any failure: a warning and no runs."""
    try:
        import wandb

        api = wandb.Api(timeout=30)
        out = []
        for r in api.runs(project, filters=filters or {}):
            summary = dict(r.summary._json_dict) if hasattr(r.summary, "_json_dict") else dict(r.summary)
            if "n_problems" not in summary or "flops" not in summary:
                continue  # unfinished, or not one of ours
            out.append(run_from(summary, dict(r.config.get("method", {})), f"wandb:{project}/{r.id}"))
        return out
    except Exception as e:  # noqa: BLE001 - reports from local folders must not depend on W&B
        log.warning("could not read W&B project %s (%s: %s)", project, type(e).__name__, e)
        return []


def sort_key(r: Run):
    return (r.dataset, r.model, r.variant, r.n or 0, r.beta or 0.0, r.threshold if r.threshold is not None else -1,
            r.seed or 0, r.path)


# ---------------------------------------------------------------------------------------------------------------
# The table


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


def fmt_num(x) -> str:
    if x is None:
        return "-"
    return f"{x:g}" if isinstance(x, float) else str(x)


TABLE_HEADER = ["method", "dataset", "model", "n", "β", "threshold/δ", "problems", "accuracy % [95% CI]",
                "acceptance %", "total FLOPs", "FLOPs π_S", "FLOPs π_B", "FLOPs PRM", "wall time", "run"]


def table_rows(runs: list[Run], root: Path | None = None) -> list[list[str]]:
    rows = []
    for r in runs:
        where = r.path
        if root is not None and not where.startswith("wandb:"):
            where = os.path.relpath(where, root)
        rows.append([r.variant, r.dataset, r.model, fmt_num(r.n), fmt_num(r.beta), fmt_num(r.threshold),
                     str(r.n_problems), fmt_acc(r), fmt_pct(r.acceptance_rate), fmt_flops(r.flops_total),
                     fmt_flops(r.flops["small"]), fmt_flops(r.flops["big"]), fmt_flops(r.flops["reward"]),
                     "-" if r.wall_time_s is None else f"{r.wall_time_s:.1f} s", f"`{where}`"])
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---" if i in (0, 1, 2, len(header) - 1) else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, runs: list[Run]) -> None:
    fields = ["path", "method", "variant", "dataset", "model", "n", "beta", "threshold", "seed", "n_problems",
              "accuracy", "ci_low", "ci_high", "acceptance_rate", "acceptance_rate_tokens", "flops_total",
              "flops_small", "flops_big", "flops_reward", "wall_time_s", "overrides"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in runs:
            d = asdict(r)
            d.update({f"flops_{role}": r.flops[role] for role in ROLES}, overrides=" ".join(r.overrides))
            d.pop("flops")
            w.writerow(d)


# ---------------------------------------------------------------------------------------------------------------
# The figures


LINESTYLES = ["-", "--", ":", "-."]


def _style(variants: list[str]) -> dict[str, dict]:
    """One colour and marker per method variant, the same in every figure."""
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#17becf",
               "#bcbd22"]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
    order = sorted(set(variants), key=lambda v: (not v.startswith("GSI"), not v.startswith("RSD"), v))
    return {v: {"color": palette[i % len(palette)], "marker": markers[i % len(markers)]} for i, v in enumerate(order)}


def _beta_styles(runs: list[Run]) -> dict:
    betas = sorted({r.beta for r in runs if r.beta is not None})
    return {b: LINESTYLES[i % len(LINESTYLES)] for i, b in enumerate(betas)}


def _panels(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    keys = sorted({(r.dataset, r.model) for r in runs})
    multi_model = len({m for _, m in keys}) > 1
    return [(f"{d} ({m})" if multi_model else d, [r for r in runs if (r.dataset, r.model) == (d, m)])
            for d, m in keys]


def _figure(n_panels: int, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(n_panels, 3)
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=12)
    return fig, list(axes.flat[:n_panels])


def _legend_handles(style: dict, betas: dict, extra=()) -> list:
    """Colour/marker = method, line style = beta (when there is more than one), then any extra handles."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=s["color"], marker=s["marker"], ls="none", ms=7, label=v) for v, s in style.items()]
    if len(betas) > 1:
        handles += [Line2D([], [], color="0.35", ls=ls, lw=1.4, label=f"β = {fmt_num(b)}") for b, ls in betas.items()]
    return handles + list(extra)


def _finish(fig, path: Path | None, points: list[dict], handles: list):
    if handles:
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=130, bbox_inches="tight")
        with open(path.with_suffix(".csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["panel", "series", "n", "beta", "threshold", "x", "y", "y_low", "y_high",
                                              "run"])
            w.writeheader()
            w.writerows(points)
    return fig


def _point(panel: str, series: str, r: Run | None, x: float, y: float, ci: bool = True) -> dict:
    return {"panel": panel, "series": series, "n": r.n if r else None, "beta": r.beta if r else None,
            "threshold": r.threshold if r else None, "x": x, "y": y,
            "y_low": 100 * r.ci_low if r and ci and r.ci_low is not None else None,
            "y_high": 100 * r.ci_high if r and ci and r.ci_high is not None else None, "run": r.path if r else ""}


def _series(rs: list[Run], key) -> dict:
    out: dict = {}
    for r in rs:
        out.setdefault(key(r), []).append(r)
    return out


def _log_flops_axis(ax) -> None:
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(EngFormatter(places=0, sep=""))
    ax.xaxis.set_minor_formatter(NullFormatter())


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and accuracy (higher), by increasing cost."""
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def plot_accuracy_vs_flops(runs: list[Run], path: Path | None = None, *, per_problem: bool = False):
    """One point per run (error bar: the bootstrap CI), runs of one method and beta joined in order of n, and the
    Pareto frontier over all runs of a panel."""
    from matplotlib.lines import Line2D

    runs = [r for r in runs if r.accuracy is not None and r.flops_total > 0]
    if not runs:
        return None
    style, betas = _style([r.variant for r in runs]), _beta_styles(runs)
    panels = _panels(runs)
    fig, axes = _figure(len(panels), "Accuracy against compute" + (" per problem" if per_problem else ""))
    points = []
    cost = (lambda r: r.flops_per_problem) if per_problem else (lambda r: r.flops_total)
    for ax, (title, rs) in zip(axes, panels):
        for (variant, beta, thr), mine in _series(rs, lambda r: (r.variant, r.beta, r.threshold)).items():
            mine.sort(key=lambda r: (r.n or 0, cost(r)))
            st = style[variant]
            x = [cost(r) for r in mine]
            y = [100 * r.accuracy for r in mine]
            lo = [100 * (r.accuracy - r.ci_low) if r.ci_low is not None else 0 for r in mine]
            hi = [100 * (r.ci_high - r.accuracy) if r.ci_high is not None else 0 for r in mine]
            ax.errorbar(x, y, yerr=[lo, hi], color=st["color"], marker=st["marker"], ms=5.5, capsize=2,
                        elinewidth=0.7, lw=1.1, ls=betas.get(beta, "-") if len(mine) > 1 else "none", alpha=0.9)
            for r, xi, yi in zip(mine, x, y):
                if r.n is not None:
                    ax.annotate(str(r.n), (xi, yi), textcoords="offset points", xytext=(4, -9), fontsize=6.5,
                                color=st["color"])
                points.append(_point(title, variant, r, xi, yi))
        front = pareto_front([(cost(r), 100 * r.accuracy) for r in rs])
        fx, fy = zip(*front)
        ax.plot(fx, fy, color="0.2", lw=7, alpha=0.13, solid_capstyle="round", zorder=0)
        points += [_point(title, "Pareto frontier", None, xi, yi) for xi, yi in front]
        _log_flops_axis(ax)
        counts = sorted({r.n_problems for r in rs})
        note = f"{counts[0]} problems" if len(counts) == 1 else "runs differ in problem count!"
        ax.set_title(f"{title} ({note})", fontsize=10)
        ax.set_xlabel("FLOPs per problem" if per_problem else "total FLOPs, all roles (log scale)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, which="major", alpha=0.3)
    pareto = Line2D([], [], color="0.2", lw=7, alpha=0.13, label="Pareto frontier")
    labels = Line2D([], [], ls="none", label="(point labels: n)")
    return _finish(fig, path, points, _legend_handles(style, betas, [pareto, labels]))


def plot_acceptance_vs_threshold(runs: list[Run], path: Path | None = None):
    """Acceptance rate at each run's threshold (GSI's u, RSD's delta); runs that differ only in the threshold are
    joined by a line."""
    runs = [r for r in runs if r.acceptance_rate is not None and r.threshold is not None]
    if not runs:
        return None
    style, betas = _style([r.variant for r in runs]), _beta_styles(runs)
    panels = _panels(runs)
    fig, axes = _figure(len(panels), "Acceptance rate against the threshold (GSI: u on r̃, RSD: δ on r)")
    points = []
    for ax, (title, rs) in zip(axes, panels):
        for (variant, n, beta), mine in _series(rs, lambda r: (r.variant, r.n, r.beta)).items():
            mine.sort(key=lambda r: r.threshold)
            st = style[variant]
            x = [r.threshold for r in mine]
            y = [100 * r.acceptance_rate for r in mine]
            swept = len(set(x)) > 1
            ax.plot(x, y, color=st["color"], marker=st["marker"], ms=5.5 if swept else 4.5,
                    ls=betas.get(beta, "-") if swept else "none", lw=1.3, alpha=1.0 if swept else 0.45)
            if swept:
                ax.annotate(f"n={n}", (x[-1], y[-1]), textcoords="offset points", xytext=(5, 0), fontsize=7,
                            color=st["color"], va="center")
            points += [_point(title, f"{variant}, n={n}, β={fmt_num(beta)}", r, xi, yi, ci=False)
                       for r, xi, yi in zip(mine, x, y)]
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("acceptance threshold (u or δ)")
        ax.set_ylabel("accepted steps / steps (%)")
        ax.set_ylim(-3, 103)
        ax.grid(True, alpha=0.3)
    from matplotlib.lines import Line2D

    note = Line2D([], [], ls="none", label="(faint: runs without a\nthreshold sweep)")
    return _finish(fig, path, points, _legend_handles(style, betas, [note]))


def plot_accuracy_vs_n(runs: list[Run], path: Path | None = None):
    """Accuracy against n; runs of one method, beta and threshold joined by a line (CI as a band)."""
    runs = [r for r in runs if r.accuracy is not None and r.n is not None]
    if not runs:
        return None
    style, betas = _style([r.variant for r in runs]), _beta_styles(runs)
    panels = _panels(runs)
    fig, axes = _figure(len(panels), "Accuracy against n (samples per step)")
    points, any_band = [], False
    for ax, (title, rs) in zip(axes, panels):
        groups = _series(rs, lambda r: (r.variant, r.beta, r.threshold))
        bands = sum(len({r.n for r in g}) > 1 for g in groups.values()) <= 4  # more would be a muddle
        multi_thr = {v for v in style if len({k[2] for k, g in groups.items() if k[0] == v and len(g) > 1}) > 1}
        for (variant, beta, thr), mine in groups.items():
            mine.sort(key=lambda r: r.n)
            st = style[variant]
            x = [r.n for r in mine]
            y = [100 * r.accuracy for r in mine]
            line = len(set(x)) > 1
            ax.plot(x, y, color=st["color"], marker=st["marker"], ms=5, lw=1.3,
                    ls=betas.get(beta, "-") if line else "none", alpha=1.0 if line else 0.45)
            if bands and line and all(r.ci_low is not None for r in mine):
                any_band = True
                ax.fill_between(x, [100 * r.ci_low for r in mine], [100 * r.ci_high for r in mine], color=st["color"],
                                alpha=0.07, lw=0)
            if line and variant in multi_thr:
                ax.annotate(f"u/δ={fmt_num(thr)}", (x[-1], y[-1]), textcoords="offset points", xytext=(5, 0),
                            fontsize=7, color=st["color"], va="center")
            points += [_point(title, f"{variant}, β={fmt_num(beta)}, u/δ={fmt_num(thr)}", r, xi, yi)
                       for r, xi, yi in zip(mine, x, y)]
        ns = sorted({r.n for r in rs})
        if len(ns) > 1 and ns[0] > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.minorticks_off()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("n")
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, alpha=0.3)
    from matplotlib.lines import Line2D

    band = Line2D([], [], color="0.5", lw=6, alpha=0.15, label="95% CI")
    return _finish(fig, path, points, _legend_handles(style, betas, [band] if any_band else []))


# ---------------------------------------------------------------------------------------------------------------


def make_report(paths, out: Path, *, wandb_project: str | None = None, per_problem: bool = False) -> dict:
    """Write the report into `out`; returns {"runs": [...], "figures": {name: Figure or None}, "files": [...]}."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dirs, unfinished = find_run_dirs(paths) if paths else ([], [])
    runs, broken = [], []
    for d in dirs:
        try:
            runs.append(load_run(d))
        except Exception as e:  # noqa: BLE001 - one bad folder does not stop the report
            broken.append((d, f"{type(e).__name__}: {e}"))
            log.warning("skipping %s (%s: %s)", d, type(e).__name__, e)
    if wandb_project:
        runs += load_wandb_runs(wandb_project)
    runs.sort(key=sort_key)

    figures = {
        "accuracy_vs_flops": plot_accuracy_vs_flops(runs, out / "accuracy_vs_flops.png", per_problem=per_problem),
        "acceptance_vs_threshold": plot_acceptance_vs_threshold(runs, out / "acceptance_vs_threshold.png"),
        "accuracy_vs_n": plot_accuracy_vs_n(runs, out / "accuracy_vs_n.png"),
        "pool_curves": plot_pool_curves(paths or [], out / "pool_curves.png"),
    }
    write_csv(out / "runs.csv", runs)

    md = ["# Results", ""]
    sources = [str(p) for p in (paths or [])] + ([f"wandb:{wandb_project}"] if wandb_project else [])
    md += [f"{len(runs)} runs from {', '.join(sources) or 'nothing'}. Accuracy in %, with the bootstrap 95% CI; "
           "acceptance = accepted steps / steps; FLOPs = 2·P·(context + generated tokens) per role "
           "(P without input embeddings).", ""]
    md.append(markdown_table(TABLE_HEADER, table_rows(runs, root=out)))
    titles = {"accuracy_vs_flops": "Accuracy against FLOPs", "acceptance_vs_threshold":
              "Acceptance rate against threshold", "accuracy_vs_n": "Accuracy against n",
              "pool_curves": "Best-of-n and voting at every n from one pool"}
    for name, fig in figures.items():
        if fig is not None:
            md += [f"## {titles[name]}", "", f"![{titles[name]}]({name}.png)", f"Points: [{name}.csv]({name}.csv)", ""]
            plt.close(fig)
        else:
            md += [f"## {titles[name]}", "", "_No runs with the needed values._", ""]
    if unfinished:
        md += ["## Unfinished runs (results.jsonl, no summary.json)", ""]
        for d in unfinished:
            n = sum(1 for line in (d / "results.jsonl").read_text().splitlines() if line.strip())
            md.append(f"- `{os.path.relpath(d, out)}`: {n} problems done")
        md.append("")
    if broken:
        md += ["## Unreadable runs", ""] + [f"- `{d}`: {why}" for d, why in broken] + [""]
    (out / "report.md").write_text("\n".join(md))
    files = ["report.md", "runs.csv"] + [f"{n}.{ext}" for n, f in figures.items() if f is not None
                                         for ext in ("png", "csv")]
    return {"runs": runs, "figures": figures, "files": [out / f for f in files], "unfinished": unfinished}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", type=Path, help="run folders, or folders to search for them")
    ap.add_argument("--out", type=Path, required=True, help="folder for report.md, runs.csv and the figures")
    ap.add_argument("--wandb-project", help="also read the finished runs of this W&B project (entity/project)")
    ap.add_argument("--per-problem", action="store_true", help="FLOPs per problem on the x axis, not total")
    args = ap.parse_args(argv)
    if not args.paths and not args.wandb_project:
        ap.error("give run folders or --wandb-project")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    rep = make_report(args.paths, args.out, wandb_project=args.wandb_project, per_problem=args.per_problem)
    print(f"{len(rep['runs'])} runs -> {args.out / 'report.md'}")
    for f in rep["files"]:
        print(f"  {f}")


if __name__ == "__main__":
    main()
