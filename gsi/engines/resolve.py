"""Model resolution: what a `model.<role>.path` names, and what can be read about that model without loading it.

- `tiny://<role>` and `toy://<role>`: the built tiny and toy models (gsi.models; built on first use);
- an existing folder (with a config.json): itself;
- a hub id (owner/name): itself, with its config.json when the local Hugging Face cache has it. A hub model that is
  not cached where the hub cannot be reached is refused at once (`check_hub_models`), naming the key.

A local-looking path (starts with '/', './', '../', '~', or has more than one '/') that is not a model folder, an
unknown tiny or toy role, or a string that is neither a hub id nor a path raises `ConfigError` naming the key.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from gsi.roles import ROLES
from gsi.config.access import get as _get
from gsi.engines.placement import remote_roles
from gsi.models import tiny, toy, toy_recipe

TINY_SCHEME = "tiny://"
TOY_SCHEME = "toy://"
# scheme -> (what the error calls it, its roles, the function that builds (once) and returns {role: folder})
BUILT_MODELS = {TINY_SCHEME: ("tiny", tiny.ROLES, tiny.tiny_paths),
                TOY_SCHEME: ("toy", toy_recipe.ROLES, toy.toy_paths)}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


class ConfigError(ValueError):
    """A run config that cannot work; the message names the config keys."""


@dataclass
class ResolvedModel:
    role: str
    path: str  # local folder or hub id
    local: bool
    config: dict = field(default_factory=dict)  # config.json, when local


def looks_local(path: str) -> bool:
    return (path.startswith(("/", "./", "../", "~")) or path in (".", "..") or path.endswith("/")
            or "\\" in path or path.count("/") > 1)


def resolve_model_path(path: str, key: str) -> ResolvedModel:
    """tiny://<role> -> the built tiny model folder; an existing folder -> itself; a hub id -> itself."""
    role = key.split(".")[1]
    if path is None or str(path).strip() == "":
        raise ConfigError(f"{key} is empty: give a hub id, a local folder, or tiny://<role>")
    path = str(path)
    for scheme, (kind, roles, paths) in BUILT_MODELS.items():
        if path.startswith(scheme):
            name = path[len(scheme):]
            if name not in roles:
                raise ConfigError(f"{key}={path!r}: unknown {kind} model {name!r}; known: "
                                  f"{[scheme + r for r in roles]}")
            folder = paths()[name]  # built on first use
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
    return ResolvedModel(role, path, False, cached_hub_config(path))


def _read_config(folder: Path, key: str) -> dict:
    cfg_path = Path(folder) / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{key}={str(folder)!r} has no config.json: not a model folder")
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: {cfg_path} is not valid JSON ({exc})") from exc


def cached_hub_config(repo_id: str) -> dict:
    """config.json of a hub model if the local Hugging Face cache has it ({} otherwise; never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "config.json")
        if isinstance(cached, str) and os.path.isfile(cached):
            return json.loads(Path(cached).read_text())
    except Exception:  # noqa: BLE001 - the cache is only a hint
        pass
    return {}


def max_model_len(model_cfg, resolved: ResolvedModel) -> int | None:
    """The context window: model.<role>.max_model_len, else the model's max_position_embeddings (None: unknown)."""
    configured = _get(model_cfg, "max_model_len")
    if configured:
        return int(configured)
    text_cfg = resolved.config.get("text_config", resolved.config)
    value = text_cfg.get("max_position_embeddings")
    return int(value) if value else None


def load_tokenizer(resolved: ResolvedModel, model_cfg):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=bool(_get(model_cfg, "trust_remote_code")),
                                         revision=None if resolved.local else _get(model_cfg, "revision"))


def eos_ids(resolved: ResolvedModel, tokenizer) -> set[int]:
    """Every EOS id the model knows: the tokenizer's, config.json's and generation_config.json's."""
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
    from huggingface_hub import constants

    model, remote = _get(cfg, "model"), remote_roles(_get(cfg, "hardware"))
    missing = []
    for role in ROLES:
        path = str(_get(_get(model, role), "path") or "")
        if role in remote or not path or "://" in path or Path(os.path.expanduser(path)).exists() \
                or looks_local(path) or not _HUB_ID.match(path):
            continue  # not a hub id: resolve_model_path names what is wrong with it
        if not cached_hub_config(path):
            missing.append(f"model.{role}.path={path!r}")
    if not missing:
        return
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else None
    if why is None and not any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        url = urlparse(constants.ENDPOINT)
        try:
            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), 5).close()
        except OSError as exc:
            why = f"the hub ({constants.ENDPOINT}) cannot be reached: {exc}"
    if why:
        raise ConfigError(f"{'; '.join(missing)}: not in the local Hugging Face cache and {why}. Download it where "
                          "the hub is reachable (huggingface-cli download <id>, same HF_HOME), or give a local folder")
