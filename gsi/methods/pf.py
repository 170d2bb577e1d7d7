"""Particle filtering (Puri et al. 2025, "A probabilistic inference approach to inference-time scaling of LLMs";
its_hub's ParticleFiltering): N particles advanced a step at a time and resampled by their PRM weights.

Per problem, N = method.n particles, all starting at the prompt:

    each round:
        every unfinished particle samples one step from the policy (all particles at once: one request each), and
        the PRM scores it
        a particle's log-weight is  f(aggregate(its step rewards)) / temperature,  with
            weighting=logit:  f(r) = log(r / (1 - r))   (the paper and its_hub: the weight is the PRM's odds)
            weighting=reward: f(r) = r                  (weights softmax(r / temperature))
        and aggregate = last (the paper), min or prod; finished particles keep their last weight
        if any particle is unfinished: N particles are drawn with replacement with probabilities
        softmax(log-weights) (multinomial resampling, seeded); a drawn particle is copied with its history,
        finished or not, and continues
    when every particle is finished, one is chosen: hard (the largest weight, its_hub's argmax), soft (drawn by
    its weight, its_hub's "sample"), or a majority / weight-summed vote over the particles' answers.

Costs per round and problem: one pi sample and one PRM call per unfinished particle (N at most); resampling is
free. All per-problem state (the particles, gsi.methods.search.Branch) lives in state.scratch; each particle's
calls charge the problem's token ledger.
"""

from __future__ import annotations

import numpy as np

from gsi.runtime import seeding
from gsi.methods import register
from gsi.methods.base import Method, softmax
from gsi.methods.search import (Branch, aggregate, answer_keys, branches,
                                finish_with, select_response)
from gsi.runtime.calls import gather
from gsi.runtime.state import STOP_CONTEXT, ProblemState, StepRecord

_EPS = 1e-6  # PRM probabilities of exactly 0 or 1 would give infinite logits


@register("pf")
class ParticleFiltering(Method):
    has_acceptance = False

    def log_weight(self, rewards) -> float:
        r = aggregate(rewards, self.cfg.aggregate)
        if self.cfg.weighting == "logit":
            r = float(np.clip(r, _EPS, 1 - _EPS))
            r = np.log(r) - np.log1p(-r)
        return float(r) / self.cfg.temperature

    def _particles(self, s: ProblemState) -> list[Branch]:
        if "particles" not in s.scratch:
            s.scratch["particles"] = branches(s, [str(k) for k in range(self.cfg.n)],
                                              self.prompt_lengths(s, self.policy.role, "reward"))
            s.scratch["round"] = 0
        return s.scratch["particles"]

    async def step(self, s):
        # Every unfinished particle advances one step, all at once; then all are resampled (or one is chosen).
        await gather(*(self._advance(p) for p in self._particles(s) if not p.done))
        self._resample_or_finish(s)

    async def _advance(self, p: Branch) -> None:
        """One policy step for particle `p`, scored by the PRM."""
        steps = await self.sample(self.policy.role, p, 1)
        if not steps:
            p.done, p.stop_reason = True, STOP_CONTEXT
            return
        step = steps[0]
        (r,) = await self.rewards(p, [step])
        p.steps.append(StepRecord(text=step.text, token_ids=tuple(step.token_ids), source=self.cfg.policy,
                                  accepted=None, reward=r))
        p.extend(step.token_ids)
        p.finish_if(step, max_steps=self.ctx.max_steps, room=self.ctx.room(len(p.context)))

    def _resample_or_finish(self, s: ProblemState) -> None:
        ps = s.scratch["particles"]
        logw = np.array([self.log_weight([x.reward for x in p.steps]) for p in ps])
        w = softmax(logw)
        rnd = s.scratch["round"]
        s.scratch["round"] += 1
        if all(p.done for p in ps):
            return self._finish(s, ps, logw, w)
        ancestors = seeding.rng(self.ctx.seed, s.id, rnd, "resample").choice(len(ps), size=len(ps), p=w)
        if self.ctx.trace:
            s.trace.append({"round": rnd, "particles": [{"r": p.steps[-1].reward if p.steps else None,
                                                         "log_weight": float(lw), "weight": float(wk),
                                                         "done": p.done} for p, lw, wk in zip(ps, logw, w)],
                            "ancestors": [int(a) for a in ancestors]})
        new = []
        for k, a in enumerate(ancestors):
            src = ps[a]
            # The copy in place k samples with track k's seeds from here on: copies of one ancestor diverge.
            p = src.child(str(k))
            p.done, p.stop_reason = src.done, src.stop_reason
            new.append(p)
        s.scratch["particles"] = new

    def _finish(self, s, ps, logw, w) -> None:
        sel = self.cfg.selection
        answers = answer_keys([p.response_text for p in ps]) if sel in ("majority", "weighted_majority") else None
        rng = self.ctx.rng(s, "select-response")
        # soft draws by the particle weights; hard takes the largest; a weighted vote sums the weights.
        i, prob = select_response(logw if sel == "soft" else w, answers, sel, rng, 1.0)
        chosen = ps[i]
        if self.ctx.trace:
            s.trace.append({"responses": [{"score": float(wk), "log_weight": float(lw), "steps": len(p.steps),
                                           "stop": p.stop_reason,
                                           **({"prob": float(prob[k])} if prob is not None else {})}
                                          for k, (p, lw, wk) in enumerate(zip(ps, logw, w))], "chosen": i})
        finish_with(s, chosen.steps, chosen.context, chosen.stop_reason)
        s.scratch.pop("particles", None)
