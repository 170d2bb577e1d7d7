"""The method registry: a method is one module here (decorated with @register) and one file in conf/method/."""

from __future__ import annotations

import importlib

METHODS: dict[str, type] = {}
_MODULES = ("gsi", "rsd", "bon", "baseline", "beam", "dvts", "pf")


def register(name: str):
    def wrap(cls):
        cls.name = name
        METHODS[name] = cls
        return cls
    return wrap


def method_class(name: str) -> type:
    for module in _MODULES:
        importlib.import_module(f"gsi.methods.{module}")
    if name not in METHODS:
        raise KeyError(f"method.name={name!r} is not registered; known: {sorted(METHODS)}")
    return METHODS[name]


def build_method(cfg, engines, ctx):
    return method_class(cfg.name)(cfg, engines, ctx)
