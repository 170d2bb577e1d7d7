"""vLLM engine arguments: a run config and its `Plan` -> one `EngineSpec` (`vllm.LLM` keyword arguments and the
environment to hold while it starts) per role, placement included. gsi.cluster.serve turns the same specs into a
server's command line, so a server gets exactly what an in-process engine gets.

- Generators carry the worker extension that puts the temperature inside the engine (gsi.engines.worker); the
  reward engine is a pooling runner with its adapter's pooler config, and the custom-models extension when its
  architecture is one vLLM lacks (Skywork's PRM, gsi.engines.skywork); a verifier PRM (`lm_verifier`) is a
  generator engine like the policies (gsi.engines.verifier).
- `generation_config="vllm"`: no hidden sampling defaults from the model's generation_config.json.
- On the CPU the generators run with chunked prefill off: a seeded request whose prefill is split across scheduler
  steps kills the engine (vllm-facts §4), so each prompt must fit `max_num_batched_tokens`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from gsi.roles import ROLES
from gsi.config.access import get as _get
from gsi.engines.placement import cpu_threads_bind, memory_fractions, placement_devices
from gsi.engines.plan import Plan
from gsi.engines.rewards import ADAPTERS
from gsi.engines.worker import CUSTOM_MODELS

WORKER_EXTENSION = "gsi.engines.worker.TemperatureExtension"
CUSTOM_MODELS_EXTENSION = "gsi.engines.worker.CustomModelsExtension"


@dataclass
class EngineSpec:
    """Everything needed to start one role's `vllm.LLM`."""

    role: str
    model: str  # resolved local folder or hub id
    kwargs: dict[str, Any] = field(default_factory=dict)  # vllm.LLM keyword arguments
    env: dict[str, str] = field(default_factory=dict)  # process env to hold while constructing (serial only)


def _supports_device_ids() -> bool:
    from vllm.engine.arg_utils import EngineArgs

    return any(f.name == "device_ids" for f in dataclasses.fields(EngineArgs))


def needs_custom_models(plan: Plan) -> bool:
    """Whether the reward model is an architecture vLLM lacks and gsi.engines.worker registers (Skywork's PRM)."""
    archs = plan.models["reward"].config.get("architectures") or []
    return plan.adapter == "skywork_prm" or any(a in CUSTOM_MODELS for a in archs)


UNIPROC_EXECUTOR = "vllm.v1.executor.uniproc_executor.UniProcExecutor"


def engine_specs(cfg, plan: Plan, roles=ROLES) -> list[EngineSpec]:
    """vllm.LLM arguments per role, placement included."""
    model, hw = _get(cfg, "model"), _get(cfg, "hardware")
    placement = plan.placement
    devices = placement_devices(hw)
    frac = memory_fractions(hw)
    use_device_ids = placement == "gpu3" and _supports_device_ids()
    seed = int(_get(cfg, "seed", 0) or 0)
    specs = []
    for role in roles:
        mcfg = _get(model, role)
        rm = plan.models[role]
        kw: dict[str, Any] = {
            "tokenizer": rm.path,
            "dtype": str(_get(mcfg, "dtype", "auto")),
            "trust_remote_code": bool(_get(mcfg, "trust_remote_code", False)),
            "seed": seed,
            "enforce_eager": bool(_get(hw, "enforce_eager", False)),
            "max_num_seqs": int(_get(hw, "max_num_seqs", 256)),
            "max_num_batched_tokens": int(_get(hw, "max_num_batched_tokens", 65536)),
            "enable_prefix_caching": bool(_get(hw, "enable_prefix_caching", True)),
            "generation_config": "vllm",
        }
        if _get(mcfg, "max_model_len"):
            kw["max_model_len"] = int(_get(mcfg, "max_model_len"))
        if _get(mcfg, "revision") and not rm.local:  # pins the hub download (weights and tokenizer)
            kw["revision"] = kw["tokenizer_revision"] = str(_get(mcfg, "revision"))
        if role == "reward" and ADAPTERS[plan.adapter].runner == "pooling":
            kw["runner"] = "pooling"
            if needs_custom_models(plan):
                kw["worker_extension_cls"] = CUSTOM_MODELS_EXTENSION
            pooler = ADAPTERS[plan.adapter].vllm_pooler_config
            if pooler:
                from vllm.config import PoolerConfig

                kw["pooler_config"] = PoolerConfig(**pooler)
        else:
            kw["worker_extension_cls"] = WORKER_EXTENSION
        env: dict[str, str] = {}
        if placement == "cpu":
            kw["kv_cache_memory_bytes"] = int(float(_get(hw, "cpu_kvcache_gb", 1.0)) * (1 << 30))
            # The model runs in the engine-core process instead of in a worker process of its own: one spawned
            # process less per engine to import torch and vLLM (the three tiny engines: 114-124 -> 67-83 CPU s,
            # 65-72 -> 41-52 s to start on 2 cores; docs/benchmarks.md). vLLM's CPU platform turns "uni" into "mp"
            # because in process it could not bind the worker's OpenMP threads to cores; unbound there is nothing to
            # bind, so the same executor, named by its class path, is used as it is.
            if cpu_threads_bind() == "nobind":
                kw["distributed_executor_backend"] = UNIPROC_EXECUTOR
            if kw.get("runner") != "pooling":
                kw["enable_chunked_prefill"] = False  # seeded requests must not have their prefill split
        else:
            kw["gpu_memory_utilization"] = frac[role]
            if role == "big":
                kw["tensor_parallel_size"] = len(devices["big"])
            if placement == "gpu3":
                if use_device_ids:
                    kw["device_ids"] = devices[role]
                else:
                    base = os.environ.get("CUDA_VISIBLE_DEVICES")
                    ids = [str(i) for i in devices[role]]
                    if base:
                        visible = [e.strip() for e in base.split(",")]
                        ids = [visible[i] for i in devices[role]]
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
        specs.append(EngineSpec(role=role, model=rm.path, kwargs=kw, env=env))
    return specs
