"""One run per folder: an exclusive lock on `<run folder>/run.lock`, held for the whole run.

Two runs appending to one results.jsonl duplicate problems and mix settings, so the second run refuses at once,
naming the holder (pid, host, start time), which the holder writes into the lock file. The lock is flock(2):
the kernel drops it when the holder's process (and every process it forked while holding it) is gone, so a
killed run never leaves a stale lock behind: the file staying there is harmless. flock works across machines on
NFS (Linux emulates it with POSIX locks); Lustre needs the `flock` mount option.

Within one process the lock is re-entrant (counted): run.py takes it in a Hydra callback, before Hydra writes
.hydra/ into the folder (a refused second run must not overwrite the running one's config), and gsi.run.run
takes it again for the run itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

LOCK_NAME = "run.lock"


class FolderInUse(SystemExit):
    """Another run holds the folder's lock (exit status 1, the message on stderr)."""


class RunLock:
    _held: dict[str, list] = {}  # lock file -> [descriptor, holds] for the locks this process holds

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._key: str | None = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        key = os.path.realpath(self.path)
        if key in RunLock._held:
            RunLock._held[key][1] += 1
            self._key = key
            return
        # Opened without truncation: until the lock is ours, the holder's record must stay readable.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderInUse(f"{self.path.parent} is in use by another run ({self._holder()}): one run per "
                              "folder. Wait for it to finish, stop it, or give this run another hydra.run.dir")
        RunLock._held[key] = [fd, 1]
        self._key = key
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": sys.argv}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)

    def release(self) -> None:
        if self._key is None:
            return
        held = RunLock._held[self._key]
        held[1] -= 1
        if held[1] == 0:
            os.close(held[0])  # closing the last descriptor drops the lock
            del RunLock._held[self._key]
        self._key = None

    def _holder(self) -> str:
        # The holder writes its record right after locking: give it a moment if we looked in between.
        for _ in range(20):
            try:
                rec = json.loads(self.path.read_text())
                return f"pid {rec['pid']} on {rec['host']}, started {rec['started']}"
            except (OSError, ValueError, KeyError, TypeError):
                time.sleep(0.05)
        return f"holder unknown: {self.path} names none"
