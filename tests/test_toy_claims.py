"""The papers' claims, tested on the toy world (model=toy, dataset=arith) at the demo's settings (+experiment=toy_demo:
n = 4, beta = 20) with one-sided tests on paired problems. A claim with a margin ("+15 points") is tested as: the
observed difference reaches the margin, and the one-sided paired test against no difference is significant.

- soft best-of-n with pi_S >= greedy pi_S + 15 points (the PRM guides);
- GSI > RSD, and GSI >= soft best-of-n with pi_S + 10 points;
- GSI within 3 points of soft best-of-n with pi_B (or above it), with <= 40% of its pi_B generated tokens;
- best-of-n and weighted-vote curves rise with n (experiments/pool_curves.py on one response-level pool);
- beam search and DVTS above greedy pi_S;
- RSD's and GSI's acceptance falls as their threshold rises;
- GSI with fallback off is importance-weighted soft best-of-n from pi_S: every step's choice is the draw of
  softmax(beta r + log pi_B - log pi_S) with the run's own random stream, computed here from the trace alone.

Accuracy differences use McNemar's exact test on the discordant problems; tokens and acceptance the Wilcoxon
signed-rank test. The toy engines start once for this module (0.25 GiB KV cache each) and every run goes through
gsi.run.run. GSI_TOY_CLAIM_PROBLEMS sets the number of held-out problems (default 200). The toy models are built on
first use (gsi/models/toy.py, then cached); the README's toy section lists what these tests printed.
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.toy]

N = int(os.environ.get("GSI_TOY_CLAIM_PROBLEMS", "200"))
ALPHA = 0.05
BASE = ("+experiment=toy_demo", f"dataset.limit={N}")
GREEDY_SMALL = ("method=baseline", "method.policy=small", "method.greedy=true", "method.n=1")
BON_SMALL = ("method=bon", "method.policy=small", "method.selection=soft")
BON_BIG = ("method=bon", "method.policy=big", "method.selection=soft")


@pytest.fixture(scope="module")
def toy_engines():
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not importable in this environment (install the CPU build: scripts/setup.sh)")
    from gsi.config.schema import compose_config
    from gsi.engines.registry import build_engines

    engines = build_engines(compose_config(*BASE))
    try:
        yield engines
    finally:
        engines.close()


@pytest.fixture(scope="module")
def runs(toy_engines, tmp_path_factory):
    """Run a configuration once per module: name -> (summary, {problem id: record}, run folder)."""
    from gsi.config.schema import compose_config
    from gsi.run import run

    cache: dict = {}
    root = tmp_path_factory.mktemp("toy_claims")

    def get(name: str, *overrides: str):
        if name not in cache:
            out = root / name
            summary = run(compose_config(*BASE, *overrides), out, engines=toy_engines)
            records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line]
            assert len(records) == N
            cache[name] = (summary, {r["id"]: r for r in records}, out)
        return cache[name]

    return get


def _paired(a: dict, b: dict, key):
    ids = sorted(a)
    assert ids == sorted(b)
    return np.array([key(a[i]) for i in ids], dtype=float), np.array([key(b[i]) for i in ids], dtype=float)


def _mcnemar_greater(a: dict, b: dict) -> tuple[float, float, int, int]:
    """(accuracy difference a - b, one-sided McNemar p that a is not more accurate, wins, losses)."""
    from scipy.stats import binomtest

    x, y = _paired(a, b, lambda r: r["correct"])
    wins, losses = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    p = binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else 1.0
    return float(x.mean() - y.mean()), p, wins, losses


def _acceptance(rec: dict) -> float:
    return rec["accepted_steps"] / max(rec["steps"], 1)


# Claims that do not hold in this world are strict xfails with the measured figures (the toy PRM does not check the
# arithmetic yet: README, toy section), so that they turn red when they start to hold.
PRM_DOES_NOT_CHECK = "the toy PRM does not check the arithmetic (AUC 0.54 on held-out twins); measured at 200: "


@pytest.mark.parametrize("better,worse,overrides_better,overrides_worse,margin", [
    pytest.param("bon_small", "greedy_small", BON_SMALL, GREEDY_SMALL, 0.15, marks=pytest.mark.xfail(
        strict=True, reason=PRM_DOES_NOT_CHECK + "soft BoN pi_S 40.5% vs greedy pi_S 38.5%, p = 0.36")),
    ("gsi", "rsd", ("method=gsi",), ("method=rsd",), 0.0),
    ("gsi", "bon_small", ("method=gsi",), BON_SMALL, 0.10),
    pytest.param("beam", "greedy_small", ("method=beam", "method.n=4", "method.width=2"), GREEDY_SMALL, 0.0,
                 marks=pytest.mark.xfail(strict=True, reason=PRM_DOES_NOT_CHECK + "beam 39.5% vs greedy pi_S "
                                                                                 "38.5%, p = 0.45")),
    ("dvts", "greedy_small", ("method=dvts", "method.n=4", "method.width=2"), GREEDY_SMALL, 0.0),
])
def test_more_accurate(runs, better, worse, overrides_better, overrides_worse, margin):
    a_s, a, _ = runs(better, *overrides_better)
    b_s, b, _ = runs(worse, *overrides_worse)
    diff, p, wins, losses = _mcnemar_greater(a, b)
    print(f"{better} {a_s['accuracy']:.3f} vs {worse} {b_s['accuracy']:.3f} ({N} problems): difference "
          f"{100 * diff:+.1f} points (claim: > {100 * margin:.0f}), {wins} wins, {losses} losses, McNemar one-sided "
          f"p = {p:.2e}")
    assert p < ALPHA and diff >= margin


def test_gsi_near_soft_best_of_n_with_big_for_fewer_big_tokens(runs):
    from scipy.stats import wilcoxon

    gsi_s, gsi, _ = runs("gsi", "method=gsi")
    bon_s, bon, _ = runs("bon_big", *BON_BIG)
    g, b = _paired(gsi, bon, lambda r: r["tokens"]["big"]["generated"])
    p = wilcoxon(g, b, alternative="less").pvalue
    share = g.sum() / b.sum()
    print(f"GSI {gsi_s['accuracy']:.3f} vs soft BoN pi_B {bon_s['accuracy']:.3f}; pi_B tokens generated: GSI "
          f"{int(g.sum())} = {100 * share:.0f}% of soft BoN pi_B's {int(b.sum())}; Wilcoxon one-sided p = {p:.2e}")
    assert gsi_s["accuracy"] >= bon_s["accuracy"] - 0.03
    assert share <= 0.40 and p < ALPHA


@pytest.mark.parametrize("rule", [
    pytest.param("bon-last", marks=pytest.mark.xfail(strict=True, reason=PRM_DOES_NOT_CHECK + "hard best-of-n by "
                                                     "the last step's reward 40.5%, 41.5%, 38.5%, 37.0% at n = 1, 2, "
                                                     "4, 8")),
    "weighted-last",
])
def test_best_of_n_and_weighted_vote_rise_with_n(runs, rule):
    """One response-level pool of 8 pi_S responses per problem; the curves at n = 1, 2, 4, 8 from it."""
    from experiments.pool_curves import curves
    from gsi.config.schema import compose_config

    summary, recs, out = runs("pool", "method=bon", "method.policy=small", "method.level=response",
                              "method.selection=hard", "method.n=8")
    c = curves(list(recs.values()), int(compose_config(*BASE).seed), rules=[rule])[rule]
    print(rule, {n: round(a, 3) for n, a in c.items()})
    assert all(c[m] >= c[n] - 0.02 for n, m in zip(sorted(c), sorted(c)[1:])), (rule, c)
    assert c[8] > c[1], (rule, c)


@pytest.mark.parametrize("method,key,low,high", [("rsd", "delta", 0.3, 0.9), ("gsi", "threshold", 0.3, 0.9)])
def test_acceptance_falls_as_threshold_rises(runs, method, key, low, high):
    from scipy.stats import wilcoxon

    lo_s, lo, _ = runs(f"{method}_{key}_{low}", f"method={method}", f"method.{key}={low}")
    hi_s, hi, _ = runs(f"{method}_{key}_{high}", f"method={method}", f"method.{key}={high}")
    a, b = _paired(lo, hi, _acceptance)
    p = wilcoxon(a, b, alternative="greater").pvalue
    print(f"{method} acceptance: {key}={low}: {lo_s['acceptance_rate']:.3f}, {key}={high}: "
          f"{hi_s['acceptance_rate']:.3f}; Wilcoxon one-sided p = {p:.2e}")
    assert lo_s["acceptance_rate"] > hi_s["acceptance_rate"] and p < ALPHA


def test_gsi_without_fallback_is_importance_weighted_soft_best_of_n(runs):
    """Same draws (the run's candidates and its 'select' stream), same choices as IW soft best-of-n."""
    from gsi.runtime import seeding
    from gsi.config.schema import compose_config

    cfg = compose_config(*BASE, "method=gsi", "method.fallback=false", "trace=true")
    summary, recs, _ = runs("gsi_no_fallback", "method=gsi", "method.fallback=false", "trace=true")
    beta, n_steps, rejected = float(cfg.method.beta), 0, 0
    for rec in recs.values():
        assert rec["tokens"]["big"]["generated"] == 0 and rec["steps_by"]["big"] == 0
        assert len(rec["trace"]) == rec["steps"]
        for step in rec["trace"]:
            c = step["candidates"]
            assert len(c) == cfg.method.n
            logits = np.array([beta * x["r"] + x["logp_big"] - x["logp_small"] for x in c])
            p = np.exp(logits - logits.max())
            p /= p.sum()
            np.testing.assert_allclose([x["prob"] for x in c], p, rtol=1e-6, atol=1e-9)
            draw = seeding.rng(int(cfg.seed), rec["id"], step["step"], "select").choice(len(p), p=p)
            assert step["chosen"] == draw
            # `accepted` records the threshold test; with fallback off the step is kept whatever it says (pi_B
            # wrote nothing, asserted above)
            assert step["accepted"] == (step["tilted"] > cfg.method.threshold)
            rejected += not step["accepted"]
            n_steps += 1
    print(f"fallback off: {n_steps} steps, {rejected} of them under the threshold kept, accuracy "
          f"{summary['accuracy']:.3f}")
    assert rejected > 0  # the threshold did bite, so fallback off was exercised
