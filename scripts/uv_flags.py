"""pip's configuration on this machine as `uv pip install` flags, one per line (scripts/setup.sh reads them).

uv installs the wheels pip would, in a fraction of the time, but it reads none of pip's configuration (pip.conf,
PIP_* variables): without these flags it would miss a machine's local indexes, find-links and constraints and
resolve other wheels than pip. `pip config list` is pip's own reading of every file and variable, so nothing is
parsed twice. `--index-strategy unsafe-best-match` is pip's rule (the best version over all indexes); uv's default
takes a package from the first index that has it.

`python scripts/uv_flags.py cert` prints the CA bundle pip is told to use (empty if none), for SSL_CERT_FILE.
"""

from __future__ import annotations

import ast
import subprocess
import sys

# pip option -> uv flag; pip's values for these are lists separated by whitespace
FLAGS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
         "constraint": "--constraint"}


def pip_config() -> list[tuple[str, str]]:
    """(option, value) for every setting pip reads, in pip's order (files, then environment)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    settings = []
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            settings.append((key.rsplit(".", 1)[-1], ast.literal_eval(value)))
    return settings


def uv_flags(settings: list[tuple[str, str]]) -> list[str]:
    flags, seen = ["--index-strategy", "unsafe-best-match"], set()
    last_index = [v for o, v in settings if o == "index-url"][-1:]  # pip keeps the last one (environment over files)
    settings = [(o, v) for o, v in settings if o != "index-url"] + [("index-url", v) for v in last_index]
    for option, value in settings:
        if option not in FLAGS:
            continue
        for item in value.split():
            if (option, item) not in seen:
                seen.add((option, item))
                flags += [FLAGS[option], item]
    return flags


def cert(settings: list[tuple[str, str]]) -> str:
    return next((value for option, value in reversed(settings) if option == "cert"), "")


if __name__ == "__main__":
    settings = pip_config()
    print(cert(settings) if sys.argv[1:] == ["cert"] else "\n".join(uv_flags(settings)))
