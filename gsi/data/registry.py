"""The dataset registry: a name -> `DatasetSpec` (where the problems come from, how a row becomes a `Problem`).

Datasets register themselves: the benchmark files (gsi/data/benchmarks.py) and the generated arithmetic
(gsi/data/arith.py, a spec with a `generate` function instead of files); importing gsi.data registers them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Problem", "DatasetError", "DatasetSpec", "REGISTRY", "register", "get_spec"]


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    reference: str
    solution: str | None = None


class DatasetError(ValueError):
    """A dataset cannot be loaded: unknown name, malformed file, missing fields or rows, duplicate ids."""


@dataclass(frozen=True)
class DatasetSpec:
    """How to find a benchmark and turn its rows into Problems."""

    name: str
    hub_path: str
    hub_config: str | None
    split: str
    local_file: str
    reference: Callable[[dict], str | None]
    reference_fields: tuple[str, ...]  # the fields `reference` reads (any one suffices), for error messages
    problem_fields: tuple[str, ...] = ("problem", "question", "Problem")
    solution_fields: tuple[str, ...] = ("solution",)
    id_fields: tuple[str, ...] = ("unique_id", "id", "idx")
    description: str = ""
    # Builds the problem text from a row when it is more than one field (MMLU-STEM's choices); None: problem_fields.
    problem: Callable[[dict], str | None] | None = None
    # Ids of known-broken upstream rows left out on purpose (each named with its reason at registration).
    skip_ids: tuple[str, ...] = ()
    # A dataset generated from its config instead of read (dataset=arith): dataset config -> (every problem, where
    # they came from, for messages). None: the local file or the hub.
    generate: Callable[[Any], tuple[list[Problem], str]] | None = None


REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> DatasetSpec:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise DatasetError(f"unknown dataset {name!r}; registered: {', '.join(sorted(REGISTRY))}") from None
