"""One way to read a config value, whatever holds it: a DictConfig, a plain dict or an object (a dataclass).

    get(cfg, "model.reward.adapter", "auto")

A dotted key walks down; `default` comes back when a key on the way is absent or the value is missing (`???`).
None stays None (a value set to null is a value), and an interpolation that cannot resolve raises OmegaConf's
error, which names the key."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

_ABSENT = object()


def get(node: Any, key: str, default: Any = None) -> Any:
    """node's value at the dotted `key`; `default` when it is absent or missing (see the module doc)."""
    if node is None:
        return default
    if isinstance(node, DictConfig):
        value = OmegaConf.select(node, key, default=_ABSENT, throw_on_missing=False)
        return default if value is _ABSENT else value
    head, _, rest = key.partition(".")
    value = node.get(head, _ABSENT) if isinstance(node, dict) else getattr(node, head, _ABSENT)
    if value is _ABSENT or (isinstance(value, str) and value == "???"):
        return default
    return get(value, rest, default) if rest else value
