"""`--compare A B`: a paired test of two configurations on the problems both ran: McNemar's exact test on the
discordant (seed, problem) pairs and a paired bootstrap over problems."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.runs import Run, correct_by_problem, find_runs, fmt_num, load_runs
from experiments.selection import apply_filters


def load_correct(run: Run) -> dict[tuple, bool]:
    """(seed, problem id) -> correct, from the run's results.jsonl (every shard's, for a merged run)."""
    out = {}
    for p in run.paths or [run.path]:
        seed = None
        exp = Path(p) / "experiment.json"
        if exp.exists():
            seed = json.loads(exp.read_text()).get("seed")
        out.update({(seed, pid): ok for pid, ok in correct_by_problem(p).items()})
    return out


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b and c are the discordant counts, Binomial(b + c, 1/2) under H0."""
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(b, b + c, 0.5).pvalue)


def paired_bootstrap(diffs_by_problem: list[float], *, n_boot: int = 10000, seed: int = 0) -> dict:
    """Resample problems (each with its mean difference over seeds): the mean difference's 95% interval and a
    two-sided p-value (twice the smaller tail of the bootstrap distribution around 0)."""
    import numpy as np

    d = np.asarray(diffs_by_problem, dtype=np.float64)
    if len(d) == 0:
        return {"diff": None, "ci": [None, None], "p": None}
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    means = d[idx].mean(axis=1)
    p = 2 * min((means <= 0).mean(), (means >= 0).mean()) if d.any() else 1.0
    return {"diff": float(d.mean()), "ci": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
            "p": float(min(1.0, p)), "n_boot": n_boot}


def _one_config(paths, filters, side: str) -> list[Run]:
    dirs, _ = find_runs(paths)
    runs, _ = load_runs(dirs)
    try:
        runs = apply_filters(runs, filters)
    except ValueError as e:
        raise SystemExit(f"--compare {side}: {e}") from None
    keys = {r.key for r in runs}
    if not runs:
        raise SystemExit(f"--compare: no finished runs in {side} ({', '.join(map(str, paths))}) after the filters")
    if len(keys) > 1:
        labels = sorted({f"{r.label} n={r.n} β={fmt_num(r.beta)} on {r.dataset}" for r in runs})
        raise SystemExit(f"--compare: {side} holds {len(keys)} configurations ({'; '.join(labels[:6])}); narrow it "
                         "with --filter key=value (or give one run or one seed sweep)")
    return runs


def compare(a_paths, b_paths, filters=(), *, n_boot: int = 10000, filters_a=(), filters_b=()) -> dict:
    """Paired test of A against B on the problems both ran. `filters` select on both sides, `filters_a` and
    `filters_b` on one (two configurations of one sweep: the same folder twice, a filter each). With seeds on
    both sides, a problem's pairs are matched by seed (the seeds both have); McNemar counts every (seed, problem)
    pair, the bootstrap resamples problems (a problem's seeds move together)."""
    a_runs = _one_config(a_paths, [*filters, *filters_a], "A")
    b_runs = _one_config(b_paths, [*filters, *filters_b], "B")
    a, b = {}, {}
    for r in a_runs:
        a.update(load_correct(r))
    for r in b_runs:
        b.update(load_correct(r))
    common_seeds = {s for s, _ in a} & {s for s, _ in b}
    # Pairs (seed, problem) both ran; without a seed in common, each problem's mean over its seeds is paired.
    pairs = [(a[k], b[k]) for k in sorted(set(a) & set(b), key=str)] if common_seeds else []
    ids_a, ids_b = {i for _, i in a}, {i for _, i in b}
    problems = sorted(ids_a & ids_b)
    if not problems:
        raise SystemExit("--compare: A and B share no problem ids (different datasets, offsets or shards?)")

    def per_problem(d: dict) -> dict[str, float]:
        sums: dict[str, list] = {}
        for (s, pid), ok in d.items():
            if pid in ids_a & ids_b and (not common_seeds or s in common_seeds):
                sums.setdefault(pid, []).append(ok)
        return {pid: sum(v) / len(v) for pid, v in sums.items()}

    pa, pb = per_problem(a), per_problem(b)
    a_only = sum(1 for x, y in pairs if x and not y)
    b_only = sum(1 for x, y in pairs if y and not x)
    boot = paired_bootstrap([pa[p] - pb[p] for p in problems], n_boot=n_boot)

    def describe(rs: list[Run], acc: dict) -> dict:
        return {"label": rs[0].label, "n": rs[0].n, "beta": rs[0].beta, "dataset": rs[0].dataset,
                "seeds": sorted({r.seed for r in rs}, key=lambda s: (s is None, s)),
                "accuracy": sum(acc[p] for p in problems) / len(problems)}

    return {
        "A": describe(a_runs, pa), "B": describe(b_runs, pb), "problems": len(problems),
        "only_in_A": len(ids_a - ids_b), "only_in_B": len(ids_b - ids_a),
        "seeds": sorted(common_seeds, key=lambda s: (s is None, s)),
        "pairs": len(pairs), "A_right_B_wrong": a_only, "A_wrong_B_right": b_only,
        "problems_that_differ": sum(1 for p in problems if pa[p] != pb[p]),
        "mcnemar_p": mcnemar_exact(a_only, b_only) if pairs else None,
        "bootstrap": boot,
    }


def format_comparison(c: dict) -> str:
    side = lambda s: (f"{s['label']}, n={s['n']}, β={fmt_num(s['beta'])} on {s['dataset']} "  # noqa: E731
                      f"(seeds {', '.join(map(str, s['seeds']))}): accuracy {100 * s['accuracy']:.1f}%")
    lines = [f"A: {side(c['A'])}", f"B: {side(c['B'])}",
             f"problems in both: {c['problems']} (only in A: {c['only_in_A']}, only in B: {c['only_in_B']}); "
             f"problems that differ: {c['problems_that_differ']}"]
    if c["mcnemar_p"] is not None:
        lines.append(f"pairs (problem x seed {', '.join(map(str, c['seeds']))}): {c['pairs']}; A right, B wrong: "
                     f"{c['A_right_B_wrong']}; A wrong, B right: {c['A_wrong_B_right']}")
        lines.append(f"McNemar exact test (binomial on {c['A_right_B_wrong'] + c['A_wrong_B_right']} discordant "
                     f"pairs): p = {c['mcnemar_p']:.4g}")
    else:
        lines.append("no seed in common: McNemar needs one pair per problem and seed; bootstrap only")
    bo = c["bootstrap"]
    lines.append(f"paired bootstrap over problems ({bo['n_boot']} resamples): A - B = {100 * bo['diff']:+.1f} points "
                 f"[{100 * bo['ci'][0]:+.1f}, {100 * bo['ci'][1]:+.1f}], p = {bo['p']:.4g}")
    return "\n".join(lines)
