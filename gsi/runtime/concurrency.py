"""The one place where a run starts concurrent work: `run_concurrently(fns)` runs thunks in threads and returns
their results in order, re-raising the first failure (its traceback intact, so `gsi.run.failed_role` still finds
the role whose engine call raised).

The overlapped scheduler runs its cohorts through it, and a method runs independent engine calls of one round
through it (`Method.concurrently`). A simulated clock (bench/simgpu.py) hooks in with `set_observer`: it must know
when a thread of the run starts, waits for its children and ends, to advance virtual time only when every thread
is waiting on an engine.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence


class Observer:
    """Hooks a virtual clock uses; the default does nothing."""

    def fork(self, n: int) -> object:
        """Called in the parent before its n children start; returns a token handed to `child_start`."""
        return None

    def child_start(self, token: object) -> None:
        pass

    def child_end(self, token: object) -> None:
        pass

    def joined(self, token: object) -> None:
        """Called in the parent once all children ended."""


_observer = Observer()


def set_observer(observer: Observer | None) -> None:
    global _observer
    _observer = observer or Observer()


def run_concurrently(fns: Sequence[Callable[[], object]], *, name: str = "gsi") -> list:
    """Run each thunk in its own thread (the caller waits) and return their results in order.

    Every thunk runs to its end even if another fails; then the first exception (in `fns` order) is raised.
    """
    if len(fns) <= 1:
        return [fn() for fn in fns]
    observer = _observer
    token = observer.fork(len(fns))
    results: list = [None] * len(fns)
    errors: list[BaseException | None] = [None] * len(fns)

    def one(k: int) -> None:
        observer.child_start(token)
        try:
            results[k] = fns[k]()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the parent
            errors[k] = exc
        finally:
            observer.child_end(token)

    threads = [threading.Thread(target=one, args=(k,), name=f"{name}-{k}", daemon=True) for k in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        # join with a timeout so that the main thread still runs its signal handlers (Ctrl-C, SIGTERM) meanwhile
        while t.is_alive():
            t.join(0.2)
    observer.joined(token)
    for exc in errors:
        if exc is not None:
            raise exc
    return results
