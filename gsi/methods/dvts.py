"""Diverse verifier tree search (search-and-learn's dvts): N/M independent subtrees, each a PRM-guided search of
width M, for diversity.

Per problem, N = method.n, M = method.width, G = N/M subtrees:

    every subtree starts at the prompt
    each round, every unfinished subtree's one beam proposes M next steps from the policy (all subtrees at
    once), the PRM scores them, and the subtree follows its best candidate by aggregated reward (last, min or
    prod; ties broken uniformly at random, seeded); a subtree whose best candidate finished (EOS, a closed
    \\boxed{}, max_steps, the context window) is done
    when every subtree is done, its G final beams are the pool: one is chosen by hard (best score), soft,
    majority or weighted_majority selection.

Subtrees never share a beam after the first step: each keeps its own single beam, so the G answers are G
separate searches (the diversity beam search lacks: its K kept beams often descend from one parent).
(search-and-learn returns all M final candidates of each subtree; the pool here is the G chosen beams.)

Costs per round and problem: M pi samples and M PRM calls per unfinished subtree (and M * L greedy steps with
lookahead L). The tree search itself is gsi/methods/beam.py's.
"""

from __future__ import annotations

from gsi.methods import register
from gsi.methods.beam import BeamSearch


@register("dvts")
class DVTS(BeamSearch):
    finished_compete = True

    @property
    def groups(self) -> int:
        return self.cfg.n // self.cfg.width

    @property
    def keep(self) -> int:
        return 1

    def pool_size(self) -> int:
        return self.groups
