"""The engines' config getter: one key of a DictConfig, a dataclass or a dict, with a default.

Every engines module reads the run config through `get`, so that the project-wide getter (gsi/config) can replace
this one in a single place.
"""

from __future__ import annotations


def get(node, key: str, default=None):
    if node is None:
        return default
    if isinstance(node, dict):
        return node.get(key, default)
    try:
        return getattr(node, key)
    except (AttributeError, KeyError):
        return default
    except Exception:  # omegaconf MissingMandatoryValue and friends
        return default
