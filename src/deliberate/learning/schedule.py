"""Warmup-stable-decay learning-rate schedule (paper Section 3 / App. D.5.1).

Linear warm-up over the first ``warmup_frac`` of training (or a fixed ``warmup_iterations``), constant, cosine decay
over the last ``decay_frac``. Data may be added to the pool only in the stable phase (Algorithm 1, step 5): see
:meth:`is_stable`.

With a fixed warm-up the schedule of a run of T iterations equals, up to its decay start, the schedule of any longer
run with ``decay_frac = 0``: a run's decay can be *branched* from the checkpoint of one long stable-phase run (Hägele
et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations"), so one run gives the whole
iteration axis (bench/scaling.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupStableDecay:
    total: int
    warmup_frac: float = 0.1
    decay_frac: float = 0.2
    final_factor: float = 0.0
    warmup_iterations: int = 0  # > 0: a fixed warm-up length instead of warmup_frac × total

    @property
    def warmup_end(self) -> int:
        if self.warmup_iterations:
            return min(self.warmup_iterations, self.total)
        return int(round(self.total * self.warmup_frac))

    @property
    def decay_start(self) -> int:
        return self.total - int(round(self.total * self.decay_frac))

    def factor(self, it: int) -> float:
        """LR multiplier for iteration ``it`` (0-based)."""
        if it < self.warmup_end:
            return (it + 1) / self.warmup_end
        if it < self.decay_start:
            return 1.0
        span = max(1, self.total - self.decay_start)
        prog = min(1.0, (it - self.decay_start) / span)
        return self.final_factor + (1 - self.final_factor) * 0.5 * (1 + math.cos(math.pi * prog))

    def is_stable(self, it: int) -> bool:
        """True while the LR is constant: the only phase in which the pool may grow."""
        return self.warmup_end <= it < self.decay_start
