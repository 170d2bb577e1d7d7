"""PRM-guided step-level beam search (search-and-learn's beam_search), with the tree search DVTS shares.

Per problem, N = method.n and M = method.width (N divisible by M), K = N/M beams kept:

    round 0:  the prompt proposes M steps for each of the K slots (N candidates, all children of the root)
    each round:
        every kept beam proposes M next steps from the policy (all beams at once, one request of n = M each)
        [lookahead L > 0: each candidate is rolled on L more steps greedily; the PRM scores candidate + rollout,
         the rollout is then dropped]
        the PRM scores every candidate step; a beam's score = aggregate(its step rewards):
        last, min or prod
        candidates that finished (EOS, a closed \\boxed{}, max_steps, the context window) leave for the pool
        the K best unfinished candidates by score are kept (ties broken uniformly at random, seeded)
    until no beam is kept; then the N best finished beams form the pool, and one is chosen: hard (best score),
    soft (softmax(beta * score)), majority or weighted_majority vote over their answers.

Differences from search-and-learn: there the N slots are refilled by repeating the kept beams when fewer than K
survive (so a round always costs N samples); here each kept beam always proposes exactly M (a round costs M per
kept beam), and the run's generation.max_steps ends every beam (search-and-learn's last iteration samples to the
end instead). Lookahead is search-and-learn's: greedy steps whose PRM score stands in for the candidate's.

DVTS (gsi/methods/dvts.py) is the same search with N/M groups that keep one beam each.

Costs per round and problem: M pi samples per kept beam (and M * L greedy lookahead steps), one PRM call per
candidate. All per-problem state (the tree of gsi.methods.search.Branch) lives in state.scratch: the method object
holds only its config. Every beam's calls charge the problem's token ledger; a kept beam is named by its slot
(group.place), whose name seeds its samples.
"""

from __future__ import annotations

import numpy as np

from gsi.runtime import seeding
from gsi.methods import register
from gsi.methods.base import Method
from gsi.methods.search import (Branch, aggregate, answer_keys, branches,
                                finish_with, select_response)
from gsi.runtime.calls import gather
from gsi.runtime.state import STOP_CONTEXT, ProblemState, StepRecord, stop_reason_after


@register("beam")
class BeamSearch(Method):
    has_acceptance = False
    # Whether finished candidates compete for the K places (DVTS: a subtree follows its best candidate, finished
    # or not) or leave for the pool first (beam search).
    finished_compete = False

    # The shape of the search: `groups` independent searches of `keep` beams each.
    @property
    def groups(self) -> int:
        return 1

    @property
    def keep(self) -> int:
        return self.cfg.n // self.cfg.width

    def pool_size(self) -> int:
        return self.cfg.n

    def _tree(self, s: ProblemState) -> dict:
        if "tree" not in s.scratch:
            # Beam search: the root fills all K slots of the first round (it proposes N); DVTS (K = 1): every
            # subtree starts at the root. A root per slot: each proposes with its slot's seeds.
            roots = iter(branches(s, [f"{g}.{j}" for g in range(self.groups) for j in range(self.keep)],
                                  self.prompt_lengths(s, self.policy.role, "reward")))
            groups = [{"kept": [next(roots) for _ in range(self.keep)], "finished": []} for _ in range(self.groups)]
            for grp in groups:
                for root in grp["kept"]:
                    root.uid = 0
            s.scratch["tree"] = {"round": 0, "uid": 1, "groups": groups}
        return s.scratch["tree"]

    async def step(self, s):
        cfg = self.cfg
        tree = self._tree(s)
        # Every kept beam of every group proposes M next steps, all at once.
        beams = [(g, beam) for g, grp in enumerate(tree["groups"]) for beam in grp["kept"]]
        proposed = await self._propose([beam for _, beam in beams])

        children: list[list[tuple[Branch, float]]] = [[] for _ in tree["groups"]]  # per group, in slot order
        for (g, beam), (cs, rs) in zip(beams, proposed):
            if not cs and beam.steps:  # the policy gave nothing: the beam ends as it is
                beam.done, beam.stop_reason = True, beam.stop_reason or STOP_CONTEXT
                children[g].append((beam, aggregate([x.reward for x in beam.steps], cfg.aggregate)))
            for c, r in zip(cs, rs):
                child = beam.child(f"b{tree['uid']}", StepRecord(text=c.text, token_ids=tuple(c.token_ids),
                                                                 source=cfg.policy, accepted=None, reward=r))
                child.uid, child.parent = tree["uid"], beam.uid
                tree["uid"] += 1
                child.finish_if(c, max_steps=self.ctx.max_steps, room=self.ctx.room(len(child.context)))
                children[g].append((child, aggregate([x.reward for x in child.steps], cfg.aggregate)))

        rows = []
        for g, grp in enumerate(tree["groups"]):
            if grp["kept"]:
                rows += self._select(s, g, grp, children[g], tree["round"])
        if self.ctx.trace:
            s.trace.append({"round": tree["round"], "candidates": rows})
        tree["round"] += 1
        if not any(grp["kept"] for grp in tree["groups"]):
            self._finish(s, tree)

    async def _propose(self, beams: list[Branch]) -> list[tuple[list, list[float]]]:
        """M next steps of each beam from the policy and the PRM's reward of each (of its rollout, with
        lookahead). In phases over all the problem's beams (sample, roll out, score), so that its requests to one
        role go out together: with the lock-step driver's hold, one PRM call per round, as before the runtime was
        asynchronous (scoring each beam's or candidate's rollout as soon as it ended took twice as many)."""
        cands = await gather(*(self.sample(self.policy.role, beam, self.cfg.width) for beam in beams))
        if not self.cfg.lookahead:
            return list(zip(cands, await gather(*(self.rewards(b, cs) for b, cs in zip(beams, cands)))))
        rolls = await gather(*(gather(*(self._rollout(b, i, c) for i, c in enumerate(cs)))
                               for b, cs in zip(beams, cands)))
        rewards = await gather(*(gather(*(self.rewards(roll, [last], steps=[x.text for x in roll.steps[:-1]],
                                                       context=roll.context[:len(roll.context) - len(last.token_ids)])
                                          for roll, last in rs)) for rs in rolls))
        return [(cs, [r for (r,) in rs]) for cs, rs in zip(cands, rewards)]

    async def _rollout(self, beam: Branch, i: int, cand) -> tuple[Branch, object]:
        """Roll candidate `cand` of `beam` on `lookahead` greedy steps: the rollout and its last step, whose PRM
        reward (given everything before it) is the candidate's. The rollout is then dropped."""
        roll = beam.child(f"{beam.track}.{i}", StepRecord(text=cand.text, token_ids=tuple(cand.token_ids),
                                                          source=self.cfg.policy, accepted=None))
        last = cand
        done = stop_reason_after(roll, last, max_steps=self.ctx.max_steps,
                                 room=self.ctx.room(len(roll.context))) is not None
        for _ in range(self.cfg.lookahead):
            if done:
                break
            out = await self.sample(self.policy.role, roll, 1, greedy=True)
            if not out:
                break
            last = out[0]
            roll.steps.append(StepRecord(text=last.text, token_ids=tuple(last.token_ids), source=self.cfg.policy,
                                         accepted=None))
            roll.extend(last.token_ids)
            done = stop_reason_after(roll, last, max_steps=self.ctx.max_steps + self.cfg.lookahead,
                                     room=self.ctx.room(len(roll.context))) is not None
        return roll, last

    def _select(self, s, g, grp, cands, rnd) -> list[dict]:
        """Keep the K best of this group's candidates; finished ones go to the pool. Returns trace rows."""
        scores = np.array([sc for _, sc in cands], dtype=np.float64)
        rng = seeding.rng(self.ctx.seed, s.id, rnd, "keep", g)
        # Best score first; equal scores in a uniformly random order.
        order = np.lexsort((rng.random(len(cands)), -scores))
        kept, finished = [], []
        if self.finished_compete:
            for i in order[:self.keep]:
                (finished if cands[i][0].done else kept).append(int(i))
        else:
            finished = [i for i in range(len(cands)) if cands[i][0].done]
            kept = [int(i) for i in order if not cands[i][0].done][:self.keep]
        grp["kept"] = [cands[i][0] for i in kept]
        for j, beam in enumerate(grp["kept"]):  # a kept beam is named by its slot, which seeds its next samples
            beam.track = f"{g}.{j}"
        grp["finished"] += [cands[i] for i in finished]
        return [{"group": g, "parent": b.parent, "id": b.uid, "r": b.steps[-1].reward,
                 "score": float(sc), "tokens": len(b.steps[-1].token_ids), "finished": bool(b.done),
                 "kept": i in kept, "pooled": i in finished} for i, (b, sc) in enumerate(cands)]

    def _finish(self, s: ProblemState, tree: dict) -> None:
        pool = [x for grp in tree["groups"] for x in grp["finished"]]
        # The best N finished beams (search-and-learn's sort_completed); stable, so ties keep their order.
        pool = sorted(pool, key=lambda x: -x[1])[:self.pool_size()]
        if not pool:  # the policy never gave a first step (nothing fits the context window)
            finish_with(s, [], s.context, STOP_CONTEXT)
            s.scratch.pop("tree", None)
            return
        beams, scores = [b for b, _ in pool], [sc for _, sc in pool]
        texts = [b.response_text for b in beams]
        answers = answer_keys(texts) if self.cfg.selection in ("majority", "weighted_majority") else None
        i, p = select_response(scores, answers, self.cfg.selection, self.ctx.rng(s, "select-response"),
                               self.cfg.beta)
        chosen = beams[i]
        if self.ctx.trace:
            s.trace.append({"responses": [{"id": b.uid, "score": sc, "steps": len(b.steps),
                                           "stop": b.stop_reason, **({"prob": float(p[k])} if p is not None else {})}
                                          for k, (b, sc) in enumerate(pool)], "chosen": i})
        finish_with(s, chosen.steps, chosen.context, chosen.stop_reason)
        s.scratch.pop("tree", None)
