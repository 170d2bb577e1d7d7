"""The accuracy interval of a configuration run with several seeds: over problems, not over seed means.

A benchmark's uncertainty is mostly which problems it has; the seeds of one configuration answer the same problems,
so their outcomes on a problem are correlated and must not count as independent draws. A t-interval over 2-3 seed
means ignores the problems (two seeds at 17.5% and 30%: [0, 100]; two seeds at 0/3: [0, 0]). What is printed:

- `bootstrap`: a percentile bootstrap over problems, each problem carrying its mean over the seeds (seeds are
  clustered within their problem), widened where needed to
- the Wilson interval of the pooled accuracy with the problem count as n (what one seed's Wilson interval is at
  that accuracy): pooling seeds never gives an interval narrower than one seed would, and an all-wrong or all-right
  configuration still gets a non-zero width.

One seed: its Wilson interval. Without per-problem results (runs read from W&B): the Wilson interval over problems.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `p` observed on `n` trials (p need not be k/n for an integer k:
    a mean over seeds)."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def problem_bootstrap(per_seed: list[dict[str, bool]], *, n_boot: int = 4000, seed: int = 0
                      ) -> tuple[float, float, float, int]:
    """(mean, low, high, problems) over the problems any seed ran: each problem's mean over the seeds that ran
    it, resampled with replacement (a fixed generator seed: the same report every time)."""
    import numpy as np

    outcomes: dict[str, list[bool]] = {}
    for correct in per_seed:
        for pid, ok in correct.items():
            outcomes.setdefault(str(pid), []).append(bool(ok))
    means = np.array([sum(v) / len(v) for _, v in sorted(outcomes.items())], dtype=np.float64)
    if len(means) == 0:
        return float("nan"), 0.0, 1.0, 0
    idx = np.random.default_rng(seed).integers(0, len(means), size=(n_boot, len(means)))
    boot = means[idx].mean(axis=1)
    return float(means.mean()), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)), len(means)


def pooled_interval(accuracy: float, n_problems: int, per_seed: list[dict[str, bool]] | None
                    ) -> tuple[float, float, str]:
    """(low, high, name) for `accuracy` (the mean over seeds) of a configuration; see the module docstring."""
    lo, hi = wilson(accuracy, n_problems)
    if not per_seed:
        return lo, hi, "Wilson over problems"
    _, b_lo, b_hi, _ = problem_bootstrap(per_seed)
    return min(lo, b_lo), max(hi, b_hi), "problem bootstrap (seeds clustered) ∪ Wilson"
