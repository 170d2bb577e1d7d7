"""Merge the run dirs of a sharded experiment (`-m shard=0/4,1/4,2/4,3/4`) into one run dir.

    python -m gsi.rundir.merge OUT_DIR SHARD_DIR [SHARD_DIR ...]
    python -m gsi.rundir.merge OUT_DIR SWEEP_DIR           # every run dir below it (those with an experiment.json)

OUT_DIR then looks like the run dir of the unsharded experiment: results.jsonl (every problem once, in the dataset's
order), summary.json (gsi.rundir.results.summarize over all problems, FLOPs from the shards' model sizes) and
experiment.json (shard: null). The shards are refused when they came from different experiments (experiment.json
differs in anything but `shard`), when one of the k shards is missing or given twice, when two shards hold the same
problem, or when a shard is unfinished (no summary.json, or fewer results than it says: rerun it with the same
hydra.sweep.dir to resume it). Shard dirs are only read.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gsi.data import parse_shard
from gsi.rundir.discover import find_run_dirs
from gsi.rundir.results import parse_results, write_json
from gsi.rundir.summary import run_summary

log = logging.getLogger(__name__)


class MergeError(Exception):
    """The shards cannot be merged (the message says why)."""


@dataclass
class Shard:
    dir: Path
    experiment: dict
    i: int
    k: int
    records: list[dict] = field(default_factory=list)
    summary: dict | None = None
    dropped_lines: int = 0

    @property
    def label(self) -> str:
        return f"{self.i}/{self.k}"


def shard_dirs(paths) -> list[Path]:
    """The run dirs named, or found below the dirs named (a sweep dir): those holding an experiment.json."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise MergeError(f"{p}: not a run dir or a folder of run dirs")
        below = [d for d, files in find_run_dirs([p]).items() if "experiment.json" in files]
        if not below:
            raise MergeError(f"{p}: no run dir (experiment.json) in it")
        found.extend(below)
    return list(dict.fromkeys(d.resolve() for d in found))


def read_results(path: Path) -> tuple[list[dict], int]:
    """Records of a results.jsonl, read-only (a running or killed job may be writing it): a torn last line or a
    corrupt line is skipped and counted, a repeated id keeps its first record, as gsi.rundir.results.ResultsFile does."""
    if not path.exists():
        return [], 0
    records, bad, dup = parse_results(path.read_bytes())
    return list(records.values()), len(bad) + len(dup)


def _read_json(path: Path):
    """The file's JSON, or None when it is cut short or not JSON (a run killed while writing it)."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        return None


def load_shard(run_dir: Path) -> Shard:
    exp_path = run_dir / "experiment.json"
    experiment = _read_json(exp_path)
    if not isinstance(experiment, dict):
        raise MergeError(f"{exp_path} is unreadable (not a JSON object): rerun that shard's command to rewrite it")
    if experiment.get("shard") in (None, ""):
        raise MergeError(f"{run_dir} is not a shard (its experiment.json has shard: null)")
    try:
        i, k = parse_shard(experiment["shard"])
    except ValueError as exc:
        raise MergeError(f"{exp_path}: {exc}") from None
    records, dropped = read_results(run_dir / "results.jsonl")
    summary_path = run_dir / "summary.json"
    summary = None
    if summary_path.exists():
        summary = _read_json(summary_path)
        if not isinstance(summary, dict):
            # Counted as unfinished (below): rerunning the shard's command recomputes it from results.jsonl.
            log.warning("%s is unreadable; the shard counts as unfinished", summary_path)
            summary = None
    return Shard(run_dir, experiment, i, k, records, summary, dropped)


def _without_shard(experiment: dict) -> dict:
    # Provenance (gsi.rundir.provenance: versions, commit, each shard's own problem hash) is not the experiment's identity.
    return {key: value for key, value in experiment.items() if key != "shard" and not key.startswith("provenance")}


def check_shards(shards: list[Shard], *, allow_incomplete: bool = False) -> None:
    """Raise MergeError unless the shards are exactly the k shards of one finished experiment."""
    if not shards:
        raise MergeError("no shards given")
    # One experiment.
    ref = _without_shard(shards[0].experiment)
    for s in shards[1:]:
        other = _without_shard(s.experiment)
        diff = sorted(key for key in set(ref) | set(other) if ref.get(key) != other.get(key))
        if diff:
            raise MergeError(f"{s.dir} and {shards[0].dir} are different experiments (they differ in: "
                             f"{', '.join(diff)}); merge the shards of one experiment at a time")
    # All k shards, each once.
    ks = sorted({s.k for s in shards})
    if len(ks) > 1:
        raise MergeError(f"the shards split the problems in different ways: k = {', '.join(map(str, ks))}")
    k = ks[0]
    by_i: dict[int, list[Shard]] = {}
    for s in shards:
        by_i.setdefault(s.i, []).append(s)
    twice = {i: group for i, group in by_i.items() if len(group) > 1}
    if twice:
        raise MergeError("shard given more than once: " + "; ".join(
            f"{i}/{k} in {', '.join(str(s.dir) for s in group)}" for i, group in sorted(twice.items())))
    missing = [f"{i}/{k}" for i in range(k) if i not in by_i]
    if missing:
        raise MergeError(f"missing shard(s) {', '.join(missing)} (have {', '.join(s.label for s in shards)})")
    # Disjoint.
    owner: dict[str, Shard] = {}
    overlap: dict[tuple[str, str], list[str]] = {}
    for s in shards:
        for rec in s.records:
            first = owner.setdefault(rec["id"], s)
            if first is not s:
                overlap.setdefault((first.label, s.label), []).append(rec["id"])
    if overlap:
        raise MergeError("shards overlap: " + "; ".join(
            f"{a} and {b} both hold {len(ids)} problem(s) ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})"
            for (a, b), ids in sorted(overlap.items())))
    # Finished.
    if not allow_incomplete:
        unfinished = []
        for s in sorted(shards, key=lambda s: s.i):
            if s.summary is None:
                unfinished.append(f"{s.label} ({s.dir}: no readable summary.json, {len(s.records)} results so far)")
            elif s.summary.get("n_problems") != len(s.records):
                unfinished.append(f"{s.label} ({s.dir}: {len(s.records)} results, its summary.json says "
                                  f"{s.summary.get('n_problems')})")
        if unfinished:
            raise MergeError("unfinished shard(s): " + "; ".join(unfinished)
                             + ". Resume them (rerun the sweep with the same hydra.sweep.dir) or pass --allow-incomplete")


def model_params(shards: list[Shard]) -> dict:
    """Parameters per role from the shards' summary.json (all shards run the same models). A shard resumed with
    nothing left to do has none recorded; the others supply them."""
    found = [s.summary.get("params") for s in shards if s.summary and s.summary.get("params")]
    for p in found[1:]:
        if p != found[0]:
            raise MergeError(f"the shards report different model sizes: {found[0]} vs {p}")
    if not found:
        log.warning("no shard's summary.json records the model sizes (params): FLOPs are reported as 0")
        return {}
    return dict(found[0])


def merged_order(shards: list[Shard]) -> list[dict]:
    """All records in the order of the unsharded run. Shard i of k holds problems i, i+k, i+2k, ... of the selected
    problems (gsi.data.benchmarks's round-robin split), and a record's `index` is its position within its shard, so the
    unsharded position is index * k + i; `index` is rewritten to it."""
    out = []
    for s in shards:
        for rec in s.records:
            out.append({**rec, "index": int(rec["index"]) * s.k + s.i})
    out.sort(key=lambda r: r["index"])
    return out


def merged_summary(shards: list[Shard]) -> tuple[list[dict], dict]:
    """(every record in the unsharded run's order, their summary): the identity from the first shard's summary
    (its experiment.json where it has none), FLOPs from the shards' model sizes, the shards' wall time summed."""
    records = merged_order(shards)
    params = model_params(shards)
    exp = shards[0].experiment
    meta = shards[0].summary or {}
    summary = run_summary(records, params, method=meta.get("method", exp["method"]["name"]),
                          dataset=meta.get("dataset", exp["dataset"]["name"]),
                          model=meta.get("model", exp["model"]["name"]), seed=exp.get("seed"), beta=exp.get("beta"),
                          grader=meta.get("grader", (exp.get("grader") or {}).get("name", "ours")))
    summary["wall_time_s"] = sum((s.summary or {}).get("wall_time_s", 0.0) for s in shards)
    return records, summary


def merge(out_dir: Path | str, paths, *, allow_incomplete: bool = False, force: bool = False) -> dict:
    """Check the shards, write OUT_DIR/{results.jsonl, summary.json, experiment.json}; return the summary."""
    out_dir = Path(out_dir)
    dirs = shard_dirs(paths)
    if any(d == out_dir.resolve() for d in dirs):
        raise MergeError(f"{out_dir} is one of the shards")
    shards = sorted((load_shard(d) for d in dirs), key=lambda s: s.i)
    for s in shards:
        if s.dropped_lines:
            log.warning("%s: skipped %d corrupt or repeated line(s) of results.jsonl", s.dir, s.dropped_lines)
    check_shards(shards, allow_incomplete=allow_incomplete)
    if (out_dir / "results.jsonl").exists() and not force:
        raise MergeError(f"{out_dir}/results.jsonl exists; pass --force to overwrite it")

    records, summary = merged_summary(shards)
    # What each shard measured (per process, so not a function of the results).
    summary["measured"] = {"shards": {s.label: {"dir": str(s.dir), "wall_time_s": (s.summary or {}).get("wall_time_s"),
                                                "measured": (s.summary or {}).get("measured")} for s in shards}}
    summary["merged_from"] = [str(s.dir) for s in shards]
    if allow_incomplete:
        summary["incomplete_shards"] = [s.label for s in shards
                                        if s.summary is None or s.summary.get("n_problems") != len(s.records)]

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "results.jsonl.tmp"
    with open(tmp, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    tmp.replace(out_dir / "results.jsonl")
    write_json(out_dir / "experiment.json", {**shards[0].experiment, "shard": None})
    write_json(out_dir / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gsi.rundir.merge", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="where the merged results.jsonl, summary.json and experiment.json go")
    parser.add_argument("shards", nargs="+", help="the shards' run dirs, or a sweep dir holding them")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="merge shards that have not finished (a partial result; summary.json lists them)")
    parser.add_argument("--force", action="store_true", help="overwrite OUT_DIR's results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        summary = merge(args.out_dir, args.shards, allow_incomplete=args.allow_incomplete, force=args.force)
    except MergeError as e:
        print(f"gsi.rundir.merge: {e}", file=sys.stderr)
        return 1
    acc = summary["accuracy"]
    print(f"merged {len(summary['merged_from'])} shards, {summary['n_problems']} problems into {args.out_dir}"
          + (f": accuracy {acc:.4f}" if acc is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
