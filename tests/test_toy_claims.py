"""The papers' claims, tested on the toy world (model=toy, dataset=arith) with one-sided tests on paired problems.

- GSI's accuracy is above soft best-of-n with pi_S at equal n (McNemar's exact test on the discordant problems).
- GSI spends fewer pi_B tokens than soft best-of-n with pi_B (Wilcoxon signed-rank on per-problem tokens).
- RSD's and GSI's acceptance falls as their threshold rises (Wilcoxon on per-problem acceptance rates).
- GSI with fallback off is importance-weighted soft best-of-n from pi_S: every step's choice is the draw of
  softmax(beta r + log pi_B - log pi_S) with the run's own random stream, computed here from the trace alone.

The toy engines start once for this module (0.25 GiB KV cache each) and every run goes through gsi.run.run.
GSI_TOY_CLAIM_PROBLEMS sets the number of held-out problems (default 120). The toy models are built on first use
(~4.5 min on 2 cores, then cached); the README's "The main job" lists what these tests printed.
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.vllm

N = int(os.environ.get("GSI_TOY_CLAIM_PROBLEMS", "120"))
ALPHA = 0.05
BASE = ("+experiment=toy_demo", f"dataset.limit={N}")


@pytest.fixture(scope="module")
def toy_engines():
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not importable in this environment (install the CPU build: scripts/setup.sh)")
    from gsi.config import compose_config
    from gsi.engines.registry import build_engines

    engines = build_engines(compose_config(*BASE))
    try:
        yield engines
    finally:
        engines.close()


@pytest.fixture(scope="module")
def runs(toy_engines, tmp_path_factory):
    """Run a configuration once per module: name -> (summary, {problem id: record})."""
    from gsi.config import compose_config
    from gsi.run import run

    cache: dict = {}
    root = tmp_path_factory.mktemp("toy_claims")

    def get(name: str, *overrides: str):
        if name not in cache:
            out = root / name
            summary = run(compose_config(*BASE, *overrides), out, engines=toy_engines)
            records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line]
            assert len(records) == N
            cache[name] = (summary, {r["id"]: r for r in records})
        return cache[name]

    return get


def _paired(a: dict, b: dict, key):
    ids = sorted(a)
    assert ids == sorted(b)
    return np.array([key(a[i]) for i in ids], dtype=float), np.array([key(b[i]) for i in ids], dtype=float)


def _acceptance(rec: dict) -> float:
    return rec["accepted_steps"] / max(rec["steps"], 1)


def test_gsi_more_accurate_than_soft_best_of_n_with_small(runs):
    from scipy.stats import binomtest

    gsi_s, gsi = runs("gsi", "method=gsi")
    bon_s, bon = runs("bon_small", "method=bon", "method.policy=small", "method.selection=soft")
    g, b = _paired(gsi, bon, lambda r: r["correct"])
    wins, losses = int(((g == 1) & (b == 0)).sum()), int(((g == 0) & (b == 1)).sum())
    p = binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue
    print(f"GSI {gsi_s['accuracy']:.3f} vs soft BoN pi_S {bon_s['accuracy']:.3f} (n=4, {N} problems): "
          f"{wins} wins, {losses} losses, McNemar one-sided p = {p:.2e}")
    assert p < ALPHA


def test_gsi_spends_fewer_big_tokens_than_soft_best_of_n_with_big(runs):
    from scipy.stats import wilcoxon

    gsi_s, gsi = runs("gsi", "method=gsi")
    bon_s, bon = runs("bon_big", "method=bon", "method.policy=big", "method.selection=soft")
    g, b = _paired(gsi, bon, lambda r: r["tokens"]["big"]["generated"])
    p = wilcoxon(g, b, alternative="less").pvalue
    print(f"pi_B tokens generated: GSI {int(g.sum())} vs soft BoN pi_B {int(b.sum())} (accuracy "
          f"{gsi_s['accuracy']:.3f} vs {bon_s['accuracy']:.3f}); Wilcoxon one-sided p = {p:.2e}")
    assert g.sum() < b.sum() and p < ALPHA


@pytest.mark.parametrize("method,key,low,high", [("rsd", "delta", 0.3, 0.9), ("gsi", "threshold", 0.3, 0.9)])
def test_acceptance_falls_as_threshold_rises(runs, method, key, low, high):
    from scipy.stats import wilcoxon

    lo_s, lo = runs(f"{method}_{key}_{low}", f"method={method}", f"method.{key}={low}")
    hi_s, hi = runs(f"{method}_{key}_{high}", f"method={method}", f"method.{key}={high}")
    a, b = _paired(lo, hi, _acceptance)
    p = wilcoxon(a, b, alternative="greater").pvalue
    print(f"{method} acceptance: {key}={low}: {lo_s['acceptance_rate']:.3f}, {key}={high}: "
          f"{hi_s['acceptance_rate']:.3f}; Wilcoxon one-sided p = {p:.2e}")
    assert lo_s["acceptance_rate"] > hi_s["acceptance_rate"] and p < ALPHA


def test_gsi_without_fallback_is_importance_weighted_soft_best_of_n(runs):
    """Same draws (the run's candidates and its 'select' stream), same choices as IW soft best-of-n."""
    from gsi import seeding
    from gsi.config import compose_config

    cfg = compose_config(*BASE, "method=gsi", "method.fallback=false", "trace=true")
    summary, recs = runs("gsi_no_fallback", "method=gsi", "method.fallback=false", "trace=true")
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
