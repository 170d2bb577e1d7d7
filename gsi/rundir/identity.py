"""A run folder's experiment identity (experiment.json): which settings make its results one experiment.

A resume into a folder must be the same experiment: `check_same_experiment` compares the config's identity keys
and the data's hash with the folder's experiment.json, and refuses records of problems outside the selection."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gsi.rundir.results import parse_results, write_json

log = logging.getLogger(__name__)

# Keys whose change makes earlier results in the same folder a different experiment.
# (trace: traced and untraced records in one results.jsonl would be one experiment with two record formats)
IDENTITY_KEYS = ("model", "method", "dataset", "generation", "seed", "shard", "beta", "grader", "trace")


def identity(cfg: DictConfig, data_sha256: str | None = None) -> dict:
    """What experiment.json holds for `cfg`: the identity keys, resolved, and the data's hash."""
    ident = {k: OmegaConf.to_container(cfg[k], resolve=True, enum_to_str=True) if OmegaConf.is_config(cfg[k])
             else cfg[k] for k in IDENTITY_KEYS if k in cfg}
    ident["dataset"].pop("data_dir", None)  # where the files are is not what they are
    ident["dataset"].pop("allow_empty", None)  # a permission, not a setting of the experiment
    if data_sha256 is not None:
        ident["data_sha256"] = data_sha256
    return ident


def check_same_experiment(out: Path, cfg: DictConfig, problems=None, data_sha256: str | None = None) -> None:
    """Refuse to resume into a folder that holds another experiment's results, or records of problems outside
    this run's selection (`problems`); the data's hash (gsi.data.selection.data_sha256) is part of the identity. A
    folder that holds no results (a start that failed, e.g. on a mistyped model path) is taken over by this run."""
    ident = identity(cfg, data_sha256)
    path = out / "experiment.json"
    results = out / "results.jsonl"
    records = parse_results(results.read_bytes())[0] if results.exists() else {}
    if problems is not None:
        selected = {p.id for p in problems}
        foreign = [i for i in records if i not in selected]
        if foreign:
            raise SystemExit(
                f"{results} holds {len(foreign)} record(s) of problems that this run did not select (ids "
                f"{', '.join(map(repr, foreign[:10]))}{', ...' if len(foreign) > 10 else ''}): another run's "
                "results, or another version of the data. They would be counted: remove those lines, or use "
                "another hydra.run.dir")
    if path.exists():
        try:
            old = json.loads(path.read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            if records:
                raise SystemExit(f"{path} is unreadable ({exc}) and {results} holds results: which experiment "
                                 "they belong to is unknown; restore experiment.json, or use another hydra.run.dir"
                                 ) from None
            old = {}
        # Provenance (gsi.rundir.provenance) says what produced the results, not which experiment they are.
        old = {k: v for k, v in old.items() if not k.startswith("provenance")}
        if "grader" not in old and "grader" in ident:  # written before runs had a grader: they used ours
            old["grader"] = {"name": "ours", "timeout": 5.0}
        old.setdefault("trace", False)  # written before trace was part of the identity: untraced records
        # written before the data's hash was part of the identity: the ids above are all that can be checked
        old.setdefault("data_sha256", ident.get("data_sha256"))
        diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
        if not diff:
            return
        if records:
            raise SystemExit(f"{out} holds results of a different experiment (differs in: {', '.join(diff)}); "
                             "use another hydra.run.dir")
        log.warning("%s holds no results: its experiment.json (another experiment, differing in: %s) is replaced "
                    "by this run's", out, ", ".join(diff))
    elif records:
        raise SystemExit(
            f"{results} holds results but {path} is missing, so which experiment they belong to is unknown "
            "(its config may differ from this one). To start afresh, move results.jsonl away (e.g. "
            f"mv {results} {results}.orphan); to continue it, restore its experiment.json; or use another "
            "hydra.run.dir")
    write_json(path, ident)
