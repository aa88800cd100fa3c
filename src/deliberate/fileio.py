"""Durable file writes, used by every writer of a run directory (pool shards, checkpoints, logs, reports).

A file is written to a temporary sibling, fsynced and renamed over its target, so a reader (or a process that
resumes after a crash) sees the old bytes or the new ones, never a mix. ENOSPC becomes :class:`DiskFullError`.
Imports nothing of ``deliberate`` but :mod:`~deliberate.faults` (fault injection for the crash tests).
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from . import faults


class DiskFullError(RuntimeError):
    """No space left while writing run state; nothing was left half-written and the run can be resumed."""


def storage_error(e: OSError, path: Path) -> Exception:
    """ENOSPC → :class:`DiskFullError` naming the file; any other OSError unchanged."""
    if e.errno == errno.ENOSPC:
        return DiskFullError(f"disk full while writing {path}; nothing was left half-written: free space and "
                             f"continue with `deliberate run --resume RUN_DIR`")
    return e


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write, fault: str | None = None) -> None:
    """``write(tmp_path)``, fsync, rename over ``path``; on failure the temp file is removed and ``path`` is
    untouched (ENOSPC becomes :class:`DiskFullError`)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if fault:
            faults.point(fault, faults.truncate_half(tmp))
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise storage_error(e, path) from e


def write_text(path: Path, text: str) -> None:
    """``text`` to ``path`` atomically and durably."""
    atomic_write(path, lambda p: Path(p).write_text(text))
