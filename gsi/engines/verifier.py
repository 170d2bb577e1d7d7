"""A verifier PRM: a causal LM that scores a step by teacher forcing it (`model.reward.adapter: lm_verifier`).

The reward role is then a generator engine (vLLM's generate runner, in process or a server started by
gsi.cluster.serve) at VERIFIER_TEMPERATURE, and `VerifierRewardModel` asks it for the prompt log-probs of each
request's last step, through the generators' own teacher forcing (`StepGenerator.token_logprobs`: the prefix
cache read where it is valid, vllm-facts §3, and resends where it is not). The layout and the read-out are the
adapter's (gsi.engines.rewards.LMVerifierAdapter): the context is the rendered problem and the accepted steps, each
followed by the delimiter; the continuation is the last step and its delimiter; the reward is exp(the lowest
log-prob of the step's own tokens). The reward role's stats are the engine's: tokens sent, cached and prefilled,
as for any PRM. Cost: one teacher-forced pass over the new step per request, linear in steps with the cache.
"""

from __future__ import annotations

from typing import Sequence

from gsi.engines.base import RewardModel, RewardRequest
from gsi.engines.frontend import EMPTY_STEP_REWARD, StepGenerator
from gsi.engines.rewards import LMVerifierAdapter, split_steps

# The verifier's own distribution, untempered: its probabilities are a judgement, not a proposal to sample from.
VERIFIER_TEMPERATURE = 1.0


class VerifierRewardModel(RewardModel):
    """The PRM role over a teacher-forcing generator engine (gsi.engines.vllm.VLLMGenerator or
    gsi.engines.remote.RemoteGenerator, role "reward")."""

    def __init__(self, forcer: StepGenerator, adapter: LMVerifierAdapter):
        if not isinstance(adapter, LMVerifierAdapter):
            raise TypeError(f"VerifierRewardModel needs the lm_verifier adapter, got {adapter.name!r}")
        if abs(forcer.temperature - VERIFIER_TEMPERATURE) > 1e-9:
            raise ValueError(f"reward: the verifier must read its log-probs at T={VERIFIER_TEMPERATURE}, "
                             f"its engine is at T={forcer.temperature}")
        self.forcer = forcer
        self.adapter = adapter
        self.stats = forcer.stats
        self.max_model_len = forcer.max_model_len
        if adapter.max_model_len is None:
            adapter.max_model_len = self.max_model_len
        # the runtime may overlap calls exactly when the engine underneath takes them (a server)
        self.concurrent_calls = forcer.concurrent_calls

    def input_length(self, problem: str, steps: Sequence[str]) -> int:
        return self.adapter.input_length(problem, steps)

    def reward(self, requests: Sequence[RewardRequest]) -> list[float]:
        scores = [EMPTY_STEP_REWARD] * len(requests)
        # as PRMRewardModel: a request with no non-empty step has nothing to score, and no model call
        live = [k for k, r in enumerate(requests) if split_steps(r.steps, self.adapter.delimiter)]
        if not live:
            return scores
        inputs = [self.adapter.build(requests[k]) for k in live]
        starts = [self.adapter.scored_start(x) for x in inputs]
        forced = self.forcer.token_logprobs([x.token_ids[:s] for x, s in zip(inputs, starts)],
                                            [x.token_ids[s:] for x, s in zip(inputs, starts)])
        for k, lps in zip(live, forced):
            score = self.adapter.score_rows(lps)
            if not 0.0 <= score <= 1.0:
                raise RuntimeError(f"reward: lm_verifier produced {score}, not a probability")
            scores[k] = score
        return scores

    def close(self) -> None:
        close = getattr(self.forcer, "close", None)
        if close is not None:
            close()
