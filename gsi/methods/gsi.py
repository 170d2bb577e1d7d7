"""GSI (methods.md): soft best-of-n over pi_S drafts weighted by exp(beta r) pi_B / pi_S; if the chosen
candidate's tilted reward is under the threshold, n_big samples from pi_B and soft best-of-n by exp(beta r)."""

from __future__ import annotations

from gsi.methods import register
from gsi.methods.base import Method, candidate_trace, soft_choice


@register("gsi")
class GSI(Method):
    def __init__(self, cfg, engines, ctx):
        super().__init__(cfg, engines, ctx)
        if cfg.threshold_on not in ("tilted", "raw"):
            raise ValueError(f"method.threshold_on must be 'tilted' or 'raw', got {cfg.threshold_on!r}")
        if cfg.beta <= 0:
            raise ValueError(f"beta must be > 0 for GSI (the tilted reward divides by it), got {cfg.beta}")

    def step(self, states):
        cfg, small, big = self.cfg, self.engines.small, self.engines.big
        drafts = self.sample(small, states, cfg.n)
        rewards, logp_big = self.concurrently(lambda: self.rewards(states, drafts),
                                              lambda: self.score(big, states, drafts))

        rejected, decisions = [], {}
        for s, cands, r, lb in zip(states, drafts, rewards, logp_big):
            ratio = [b - c.logprob for b, c in zip(lb, cands)]
            i, p = soft_choice([cfg.beta * ri + li for ri, li in zip(r, ratio)], self.ctx.rng(s, "select"))
            tilted = r[i] + ratio[i] / cfg.beta
            accept = (tilted if cfg.threshold_on == "tilted" else r[i]) > cfg.threshold
            trace = {"candidates": candidate_trace(cands, r=r, logp_small=[c.logprob for c in cands],
                                                   logp_big=lb, prob=p),
                     "chosen": i, "tilted": tilted, "accepted": bool(accept or not cfg.fallback)}
            # The draft put to the accept test (for n = 1 the RSD paper's "draft tokens").
            draft_tokens = len(cands[i].token_ids)
            if accept or not cfg.fallback:
                self.ctx.append(s, cands[i], source="small", accepted=bool(accept), reward=r[i],
                                draft_tokens=draft_tokens, trace=trace)
            else:
                rejected.append(s)
                decisions[s.id] = (trace, draft_tokens)

        fallback = self.sample(big, rejected, cfg.n_big)
        fallback_rewards = self.rewards(rejected, fallback)
        for s, cands, r in zip(rejected, fallback, fallback_rewards):
            trace, draft_tokens = decisions[s.id]
            j, p = soft_choice([cfg.beta * x for x in r], self.ctx.rng(s, "fallback"))
            trace["fallback"] = {"candidates": candidate_trace(cands, r=r, prob=p), "chosen": j}
            self.ctx.append(s, cands[j], source="big", accepted=False, reward=r[j], draft_tokens=draft_tokens,
                            trace=trace)
