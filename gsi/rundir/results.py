"""results.jsonl (one line per finished problem, flushed as it finishes; resume reads it) and summary.json."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from gsi.roles import ROLES

log = logging.getLogger(__name__)

# Keys of summary.json that measure this process rather than the results: they differ between an
# uninterrupted run and a resumed one, and between machines.
MEASURED_KEYS = ("wall_time_s", "measured", "provenance")


def parse_results(raw: bytes) -> tuple[dict[str, dict], list[int], list[int]]:
    """Records by id, plus the line numbers of corrupt lines and of repeated ids (the first record wins). A last
    line without its newline is corrupt even when it parses: the write never finished."""
    records: dict[str, dict] = {}
    bad, dup = [], []
    lines = raw.split(b"\n")
    complete = raw.endswith(b"\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or "id" not in rec:
                raise ValueError("not a result record")
        except ValueError:
            bad.append(lineno)
            continue
        if lineno == len(lines) and not complete:
            bad.append(lineno)
            continue
        if rec["id"] in records:
            dup.append(lineno)
            continue
        records[rec["id"]] = rec
    return records, bad, dup


class ResultsFile:
    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        """Finished problems by id. A corrupt line (a kill mid-write leaves a half line at the end) is reported and
        dropped, so that its problem is redone; the file is rewritten without it."""
        if not self.path.exists():
            return {}
        records, bad, dup = parse_results(self.path.read_bytes())
        if bad or dup:
            log.warning("%s: dropping %s; those problems will be redone", self.path,
                        ", ".join([f"corrupt line {n}" for n in bad] + [f"duplicate at line {n}" for n in dup]))
            self.rewrite(records.values())
        return records

    def rewrite(self, records) -> None:
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def bootstrap_ci(values, *, n_boot: int = 2000, seed: int = 0) -> list[float] | None:
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    means = x[idx].mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def proportion_ci(successes: int, n: int, *, method: str = "wilson", level: float = 0.95) -> list[float] | None:
    """Confidence interval of a binomial proportion (scipy): Wilson score by default, "exact" for
    Clopper-Pearson. Unlike a percentile bootstrap it does not collapse at 0% or 100% (2 of 2 correct: 34-100%)."""
    if not n:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method=method)
    return [float(ci.low), float(ci.high)]


def summarize(records: list[dict], *, flops_per_token: dict[str, float], has_acceptance: bool) -> dict:
    """Everything here is a function of the per-problem records, so a resumed run reproduces it exactly.

    `tokens`/`flops`: the work of engines with a prefix cache (each role reads a problem's context once, plus
    every candidate's own tokens; gsi.runtime.state). `tokens_nocache`/`flops_nocache`: every request re-reads its whole
    context. acceptance_rate_tokens = accepted draft tokens / tokens of the drafts put to the accept test (one
    per step, the chosen one of n: the RSD paper's "draft tokens" at n = 1)."""
    n = len(records)
    correct = [bool(r["correct"]) for r in records]
    steps = sum(r["steps"] for r in records)
    accepted = sum(r["accepted_steps"] for r in records)
    # (records written before the draft-token fields were renamed say "draft_tokens")
    chosen = sum(r.get("chosen_draft_tokens", r.get("draft_tokens", 0)) for r in records)
    draft_kept = sum(r["accepted_draft_tokens"] for r in records)
    roles = ROLES

    def totals(key):
        return {role: {k: sum(r.get(key, r["tokens"])[role][k] for r in records) for k in ("generated", "context")}
                for role in roles}

    def flops_of(tokens):
        flops = {role: flops_per_token[role] * (tokens[role]["generated"] + tokens[role]["context"])
                 for role in roles}
        flops["total"] = sum(flops.values())
        return flops

    tokens, tokens_nocache = totals("tokens"), totals("tokens_nocache")
    return {
        "n_problems": n,
        "accuracy": sum(correct) / n if n else None,
        "accuracy_ci95": proportion_ci(sum(correct), n),
        "accuracy_ci95_method": "wilson",
        "acceptance_rate": (accepted / steps if steps else None) if has_acceptance else None,
        "acceptance_rate_tokens": (draft_kept / chosen if chosen else None) if has_acceptance else None,
        "steps": steps,
        "stop_reasons": {k: sum(r["stop_reason"] == k for r in records)
                         for k in sorted({r["stop_reason"] for r in records})},
        "chosen_draft_tokens": chosen,
        "drafted_tokens": sum(r.get("drafted_tokens", 0) for r in records),
        "accepted_draft_tokens": draft_kept,
        "empty_candidates": sum(r.get("empty_candidates", 0) for r in records),
        "tokens": tokens,
        "flops": flops_of(tokens),
        "tokens_nocache": tokens_nocache,
        "flops_nocache": flops_of(tokens_nocache),
    }


def write_json(path: Path, obj: dict) -> None:
    """Atomically: the old file or the new one, never a torn one, even after a power cut. The data is fsynced
    before the rename (or the rename may reach the disk first and leave an empty file), and the folder after it
    (or the rename itself may be lost)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(obj, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the file itself is synced
        pass
    finally:
        os.close(fd)
