"""Best-of-n with one policy (pi_S or pi_B), no importance weights and no fallback.

level=step: every step, n candidates, one chosen by softmax(beta r) (soft) or argmax r (hard).
level=response: n whole responses advanced side by side a step at a time, each step scored by the PRM; at the
end one is chosen by its aggregated reward (last, min or product; soft or hard), by majority vote over the
final answers, or by reward-weighted majority vote.
"""

from __future__ import annotations

import math
from collections import defaultdict

from gsi.methods import register
from gsi.methods.base import Method, candidate_trace, hard_choice, soft_choice
from gsi.state import ProblemState, StepRecord, stop_reason_after

SELECTIONS = ("soft", "hard", "majority", "weighted_majority")


@register("bon")
class BestOfN(Method):
    has_acceptance = False

    def __init__(self, cfg, engines, ctx):
        super().__init__(cfg, engines, ctx)
        if cfg.policy not in ("small", "big"):
            raise ValueError(f"method.policy must be 'small' or 'big', got {cfg.policy!r}")
        if cfg.selection not in SELECTIONS:
            raise ValueError(f"method.selection must be one of {SELECTIONS}, got {cfg.selection!r}")
        if cfg.level not in ("step", "response"):
            raise ValueError(f"method.level must be 'step' or 'response', got {cfg.level!r}")
        if cfg.level == "step" and cfg.selection not in ("soft", "hard"):
            raise ValueError("method.selection: voting needs whole responses (method.level=response)")
        if cfg.aggregate not in ("last", "min", "prod"):
            raise ValueError(f"method.aggregate must be last, min or prod, got {cfg.aggregate!r}")
        self.policy = engines.small if cfg.policy == "small" else engines.big

    def step(self, states):
        if self.cfg.level == "step":
            self._step_level(states)
        else:
            self._response_level(states)

    def _pick(self, scores, rng):
        if self.cfg.selection == "hard":
            return hard_choice(scores, rng)
        return soft_choice([self.cfg.beta * x for x in scores], rng)

    def _step_level(self, states):
        cands = self.sample(self.policy, states, self.cfg.n)
        rewards = self.rewards(states, cands)
        for s, c, r in zip(states, cands, rewards):
            i, p = self._pick(r, self.ctx.rng(s, "select"))
            self.ctx.append(s, c[i], source=self.cfg.policy, accepted=None, reward=r[i],
                            trace={"candidates": candidate_trace(c, r=r, prob=p), "chosen": i})

    # Response level: each problem holds n tracks, ProblemState-like views advanced one step per round.

    def _tracks(self, s: ProblemState) -> list[ProblemState]:
        if "tracks" not in s.scratch:
            s.scratch["tracks"] = [
                ProblemState(index=s.index, id=s.id, problem=s.problem, reference=s.reference,
                             prompt_ids=s.prompt_ids, context=list(s.prompt_ids))
                for _ in range(self.cfg.n)]
            # The n tracks share the prompt: each role reads it once (charged to the problem), and each track
            # starts past it.
            prompt = {self.policy.role: len(s.prompt_ids),
                      "reward": self.engines.reward.input_length(s.problem, []) or len(s.prompt_ids)}
            for role, n in prompt.items():
                s.charge(role, n, [], generated=False)
                for t in s.scratch["tracks"]:
                    t.read[role] = n
        return s.scratch["tracks"]

    def _response_level(self, states):
        owners, tracks, numbers = [], [], []
        for s in states:
            for k, t in enumerate(self._tracks(s)):
                if not t.done:
                    owners.append(s), tracks.append(t), numbers.append(k)
        # One sample per live track, all in one call; each track draws with its own seed.
        requests = [self.ctx.request(t, self.policy.role, 1, track=k) for t, k in zip(tracks, numbers)]
        out = self.policy.generate(requests) if requests else []
        for t, steps in zip(tracks, out):
            self.count_generated(t, self.policy.role, steps)
        rewards = self.rewards(tracks, out)
        for owner, t, steps, r in zip(owners, tracks, out, rewards):
            step = steps[0]
            t.steps.append(StepRecord(text=step.text, token_ids=tuple(step.token_ids), source=self.cfg.policy,
                                      accepted=None, reward=r[0]))
            t.extend(step.token_ids)
            reason = stop_reason_after(t, step, max_steps=self.ctx.max_steps,
                                       room=self.ctx.room(len(t.context)))
            if reason:
                t.done, t.stop_reason = True, reason
        for s in states:
            ts = self._tracks(s)
            if all(t.done for t in ts):
                self._finish(s, ts)

    def _aggregate(self, t: ProblemState) -> float:
        rs = [st.reward for st in t.steps]
        if not rs:
            return 0.0
        if self.cfg.aggregate == "last":
            return rs[-1]
        if self.cfg.aggregate == "min":
            return min(rs)
        return math.prod(rs)

    def _finish(self, s: ProblemState, ts: list[ProblemState]) -> None:
        from grading.extract import extract_answer
        from grading.normalize import normalize

        scores = [self._aggregate(t) for t in ts]
        rng = self.ctx.rng(s, "select-response")
        if self.cfg.selection in ("soft", "hard"):
            i, p = self._pick(scores, rng)
        else:
            votes: dict[str, float] = defaultdict(float)
            # Votes go to normalised answers, so "1/2" and "\\frac{1}{2}" count as one.
            answers = [extract_answer(t.response_text) for t in ts]
            answers = [normalize(a) if a is not None else None for a in answers]
            for a, sc in zip(answers, scores):
                if a is not None:
                    votes[a] += 1.0 if self.cfg.selection == "majority" else sc
            if votes:
                best = max(votes.values())
                winners = sorted(a for a, v in votes.items() if v == best)
                winner = winners[int(rng.integers(len(winners)))]
                # Among the responses with the winning answer, the best-scored one is reported.
                i = max((k for k, a in enumerate(answers) if a == winner),
                        key=lambda k: scores[k])
            else:
                i = int(max(range(len(ts)), key=lambda k: scores[k]))
            p = None
        chosen = ts[i]
        for t in ts:  # every track's work is the problem's
            for role in t.tokens:
                for kind in ("generated", "context"):
                    s.tokens[role][kind] += t.tokens[role][kind]
                    s.tokens_nocache[role][kind] += t.tokens_nocache[role][kind]
            s.empty_candidates += t.empty_candidates
        s.steps = chosen.steps
        s.context = chosen.context
        s.final_text = chosen.response_text
        s.done, s.stop_reason = True, chosen.stop_reason
        if self.ctx.trace:
            s.trace.append({"responses": [{"score": sc, "steps": len(t.steps), "stop": t.stop_reason,
                                           **({"prob": float(p[k])} if p is not None else {})}
                                          for k, (t, sc) in enumerate(zip(ts, scores))], "chosen": i})
        s.scratch.pop("tracks", None)
