"""Engines with known distributions, for exact tests of the methods (no vLLM, no model).

A step is one token k of a small vocabulary of step types; each policy draws steps from a fixed table
pi(k), independently of the context, and the reward of a step is a fixed table r(k). So a test knows every
probability: GSI's selection, the tilted policy pi_B(k) exp(beta r(k)) / Z, RSD's acceptance rate.
Step type 0 can be made the EOS step (finish='eos') to test stopping.
"""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from gsi.engines.base import (FINISH_DELIMITER, FINISH_EOS, Engines, GenerateRequest, Generator, RewardModel,
                              RewardRequest, RoleStats, Step)
from gsi.engines.rewards import split_steps


def step_text(k: int) -> str:
    return f"s{k}\n\n"


class TableGenerator(Generator):
    def __init__(self, role: str, probs: Sequence[float], *, eos_step: int | None = None,
                 max_model_len: int = 100_000, texts: Sequence[str] | None = None):
        p = np.asarray(probs, dtype=np.float64)
        if np.any(p <= 0) or abs(p.sum() - 1) > 1e-9:
            raise ValueError(f"{role}: step probabilities must be positive and sum to 1")
        self.role, self.probs, self.logp = role, p, np.log(p)
        self.eos_step = eos_step
        self.texts = list(texts) if texts is not None else [step_text(k) for k in range(len(p))]
        self.temperature = 1.0
        self.max_model_len = max_model_len
        self.eos_token_ids = frozenset([eos_step] if eos_step is not None else [])
        self.stats = RoleStats()
        self._lock = threading.Lock()  # one call at a time, like a vLLM engine

    def _step(self, k: int) -> Step:
        finish = FINISH_EOS if k == self.eos_step else FINISH_DELIMITER
        return Step(token_ids=(k,), text=self.texts[k], logprob=float(self.logp[k]), finish=finish)

    def generate(self, requests: Sequence[GenerateRequest], *, greedy: bool = False) -> list[list[Step]]:
        with self._lock, self.stats.timed(len(requests)):
            out = []
            for req in requests:
                rng = np.random.default_rng(req.seed)
                ks = [int(np.argmax(self.probs))] * req.n if greedy else rng.choice(len(self.probs), req.n, p=self.probs)
                out.append([self._step(int(k)) for k in ks])
                self.stats.prompt_tokens += len(req.context)
                self.stats.generated_tokens += req.n
            return out

    def score(self, contexts, continuations) -> list[float]:
        with self._lock, self.stats.timed(len(contexts)):
            self.stats.prompt_tokens += sum(len(c) + len(t) for c, t in zip(contexts, continuations))
            return [float(sum(self.logp[k] for k in cont)) for cont in continuations]


class TableReward(RewardModel):
    def __init__(self, rewards: Sequence[float], max_model_len: int = 100_000, texts: Sequence[str] | None = None,
                 delimiter: str = "\n\n"):
        self.r = np.asarray(rewards, dtype=np.float64)
        texts = texts if texts is not None else [step_text(k) for k in range(len(self.r))]
        self.index = {t.strip(): k for k, t in enumerate(texts)}
        self.delimiter = delimiter
        self.max_model_len = max_model_len
        self.stats = RoleStats()
        self._lock = threading.Lock()

    def reward(self, requests: Sequence[RewardRequest]) -> list[float]:
        with self._lock, self.stats.timed(len(requests)):
            out = []
            for req in requests:
                # Like a real PRM (gsi.engines.rewards): empty steps are dropped, the last non-empty one is scored.
                steps = split_steps(req.steps, self.delimiter)
                out.append(float(self.r[self.index[steps[-1]]]) if steps else 0.0)
                self.stats.prompt_tokens += len(req.steps)
            return out


def table_engines(pi_small, pi_big, rewards, *, eos_step: int | None = None,
                  texts: Sequence[str] | None = None) -> Engines:
    """`texts` (one per step type) replaces the default "s<k>" step texts, e.g. to put answers in \\boxed{}."""
    return Engines(small=TableGenerator("small", pi_small, eos_step=eos_step, texts=texts),
                   big=TableGenerator("big", pi_big, eos_step=eos_step, texts=texts),
                   reward=TableReward(rewards, texts=texts))
