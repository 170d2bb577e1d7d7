"""The engine registry: a composed run config -> `Engines` (small and big generators, the PRM, the tokenizer).

    from gsi.engines.registry import build_engines
    with build_engines(cfg) as engines:          # cfg.model, cfg.hardware, cfg.generation (and cfg.seed)
        steps = engines.small.generate([...])

`validate(cfg)` runs first and fails fast, before vLLM is imported or any engine starts, with a `ConfigError`
whose message names every offending config key:
- `model.<role>.path`: a local-looking path (starts with '/', './', '../', '~', or has more than one '/') that
  is not an existing folder with a config.json; an unknown `tiny://<role>`; a string that is neither a hub id nor
  a path;
- `model.reward.adapter`: an adapter no one knows, an architecture (config.json) no adapter knows, an adapter
  that does not match the architecture, or `auto` with a hub id whose config is not available locally;
- `model.big.path`: small and big do not share a tokenizer (contexts are token ids);
- `hardware.gpus` / `hardware.tensor_parallel_big` / `hardware.gpu_memory_utilization`: the placement does not
  fit (gpu3 needs 2 + tensor_parallel_big GPUs, gpu1 needs 1 and fractions summing below 1, cpu needs 0); for the
  GPU placements also against the devices really visible;
- `hardware.max_num_batched_tokens`: on the CPU it must hold a whole prompt (chunked prefill is off there).
The run config's own rules (generation.temperature, the step delimiter, ...) are gsi.config.validate's, checked
before this.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gsi.config.access import get as _get
from gsi.engines.base import Engines
from gsi.engines.rewards import ADAPTERS, make_adapter, resolve_adapter_name
from gsi.roles import POLICIES, ROLES

log = logging.getLogger(__name__)

TINY_SCHEME = "tiny://"
TOY_SCHEME = "toy://"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


class ConfigError(ValueError):
    """A run config that cannot work; the message names the config keys."""


@dataclass
class ResolvedModel:
    role: str
    path: str  # local folder or hub id
    local: bool
    config: dict = field(default_factory=dict)  # config.json, when local


@dataclass
class Plan:
    """What `validate` found: resolved models and the adapter; `build_engines` starts from it."""

    models: dict[str, ResolvedModel]
    adapter: str
    placement: str


# ---------------------------------------------------------------------------------------------------------------
# Helpers over a DictConfig or a dataclass
# ---------------------------------------------------------------------------------------------------------------
def _placement(hw) -> str:
    p = _get(hw, "placement")
    return str(getattr(p, "value", p))


def _fractions(hw) -> dict[str, float]:
    frac = _get(hw, "gpu_memory_utilization") or {}
    return {k: float(frac[k]) for k in frac}


# ---------------------------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------------------------
def looks_local(path: str) -> bool:
    return (path.startswith(("/", "./", "../", "~")) or path in (".", "..") or path.endswith("/")
            or "\\" in path or path.count("/") > 1)


def resolve_model_path(path: str, key: str) -> ResolvedModel:
    """tiny://<role> -> the built tiny model folder; an existing folder -> itself; a hub id -> itself."""
    role = key.split(".")[1]
    if path is None or str(path).strip() == "":
        raise ConfigError(f"{key} is empty: give a hub id, a local folder, or tiny://<role>")
    path = str(path)
    if path.startswith(TINY_SCHEME):
        from gsi.models import tiny

        name = path[len(TINY_SCHEME):]
        if name not in tiny.ROLES:
            raise ConfigError(f"{key}={path!r}: unknown tiny model {name!r}; known: "
                              f"{[TINY_SCHEME + r for r in tiny.ROLES]}")
        folder = tiny.tiny_paths()[name]
        return ResolvedModel(role, str(folder), True, _read_config(folder, key))
    if path.startswith(TOY_SCHEME):  # the trained toy models (gsi/models/toy.py), built on first use
        from gsi.models import toy

        name = path[len(TOY_SCHEME):]
        if name not in toy.ROLES:
            raise ConfigError(f"{key}={path!r}: unknown toy model {name!r}; known: "
                              f"{[TOY_SCHEME + r for r in toy.ROLES]}")
        folder = toy.toy_paths()[name]
        return ResolvedModel(role, str(folder), True, _read_config(folder, key))
    expanded = Path(os.path.expanduser(path))
    if expanded.is_dir():
        return ResolvedModel(role, str(expanded.resolve()), True, _read_config(expanded, key))
    if expanded.exists():
        raise ConfigError(f"{key}={path!r} is a file; a model path must be a folder (with config.json) or a hub id")
    if looks_local(path):
        raise ConfigError(f"{key}={path!r}: no such local folder")
    if not _HUB_ID.match(path):
        raise ConfigError(f"{key}={path!r} is neither an existing folder nor a hub id (owner/name)")
    return ResolvedModel(role, path, False, _cached_hub_config(path))


def _read_config(folder: Path, key: str) -> dict:
    cfg_path = Path(folder) / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{key}={str(folder)!r} has no config.json: not a model folder")
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: {cfg_path} is not valid JSON ({exc})") from exc


def _cached_hub_config(repo_id: str) -> dict:
    """config.json of a hub model if the local Hugging Face cache has it ({} otherwise; never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "config.json")
        if isinstance(cached, str) and os.path.isfile(cached):
            return json.loads(Path(cached).read_text())
    except Exception:  # noqa: BLE001 - the cache is only a hint
        pass
    return {}


def _max_model_len(model_cfg, resolved: ResolvedModel) -> int | None:
    configured = _get(model_cfg, "max_model_len")
    if configured:
        return int(configured)
    text_cfg = resolved.config.get("text_config", resolved.config)
    value = text_cfg.get("max_position_embeddings")
    return int(value) if value else None


# ---------------------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------------------
def visible_cuda_devices() -> int | None:
    """GPUs this process can use, or None when there is no way to tell (no NVML, no torch)."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    listed = None
    if cvd is not None:
        entries = [e for e in cvd.split(",") if e.strip()]
        listed = 0 if not entries or entries[0].strip() == "-1" else len(entries)
    count = None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML: fall back to torch
        try:
            import torch

            count = int(torch.cuda.device_count()) if torch.version.cuda else 0
        except Exception:  # noqa: BLE001
            count = None
    if count is None:
        return listed
    return count if listed is None else min(count, listed)


def placement_devices(hw) -> dict[str, list[int]]:
    """GPU indices (into CUDA_VISIBLE_DEVICES) per role; {} for the CPU."""
    placement = _placement(hw)
    tp = int(_get(hw, "tensor_parallel_big", 1))
    if placement == "gpu3":
        return {"small": [0], "big": list(range(1, 1 + tp)), "reward": [1 + tp]}
    if placement == "gpu1":
        return {"small": [0], "big": [0], "reward": [0]}
    return {}


# ---------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------
def remote_roles(hw) -> dict[str, str]:
    """{role: URL} of the roles served by vLLM servers (hardware.remote)."""
    return {str(k): str(v) for k, v in (_get(hw, "remote") or {}).items() if v}


def _check_remote(hw, errors: list[str]) -> None:
    urls = remote_roles(hw)
    unknown = sorted(set(urls) - set(ROLES))
    if unknown:
        errors.append(f"hardware.remote names unknown roles {unknown}; roles are {list(ROLES)}")
    bad = {r: u for r, u in urls.items() if not u.startswith(("http://", "https://"))}
    if bad:
        errors.append(f"hardware.remote {bad}: a role's URL must start with http:// or https://")
    if _placement(hw) == "remote":
        missing = [r for r in ROLES if r not in urls]
        if missing:
            errors.append(f"hardware.placement=remote needs a URL per role: hardware.remote lacks {missing} "
                          "(start them with python -m gsi.cluster.serve role=<role> ...)")


def _check_hardware(hw, errors: list[str], *, check_devices: bool) -> None:
    _check_remote(hw, errors)
    placement = _placement(hw)
    if placement == "remote":
        return
    gpus = int(_get(hw, "gpus", 0) or 0)
    tp = int(_get(hw, "tensor_parallel_big", 1) or 1)
    frac = _fractions(hw)
    if placement not in ("gpu3", "gpu1", "cpu"):
        errors.append(f"hardware.placement={placement!r}: expected gpu3, gpu1, cpu or remote")
        return
    if tp < 1:
        errors.append(f"hardware.tensor_parallel_big={tp} must be >= 1")
        return
    if placement == "gpu3":
        need = 2 + tp
        if gpus < need:
            errors.append(f"hardware.gpus={gpus} does not fit placement gpu3: small, reward and big "
                          f"(hardware.tensor_parallel_big={tp}) need {need} GPUs")
    elif placement == "gpu1":
        if gpus < 1:
            errors.append(f"hardware.gpus={gpus} does not fit placement gpu1: it needs 1 GPU")
        if tp != 1:
            errors.append(f"hardware.tensor_parallel_big={tp}: placement gpu1 puts every role on one GPU, so it "
                          "must be 1")
    else:
        if gpus != 0:
            errors.append(f"hardware.gpus={gpus} does not fit placement cpu: the CPU build uses no GPU (set 0)")
        if tp != 1:
            errors.append(f"hardware.tensor_parallel_big={tp}: the CPU placement has no tensor parallelism")
    if placement in ("gpu3", "gpu1"):
        missing = [r for r in ROLES if r not in frac]
        if missing:
            errors.append(f"hardware.gpu_memory_utilization lacks {missing}")
        bad = {r: v for r, v in frac.items() if not 0.0 < v <= 1.0}
        if bad:
            errors.append(f"hardware.gpu_memory_utilization {bad}: each fraction must be in (0, 1]")
        if placement == "gpu1" and not missing and sum(frac[r] for r in ROLES) >= 1.0:
            errors.append(f"hardware.gpu_memory_utilization {frac} sums to {sum(frac[r] for r in ROLES):.2f}: "
                          "on one GPU (gpu1) the three roles' fractions must sum to < 1")
        if check_devices and not errors:
            visible = visible_cuda_devices()
            need = 2 + tp if placement == "gpu3" else 1
            if visible is not None and visible < need:
                errors.append(f"hardware.gpus={gpus}: placement {placement} needs {need} GPUs but this process sees "
                              f"{visible} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
            elif visible is not None and visible < gpus:
                errors.append(f"hardware.gpus={gpus} but this process sees only {visible} GPUs")
    if placement == "cpu" and float(_get(hw, "cpu_kvcache_gb", 1.0)) <= 0:
        errors.append("hardware.cpu_kvcache_gb must be > 0")


def _same_vocab(small_tok, big_tok) -> bool:
    return len(small_tok) == len(big_tok) and small_tok.get_vocab() == big_tok.get_vocab()


def load_tokenizer(resolved: ResolvedModel, model_cfg):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=bool(_get(model_cfg, "trust_remote_code")),
                                         revision=None if resolved.local else _get(model_cfg, "revision"))


def validate(cfg, *, check_devices: bool = True, tokenizers: dict | None = None) -> Plan:
    """Check everything that can be checked without vLLM; raise ConfigError naming the keys, or return a Plan.

    `tokenizers`, when given, receives the loaded {"small", "big", "reward"} tokenizers (build_engines reuses them).
    """
    model, hw, gen = _get(cfg, "model"), _get(cfg, "hardware"), _get(cfg, "generation")
    errors: list[str] = []
    # 1. hardware and generation: cheap, no files
    _check_hardware(hw, errors, check_devices=check_devices)
    # 2. model paths
    resolved: dict[str, ResolvedModel] = {}
    for role in ROLES:
        key = f"model.{role}.path"
        try:
            resolved[role] = resolve_model_path(_get(_get(model, role), "path"), key)
        except ConfigError as exc:
            errors.append(str(exc))
    # 3. the reward adapter
    reward_cfg = _get(model, "reward")
    adapter_name = str(_get(reward_cfg, "adapter", "auto"))
    adapter = adapter_name
    if "reward" in resolved:
        rm = resolved["reward"]
        archs = rm.config.get("architectures") if rm.config else None
        try:
            adapter = resolve_adapter_name(adapter_name, archs)
        except ValueError as exc:
            errors.append(str(exc))
    elif adapter_name != "auto":
        try:
            resolve_adapter_name(adapter_name, None)
        except ValueError as exc:
            errors.append(str(exc))
    # 4. context windows vs the CPU batch budget (chunked prefill is off there, vllm-facts §4)
    if _placement(hw) == "cpu":
        budget = int(_get(hw, "max_num_batched_tokens", 0) or 0)
        for role, rm in resolved.items():
            mml = _max_model_len(_get(model, role), rm)
            if mml is not None and budget < mml:
                errors.append(f"hardware.max_num_batched_tokens={budget} is below model.{role}'s context window "
                              f"({mml}): on the CPU every prompt must fit one batch (seeded requests die when a "
                              "prefill is split); raise it or lower model.{role}.max_model_len")
    if errors:
        raise ConfigError("invalid run config:\n  - " + "\n  - ".join(errors))
    # 5. small and big must share a tokenizer (contexts are token ids)
    toks = {}
    for role in ROLES:
        try:
            toks[role] = load_tokenizer(resolved[role], _get(model, role))
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"model.{role}.path={resolved[role].path!r}: cannot load its tokenizer ({exc})") from exc
    if not _same_vocab(toks["small"], toks["big"]):
        raise ConfigError(f"model.big.path={resolved['big'].path!r} does not share model.small.path="
                          f"{resolved['small'].path!r}'s tokenizer (vocabularies of {len(toks['small'])} and "
                          f"{len(toks['big'])} tokens differ): contexts are token ids, so they must be equal")
    try:  # the adapter can be built with this tokenizer (e.g. qwen_prm needs a single <extra_0> token)
        make_adapter(adapter, toks["reward"], delimiter=_get(gen, "step_delimiter", "\n\n"))
    except ValueError as exc:
        raise ConfigError(f"model.reward.adapter={adapter!r}: {exc}") from exc
    if tokenizers is not None:
        tokenizers.update(toks)
    return Plan(models=resolved, adapter=adapter, placement=_placement(hw))


# ---------------------------------------------------------------------------------------------------------------
# Engine specs and startup
# ---------------------------------------------------------------------------------------------------------------
def _supports_device_ids() -> bool:
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    return any(f.name == "device_ids" for f in dataclasses.fields(EngineArgs))


def engine_specs(cfg, plan: Plan, roles=ROLES) -> list:
    """vllm.LLM arguments per role, placement included."""
    from gsi.engines.vllm import WORKER_EXTENSION, EngineSpec

    model, hw = _get(cfg, "model"), _get(cfg, "hardware")
    placement = plan.placement
    devices = placement_devices(hw)
    frac = _fractions(hw)
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
        if role == "reward":
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
            if role != "reward":
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


CUSTOM_MODELS_EXTENSION = "gsi.engines.worker.CustomModelsExtension"


def needs_custom_models(plan: Plan) -> bool:
    """Whether the reward model is an architecture vLLM lacks and gsi.engines.worker registers (Skywork's PRM)."""
    from gsi.engines.worker import CUSTOM_MODELS

    archs = plan.models["reward"].config.get("architectures") or []
    return plan.adapter == "skywork_prm" or any(a in CUSTOM_MODELS for a in archs)


def prepare_process_env(placement: str) -> None:
    """Process-wide settings the engines read at start (same for all three, so threads do not race on them)."""
    if placement == "cpu":
        if "VLLM_CPU_KVCACHE_SPACE" in os.environ:
            log.warning("ignoring VLLM_CPU_KVCACHE_SPACE=%s: hardware.cpu_kvcache_gb sets each engine's KV cache",
                        os.environ["VLLM_CPU_KVCACHE_SPACE"])
            del os.environ["VLLM_CPU_KVCACHE_SPACE"]
        # vLLM's default binds every engine's worker to the same core; let the OS schedule the three instead.
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        if cpu_inprocess():
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"


def cpu_inprocess() -> bool:
    """Opt-in (GSI_VLLM_INPROCESS=1): the CPU engines run inside this process (see gsi.engines.vllm)."""
    return os.environ.get("GSI_VLLM_INPROCESS", "0") == "1"


def start_parallel(plan: Plan, specs) -> bool:
    """Whether the engines can start at the same time (see gsi.engines.vllm's docstring)."""
    if plan.placement == "gpu1" or (plan.placement == "cpu" and cpu_inprocess()):
        return False
    return not any(s.env for s in specs)


def _eos_ids(resolved: ResolvedModel, tokenizer) -> set[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))

    def add(value):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value if isinstance(v, int))

    add(resolved.config.get("eos_token_id"))
    if resolved.local:
        gen_path = Path(resolved.path) / "generation_config.json"
        if gen_path.is_file():
            add(json.loads(gen_path.read_text()).get("eos_token_id"))
    else:
        try:
            from transformers import GenerationConfig

            add(GenerationConfig.from_pretrained(resolved.path).eos_token_id)
        except Exception:  # noqa: BLE001 - no generation_config.json
            pass
    return ids


def check_hub_models(cfg) -> None:
    """A hub model that is not in the local cache cannot load where the hub is unreachable: say so at once, naming
    the key, instead of after minutes of download retries. Offline is HF_HUB_OFFLINE, or a TCP connect to the hub's
    host (HF_ENDPOINT) that fails within a few seconds (not tried behind a proxy, which only the HTTP client
    knows how to use)."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    model, remote = _get(cfg, "model"), remote_roles(_get(cfg, "hardware"))
    missing = []
    for role in ROLES:
        path = str(_get(_get(model, role), "path") or "")
        if role in remote or not path or "://" in path or Path(os.path.expanduser(path)).exists() \
                or looks_local(path) or not _HUB_ID.match(path):
            continue  # not a hub id: resolve_model_path names what is wrong with it
        if not _cached_hub_config(path):
            missing.append(f"model.{role}.path={path!r}")
    if not missing:
        return
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else None
    if why is None and not any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        url = urlparse(constants.ENDPOINT)
        try:
            import socket

            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), 5).close()
        except OSError as exc:
            why = f"the hub ({constants.ENDPOINT}) cannot be reached: {exc}"
    if why:
        raise ConfigError(f"{'; '.join(missing)}: not in the local Hugging Face cache and {why}. Download it where "
                          "the hub is reachable (huggingface-cli download <id>, same HF_HOME), or give a local folder")


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
    from gsi.engines.vllm import VLLMGenerator, VLLMRewardModel, shutdown_llms, start_llms

    model, hw, gen = _get(cfg, "model"), _get(cfg, "hardware"), _get(cfg, "generation")
    prepare_process_env(plan.placement)
    if needs_custom_models(plan):
        from gsi.engines.worker import register_custom_models

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
        for role in POLICIES:
            eos = _eos_ids(plan.models[role], tokenizers[role])
            if role in remote:
                from gsi.engines.remote import RemoteGenerator

                generators[role] = RemoteGenerator(role, remote[role], shared, temperature=temperature,
                                                   delimiter=delimiter, eos_token_ids=eos, prefix_caching=caching)
                continue
            generators[role] = VLLMGenerator(
                role, llms[role], shared, temperature=temperature, delimiter=delimiter,
                eos_token_ids=eos, prefix_caching=caching, lock=lock)
        reward_cfg = _get(model, "reward")
        system_prompt = _get(reward_cfg, "system_prompt")
        if system_prompt is None and plan.adapter == "token_classification":
            # a generic PRM reads the same rendered context as the generators (methods.md, "Problem prompt x")
            from gsi.data.prompts import system_prompt as full_system_prompt

            system_prompt = full_system_prompt(_get(model, "system_prompt"), _get(_get(cfg, "dataset"), "instruction"))
        adapter = make_adapter(plan.adapter, tokenizers["reward"], delimiter=delimiter, system_prompt=system_prompt)
        if "reward" in remote:
            from gsi.engines.remote import RemoteRewardModel

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
    clients = [e.close for e in (generators["small"], generators["big"], reward) if hasattr(e, "client")]
    engines = Engines(small=generators["small"], big=generators["big"], reward=reward, tokenizer=shared,
                      closers=[lambda: shutdown_llms(order), *clients], params=params)
    # A caller that never closes them still gets an explicit shutdown before the interpreter tears down (vLLM's
    # own exit-time cleanup is what prints "terminate called without an active exception").
    atexit.register(_close_at_exit, weakref.ref(engines))
    return engines


def _close_at_exit(ref) -> None:
    engines = ref()
    if engines is not None:
        engines.close()


def model_params(cfg, plan: Plan) -> dict[str, int]:
    """Non-embedding parameter count per role (gsi.reporting.compute; FLOPs = 2 * params * tokens)."""
    from gsi.reporting.compute import non_embedding_params

    out = {}
    for role in ROLES:
        trust = bool(_get(_get(_get(cfg, "model"), role), "trust_remote_code", False))
        try:
            out[role] = int(non_embedding_params(plan.models[role].path, trust))
        except Exception as exc:  # noqa: BLE001 - FLOPs are reporting, not a reason to stop a run
            log.warning("cannot count the parameters of model.%s (%s): its FLOPs will read 0", role, exc)
            out[role] = 0
    return out
