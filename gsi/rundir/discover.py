"""Where the run folders are: the folders named, and every folder below them, that hold a run's files.

One rule for every reader of run folders (the report, the shard merge): a run folder holds experiment.json
(written before the first problem), results.jsonl (a line per finished problem) and, once finished,
summary.json; what a reader wants of them it picks from the file names found. The folders that tools put
inside a run folder (W&B's, Hydra's, submitit's) are not searched.
"""

from __future__ import annotations

import os
from pathlib import Path

RUN_FILES = ("experiment.json", "results.jsonl", "summary.json")
NOT_RUNS = ("wandb", ".hydra", "__pycache__", ".submitit")


def find_run_dirs(paths) -> dict[Path, set[str]]:
    """{run folder: which of RUN_FILES it holds} for each path and every folder below it, each path's in sorted
    order, each folder once (as first named). A path that is not there: FileNotFoundError."""
    found: dict[Path, set[str]] = {}
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(root)
        below = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in NOT_RUNS)
            held = set(RUN_FILES).intersection(filenames)
            if held:
                below[Path(dirpath)] = held
        for d in sorted(below):
            found.setdefault(d, below[d])
    return found
