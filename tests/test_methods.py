"""The methods on exact-table engines: every probability is known, so the rules are checked statistically."""

from __future__ import annotations

import math

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats

from gsi.config.schema import BaselineConfig, BoNConfig, GSIConfig, RSDConfig
from gsi.engines.table import table_engines
from gsi.methods import build_method
from gsi.methods.base import StepContext, soft_choice
from gsi.runtime.scheduler import run_steps
from gsi.runtime.state import ProblemState

PI_S = np.array([0.4, 0.3, 0.2, 0.1])
PI_B = np.array([0.1, 0.2, 0.3, 0.4])
R = np.array([0.2, 0.9, 0.5, 0.7])


def tilted(pi, beta):
    w = pi * np.exp(beta * R)
    return w / w.sum()


def run_table(method_cfg, *, problems=2000, max_steps=1, batch_size=4096, seed=0, pi_s=PI_S, pi_b=PI_B,
              eos_step=None, texts=None):
    engines = table_engines(pi_s, pi_b, R, eos_step=eos_step, texts=texts)
    ctx = StepContext(seed=seed, max_step_tokens=8, max_steps=max_steps, window=10_000, trace=True)
    method = build_method(OmegaConf.structured(method_cfg), engines, ctx)
    states = [ProblemState(index=i, id=f"p{i}", problem="x", reference="0", prompt_ids=[0], context=[0])
              for i in range(problems)]
    finished = []
    run_steps(states, method, ctx, batch_size=batch_size, on_finish=lambda s, t: finished.append(s))
    assert sorted(s.index for s in finished) == list(range(problems))  # every problem once
    return states, engines


def first_steps(states):
    return np.array([s.steps[0].token_ids[0] for s in states])


def kl(p, q):
    q = np.clip(q, 1e-12, None)
    return float(np.sum(p * np.log(p / q)))


def test_soft_choice_follows_softmax():
    scores = np.array([1.0, -0.5, 2.0, 0.3])
    p = np.exp(scores - scores.max())
    p /= p.sum()
    rng = np.random.default_rng(0)
    counts = np.bincount([soft_choice(scores, rng)[0] for _ in range(20000)], minlength=4)
    assert stats.chisquare(counts, 20000 * p).pvalue > 1e-3
    # The same test rejects a wrong distribution: it has power.
    assert stats.chisquare(counts, 20000 * np.full(4, 0.25)).pvalue < 1e-6


def test_gsi_selection_probabilities_are_the_tilted_importance_weights():
    beta = 3.0
    states, _ = run_table(GSIConfig(beta=beta, n=4, threshold=-1e9), problems=3000)
    observed = np.zeros(4)
    expected = np.zeros(4)
    for s in states:
        tr = s.trace[0]
        cands = tr["candidates"]
        # Recompute the selection probabilities from the tables alone, independently of the method
        # (each step type has its own pi_S, so log pi_S identifies the candidate).
        types = [int(np.argmin(np.abs(PI_S - math.exp(c["logp_small"])))) for c in cands]
        score = np.array([beta * R[k] + math.log(PI_B[k]) - math.log(PI_S[k]) for k in types])
        want = np.exp(score - score.max())
        want /= want.sum()
        assert np.allclose([c["prob"] for c in cands], want, atol=1e-12)
        assert [c["r"] for c in cands] == [R[k] for k in types]
        observed[s.steps[0].token_ids[0]] += 1
        for k, pk in zip(types, want):
            expected[k] += pk
    # Chosen step types against their conditional expectations (chi-square).
    assert stats.chisquare(observed, expected).pvalue > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_gsi_approaches_tilted_policy_as_n_grows(beta):
    target = tilted(PI_B, beta)
    kls = []
    for n in (1, 4, 32):
        states, _ = run_table(GSIConfig(beta=beta, n=n, threshold=-1e9), problems=4000)
        emp = np.bincount(first_steps(states), minlength=4) / len(states)
        kls.append(kl(target, emp))
    assert kls[0] > kls[1] > kls[2], kls
    assert kls[2] < 0.01, kls
    assert kls[0] > 5 * kls[2]


def test_gsi_accepts_exactly_when_tilted_reward_is_above_threshold():
    beta, u = 3.0, 0.5
    states, engines = run_table(GSIConfig(beta=beta, n=4, threshold=u), problems=1500)
    n_rej = 0
    for s in states:
        tr = s.trace[0]
        c = tr["candidates"][tr["chosen"]]
        want_tilted = c["r"] + (c["logp_big"] - c["logp_small"]) / beta
        assert tr["tilted"] == pytest.approx(want_tilted)
        assert tr["accepted"] == (want_tilted > u) == s.steps[0].accepted
        assert s.steps[0].source == ("small" if tr["accepted"] else "big")
        if not tr["accepted"]:
            n_rej += 1
            fb = tr["fallback"]
            want = np.exp(beta * np.array([x["r"] for x in fb["candidates"]]))
            assert np.allclose([x["prob"] for x in fb["candidates"]], want / want.sum())
    assert 0 < n_rej < len(states)  # both branches were exercised
    # pi_B is called only for the rejected problems, in one batched call.
    assert engines.big.stats.calls == 2  # one score call for all drafts, one generate call for the rejected
    assert engines.big.stats.generated_tokens == 4 * n_rej


def test_gsi_raw_threshold_and_no_fallback():
    states, engines = run_table(GSIConfig(beta=3.0, n=4, threshold=0.6, threshold_on="raw"), problems=500)
    for s in states:
        tr = s.trace[0]
        assert tr["accepted"] == (tr["candidates"][tr["chosen"]]["r"] > 0.6)
    states, engines = run_table(GSIConfig(beta=3.0, n=4, threshold=2.0, fallback=False), problems=200)
    assert engines.big.stats.generated_tokens == 0
    assert all(s.steps[0].source == "small" for s in states)


def test_rsd_accepts_iff_reward_reaches_delta():
    delta = 0.6
    states, engines = run_table(RSDConfig(beta=1.0, n=1, delta=delta), problems=4000)
    acc = np.array([s.steps[0].accepted for s in states])
    for s in states:
        tr = s.trace[0]
        assert tr["accepted"] == (tr["candidates"][0]["r"] >= delta)
        assert s.steps[0].source == ("small" if tr["accepted"] else "big")
    p_accept = PI_S[R >= delta].sum()
    assert stats.binomtest(int(acc.sum()), len(acc), p_accept).pvalue > 1e-3
    # Rejected steps come from pi_B: their distribution is pi_B.
    rejected = [s.steps[0].token_ids[0] for s in states if not s.steps[0].accepted]
    counts = np.bincount(rejected, minlength=4)
    assert stats.chisquare(counts, len(rejected) * PI_B).pvalue > 1e-3


def test_rsd_best_of_n_drafts():
    states, _ = run_table(RSDConfig(beta=2.0, n=4, delta=0.6), problems=500)
    for s in states:
        tr = s.trace[0]
        r = np.array([c["r"] for c in tr["candidates"]])
        want = np.exp(2.0 * r) / np.exp(2.0 * r).sum()
        assert np.allclose([c["prob"] for c in tr["candidates"]], want)
        assert tr["accepted"] == (r[tr["chosen"]] >= 0.6)


@pytest.mark.slow
@pytest.mark.parametrize("policy,pi", [("small", PI_S), ("big", PI_B)])
def test_soft_bon_approaches_tilted_policy(policy, pi):
    beta = 3.0
    target = tilted(pi, beta)
    kls = []
    for n in (1, 32):
        states, engines = run_table(BoNConfig(beta=beta, n=n, policy=policy, selection="soft"), problems=4000)
        kls.append(kl(target, np.bincount(first_steps(states), minlength=4) / len(states)))
        other = engines.big if policy == "small" else engines.small
        assert other.stats.calls == 0  # the other model is never used
    assert kls[1] < 0.01 and kls[0] > 5 * kls[1], kls


def test_hard_bon_picks_the_best_candidate():
    states, _ = run_table(BoNConfig(beta=1.0, n=4, policy="small", selection="hard"), problems=1000)
    for s in states:
        r = [c["r"] for c in s.trace[0]["candidates"]]
        assert s.steps[0].reward == max(r)
    # The chosen step is the argmax of the n draws: P(choose k) = P(max reward among 4 draws is r_k).
    order = np.argsort(R)  # rewards are distinct
    cdf = np.cumsum(PI_S[order])
    p_max = np.diff(np.concatenate([[0.0], cdf ** 4]))
    want = np.zeros(4)
    want[order] = p_max
    counts = np.bincount(first_steps(states), minlength=4)
    assert stats.chisquare(counts, len(states) * want).pvalue > 1e-3


def test_response_level_majority_vote_and_aggregation():
    cfg = BoNConfig(beta=1.0, n=5, policy="small", selection="majority", level="response")
    states, _ = run_table(cfg, problems=50, max_steps=3)
    for s in states:
        assert s.done and len(s.steps) == 3 and s.final_text == "".join(x.text for x in s.steps)
    cfg = BoNConfig(beta=1.0, n=4, policy="small", selection="hard", level="response", aggregate="min")
    states, _ = run_table(cfg, problems=50, max_steps=3)
    for s in states:
        scores = [r["score"] for r in s.trace[0]["responses"]]
        assert min(x.reward for x in s.steps) == max(scores)


def test_response_level_votes_count_answers():
    # Step types 0 and 2 both answer 1/2 (written two ways), 1 answers 3, 3 answers 7: each response is one boxed step.
    texts = ["$\\boxed{1/2}$\n\n", "$\\boxed{3}$\n\n", "$\\boxed{\\frac{1}{2}}$\n\n", "$\\boxed{7}$\n\n"]
    answer = {0: "1/2", 1: "3", 2: "1/2", 3: "7"}
    for selection in ("majority", "weighted_majority"):
        cfg = BoNConfig(beta=1.0, n=5, policy="small", selection=selection, level="response")
        states, _ = run_table(cfg, problems=300, max_steps=4, texts=texts)
        decided = 0
        for s in states:
            assert s.stop_reason == "boxed" and len(s.steps) == 1
            # Each response is one step: the pool's texts name their step types.
            kinds = [texts.index(r["text"]) for r in s.scratch["pool"]]
            votes = {}
            for k in kinds:
                votes[answer[k]] = votes.get(answer[k], 0) + (1.0 if selection == "majority" else R[k])
            best = max(votes.values())
            winners = [a for a, v in votes.items() if v == best]
            if len(winners) == 1:
                decided += 1
                assert answer[s.steps[0].token_ids[0]] == winners[0]
        assert decided > 200


def test_baseline_uses_one_policy_and_no_reward():
    states, engines = run_table(BaselineConfig(beta=1.0, policy="big", greedy=True), problems=20, max_steps=3)
    assert engines.reward.stats.calls == 0 and engines.small.stats.calls == 0
    assert all(x.token_ids[0] == int(np.argmax(PI_B)) for s in states for x in s.steps)


def test_eos_stops_a_problem_and_max_steps_caps_it():
    states, _ = run_table(GSIConfig(beta=1.0, n=2, threshold=-1e9), problems=300, max_steps=6, eos_step=0)
    for s in states:
        ends_eos = s.steps[-1].token_ids[0] == 0
        assert s.stop_reason == ("eos" if ends_eos else "max_steps")
        assert all(x.token_ids[0] != 0 for x in s.steps[:-1])
        assert len(s.steps) <= 6
    assert {s.stop_reason for s in states} == {"eos", "max_steps"}


def test_results_do_not_depend_on_batch_size():
    cfg = GSIConfig(beta=2.0, n=4, threshold=0.5)
    a, ea = run_table(cfg, problems=60, max_steps=5, batch_size=1000, eos_step=0)
    b, eb = run_table(cfg, problems=60, max_steps=5, batch_size=7, eos_step=0)
    assert [[x.token_ids for x in s.steps] for s in a] == [[x.token_ids for x in s.steps] for s in b]
    # One generate call per round for all active problems versus many small ones.
    assert ea.small.stats.calls < eb.small.stats.calls
    assert ea.small.stats.calls == max(len(s.steps) for s in a)
