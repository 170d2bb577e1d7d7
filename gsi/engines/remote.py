"""Roles served by vLLM's OpenAI-compatible server (`python -m gsi.cluster.serve`), possibly on other GPUs or nodes and
shared by many runs.

The HTTP transport under the generators' and the PRM's front end (gsi.engines.frontend): the same requests and the
same read-out as in process (gsi.engines.vllm). A remote role must give what an in-process engine gives
(vllm-facts.md); the constructors check it with probe requests and refuse a server that cannot, naming the role,
the URL and what is missing:
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

import contextlib

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

from gsi.engines.frontend import PRMRewardModel, Pooled, Sample, Sampled, StepGenerator, TeacherForced
from gsi.engines.rewards import PRMAdapter, PRMInput

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


class RemoteGenerator(StepGenerator):
    """A policy on a vLLM server; the same requests and read-out as gsi.engines.vllm.VLLMGenerator (the front end).
    Calls may overlap: the server batches concurrent requests continuously (the runtime's async policy sends a
    role's requests as they arrive)."""

    concurrent_calls = True

    def __init__(self, role: str, url: str, tokenizer, *, temperature: float, delimiter: str,
                 eos_token_ids: Sequence[int], prefix_caching: bool = True):
        super().__init__(role, tokenizer, delimiter=delimiter, eos_token_ids=eos_token_ids,
                         prefix_caching=prefix_caching, lock=contextlib.nullcontext())
        self.client = _Client(role, url)
        self.temperature = float(temperature)
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

    def _failure(self, message: str) -> Exception:
        return RemoteRoleError(f"the {self.role} server at {self.client.url} {message}")

    def _reads_prefix_cache(self) -> bool:
        # without cached-token counts the uninitialised positions cannot be told from valid ones
        return self.prefix_caching and self.info.cached_tokens_reported

    def _sample(self, samples: Sequence[Sample], *, greedy: bool) -> list[Sampled]:
        bodies = [{"token_ids": s.context, "sampling_params": {
            "n": 1, "temperature": 0.0 if greedy else 1.0, "seed": s.seed, "max_tokens": s.max_tokens,
            "stop_token_ids": self.stop_token_ids, "logprobs": 0, "detokenize": False,
            "skip_special_tokens": False}} for s in samples]
        sampled = []
        for out in self.client.post_all(GENERATE, bodies):
            choice = out["choices"][0]
            ids = tuple(int(t) for t in choice["token_ids"])
            content = (choice.get("logprobs") or {}).get("content") or []
            # a log-prob counts only for the token it names; a missing one is None (the front end refuses it)
            logprobs = [float(c["logprob"]) if c["token_id"] == t else None for c, t in zip(content, ids)]
            logprobs += [None] * (len(ids) - len(logprobs))
            sampled.append(Sampled(ids, logprobs, _cached(out)))
        return sampled

    def _teacher_force(self, prompts: Sequence[list[int]], *, use_cache: bool) -> list[TeacherForced | None]:
        bodies = [{"token_ids": p, "sampling_params": {
            "n": 1, "temperature": 1.0, "max_tokens": 1, "prompt_logprobs": 0, "detokenize": False,
            "skip_reading_prefix_cache": not use_cache}} for p in prompts]
        # A prefix-cache read leaves the cached positions' prompt log-probs uninitialised (vllm-facts §3); when one
        # of them is not a finite float the server cannot even encode its answer as JSON: resent without the cache.
        outputs = self.client.post_all(GENERATE, bodies, unusable="Out of range float values")
        forced: list[TeacherForced | None] = []
        for out, prompt in zip(outputs, prompts):
            if out is None:
                if not use_cache:
                    raise self._failure("returned non-finite prompt log-probs without the prefix cache")
                self.unencodable += 1
                forced.append(None)
                continue
            forced.append(TeacherForced(_cached(out), lambda pos, plp=out.get("prompt_logprobs") or [], prompt=prompt:
                                        _prompt_logprob(plp, pos, prompt[pos])))
        return forced


def _prompt_logprob(plp: list, pos: int, token: int) -> float | None:
    entry = plp[pos] if pos < len(plp) else None
    lp = None if not entry else (entry.get(str(token)) or {}).get("logprob")
    return None if lp is None else float(lp)


def _cached(out: dict) -> int:
    details = (out.get("usage") or {}).get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or 0)


class RemoteRewardModel(PRMRewardModel):
    """A PRM on a vLLM pooling server (`/pooling`, token ids in, rows out); the adapter as in process. Calls may
    overlap, as RemoteGenerator's."""

    concurrent_calls = True

    def __init__(self, url: str, adapter: PRMAdapter):
        self.client = _Client("reward", url)
        model, max_model_len = _models(self.client)
        super().__init__(adapter, max_model_len, lock=contextlib.nullcontext())
        self.info = ServerInfo(self.client.url, model, self.max_model_len)

    def close(self) -> None:
        self.client.close()

    def _failure(self, message: str) -> Exception:
        return RemoteRoleError(f"reward: {message}")

    def _pool(self, inputs: Sequence[PRMInput]) -> list[Pooled]:
        import torch

        use_activation = self.adapter.pooling_params().get("use_activation", False)
        bodies = [{"input": x.token_ids, "task": self.adapter.pooling_task, "use_activation": use_activation}
                  for x in inputs]
        return [Pooled(torch.tensor(out["data"][0]["data"], dtype=torch.float32), _cached(out))
                for out in self.client.post_all("/pooling", bodies)]
