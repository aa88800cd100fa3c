"""The patience trigger of Algorithm 1 (steps 3-4), shaped like baal's stopping criteria.

Every evaluation: improvement over the best → T = 0, else T += 1. ``update`` returns True ("generate now") once
T ≥ T_max. After an addition, :meth:`added` resets T and, with incremental patience, raises T_max by ``growth``
(the paper grows T_max with the pool but gives no schedule; ours is T_max_k = T_max_0 + k·growth after k additions).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class PatienceTrigger:
    patience: int
    growth: int = 0
    min_delta: float = 0.0
    best: float = float("-inf")
    stale: int = 0
    additions: int = 0

    @property
    def t_max(self) -> int:
        return self.patience + self.growth * self.additions

    def update(self, score: float) -> bool:
        """Record a validation score; True when the pool should grow."""
        if score > self.best + self.min_delta:
            self.best, self.stale = score, 0
        else:
            self.stale += 1
        return self.stale >= self.t_max

    def should_stop(self, metrics: dict) -> bool:
        """baal-style alias: ``metrics['val_acc']`` → whether the loop is stuck."""
        return self.update(float(metrics["val_acc"]))

    def added(self) -> None:
        self.stale = 0
        self.additions += 1

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
