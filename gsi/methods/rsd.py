"""RSD (methods.md): pi_S drafts (n = 1, or soft best-of-n over n drafts), accept when r >= delta, else pi_B
writes the step (one sample, or soft best-of-n over n_big samples). `greedy` decodes draft and target greedily
(the RSD paper: temperature 0, one draft, one target step)."""

from __future__ import annotations

from gsi.methods import register
from gsi.methods.base import Method, candidate_trace, soft_choice
from gsi.runtime.state import STOP_PATIENCE


@register("rsd")
class RSD(Method):
    def __init__(self, cfg, engines, ctx):
        super().__init__(cfg, engines, ctx)
        # Rounds in a row in which no problem of the run finished (the RSD code's `num_unchanged`).
        self._rounds_without_finish = 0

    @classmethod
    def check_run(cls, cfg, *, n_problems: int, batch_size: int) -> None:
        if cfg.patience > 0 and batch_size < n_problems:
            # The RSD code runs every problem of a dataset as one lock-step batch and counts patience over it;
            # with a smaller scheduler batch the count (and so who gets cut off) would depend on batch_size.
            raise ValueError(f"method.patience={cfg.patience} counts rounds over the whole run, so every problem "
                             f"must be in one batch: batch_size={batch_size} < {n_problems} problems; set "
                             f"batch_size>={n_problems} (or method.patience=0)")

    @property
    def needs_lockstep(self) -> bool:
        return self.cfg.patience > 0  # the reproduction flag's patience counts rounds over the whole run

    async def step(self, s):
        cfg = self.cfg
        beta = cfg.beta  # once: each read of an unresolved DictConfig re-parses its `${beta}` interpolation
        drafts = await self.sample("small", s, cfg.n, greedy=cfg.greedy)
        r = await self.rewards(s, drafts)
        if len(drafts) > 1:
            i, p = soft_choice([beta * x for x in r], self.ctx.rng(s, "select"))
        else:
            i, p = 0, [1.0]
        accept = r[i] >= cfg.delta
        trace = {"candidates": candidate_trace(drafts, r=r, prob=p), "chosen": i, "accepted": bool(accept)}
        # The draft put to the accept test (for n = 1 the RSD paper's "draft tokens"), and all n drafts.
        drafted = {"chosen_draft_tokens": len(drafts[i].token_ids),
                   "drafted_tokens": sum(len(c.token_ids) for c in drafts)}
        if accept:
            self.ctx.append(s, drafts[i], source="small", accepted=True, reward=r[i], trace=trace, **drafted)
            return
        targets = await self.sample("big", s, cfg.n_big, greedy=cfg.greedy)
        # One target sample is taken as is (the RSD paper); several are chosen among by soft best-of-n.
        if len(targets) > 1:
            rt = await self.rewards(s, targets)
            j, p = soft_choice([beta * x for x in rt], self.ctx.rng(s, "fallback"))
        else:
            rt, j, p = None, 0, [1.0]
        trace["fallback"] = {"candidates": candidate_trace(targets, r=rt, prob=p), "chosen": j}
        self.ctx.append(s, targets[j], source="big", accepted=False, reward=None if rt is None else rt[j],
                        trace=trace, **drafted)

    def end_round(self, states):
        """The RSD code's run-global patience, kept only to reproduce its numbers: it decides at the start of a
        round whether this is the last one (its test runs after the round's step, on the count of the rounds
        before it); then every problem of that round ends. check_run guarantees that a round holds every
        unfinished problem of the run, so a finish here is one of the run."""
        if self.cfg.patience <= 0:
            return
        if self._rounds_without_finish >= self.cfg.patience - 1:
            for s in states:
                if not s.done:
                    s.done, s.stop_reason = True, STOP_PATIENCE
        self._rounds_without_finish = 0 if any(s.done for s in states) else self._rounds_without_finish + 1
