"""Which runs a report shows and how replicates pool: --filter KEY=VALUE, and one Run per configuration (the mean
over its seeds with an interval over problems: experiments/intervals.py)."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from experiments.intervals import pooled_interval
from experiments.runs import Run, correct_by_problem, fmt_num
from gsi.roles import ROLES

log = logging.getLogger(__name__)


def parse_filters(specs) -> list[tuple[str, list[str]]]:
    """`key=value` (a value list `a,b` matches either) -> [(key, values)]; a spec without '=' is an error."""
    out = []
    for spec in specs or []:
        if "=" not in spec:
            raise ValueError(f"--filter {spec!r}: expected key=value (e.g. method=gsi, method.n=16, beta=20)")
        key, value = spec.split("=", 1)
        out.append((key.strip(), [v.strip() for v in value.split(",")]))
    return out


def _same(value, wanted: str) -> bool:
    if value is None:
        return wanted.lower() in ("none", "null", "")
    if isinstance(value, bool):
        return wanted.lower() == str(value).lower()
    if isinstance(value, (int, float)):
        try:
            return float(wanted) == float(value)
        except ValueError:
            return False
    return str(value) == wanted


def run_fields(r: Run) -> dict:
    """What --filter matches: the run's flat config (method.n, dataset.name, generation.max_steps, seed, ...) and the
    short names method, dataset, model, variant, n, threshold."""
    return {**r.config, "method": r.method, "dataset": r.dataset, "model": r.model, "variant": r.variant,
            "n": r.n, "beta": r.beta, "threshold": r.threshold, "seed": r.seed}


def _matches(r: Run, key: str, wanted: str) -> bool:
    if key == "method":  # the plugin (gsi) or the name the table prints (GSI, soft BoN π_S), any case
        return wanted.lower() in (r.method.lower(), r.variant.lower())
    return _same(run_fields(r).get(key), wanted)


def apply_filters(runs: list[Run], filters) -> list[Run]:
    """The runs every filter matches. A filter that leaves no run is an error naming the values there are (a typo
    or the wrong name would otherwise give an empty report and exit 0)."""
    for key, values in filters:
        known = set().union(*(run_fields(r) for r in runs)) if runs else set()
        if runs and key not in known:
            raise ValueError(f"--filter {key}=...: no run has the key {key!r}; keys look like "
                             f"{', '.join(sorted(k for k in known if '.' not in k))}, method.n, dataset.name, ...")
        kept = [r for r in runs if any(_matches(r, key, v) for v in values)]
        if runs and not kept:
            there = sorted({fmt_num(run_fields(r).get(key)) for r in runs})
            if key == "method":
                there = sorted(set(there) | {r.variant for r in runs})
            raise ValueError(f"--filter {key}={','.join(values)} matches none of the {len(runs)} runs; {key} is one "
                             f"of: {', '.join(there[:20])}")
        runs = kept
    return runs


def per_problem_correct(run: Run) -> dict[str, bool] | None:
    """problem id -> correct, from the run's results.jsonl (every shard's); None where there is none (W&B)."""
    out: dict[str, bool] = {}
    for p in run.paths or [run.path]:
        if p.startswith("wandb:") or not (Path(p) / "results.jsonl").is_file():
            return None
        out.update(correct_by_problem(p))
    return out


def drop_duplicate_seeds(rs: list[Run]) -> list[Run]:
    """A configuration's runs with one run per seed: a seed seen twice (a copied folder, a rerun into a new folder)
    would count the same outcomes twice and narrow the interval. The first folder is kept; the others are named."""
    kept: dict = {}
    for r in rs:
        if r.seed in kept:
            log.warning("%s: seed %s appears twice (%s and %s); pooling only the first (a copied or rerun folder "
                        "would count its problems twice)", r.label, r.seed, kept[r.seed].path, r.path)
            continue
        kept[r.seed] = r
    return list(kept.values())


def aggregate(runs: list[Run]) -> list[Run]:
    """One Run per configuration: the mean over its seeds with an interval over problems (experiments.intervals;
    one seed: its Wilson interval), the mean FLOPs, tokens, times and acceptance; `seeds`, `paths` and `acc_std`
    (the std over seeds) say what was pooled. A seed that appears twice is pooled once (with a warning)."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.key or r.path, []).append(r)
    out = []
    for rs in groups.values():
        rs.sort(key=lambda r: (r.seed if r.seed is not None else -1, r.path))
        rs = drop_duplicate_seeds(rs)
        if len(rs) == 1:
            r = rs[0]
            out.append(replace(r, seeds=[r.seed], paths=r.paths or [r.path], acc_std=None))
            continue
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        accs = [r.accuracy for r in rs if r.accuracy is not None]
        from scipy import stats

        acc_std = (float(stats.tstd(accs)) if len(set(accs)) > 1 else 0.0) if len(accs) > 1 else None
        opt = lambda xs: mean([x for x in xs if x is not None])  # noqa: E731
        counts = sorted({r.n_problems for r in rs})
        if len(counts) > 1:
            log.warning("%s: the seeds ran different numbers of problems (%s)", rs[0].label, counts)
        acc, lo, hi, interval = mean(accs), None, None, "Wilson"
        if acc is not None:
            per_seed = [per_problem_correct(r) for r in rs]
            lo, hi, interval = pooled_interval(acc, counts[0], None if None in per_seed else per_seed)
        wall = [r.wall_time_s for r in rs if r.wall_time_s is not None]
        out.append(replace(
            rs[0], path=os.path.commonpath([r.path for r in rs]) if not rs[0].path.startswith("wandb:") else rs[0].path,
            seed=None, accuracy=acc, ci_low=lo, ci_high=hi, acc_std=acc_std, n_problems=counts[0], interval=interval,
            acceptance_rate=opt([r.acceptance_rate for r in rs]),
            acceptance_rate_tokens=opt([r.acceptance_rate_tokens for r in rs]),
            flops_total=mean([r.flops_total for r in rs]), flops={k: mean([r.flops[k] for r in rs]) for k in ROLES},
            wall_time_s=mean(wall) if wall else None, seeds=[r.seed for r in rs],
            # Measurements: the mean over the seeds that have one (None when none has)
            big_generated=opt([r.big_generated for r in rs]), step_loop_s=opt([r.step_loop_s for r in rs]),
            flops_executed=opt([r.flops_executed for r in rs]),
            paths=[p for r in rs for p in (r.paths or [r.path])],
            shards=",".join(sorted({r.shards for r in rs if r.shards})) or None))
    return out


def sort_key(r: Run):
    return (r.dataset, r.model, r.variant, r.n or 0, r.beta or 0.0, r.threshold if r.threshold is not None else -1,
            r.seed if r.seed is not None else -1, r.path)
