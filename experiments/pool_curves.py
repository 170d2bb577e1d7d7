"""Best-of-n and voting curves at every n = 1, 2, 4, ..., N from one response-level run at N (search-and-learn's
`score()`), without generating again.

A response-level best-of-n run (`method=bon method.level=response`) stores, per problem, its whole pool of N
responses under `pool` in results.jsonl: each response's text, normalised answer, grade and per-step PRM rewards.
For each n and each rule

    bon-last, bon-min, bon-prod            the response with the best aggregated reward (hard best-of-n)
    majority                               the most frequent answer (needs no PRM)
    weighted-last, weighted-min, weighted-prod   the answer with the largest summed aggregated reward

the accuracy is averaged over `draws` subsets of size n per problem. Draw 0 is the first n responses, chosen with
the run's own selection generator: exactly what a direct run at n with the same seed would answer (its tracks are
the same draws; tests/test_search.py checks it). The other draws are seeded random subsets (seeding: run seed,
problem, n, draw). A run with selection=majority has no rewards: only its majority curve is drawn.

FLOPs at n are the run's FLOPs per role times n/N (the expected cost of n of the N independent responses); the
majority rule does not pay for the PRM.

    python -m experiments.pool_curves outputs/runs/x [more runs or folders] --out reports/pool   # table + figure
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from experiments.intervals import wilson
from experiments.plotting import log_flops_axis
from gsi.methods.search import aggregate, select_response
from gsi.rundir.discover import find_run_dirs
from gsi.runtime import seeding

RULES = {
    "bon-last": ("hard", "last"), "bon-min": ("hard", "min"), "bon-prod": ("hard", "prod"),
    "majority": ("majority", None),
    "weighted-last": ("weighted_majority", "last"), "weighted-min": ("weighted_majority", "min"),
    "weighted-prod": ("weighted_majority", "prod"),
}


def subset_sizes(N: int) -> list[int]:
    ns = [2 ** i for i in range(N.bit_length()) if 2 ** i <= N]
    return ns + ([N] if ns[-1] != N else [])


def has_rewards(pool: list[dict]) -> bool:
    return any(r is not None for resp in pool for r in resp.get("rewards") or [])


def choose(pool: list[dict], subset, rule: str, rng: np.random.Generator) -> int:
    """The index (into `pool`) that `rule` picks among the responses `subset`, as the method's selection does."""
    selection, agg = RULES[rule]
    resp = [pool[k] for k in subset]
    scores = [0.0] * len(resp) if agg is None else [aggregate(r["rewards"], agg) for r in resp]
    answers = [r.get("answer") for r in resp]
    i, _ = select_response(scores, answers, selection, rng)
    return subset[i]


def draw(seed: int, problem_id: str, N: int, n: int, d: int) -> tuple[list[int], np.random.Generator]:
    """Subset `d` of size n and its selection generator. Draw 0: the first n responses with the generator the run
    itself selected with (gsi.methods.bon: ctx.rng(state, "select-response") before any step)."""
    if d == 0:
        return list(range(n)), seeding.rng(seed, problem_id, 0, "select-response")
    sub = seeding.rng(seed, problem_id, n, "pool-draw", d).choice(N, size=n, replace=False)
    return sorted(int(k) for k in sub), seeding.rng(seed, problem_id, n, "pool-select", d)


def curves(records: list[dict], seed: int, *, draws: int = 8, rules=None) -> dict[str, dict[int, float]]:
    """{rule: {n: accuracy}} over the records that hold a pool (mean over problems and draws)."""
    records = [r for r in records if r.get("pool")]
    if not records:
        return {}
    N = min(len(r["pool"]) for r in records)
    rewarded = all(has_rewards(r["pool"]) for r in records)
    rules = [k for k in (rules or RULES) if rewarded or RULES[k][1] is None]
    out: dict[str, dict[int, float]] = {rule: {} for rule in rules}
    for n in subset_sizes(N):
        k_draws = 1 if n == N else draws  # every subset of size N is the whole pool
        hits = {rule: 0 for rule in rules}
        for rec in records:
            pool = rec["pool"][:N]
            for d in range(k_draws):
                for rule in rules:
                    subset, rng = draw(seed, rec["id"], N, n, d)
                    hits[rule] += bool(pool[choose(pool, subset, rule, rng)]["correct"])
        for rule in rules:
            out[rule][n] = hits[rule] / (len(records) * k_draws)
    return out


def load(run_dir: Path) -> tuple[list[dict], dict] | None:
    """(records, summary) of a finished response-level run with pools, else None."""
    run_dir = Path(run_dir)
    res, summ = run_dir / "results.jsonl", run_dir / "summary.json"
    if not (res.exists() and summ.exists()):
        return None
    records = [json.loads(line) for line in res.read_text().splitlines() if line.strip()]
    if not any(r.get("pool") for r in records):
        return None
    return records, json.loads(summ.read_text())


def run_points(run_dir: Path, *, draws: int = 8) -> list[dict]:
    """One row per (rule, n) of a run: accuracy and the FLOPs a run at n would spend."""
    loaded = load(run_dir)
    if loaded is None:
        return []
    records, summary = loaded
    N = min(len(r["pool"]) for r in records if r.get("pool"))
    flops = summary.get("flops", {})
    exp = run_dir / "experiment.json"
    policy = json.loads(exp.read_text()).get("method", {}).get("policy", "?") if exp.exists() else "?"
    label = f"{ {'small': 'π_S', 'big': 'π_B'}.get(policy, policy)} pool N={N}"
    rows = []
    for rule, accs in curves(records, int(summary.get("seed", 0)), draws=draws).items():
        for n, acc in accs.items():
            roles = ("small", "big") + (() if RULES[rule][1] is None else ("reward",))
            problems = sum(1 for r in records if r.get("pool"))
            lo, hi = wilson(acc, problems)  # over problems: the draws of one problem are not independent
            rows.append({"run": str(run_dir), "dataset": summary.get("dataset", "?"), "model": summary.get("model", "?"),
                         "policy": policy, "N": N, "pool": label, "rule": rule,
                         "n": n, "accuracy": acc, "ci_low": lo, "ci_high": hi, "problems": problems,
                         "flops": sum(float(flops.get(r, 0.0)) for r in roles) * n / N})
    return rows


def find_pool_runs(paths) -> list[Path]:
    """The finished run folders in and below `paths` (gsi.rundir.discover) whose results hold pools."""
    return [d for d, files in find_run_dirs(paths).items()
            if {"results.jsonl", "summary.json"} <= files and load(d) is not None]


def plot_pool_curves(paths, path: Path | None = None, *, draws: int = 8):
    """Accuracy against n and against FLOPs for every pool run under `paths` (one figure, two panels per
    dataset); writes `path` (.png) and its points (.csv). None when there is no pool run."""
    rows = [row for d in find_pool_runs(paths) for row in run_points(d, draws=draws)]
    # A pool of N holds every smaller one: per dataset, model and policy only the largest pool is drawn.
    largest: dict[tuple, tuple[int, str]] = {}
    for r in rows:
        key = (r["dataset"], r["model"], r["policy"])
        largest[key] = max(largest.get(key, (0, "")), (r["N"], r["run"]))
    rows = [r for r in rows if largest[(r["dataset"], r["model"], r["policy"])][1] == r["run"]]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One row of panels per (dataset, pool): at most the 7 rules in a panel, each its own colour (two pools in one
    # panel gave 14 series with reused colours).
    panels = sorted({(r["dataset"], r["pool"]) for r in rows})
    fig, axes = plt.subplots(len(panels), 2, figsize=(11.5, 4.4 * len(panels)), squeeze=False)
    rules = list(RULES)
    colors = plt.get_cmap("tab10")
    for (ax_n, ax_f), (ds, pool) in zip(axes, panels):
        mine = [r for r in rows if r["dataset"] == ds and r["pool"] == pool]
        for rule in [k for k in rules if any(r["rule"] == k for r in mine)]:
            pts = sorted((r for r in mine if r["rule"] == rule), key=lambda r: r["n"])
            style = {"color": colors(rules.index(rule)), "marker": "o", "ms": 4, "lw": 1.3,
                     "ls": "-" if rule.startswith("bon") else ("--" if rule.startswith("weighted") else ":"),
                     "label": rule}
            y = [100 * p["accuracy"] for p in pts]
            lo, hi = [100 * p["ci_low"] for p in pts], [100 * p["ci_high"] for p in pts]
            for ax, x in ((ax_n, [p["n"] for p in pts]), (ax_f, [p["flops"] for p in pts])):
                ax.plot(x, y, **style)
                ax.fill_between(x, lo, hi, color=style["color"], alpha=0.06, lw=0)
        ns = sorted({r["n"] for r in mine})
        ax_n.set_xscale("log", base=2)
        ax_n.set_xticks(ns)
        ax_n.set_xticklabels([str(n) for n in ns])
        ax_n.minorticks_off()
        ax_n.set_xlabel("n (responses per problem)")
        if all(r["flops"] > 0 for r in mine):
            log_flops_axis(ax_f)  # G/T tick labels, as the report's other figures
        ax_f.set_xlabel("ideal FLOPs of a run at n (log scale)")
        for ax, what in ((ax_n, "n"), (ax_f, "FLOPs")):
            ax.set_ylabel("accuracy (%)")
            ax.set_title(f"{ds}, {pool} ({mine[0]['problems']} problems): against {what}", fontsize=10)
            ax.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    fig.suptitle(f"Best-of-n and voting from one pool of responses (mean over {draws} seeded subsets per n; "
                 "band: Wilson 95% CI over problems)", fontsize=12)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        fig.savefig(path, dpi=130, bbox_inches="tight")
        fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")  # vector, for the paper
        with open(path.with_suffix(".csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["run", "dataset", "model", "policy", "N", "pool", "rule", "n", "accuracy",
                                              "ci_low", "ci_high", "problems", "flops"])
            w.writeheader()
            w.writerows(rows)
    return fig


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.pool_curves", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path, help="run folders, or folders to search for them")
    ap.add_argument("--out", type=Path, help="folder for pool_curves.png/.csv (default: print only)")
    ap.add_argument("--draws", type=int, default=8, help="random subsets per n (default 8)")
    args = ap.parse_args(argv)
    for d in find_pool_runs(args.paths):
        rows = run_points(d, draws=args.draws)
        print(f"{d}:")
        ns = sorted({r["n"] for r in rows})
        print("  rule            " + "".join(f"{'n=' + str(n):>9}" for n in ns))
        for rule in dict.fromkeys(r["rule"] for r in rows):
            acc = {r["n"]: r["accuracy"] for r in rows if r["rule"] == rule}
            print(f"  {rule:<16}" + "".join(f"{100 * acc[n]:>8.1f}%" for n in ns))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        if plot_pool_curves(args.paths, args.out / "pool_curves.png", draws=args.draws) is not None:
            print(f"-> {args.out / 'pool_curves.png'}")


if __name__ == "__main__":
    main()
