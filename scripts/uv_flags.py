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

# pip's options that uv takes under the same name (`--<option>`); pip's values for these are lists separated by
# whitespace
OPTIONS = ("index-url", "extra-index-url", "find-links", "constraint")


# Where pip reads an option, strongest first: a PIP_* variable, the [install] section, the [global] section (each
# section already merged over pip's config files by pip). `pip config list` prints them sorted, not in this order.
PRECEDENCE = (":env:", "install", "global")


def pip_config() -> dict[str, str]:
    """option -> the value pip install uses, for every option set in pip's files or environment."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    found: dict[tuple[str, str], str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        section, _, option = key.rpartition(".")
        if sep and section in PRECEDENCE:
            found[section, option] = ast.literal_eval(value)
    return {option: next(found[s, option] for s in PRECEDENCE if (s, option) in found) for _, option in found}


def uv_flags(settings: dict[str, str]) -> list[str]:
    flags = ["--index-strategy", "unsafe-best-match"]
    for option in OPTIONS:
        for item in settings.get(option, "").split():
            flags += ["--" + option, item]
    return flags


if __name__ == "__main__":
    settings = pip_config()
    print(settings.get("cert", "") if sys.argv[1:] == ["cert"] else "\n".join(uv_flags(settings)))
