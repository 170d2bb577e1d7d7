"""Shared test fixtures.

Fixtures (all session-scoped; reuse them instead of starting engines or composing configs yourself):

- `make_cfg(*overrides)` -> a function that composes the run config with Hydra's compose API, like
  `python run.py <overrides>` would (without Hydra's runtime: `output_dir` stays unresolved). Cheap: no model
  loads. Example: `make_cfg("model=tiny", "hardware=gpu3", "hardware.gpus=1")`.
- `tiny_cfg` -> the composed config for `model=tiny hardware=cpu hardware.cpu_kvcache_gb=0.25` (a DictConfig; do
  not mutate it: copy it with `copy.deepcopy` first). The smaller KV cache (262k tokens for the small model,
  87k for the big one: far more than any test needs) keeps the three test engines' resident memory ~2.3 GiB
  lower than conf/hardware/cpu.yaml's 1 GiB each; on a shared 24 GiB machine the kernel's OOM killer has
  killed a test engine's worker (EngineDeadError) at 1 GiB.
- `tiny_engines` -> `gsi.engines.base.Engines` for the three tiny models on vLLM-CPU (`build_engines(tiny_cfg)`),
  started ONCE per test session (~25-60 s on 2 cores, all three in parallel) and closed at the end of the
  session. Mark tests that use it `@pytest.mark.vllm`; they are skipped with a message when vLLM is not
  importable. The engines are shared: a test must leave them as it found them. In particular change a
  generator's temperature only inside `with engines.small.temperature_scope(T): ...`, and read `stats` as
  differences (other tests' calls are counted too). Prefix caches are shared too: never assume a cold cache.
  They are also the reference for runs in other processes (test_remote's servers, test_run's killed run.py): a
  run on them gives what a run on fresh engines of the same config gives. A test that starts engines or run.py
  processes of its own says so in its docstring.
- `prm_standins` -> {"qwen_prm", "skywork_prm"}: tiny stand-ins of the PRM architectures with adapters of their own
  and their started vLLM engines (tests/prm_standins.py), started ONCE per session (two engines, in parallel) for
  test_engines and test_paper_settings, and closed after the last selected test that uses them (see RELEASED_EARLY).
- test_slurm's `cluster_runs` (its SLURM jobs) is started at the session's first heavy test (see STARTED_EARLY).
- `toy_build` -> on a cold cache, the toy models' build (gsi.models.toy, ~5 min on one core) in a background process,
  started at the session's first heavy test when a `toy` test is selected (see STARTED_EARLY); the toy tests run last
  (pytest_collection_modifyitems) and wait on its lock when they need the models before it is done.

`make test` runs pytest-xdist with two workers (`-n 2 --dist loadgroup`): every heavy test (is_heavy: marked vllm,
slurm or toy, or using one of the fixtures above) is in one xdist group, run in this file's order by one worker, so
the session fixtures above start once and never two engine-starting tests run at once; the other worker runs the
light tests beside it at nice 19 (LIGHT_NICE). Plain `pytest` (no -n) runs everything in one process, as before.

The tiny models are built on first use into $GSI_CACHE_DIR (default ~/.cache/gsi); export GSI_CACHE_DIR to share
one build between checkouts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` without an installed package still imports gsi from the checkout
    sys.path.insert(0, str(ROOT))


def compose_cfg(*overrides: str):
    """Compose conf/config.yaml with `overrides` (Hydra's compose API); no Hydra runtime, nothing resolved."""
    from gsi.config.schema import compose_config

    return compose_config(*overrides)


@pytest.fixture(scope="session")
def make_cfg():
    return compose_cfg


TINY_OVERRIDES = ("model=tiny", "hardware=cpu", "hardware.cpu_kvcache_gb=0.25")


@pytest.fixture(scope="session")
def tiny_cfg():
    return compose_cfg(*TINY_OVERRIDES)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="session")
def tiny_engines(tiny_cfg):
    if not vllm_available():
        pytest.skip("vLLM is not importable in this environment (install the CPU build: scripts/setup.sh)")
    from gsi.engines.registry import build_engines

    engines = build_engines(tiny_cfg)
    try:
        yield engines
    finally:
        engines.close()


# Session fixtures whose engines no later test needs: closed right after the last selected test that uses them
# instead of at the session's end, so that the memory is free for the tests after them (test_remote's servers skip
# below 8 GiB available, test_run's run.py processes start three engines each). Each fixture registers its closer
# in _RELEASE while it is up.
RELEASED_EARLY = ("prm_standins",)
_LAST_USER: dict = {}
_RELEASE: dict = {}


# Fixtures whose work runs in the background, mostly waiting (SLURM jobs under slurmd: a job's time limit, a
# requeue): started at the session's first heavy test (is_heavy, below) instead of at their first user's, so that
# the tests before their module run meanwhile. Each returns at once (its tests wait on what it returns). A fixture
# that skips or fails here is left alone: pytest keeps the outcome and gives it to its own tests.
# `toy_build` is started the same way when any `toy` test is selected (those tests do not name it: they wait on the
# build's lock in gsi.models.tiny.build_once).
STARTED_EARLY = ("cluster_runs",)
_FIRST_USER: dict = {}


# What makes a test "heavy": it starts engines, SLURM jobs or the toy models, or shares a session fixture that does.
HEAVY_MARKERS = ("vllm", "slurm", "toy")
HEAVY_FIXTURES = ("tiny_engines", "prm_standins", "cluster_runs", "toy_build")
HEAVY_GROUP = "heavy"
# The heavy group runs its tests one after another, so it is the suite's critical path; the light tests fill the
# time it leaves a core idle. At the same priority they slowed it 1.5-3x (x3 in docs/benchmarks.md: make test no
# faster than without xdist); niced, their processes (and the ones they start) take only what it does not use.
LIGHT_NICE = 19


def is_heavy(item) -> bool:
    return (any(item.get_closest_marker(m) for m in HEAVY_MARKERS)
            or any(f in getattr(item, "fixturenames", ()) for f in HEAVY_FIXTURES))


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads the xdist_group marks
def pytest_collection_modifyitems(session, config, items):
    """The `toy` tests run last, in their own order: on a cold cache they wait for `toy_build`, and the later they
    come, the more of the build runs beside the other tests instead of before an idle wait (cold `make test`: a
    toy test in test_engines waited 308 s for the build when it ran in file order). Then every heavy test gets the
    xdist group that keeps them on one worker, in this order (the module docstring says why); memory is the bound:
    test_remote's servers need 8 GiB free, which two engine sets at once would not leave."""
    items[:] = ([i for i in items if i.get_closest_marker("toy") is None]
                + [i for i in items if i.get_closest_marker("toy") is not None])
    for item in items:
        if is_heavy(item):
            item.add_marker(pytest.mark.xdist_group(HEAVY_GROUP))


def pytest_collection_finish(session):
    config = session.config
    if hasattr(config, "workerinput") and config.getvalue("loadgroup"):  # an xdist worker under --dist loadgroup
        lost = [i.nodeid for i in session.items if is_heavy(i) and not i.nodeid.endswith(f"@{HEAVY_GROUP}")]
        if lost:  # the heavy tests would be spread over the workers: two engine sets, test_remote short of memory
            msg = (f"pytest-xdist did not put {len(lost)} heavy tests in group {HEAVY_GROUP!r} (first: {lost[0]}): "
                   "this pytest and pytest-xdist do not work together for --dist loadgroup (pytest-xdist#1386); "
                   "install the versions pyproject.toml's test extra names (make setup)")
            os.write(2, f"\n{msg}\n".encode())  # a worker's exception reaches the terminal only as xdist's crash
            raise pytest.UsageError(msg)
    for item in session.items:  # the selected tests, in the order they run
        for name in RELEASED_EARLY:
            if name in getattr(item, "fixturenames", ()):
                _LAST_USER[name] = item
        for name in STARTED_EARLY:
            if name in getattr(item, "fixturenames", ()):
                _FIRST_USER.setdefault(name, item)
        if item.get_closest_marker("toy") is not None:
            _FIRST_USER.setdefault("toy_build", item)


@pytest.hookimpl(trylast=True)
def pytest_runtest_setup(item):
    if not is_heavy(item):
        if hasattr(item.config, "workerinput"):  # an xdist worker: light work yields the cores to the heavy group
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, 0, LIGHT_NICE)
        return  # under xdist, the worker that runs the heavy group starts them (one of each per session)
    while _FIRST_USER:  # the first heavy test: its setup has put the session on pytest's setup stack
        name, user = _FIRST_USER.popitem()
        try:
            user._request.getfixturevalue(name)  # the user's own request, so its module's fixtures resolve
        except (Exception, pytest.skip.Exception, pytest.fail.Exception):
            pass


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    for name, last in _LAST_USER.items():
        if item is last and name in _RELEASE:
            _RELEASE.pop(name)()


@pytest.fixture(scope="session")
def toy_build():
    """On a cold cache, build the toy models in a background process (one torch thread, ~5 min) while the tests
    before the toy ones run; its output goes to <cache>/toy-<version>.build.log. Returns the process (None when
    the build is there or transformers is missing). At the session's end an unfinished build gets SIGINT, so that
    it removes its temporary folder."""
    from gsi.models.toy_recipe import toy_dir

    base = toy_dir()
    if (base / "COMPLETE").exists() or importlib.util.find_spec("transformers") is None:
        yield None
        return
    base.parent.mkdir(parents=True, exist_ok=True)
    with open(base.parent / f"{base.name}.build.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gsi.models.toy"], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            proc.wait()


@pytest.fixture(scope="session")
def prm_standins(tiny_cfg, tmp_path_factory):
    if not vllm_available():
        pytest.skip("vLLM is not importable in this environment (install the CPU build: scripts/setup.sh)")
    from prm_standins import start_standins

    standins, close = start_standins(tiny_cfg, tmp_path_factory.mktemp("prm_standins"))
    _RELEASE["prm_standins"] = close
    try:
        yield standins
    finally:
        if _RELEASE.pop("prm_standins", None):
            close()

