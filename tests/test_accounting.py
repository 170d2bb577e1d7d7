"""Compute accounting, empty candidates, threshold conventions and accept/draft bookkeeping, on exact-table engines
(every step is one token, so every count is known in closed form)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from gsi.config.schema import BoNConfig, GSIConfig, RSDConfig
from gsi.engines.table import table_engines
from gsi.methods import build_method
from gsi.methods.base import StepContext
from gsi.rundir.results import summarize
from gsi.rundir.records import make_record
from gsi.runtime.scheduler import run_steps
from gsi.runtime.state import ProblemState

PI_S = np.array([0.4, 0.3, 0.2, 0.1])
PI_B = np.array([0.1, 0.2, 0.3, 0.4])
R = np.array([0.2, 0.9, 0.5, 0.7])
P = {"small": 1_500_000_000, "big": 7_000_000_000, "reward": 7_000_000_000}


def run_table(method_cfg, *, problems=20, max_steps=1, batch_size=4096, prompt_len=1, texts=None, rewards=R):
    engines = table_engines(PI_S, PI_B, rewards, texts=texts)
    ctx = StepContext(seed=0, max_step_tokens=8, max_steps=max_steps, window=100_000, trace=True)
    method = build_method(OmegaConf.structured(method_cfg), engines, ctx)
    states = [ProblemState(index=i, id=f"p{i}", problem="x", reference="0", prompt_ids=[9] * prompt_len,
                           context=[9] * prompt_len) for i in range(problems)]
    run_steps(states, method, ctx, batch_size=batch_size, on_finish=lambda s, t: None)
    return states, method


def records(states, method):
    verdict = SimpleNamespace(extracted=None, correct=False, rule="none")
    return [make_record(s, verdict, 0.0, method.has_acceptance, False) for s in states]


def flops(states, method, key="flops"):
    return summarize(records(states, method), flops_per_token={r: 2.0 * p for r, p in P.items()},
                     has_acceptance=method.has_acceptance)[key]


def test_gsi_at_full_acceptance_reads_the_context_once():
    """pi_B teacher-forces all n drafts at one context: with a prefix cache that is 2P(C + n l), not 2P n (C + l);
    the chosen draft it already read stays cached, so later steps add only the new drafts."""
    C, n, steps = 500, 16, 3
    states, method = run_table(GSIConfig(beta=2.0, n=n, threshold=-1.0, threshold_on="raw"), problems=4,
                               max_steps=steps, prompt_len=C)
    assert all(x.accepted for s in states for x in s.steps) and all(len(s.steps) == steps for s in states)
    for s in states:
        # l = 1 token per step: each role reads the prompt once, plus every candidate's own token.
        assert s.tokens["big"] == {"generated": 0, "context": C + steps * n}
        assert s.tokens["small"] == {"generated": steps * n, "context": C}
        assert s.tokens["reward"] == {"generated": 0, "context": C + steps * n}
        # Without a cache each draft re-reads the context (which grows by one token a step).
        assert s.tokens_nocache["big"]["context"] == sum(n * (C + k + 1) for k in range(steps))
    f = flops(states, method)
    assert f["big"] == pytest.approx(4 * 2 * P["big"] * (C + steps * n))
    # One step: 2P(C + n l) against the no-cache 2P n (C + l), 15.5x more here.
    one, method1 = run_table(GSIConfig(beta=2.0, n=n, threshold=-1.0, threshold_on="raw"), problems=1,
                             prompt_len=C)
    assert flops(one, method1)["big"] == 2 * P["big"] * (C + n * 1)
    assert flops(one, method1, "flops_nocache")["big"] == 2 * P["big"] * n * (C + 1)


def test_gsi_fallback_step_is_new_context_for_pi_s_only():
    """Rejected every step: pi_B wrote the step (cached for pi_B and the PRM, which read it); pi_S did not, and
    reads it once at the next step."""
    C, n, steps = 50, 4, 4
    states, _ = run_table(GSIConfig(beta=2.0, n=n, threshold=2.0, threshold_on="raw"), problems=3,
                          max_steps=steps, prompt_len=C)
    total_unseen = 0
    for s in states:
        assert [x.source for x in s.steps] == ["big"] * steps
        # (unless pi_S had drafted the same step: then it is in pi_S's cache too)
        unseen = sum(list(x.token_ids) not in [c["token_ids"] for c in e["candidates"]]
                     for x, e in zip(s.steps[:-1], s.trace))
        assert s.tokens["small"] == {"generated": steps * n, "context": C + unseen}
        total_unseen += unseen
        assert s.tokens["big"] == {"generated": steps * n, "context": C + steps * n}
        assert s.tokens["reward"] == {"generated": 0, "context": C + 2 * steps * n}
    assert total_unseen > 0


def test_bon_response_level_tracks_share_the_prompt():
    C, n, steps = 40, 3, 2
    states, _ = run_table(BoNConfig(beta=1.0, n=n, level="response", selection="hard"), problems=2,
                          max_steps=steps, prompt_len=C)
    for s in states:
        assert s.tokens["small"] == {"generated": n * steps, "context": C}
        assert s.tokens["reward"] == {"generated": 0, "context": C + n * steps}
        assert s.tokens_nocache["small"] == {"generated": n * steps, "context": n * (C + C + 1)}


@pytest.mark.parametrize("cfg", [GSIConfig(beta=2.0, n=4, threshold=0.6), RSDConfig(beta=2.0, n=3, delta=0.6),
                                 BoNConfig(beta=1.0, n=3, level="response")], ids=["gsi", "rsd", "bon_response"])
def test_token_counts_do_not_depend_on_the_batch(cfg):
    a, _ = run_table(cfg, problems=30, max_steps=4, batch_size=1000, prompt_len=20)
    b, _ = run_table(cfg, problems=30, max_steps=4, batch_size=7, prompt_len=20)
    assert [(s.tokens, s.tokens_nocache) for s in a] == [(s.tokens, s.tokens_nocache) for s in b]
    assert any(s.tokens != s.tokens_nocache for s in a)


# -- empty candidates --------------------------------------------------------------------------------------------
EMPTY_TEXTS = ["\n\n", "s1\n\n", "s2\n\n", "s3\n\n"]  # step type 0 is a candidate with no text but the delimiter


@pytest.mark.parametrize("empty_reward", [None, 0.3])
def test_an_empty_candidate_gets_the_fixed_reward_not_the_last_steps(empty_reward):
    kw = {} if empty_reward is None else {"empty_reward": empty_reward}
    want = 0.0 if empty_reward is None else empty_reward
    for cfg in (BoNConfig(beta=1.0, n=4, **kw), GSIConfig(beta=2.0, n=4, threshold=0.5, **kw)):
        states, method = run_table(cfg, problems=40, max_steps=3, texts=EMPTY_TEXTS)
        counts = [sum(c["token_ids"] == [0] for e in s.trace
                      for c in e["candidates"] + e.get("fallback", {}).get("candidates", [])) for s in states]
        seen = sum(counts)
        assert sum(bool(e["step"]) and any(c["token_ids"] == [0] for c in e["candidates"])
                   for s in states for e in s.trace) > 10  # empty candidates after an accepted step
        for s in states:
            for entry in s.trace:
                for c in entry["candidates"] + entry.get("fallback", {}).get("candidates", []):
                    assert c["r"] == (want if c["token_ids"] == [0] else R[c["token_ids"][0]])
        assert [s.empty_candidates for s in states] == counts
        recs = records(states, method)
        assert sum(r["empty_candidates"] for r in recs) == seen


# -- threshold conventions and bookkeeping -----------------------------------------------------------------------
def test_threshold_on_score_compares_beta_times_tilted_reward():
    beta = 5.0
    states, _ = run_table(GSIConfig(beta=beta, n=4, threshold=3.0, threshold_on="score"), problems=600)
    outcomes = set()
    for s in states:
        tr = s.trace[0]
        assert tr["accepted"] == (beta * tr["tilted"] > 3.0) == s.steps[0].accepted
        outcomes.add(tr["accepted"])
        # the tilted convention with the same number would decide differently for some
    assert outcomes == {True, False}
    tilted, _ = run_table(GSIConfig(beta=beta, n=4, threshold=3.0, threshold_on="tilted"), problems=600)
    assert [s.steps[0].accepted for s in tilted] != [s.steps[0].accepted for s in states]


def test_paper_gsi_uses_the_reference_threshold(make_cfg):
    cfg = make_cfg("+experiment=paper_gsi")
    assert cfg.method.threshold_on == "score" and cfg.method.threshold == 10


@pytest.mark.parametrize("fallback", [True, False])
def test_accepted_means_the_threshold_test_in_trace_and_record(fallback):
    beta, u = 3.0, 0.5
    states, method = run_table(GSIConfig(beta=beta, n=4, threshold=u, fallback=fallback), problems=400)
    outcomes = set()
    for s in states:
        tr = s.trace[0]
        passed = tr["tilted"] > u
        outcomes.add(passed)
        assert tr["accepted"] == passed == s.steps[0].accepted
        assert s.steps[0].source == ("small" if passed or not fallback else "big")
    assert outcomes == {True, False}
    recs = records(states, method)
    assert sum(r["accepted_steps"] for r in recs) == sum(s.trace[0]["tilted"] > u for s in states)


@pytest.mark.parametrize("cfg", [GSIConfig(beta=2.0, n=4, threshold=0.5), RSDConfig(beta=2.0, n=4, delta=0.6)],
                         ids=["gsi", "rsd"])
def test_draft_token_fields_count_what_they_say(cfg):
    states, method = run_table(cfg, problems=50, max_steps=3)
    recs = records(states, method)
    for s, rec in zip(states, recs):
        chosen = sum(len(e["candidates"][e["chosen"]]["token_ids"]) for e in s.trace)
        drafted = sum(len(c["token_ids"]) for e in s.trace for c in e["candidates"])
        assert rec["chosen_draft_tokens"] == chosen and rec["drafted_tokens"] == drafted == 4 * len(s.steps)
        assert rec["accepted_draft_tokens"] == sum(len(x.token_ids) for x in s.steps if x.accepted)
    summary = summarize(recs, flops_per_token={r: 1.0 for r in P}, has_acceptance=True)
    assert summary["acceptance_rate_tokens"] == pytest.approx(
        sum(r["accepted_draft_tokens"] for r in recs) / sum(r["chosen_draft_tokens"] for r in recs))
