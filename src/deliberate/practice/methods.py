"""Practice methods: the same loop, configured differently (all run by :func:`~deliberate.practice.loop.practice`).

* ``dp``: Deliberate Practice: N plain samples, then P entropy-guided samples whenever validation stalls.
* ``dynamic_unguided``: the same loop with ω = 0 (separates "add data when stuck" from guidance).
* ``static``: every sample up front (ω = 0), no additions.
* ``prune`` / ``prune_random`` (prune.py, registered there): oversample k·M plain samples, keep the M of highest
  entropy under a scorer trained on the first N (or M at random), then train like ``static``.

A method is complete in its spec: the job, the loop and the benchmark read its fields and call its hooks and never
test its name. A new method is one registered factory ``(cfg, budget=None) -> MethodSpec`` (or a subclass) in one
module:

* fields (recorded in every checkpoint, compared on resume): ``initial`` N, ``add`` P, ``omega`` ω, ``max_samples``;
* ``sized_by`` (a class attribute, not recorded): the method whose final pool size, when it ran earlier in the same
  job, is passed as ``budget``; the job runs a method after the one it is sized by;
* :meth:`MethodSpec.build_pool`: step 1, the initial pool (plain growth by default, copying the shards that earlier
  methods of the job made identically);
* :meth:`MethodSpec.cost`: the samples it generates for a pool of a given size (the job's time-left estimate, the
  benchmark's cost records).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..registry import METHODS
from .loop import grow
from .pool import Pool


@dataclass(frozen=True)
class MethodSpec:
    name: str
    initial: int  # N: plain samples generated before training
    add: int  # P: samples per addition (0 = static)
    omega: float  # entropy-guidance scale of additions
    max_samples: int  # no addition may cross this budget

    # the method whose final pool size is this one's ``budget`` when it ran earlier in the same job (None: sized by
    # the config alone). A class attribute, so not part of the spec a checkpoint records.
    sized_by: ClassVar[str | None] = None

    def build_pool(self, pool: Pool, cfg, generator, device="cpu", progress: bool = False,
                   donors: Sequence[Pool] = ()) -> dict:
        """Step 1 of Algorithm 1: fill ``pool`` up to the ``initial`` samples (after a crash: from its last complete
        shard). Plain growth of the sample stream (:func:`~deliberate.practice.loop.grow`, ω = 0: the classifier is
        untrained), copying the shards one of the ``donors`` holds. Returns ``{"seconds": {kind: s}, ...}``; the
        loop adds each kind of seconds to the run's."""
        count = self.initial - len(pool)
        st = grow(pool, count, generator, cfg, 0, progress=progress, donors=donors)
        return {"seconds": {"generation": st["seconds"]}, "generated": count - st["reused"], "reused": st["reused"]}

    def cost(self, pool_size: int, shared: int = 0) -> dict:
        """What a final pool of ``pool_size`` samples costs besides the learner's own training, when the first
        ``shared`` plain samples of the stream were made by a method run before it in the job: ``generated`` (samples
        this method generates; plain growth copies the shared ones), ``oversample`` (candidates generated per kept
        sample) and ``scorer_iterations`` (training iterations of a helper classifier)."""
        return {"generated": pool_size - min(shared, self.initial), "oversample": 1, "scorer_iterations": 0}


@dataclass(frozen=True)
class StaticSpec(MethodSpec):
    """All samples up front, as many as DP's final pool when DP ran earlier in the job."""
    sized_by: ClassVar[str | None] = "dp"


@METHODS.register("dp")
def dp(cfg, budget: int | None = None) -> MethodSpec:
    p = cfg.practice
    return MethodSpec("dp", p.initial_samples, p.add_samples, cfg.guidance.omega, p.max_samples)


@METHODS.register("dynamic_unguided")
def dynamic_unguided(cfg, budget: int | None = None) -> MethodSpec:
    p = cfg.practice
    return MethodSpec("dynamic_unguided", p.initial_samples, p.add_samples, 0.0, p.max_samples)


@METHODS.register("static")
def static(cfg, budget: int | None = None) -> StaticSpec:
    """All samples up front. ``budget`` (the final pool size of DP in the same run, when it ran) sets the size;
    without it, ``practice.max_samples``."""
    n = budget or cfg.practice.max_samples
    return StaticSpec("static", n, 0, 0.0, n)
