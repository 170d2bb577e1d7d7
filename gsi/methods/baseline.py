"""One model alone, greedy or sampled, one step at a time (no reward model calls)."""

from __future__ import annotations

from gsi.methods import register
from gsi.methods.base import Method


@register("baseline")
class Baseline(Method):
    has_acceptance = False

    async def step(self, s):
        steps = await self.sample(self.policy.role, s, 1, greedy=self.cfg.greedy)
        self.ctx.append(s, steps[0], source=self.cfg.policy, accepted=None)
