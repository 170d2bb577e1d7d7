"""RSD (methods.md): pi_S drafts (n = 1, or soft best-of-n over n drafts), accept when r >= delta, else pi_B
writes the step (one sample, or soft best-of-n over n_big samples)."""

from __future__ import annotations

from gsi.methods import register
from gsi.methods.base import Method, candidate_trace, soft_choice
from gsi.state import STOP_PATIENCE


@register("rsd")
class RSD(Method):
    def __init__(self, cfg, engines, ctx):
        super().__init__(cfg, engines, ctx)
        self._rounds_without_finish = 0

    @property
    def cohort_safe(self) -> bool:
        return self.cfg.patience <= 0  # the reproduction flag's patience counts rounds over the whole batch

    def step(self, states):
        cfg, small, big = self.cfg, self.engines.small, self.engines.big
        drafts = self.sample(small, states, cfg.n)
        rewards = self.rewards(states, drafts)
        rejected, decisions = [], {}
        for s, cands, r in zip(states, drafts, rewards):
            if len(cands) > 1:
                i, p = soft_choice([cfg.beta * x for x in r], self.ctx.rng(s, "select"))
            else:
                i, p = 0, [1.0]
            accept = r[i] >= cfg.delta
            trace = {"candidates": candidate_trace(cands, r=r, prob=p), "chosen": i, "accepted": bool(accept)}
            # The draft put to the accept test (for n = 1 the RSD paper's "draft tokens").
            draft_tokens = len(cands[i].token_ids)
            if accept:
                self.ctx.append(s, cands[i], source="small", accepted=True, reward=r[i], draft_tokens=draft_tokens,
                                trace=trace)
            else:
                rejected.append(s)
                decisions[s.id] = (trace, draft_tokens)

        targets = self.sample(big, rejected, cfg.n_big)
        # One target sample is taken as is (the RSD paper); several are chosen among by soft best-of-n.
        scored = [s for s, c in zip(rejected, targets) if len(c) > 1]
        target_rewards = dict(zip((s.id for s in scored),
                                  self.rewards(scored, [c for c in targets if len(c) > 1])))
        for s, cands in zip(rejected, targets):
            trace, draft_tokens = decisions[s.id]
            r = target_rewards.get(s.id)
            if r is not None:
                j, p = soft_choice([cfg.beta * x for x in r], self.ctx.rng(s, "fallback"))
            else:
                j, p = 0, [1.0]
            trace["fallback"] = {"candidates": candidate_trace(cands, r=r, prob=p), "chosen": j}
            self.ctx.append(s, cands[j], source="big", accepted=False, reward=None if r is None else r[j],
                            draft_tokens=draft_tokens, trace=trace)

        if cfg.patience > 0:  # the RSD code's batch-global patience, kept only to reproduce its numbers
            self._rounds_without_finish = 0 if any(s.done for s in states) else self._rounds_without_finish + 1
            if self._rounds_without_finish >= cfg.patience - 1:
                for s in states:
                    if not s.done:
                        s.done, s.stop_reason = True, STOP_PATIENCE
