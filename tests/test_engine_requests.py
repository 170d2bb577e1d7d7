"""What each role is asked, on recording exact-table engines (no vLLM, ~1 s): the PRM scores a candidate after the
problem and every step before it; pi_B teacher-forces each candidate after the problem's whole context (prompt and
chosen steps), not after the bare prompt. tests/test_context.py checks the same on vLLM against transformers; these
catch a request built from the wrong context in a second, on every method that scores candidates."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from gsi.config.schema import BoNConfig, GSIConfig, RSDConfig
from gsi.engines.table import table_engines
from gsi.methods import build_method
from gsi.methods.base import StepContext
from gsi.runtime.scheduler import run_steps
from gsi.runtime.state import ProblemState

PI_S = np.array([0.4, 0.3, 0.2, 0.1])
PI_B = np.array([0.1, 0.2, 0.3, 0.4])
R = np.array([0.2, 0.9, 0.5, 0.7])
PROMPT = 1000  # prompt tokens are 1000 + problem index (step tokens are 0-3): a context names its problem


def recorded_run(method_cfg, problems=12, max_steps=4):
    engines = table_engines(PI_S, PI_B, R)
    asked = {"reward": [], "score": []}
    reward, score = engines.reward.reward, engines.big.score

    def reward_spy(requests):
        asked["reward"] += [(r.problem, list(r.steps)) for r in requests]
        return reward(requests)

    def score_spy(contexts, continuations):
        asked["score"] += [(list(c), list(t)) for c, t in zip(contexts, continuations)]
        return score(contexts, continuations)

    engines.reward.reward, engines.big.score = reward_spy, score_spy
    ctx = StepContext(seed=0, max_step_tokens=8, max_steps=max_steps, window=100_000)
    method = build_method(OmegaConf.structured(method_cfg), engines, ctx)
    states = [ProblemState(index=i, id=f"p{i}", problem=f"problem {i}", reference="0", prompt_ids=[PROMPT + i],
                           context=[PROMPT + i]) for i in range(problems)]
    run_steps(states, method, ctx, batch_size=5, on_finish=lambda s, t: None)
    return {s.problem: s for s in states}, {s.prompt_ids[0]: s for s in states}, asked


@pytest.mark.parametrize("cfg", [GSIConfig(beta=2.0, n=3, threshold=0.6), RSDConfig(beta=2.0, n=2, delta=0.6),
                                 BoNConfig(beta=1.0, n=3)], ids=["gsi", "rsd", "bon"])
def test_the_prm_scores_each_candidate_after_every_earlier_step(cfg):
    by_problem, _, asked = recorded_run(cfg)
    depths = set()
    for problem, steps in asked["reward"]:
        chosen = [x.text for x in by_problem[problem].steps]
        k = len(steps) - 1  # the candidate is for step k: the k steps before it are the chosen ones
        assert steps[:k] == chosen[:k], (problem, steps, chosen)
        depths.add(k)
    assert depths == set(range(4))  # candidates at every step of a 4-step run were scored


def test_pi_b_teacher_forces_each_candidate_after_the_whole_context():
    by_problem, by_prompt, asked = recorded_run(GSIConfig(beta=2.0, n=3, threshold=0.6))
    depths = set()
    for context, continuation in asked["score"]:
        state = by_prompt[context[0]]
        k = len(context) - 1  # tokens after the one-token prompt: one per chosen step
        assert context == state.context[:len(context)], (context, state.context)
        assert continuation and len(continuation) == 1
        depths.add(k)
    assert depths == set(range(4))
    # every pi_S draft of every step was teacher-forced: n per step of a problem, as many as its steps
    assert len(asked["score"]) == 3 * sum(len(s.steps) for s in by_problem.values())
