"""How busy each role was: its engine's busy time (RoleStats.busy_s) against the step loop's wall time.

Lock-step rounds take close to the SUM of the roles' busy times (one role works at a time); the async runtime
aims at the busiest role's busy time (that role never waits). `wall_over_busiest` says how far
a run is from that bound (1.0 = the busiest role never idled).
"""

from __future__ import annotations


def engine_delta(after: dict[str, dict], before: dict[str, dict] | None) -> dict[str, dict]:
    """Each role's counters since `before` (engines shared by several runs count every run's calls)."""
    before = before or {}
    return {role: {k: v - before.get(role, {}).get(k, 0) if isinstance(v, (int, float)) and not isinstance(v, bool)
                   else v for k, v in s.items()} for role, s in after.items()}


def _busy(engine_stats: dict[str, dict], before: dict[str, dict] | None) -> dict[str, float]:
    return {role: float(s.get("busy_s", 0.0)) for role, s in engine_delta(engine_stats, before).items()}


def utilisation(engine_stats: dict[str, dict], wall_s: float, before: dict[str, dict] | None = None) -> dict:
    """`before`: the stats when the wall clock started (engines shared with earlier work count only the rest)."""
    busy = _busy(engine_stats, before)
    if wall_s <= 0 or not busy:
        return {}
    busiest = max(busy, key=busy.get)
    return {
        "wall_s": wall_s,
        "busy_s": busy,
        "busy_fraction": {role: b / wall_s for role, b in busy.items()},
        "busiest_role": busiest,
        "wall_over_busiest": wall_s / busy[busiest] if busy[busiest] > 0 else None,
        "wall_over_sum": wall_s / sum(busy.values()) if sum(busy.values()) > 0 else None,
    }


def with_busy_fraction(engine_stats: dict[str, dict], wall_s: float,
                       before: dict[str, dict] | None = None) -> dict[str, dict]:
    """engine_stats with each role's busy fraction so far (for live progress logging)."""
    busy = _busy(engine_stats, before)
    return {role: {**s, "busy_fraction": busy[role] / wall_s if wall_s > 0 else 0.0}
            for role, s in engine_stats.items()}
