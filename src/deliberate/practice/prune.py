"""Oversample-then-prune, the baseline Deliberate Practice replaces (paper Section 2, Eq. 1-3 and Fig. 5c).

``prune``: generate k·M plain samples (k = ``practice.oversample``, M = the kept size), score each by the
predictive entropy H(f(x)) (Eq. 6) of a *scorer* classifier, keep the M highest-entropy samples, then train a
fresh learner on them exactly like ``static`` (all samples up front, no additions).
``prune_random``: the same k·M candidates, M kept uniformly at random (the control: no scorer is trained).

The scorer: a fresh learner (``learner.*`` settings, seed ``run.seed``) trained from scratch on the first
N = ``practice.initial_samples`` plain samples (DP's initial pool D_0) for ``practice.prune_scorer_iterations``
iterations with its own warmup-stable-decay schedule. It sees generated data only; the validation split is not
read (it is not needed: nothing is chosen here).

Candidates are indices 0..kM−1 of the plain stream (label i mod C, seed ``sampling.seed_offset + i``, the same
samples :func:`~deliberate.practice.loop.grow` would make), so the candidates for a smaller k are a prefix of
those for a larger one, and DP, static and prune share their plain samples. The full compute is recorded:
candidate generation, scorer training, scoring.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..generation.base import sampling_kwargs
from ..generation.guidance import entropy
from ..learning.learner import Learner
from ..registry import METHODS
from .methods import MethodSpec
from .pool import Pool, ShardMeta

# Scorers already trained in this process, keyed by everything they depend on; each prune run is still charged
# the scorer's measured training time (see ``build_pool``), the memo only avoids paying it twice for real.
_SCORERS: dict[tuple, tuple[dict, float]] = {}


@dataclass(frozen=True)
class PruneSpec(MethodSpec):
    oversample: int = 4  # k
    keep: str = "entropy"  # "entropy" (highest first) | "random"
    scorer_samples: int = 0  # N: the scorer's training set, the first N plain samples
    scorer_iterations: int = 500
    sized_by: ClassVar[str | None] = "dp"  # M = DP's final pool when DP ran earlier in the job

    def cost(self, pool_size: int, shared: int = 0) -> dict:
        """k·M candidates generated here (none copied from other methods) for M kept; the scorer's iterations where
        one is trained (``keep="entropy"`` and k > 1)."""
        scored = self.keep == "entropy" and self.oversample > 1
        return {"generated": self.oversample * pool_size, "oversample": self.oversample,
                "scorer_iterations": self.scorer_iterations if scored else 0}

    def build_pool(self, pool: Pool, cfg, generator, device="cpu", progress: bool = False,
                   donors: Sequence[Pool] = ()) -> dict:  # donors: not read, every candidate is sampled here
        """Fill ``pool`` with the M kept samples; returns ``{"seconds": {...}, "generated": kM, ...}``. A pool cut
        short by a crash is completed: the selection is deterministic, so its first samples must be the kept ones."""
        s = cfg.sampling
        m, k = self.initial, self.oversample
        n_cand = m * k
        seconds = {"generation": 0.0, "scorer_training": 0.0, "scoring": 0.0}
        images, labels, seeds = [], [], []
        for lo in range(0, n_cand, s.shard_size):
            idx = torch.arange(lo, min(n_cand, lo + s.shard_size))
            lab = idx % generator.num_classes
            sd = [s.seed_offset + int(i) for i in idx]
            out = generator.sample(lab, sd, **sampling_kwargs(s))
            seconds["generation"] += out.stats["seconds"]
            images.append(out.images)
            labels.append(lab)
            seeds.extend(sd)
        images, labels = torch.cat(images), torch.cat(labels)

        if n_cand == m:  # k = 1 keeps every candidate: nothing to score
            scores = torch.full((n_cand,), float("nan"))
        elif self.keep == "entropy":
            scorer, seconds["scorer_training"] = self.scorer(cfg, generator, images, labels, device)
            t0 = time.perf_counter()
            scores = entropy(scorer.predict(images))
            seconds["scoring"] = time.perf_counter() - t0
        elif self.keep == "random":
            scores = torch.full((n_cand,), float("nan"))
        else:
            raise ValueError(f"unknown prune keep rule '{self.keep}' (known: entropy, random)")
        kept = select(scores, m, self.keep, seed=cfg.run.seed)
        have = len(pool)
        if have and pool.column("seeds").astype(int).tolist() != [seeds[i] for i in kept[:have].tolist()]:
            raise ValueError(f"prune: the {have} samples already in {pool.root} are not this selection's first ones")

        for lo in range(have, m, s.shard_size):
            sel = kept[lo:lo + s.shard_size]
            pool.append(images[sel], labels[sel], [seeds[i] for i in sel.tolist()], scores[sel],
                        ShardMeta.made_by(0, 0.0, s, generator),
                        extra={"candidates": n_cand, "keep": self.keep, "candidate_index": sel.tolist()})
        counts = np.bincount(labels[kept].numpy(), minlength=generator.num_classes)
        return {"seconds": seconds, "generated": n_cand, "kept_per_class": counts.tolist(),
                "kept_entropy": float(scores[kept].mean()) if scores.isfinite().all() else None,
                "candidate_entropy": float(scores.mean()) if scores.isfinite().all() else None}

    def scorer(self, cfg, generator, images: torch.Tensor, labels: torch.Tensor, device) -> tuple[Learner, float]:
        """The scorer and its training seconds; trained on candidates[:N] (the first N plain samples)."""
        n = self.scorer_samples or cfg.practice.initial_samples
        if n > len(images):
            raise ValueError(f"prune: the scorer's {n} initial samples exceed the {len(images)} candidates "
                             f"(raise practice.oversample or lower practice.initial_samples)")
        lc = cfg.learner
        key = (generator.generator_id, n, self.scorer_iterations, cfg.run.seed, repr(lc), repr(cfg.sampling))
        learner = Learner(lc, generator.num_classes, generator.image_shape[0], self.scorer_iterations, device,
                          seed=cfg.run.seed)
        if key in _SCORERS:
            state, secs = _SCORERS[key]
            learner.model.load_state_dict(state)
            return learner, secs
        g = torch.Generator().manual_seed(cfg.run.seed + 23)
        t0 = time.perf_counter()
        for _ in range(self.scorer_iterations):
            idx = torch.randint(0, n, (lc.batch_size,), generator=g)
            learner.step(images[idx], labels[idx])
        secs = time.perf_counter() - t0
        if learner.ema is None:  # the eval model is the model itself: the memo can hold its weights
            _SCORERS[key] = ({k: v.clone() for k, v in learner.model.state_dict().items()}, secs)
        return learner, secs


def select(scores: torch.Tensor, keep: int, rule: str, seed: int = 0) -> torch.Tensor:
    """Indices (ascending) of the ``keep`` samples kept: the highest ``scores`` (ties: lower index first) for
    ``rule="entropy"``, a uniform random subset drawn from ``seed`` for ``rule="random"``."""
    n = len(scores)
    if not 0 <= keep <= n:
        raise ValueError(f"cannot keep {keep} of {n} samples")
    if rule == "entropy":
        order = torch.argsort(-scores.float(), stable=True)
    elif rule == "random":
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 29))
    else:
        raise ValueError(f"unknown prune keep rule '{rule}' (known: entropy, random)")
    return order[:keep].sort().values


def _spec(name: str, keep: str, cfg, budget: int | None) -> PruneSpec:
    p = cfg.practice
    m = budget or p.max_samples
    return PruneSpec(name, m, 0, 0.0, m, oversample=p.oversample, keep=keep, scorer_samples=p.initial_samples,
                     scorer_iterations=p.prune_scorer_iterations)


@METHODS.register("prune")
def prune(cfg, budget: int | None = None) -> PruneSpec:
    """Keep the M = ``budget`` (DP's final pool when it ran, else ``practice.max_samples``) highest-entropy of
    ``practice.oversample`` × M plain samples."""
    return _spec("prune", "entropy", cfg, budget)


@METHODS.register("prune_random")
def prune_random(cfg, budget: int | None = None) -> PruneSpec:
    """The random-keep control for ``prune``."""
    return _spec("prune_random", "random", cfg, budget)
