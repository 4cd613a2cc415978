"""One exclusive lock per folder or store, held by one process at a time.

``fcntl.flock`` on a small lock file: the kernel frees it when the holding process ends, however it ends
(kill -9 included), so a lock left by a dead process is never "stale" and is taken over by the next call
without guessing from pids. The holder writes who it is (pid, host, start time, command) into the file,
so a refused caller can say who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any


class LockHeld(RuntimeError):
    """The lock is held by another live process; ``holder`` says who (as much as it wrote)."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.path, self.holder = path, holder
        who = (
            f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
            if holder
            else "another process"
        )
        super().__init__(f"{path.parent} is in use by {who} (lock file {path})")


class ExclusiveLock:
    """``with ExclusiveLock(path):`` holds ``path`` (a lock file, created with its folder) exclusively.

    ``blocking=False`` raises ``LockHeld`` at once when another process holds it; ``blocking=True`` waits.
    Re-entrant within one process is not supported: a second ``ExclusiveLock`` on the same path in the same
    process is refused (flock locks belong to open files, not processes)."""

    def __init__(self, path: str | Path, *, blocking: bool = False, note: str | None = None) -> None:
        self.path = Path(path)
        self.blocking = blocking
        self.note = note
        self._fd: int | None = None

    def acquire(self) -> ExclusiveLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if self.blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(self.path, read_holder(self.path)) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv)[:500],
        }
        if self.note:
            holder["note"] = self.note
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # nobody holds it: no holder to report
        finally:
            os.close(fd)  # closing frees the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> ExclusiveLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(path: str | Path) -> dict[str, Any]:
    """What the holder of ``path`` wrote about itself ({} when nothing readable: it is just starting)."""
    for _ in range(5):  # the holder truncates then writes: a read in between sees an empty file
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError:
            return {}
        if text.strip():
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            if isinstance(value, dict):
                return value
        time.sleep(0.05)
    return {}
