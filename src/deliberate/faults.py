"""Fault injection for crash tests: a process that SIGKILLs itself at a chosen point.

``DELIBERATE_KILL_AT="POINT:N[,POINT:N...]"`` makes the process kill itself (SIGKILL: no cleanup, no atexit, no
flush) the N-th time it reaches POINT. Counts are per process, starting at 1. Points:

* ``shard``: a pool shard is half written to its temporary file (before the rename that publishes it),
* ``manifest``: half of a manifest line has been appended (a torn line),
* ``generate``: a shard's samples have been generated but not yet written,
* ``iteration``: a training step has finished (before any evaluation or checkpoint of that iteration),
* ``checkpoint``: a training checkpoint is half written to its temporary file.

Unset (production), :func:`point` is a single boolean test.
"""
from __future__ import annotations

import os
import signal
from typing import Callable

ENV = "DELIBERATE_KILL_AT"
POINTS = ("shard", "manifest", "generate", "iteration", "checkpoint")


def parse(spec: str) -> dict[str, int]:
    """``"shard:3,iteration:20"`` → ``{"shard": 3, "iteration": 20}``; a clear error for anything else."""
    out: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, n = item.partition(":")
        if name not in POINTS or not n.isdigit() or int(n) < 1:
            raise ValueError(f"{ENV}: bad item '{item}' (expected POINT:N with POINT in {POINTS} and N >= 1)")
        out[name] = int(n)
    return out


_TARGETS: dict[str, int] = {}
_ARMED = False
_COUNTS: dict[str, int] = {}


def arm(spec: str | None = None) -> None:
    """(Re)read the kill points from ``spec`` (default: the environment variable) and reset the counts."""
    global _TARGETS, _ARMED
    _TARGETS = parse(os.environ.get(ENV, "") if spec is None else spec)
    _ARMED = bool(_TARGETS)
    _COUNTS.clear()


arm()


def point(name: str, before_kill: Callable[[], None] | None = None) -> None:
    """Count one arrival at ``name``; SIGKILL this process on the armed arrival, after ``before_kill()``
    (which leaves the partial state a real crash at this point would leave)."""
    if not _ARMED:
        return
    _COUNTS[name] = _COUNTS.get(name, 0) + 1
    if _COUNTS[name] == _TARGETS.get(name):
        if before_kill is not None:
            before_kill()
        os.kill(os.getpid(), signal.SIGKILL)


def truncate_half(path) -> Callable[[], None]:
    """A ``before_kill`` that cuts ``path`` to half its size (a write interrupted midway)."""

    def cut() -> None:
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size // 2)
            f.flush()
            os.fsync(f.fileno())

    return cut
