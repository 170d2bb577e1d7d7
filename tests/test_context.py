"""Do the methods give each role the right context? GSI and RSD on the tiny vLLM models with trace=true; every
logged candidate's log pi_S, log pi_B and reward is recomputed with a plain transformers float32 forward on the
context the problem really had at that step (prompt + the steps chosen before it).

A method that fed the PRM only the candidate, or let pi_B score the bare prompt instead of the current context,
passes the exact-table tests (table engines ignore the context) but fails here."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from gsi.engines.base import RewardRequest
from gsi.engines.rewards import split_steps
from gsi.models.tiny import tiny_paths

from conftest import TINY_OVERRIDES

pytestmark = pytest.mark.vllm

PROBLEMS = [SimpleNamespace(id="c0", problem="What is $2 + 3$?", reference="5"),
            SimpleNamespace(id="c1", problem="Find $x$ if $x^2 = 49$ and $x > 0$.", reference="7")]


@pytest.fixture(scope="module")
def tf_models():
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    paths = tiny_paths()
    models = {role: AutoModelForCausalLM.from_pretrained(paths[role], dtype=torch.float32).eval()
              for role in ("small", "big")}
    models["reward"] = AutoModelForTokenClassification.from_pretrained(paths["reward"], dtype=torch.float32).eval()
    return models


def tf_logprob(model, context, continuation, temperature: float) -> float:
    import torch

    ids = torch.tensor([list(context) + list(continuation)])
    with torch.no_grad():
        logits = model(ids).logits[0].double() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    n = len(context)
    return float(sum(logp[n + i - 1, tok] for i, tok in enumerate(continuation)))


def tf_reward(model, adapter, problem: str, steps: list[str], empty_reward: float) -> float:
    import torch

    if not split_steps(steps[-1:], adapter.delimiter):  # an empty candidate: the fixed reward
        return empty_reward
    ids = adapter.build(RewardRequest(problem, steps)).token_ids
    with torch.no_grad():
        logit = model(torch.tensor([ids])).logits[0, -1, 0].item()
    return 1.0 / (1.0 + math.exp(-logit))


def run_traced(engines, make_cfg, *overrides):
    from gsi.methods import build_method
    from gsi.run import initial_states, step_context
    from gsi.runtime.scheduler import run_steps

    cfg = make_cfg(*TINY_OVERRIDES, "trace=true", "generation.max_steps=3", "generation.max_step_tokens=20",
                   *overrides)
    states = initial_states(cfg, engines, PROBLEMS)
    ctx = step_context(cfg, engines)
    method = build_method(cfg.method, engines, ctx)
    run_steps(states, method, ctx, batch_size=8, on_finish=lambda s, t: None)
    return cfg, states


def check_against_transformers(cfg, states, engines, tf_models, logp_keys):
    """Every candidate of every step: log-probs and reward recomputed on the problem's actual context."""
    T = cfg.generation.temperature
    tok, adapter = engines.tokenizer, engines.reward.adapter
    checked = {"later_steps": 0, "fallback": 0}
    for s in states:
        for entry in s.trace:
            k = entry["step"]
            context = list(s.prompt_ids) + [t for x in s.steps[:k] for t in x.token_ids]
            accepted = [x.text for x in s.steps[:k]]
            groups = [(entry["candidates"], logp_keys["draft"])]
            if "fallback" in entry:
                groups.append((entry["fallback"]["candidates"], logp_keys["fallback"]))
                checked["fallback"] += 1
            for cands, keys in groups:
                for c in cands:
                    ids = c["token_ids"]
                    for key, role in keys.items():
                        assert c[key] == pytest.approx(tf_logprob(tf_models[role], context, ids, T), abs=2e-3), \
                            (s.id, k, key)
                    if "r" in c:
                        text = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                        want = tf_reward(tf_models["reward"], adapter, s.problem, accepted + [text],
                                         cfg.method.empty_reward)
                        assert c["r"] == pytest.approx(want, abs=1e-4), (s.id, k, "r")
            checked["later_steps"] += k > 0
    return checked


def test_gsi_candidates_are_scored_on_the_actual_context(tiny_engines, make_cfg, tf_models):
    # threshold on the raw reward at 0.5: the tiny PRM's rewards straddle it, so both branches run
    cfg, states = run_traced(tiny_engines, make_cfg, "method=gsi", "method.n=3", "beta=2",
                             "method.threshold_on=raw", "method.threshold=0.5")
    checked = check_against_transformers(cfg, states, tiny_engines, tf_models,
                                         {"draft": {"logp_small": "small", "logp_big": "big", "logp": "small"},
                                          "fallback": {"logp": "big"}})
    assert checked["later_steps"] >= 2  # contexts with chosen steps in them were checked


def test_rsd_candidates_are_scored_on_the_actual_context(tiny_engines, make_cfg, tf_models):
    cfg, states = run_traced(tiny_engines, make_cfg, "method=rsd", "method.n=2", "method.n_big=2", "beta=2",
                             "method.delta=0.5")
    checked = check_against_transformers(cfg, states, tiny_engines, tf_models,
                                         {"draft": {"logp": "small"}, "fallback": {"logp": "big"}})
    assert checked["later_steps"] >= 2
