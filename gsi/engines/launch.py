"""Starting and stopping the in-process engines: one `vllm.LLM` per `EngineSpec` (gsi.engines.specs).

Engines start in parallel threads where the placement allows (gsi.engines.placement.start_parallel): each `LLM()`
spends its time in its own spawned engine-core process (on a GPU also in a worker process; on the CPU the
model runs in the engine core: gsi.engines.specs), so threads overlap. Close with
`shutdown_llms` (parallel, explicit: no interpreter-exit noise).

Opt-in on the CPU, `GSI_VLLM_INPROCESS=1`: every engine core and worker runs inside this process
(VLLM_ENABLE_V1_MULTIPROCESSING=0), started one after another. No spawned process has to import torch and vLLM
again, so the three tiny engines start in ~4 s instead of ~25 s (bench/engine_startup.py --inprocess), but the
engines share this interpreter's global vLLM state (forward context, distributed groups): their calls are
serialised through one lock (gsi.engines.registry), and it is not the default.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from gsi.engines.specs import EngineSpec

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 60.0


def start_llm(spec: EngineSpec):
    from vllm import LLM

    with _env(spec.env):
        llm = LLM(spec.model, **spec.kwargs)
    _raise_when_the_engine_process_dies(llm)
    return llm


def _raise_when_the_engine_process_dies(llm) -> None:
    """vLLM 0.32's SyncMPClient can wait forever in get_output() when its EngineCore process dies: the liveness
    monitor marks the engine dead and shuts the output thread down without queueing an error (vllm/v1/engine/
    core_client.py), so a call under way hangs (seen under load: run.py still running 300 s after a SIGKILLed
    EngineCore). Queue EngineDeadError once the monitor has marked it dead, so that the call raises."""
    client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    outputs, resources = getattr(client, "outputs_queue", None), getattr(client, "resources", None)
    finalizer = getattr(client, "_finalizer", None)
    if outputs is None or resources is None or finalizer is None:  # in-process engine core: no process to die
        return
    from vllm.v1.engine.exceptions import EngineDeadError

    def watch() -> None:
        while finalizer.alive and not resources.engine_dead:
            time.sleep(0.5)
        if resources.engine_dead:
            outputs.put_nowait(EngineDeadError())

    threading.Thread(target=watch, name="gsi-engine-death-watch", daemon=True).start()


@contextlib.contextmanager
def _env(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_llms(specs: Sequence[EngineSpec], *, parallel: bool = True) -> tuple[dict[str, Any], dict[str, float]]:
    """Start one LLM per spec (in threads when `parallel`); return ({role: llm}, {role: seconds}).

    If any engine fails, the ones that started are shut down and the first error is raised.
    """
    llms: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one(spec: EngineSpec):
        t0 = time.perf_counter()
        try:
            llm = start_llm(spec)
        except BaseException as exc:  # noqa: BLE001 - reported below, after the others are stopped
            with lock:
                errors.append(RuntimeError(f"starting the {spec.role} engine ({spec.model}) failed: {exc}"))
                errors[-1].__cause__ = exc
            return
        with lock:
            llms[spec.role] = llm
            seconds[spec.role] = time.perf_counter() - t0

    if parallel and len(specs) > 1:
        threads = [threading.Thread(target=one, args=(s,), name=f"start-{s.role}", daemon=True) for s in specs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for spec in specs:
            one(spec)
            if errors:
                break
    if errors:
        shutdown_llms(list(llms.values()))
        raise errors[0]
    return llms, seconds


def shutdown_llm(llm, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Stop an LLM's engine-core and worker processes now (not at interpreter exit).

    vLLM's own grace period is 5 s, after which it force-kills the engine core (leaking its shared memory); an
    engine core that exits while two others do on a loaded 2-core machine needs longer, so we give it `timeout`.
    """
    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        try:
            core.shutdown(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - shutting down anyway
            log.warning("engine shutdown raised %r", exc)


def shutdown_llms(llms: Sequence[Any]) -> None:
    if not llms:
        return
    with ThreadPoolExecutor(max_workers=len(llms)) as pool:
        list(pool.map(shutdown_llm, llms))
