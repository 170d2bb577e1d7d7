"""Roles served by vLLM's OpenAI-compatible server (`python -m gsi.cluster.serve`), possibly on other GPUs or nodes and
shared by many runs.

A remote role must give what an in-process engine gives (gsi.engines.vllm, vllm-facts.md); `connect` checks it
with probe requests and refuses a server that cannot, naming the role, the URL and what is missing:
- tempered log-probs: the temperature lives inside the server's engine (worker extension
  `gsi.engines.worker.TemperatureExtension`, set once at start by gsi.cluster.serve through the dev-mode
  `/collective_rpc`); the probe reads every worker's logits scale and requires base/T for this run's T. A server
  without the extension, without dev mode, or at another temperature is refused (its log-probs would be
  untempered or at the wrong T). Several runs may share a server only at the same temperature.
- sampling and teacher forcing with the engine's own SamplingParams (seeds, stop ids, `prompt_logprobs`,
  `skip_reading_prefix_cache=False` so that teacher forcing reads the prefix cache), token ids in and out:
  vLLM's tokens-in/tokens-out endpoint `/inference/v1/generate` (`--enable-scale-out`). The OpenAI
  `/v1/completions` endpoint has no `skip_reading_prefix_cache`: there every teacher-forced request would
  recompute its whole context. Refused when absent.
- prefix-cache accounting: `usage.prompt_tokens_details.cached_tokens` (`--enable-prompt-tokens-details`).
  Without it the cached positions of `prompt_logprobs` cannot be told from valid ones, so teacher forcing falls
  back to `skip_reading_prefix_cache=True` (exact, but the context is recomputed) and a warning says so.
- the PRM: `/pooling` with token ids and the adapter's task. Its API has no `skip_reading_prefix_cache`, so the
  pooling default applies (token_classify: the cache is NOT read; the values are the same, the cost is that of
  re-reading the context: see docs/cluster.md).

Each of a batch's requests is one HTTP request (n = 1 with seed + i, as the in-process engine sends them), all
in flight at once, so the server batches them; one batch per role at a time from this run (a lock), as in
process. A server that stops answering raises RemoteRoleError naming the role: the run stops with that message
and a rerun resumes (gsi.run).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

from gsi.engines.base import GenerateRequest, Generator, RewardModel, RewardRequest, RoleStats, Step
from gsi.engines.rewards import PRMAdapter, split_steps
from gsi.engines.vllm import EMPTY_STEP_REWARD, delimiter_token_ids

log = logging.getLogger(__name__)

GENERATE = "/inference/v1/generate"
TIMEOUT_S = 3600.0  # one request; a long batch on a loaded server is slow, a dead one fails at connect
MAX_IN_FLIGHT = 256


class RemoteRoleError(RuntimeError):
    """A remote role's server failed or refused; the message names the role and its URL."""


@dataclass
class ServerInfo:
    url: str
    model: str
    max_model_len: int
    cached_tokens_reported: bool = False


class _Client:
    def __init__(self, role: str, url: str):
        import requests
        from requests.adapters import HTTPAdapter

        self.role, self.url = role, url.rstrip("/")
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=MAX_IN_FLIGHT)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.pool = ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT, thread_name_prefix=f"gsi-{role}-http")

    def call(self, method: str, path: str, body: dict | None = None, *, timeout: float = TIMEOUT_S,
             ok: tuple[int, ...] = (200,)):
        import requests

        try:
            r = self.session.request(method, self.url + path, json=body, timeout=timeout)
        except requests.RequestException as exc:
            raise RemoteRoleError(f"the {self.role} server at {self.url} is unreachable ({type(exc).__name__}: "
                                  f"{exc})") from exc
        if r.status_code not in ok:
            raise RemoteRoleError(f"the {self.role} server at {self.url} answered {method} {path} with "
                                  f"{r.status_code}: {r.text[:500]}")
        return r

    def post_all(self, path: str, bodies: Sequence[dict], *, unusable: str | None = None) -> list[dict | None]:
        """Every body at once; an answer 400 whose text contains `unusable` comes back as None (not an error)."""
        def one(body):
            r = self.call("POST", path, body, ok=(200, 400) if unusable else (200,))
            if r.status_code == 400:
                if unusable in r.text:
                    return None
                raise RemoteRoleError(f"the {self.role} server at {self.url} answered POST {path} with 400: "
                                      f"{r.text[:500]}")
            return r.json()

        return list(self.pool.map(one, bodies))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.session.close()


def _models(client: _Client) -> tuple[str, int]:
    data = client.call("GET", "/v1/models", timeout=30).json()["data"]
    if not data:
        raise RemoteRoleError(f"the {client.role} server at {client.url} serves no model")
    return data[0]["id"], int(data[0].get("max_model_len") or 0)


def _check_scale(client: _Client, temperature: float | None) -> None:
    """The temperature inside the engine: every worker's logits scale must be base / T (base 1 for Qwen2)."""
    r = client.call("POST", "/collective_rpc", {"method": "gsi_get_scale"}, timeout=60, ok=(200, 404, 500))
    if r.status_code != 200:
        raise RemoteRoleError(
            f"the {client.role} server at {client.url} cannot report its temperature (/collective_rpc answered "
            f"{r.status_code}): start it with `python -m gsi.cluster.serve role={client.role} ...` (worker extension "
            "gsi.engines.worker.TemperatureExtension, VLLM_SERVER_DEV_MODE=1). Without it its log-probs are "
            "untempered (vllm-facts §1-2) and GSI's importance weights would be wrong")
    if temperature is None:
        return
    scales = [s for worker in r.json()["results"] for s in (worker or [])]
    want = 1.0 / float(temperature)
    if not scales or any(abs(s - want) > 1e-6 for s in scales):
        served = ", ".join(sorted({f"{1.0 / s:g}" for s in scales if s})) or "unknown"
        raise RemoteRoleError(f"the {client.role} server at {client.url} samples at T={served} (logits scales "
                              f"{scales}), but generation.temperature={temperature}: start a server at this "
                              f"temperature (python -m gsi.cluster.serve role={client.role} generation.temperature="
                              f"{temperature})")


class RemoteGenerator(Generator):
    """A policy on a vLLM server; the same requests and read-out as gsi.engines.vllm.VLLMGenerator."""

    def __init__(self, role: str, url: str, tokenizer, *, temperature: float, delimiter: str,
                 eos_token_ids: Sequence[int], prefix_caching: bool = True):
        self.role = role
        self.tokenizer = tokenizer
        self.delimiter = delimiter
        self.stats = RoleStats()
        self.client = _Client(role, url)
        self.temperature = float(temperature)
        self.eos_token_ids = frozenset(int(i) for i in eos_token_ids)
        self.delimiter_ids = frozenset(delimiter_token_ids(tokenizer, delimiter))
        self.stop_token_ids = sorted(self.delimiter_ids | self.eos_token_ids)
        self.prefix_caching = prefix_caching
        self._lock = threading.Lock()
        self.score_resends = 0
        self.unencodable = 0  # teacher-forced answers the server could not encode (garbage floats), resent
        self.info = self._probe()
        self.max_model_len = self.info.max_model_len

    def _probe(self) -> ServerInfo:
        model, max_len = _models(self.client)
        _check_scale(self.client, self.temperature)
        probe = self.client.call("POST", GENERATE, {"token_ids": [0, 1], "sampling_params": {
            "max_tokens": 1, "temperature": 1.0, "seed": 0, "logprobs": 0, "detokenize": False}},
            timeout=120, ok=(200, 403, 404))
        if probe.status_code != 200:
            raise RemoteRoleError(
                f"the {self.role} server at {self.client.url} has no tokens-in/tokens-out endpoint {GENERATE} "
                f"({probe.status_code}): start it with --enable-scale-out (python -m gsi.cluster.serve does). The OpenAI "
                "completions API cannot read the prefix cache when teacher forcing")
        usage = probe.json().get("usage") or {}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") is not None
        if not cached:
            log.warning("%s server at %s does not report cached tokens (--enable-prompt-tokens-details): teacher "
                        "forcing will recompute every context", self.role, self.client.url)
        return ServerInfo(self.client.url, model, max_len, cached)

    def close(self) -> None:
        self.client.close()

    def _finish(self, token_ids):
        from gsi.engines.vllm import VLLMGenerator

        return VLLMGenerator._finish(self, token_ids)

    def generate(self, requests: Sequence[GenerateRequest], *, greedy: bool = False) -> list[list[Step]]:
        if not requests:
            return []
        bodies, owners = [], []
        for k, req in enumerate(requests):
            context = [int(t) for t in req.context]
            room = self.max_model_len - len(context)
            if not context or room < 1 or req.n < 1:
                raise ValueError(f"{self.role}.generate: request {k} has {len(context)} context tokens, n={req.n} "
                                 f"(max_model_len {self.max_model_len})")
            max_tokens = min(int(req.max_tokens), room)
            for i in range(req.n):
                bodies.append({"token_ids": context, "sampling_params": {
                    "n": 1, "temperature": 0.0 if greedy else 1.0, "seed": None if greedy else int(req.seed) + i,
                    "max_tokens": max_tokens, "stop_token_ids": self.stop_token_ids, "logprobs": 0,
                    "detokenize": False, "skip_special_tokens": False}})
                owners.append((k, len(context)))
        with self._lock, self.stats.timed(len(requests)):
            outputs = self.client.post_all(GENERATE, bodies)
        results: list[list] = [[] for _ in requests]
        token_lists = []
        for out, (k, ctx_len) in zip(outputs, owners):
            choice = out["choices"][0]
            ids = tuple(int(t) for t in choice["token_ids"])
            content = (choice.get("logprobs") or {}).get("content") or []
            if len(content) != len(ids) or any(c["token_id"] != t for c, t in zip(content, ids)):
                raise RemoteRoleError(f"the {self.role} server at {self.client.url} returned log-probs that do not "
                                      "match its tokens")
            total = sum(float(c["logprob"]) for c in content)
            self.stats.prompt_tokens += ctx_len
            self.stats.cached_tokens += _cached(out)
            self.stats.generated_tokens += len(ids)
            token_lists.append(ids)
            results[k].append((ids, total))
        texts = iter(self.tokenizer.batch_decode([list(ids) for ids in token_lists], skip_special_tokens=True,
                                                 clean_up_tokenization_spaces=False))
        return [[Step(token_ids=ids, text=next(texts), logprob=lp, finish=self._finish(ids)) for ids, lp in row]
                for row in results]

    def score(self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]) -> list[float]:
        if len(contexts) != len(continuations):
            raise ValueError(f"{self.role}.score: {len(contexts)} contexts but {len(continuations)} continuations")
        results: list[float | None] = [None] * len(contexts)
        todo = []
        for k, (ctx, cont) in enumerate(zip(contexts, continuations)):
            ctx, cont = [int(t) for t in ctx], [int(t) for t in cont]
            if not ctx:
                raise ValueError(f"{self.role}.score: request {k} has an empty context")
            if not cont:
                results[k] = 0.0
                continue
            if len(ctx) + len(cont) > self.max_model_len:
                raise ValueError(f"{self.role}.score: request {k} has {len(ctx) + len(cont)} tokens, more than "
                                 f"max_model_len {self.max_model_len}")
            todo.append((k, ctx, cont))
        if not todo:
            return [float(r) for r in results]
        use_cache = self.prefix_caching and self.info.cached_tokens_reported
        with self._lock, self.stats.timed(len(todo)):
            failed = self._score_pass(todo, results, use_cache=use_cache)
            if failed:
                self.score_resends += len(failed)
                if self._score_pass(failed, results, use_cache=False):
                    raise RemoteRoleError(f"the {self.role} server at {self.client.url} returned no valid prompt "
                                          "log-probs even without the prefix cache")
        return [float(r) for r in results]

    def _score_pass(self, todo, results, *, use_cache: bool):
        bodies = [{"token_ids": ctx + cont, "sampling_params": {
            "n": 1, "temperature": 1.0, "max_tokens": 1, "prompt_logprobs": 0, "detokenize": False,
            "skip_reading_prefix_cache": not use_cache}} for _, ctx, cont in todo]
        # A prefix-cache read leaves the cached positions' prompt log-probs uninitialised (vllm-facts §3); when one
        # of them is not a finite float the server cannot even encode its answer as JSON: resent without the cache.
        outputs = self.client.post_all(GENERATE, bodies, unusable="Out of range float values")
        failed = []
        for out, item in zip(outputs, todo):
            k, ctx, cont = item
            if out is None:
                if not use_cache:
                    raise RemoteRoleError(f"the {self.role} server at {self.client.url} returned non-finite prompt "
                                          "log-probs without the prefix cache")
                self.unencodable += 1
                failed.append(item)
                continue
            cached = _cached(out)
            self.stats.prompt_tokens += len(ctx) + len(cont)
            self.stats.cached_tokens += cached
            if cached >= len(ctx):  # positions 1..cached are uninitialised (vllm-facts §3)
                failed.append(item)
                continue
            prompt, plp = ctx + cont, out.get("prompt_logprobs") or []
            total = 0.0
            for pos in range(len(ctx), len(prompt)):
                entry = plp[pos] if pos < len(plp) else None
                lp = None if not entry else (entry.get(str(prompt[pos])) or {}).get("logprob")
                if lp is None or lp != lp or lp > 1e-4:
                    total = None
                    break
                total += float(lp)
            if total is None:
                failed.append(item)
            else:
                results[k] = total
        return failed


def _cached(out: dict) -> int:
    details = (out.get("usage") or {}).get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or 0)


class RemoteRewardModel(RewardModel):
    """A PRM on a vLLM pooling server (`/pooling`, token ids in, rows out); the adapter as in process."""

    def __init__(self, url: str, adapter: PRMAdapter):
        self.client = _Client("reward", url)
        self.adapter = adapter
        self.stats = RoleStats()
        self._lock = threading.Lock()
        model, self.max_model_len = _models(self.client)
        if adapter.max_model_len is None:
            adapter.max_model_len = self.max_model_len
        self.info = ServerInfo(self.client.url, model, self.max_model_len)

    def close(self) -> None:
        self.client.close()

    def input_length(self, problem: str, steps: Sequence[str]) -> int:
        # The adapter renders the PRM's input here, as in process: the token accounting is the same.
        return self.adapter.input_length(problem, steps)

    def reward(self, requests: Sequence[RewardRequest]) -> list[float]:
        import torch

        if not requests:
            return []
        scores = [EMPTY_STEP_REWARD] * len(requests)
        live = [k for k, r in enumerate(requests) if split_steps(r.steps, self.adapter.delimiter)]
        if not live:
            return scores
        inputs = [self.adapter.build(requests[k]) for k in live]
        use_activation = self.adapter.pooling_params().get("use_activation", False)
        bodies = [{"input": x.token_ids, "task": self.adapter.pooling_task, "use_activation": use_activation}
                  for x in inputs]
        with self._lock, self.stats.timed(len(live)):
            outputs = self.client.post_all("/pooling", bodies)
        for k, out, x in zip(live, outputs, inputs):
            self.stats.prompt_tokens += len(x.token_ids)
            self.stats.cached_tokens += _cached(out)
            data = torch.tensor(out["data"][0]["data"], dtype=torch.float32)
            if data.dim() == 1:
                data = data.unsqueeze(-1)
            score = self.adapter.score_rows(data)
            if not 0.0 <= score <= 1.0 or score != score:
                raise RemoteRoleError(f"reward: {self.adapter.name} produced {score}, not a probability")
            scores[k] = score
        return scores

