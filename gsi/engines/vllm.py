"""The in-process transport: the generators and the PRM on one `vllm.LLM` each, in this process.

What the requests are and how answers are read is the front end's (gsi.engines.frontend); what decides how they
reach vLLM (vllm-facts.md):

- Temperature lives INSIDE the engine: the worker extension `gsi.engines.worker.TemperatureExtension` sets the
  model's `LogitsProcessor.scale` to 1/T and every request samples at temperature 1.0, so the sampled tokens'
  log-probs AND the teacher-forced `prompt_logprobs` are log_softmax(logits / T). (vLLM's prompt_logprobs ignore
  the request temperature; its default sampled log-probs are untempered.) Greedy requests use temperature 0:
  argmax of the same logits, log-probs still of the tempered distribution. `VLLMGenerator.set_temperature` and
  `temperature_scope` switch an engine's temperature; the prefix cache stays valid (the KV cache does not depend
  on the scale).
- `generate`: one `LLM.generate` call per batch, `logprobs=0` (the sampled token's log-prob) as FlatLogprobs,
  no detokenisation (the front end decodes). The engine runs with generation_config="vllm": no hidden defaults.
- `score`: `prompt_logprobs=0` on context + continuation, `max_tokens=1`, `skip_reading_prefix_cache` as the
  front end asks.
- the PRM: `LLM.encode` with the adapter's pooling task and PoolingParams.

Starting and stopping the engines: gsi.engines.launch; their arguments: gsi.engines.specs.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Sequence

from gsi.engines.frontend import PRMRewardModel, Pooled, Sample, Sampled, StepGenerator, TeacherForced
from gsi.engines.rewards import PRMAdapter, PRMInput


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


def _raise_on_error(out, role: str) -> None:
    err = getattr(out, "error", None)
    if err is not None:
        raise RuntimeError(f"{role}: vLLM request {out.request_id} failed: {err}")


class VLLMGenerator(StepGenerator):
    """A policy served by one `vllm.LLM` at a fixed (switchable) temperature. See the module docstring."""

    def __init__(self, role: str, llm, tokenizer, *, temperature: float, delimiter: str,
                 eos_token_ids: Sequence[int], prefix_caching: bool = True, lock: threading.Lock | None = None):
        super().__init__(role, tokenizer, delimiter=delimiter, eos_token_ids=eos_token_ids,
                         prefix_caching=prefix_caching, lock=lock)
        self.llm = llm
        self.max_model_len = int(llm.llm_engine.model_config.max_model_len)
        self.temperature = float("nan")
        self.set_temperature(temperature)

    def _failure(self, message: str) -> Exception:
        return RuntimeError(f"{self.role}: vLLM {message}")

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

    # -- the transport -------------------------------------------------------------------------------------------
    def _sample(self, samples: Sequence[Sample], *, greedy: bool) -> list[Sampled]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=s.context) for s in samples]
        params = [SamplingParams(
            n=1,
            temperature=0.0 if greedy else 1.0,  # the temperature is inside the engine
            seed=s.seed,
            max_tokens=s.max_tokens,
            stop_token_ids=self.stop_token_ids,
            logprobs=0,  # the sampled token's log-prob (vLLM always includes it)
            flat_logprobs=True,
            detokenize=False,
            skip_special_tokens=False,
        ) for s in samples]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        sampled = []
        for out in outputs:
            _raise_on_error(out, self.role)
            comp = out.outputs[0]
            ids = tuple(int(t) for t in comp.token_ids)
            sampled.append(Sampled(ids, [_logprob_of(comp.logprobs, pos, tok) for pos, tok in enumerate(ids)],
                                   int(out.num_cached_tokens or 0)))
        return sampled

    def _teacher_force(self, prompts: Sequence[list[int]], *, use_cache: bool) -> list[TeacherForced]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            n=1, temperature=1.0, max_tokens=1, prompt_logprobs=0, logprobs=None, flat_logprobs=True,
            detokenize=False, skip_reading_prefix_cache=not use_cache,
        )
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        forced = []
        for out, prompt in zip(outputs, prompts):
            _raise_on_error(out, self.role)
            forced.append(TeacherForced(
                int(out.num_cached_tokens or 0),
                lambda pos, plp=out.prompt_logprobs, prompt=prompt: _logprob_of(plp, pos, prompt[pos])))
        return forced


class VLLMRewardModel(PRMRewardModel):
    """A PRM on vLLM's pooling runner."""

    def __init__(self, llm, adapter: PRMAdapter, *, prefix_caching: bool = True, lock: threading.Lock | None = None):
        super().__init__(adapter, int(llm.llm_engine.model_config.max_model_len), lock=lock)
        self.llm = llm
        self.prefix_caching = prefix_caching and adapter.uses_prefix_cache

    def _failure(self, message: str) -> Exception:
        return RuntimeError(f"reward: {message}")

    def _pool(self, inputs: Sequence[PRMInput]) -> list[Pooled]:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        kwargs = self.adapter.pooling_params()
        if "skip_reading_prefix_cache" in kwargs:
            kwargs["skip_reading_prefix_cache"] = not self.prefix_caching
        prompts = [TokensPrompt(prompt_token_ids=x.token_ids) for x in inputs]
        outputs = self.llm.encode(prompts, PoolingParams(**kwargs), pooling_task=self.adapter.pooling_task,
                                  use_tqdm=False)
        pooled = []
        for out in outputs:
            _raise_on_error(out, "reward")
            pooled.append(Pooled(out.outputs.data.float().cpu(), int(out.num_cached_tokens or 0)))
        return pooled
