"""Best-of-n with one policy (pi_S or pi_B), no importance weights and no fallback.

level=step: every step, n candidates, one chosen by softmax(beta r) (soft) or argmax r (hard).
level=response: n whole responses advanced side by side a step at a time, each step scored by the PRM; at the
end one is chosen by its aggregated reward (last, min or product; soft or hard), by majority vote over the
final answers, or by reward-weighted majority vote.
"""

from __future__ import annotations

from gsi.methods import register
from gsi.methods.base import Method, candidate_trace, hard_choice, soft_choice
from gsi.methods.search import Branch, aggregate, answer_keys, branches, finish_with, select_response
from gsi.runtime.calls import gather
from gsi.runtime.state import ProblemState, StepRecord


@register("bon")
class BestOfN(Method):
    has_acceptance = False

    async def step(self, s):
        if self.cfg.level == "step":
            await self._step_level(s)
        else:
            await self._response_level(s)

    def _pick(self, scores, rng):
        if self.cfg.selection == "hard":
            return hard_choice(scores, rng)
        beta = self.cfg.beta  # once: on a DictConfig each read resolves the `${beta}` interpolation again
        return soft_choice([beta * x for x in scores], rng)

    async def _step_level(self, s):
        c = await self.sample(self.policy.role, s, self.cfg.n)
        r = await self.rewards(s, c)
        i, p = self._pick(r, self.ctx.rng(s, "select"))
        self.ctx.append(s, c[i], source=self.cfg.policy, accepted=None, reward=r[i],
                        trace={"candidates": candidate_trace(c, r=r, prob=p), "chosen": i})

    # Response level: each problem holds n tracks (branches), advanced one step per round.

    def _tracks(self, s: ProblemState) -> list[Branch]:
        if "tracks" not in s.scratch:
            # The n tracks share the prompt: each role reads it once; a plain majority vote never calls the PRM.
            roles = (self.policy.role,) if self.cfg.selection == "majority" else (self.policy.role, "reward")
            s.scratch["tracks"] = branches(s, [str(k) for k in range(self.cfg.n)], self.prompt_lengths(s, *roles))
        return s.scratch["tracks"]

    async def _response_level(self, s):
        ts = self._tracks(s)
        # Every live track draws one step (with its own seeds: its name is in its id), all at once.
        await gather(*(self._advance(t) for t in ts if not t.done))
        if all(t.done for t in ts):
            self._finish(s, ts)

    async def _advance(self, t: Branch) -> None:
        (step,) = await self.sample(self.policy.role, t, 1)
        # A plain majority vote reads answers only: no PRM call, no PRM cost.
        (r,) = await self.rewards(t, [step]) if self.cfg.selection != "majority" else (None,)
        t.steps.append(StepRecord(text=step.text, token_ids=tuple(step.token_ids), source=self.cfg.policy,
                                  accepted=None, reward=r))
        t.extend(step.token_ids)
        t.finish_if(step, max_steps=self.ctx.max_steps, room=self.ctx.room(len(t.context)))

    def _finish(self, s: ProblemState, ts: list[Branch]) -> None:
        scores = [aggregate([st.reward for st in t.steps], self.cfg.aggregate) for t in ts]
        texts = [t.response_text for t in ts]
        answers = answer_keys(texts) if self.cfg.selection in ("majority", "weighted_majority") else None
        # experiments/pool_curves.py replays this choice on subsets of the pool with this same generator.
        i, p = select_response(scores, answers, self.cfg.selection, self.ctx.rng(s, "select-response"),
                               self.cfg.beta)
        chosen = ts[i]
        finish_with(s, chosen.steps, chosen.context, chosen.stop_reason)
        # The whole pool, for best-of-n / voting curves at every n <= N without generating again
        # (gsi.run grades each response; experiments/pool_curves.py draws the curves).
        s.scratch["pool"] = [{"text": text, "answer": a, "rewards": [st.reward for st in t.steps],
                              "steps": len(t.steps), "stop": t.stop_reason}
                             for t, text, a in zip(ts, texts, answers or answer_keys(texts))]
        if self.ctx.trace:
            s.trace.append({"responses": [{"score": sc, "steps": len(t.steps), "stop": t.stop_reason,
                                           **({"prob": float(p[k])} if p is not None else {})}
                                          for k, (t, sc) in enumerate(zip(ts, scores))], "chosen": i})
        s.scratch.pop("tracks", None)
