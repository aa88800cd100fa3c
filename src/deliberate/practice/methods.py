"""Practice methods: the same loop, configured differently (all run by :func:`~deliberate.practice.loop.practice`).

* ``dp``: Deliberate Practice: N plain samples, then P entropy-guided samples whenever validation stalls.
* ``dynamic_unguided``: the same loop with ω = 0 (separates "add data when stuck" from guidance).
* ``static``: every sample up front (ω = 0), no additions.
* ``prune`` / ``prune_random`` (prune.py, registered there): oversample k·M plain samples, keep the M of highest entropy under a
  scorer trained on the first N (or M at random), then train like ``static``.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import METHODS


@dataclass(frozen=True)
class MethodSpec:
    name: str
    initial: int  # N: plain samples generated before training
    add: int  # P: samples per addition (0 = static)
    omega: float  # entropy-guidance scale of additions
    max_samples: int  # no addition may cross this budget


@METHODS.register("dp")
def dp(cfg, budget: int | None = None) -> MethodSpec:
    p = cfg.practice
    return MethodSpec("dp", p.initial_samples, p.add_samples, cfg.guidance.omega, p.max_samples)


@METHODS.register("dynamic_unguided")
def dynamic_unguided(cfg, budget: int | None = None) -> MethodSpec:
    p = cfg.practice
    return MethodSpec("dynamic_unguided", p.initial_samples, p.add_samples, 0.0, p.max_samples)


@METHODS.register("static")
def static(cfg, budget: int | None = None) -> MethodSpec:
    """All samples up front. ``budget`` (the final pool size of DP in the same run, when it ran) sets the size;
    without it, ``practice.max_samples``."""
    n = budget or cfg.practice.max_samples
    return MethodSpec("static", n, 0, 0.0, n)
