"""vLLM worker extension: put a generator's sampling temperature inside the model (vllm-facts §2).

vLLM returns `prompt_logprobs` at T = 1 whatever the request's temperature, and in its default logprobs mode the
sampled tokens' log-probs untempered too. Every vLLM decoder computes its logits through a `LogitsProcessor`
whose `scale` multiplies the final logits, so setting `scale = base / T` (base: the model's own scale, 1 for
Qwen2) inside the worker makes the engine's
distribution the tempered one: requests then sample at `temperature=1.0`, and both the sampled log-probs and the
teacher-forced `prompt_logprobs` are log_softmax(logits / T). The KV cache does not depend on the scale, so a
temperature change keeps the prefix cache valid.

Loaded by name in every worker process (`LLM(worker_extension_cls="gsi.engines.worker.TemperatureExtension")`)
and called with `llm.collective_rpc("gsi_set_temperature", args=(T,))`: calling a method by name needs no
`VLLM_ALLOW_INSECURE_SERIALIZATION`. This module must stay importable without vLLM (only torch, lazily).
"""

from __future__ import annotations

import sys

# Model classes vLLM does not ship, registered by architecture name (module:class, imported lazily by vLLM).
CUSTOM_MODELS = {"Qwen2ForPrmModel": "gsi.engines.skywork:SkyworkQwen2PrmModel"}


def register_custom_models() -> None:
    """Make this process's vLLM model registry know CUSTOM_MODELS (idempotent).

    Registered as classes, not as lazy "module:class" strings: vLLM inspects a lazy model in a fresh
    `python -m vllm...` subprocess, which cannot import `gsi` unless it is installed.
    """
    import importlib

    from vllm import ModelRegistry

    for arch, target in CUSTOM_MODELS.items():
        if arch not in ModelRegistry.get_supported_archs():
            module, name = target.split(":")
            ModelRegistry.register_model(arch, getattr(importlib.import_module(module), name))


def _logits_processors(model):
    """Every LogitsProcessor-like module of the model (one for decoders; a model with a draft head may have more)."""
    found = []
    for module in model.modules():
        if type(module).__name__ == "LogitsProcessor" or (
                hasattr(module, "scale") and hasattr(module, "soft_cap") and hasattr(module, "logits_as_input")):
            found.append(module)
    return found


class TemperatureExtension:
    """Mixed into vLLM's worker class; methods are prefixed so they cannot clash with the worker's own."""

    def gsi_set_temperature(self, temperature: float) -> float:
        """Set the temperature of every logits processor of this worker's model; return the scale now in use."""
        temperature = float(temperature)  # a server's /collective_rpc passes its arguments as strings
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 (greedy decoding is a request option), got {temperature}")
        processors = _logits_processors(self.get_model())
        if not processors:
            raise RuntimeError(f"{type(self.get_model()).__name__} has no LogitsProcessor: cannot set a temperature")
        # Some models (Granite, Cohere) have a scale of their own: keep it, and divide it by T.
        for proc in processors:
            if not hasattr(proc, "_gsi_base_scale"):
                proc._gsi_base_scale = float(proc.scale)
            proc.scale = proc._gsi_base_scale / float(temperature)
        return float(processors[0].scale)

    def gsi_get_scale(self) -> list[float]:
        """The `scale` of every logits processor (tests read it back to check a temperature switch)."""
        return [float(p.scale) for p in _logits_processors(self.get_model())]


class CustomModelsExtension:
    """Worker extension of engines that serve a CUSTOM_MODELS architecture: vLLM imports this module in each worker
    process before it loads the model, and importing it registers the architectures there (a spawned worker starts
    with vLLM's own registry only). A `vllm.general_plugins` entry point would do the same from packaging."""

    def gsi_custom_models(self) -> list[str]:
        return sorted(CUSTOM_MODELS)


if "vllm" in sys.modules:  # inside a vLLM process (never in a plain `import gsi`)
    try:
        register_custom_models()
    except Exception:  # noqa: BLE001 - a vLLM without this API just lacks the custom models
        pass
