"""The one front end of the generators and of the PRM, over two transports: in process (gsi.engines.vllm) and HTTP
(gsi.engines.remote). Everything that decides what is asked and what the answer means lives here, once:

- `generate`: each of a request's n samples is its own n=1 request with seed `seed + i` (what vLLM does for n>1
  children), so every sample has its own cached-token count for the stats; temperature 1.0, or 0 when greedy (the
  temperature is inside the engine, gsi.engines.worker). Stop ids: every vocabulary id whose decoded text contains
  the delimiter, plus the model's EOS ids. A step's log-prob is the sum of its tokens' (tempered) log-probs; a
  sampled token without its log-prob is an error.
- `score`: teacher forcing, the prompt log-probs of context + continuation. The prefix cache is read when allowed,
  but vLLM leaves the cached positions' prompt log-probs uninitialised (vllm-facts §3): only positions after the
  cached ones are read, and a request with `cached >= len(context)`, or whose entries are not finite log-probs of
  the expected tokens, is resent without the prefix cache. `token_logprobs` gives the same terms token by token
  (a verifier PRM reads their minimum: gsi.engines.verifier).
- `reward`: the adapter (gsi.engines.rewards) builds the PRM's input and reads its rows; a request with no
  non-empty step gets EMPTY_STEP_REWARD without a model call; a score outside [0, 1] is an error.

A transport implements `_sample`, `_teacher_force` (generators) or `_pool` (PRM), and `_failure`: the exception
that names it (the engine, or the server and its URL).
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

from gsi.engines.base import (
    FINISH_DELIMITER,
    FINISH_EOS,
    FINISH_LENGTH,
    GenerateRequest,
    Generator,
    RewardModel,
    RewardRequest,
    RoleStats,
    Step,
)
from gsi.engines.rewards import PRMAdapter, PRMInput, split_steps

EMPTY_STEP_REWARD = 0.0  # the reward of a request whose steps are all empty (nothing to score)

_DELIMITER_IDS: dict[tuple[int, int, str], list[int]] = {}


def delimiter_token_ids(tokenizer, delimiter: str) -> list[int]:
    """Every id whose decoded text contains the delimiter (the published GSI code's stop set)."""
    n = len(tokenizer)
    key = (id(tokenizer), n, delimiter)
    if key not in _DELIMITER_IDS:
        texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False,
                                       clean_up_tokenization_spaces=False)
        _DELIMITER_IDS[key] = [i for i, t in enumerate(texts) if delimiter in t]
    return list(_DELIMITER_IDS[key])


@dataclass(frozen=True)
class Sample:
    """One n=1 sampling request, as a transport sends it."""

    context: list[int]
    seed: int | None  # None: greedy
    max_tokens: int


@dataclass(frozen=True)
class Sampled:
    token_ids: tuple[int, ...]
    logprobs: list[float | None]  # per token: its log-prob, None when the answer has none for that token
    cached: int  # context tokens read from the prefix cache


@dataclass(frozen=True)
class TeacherForced:
    cached: int  # prompt tokens read from the prefix cache: their log-probs are not valid
    logprob_at: Callable[[int], float | None]  # log-prob of the prompt's token at a position, None when absent


@dataclass(frozen=True)
class Pooled:
    rows: object  # a float32 CPU tensor, one row per pooled token ([k] or [k, labels])
    cached: int


class StepGenerator(Generator):
    """A policy at a fixed temperature behind a transport. See the module docstring."""

    # Whether the runtime may call it while a call runs (a server that batches concurrent requests; the
    # transport then passes a lock that locks nothing): gsi.runtime.scheduler's continuous batching.
    concurrent_calls = False

    def __init__(self, role: str, tokenizer, *, delimiter: str, eos_token_ids: Sequence[int],
                 prefix_caching: bool = True, lock: threading.Lock | None = None):
        self.role = role
        self.tokenizer = tokenizer
        self.delimiter = delimiter
        self.stats = RoleStats()
        self.eos_token_ids = frozenset(int(i) for i in eos_token_ids)
        self.delimiter_ids = frozenset(delimiter_token_ids(tokenizer, delimiter))
        if not self.delimiter_ids:
            raise ValueError(f"{role}: no token of the vocabulary contains the step delimiter {delimiter!r}")
        self.stop_token_ids = sorted(self.delimiter_ids | self.eos_token_ids)
        self.prefix_caching = prefix_caching
        # One call at a time per engine; engines that share a process's vLLM state share one lock.
        self._lock = lock or threading.Lock()
        # how many teacher-forced requests had to be resent without the prefix cache (diagnostics)
        self.score_resends = 0

    # -- the transport ---------------------------------------------------------------------------------------------
    @abstractmethod
    def _sample(self, samples: Sequence[Sample], *, greedy: bool) -> list[Sampled]:
        """Sample every request (all at once: the engine batches them), with self.stop_token_ids."""

    @abstractmethod
    def _teacher_force(self, prompts: Sequence[list[int]], *, use_cache: bool) -> list[TeacherForced | None]:
        """Prompt log-probs of every prompt (None: the answer could not be read; it is resent without the cache)."""

    @abstractmethod
    def _failure(self, message: str) -> Exception:
        """The exception for a broken answer, naming the engine or server."""

    def _reads_prefix_cache(self) -> bool:
        return self.prefix_caching

    # -- sampling ------------------------------------------------------------------------------------------------
    def _finish(self, token_ids: Sequence[int]) -> str:
        if not token_ids:
            return FINISH_LENGTH
        last = token_ids[-1]
        if last in self.eos_token_ids:
            return FINISH_EOS
        if last in self.delimiter_ids:
            return FINISH_DELIMITER
        return FINISH_LENGTH

    def _samples(self, requests: Sequence[GenerateRequest], greedy: bool) -> tuple[list[Sample], list[tuple]]:
        samples, owners = [], []
        for k, req in enumerate(requests):
            context = [int(t) for t in req.context]
            if not context:
                raise ValueError(f"{self.role}.generate: request {k} has an empty context")
            room = self.max_model_len - len(context)
            if room < 1:
                raise ValueError(f"{self.role}.generate: request {k}'s context has {len(context)} tokens, no room "
                                 f"left in max_model_len {self.max_model_len}")
            max_tokens = min(int(req.max_tokens), room)
            if max_tokens < 1 or req.n < 1:
                raise ValueError(f"{self.role}.generate: request {k} asks for n={req.n}, max_tokens={req.max_tokens}")
            for i in range(req.n):
                samples.append(Sample(context, None if greedy else int(req.seed) + i, max_tokens))
                owners.append((k, len(context)))
        return samples, owners

    def generate(self, requests: Sequence[GenerateRequest], *, greedy: bool = False) -> list[list[Step]]:
        if not requests:
            return []
        samples, owners = self._samples(requests, greedy)
        with self._lock, self.stats.timed(len(requests)):
            outputs = self._sample(samples, greedy=greedy)
        results: list[list] = [[] for _ in requests]
        token_lists = []
        for out, (k, ctx_len) in zip(outputs, owners):
            if len(out.logprobs) != len(out.token_ids):
                raise self._failure(f"returned {len(out.logprobs)} log-probs for {len(out.token_ids)} tokens")
            total = 0.0
            for pos, (tok, lp) in enumerate(zip(out.token_ids, out.logprobs)):
                if lp is None:
                    raise self._failure(f"returned no log-prob for sampled token {tok} at {pos}")
                total += lp
            self.stats.add(prompt=ctx_len, cached=out.cached, generated=len(out.token_ids))
            token_lists.append(out.token_ids)
            results[k].append((out.token_ids, total))
        texts = iter(self.tokenizer.batch_decode([list(ids) for ids in token_lists], skip_special_tokens=True,
                                                 clean_up_tokenization_spaces=False))
        return [[Step(token_ids=ids, text=next(texts), logprob=lp, finish=self._finish(ids)) for ids, lp in row]
                for row in results]

    # -- teacher forcing -----------------------------------------------------------------------------------------
    def score(self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]) -> list[float]:
        return [float(sum(lps)) for lps in self.token_logprobs(contexts, continuations)]

    def token_logprobs(self, contexts: Sequence[Sequence[int]],
                       continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        """Teacher forcing, token by token: log pi(t | context, earlier tokens) for each continuation token (the
        terms of `score`; a verifier PRM reads their minimum, gsi.engines.verifier)."""
        if len(contexts) != len(continuations):
            raise ValueError(f"{self.role}.score: {len(contexts)} contexts but {len(continuations)} continuations")
        results: list[list[float] | None] = [None] * len(contexts)
        todo = []
        for k, (ctx, cont) in enumerate(zip(contexts, continuations)):
            ctx = [int(t) for t in ctx]
            cont = [int(t) for t in cont]
            if not ctx:
                raise ValueError(f"{self.role}.score: request {k} has an empty context")
            if not cont:
                results[k] = []
                continue
            if len(ctx) + len(cont) > self.max_model_len:
                raise ValueError(f"{self.role}.score: request {k} has {len(ctx) + len(cont)} tokens, more than "
                                 f"max_model_len {self.max_model_len}")
            todo.append((k, ctx, cont))
        if not todo:
            return results
        with self._lock, self.stats.timed(len(todo)):
            failed = self._score_pass(todo, results, use_cache=self._reads_prefix_cache())
            if failed:
                self.score_resends += len(failed)
                still = self._score_pass(failed, results, use_cache=False)
                if still:
                    raise self._failure(f"returned no valid prompt log-probs for {len(still)} requests even without "
                                        "the prefix cache")
        return results

    def _score_pass(self, todo, results, *, use_cache: bool):
        outputs = self._teacher_force([ctx + cont for _, ctx, cont in todo], use_cache=use_cache)
        failed = []
        for out, item in zip(outputs, todo):
            k, ctx, cont = item
            if out is None:
                failed.append(item)
                continue
            self.stats.add(prompt=len(ctx) + len(cont), cached=out.cached)
            # Entries at positions 1..cached are uninitialised memory (vllm-facts §3): position len(ctx) is the
            # first one read, so it must be past them.
            if out.cached >= len(ctx):
                failed.append(item)
                continue
            prompt = ctx + cont
            lps = []
            for pos in range(len(ctx), len(prompt)):
                lp = out.logprob_at(pos)
                if lp is None or lp != lp or lp > 1e-4:  # a garbage entry: wrong id, NaN, or a positive "log-prob"
                    lps = None
                    break
                lps.append(float(lp))
            if lps is None:
                failed.append(item)
                continue
            results[k] = lps
        return failed


class PRMRewardModel(RewardModel):
    """A PRM behind a transport; the adapter decides input layout and read-out."""

    concurrent_calls = False  # as StepGenerator's

    def __init__(self, adapter: PRMAdapter, max_model_len: int, *, lock: threading.Lock | None = None):
        self.adapter = adapter
        self.stats = RoleStats()
        self.max_model_len = int(max_model_len)
        if adapter.max_model_len is None:
            adapter.max_model_len = self.max_model_len
        self._lock = lock or threading.Lock()

    @abstractmethod
    def _pool(self, inputs: Sequence[PRMInput]) -> list[Pooled]:
        """The adapter's pooling task on every input (all at once)."""

    @abstractmethod
    def _failure(self, message: str) -> Exception:
        """The exception for a broken answer, naming the engine or server."""

    def input_length(self, problem: str, steps: Sequence[str]) -> int:
        # The adapter renders the PRM's input, whatever the transport: the token accounting is the same.
        return self.adapter.input_length(problem, steps)

    def reward(self, requests: Sequence[RewardRequest]) -> list[float]:
        if not requests:
            return []
        scores: list[float] = [EMPTY_STEP_REWARD] * len(requests)
        # A request with no non-empty step (a candidate that is only a delimiter, and no accepted step) has
        # nothing for the PRM to score: it gets EMPTY_STEP_REWARD without a model call.
        live = [k for k, r in enumerate(requests) if split_steps(r.steps, self.adapter.delimiter)]
        if not live:
            return scores
        inputs = [self.adapter.build(requests[k]) for k in live]
        with self._lock, self.stats.timed(len(live)):
            outputs = self._pool(inputs)
        for k, out, x in zip(live, outputs, inputs):
            self.stats.add(prompt=len(x.token_ids), cached=out.cached)
            rows = out.rows
            if rows.dim() == 1:
                rows = rows.unsqueeze(-1)
            score = self.adapter.score_rows(rows)
            if not 0.0 <= score <= 1.0 or score != score:
                raise self._failure(f"{self.adapter.name} produced {score}, not a probability")
            scores[k] = score
        return scores
