"""Oversample-then-prune's selection (practice/prune.py): the streaming top-M keeps exactly the hand-computed set
for both keep rules (per class and global), the same set for any shard size, every class its share under
``per_class`` (which the global rule does not), and holds as many candidates at once for any oversampling k."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deliberate.config import ConfigError, load_config
from deliberate.generation.base import SampleOutput
from deliberate.practice.prune import Keeper, PruneSpec, quotas, random_keys, select
from deliberate.practice.pool import Pool, ShardMeta
from deliberate.registry import METHODS

# 18 candidates (k = 3, M = 6), 3 classes (label = index mod 3), seed = index. The stub scorer's logits make the
# entropy fall as this value grows, so the hardest are the smallest values.
VALUES = [10, 20, 100,  # index 0, 1, 2
          20, 8, 110,
          5, 60, 100,
          5, 70, 100,
          90, 80, 130,
          30, 3, 140]
# per class: class 0 → 6, 9 (5, 5); class 1 → 16, 4 (3, 8); class 2 → three tie at 100 (2, 8, 11): seeds 2, 8
PER_CLASS = [2, 4, 6, 8, 9, 16]
# globally: 3 (16), 5 (6), 5 (9), 8 (4), 10 (0), then 20 ties between seeds 1 and 3: seed 1. Class 2 gets nothing.
GLOBAL = [0, 1, 4, 6, 9, 16]


class ValueGenerator:
    """Images carry their candidate's value in every pixel (the seed picks it from ``values``)."""
    generator_id, num_classes, image_shape = "values", 3, (1, 2, 2)

    def __init__(self, values):
        self.values, self.made = values, 0

    def sample(self, labels, seeds, **_):
        self.made += len(seeds)
        images = torch.tensor([self.values[s % len(self.values)] for s in seeds], dtype=torch.uint8)
        return SampleOutput(images.view(-1, 1, 1, 1).expand(-1, *self.image_shape).clone(),
                            torch.full((len(seeds),), float("nan")),
                            {"seconds": 0.0, "guided_steps": 0, "nonfinite_grads": 0})


class StubScorer:
    """Logits [v/10, 0, 0] for pixel value v: entropy strictly decreasing in v. Counts images scored."""

    def __init__(self):
        self.largest = 0

    def predict(self, images):
        self.largest = max(self.largest, len(images))
        v = images.float().flatten(1)[:, 0] / 10
        return torch.stack([v, torch.zeros_like(v), torch.zeros_like(v)], 1)


@pytest.fixture
def stub_scorer(monkeypatch):
    stub = StubScorer()
    monkeypatch.setattr(PruneSpec, "scorer", lambda self, cfg, gen, images, labels, device: (stub, 0.0))
    return stub


def cfg_for(*extra):
    return load_config(None, ["practice.initial_samples=6", "practice.oversample=3", "sampling.shard_size=4",
                              "learner.eval_batch_size=5", *extra])


def build(tmp_path, cfg, m=6, method="prune", values=VALUES, name="pool"):
    spec = METHODS.build(method, cfg, budget=m)
    gen = ValueGenerator(values)
    pool = Pool(tmp_path / name)
    info = spec.build_pool(pool, cfg, gen)
    return pool, info, gen


def kept(pool):
    return pool.column("seeds").astype(int).tolist()


@pytest.mark.parametrize("rule,want", [("per_class", PER_CLASS), ("global", GLOBAL)])
def test_the_kept_set_is_the_hand_computed_one(tmp_path, stub_scorer, rule, want):
    pool, info, gen = build(tmp_path, cfg_for(f"practice.prune_keep={rule}"))
    assert kept(pool) == want and gen.made == 18 and info["keep_rule"] == rule
    assert pool.column("labels").astype(int).tolist() == [i % 3 for i in want]
    assert stub_scorer.largest <= 5  # scored in eval_batch_size blocks


def test_per_class_is_the_default_and_every_class_gets_its_share(tmp_path, stub_scorer):
    """The class-balance check that the global rule fails (it keeps no class-2 sample here)."""
    pool, info, _ = build(tmp_path, cfg_for())
    assert info["keep_rule"] == "per_class" and info["kept_per_class"] == [2, 2, 2]
    _, glob, _ = build(tmp_path, cfg_for("practice.prune_keep=global"), name="global")
    assert glob["kept_per_class"] == [3, 3, 0]
    # M = 7 over 3 classes: the shares of the first 7 plain samples, ⌈7/3⌉ for class 0
    assert quotas(7, 3, "per_class").tolist() == [3, 2, 2] and quotas(7, 3, "global") is None


def test_candidates_an_earlier_pool_holds_are_copied_not_sampled(tmp_path, stub_scorer):
    """A donor holding the stream's first 8 samples (two shards, made as grow makes them) gives its shards to the
    candidates: 10 of the 18 are sampled and the kept set is the same; a donor made with other sampling settings
    (another number of steps) or holding other samples gives nothing."""
    from deliberate.practice.loop import grow

    cfg = cfg_for()
    donor = Pool(tmp_path / "donor")
    grow(donor, 8, ValueGenerator(VALUES), cfg, 0)
    other = Pool(tmp_path / "other")
    grow(other, 8, ValueGenerator(VALUES), cfg_for("sampling.steps=7"), 0)
    shifted = Pool(tmp_path / "shifted")  # the same settings, other seeds (sampling.seed_offset=1)
    grow(shifted, 8, ValueGenerator(VALUES), cfg_for("sampling.seed_offset=1"), 0)
    spec = METHODS.build("prune", cfg, budget=6)
    for donors, made in (([other, shifted], 18), ([other, donor], 10)):
        gen, pool = ValueGenerator(VALUES), Pool(tmp_path / f"kept{made}")
        info = spec.build_pool(pool, cfg, gen, donors=donors)
        assert kept(pool) == PER_CLASS and gen.made == made == info["generated"] and info["reused"] == 18 - made


class BatchDependentScorer(StubScorer):
    """Like :class:`StubScorer`, but each logit also moves with the size of the batch it was computed in (as
    kernels may): only index-aligned scoring blocks make the scores independent of the shard size."""

    def predict(self, images):
        logits = super().predict(images)
        logits[:, 0] += 0.01 * len(images)
        return logits


@pytest.mark.parametrize("rule", ["per_class", "global"])
@pytest.mark.parametrize("method", ["prune", "prune_random"])
def test_the_kept_set_does_not_depend_on_the_shard_size(tmp_path, monkeypatch, rule, method):
    monkeypatch.setattr(PruneSpec, "scorer", lambda *a: (BatchDependentScorer(), 0.0))
    runs = [build(tmp_path, cfg_for(f"practice.prune_keep={rule}", f"sampling.shard_size={s}"), method=method,
                  name=f"s{s}")[0] for s in (1, 4, 7, 18)]
    sets = [(kept(p), np.nan_to_num(p.column("score"), nan=-1).tolist()) for p in runs]
    assert all(s == sets[0] for s in sets)


def test_random_keep_is_per_class_too_and_a_fixed_function_of_the_seeds(tmp_path):
    pool, info, _ = build(tmp_path, cfg_for(), method="prune_random")
    assert info["kept_per_class"] == [2, 2, 2] and info["seconds"]["scorer_training"] == 0.0
    keys = random_keys(torch.arange(18), 0)  # run.seed 0
    want = sorted(sum((sorted(range(c, 18, 3), key=lambda i: -keys[i])[:2] for c in range(3)), []))
    assert kept(pool) == want != PER_CLASS
    assert np.isnan(pool.column("score")).all()
    assert random_keys(torch.tensor([5, 1]), 3).tolist() == random_keys(torch.tensor([1, 5]), 3).flip(0).tolist()
    _, g, _ = build(tmp_path, cfg_for("practice.prune_keep=global"), method="prune_random", name="g")
    assert sum(g["kept_per_class"]) == 6


def test_scores_are_recorded_and_a_partial_pool_is_completed(tmp_path, stub_scorer):
    pool, info, _ = build(tmp_path, cfg_for())
    v = torch.tensor([VALUES[i] for i in PER_CLASS], dtype=torch.float32) / 10
    h = torch.distributions.Categorical(logits=torch.stack([v, 0 * v, 0 * v], 1)).entropy()
    assert np.allclose(pool.column("score"), h.numpy(), atol=1e-5)  # the manifest keeps 5 decimals
    assert info["kept_entropy"] == pytest.approx(float(h.mean()), abs=1e-6)
    # a pool holding the selection's first shard is completed to it; one holding other samples is refused
    spec, cfg = METHODS.build("prune", cfg_for(), budget=6), cfg_for()
    first = torch.arange(4)
    part, wrong = Pool(tmp_path / "part"), Pool(tmp_path / "wrong")
    part.append(*pool.get(first), kept(pool)[:4], torch.zeros(4), ShardMeta(0, 0.0, 0.0, 1, "values"))
    spec.build_pool(part, cfg, ValueGenerator(VALUES))
    assert kept(part) == PER_CLASS
    wrong.append(*pool.get(first), [0, 1, 3, 5], torch.zeros(4), ShardMeta(0, 0.0, 0.0, 1, "values"))
    with pytest.raises(ValueError, match="not this selection's first ones"):
        spec.build_pool(wrong, cfg, ValueGenerator(VALUES))


class BarGenerator:
    """A class-dependent bar plus seeded noise of varying strength: some samples easy, others ambiguous."""
    generator_id, num_classes, image_shape = "bars", 10, (1, 28, 28)

    def sample(self, labels, seeds, **_):
        out = []
        for lab, s in zip(labels.tolist(), seeds):
            g = torch.Generator().manual_seed(int(s))
            x = torch.zeros(1, 28, 28)
            x[:, 2 * lab + 4: 2 * lab + 7, 4:24] = 1.0
            x = x + torch.rand(1, generator=g) * 1.5 * torch.rand(1, 28, 28, generator=g)
            out.append((x.clamp(0, 1) * 255).round().to(torch.uint8))
        return SampleOutput(torch.stack(out), torch.full((len(seeds),), float("nan")), {"seconds": 0.0})


def test_a_trained_scorer_keeps_the_same_set_for_any_shard_size(tmp_path):
    """The real path (a cnn_small scorer trained on the first N candidates, entropy in index-aligned blocks)."""
    sets = []
    for shard in (7, 25):
        cfg = load_config(None, ["learner.batch_size=32", f"sampling.shard_size={shard}", "practice.initial_samples=40",
                                 "practice.prune_scorer_iterations=20", "practice.oversample=3",
                                 "learner.eval_batch_size=16"])
        pool = Pool(tmp_path / f"s{shard}")
        info = METHODS.build("prune", cfg, budget=30).build_pool(pool, cfg, BarGenerator())
        assert info["kept_per_class"] == [3] * 10 and info["held_peak"] <= 30 + 40 + shard
        sets.append((kept(pool), pool.column("score").tolist()))
    assert sets[0] == sets[1]


@pytest.mark.parametrize("method", ["prune", "prune_random"])
def test_candidates_held_at_once_do_not_grow_with_k(tmp_path, stub_scorer, method):
    """Shards and scoring blocks of 5: at most the M = 6 kept plus one shard are held, 11 for k = 4, 8, 16
    (holding all k·M candidates would be 24, 48, 96)."""
    for k in (4, 8, 16):
        values = [int(x) for x in np.random.default_rng(k).integers(0, 256, 6 * k)]
        cfg = cfg_for(f"practice.oversample={k}", "sampling.shard_size=5")
        _, info, gen = build(tmp_path, cfg, method=method, values=values, name=f"k{k}")
        assert gen.made == 6 * k and info["held_peak"] == 6 + 5


def test_select_keeps_the_best_per_class_or_globally():
    s = torch.tensor([float(v) for v in VALUES]).neg()  # the highest scores are the smallest values
    labels = torch.arange(18) % 3
    assert select(s, 6, "entropy", labels=labels, num_classes=3).tolist() == PER_CLASS
    assert select(s, 6, "entropy").tolist() == GLOBAL
    with pytest.raises(ValueError, match="cannot keep 19"):
        select(s, 19, "entropy")
    k = Keeper(2)
    with pytest.raises(ValueError, match="not finite"):
        k.offer(torch.tensor([0.0, float("nan")]), [0, 1], [0, 0], [0, 1], torch.zeros(2, 1), torch.zeros(2))


def test_prune_keep_is_validated():
    with pytest.raises(ConfigError, match="practice.prune_keep"):
        load_config(None, ["practice.prune_keep=balanced"])
