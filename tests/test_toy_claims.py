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
signed-rank test; every test at ALPHA = 0.05, one-sided. The toy engines start once for this module (0.25 GiB KV
cache each); every run goes through gsi.run.run, once per module, and the claims that share a run read it.

Problems per run (PROBLEMS): 40, 100 or 200 held-out problems, the smallest of these at which every claim that reads
the run keeps its power (200 where none does). The criterion: resampling (with replacement) N problems from runs at
200, the claim's assertion holds in >= 99% of 200 resamples. `python bench/toy_claims_power.py DIR` prints that
power per claim and N from runs kept with GSI_TOY_CLAIM_DIR=DIR GSI_TOY_CLAIM_PROBLEMS=200 (docs/benchmarks.md has
the table). Measured on the v5 build: GSI >= soft BoN pi_S + 10 has power 1.0 at 40 problems, the pi_B-token claim
1.0 at 20, GSI's acceptance falling with its threshold 1.0 at 100 (those runs at 100; the fallback-off run is exact,
not statistical: it needs only steps under the threshold, 40); GSI > RSD 0.80 at 100 and 1.0 at 200. Weak effects,
whose runs stay at 200 and whose tests pass here but would not on every sample of problems: soft BoN pi_S >= greedy
pi_S + 15 (exactly +15.0 at 200, power 0.48-0.52 at every N), beam > greedy pi_S (0.875 at 200), DVTS > greedy
pi_S (0.575), the rising weighted vote (0.525). A claim between runs of different sizes is tested on the problems
both ran (dataset.limit takes the first N, so that is the smaller run's). GSI_TOY_CLAIM_PROBLEMS=N runs everything
at N instead. The toy models are built on first use (gsi/models/toy.py, then cached); the README's toy section
lists what these tests printed (v5 build, default sizes).
"""

from __future__ import annotations

import importlib.util
import json
import os

from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.toy]

ALPHA = 0.05
BASE = ("+experiment=toy_demo",)
# held-out problems per run (the module docstring's power criterion); runs not named here: DEFAULT_PROBLEMS
PROBLEMS = {"bon_big": 100, "gsi_threshold_0.3": 100, "gsi_threshold_0.9": 100,
            "rsd_delta_0.3": 40, "rsd_delta_0.9": 40, "gsi_no_fallback": 40}
DEFAULT_PROBLEMS = 200  # gsi, rsd, bon_small, greedy_small, dvts, beam, pool
UNIFORM = int(os.environ.get("GSI_TOY_CLAIM_PROBLEMS", "0"))


def problems(name: str) -> int:
    return UNIFORM or PROBLEMS.get(name, DEFAULT_PROBLEMS)
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


def test_engine_verifier_equals_the_evaluations(toy_engines):
    """The reward role (vLLM, gsi.engines.verifier, one request per step) gives the scores gsi.models.toy.evaluate
    measures with transformers (gsi.models.toy_eval.prm_scores, one forward pass), so the two cannot drift: on
    held-out problems' correct solutions and their corruptions, every step."""
    import random

    import torch
    from transformers import AutoModelForCausalLM

    from gsi.data import arith
    from gsi.engines.base import RewardRequest
    from gsi.models.toy import toy_paths
    from gsi.models.toy_eval import prm_scores
    from gsi.models.toy_recipe import Encoder

    torch.set_num_threads(1)
    verifier = AutoModelForCausalLM.from_pretrained(toy_paths()["reward"]).eval()
    enc = Encoder(toy_engines.tokenizer)
    rng, solutions = random.Random(5), []
    for p in arith.generate(6, seed=5, min_ops=2, max_ops=6, split="test"):
        solutions += [(p.text, p.steps()), (p.text, arith.corrupt(p, rng)[0])]
    reqs = [RewardRequest(text, steps[: k + 1]) for text, steps in solutions for k in range(len(steps))]
    got = toy_engines.reward.reward(reqs)
    want = [s for text, steps in solutions for s in prm_scores(verifier, enc, text, steps)]
    assert got == pytest.approx(want, abs=2e-3)
    assert min(want) < 0.1 and max(want) > 0.9  # the steps span the scale: a real comparison


@pytest.fixture(scope="module")
def runs(toy_engines, tmp_path_factory):
    """Run a configuration once per module: name -> (summary, {problem id: record}, run folder)."""
    from gsi.config.schema import compose_config
    from gsi.run import run

    cache: dict = {}
    keep = os.environ.get("GSI_TOY_CLAIM_DIR")  # for bench/toy_claims_power.py
    root = Path(keep) if keep else tmp_path_factory.mktemp("toy_claims")

    def get(name: str, *overrides: str):
        if name not in cache:
            out, n = root / name, problems(name)
            summary = run(compose_config(*BASE, f"dataset.limit={n}", *overrides), out, engines=toy_engines)
            records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line]
            assert len(records) == n
            cache[name] = (summary, {r["id"]: r for r in records}, out)
        return cache[name]

    return get


# The claims' rules, on the records ({problem id: record}) of two runs or one; each returns (holds, what it measured).
# bench/toy_claims_power.py applies the same rules to resampled problems.

def common(a: dict, b: dict) -> list:
    """The problems both runs ran: the smaller run's (dataset.limit takes the first N of the same held-out set)."""
    ids = sorted(set(a) & set(b))
    assert len(ids) == min(len(a), len(b)), "the runs' problems are not nested"
    return ids


def _paired(a: dict, b: dict, key, ids=None):
    ids = common(a, b) if ids is None else ids
    return np.array([key(a[i]) for i in ids], dtype=float), np.array([key(b[i]) for i in ids], dtype=float)


def more_accurate(a: dict, b: dict, margin: float, ids=None) -> tuple[bool, str]:
    """a's accuracy - b's >= margin, and McNemar's exact one-sided test that a is not more accurate rejects."""
    from scipy.stats import binomtest

    x, y = _paired(a, b, lambda r: r["correct"], ids)
    wins, losses = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    p = binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else 1.0
    diff = float(x.mean() - y.mean())
    # 84/200 - 54/200 is 0.1499...97 in floats: a difference equal to the margin must not fall short of it
    return p < ALPHA and diff >= margin - 1e-9, (f"{x.mean():.3f} vs {y.mean():.3f} ({len(x)} problems): difference "
                                          f"{100 * diff:+.1f} points (claim: >= {100 * margin:.0f}), {wins} wins, "
                                          f"{losses} losses, McNemar one-sided p = {p:.2e}")


def fewer_big_tokens(gsi: dict, bon_big: dict, ids=None) -> tuple[bool, str]:
    """GSI within 3 points of soft best-of-n with pi_B (or above), with <= 40% of its pi_B generated tokens
    (Wilcoxon one-sided on the per-problem counts)."""
    from scipy.stats import wilcoxon

    g, b = _paired(gsi, bon_big, lambda r: r["tokens"]["big"]["generated"], ids)
    acc_g, acc_b = _paired(gsi, bon_big, lambda r: r["correct"], ids)
    p = wilcoxon(g, b, alternative="less").pvalue
    share = g.sum() / b.sum()
    return (acc_g.mean() >= acc_b.mean() - 0.03 and share <= 0.40 and p < ALPHA,
            f"GSI {acc_g.mean():.3f} vs soft BoN pi_B {acc_b.mean():.3f} ({len(g)} problems); pi_B tokens generated: "
            f"GSI {int(g.sum())} = {100 * share:.0f}% of soft BoN pi_B's {int(b.sum())}; Wilcoxon one-sided p = {p:.2e}")


def rises_with_n(pool: dict, rule: str, seed: int, ids=None) -> tuple[bool, str]:
    """The rule's accuracy at n = 1, 2, 4, 8 on one response-level pool: never down by more than 2 points from one
    n to the next, and higher at 8 than at 1."""
    from experiments.pool_curves import curves

    c = curves([pool[i] for i in (sorted(pool) if ids is None else ids)], seed, rules=[rule])[rule]
    ok = all(c[m] >= c[n] - 0.02 for n, m in zip(sorted(c), sorted(c)[1:])) and c[8] > c[1]
    return ok, f"{rule} {({n: round(a, 3) for n, a in c.items()})}"


def _acceptance(rec: dict) -> float:
    return rec["accepted_steps"] / max(rec["steps"], 1)


def acceptance_falls(lo: dict, hi: dict, ids=None) -> tuple[bool, str]:
    """Acceptance (accepted steps / steps, over all problems) lower at the higher threshold, and the Wilcoxon
    one-sided test on the per-problem acceptance rejects."""
    from scipy.stats import wilcoxon

    ids = common(lo, hi) if ids is None else ids
    rate = [sum(r[i]["accepted_steps"] for i in ids) / max(sum(r[i]["steps"] for i in ids), 1) for r in (lo, hi)]
    a, b = _paired(lo, hi, _acceptance, ids)
    p = wilcoxon(a, b, alternative="greater").pvalue
    return rate[0] > rate[1] and p < ALPHA, (f"acceptance {rate[0]:.3f} at the low threshold, {rate[1]:.3f} at the "
                                             f"high ({len(ids)} problems); Wilcoxon one-sided p = {p:.2e}")


# Claims that do not hold in this world are strict xfails with the measured figures (v5 build, the verifier PRM:
# README, toy section), so that they turn red when they start to hold.
MEASURED = "measured on the v5 build (verifier PRM, AUC 1.00 on held-out twins) at the default run sizes: "


@pytest.mark.parametrize("better,worse,overrides_better,overrides_worse,margin", [
    ("bon_small", "greedy_small", BON_SMALL, GREEDY_SMALL, 0.15),  # v4: +11 points (a strict xfail); v5: +15.0
    ("gsi", "rsd", ("method=gsi",), ("method=rsd",), 0.0),
    ("gsi", "bon_small", ("method=gsi",), BON_SMALL, 0.10),
    ("beam", "greedy_small", ("method=beam", "method.n=4", "method.width=2"), GREEDY_SMALL, 0.0),
    ("dvts", "greedy_small", ("method=dvts", "method.n=4", "method.width=2"), GREEDY_SMALL, 0.0),
])
def test_more_accurate(runs, better, worse, overrides_better, overrides_worse, margin):
    _, a, _ = runs(better, *overrides_better)
    _, b, _ = runs(worse, *overrides_worse)
    ok, text = more_accurate(a, b, margin)
    print(f"{better} vs {worse}: {text}")
    assert ok, text


def test_gsi_near_soft_best_of_n_with_big_for_fewer_big_tokens(runs):
    _, gsi, _ = runs("gsi", "method=gsi")
    _, bon, _ = runs("bon_big", *BON_BIG)
    ok, text = fewer_big_tokens(gsi, bon)
    print(text)
    assert ok, text


POOL = ("method=bon", "method.policy=small", "method.level=response", "method.selection=hard", "method.n=8")


@pytest.mark.parametrize("rule", [
    pytest.param("bon-last", marks=pytest.mark.xfail(strict=True, reason=MEASURED + "hard best-of-n by the last "
                                                     "step's reward 30.1%, 29.4%, 28.1%, 29.0% at n = 1, 2, 4, 8: the "
                                                     "last step (the boxed answer) is checked against the step before "
                                                     "it, so it scores high after an earlier slip too")),
    "bon-min",  # the response's weakest step: sees the slip that the last step hides
    "weighted-last",
])
def test_best_of_n_and_weighted_vote_rise_with_n(runs, rule):
    """One response-level pool of 8 pi_S responses per problem; the curves at n = 1, 2, 4, 8 from it."""
    from gsi.config.schema import compose_config

    _, recs, _ = runs("pool", *POOL)
    ok, text = rises_with_n(recs, rule, int(compose_config(*BASE).seed))
    print(text)
    assert ok, text


THRESHOLDS = [
    pytest.param("rsd", "delta", 0.3, 0.9, marks=pytest.mark.xfail(strict=True, reason=MEASURED + "RSD's acceptance "
                 "83.1% at delta 0.3 and at 0.9 (40 problems, the same drafts accepted): the verifier scores every "
                 "draft near 0 or near 1, none in between")),
    ("gsi", "threshold", 0.3, 0.9),
]


@pytest.mark.parametrize("method,key,low,high", THRESHOLDS)
def test_acceptance_falls_as_threshold_rises(runs, method, key, low, high):
    _, lo, _ = runs(f"{method}_{key}_{low}", f"method={method}", f"method.{key}={low}")
    _, hi, _ = runs(f"{method}_{key}_{high}", f"method={method}", f"method.{key}={high}")
    ok, text = acceptance_falls(lo, hi)
    print(f"{method} {key} {low} -> {high}: {text}")
    assert ok, text


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
