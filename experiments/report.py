"""Tables, plots and paired tests from finished runs.

    python -m experiments.report outputs/sweeps/2026-05-01 outputs/runs/x --out outputs/reports/may
    python -m experiments.report outputs/sweeps --out reports/all --per-problem      # FLOPs per problem on x
    python -m experiments.report outputs/sweeps --out reports/gsi --filter method=gsi --filter dataset=math500
    python -m experiments.report --compare outputs/sweeps/gsi outputs/sweeps/rsd --filter method.n=16
    python -m experiments.report --wandb-project me/gsi --out reports/wandb         # W&B runs (online)

Every folder under the given paths that holds a summary.json is a run (a Hydra job folder, or any folder
gsi.run.run wrote); its settings come from experiment.json (else .hydra/config.yaml). Folders with results.jsonl
but no summary.json are listed as unfinished. The shards of one experiment (`shard=i/k`) are merged into one run
(labelled `[shards i/k,...]` when some are missing); a folder gsi.rundir.merge wrote replaces the shards it merged.

Runs that differ only in `seed` are one configuration: the table and the figures show the mean over seeds with a
95% interval over problems (experiments/intervals.py; a single seed: the Wilson interval of its accuracy). Writes
into --out:

    report.md                         the configuration table and the figures
    configs.csv                       one row per configuration (mean, interval, std over seeds, the seeds,
                                      π_B generated tokens, step loop, ideal and executed FLOPs)
    runs.csv                          one row per run, full-precision numbers
    table.tex                         with --latex: the table in booktabs (intervals, no paths)
    accuracy_vs_flops.{png,pdf,csv}   accuracy against ideal FLOPs, log x, Pareto frontier (one panel per dataset)
    accuracy_vs_big_tokens.{...}      accuracy against π_B's generated tokens per problem
    acceptance_vs_threshold.{...}     acceptance (steps and draft tokens) against the threshold, a panel per scale
                                      (GSI's u, a score threshold as u = s/β; GSI's raw r; RSD's δ)
    accuracy_vs_n.{...}               accuracy against n per method, β and u/δ

Each .csv holds exactly the points its figure draws. `--compare A B` tests two runs or sweeps (one configuration
each, after --filter) on the problems they share: McNemar's exact test on the discordant pairs and a paired
bootstrap over problems; it prints the p-values and how many problems differ.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from experiments.compare import compare, format_comparison
from experiments.figures import plot_acceptance_vs_threshold, plot_accuracy_vs_flops, plot_accuracy_vs_n
from experiments.latex_table import latex_table
from experiments.pool_curves import plot_pool_curves
from experiments.runs import find_runs, load_runs, load_wandb_runs
from experiments.selection import aggregate, apply_filters, parse_filters, sort_key
from experiments.tables import TABLE_HEADER, markdown_table, print_table, table_rows, write_csv

FIGURES = {"accuracy_vs_flops": "Accuracy against ideal FLOPs",
           "accuracy_vs_big_tokens": "Accuracy against π_B's generated tokens",
           "acceptance_vs_threshold": "Acceptance rate against threshold (GSI's u, RSD's δ)",
           "accuracy_vs_n": "Accuracy against n", "pool_curves": "Best-of-n and voting at every n from one pool"}


def make_report(paths, out: Path, *, wandb_project: str | None = None, per_problem: bool = False,
                filters=(), latex: bool = False) -> dict:
    """Write the report into `out`; returns {"runs", "configs", "figures": {name: Figure or None}, "files",
    "unfinished"}."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    filters = parse_filters(filters) if filters and isinstance(next(iter(filters)), str) else list(filters)
    dirs, unfinished = find_runs(paths) if paths else ([], [])
    runs, broken = load_runs(dirs)
    if wandb_project:
        runs += load_wandb_runs(wandb_project)
    runs = apply_filters(runs, filters)
    runs.sort(key=sort_key)
    configs = sorted(aggregate(runs), key=sort_key)

    figures = {
        "accuracy_vs_flops": plot_accuracy_vs_flops(configs, out / "accuracy_vs_flops.png", per_problem=per_problem),
        "accuracy_vs_big_tokens": plot_accuracy_vs_flops(configs, out / "accuracy_vs_big_tokens.png", x="big_tokens"),
        "acceptance_vs_threshold": plot_acceptance_vs_threshold(configs, out / "acceptance_vs_threshold.png"),
        "accuracy_vs_n": plot_accuracy_vs_n(configs, out / "accuracy_vs_n.png"),
        "pool_curves": plot_pool_curves(paths or [], out / "pool_curves.png"),
    }
    write_csv(out / "runs.csv", runs)
    write_csv(out / "configs.csv", configs)
    if latex:
        (out / "table.tex").write_text(latex_table(configs))

    md = ["# Results", ""]
    sources = [str(p) for p in (paths or [])] + ([f"wandb:{wandb_project}"] if wandb_project else [])
    pooled = sum(1 for c in configs if c.n_seeds > 1)
    md += [f"{len(runs)} runs ({len(configs)} configurations) from {', '.join(sources) or 'nothing'}"
           + (f", filtered by {', '.join(f'{k}={v}' for k, v in ((k, ','.join(v)) for k, v in filters))}"
              if filters else "") + ". "
           "Accuracy in %: a single seed's with its Wilson 95% CI; "
           f"over several seeds ({pooled} configurations) the mean over seeds with a 95% interval over problems "
           "(a bootstrap over problems, each problem's seeds kept together, never narrower than the Wilson interval "
           "over the problems: docs/reports.md). "
           "Threshold: GSI's u on the tilted reward (a score threshold s shown as u = s/β), RSD's δ on r. "
           "Acceptance = accepted steps / steps, and accepted draft tokens / drafted tokens; "
           "π_B generated tokens and the step loop (engine start-up excluded) are what GSI saves; "
           "ideal FLOPs = 2·P·(context + generated tokens) per role (P without input embeddings; token-granular, "
           "every problem's prefix computed once), executed FLOPs = what the engines reported prefilling and "
           "generating (whole KV blocks, cache resends); means over seeds.", ""]
    md.append(markdown_table(TABLE_HEADER, table_rows(configs, root=out)))
    for name, fig in figures.items():
        title = FIGURES[name]
        if fig is not None:
            md += [f"## {title}", "", f"![{title}]({name}.png)",
                   f"Vector: [{name}.pdf]({name}.pdf). Points: [{name}.csv]({name}.csv)", ""]
            plt.close(fig)
        else:
            md += [f"## {title}", "", "_No runs with the needed values._", ""]
    if unfinished:
        md += ["## Unfinished runs (results.jsonl, no summary.json)", ""]
        for d in unfinished:
            n = sum(1 for line in (d / "results.jsonl").read_text().splitlines() if line.strip())
            md.append(f"- `{os.path.relpath(d, out)}`: {n} problems done")
        md.append("")
    if broken:
        md += ["## Unreadable runs", ""] + [f"- `{d}`: {why}" for d, why in broken] + [""]
    (out / "report.md").write_text("\n".join(md))
    files = ["report.md", "runs.csv", "configs.csv"] + (["table.tex"] if latex else []) + [f"{n}.{ext}" for n, f in figures.items() if f is not None
                                                         for ext in ("png", "pdf", "csv")]
    return {"runs": runs, "configs": configs, "figures": figures, "files": [out / f for f in files],
            "unfinished": unfinished}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", type=Path, help="run folders, or folders to search for them")
    ap.add_argument("--out", type=Path, help="folder for report.md, the CSVs and the figures")
    ap.add_argument("--wandb-project", help="also read the finished runs of this W&B project (entity/project)")
    ap.add_argument("--per-problem", action="store_true", help="FLOPs per problem on the x axis, not total")
    ap.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                    help="keep runs whose config has KEY=VALUE (method=gsi, dataset=math500, method.n=4,8, beta=20, "
                         "seed=0, generation.max_steps=45, ...); repeat to require several")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"),
                    help="paired test of two runs or sweeps (one configuration each after --filter) on their "
                         "common problems: McNemar exact test and paired bootstrap")
    ap.add_argument("--filter-a", action="append", default=[], metavar="KEY=VALUE",
                    help="--compare: a filter for side A only (e.g. A and B the same sweep: --filter-a method=gsi "
                         "--filter-b method=rsd)")
    ap.add_argument("--filter-b", action="append", default=[], metavar="KEY=VALUE", help="--compare: for B only")
    ap.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples for --compare")
    ap.add_argument("--latex", action="store_true",
                    help="also write table.tex (booktabs: accuracy with its interval, π_B tokens, step loop, FLOPs; "
                         "no paths) and print it")
    return ap


def main(argv=None) -> None:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        filters = parse_filters(args.filter)
        filters_a, filters_b = parse_filters(args.filter_a), parse_filters(args.filter_b)
    except ValueError as e:
        ap.error(str(e))
    if args.compare:
        c = compare([args.compare[0]], [args.compare[1]], filters, n_boot=args.bootstrap, filters_a=filters_a,
                    filters_b=filters_b)
        print(format_comparison(c))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "compare.json").write_text(json.dumps(c, indent=2) + "\n")
        return
    if not args.paths and not args.wandb_project:
        ap.error("give run folders or --wandb-project (or --compare A B)")
    if args.out is None:
        ap.error("--out is required for a report")
    try:
        rep = make_report(args.paths, args.out, wandb_project=args.wandb_project, per_problem=args.per_problem,
                          filters=filters, latex=args.latex)
    except ValueError as e:
        ap.error(str(e))
    print_table(rep["configs"])
    if args.latex:
        print((args.out / "table.tex").read_text())
    print(f"{len(rep['runs'])} runs ({len(rep['configs'])} configurations) -> {args.out / 'report.md'}")
    for f in rep["files"]:
        print(f"  {f}")


if __name__ == "__main__":
    main()
