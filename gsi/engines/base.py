"""The role interface every method talks to: two generators (small, big) and a reward model.

All calls take a batch of many problems' requests at once: the runtime (gsi/runtime/scheduler.py) merges the
requests waiting for a role into one call. Contexts are token ids (the rendered prompt followed by the accepted steps' ids): small and
big share a tokenizer, and nothing is re-tokenised between roles.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Sequence

FINISH_DELIMITER = "delimiter"  # the last token's text contains the step delimiter
FINISH_EOS = "eos"
FINISH_LENGTH = "length"  # max_tokens reached


@dataclass(frozen=True)
class GenerateRequest:
    context: Sequence[int]  # prompt + accepted steps, token ids
    n: int  # continuations to sample
    seed: int  # continuation i is sampled with seed + i: callers space seeds at least n apart
    max_tokens: int  # cap for this step (max_step_tokens, or less when the context window is nearly full)


@dataclass(frozen=True)
class Step:
    token_ids: tuple[int, ...]
    text: str
    logprob: float  # sum over the step's tokens of log pi(token | ...) under the sampled (tempered) distribution
    finish: str  # FINISH_DELIMITER | FINISH_EOS | FINISH_LENGTH


@dataclass(frozen=True)
class RewardRequest:
    problem: str  # the problem as the user turn shows it
    steps: Sequence[str]  # accepted steps and, last, the step to score; a trailing delimiter is not a step


_STATS_LOCK = threading.Lock()


@dataclass
class RoleStats:
    """Token and time accounting for one role (compute.py turns it into FLOPs)."""

    calls: int = 0
    requests: int = 0
    prompt_tokens: int = 0  # context tokens sent, including those read from the prefix cache
    cached_tokens: int = 0  # context tokens read from the prefix cache: not recomputed
    generated_tokens: int = 0
    busy_s: float = 0.0  # wall time inside this role's engine calls

    @property
    def prefilled_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    def as_dict(self) -> dict:
        return {**asdict(self), "prefilled_tokens": self.prefilled_tokens}

    def add(self, *, prompt: int = 0, cached: int = 0, generated: int = 0) -> None:
        """Count one request's tokens (under a lock: a role that takes concurrent calls counts from threads)."""
        with _STATS_LOCK:
            self.prompt_tokens += prompt
            self.cached_tokens += cached
            self.generated_tokens += generated

    @contextmanager
    def timed(self, requests: int):
        """One engine call. busy_s is the union of the calls' spans: a remote role takes calls while others run
        (continuous batching in its server), and time when two run is busy once."""
        with _STATS_LOCK:
            if not getattr(self, "_active", 0):
                self._since = time.perf_counter()
            self._active = getattr(self, "_active", 0) + 1
        try:
            yield
        finally:
            with _STATS_LOCK:
                self._active -= 1
                if self._active == 0:
                    self.busy_s += time.perf_counter() - self._since
                self.calls += 1
                self.requests += requests


class Generator(ABC):
    """A policy (pi_S or pi_B) at a fixed temperature: sample steps and score given steps."""

    role: str
    temperature: float
    max_model_len: int
    eos_token_ids: frozenset[int]
    stats: RoleStats

    @abstractmethod
    def generate(self, requests: Sequence[GenerateRequest], *, greedy: bool = False) -> list[list[Step]]:
        """For each request, `n` continuations, each stopped at the first token whose text contains the step
        delimiter, at EOS, or at `max_tokens`; the stop token is part of the step."""

    @abstractmethod
    def score(self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]) -> list[float]:
        """Teacher forcing: sum of log pi(continuation tokens | context) at this generator's temperature."""


class RewardModel(ABC):
    """A process reward model: the probability that the last step of each request is correct."""

    role = "reward"
    max_model_len: int
    stats: RoleStats

    @abstractmethod
    def reward(self, requests: Sequence[RewardRequest]) -> list[float]:
        """One value in [0, 1] per request, for its last step."""

    def input_length(self, problem: str, steps: Sequence[str]) -> int | None:
        """How many tokens the PRM's own input for (problem, steps) has, for the compute accounting; None when
        unknown (the accounting then counts the generators' tokens instead)."""
        return None


@dataclass
class Engines:
    """The registry of the three roles that every method plugin shares."""

    small: Generator
    big: Generator
    reward: RewardModel
    tokenizer: object = None  # the tokenizer small and big share (renders prompts, decodes)
    closers: list = field(default_factory=list)
    # Non-embedding parameter count per role (FLOPs = 2 * params * tokens); filled by the registry.
    params: dict = field(default_factory=dict)
    # {role: device} for the roles that share a device with another role (gsi.engines.placement.shared_devices),
    # and how many engine calls may run on such a device at once (hardware.device_calls): the runtime's rule.
    shared_devices: dict = field(default_factory=dict)
    device_calls: int = 1

    def roles(self) -> dict:
        return {"small": self.small, "big": self.big, "reward": self.reward}

    def stats(self) -> dict[str, dict]:
        return {name: role.stats.as_dict() for name, role in self.roles().items()}

    def close(self) -> None:
        while self.closers:
            self.closers.pop()()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
