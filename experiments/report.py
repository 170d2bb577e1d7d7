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
import csv
import json
import logging
import math
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from experiments.pool_curves import plot_pool_curves
from gsi.roles import ROLES

log = logging.getLogger(__name__)

# Keys of experiment.json that do not make another configuration: replicates and shards of one are pooled.
REPLICATE_KEYS = ("seed", "shard")


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
    threshold: float | None  # on its axis (gsi.reporting.thresholds: GSI's u, a score threshold as u = s/β; raw r; RSD's δ)
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
    config: dict = field(default_factory=dict)  # flat experiment identity (method.n, dataset.name, seed, ...)
    key: str = ""  # the configuration: the identity without seed and shard
    shards: str | None = None  # "0/4,1/4" when merged from an incomplete set of shards
    # Set on configurations (aggregate()): the runs pooled, their seeds, the std over seeds of the accuracy.
    seeds: list = field(default_factory=list)
    paths: list = field(default_factory=list)
    acc_std: float | None = None
    threshold_axis: str | None = None  # "u", "r" or "δ" (gsi.reporting.thresholds)
    threshold_text: str | None = None  # "u = 0.5", "u = s/β = 0.5, s = 10", "δ = 0.7"
    interval: str = "Wilson"  # which accuracy interval ci_low/ci_high are (experiments.intervals)
    # The claim's columns: pi_B's generated tokens, the step loop's time without engine start-up, and the FLOPs
    # the engines executed (whole KV blocks, cache resends) where they reported them; None where not known.
    big_generated: float | None = None
    step_loop_s: float | None = None
    flops_executed: float | None = None

    @property
    def flops_per_problem(self) -> float:
        return self.flops_total / self.n_problems if self.n_problems else float("nan")

    @property
    def n_seeds(self) -> int:
        return max(len(self.seeds), 1)

    @property
    def label(self) -> str:
        """The variant with its accept threshold: runs that differ only in u or δ get their own series."""
        if self.threshold is None:
            return self.variant
        return f"{self.variant} ({self.threshold_text or fmt_num(self.threshold)})"


def find_run_dirs(paths) -> tuple[list[Path], list[Path]]:
    """(finished run folders, unfinished ones), searching each path recursively; W&B's folders are skipped."""
    done, unfinished = [], []
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in ("wandb", ".hydra", "__pycache__", ".submitit"))
            if "summary.json" in filenames:
                done.append(Path(dirpath))
            elif "results.jsonl" in filenames:
                unfinished.append(Path(dirpath))
    return sorted(set(done)), sorted(set(unfinished))


def _experiment(path: Path) -> dict:
    exp = path / "experiment.json"
    if exp.exists():
        return {k: v for k, v in json.loads(exp.read_text()).items() if not k.startswith("provenance")}
    hydra_cfg = path / ".hydra" / "config.yaml"
    if hydra_cfg.exists():
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.load(hydra_cfg), resolve=False) or {}
        return {k: cfg.get(k) for k in ("model", "method", "dataset", "generation", "seed", "shard", "beta")}
    return {}


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_key(flat: dict) -> str:
    return json.dumps({k: v for k, v in flat.items() if k not in REPLICATE_KEYS and k != "dataset.data_dir"},
                      sort_keys=True, default=str)


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


def _threshold(method: dict, beta):
    from gsi.reporting.thresholds import threshold_of

    return threshold_of(method, beta if isinstance(beta, (int, float)) else None)


def accuracy_interval(accuracy: float | None, n: int) -> tuple[float | None, float | None]:
    """The Wilson 95% interval of a run's accuracy (recomputed, so older summaries with a bootstrap interval that
    collapsed at 0% or 100% are reported the same way)."""
    if accuracy is None or not n:
        return None, None
    from gsi.rundir.results import proportion_ci

    lo, hi = proportion_ci(round(accuracy * n), n)
    return lo, hi


def run_from(summary: dict, method: dict, path: str, overrides=(), experiment: dict | None = None) -> Run:
    flops = summary.get("flops", {})
    beta = summary.get("beta", method.get("beta"))
    n = summary.get("n_problems", 0)
    lo, hi = accuracy_interval(summary.get("accuracy"), n)
    flat = flatten(experiment or {"method": method, "seed": summary.get("seed"), "beta": beta,
                                  "dataset": {"name": summary.get("dataset")}, "model": {"name": summary.get("model")}})
    thr = _threshold(method, beta)
    measured = summary.get("measured") or {}
    if measured.get("problems_run") != n:  # a resumed run: every session's sum (gsi.rundir.sessions), when complete
        every = measured.get("all_sessions") or {}
        measured = every if every.get("problems_run") == n and every.get("sessions") else {}
    executed = measured.get("flops_executed")
    return Run(
        path=str(path), method=summary.get("method", method.get("name", "?")), variant=variant_name(method),
        dataset=summary.get("dataset", "?"), model=summary.get("model", "?"), n=method.get("n"),
        beta=float(beta) if isinstance(beta, (int, float)) else None, threshold=thr.value if thr else None,
        threshold_axis=thr.axis if thr else None, threshold_text=thr.text if thr else None,
        big_generated=(summary.get("tokens") or {}).get("big", {}).get("generated"),
        step_loop_s=measured.get("step_loop_s"),
        flops_executed=float(sum(executed.values())) if executed else None,
        n_problems=n, accuracy=summary.get("accuracy"), ci_low=lo, ci_high=hi,
        acceptance_rate=summary.get("acceptance_rate"), acceptance_rate_tokens=summary.get("acceptance_rate_tokens"),
        flops_total=float(flops.get("total", 0.0)), flops={r: float(flops.get(r, 0.0)) for r in ROLES},
        wall_time_s=summary.get("wall_time_s"), seed=summary.get("seed"), overrides=list(overrides),
        config=flat, key=config_key(flat),
    )


def load_run(path: Path) -> Run:
    path = Path(path)
    summary = json.loads((path / "summary.json").read_text())
    overrides = []
    ov = path / ".hydra" / "overrides.yaml"
    if ov.exists():
        from omegaconf import OmegaConf

        overrides = [str(o) for o in OmegaConf.load(ov)]
    exp = _experiment(path)
    return run_from(summary, exp.get("method") or {}, str(path), overrides, exp or None)


def merge_shards(dirs: list[Path]) -> Run:
    """One run from the shard folders of one experiment (gsi.rundir.merge's checks and arithmetic, in memory)."""
    from gsi.rundir.merge import MergeError, check_shards, load_shard, merged_order, model_params
    from gsi.rundir.results import summarize

    shards = sorted((load_shard(d) for d in dirs), key=lambda s: s.i)
    label = None
    try:
        check_shards(shards, allow_incomplete=True)
    except MergeError as e:
        log.warning("shards of %s are incomplete (%s): reported as a partial run", shards[0].dir.parent, e)
        label = ",".join(s.label for s in shards)
    records = merged_order(shards)
    params = model_params(shards)
    summary = summarize(records, flops_per_token={r: 2.0 * params.get(r, 0) for r in ROLES},
                        has_acceptance=records[0]["acceptance"] if records else False)
    exp = dict(shards[0].experiment)
    exp = {k: v for k, v in exp.items() if not k.startswith("provenance")}
    summary.update(method=exp["method"]["name"], dataset=exp["dataset"]["name"], model=exp["model"]["name"],
                   seed=exp.get("seed"), beta=exp.get("beta"),
                   wall_time_s=sum((s.summary or {}).get("wall_time_s", 0.0) for s in shards))
    run = run_from(summary, exp["method"], str(os.path.commonpath([str(s.dir) for s in shards])),
                   experiment={**exp, "shard": None})
    run.shards = label
    run.paths = [str(s.dir) for s in shards]
    return run


def load_runs(dirs: list[Path]) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Runs from folders: shards merged, folders that gsi.rundir.merge already merged skipped, broken ones listed."""
    runs, broken, shard_groups, merged_from = [], [], {}, set()
    for d in dirs:
        try:
            exp = _experiment(d)
            summary = json.loads((d / "summary.json").read_text())
            merged_from.update(str(Path(p).resolve()) for p in summary.get("merged_from", []))
            if exp.get("shard") not in (None, ""):
                shard_groups.setdefault(config_key(flatten({**exp, "shard": None})) + f"|{exp.get('seed')}",
                                        []).append(d)
                continue
            runs.append(load_run(d))
        except Exception as e:  # noqa: BLE001 - one bad folder does not stop the report
            broken.append((d, f"{type(e).__name__}: {e}"))
            log.warning("skipping %s (%s: %s)", d, type(e).__name__, e)
    for group in shard_groups.values():
        group = [d for d in group if str(d.resolve()) not in merged_from]
        if not group:
            continue
        try:
            runs.append(merge_shards(group))
        except Exception as e:  # noqa: BLE001
            broken += [(d, f"{type(e).__name__}: {e}") for d in group]
            log.warning("cannot merge the shards %s (%s: %s)", [str(d) for d in group], type(e).__name__, e)
    return runs, broken


def load_wandb_runs(project: str, filters: dict | None = None) -> list[Run]:
    """Runs of a W&B project (entity/project) that gsi's tracker logged: their summary is summary.json and their
    config the composed config. Needs the network and an API key; on any failure: a warning and no runs."""
    try:
        import wandb

        api = wandb.Api(timeout=30)
        out = []
        for r in api.runs(project, filters=filters or {}):
            if getattr(r, "state", "finished") not in ("finished", None):
                continue  # crashed, failed, preempted or running: not a result
            summary = dict(r.summary._json_dict) if hasattr(r.summary, "_json_dict") else dict(r.summary)
            if "n_problems" not in summary or "flops" not in summary:
                continue  # unfinished, or not one of ours
            cfg = dict(r.config)
            exp = {k: cfg.get(k) for k in ("model", "method", "dataset", "generation", "seed", "shard", "beta")}
            exp["dataset"] = {k: v for k, v in (exp["dataset"] or {}).items() if k != "data_dir"}
            out.append(run_from(summary, dict(cfg.get("method", {})), f"wandb:{project}/{r.id}", experiment=exp))
        return out
    except Exception as e:  # noqa: BLE001 - reports from local folders must not depend on W&B
        log.warning("could not read W&B project %s (%s: %s)", project, type(e).__name__, e)
        return []


# ---------------------------------------------------------------------------------------------------------------
# Selecting and pooling


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
    from gsi.rundir.results import parse_results

    out: dict[str, bool] = {}
    for p in run.paths or [run.path]:
        path = Path(p) / "results.jsonl"
        if p.startswith("wandb:") or not path.is_file():
            return None
        records, _, _ = parse_results(path.read_bytes())
        out.update({str(pid): bool(rec["correct"]) for pid, rec in records.items()})
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
    from experiments.intervals import pooled_interval

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


# ---------------------------------------------------------------------------------------------------------------
# Paired comparison


def load_correct(run: Run) -> dict[tuple, bool]:
    """(seed, problem id) -> correct, from the run's results.jsonl (every shard's, for a merged run)."""
    from gsi.rundir.results import parse_results

    out = {}
    for p in run.paths or [run.path]:
        records, _, _ = parse_results((Path(p) / "results.jsonl").read_bytes())
        seed = None
        exp = Path(p) / "experiment.json"
        if exp.exists():
            seed = json.loads(exp.read_text()).get("seed")
        for pid, rec in records.items():
            out[(seed, str(pid))] = bool(rec["correct"])
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
    dirs, _ = find_run_dirs(paths)
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
    from rich.table import Table

    t = Table(title=f"{len(runs)} configurations", show_lines=False)
    for i, h in enumerate(TABLE_HEADER[:-1]):
        t.add_column(h, justify="left" if i < 3 else "right", no_wrap=True)
    for row in table_rows(runs):
        t.add_row(*row[:-1])
    from gsi.reporting.report import console

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


# ---------------------------------------------------------------------------------------------------------------
# The figures


LINESTYLES = ["-", "--", ":", "-."]
POINT_FIELDS = ["panel", "series", "metric", "n", "beta", "threshold", "x", "y", "y_low", "y_high", "y_std", "seeds",
                "run"]
# Points are drawn under their own colour and marker per series label (the variant with its u or δ).
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#17becf",
           "#bcbd22"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]


def _style(labels: list[str]) -> dict[str, dict]:
    """One colour and marker per series label, the same in every figure."""
    import re

    natural = lambda v: [float(t) if re.fullmatch(r"[\d.]+", t) else t for t in re.findall(r"[\d.]+|[^\d.]+", v)]  # noqa: E731
    order = sorted(set(labels), key=lambda v: (not v.startswith("GSI"), not v.startswith("RSD"), natural(v)))
    return {v: {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)]} for i, v in enumerate(order)}


def _beta_styles(runs: list[Run]) -> dict:
    betas = sorted({r.beta for r in runs if r.beta is not None})
    return {b: LINESTYLES[i % len(LINESTYLES)] for i, b in enumerate(betas)}


def _panels(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    keys = sorted({(r.dataset, r.model) for r in runs})
    multi_model = len({m for _, m in keys}) > 1
    return [(f"{d} ({m})" if multi_model else d, [r for r in runs if (r.dataset, r.model) == (d, m)])
            for d, m in keys]


def _figure(n_panels: int, title: str, cols: int | None = None):
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


def _legend_handles(style: dict, betas: dict, extra=()) -> list:
    """Colour/marker = method with its u or δ, line style = β (when there is more than one), then extras."""
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
        fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")  # vector, for the paper
        with open(path.with_suffix(".csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=POINT_FIELDS)
            w.writeheader()
            w.writerows(points)
    return fig


def _point(panel: str, series: str, r: Run | None, x: float, y: float, ci: bool = True, metric: str = "accuracy"
           ) -> dict:
    return {"panel": panel, "series": series, "metric": metric, "n": r.n if r else None,
            "beta": r.beta if r else None, "threshold": r.threshold if r else None, "x": x, "y": y,
            "y_low": 100 * r.ci_low if r and ci and r.ci_low is not None else None,
            "y_high": 100 * r.ci_high if r and ci and r.ci_high is not None else None,
            "y_std": 100 * r.acc_std if r and ci and r.acc_std is not None else None,
            "seeds": " ".join(fmt_num(s) for s in r.seeds) if r else "", "run": r.path if r else ""}


def _series(rs: list[Run], key) -> dict:
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
    import numpy as np

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


def _log_flops_axis(ax) -> None:
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    ax.set_xscale("log")
    ax.autoscale_view()
    lo, hi = ax.get_xlim()
    ticks, labels = flops_ticks(lo, hi)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter(labels))
    ax.xaxis.set_minor_locator(NullLocator())


def _declutter_labels(ax, labels: list[tuple[float, float, str, str]], min_px: float = 11.0) -> int:
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


def _spread_note(runs: list[Run]) -> str:
    seeds = sorted({r.n_seeds for r in runs})
    if seeds == [1]:
        return "error bars: Wilson 95% CI"
    k = "/".join(map(str, [s for s in seeds if s > 1]))
    return (f"{k} seeds: mean, 95% interval over problems" + ("; one seed: Wilson 95% CI" if 1 in seeds else ""))


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
    style, betas = _style([r.label for r in runs]), _beta_styles(runs)
    panels = _panels(runs)
    fig, axes = _figure(len(panels), f"{title} ({_spread_note(runs)})")
    points = []
    from matplotlib.transforms import offset_copy

    nudged = False
    for ax, (panel, rs) in zip(axes, panels):
        labels = []
        drawn: dict[tuple, int] = {}  # (x, y) -> series already drawn there
        for (label, beta), mine in _series(rs, lambda r: (r.label, r.beta)).items():
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
                points.append(_point(panel, f"{label}, β={fmt_num(beta)}", r, xi, yi))
        front = pareto_front([(cost(r), 100 * r.accuracy) for r in rs])
        fx, fy = zip(*front)
        ax.plot(fx, fy, color="0.2", lw=7, alpha=0.13, solid_capstyle="round", zorder=0)
        points += [_point(panel, "Pareto frontier", None, xi, yi) for xi, yi in front]
        if x == "big_tokens":
            ax.set_xlabel("π_B generated tokens per problem (mean over seeds)")
            ax.set_xlim(left=min(-0.03 * max(cost(r) for r in rs), -1))
        else:
            _log_flops_axis(ax)
            ax.set_xlabel("ideal FLOPs per problem (log scale)" if per_problem
                          else "ideal FLOPs, all roles (token-granular, full prefix cache; log scale)")
        _declutter_labels(ax, labels)
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
    return _finish(fig, path, points, _legend_handles(style, betas, extra))


def readable_accuracy_axis(ax) -> None:
    """Accuracies all (nearly) equal, e.g. all 0 with no interval: matplotlib zooms to ±0.04 "%"; show at least
    10 points (never below -2%, and never cutting what is drawn)."""
    lo, hi = ax.get_ylim()
    if hi - lo < 10:
        bottom = max(-2.0, (lo + hi) / 2 - 5)
        ax.set_ylim(min(bottom, lo), max(hi, bottom + 10))


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
    swept_keys = {k for k, g in _series(runs, curve).items() if len({r.threshold for r in g}) > 1}
    if not swept_keys:
        return None
    kinds = [k for k in THRESHOLD_AXES if any(scale(r) == k and curve(r) in swept_keys for r in runs)]
    runs = [r for r in runs if scale(r) in kinds]
    datasets = _panels(runs)
    name = lambda r: f"{r.variant}, n = {r.n}"  # noqa: E731 - colour per method and n (no labels on the lines)
    style, betas = _style([name(r) for r in runs]), _beta_styles(runs)
    fig, axes = _figure(len(datasets) * len(kinds), "Acceptance rate against the threshold", cols=len(kinds))
    points = []
    for d, (title, rs_all) in enumerate(datasets):
        for c, kind in enumerate(kinds):
            ax = axes[d * len(kinds) + c]
            rs = [r for r in rs_all if scale(r) == kind]
            short, axis_name = THRESHOLD_AXES[kind]
            ax.set_title(f"{title}: {short}", fontsize=10)
            for (variant, n, beta), mine in _series(rs, lambda r: (r.variant, r.n, r.beta)).items():
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
                    points += [_point(title, f"{variant}, n={n}, β={fmt_num(beta)}", r, xi, yi, ci=False,
                                      metric=f"acceptance_{metric}") for xi, yi, r in pts]
            ax.set_xlabel(axis_name if rs else f"(no {short} runs)")
            ax.set_ylabel("accepted (%)")
            ax.set_ylim(-3, 103)
            ax.grid(True, alpha=0.3)
    extra = [Line2D([], [], color="0.3", marker="o", ls="-", label="steps accepted"),
             Line2D([], [], color="0.3", marker="o", mfc="white", ls="--", label="draft tokens accepted"),
             Line2D([], [], ls="none", label="(faint: no threshold sweep)")]
    return _finish(fig, path, points, _legend_handles(style, betas, extra))


def plot_accuracy_vs_n(runs: list[Run], path: Path | None = None):
    """Accuracy against n; configurations of one method, u/δ and β joined by a line (interval as a band); u and
    δ are in the legend, not on the lines."""
    runs = [r for r in runs if r.accuracy is not None and r.n is not None]
    if not runs:
        return None
    style, betas = _style([r.label for r in runs]), _beta_styles(runs)
    panels = _panels(runs)
    fig, axes = _figure(len(panels), f"Accuracy against n, samples per step ({_spread_note(runs)})")
    points, any_band = [], False
    for ax, (title, rs) in zip(axes, panels):
        groups = _series(rs, lambda r: (r.label, r.beta))
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
            points += [_point(title, f"{label}, β={fmt_num(beta)}", r, r.n, yi) for r, yi in zip(mine, y)]
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
    return _finish(fig, path, points, _legend_handles(style, betas, [band] if any_band else []))


# ---------------------------------------------------------------------------------------------------------------

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
    dirs, unfinished = find_run_dirs(paths) if paths else ([], [])
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
        from experiments.latex_table import latex_table

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
