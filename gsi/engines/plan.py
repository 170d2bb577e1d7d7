"""What a run config's engines will be, checked before vLLM is imported or any engine starts.

`validate(cfg)` returns a `Plan` (resolved models, the reward adapter, the placement) or raises a `ConfigError`
whose message names every offending config key:
- `model.<role>.path`: what gsi.engines.resolve refuses (a missing local folder, an unknown `tiny://<role>`, a
  string that is neither a hub id nor a path);
- `model.reward.adapter`: an adapter no one knows, an architecture (config.json) no adapter knows, an adapter
  that does not match the architecture, or `auto` with a hub id whose config is not available locally;
- `model.big.path`: small and big do not share a tokenizer (contexts are token ids);
- `hardware.*`: the placement does not fit (gsi.engines.placement);
- `hardware.max_num_batched_tokens`: on the CPU it must hold a whole prompt (chunked prefill is off there).
The run config's own rules (generation.temperature, the step delimiter, ...) are gsi.config.validate's, checked
before this.

`model_params` counts the planned models' parameters (for the FLOPs: gsi.reporting.compute).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gsi.roles import ROLES
from gsi.config.access import get as _get
from gsi.engines.placement import check_hardware, placement_name
from gsi.engines.resolve import ConfigError, ResolvedModel, load_tokenizer, max_model_len, resolve_model_path
from gsi.engines.rewards import make_adapter, resolve_adapter_name
from gsi.reporting.compute import non_embedding_params

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What `validate` found: resolved models and the adapter; `build_engines` starts from it."""

    models: dict[str, ResolvedModel]
    adapter: str
    placement: str


def _same_vocab(small_tok, big_tok) -> bool:
    return len(small_tok) == len(big_tok) and small_tok.get_vocab() == big_tok.get_vocab()


def validate(cfg, *, check_devices: bool = True, tokenizers: dict | None = None) -> Plan:
    """Check everything that can be checked without vLLM; raise ConfigError naming the keys, or return a Plan.

    `tokenizers`, when given, receives the loaded {"small", "big", "reward"} tokenizers (build_engines reuses them).
    """
    model, hw, gen = _get(cfg, "model"), _get(cfg, "hardware"), _get(cfg, "generation")
    errors: list[str] = []
    # 1. hardware: cheap, no files (the generation settings' rules are gsi.config.validate's, checked before this)
    check_hardware(hw, errors, check_devices=check_devices)
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
    if placement_name(hw) == "cpu":
        budget = int(_get(hw, "max_num_batched_tokens", 0) or 0)
        for role, rm in resolved.items():
            mml = max_model_len(_get(model, role), rm)
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
    return Plan(models=resolved, adapter=adapter, placement=placement_name(hw))


def model_params(cfg, plan: Plan) -> dict[str, int]:
    """Non-embedding parameter count per role (gsi.reporting.compute; FLOPs = 2 * params * tokens)."""
    out = {}
    for role in ROLES:
        trust = bool(_get(_get(_get(cfg, "model"), role), "trust_remote_code", False))
        try:
            out[role] = int(non_embedding_params(plan.models[role].path, trust))
        except Exception as exc:  # noqa: BLE001 - FLOPs are reporting, not a reason to stop a run
            log.warning("cannot count the parameters of model.%s (%s): its FLOPs will read 0", role, exc)
            out[role] = 0
    return out
