"""The engine registry: a composed run config -> `Engines` (small and big generators, the PRM, the tokenizer).

    from gsi.engines.registry import build_engines
    with build_engines(cfg) as engines:          # cfg.model, cfg.hardware, cfg.generation (and cfg.seed)
        steps = engines.small.generate([...])

This is where the parts meet: the checks (gsi.engines.plan: `validate` fails fast, before vLLM is imported or any
engine starts, with a `ConfigError` naming every offending key; gsi.engines.resolve: hub models that cannot load),
the placement (gsi.engines.placement), the engines' arguments and start (gsi.engines.specs, gsi.engines.launch),
and for each role its transport: in process (gsi.engines.vllm) or a vLLM server (gsi.engines.remote,
`hardware.remote`), both under the same front end (gsi.engines.frontend); a verifier PRM (`lm_verifier`) is a
generator engine under gsi.engines.verifier.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref

from gsi.roles import ROLES
from gsi.data.prompts import system_prompt as full_system_prompt
from gsi.engines.base import Engines
from gsi.config.access import get as _get
from gsi.engines.launch import shutdown_llms, start_llms
from gsi.engines.placement import (cpu_inprocess, prepare_process_env, remote_roles, shared_devices,
                                   start_parallel)
from gsi.engines.plan import model_params, validate
from gsi.engines.remote import RemoteGenerator, RemoteRewardModel
from gsi.engines.resolve import check_hub_models, eos_ids
from gsi.engines.rewards import ADAPTERS, make_adapter
from gsi.engines.specs import engine_specs, needs_custom_models
from gsi.engines.verifier import VERIFIER_TEMPERATURE, VerifierRewardModel
from gsi.engines.vllm import VLLMGenerator, VLLMRewardModel
from gsi.engines.worker import register_custom_models

log = logging.getLogger(__name__)


def build_engines(cfg, *, parallel: bool | None = None, timings: dict | None = None) -> Engines:
    """Validate `cfg`, start the three engines (in parallel where the placement allows) and wrap them.

    `parallel` overrides the placement's choice (None: gpu1 serial, otherwise parallel). `timings`, when given,
    receives {"validate_s", "start_s", "<role>_s"}.
    """
    t0 = time.perf_counter()
    check_hub_models(cfg)
    tokenizers: dict = {}
    plan = validate(cfg, tokenizers=tokenizers)
    t1 = time.perf_counter()
    model, hw, gen = _get(cfg, "model"), _get(cfg, "hardware"), _get(cfg, "generation")
    prepare_process_env(plan.placement)
    if needs_custom_models(plan):
        register_custom_models()  # this process; the workers register through their extension
    remote = remote_roles(hw)
    specs = engine_specs(cfg, plan, roles=[r for r in ROLES if r not in remote])
    if parallel is None:
        parallel = start_parallel(plan, specs)
    elif parallel and any(s.env for s in specs):
        log.warning("this vLLM has no device_ids: engines start one at a time (CUDA_VISIBLE_DEVICES per engine)")
        parallel = False
    llms, seconds = start_llms(specs, parallel=parallel)
    t2 = time.perf_counter()
    try:
        delimiter = str(_get(gen, "step_delimiter", "\n\n"))
        temperature = float(_get(gen, "temperature", 0.7))
        caching = bool(_get(hw, "enable_prefix_caching", True))
        shared = tokenizers["small"]
        # in-process engines share vLLM's global state: one call at a time across all three
        lock = threading.Lock() if plan.placement == "cpu" and cpu_inprocess() else None
        generators = {}
        for role in ("small", "big"):
            eos = eos_ids(plan.models[role], tokenizers[role])
            if role in remote:
                generators[role] = RemoteGenerator(role, remote[role], shared, temperature=temperature,
                                                   delimiter=delimiter, eos_token_ids=eos, prefix_caching=caching)
                continue
            generators[role] = VLLMGenerator(
                role, llms[role], shared, temperature=temperature, delimiter=delimiter,
                eos_token_ids=eos, prefix_caching=caching, lock=lock)
        reward_cfg = _get(model, "reward")
        system_prompt = _get(reward_cfg, "system_prompt")
        if system_prompt is None and ADAPTERS[plan.adapter].reads_generator_prompt:
            # a generic PRM reads the same rendered context as the generators (methods.md, "Problem prompt x")
            system_prompt = full_system_prompt(_get(model, "system_prompt"), _get(_get(cfg, "dataset"), "instruction"))
        adapter = make_adapter(plan.adapter, tokenizers["reward"], delimiter=delimiter, system_prompt=system_prompt)
        if adapter.runner == "generate":
            # a verifier LM: the reward role teacher-forces steps on a generator engine (gsi.engines.verifier)
            eos = eos_ids(plan.models["reward"], tokenizers["reward"])
            if "reward" in remote:
                forcer = RemoteGenerator("reward", remote["reward"], tokenizers["reward"],
                                         temperature=VERIFIER_TEMPERATURE, delimiter=delimiter, eos_token_ids=eos,
                                         prefix_caching=caching)
            else:
                forcer = VLLMGenerator("reward", llms["reward"], tokenizers["reward"], temperature=VERIFIER_TEMPERATURE,
                                       delimiter=delimiter, eos_token_ids=eos, prefix_caching=caching, lock=lock)
            reward = VerifierRewardModel(forcer, adapter)
        elif "reward" in remote:
            reward = RemoteRewardModel(remote["reward"], adapter)
        else:
            reward = VLLMRewardModel(llms["reward"], adapter, prefix_caching=caching, lock=lock)
        params = model_params(cfg, plan)
    except BaseException:
        shutdown_llms(list(llms.values()))
        raise
    if timings is not None:
        timings.update({"validate_s": t1 - t0, "start_s": t2 - t1, **{f"{r}_s": s for r, s in seconds.items()}})
    log.info("engines up in %.1fs (%s): %s", t2 - t1, "parallel" if parallel else "serial",
             {r: round(s, 1) for r, s in seconds.items()})
    order = [llms[r] for r in ROLES if r in llms]
    clients = [e.close for e in (generators["small"], generators["big"], getattr(reward, "forcer", reward))
               if hasattr(e, "client")]
    engines = Engines(small=generators["small"], big=generators["big"], reward=reward, tokenizer=shared,
                      closers=[lambda: shutdown_llms(order), *clients], params=params,
                      shared_devices=shared_devices(hw), device_calls=int(_get(hw, "device_calls", 1)))
    # A caller that never closes them still gets an explicit shutdown before the interpreter tears down (vLLM's
    # own exit-time cleanup is what prints "terminate called without an active exception").
    atexit.register(_close_at_exit, weakref.ref(engines))
    return engines


def _close_at_exit(ref) -> None:
    engines = ref()
    if engines is not None:
        engines.close()
