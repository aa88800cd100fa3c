"""One writer per run directory: an exclusive ``flock`` on ``RUN_DIR/.lock``.

The kernel drops the lock when its holder exits for any reason (SIGKILL included), so a crashed run never
leaves a stale lock behind; a second live process is refused with the holder's pid. A ``flock`` belongs to the
open file, which a forked child (a DataLoader worker) shares: children close their copy at fork, so the lock
dies with its holder and not with the last of its workers.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from . import distributed

LOCK_FILE = ".lock"


_HELD: dict[int, "RunLock"] = {}  # descriptor → lock, in this process


def _close_in_child() -> None:
    """After a fork: drop the child's copies of the lock descriptors (without unlocking: the parent holds on)."""
    for fd, lock in list(_HELD.items()):
        os.close(fd)
        lock._fd = None
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunLockedError(RuntimeError):
    """Another live process holds the run directory."""


class RunLock:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(f"run directory {self.path.parent} is in use by another process (pid {holder}); "
                                 f"wait for it to finish or stop it before resuming") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        _HELD[fd] = self
        return self

    def release(self) -> None:
        if self._fd is not None:
            _HELD.pop(self._fd, None)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def main_lock(run_dir: str | Path):
    """The run-directory lock, held by rank 0 only (the other ranks are part of the same run)."""
    return RunLock(run_dir) if distributed.is_main() else contextlib.nullcontext()
