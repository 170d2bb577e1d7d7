"""The search baselines on exact-table engines (beam search, DVTS, particle filtering, pool curves), and each of
them end to end on the tiny vLLM models."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats

from gsi.config.schema import BeamConfig, BoNConfig, DVTSConfig, PFConfig
from gsi.engines.table import table_engines
from gsi.methods import build_method
from gsi.methods.base import StepContext
from gsi.runtime.scheduler import run_steps
from gsi.runtime.state import ProblemState

PI_S = np.array([0.4, 0.3, 0.2, 0.1])
PI_B = np.array([0.1, 0.2, 0.3, 0.4])
R = np.array([0.2, 0.9, 0.5, 0.7])


def run_table(method_cfg, *, problems=200, max_steps=3, batch_size=4096, seed=0, eos_step=None, texts=None,
              rewards=R):
    engines = table_engines(PI_S, PI_B, rewards, eos_step=eos_step, texts=texts)
    ctx = StepContext(seed=seed, max_step_tokens=8, max_steps=max_steps, window=10_000, trace=True)
    method = build_method(OmegaConf.structured(method_cfg), engines, ctx)
    states = [ProblemState(index=i, id=f"p{i}", problem="x", reference="0", prompt_ids=[0], context=[0])
              for i in range(problems)]
    finished = []
    run_steps(states, method, ctx, batch_size=batch_size, on_finish=lambda s, t: finished.append(s))
    assert sorted(s.index for s in finished) == list(range(problems))
    return states, engines


def rounds(s):
    return [t for t in s.trace if "candidates" in t]


# ---------------------------------------------------------------------------------------------------------------
# Beam search


@pytest.mark.parametrize("aggregate", ["last", "min", "prod"])
def test_beam_keeps_exactly_the_top_unfinished_beams(aggregate):
    n, width = 8, 2
    keep = n // width
    states, engines = run_table(BeamConfig(beta=1.0, n=n, width=width, aggregate=aggregate), problems=150,
                                max_steps=4, eos_step=0)
    tie_obs, tie_exp = np.zeros(n), np.zeros(n)
    for s in states:
        scores_of = {0: []}
        prev_kept = None
        for t in rounds(s):
            cands = t["candidates"]
            if prev_kept is None:  # the prompt fills every slot of the first round
                assert len(cands) == n and {c["parent"] for c in cands} == {0}
            else:  # then exactly the beams kept last round propose
                assert {c["parent"] for c in cands} == prev_kept
            prev_kept = {c["id"] for c in cands if c["kept"]}
            for c in cands:
                scores_of[c["id"]] = scores_of[c["parent"]] + [c["r"]]
                # The score is the aggregate of the beam's own step rewards (recomputed from the trace).
                want = {"last": lambda x: x[-1], "min": min, "prod": math.prod}[aggregate](scores_of[c["id"]])
                assert c["score"] == pytest.approx(want)
            if t is not rounds(s)[0]:  # every kept beam of the round before proposed exactly `width` candidates
                assert all(sum(c["parent"] == p for c in cands) == width for p in {c["parent"] for c in cands})
            live = [c for c in cands if not c["finished"]]
            kept = [c for c in cands if c["kept"]]
            assert len(kept) == min(keep, len(live)) and not any(c["kept"] and c["finished"] for c in cands)
            assert all(c["pooled"] == c["finished"] for c in cands)
            if kept and len(live) > len(kept):
                worst_kept = min(c["score"] for c in kept)
                best_dropped = max(c["score"] for c in live if not c["kept"])
                assert worst_kept >= best_dropped
                if worst_kept == best_dropped:  # a tie at the boundary: who is kept is a seeded coin
                    tied = [i for i, c in enumerate(cands) if not c["finished"] and c["score"] == worst_kept]
                    places = sum(1 for c in kept if c["score"] == worst_kept)
                    for i in tied:
                        tie_obs[i] += cands[i]["kept"]
                        tie_exp[i] += places / len(tied)
        # The answer is the best-scored finished beam.
        pool = s.trace[-1]["responses"]
        assert pool[s.trace[-1]["chosen"]]["score"] == max(p["score"] for p in pool)
        assert len(pool) <= n
    # Ties are broken uniformly: the kept share of each candidate position matches its expectation.
    mask = tie_exp > 5
    assert mask.sum() >= 2
    assert stats.chisquare(tie_obs[mask], tie_exp[mask] * tie_obs[mask].sum() / tie_exp[mask].sum()).pvalue > 1e-3
    # One generate and one reward call per round, for all problems together.
    assert engines.small.stats.calls == engines.reward.stats.calls == max(len(rounds(s)) for s in states)
    assert engines.big.stats.calls == 0


def test_a_branch_charges_its_problem_and_keeps_its_own_cache_marks():
    from gsi.methods.search import branches
    from gsi.runtime.state import StepRecord

    s = ProblemState(index=0, id="p", problem="x", reference="1", prompt_ids=[0, 0], context=[0, 0])
    a, b = branches(s, ["0", "1"], {"small": 2, "reward": 5})
    assert (a.id, b.id) == ("p#0", "p#1")  # a branch's requests are seeded by its own name
    assert s.tokens["small"]["context"] == 2 and s.tokens["reward"]["context"] == 5  # the shared prompt, once
    a.charge("small", 2, [((7, 8), 2)], generated=True)  # a's policy drew (7, 8): charged to the problem at once
    a.count_nocache("small", context=2, generated=2)
    a.empty_candidates += 1
    assert s.tokens["small"] == {"generated": 2, "context": 2} and s.tokens_nocache["small"]["generated"] == 2
    assert s.empty_candidates == 1
    c = a.child("c", StepRecord(text="t", token_ids=(7, 8), source="small", accepted=None))
    assert c.context == [0, 0, 7, 8] and a.context == [0, 0] and c.response_text == "t" and a.steps == []
    # The policy drew (7, 8) after a's context, so c starts past it; the PRM never read it.
    assert c.read == {"small": 4, "big": 0, "reward": 5}
    c.charge("small", 4, [], generated=False)
    assert s.tokens["small"]["context"] == 2
    # b has its own marks: its different tokens at the same length are new to the policy.
    b.charge("small", 4, [], generated=False)
    assert s.tokens["small"]["context"] == 4


def test_beam_ties_are_seeded():
    cfg = BeamConfig(beta=1.0, n=8, width=2)
    a, _ = run_table(cfg, problems=40, seed=3, batch_size=7)
    b, _ = run_table(cfg, problems=40, seed=3)
    c, _ = run_table(cfg, problems=40, seed=4)
    kept = lambda states: [[[x["kept"] for x in t["candidates"]] for t in rounds(s)] for s in states]  # noqa: E731
    assert kept(a) == kept(b) and [s.final_text for s in a] == [s.final_text for s in b]
    assert kept(a) != kept(c)


@pytest.mark.parametrize("cfg", [DVTSConfig(beta=1.0, n=4, width=2, selection="soft"),
                                 PFConfig(beta=1.0, n=4, selection="soft"),
                                 BeamConfig(beta=1.0, n=4, width=2, lookahead=1)])
def test_search_results_do_not_depend_on_the_batch(cfg):
    a, ea = run_table(cfg, problems=30, max_steps=4, eos_step=0, batch_size=1000)
    b, eb = run_table(cfg, problems=30, max_steps=4, eos_step=0, batch_size=4)
    assert [s.final_text for s in a] == [s.final_text for s in b]
    assert [s.tokens for s in a] == [s.tokens for s in b]
    assert ea.small.stats.calls < eb.small.stats.calls  # batched: fewer, larger engine calls


def test_beam_lookahead_scores_the_rollout():
    # Greedy pi_S is step 0 (reward 0.2) whatever the candidate: with lookahead every candidate scores 0.2.
    states, engines = run_table(BeamConfig(beta=1.0, n=4, width=2, lookahead=2), problems=20, max_steps=3)
    for s in states:
        *early, last = rounds(s)
        for t in early:
            assert all(c["score"] == pytest.approx(0.2) for c in t["candidates"])
        # The last round's candidates end the response (max_steps): nothing to roll out, their own reward counts.
        assert all(c["finished"] and c["score"] in R for c in last["candidates"])
        assert all(x.reward == pytest.approx(0.2) for x in s.steps[:-1])  # a step keeps its rollout's reward
    assert {c["score"] for s in states for c in rounds(s)[-1]["candidates"]} == set(R)
    # Per round: one sampled generate call plus `lookahead` greedy ones.
    assert engines.small.stats.calls == 3 * 3 - 2  # the last round's rollouts stop at max_steps + lookahead


# ---------------------------------------------------------------------------------------------------------------
# DVTS


def test_dvts_subtrees_never_share_a_parent_after_the_first_step():
    n, width = 8, 2
    states, engines = run_table(DVTSConfig(beta=1.0, n=n, width=width), problems=100, max_steps=5, eos_step=0)
    for s in states:
        rs = rounds(s)
        assert {c["parent"] for c in rs[0]["candidates"]} == {0}  # every subtree starts at the prompt
        owner = {}  # beam id -> subtree
        for t in rs:
            cands = t["candidates"]
            by_group = {}
            for c in cands:
                by_group.setdefault(c["group"], []).append(c)
                owner[c["id"]] = c["group"]
            if t is not rs[0]:
                parents = [{c["parent"] for c in cs} for cs in by_group.values()]
                # One parent per subtree, its own, and no two subtrees share one.
                assert all(len(p) == 1 for p in parents)
                assert len(set().union(*parents)) == len(parents)
                assert all(owner[c["parent"]] == c["group"] for c in cands)
            for cs in by_group.values():
                assert len(cs) == width
                chosen = [c for c in cs if c["kept"] or c["pooled"]]
                assert len(chosen) == 1 and chosen[0]["score"] == max(c["score"] for c in cs)
        # The pool is one beam per subtree.
        assert len(s.trace[-1]["responses"]) == n // width
    assert engines.small.stats.calls == engines.reward.stats.calls == max(len(rounds(s)) for s in states)


# ---------------------------------------------------------------------------------------------------------------
# Particle filtering


@pytest.mark.parametrize("weighting,temperature", [("logit", 1.0), ("reward", 0.25)])
def test_pf_resampling_frequencies_match_the_weights(weighting, temperature):
    n = 6
    states, _ = run_table(PFConfig(beta=1.0, n=n, weighting=weighting, temperature=temperature), problems=800,
                          max_steps=2)
    observed, expected, uniform = np.zeros(4), np.zeros(4), np.zeros(4)
    for s in states:
        t = s.trace[0]  # after the first step: every particle alive, resampled by its weight
        ps = t["particles"]
        r = np.array([p["r"] for p in ps])
        f = np.log(r / (1 - r)) if weighting == "logit" else r
        w = np.exp(f / temperature - (f / temperature).max())
        w /= w.sum()
        assert np.allclose([p["weight"] for p in ps], w)
        kind = [int(np.flatnonzero(R == x)[0]) for x in r]
        for a in t["ancestors"]:
            observed[kind[a]] += 1
        for k, wk in zip(kind, w):
            expected[k] += n * wk
            uniform[k] += 1
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    assert stats.chisquare(observed, uniform).pvalue < 1e-6  # the test has power against no reweighting


def test_pf_resampled_particles_keep_their_history_and_the_best_answers():
    states, engines = run_table(PFConfig(beta=1.0, n=4), problems=200, max_steps=3)
    for s in states:
        resamples = [t for t in s.trace if "ancestors" in t]
        assert len(resamples) == 2  # after steps 1 and 2 (all finish at step 3)
        final = s.trace[-1]["responses"]
        assert final[s.trace[-1]["chosen"]]["score"] == max(p["score"] for p in final)
        assert len(s.steps) == 3
    assert engines.small.stats.calls == engines.reward.stats.calls == 3


# ---------------------------------------------------------------------------------------------------------------
# Best-of-n pools and their curves

VOTE_TEXTS = ["we compute\n\n", "$\\boxed{3}$\n\n", "$\\boxed{1/2}$\n\n", "$\\boxed{\\frac{1}{2}}$\n\n"]


def test_majority_vote_pays_for_no_prm():
    states, engines = run_table(BoNConfig(beta=1.0, n=4, level="response", selection="majority"), problems=30,
                                texts=VOTE_TEXTS)
    assert engines.reward.stats.calls == 0
    assert all(s.tokens["reward"]["context"] == 0 for s in states)
    assert all(len(s.scratch["pool"]) == 4 for s in states)
    from experiments.pool_curves import curves

    records = [{"id": s.id, "pool": [{**p, "correct": p["answer"] == "3"} for p in s.scratch["pool"]]}
               for s in states]
    assert list(curves(records, seed=0)) == ["majority"]  # no rewards: only the vote's curve


@pytest.mark.parametrize("rule,selection,aggregate", [
    ("bon-last", "hard", "last"), ("bon-min", "hard", "min"), ("bon-prod", "hard", "prod"),
    ("majority", "majority", "last"), ("weighted-last", "weighted_majority", "last"),
    ("weighted-prod", "weighted_majority", "prod"),
])
def test_pool_curve_at_n_equals_a_direct_run_at_n(rule, selection, aggregate):
    from experiments.pool_curves import choose, draw

    N, problems = 8, 120
    big, _ = run_table(BoNConfig(beta=1.0, n=N, level="response", selection="hard"), problems=problems,
                       texts=VOTE_TEXTS, max_steps=4)
    differs = 0
    for n in (1, 2, 4, 8):
        direct, _ = run_table(BoNConfig(beta=1.0, n=n, level="response", selection=selection, aggregate=aggregate),
                              problems=problems, texts=VOTE_TEXTS, max_steps=4)
        for s_big, s_n in zip(big, direct):
            pool = s_big.scratch["pool"]
            assert [p["text"] for p in pool[:n]] == [p["text"] for p in s_n.scratch["pool"]]  # the same draws
            subset, rng = draw(0, s_big.id, N, n, 0)
            assert pool[choose(pool, subset, rule, rng)]["text"] == s_n.final_text
            other, rng = draw(0, s_big.id, N, n, 1)
            differs += other != subset
    assert differs > 0  # the other draws are other subsets


def test_pool_curves_from_a_run_folder(tmp_path):
    from experiments.pool_curves import curves, plot_pool_curves, run_points
    from experiments.synthetic import synthetic_run

    out = tmp_path / "bon"
    synthetic_run(["method=bon", "method.level=response", "method.selection=weighted_majority", "method.n=8"],
                  out, n_problems=30)
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert all(len(r["pool"]) == 8 and all("correct" in p and "rewards" in p for p in r["pool"]) for r in records)
    c = curves(records, seed=0, draws=4)
    assert set(c) == {"bon-last", "bon-min", "bon-prod", "majority", "weighted-last", "weighted-min",
                      "weighted-prod"}
    assert all(set(v) == {1, 2, 4, 8} for v in c.values())
    # n = 1 is one random response whatever the rule.
    assert len({v[1] for v in c.values()}) == 1
    # At n = N every rule sees the whole pool: bon-last there is the fraction of problems whose best-last is right.
    rows = run_points(out, draws=4)
    summary = json.loads((out / "summary.json").read_text())
    at = {(r["rule"], r["n"]): r for r in rows}
    assert at[("bon-last", 8)]["flops"] == pytest.approx(summary["flops"]["total"])
    assert at[("majority", 4)]["flops"] == pytest.approx(
        (summary["flops"]["small"] + summary["flops"]["big"]) / 2)
    assert plot_pool_curves([tmp_path], tmp_path / "pool.png") is not None
    assert (tmp_path / "pool.png").exists() and (tmp_path / "pool.csv").exists()


# ---------------------------------------------------------------------------------------------------------------
# End to end on the tiny vLLM models

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GSI_DATA_DIR", str(ROOT.parent / "shared" / "data"))


@pytest.mark.vllm
@pytest.mark.parametrize("overrides,policy", [
    (["method=beam", "method.n=4", "method.width=2", "method.lookahead=1"], "small"),
    (["method=dvts", "method.n=4", "method.width=2", "method.selection=weighted_majority"], "small"),
    (["method=pf", "method.n=4", "method.policy=big"], "big"),
])
def test_search_methods_run_end_to_end_on_tiny_models(overrides, policy, tiny_engines, tmp_path):
    from gsi.config.schema import compose_config
    from gsi.run import run

    cfg = compose_config("model=tiny", "hardware=cpu", "dataset=math500", "dataset.limit=2",
                         "generation.max_steps=2", "generation.max_step_tokens=8", "trace=true", *overrides)
    summary = run(cfg, out=tmp_path, engines=tiny_engines)
    records = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    other = "big" if policy == "small" else "small"
    assert summary["n_problems"] == 2 and summary["acceptance_rate"] is None
    assert summary["tokens"][other] == {"generated": 0, "context": 0}
    assert summary["tokens"][policy]["generated"] > 0 and summary["tokens"]["reward"]["context"] > 0
    for r in records:
        assert 1 <= r["steps"] <= 2 and r["final_text"]
        assert "responses" in r["trace"][-1]


# ---------------------------------------------------------------------------------------------------------------
# Report and presets


@pytest.mark.slow
def test_synthetic_report_shows_the_search_baselines_beside_gsi_rsd_and_bon(tmp_path):
    import csv

    from experiments.report import make_report
    from experiments.synthetic import synthetic_sweep

    sweep = {"methods": [["method=gsi"], ["method=rsd", "method.delta=0.6"], ["method=bon", "method.policy=small"],
                         ["method=beam", "method.width=2"], ["method=dvts", "method.width=2"], ["method=pf"],
                         ["method=bon", "method.level=response", "method.selection=hard"]],
             "n": [2, 4], "beta": [4.0]}
    synthetic_sweep(tmp_path / "runs", n_problems=12, sweep=sweep)
    rep = make_report([tmp_path / "runs"], tmp_path / "report")
    with open(tmp_path / "report" / "accuracy_vs_flops.csv") as f:
        series = {row["series"] for row in csv.DictReader(f)}
    # Series labels carry the settings that tell runs apart (β, u, δ): each method is found by its label's start.
    for method in ("GSI", "RSD", "soft BoN π_S", "beam search π_S (M=2, last)", "DVTS π_S (M=2, last)",
                   "PF π_S (logit, hard)", "hard BoN π_S (last, response)"):
        assert any(s == method or s.startswith(method + ",") or s.startswith(method + " (") for s in series), \
            (method, series)
    assert rep["figures"]["pool_curves"] is not None
    assert "Best-of-n and voting at every n" in (tmp_path / "report" / "report.md").read_text()


def test_search_presets_compose_and_build():
    import itertools

    import yaml

    from gsi.config.schema import compose_config

    conf = Path(__file__).resolve().parents[1] / "conf" / "experiment"
    for name in ("paper_beam", "paper_dvts", "paper_pf", "paper_bon_pool", "tiny_search"):
        params = yaml.safe_load((conf / f"{name}.yaml").read_text())["hydra"]["sweeper"]["params"]
        params.pop("dataset", None)  # the datasets compose on their own; the method settings are checked here
        keys = list(params)
        for values in itertools.product(*(str(params[k]).split(",") for k in keys)):
            cfg = compose_config(f"+experiment={name}", *(f"{k}={v}" for k, v in zip(keys, values)))
            engines = table_engines(PI_S, PI_B, R)
            build_method(cfg.method, engines, StepContext(seed=0, max_step_tokens=8, max_steps=3, window=100))


def test_pool_curves_one_panel_per_pool_with_intervals_and_readable_ticks(tmp_path):
    """Two pools (π_S and π_B) on one dataset: a row of panels each, 7 distinct colours per panel, a Wilson band
    over problems, G/T FLOPs tick labels (not 10^8), and a PDF beside the PNG."""
    from matplotlib.colors import to_hex

    from experiments.intervals import wilson
    from experiments.pool_curves import plot_pool_curves
    from experiments.synthetic import synthetic_run

    for policy in ("small", "big"):
        synthetic_run(["method=bon", "method.level=response", f"method.policy={policy}", "method.n=4"],
                      tmp_path / policy, n_problems=10)
    fig = plot_pool_curves([tmp_path], tmp_path / "pool.png", draws=2)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4 and {ax.get_title().split(" (")[0] for ax in axes} == {"math500, π_S pool N=4",
                                                                                 "math500, π_B pool N=4"}
    for ax in axes:
        colours = [to_hex(line.get_color()) for line in ax.lines]
        assert len(colours) == 7 and len(set(colours)) == 7
        assert len(ax.collections) == 7  # one interval band per rule
    flops_labels = [t.get_text() for t in axes[1].get_xticklabels() if t.get_text()]
    assert flops_labels and all(label[-1] in "kMGTPE" for label in flops_labels), flops_labels
    assert (tmp_path / "pool.pdf").exists()
    with open(tmp_path / "pool.csv") as f:
        rows = list(__import__("csv").DictReader(f))
    for r in rows:
        lo, hi = wilson(float(r["accuracy"]), int(r["problems"]))
        assert float(r["ci_low"]) == pytest.approx(lo) and float(r["ci_high"]) == pytest.approx(hi)
