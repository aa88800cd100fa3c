"""Oversample-then-prune, the baseline Deliberate Practice replaces (paper Section 2, Eq. 1-3 and Fig. 5c).

``prune``: generate k·M plain samples (k = ``practice.oversample``, M = the kept size), score each by the
predictive entropy H(f(x)) (Eq. 6) of a *scorer* classifier, keep the M hardest, then train a fresh learner on
them exactly like ``static`` (all samples up front, no additions). Which M (``practice.prune_keep``):
``per_class`` (default) gives each class its share of M (that of the first M plain samples, as ``static`` has) and
keeps the highest-entropy within each class; ``global`` keeps the M highest-entropy overall, which can starve the
easy classes. ``prune_random``: the same k·M candidates, M kept uniformly at random (per class under
``per_class``; the control: no scorer is trained).

The candidates stream shard by shard through :class:`Keeper` (a per-shard top-M merge): memory holds the M kept,
the scorer's N and one shard, whatever k is; ties are broken by the lower sample seed and entropy is computed in
index-aligned blocks of ``learner.eval_batch_size``, so the kept set does not depend on the shard size.

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
from .pool import Pool, ShardMeta, donor_shard

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
        """k·M candidates for M kept, less the first ``shared`` of the stream (copied from an earlier method's
        pool); the scorer's iterations where one is trained (``keep="entropy"`` and k > 1)."""
        scored = self.keep == "entropy" and self.oversample > 1
        n_cand = self.oversample * pool_size
        return {"generated": n_cand - min(shared, n_cand), "oversample": self.oversample,
                "scorer_iterations": self.scorer_iterations if scored else 0}

    def build_pool(self, pool: Pool, cfg, generator, device="cpu", progress: bool = False,
                   donors: Sequence[Pool] = ()) -> dict:
        """Fill ``pool`` with the M kept samples; returns ``{"seconds": {...}, "generated": ..., "reused": ...}``.
        The k·M candidates stream shard by shard through :class:`Keeper` (memory: M kept + N scorer + a shard, not
        k·M); a candidate shard one of the ``donors`` holds, made identically (:meth:`Pool.same_shard`), is copied
        rather than sampled, as in :func:`~deliberate.practice.loop.grow`. The keep rule is
        ``practice.prune_keep``. A pool cut short by a crash is completed: the selection is deterministic, so its
        first samples must be the kept ones."""
        s = cfg.sampling
        m, k = self.initial, self.oversample
        n_cand, c = m * k, generator.num_classes
        rule = cfg.practice.prune_keep
        if self.keep not in ("entropy", "random"):
            raise ValueError(f"unknown prune keep rule '{self.keep}' (known: entropy, random)")
        n_scorer = self.scorer_samples or cfg.practice.initial_samples
        scored = self.keep == "entropy" and n_cand > m  # k = 1 keeps every candidate: nothing to score
        if scored and n_scorer > n_cand:
            raise ValueError(f"prune: the scorer's {n_scorer} initial samples exceed the {n_cand} candidates "
                             f"(raise practice.oversample or lower practice.initial_samples)")
        seconds = {"generation": 0.0, "scorer_training": 0.0, "scoring": 0.0}
        keeper = Keeper(m, quotas(m, c, rule))
        block = cfg.learner.eval_batch_size  # entropy is computed on index-aligned blocks: independent of shards
        buf: list[tuple] = []  # (index, labels, seeds, images) generated, not yet offered
        scorer, total_h = None, 0.0

        def offer(upto: int) -> None:  # score and offer the buffered candidates with index < upto
            nonlocal buf, total_h
            idx, lab, sd, img = (torch.cat(x) for x in zip(*buf))
            now, buf = idx < upto, [tuple(x[idx >= upto] for x in (idx, lab, sd, img))]
            idx, lab, sd, img = idx[now], lab[now], sd[now], img[now]
            if not len(idx):
                return
            if scorer is None:  # random keep (or k = 1): a uniform key per sample, the written score is NaN
                keeper.offer(random_keys(sd, cfg.run.seed), sd, lab, idx, img, torch.full((len(idx),), float("nan")))
                return
            t0 = time.perf_counter()
            h = torch.cat([entropy(scorer.predict(img[i:i + block])) for i in range(0, len(img), block)])
            seconds["scoring"] += time.perf_counter() - t0
            total_h += float(h.double().sum())
            keeper.offer(h, sd, lab, idx, img, h)

        meta, reused = ShardMeta.made_by(0, 0.0, s, generator), 0  # a plain shard of the stream, as grow makes it
        for lo in range(0, n_cand, s.shard_size):
            idx = torch.arange(lo, min(n_cand, lo + s.shard_size))
            lab = idx % c
            sd = s.seed_offset + idx
            hit = donor_shard(donors, lo, lab, sd.tolist(), meta)
            if hit is None:
                out = generator.sample(lab, sd.tolist(), **sampling_kwargs(s))
                seconds["generation"] += out.stats["seconds"]
            reused += 0 if hit is None else len(idx)
            buf.append((idx, lab, sd, out.images if hit is None else hit[0]))
            hi = int(idx[-1]) + 1
            keeper.note_held(sum(len(b[0]) for b in buf))
            if scored and scorer is None and hi >= n_scorer:
                head = torch.cat([b[3] for b in buf])
                scorer, seconds["scorer_training"] = self.scorer(cfg, generator, head, torch.cat([b[1] for b in buf]),
                                                                 device)
            if scorer is not None or not scored:
                offer(hi if hi == n_cand or not scored else hi - hi % block)
        kept = keeper.result()

        have = len(pool)
        if have and pool.column("seeds").astype(int).tolist() != kept["seeds"][:have].tolist():
            raise ValueError(f"prune: the {have} samples already in {pool.root} are not this selection's first ones")
        for lo in range(have, m, s.shard_size):
            sl = slice(lo, lo + s.shard_size)
            pool.append(keeper.store[kept["slot"][sl]], kept["labels"][sl], kept["seeds"][sl].tolist(),
                        kept["scores"][sl],
                        meta,
                        extra={"candidates": n_cand, "keep": self.keep, "keep_rule": rule,
                               "candidate_index": kept["index"][sl].tolist()})
        counts = np.bincount(kept["labels"].numpy(), minlength=c)
        return {"seconds": seconds, "generated": n_cand - reused, "reused": reused, "kept_per_class": counts.tolist(),
                "keep_rule": rule, "held_peak": keeper.held_peak,
                "kept_entropy": float(kept["scores"].double().mean()) if scorer is not None else None,
                "candidate_entropy": total_h / n_cand if scorer is not None else None}

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


def quotas(m: int, num_classes: int, rule: str) -> np.ndarray | None:
    """How many samples each class keeps: ``per_class``, as many as the first M plain samples hold (label i mod C:
    ⌈M/C⌉ for the first M mod C classes, ⌊M/C⌋ for the rest), the same class shares as ``static`` on M;
    ``global``: None (the M best whatever their class)."""
    if rule == "global":
        return None
    if rule != "per_class":
        raise ValueError(f"unknown prune keep rule '{rule}' (known: per_class, global)")
    return np.bincount(np.arange(m) % num_classes, minlength=num_classes)


def random_keys(seeds: torch.Tensor, seed: int) -> torch.Tensor:
    """A uniform key in [0, 1) per sample seed, a fixed function of (``seed``, sample seed) (splitmix64): keeping
    the M largest keeps a uniform random subset, whatever the order or the shards the candidates come in."""
    mask = (1 << 64) - 1
    z = np.asarray(seeds, dtype=np.int64).astype(np.uint64)
    z = z + np.full(len(z), ((seed + 29) * 0x9E3779B97F4A7C15) & mask, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) / float(1 << 53))


class Keeper:
    """The streaming top-M of "keep the hardest" (Section 2): candidates are offered shard by shard and only the
    best ``m`` seen so far are held (a per-shard top-M merge into ``m`` image slots), so memory is M samples plus
    one shard whatever k is. Order: higher key first, ties by lower sample seed, so the kept set depends on neither
    the shard size nor the arrival order. With ``quotas`` (:func:`quotas`) class c keeps its ``quotas[c]`` best;
    without, the ``m`` best overall."""

    FIELDS = ("keys", "seeds", "labels", "index", "scores", "slot")

    def __init__(self, m: int, quotas: np.ndarray | None = None):
        self.m, self.quotas = m, quotas
        self.meta = {f: torch.zeros(0, dtype=torch.float64 if f == "keys" else torch.float32 if f == "scores"
                                    else torch.long) for f in self.FIELDS}
        self.store: torch.Tensor | None = None  # the kept images, one slot each
        self.held_peak = 0  # the most candidates held at once (kept + offered + the caller's noted buffer)

    def note_held(self, extra: int) -> None:
        """Count ``extra`` candidates the caller holds (its buffer) beside the kept ones."""
        self.held_peak = max(self.held_peak, extra + len(self.meta["keys"]))

    def offer(self, keys, seeds, labels, index, images: torch.Tensor, scores) -> None:
        """Merge candidates (``keys`` rank them, ``scores`` are what is recorded) into the kept set."""
        n, held = len(keys), len(self.meta["keys"])
        if self.store is None:
            self.store = torch.empty((self.m, *images.shape[1:]), dtype=images.dtype)
        self.held_peak = max(self.held_peak, held + n)
        new = {"keys": torch.as_tensor(keys).double(), "seeds": torch.as_tensor(seeds).long(),
               "labels": torch.as_tensor(labels).long(), "index": torch.as_tensor(index).long(),
               "scores": torch.as_tensor(scores).float(), "slot": -1 - torch.arange(n)}  # < 0: offered image j
        if not torch.isfinite(new["keys"]).all():
            raise ValueError("prune: a candidate's score is not finite")
        both = {f: torch.cat([self.meta[f], new[f]]) for f in self.FIELDS}
        order = torch.from_numpy(np.lexsort((both["seeds"].numpy(), -both["keys"].numpy())))  # best first
        if self.quotas is None:
            keep = order[:self.m]
        else:
            lab = both["labels"][order]
            keep = torch.cat([order[lab == c][:int(q)] for c, q in enumerate(self.quotas)])
        kept = {f: v[keep] for f, v in both.items()}
        used = torch.zeros(self.m, dtype=torch.bool)
        used[kept["slot"][kept["slot"] >= 0]] = True
        entering = (kept["slot"] < 0).nonzero().flatten()
        free = (~used).nonzero().flatten()[:len(entering)]
        self.store[free] = images[-1 - kept["slot"][entering]]
        kept["slot"][entering] = free
        self.meta = kept

    def result(self) -> dict:
        """The kept candidates in candidate order (ascending index): keys, seeds, labels, index, scores and slot
        (their images are ``store[slot]``: read them a shard at a time, not copied whole)."""
        if len(self.meta["keys"]) < self.m:
            raise ValueError(f"prune: {len(self.meta['keys'])} candidates kept, {self.m} wanted (a class has too few)")
        order = torch.argsort(self.meta["index"])
        return {f: v[order] for f, v in self.meta.items()}


def select(scores: torch.Tensor, keep: int, rule: str, seed: int = 0, labels: torch.Tensor | None = None,
           num_classes: int = 0, seeds: torch.Tensor | None = None) -> torch.Tensor:
    """Indices (ascending) of the ``keep`` samples kept from one in-memory set (what :class:`Keeper` keeps from
    a stream): the highest ``scores`` for ``rule="entropy"``, the largest :func:`random_keys` of ``seed`` for
    ``rule="random"``; ties by lower sample seed (``seeds``, default the index). With ``labels`` and
    ``num_classes``, per class (:func:`quotas`), else globally."""
    n = len(scores)
    if not 0 <= keep <= n:
        raise ValueError(f"cannot keep {keep} of {n} samples")
    seeds = torch.arange(n) if seeds is None else torch.as_tensor(seeds)
    if rule == "entropy":
        keys = scores
    elif rule == "random":
        keys = random_keys(seeds, seed)
    else:
        raise ValueError(f"unknown prune keep rule '{rule}' (known: entropy, random)")
    per_class = labels is not None
    k = Keeper(keep, quotas(keep, num_classes, "per_class") if per_class else None)
    k.offer(keys, seeds, labels if per_class else torch.zeros(n), torch.arange(n), torch.zeros(n, 0), scores.float())
    return k.result()["index"]


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
