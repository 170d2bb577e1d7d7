"""GSI (methods.md): soft best-of-n over pi_S drafts weighted by exp(beta r) pi_B / pi_S; if the chosen
candidate fails the threshold test, n_big samples from pi_B and soft best-of-n by exp(beta r).

The threshold test (method.threshold_on) compares with method.threshold one of: the tilted reward
r~ = r + (log pi_B - log pi_S)/beta (`tilted`, the paper), the score s = beta r~ (`score`, the reference code's
`s > 10`), or the raw reward r (`raw`). `accepted` in the step record and the trace is that test's outcome, also
with method.fallback=false (where a failed draft is still appended, as the step pi_S wrote).
"""

from __future__ import annotations

from gsi.methods import register
from gsi.methods.base import Method, candidate_trace, soft_choice
from gsi.runtime.calls import gather

@register("gsi")
class GSI(Method):
    def tested_value(self, r: float, tilted: float) -> float:
        return {"tilted": tilted, "score": self.cfg.beta * tilted, "raw": r}[self.cfg.threshold_on]

    async def step(self, s):
        cfg = self.cfg
        beta = cfg.beta  # once: each read of an unresolved DictConfig re-parses its `${beta}` interpolation
        drafts = await self.sample("small", s, cfg.n)
        r, lb = await gather(self.rewards(s, drafts), self.score("big", s, drafts))
        ratio = [b - c.logprob for b, c in zip(lb, drafts)]
        i, p = soft_choice([beta * ri + li for ri, li in zip(r, ratio)], self.ctx.rng(s, "select"))
        tilted = r[i] + ratio[i] / beta
        accept = bool(self.tested_value(r[i], tilted) > cfg.threshold)
        trace = {"candidates": candidate_trace(drafts, r=r, logp_small=[c.logprob for c in drafts], logp_big=lb,
                                               prob=p),
                 "chosen": i, "tilted": tilted, "accepted": accept}
        drafted = {"chosen_draft_tokens": len(drafts[i].token_ids),
                   "drafted_tokens": sum(len(c.token_ids) for c in drafts)}
        if accept or not cfg.fallback:
            self.ctx.append(s, drafts[i], source="small", accepted=accept, reward=r[i], trace=trace, **drafted)
            return
        cands = await self.sample("big", s, cfg.n_big)
        r = await self.rewards(s, cands)
        j, p = soft_choice([beta * x for x in r], self.ctx.rng(s, "fallback"))
        trace["fallback"] = {"candidates": candidate_trace(cands, r=r, prob=p), "chosen": j}
        self.ctx.append(s, cands[j], source="big", accepted=False, reward=r[j], trace=trace, **drafted)
