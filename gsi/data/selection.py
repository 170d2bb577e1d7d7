"""Which problems a run takes: offset/limit pick a contiguous slice of the dataset, then shard "i/k" every k-th
problem of it starting at i (strided, so shards are balanced); and the hash of the whole dataset, part of a run's
identity.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Sequence

from gsi.config.access import get
from gsi.data.loaders import load_all
from gsi.data.registry import DatasetError, Problem

__all__ = ["parse_shard", "select", "load_problems", "load_selection", "select_problems", "data_sha256"]


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """'i/k' -> (i, k) with 0 <= i < k; None -> None; anything else raises ValueError naming `shard`."""
    if shard is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if not m:
        raise ValueError(f"shard must look like 'i/k' (0-based i < k), got shard={shard!r}")
    i, k = int(m.group(1)), int(m.group(2))
    if k < 1 or i >= k:
        raise ValueError(f"shard must satisfy 0 <= i < k, got shard={shard!r}")
    return i, k


def select(problems: Sequence[Problem], offset: int = 0, limit: int | None = None,
           shard: str | None = None) -> list[Problem]:
    """offset/limit pick a contiguous slice; then shard 'i/k' takes every k-th item of it starting at i. (A
    range in, a range out: gsi.config.validate checks a selection of millions of generated problems that way.)"""
    offset = int(offset or 0)
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got offset={offset}")
    if limit is not None and int(limit) < 0:
        raise ValueError(f"limit must be >= 0 or None, got limit={limit}")
    sl = problems[offset:] if limit is None else problems[offset : offset + int(limit)]
    sh = parse_shard(shard)
    if sh is not None:
        i, k = sh
        sl = sl[i::k]
    return sl if isinstance(sl, range) else list(sl)


def load_problems(cfg: Any, shard: str | None = None) -> list[Problem]:
    """Load the dataset that `cfg` names (fields: name, hub_path, hub_config, split, data_dir, local_file,
    limit, offset, allow_empty) and select offset/limit, then `shard` ('i/k'); see load_selection."""
    return load_selection(cfg, shard)[0]


def data_sha256(problems: Sequence[Problem]) -> str:
    """A hash of a dataset's problems (ids, texts, references, in order): equal whatever the source, if the data
    is; any edit of a problem or its answer changes it."""
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps([p.id, p.problem, p.reference]).encode() + b"\n")
    return h.hexdigest()


def load_selection(cfg: Any, shard: str | None = None) -> tuple[list[Problem], str]:
    """The selected problems (load_problems) and the hash of the whole dataset they were selected from
    (data_sha256: part of a run's identity, so that results of another version of the data are never mixed in,
    whatever the selection)."""
    return select_problems(cfg, *load_all(cfg), shard=shard)


def select_problems(cfg: Any, problems: Sequence[Problem], source: str,
                    shard: str | None = None) -> tuple[list[Problem], str]:
    """load_selection on problems already at hand (`source`: where they came from, for messages). A selection of
    no problem is a DatasetError naming the key that emptied it, unless `allow_empty` is true."""
    offset, limit = get(cfg, "offset") or 0, get(cfg, "limit")
    chosen = select(problems, offset=offset, limit=limit, shard=shard)
    if not chosen and not bool(get(cfg, "allow_empty", False)):
        n = len(problems)
        if int(offset or 0) >= n:
            what = f"dataset.offset={offset}: past the end of the dataset"
        elif limit is not None and int(limit) == 0:
            what = "dataset.limit=0: selects no problem"
        else:
            what = f"shard={shard}: this shard holds no problem"
        raise DatasetError(f"{what} ({get(cfg, 'name')!r} from {source}: {n} problems; offset {offset}, "
                           f"limit {limit}, shard {shard}); choose a selection that holds at least one problem, or set "
                           "dataset.allow_empty=true if an empty run is meant")
    return chosen, data_sha256(problems)
