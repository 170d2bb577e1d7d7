"""What each session of a run measured, kept across resumes: `<run folder>/sessions.jsonl`, one line per session
that ran the step loop (also one that was interrupted, preempted or whose engine died).

summary.json's `measured` covers the last session only; a run preempted twice on a cluster has three sessions,
and its step loop and executed FLOPs are their sums (`measured.all_sessions`). The work of a problem that was in
flight when a session stopped is in that session's numbers and is done again by the next one: the sums are what
the run cost, not what an uninterrupted run would have.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

FILE = "sessions.jsonl"


def record(out: Path, *, step_loop_s: float, problems_run: int, engine_start_s: float | None,
           flops_executed: dict[str, float]) -> None:
    """Append this session's line. Never fails the run (a full disk is reported by the run itself)."""
    line = {"step_loop_s": step_loop_s, "problems_run": problems_run, "engine_start_s": engine_start_s,
            "flops_executed": flops_executed}
    try:
        with open(Path(out) / FILE, "a") as f:
            f.write(json.dumps(line) + "\n")
    except OSError as e:
        log.warning("could not record this session's measurements in %s (%s)", Path(out) / FILE, e)


def totals(out: Path) -> dict:
    """Sums over the sessions recorded in `out` (unreadable lines are skipped with a warning)."""
    path = Path(out) / FILE
    sums = {"sessions": 0, "step_loop_s": 0.0, "problems_run": 0, "flops_executed": {}}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return sums
    for i, text in enumerate(lines, 1):
        try:
            rec = json.loads(text)
            loop, problems, flops = float(rec["step_loop_s"]), int(rec["problems_run"]), rec["flops_executed"]
        except (ValueError, KeyError, TypeError):
            log.warning("%s:%d is not a session record; left out of the sums", path, i)
            continue
        sums["sessions"] += 1
        sums["step_loop_s"] += loop
        sums["problems_run"] += problems
        for role, f in (flops or {}).items():
            sums["flops_executed"][role] = sums["flops_executed"].get(role, 0.0) + float(f)
    return sums
