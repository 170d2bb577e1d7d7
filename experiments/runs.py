"""The report's runs: one Run per finished run folder (or W&B run), read from summary.json and experiment.json.

A run's settings come from experiment.json (else .hydra/config.yaml); its configuration key is its flat identity
without seed and shard (REPLICATE_KEYS), so replicates pool into one configuration (experiments/selection.py).
The shards of one experiment (`shard=i/k`) are merged in memory with gsi.rundir.merge's checks and arithmetic
(labelled `[shards i/k,...]` when some are missing); a folder gsi.rundir.merge wrote replaces the shards it merged.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from gsi.reporting.thresholds import threshold_of
from gsi.roles import ROLES
from gsi.rundir.discover import find_run_dirs
from gsi.rundir.merge import MergeError, check_shards, load_shard, merged_summary
from gsi.rundir.results import parse_results, proportion_ci

log = logging.getLogger(__name__)

# Keys of experiment.json that do not make another configuration: replicates and shards of one are pooled.
REPLICATE_KEYS = ("seed", "shard")


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


def find_runs(paths) -> tuple[list[Path], list[Path]]:
    """(finished run folders, unfinished ones: results.jsonl but no summary.json) in and below `paths`
    (gsi.rundir.discover)."""
    found = find_run_dirs(paths)
    done = [d for d, files in found.items() if "summary.json" in files]
    unfinished = [d for d, files in found.items() if "results.jsonl" in files and "summary.json" not in files]
    return sorted(done), sorted(unfinished)


def _experiment(path: Path) -> dict:
    exp = path / "experiment.json"
    if exp.exists():
        return {k: v for k, v in json.loads(exp.read_text()).items() if not k.startswith("provenance")}
    hydra_cfg = path / ".hydra" / "config.yaml"
    if hydra_cfg.exists():
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
    if name in ("beam", "dvts", "pf"):  # the search baselines
        return search_variant(method, policy)
    return name


def search_variant(method: dict, policy: str) -> str:
    """The label of a search baseline run (beam, dvts, pf)."""
    name = method.get("name")
    if name == "pf":
        rule = "logit" if method.get("weighting", "logit") == "logit" else f"r/T={method.get('temperature', 1.0)}"
        return f"PF {policy} ({rule}, {method.get('selection', 'hard')})"
    label = {"beam": "beam search", "dvts": "DVTS"}[name]
    extra = f", lookahead {method['lookahead']}" if method.get("lookahead") else ""
    return f"{label} {policy} (M={method.get('width', 4)}, {method.get('aggregate', 'last')}{extra})"


def _threshold(method: dict, beta):
    return threshold_of(method, beta if isinstance(beta, (int, float)) else None)


def accuracy_interval(accuracy: float | None, n: int) -> tuple[float | None, float | None]:
    """The Wilson 95% interval of a run's accuracy (recomputed, so older summaries with a bootstrap interval that
    collapsed at 0% or 100% are reported the same way)."""
    if accuracy is None or not n:
        return None, None
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
        overrides = [str(o) for o in OmegaConf.load(ov)]
    exp = _experiment(path)
    return run_from(summary, exp.get("method") or {}, str(path), overrides, exp or None)


def merge_shards(dirs: list[Path]) -> Run:
    """One run from the shard folders of one experiment (gsi.rundir.merge's checks and arithmetic, in memory)."""
    shards = sorted((load_shard(d) for d in dirs), key=lambda s: s.i)
    label = None
    try:
        check_shards(shards, allow_incomplete=True)
    except MergeError as e:
        log.warning("shards of %s are incomplete (%s): reported as a partial run", shards[0].dir.parent, e)
        label = ",".join(s.label for s in shards)
    _, summary = merged_summary(shards)
    exp = {k: v for k, v in shards[0].experiment.items() if not k.startswith("provenance")}
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


def correct_by_problem(folder) -> dict[str, bool]:
    """problem id -> correct, from a run folder's results.jsonl (for the intervals over problems and --compare)."""
    records, _, _ = parse_results((Path(folder) / "results.jsonl").read_bytes())
    return {str(pid): bool(rec["correct"]) for pid, rec in records.items()}


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


def fmt_num(x) -> str:
    """A setting as the tables and legends write it: 4.0 -> '4', None -> '-'."""
    if x is None:
        return "-"
    return f"{x:g}" if isinstance(x, float) else str(x)
