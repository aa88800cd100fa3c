"""The benchmark's pieces: equal-accuracy ratios on curves with known answers, deterministic corruptions,
oversample-then-prune keeping the highest-entropy samples, label fidelity, and the sample cache."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deliberate.config import ConfigError, load_config
from deliberate.evaluation import CORRUPTIONS, corrupt, label_fidelity, ood_sets, round_stats
from deliberate.generation.base import SampleOutput
from deliberate.generation.guidance import entropy
from deliberate.practice.pool import Pool, ShardMeta
from deliberate.practice.prune import PruneSpec, select
from deliberate.registry import METHODS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import curves  # noqa: E402
from samplecache import CachedGenerator, SampleCache  # noqa: E402


# ------------------------------------------------------------------------------------------------ curves
def log_curve(xs, a=0.5, b=0.05):
    """acc = a + b·log2(x / 1000): x needed for accuracy y is 1000·2^((y − a)/b)."""
    return [a + b * math.log2(x / 1000) for x in xs]


def test_x_to_reach_recovers_a_log_linear_curve():
    xs = [1000, 2000, 4000, 8000, 16000]
    r = curves.x_to_reach(0.575, xs, log_curve(xs))
    assert r.bound == "="
    assert r.value == pytest.approx(1000 * 2 ** 1.5, rel=1e-9)
    # a measured point is returned exactly
    assert curves.x_to_reach(0.6, xs, log_curve(xs)).value == pytest.approx(4000)


def test_x_to_reach_bounds_outside_the_range_and_uses_the_frontier():
    xs, ys = [1000, 2000, 4000, 8000], [0.70, 0.80, 0.75, 0.85]  # 4000 is worse than 2000: not on the frontier
    assert curves.frontier(xs, ys)[0].tolist() == [1000, 2000, 8000]
    r = curves.x_to_reach(0.825, xs, ys)  # halfway between 2000 (0.80) and 8000 (0.85) on log x → 4000
    assert (r.value, r.bound) == (pytest.approx(4000), "=")
    assert curves.x_to_reach(0.65, xs, ys) == curves.Reach(1000, "<=")
    assert curves.x_to_reach(0.9, xs, ys) == curves.Reach(8000, ">")
    with pytest.raises(ValueError):
        curves.x_to_reach(0.8, [0, 1], [0.5, 0.6])


def test_ratio_bounds_and_goals():
    # static needs 8000·2^(0.5) for DP's accuracy; DP used 2000 samples → ratio 4·sqrt(2)
    xs = [1000, 2000, 4000, 8000, 16000]
    need = curves.x_to_reach(0.675, xs, log_curve(xs))
    r = curves.ratio(need, 2000)
    assert r == {"value": pytest.approx(8000 * 2 ** 0.5 / 2000), "bound": "="}
    assert curves.goal_status(r, 4.0) == "met"
    assert curves.goal_status(curves.ratio(need, 4000), 4.0) == "not met"
    never = curves.ratio(curves.Reach(16000, ">"), 2000)  # static never reaches DP: ratio > 8
    assert never["bound"] == ">" and curves.goal_status(never, 4.0) == "met"
    assert curves.goal_status(curves.ratio(curves.Reach(16000, ">"), 8000), 4.0) == "undetermined"
    assert curves.ratio(4000, curves.Reach(1000, "<="))["bound"] == ">="
    assert curves.ratio(curves.Reach(500, "<="), curves.Reach(100, ">"))["bound"] == "<"
    assert curves.ratio(curves.Reach(500, "<="), curves.Reach(100, "<="))["bound"] == "?"
    assert curves.goal_status({"value": 1.3, "bound": "="}, 1.5, higher_is_better=False) == "met"
    assert curves.goal_status({"value": 1.8, "bound": "="}, 1.5, higher_is_better=False) == "not met"
    s = curves.summarize([0.8, 0.9, 1.0])
    assert (s["mean"], s["n"]) == (pytest.approx(0.9), 3) and s["std"] == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------- corruptions
@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(16, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 6:22, 9:19] = torch.randint(80, 255, (16, 1, 16, 10), generator=g, dtype=torch.uint8)
    return x


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corruptions_are_deterministic_and_change_the_images(images, kind):
    a, b = corrupt(images, kind, seed=3), corrupt(images, kind, seed=3)
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, images)
    if kind in ("rotate", "noise", "elastic"):  # seeded corruptions: another seed, another copy
        assert not torch.equal(a, corrupt(images, kind, seed=4))


def test_corruption_severities_are_what_they_say():
    """Known answers for the fixed OOD severities (a changed or ignored severity fails)."""
    import math

    grey = torch.full((64, 1, 28, 28), 128, dtype=torch.uint8)
    diff = corrupt(grey, "noise").float() - 128.0
    assert diff.std().item() == pytest.approx(CORRUPTIONS["noise"]["std"] * 255, rel=0.03)
    impulse = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    impulse[0, 0, 14, 14] = 255
    k = torch.exp(-torch.arange(-2.0, 3.0) ** 2 / (2 * CORRUPTIONS["blur"]["sigma"] ** 2))
    k = k / k.sum()
    expect = (255 * torch.outer(k, k)).round()
    assert torch.allclose(corrupt(impulse, "blur")[0, 0, 12:17, 12:17].float(), expect, atol=1)
    bar = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)
    bar[:, :, 13:15, 4:24] = 255  # horizontal
    for img in corrupt(bar, "rotate", seed=1):
        ys, xs = torch.nonzero(img[0] > 64, as_tuple=True)
        c = torch.cov(torch.stack([xs.float(), ys.float()]))
        angle = 0.5 * math.degrees(math.atan2(2 * c[0, 1], c[0, 0] - c[1, 1]))
        assert abs(abs(angle) - CORRUPTIONS["rotate"]["degrees"]) < 3, angle
    assert torch.equal(corrupt(bar, "elastic", alpha=0.0), bar)  # no displacement, no change
    moved = [(corrupt(bar, "elastic", alpha=a).float() - bar.float()).abs().mean() for a in (2.0, 8.0)]
    assert 0 < moved[0] < moved[1]


def test_corruption_specifics(images):
    assert torch.equal(corrupt(images, "invert"), 255 - images)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(images, "fog")
    with pytest.raises(ValueError, match="no parameter"):
        corrupt(images, "blur", degrees=3)
    from deliberate.data.splits import Split
    sets = ood_sets(Split(images, torch.arange(16) % 10, np.arange(16)), size=8)
    assert set(sets) == set(CORRUPTIONS) and all(len(s) == 8 for s in sets.values())


# --------------------------------------------------------------------------------------------------- prune
class FakeGenerator:
    """Images from their seed alone (no diffusion): a class-dependent bar plus seeded noise of varying strength,
    so a classifier finds some samples easy and others ambiguous. Counts the samples it makes."""
    generator_id = "fake"
    num_classes = 10
    image_shape = (1, 28, 28)

    def __init__(self):
        self.made = 0
        self.calls = 0

    def sample(self, labels, seeds, *, steps, cfg_scale=0.0, guide=None, eta=0.0, batch_size=256, solver="ddim",
               progress=False):
        out = []
        for lab, s in zip(labels.tolist(), seeds):
            g = torch.Generator().manual_seed(int(s))
            x = torch.zeros(1, 28, 28)
            x[:, 2 * lab + 4: 2 * lab + 7, 4:24] = 1.0
            x = x + torch.rand(1, generator=g) * 1.5 * torch.rand(1, 28, 28, generator=g)
            out.append((x.clamp(0, 1) * 255).round().to(torch.uint8))
        self.made += len(seeds)
        self.calls += 1
        return SampleOutput(torch.stack(out), torch.full((len(seeds),), float("nan")),
                            {"seconds": 0.001 * len(seeds), "guided_steps": 0, "nonfinite_grads": 0})


def prune_cfg(*extra):
    return load_config(None, ["learner.batch_size=32", "sampling.shard_size=25", "practice.initial_samples=40",
                              "practice.prune_scorer_iterations=20", "practice.oversample=3", *extra])


def test_select_keeps_the_highest_scores():
    s = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.0, 0.7])
    assert select(s, 3, "entropy").tolist() == [1, 3, 5]
    r = select(s, 3, "random", seed=1)
    assert len(set(r.tolist())) == 3 and r.tolist() == sorted(r.tolist())
    with pytest.raises(ValueError):
        select(s, 7, "entropy")


def test_prune_keeps_the_highest_entropy_candidates(tmp_path):
    cfg = prune_cfg()
    spec = METHODS.build("prune", cfg, budget=30)
    assert isinstance(spec, PruneSpec) and (spec.initial, spec.oversample, spec.keep) == (30, 3, "entropy")
    gen = FakeGenerator()
    pool = Pool(tmp_path / "pool")
    info = spec.build_pool(pool, cfg, gen)
    assert info["generated"] == 90 and gen.made == 90 and len(pool) == 30
    assert set(info["seconds"]) == {"generation", "scorer_training", "scoring"}
    # recompute every candidate's entropy under the (memoised, identical) scorer: the kept are the top 30
    cand = gen.sample(torch.arange(90) % 10, list(range(90)), steps=1).images
    scorer, _ = spec.scorer(cfg, gen, cand, torch.arange(90) % 10, "cpu")
    h = entropy(scorer.predict(cand))
    top = set(torch.argsort(-h, stable=True)[:30].tolist())
    assert set(pool.column("seeds").astype(int).tolist()) == top  # seed_offset 0: seed = candidate index
    assert np.allclose(pool.column("score"), h[sorted(top)].numpy(), atol=1e-4)
    assert h[sorted(top)].min() >= h[[i for i in range(90) if i not in top]].max()
    # the random control keeps 30 of the same 90 candidates, not the entropy selection, and trains no scorer
    rnd = METHODS.build("prune_random", cfg, budget=30)
    pool2 = Pool(tmp_path / "pool2")
    info2 = rnd.build_pool(pool2, cfg, FakeGenerator())
    kept2 = set(pool2.column("seeds").astype(int).tolist())
    assert len(kept2) == 30 and kept2 <= set(range(90)) and kept2 != top
    assert info2["seconds"]["scorer_training"] == 0.0
    # k = 1 keeps every candidate (static on M) and trains no scorer
    one = METHODS.build("prune", prune_cfg("practice.oversample=1"), budget=30)
    pool3 = Pool(tmp_path / "pool3")
    info3 = one.build_pool(pool3, prune_cfg("practice.oversample=1"), FakeGenerator())
    assert pool3.column("seeds").astype(int).tolist() == list(range(30)) and info3["seconds"]["scorer_training"] == 0.0


def test_prune_config_is_validated():
    with pytest.raises(ConfigError, match="practice.oversample"):
        load_config(None, ["practice.oversample=0"])


# ------------------------------------------------------------------------------------------ label fidelity
class BrightnessReference:
    """A toy reference classifier: predicts class = mean intensity // 26 (a known function)."""

    def predict(self, images):
        cls = (images.float().mean(dim=(1, 2, 3)) // 26).long().clamp(0, 9)
        return torch.nn.functional.one_hot(cls, 10).float() * 5


def test_label_fidelity_and_round_stats_on_a_toy_case(tmp_path):
    levels = torch.tensor([0, 30, 60, 90, 120, 150])  # classes 0..5 by brightness
    images = levels.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).to(torch.uint8).contiguous()
    labels = torch.tensor([0, 1, 2, 9, 9, 5])  # 4 of 6 agree
    ref = BrightnessReference()
    assert label_fidelity(ref, images, labels) == pytest.approx(4 / 6)
    pool = Pool(tmp_path / "pool")
    pool.append(images[:3], labels[:3], [0, 1, 2], torch.full((3,), float("nan")), ShardMeta(0, 0.0, 0.0, 5, "toy"))
    pool.append(images[3:], labels[3:], [3, 4, 5], torch.tensor([1.0, 2.0, 3.0]), ShardMeta(1, 0.1, 0.0, 5, "toy"))
    st = round_stats(pool, ref)
    assert [s["round"] for s in st] == [0, 1]
    assert st[0]["label_fidelity"] == 1.0 and st[1]["label_fidelity"] == pytest.approx(1 / 3)
    assert st[0]["entropy_guiding"] is None and st[1]["entropy_guiding"] == pytest.approx(2.0)
    assert st[1]["omega"] == pytest.approx(0.1) and st[0]["count"] == 3


# ---------------------------------------------------------------------------------------------- sample cache
def test_sample_cache_generates_each_sample_once_and_persists(tmp_path):
    gen = FakeGenerator()
    cg = CachedGenerator(gen, SampleCache(tmp_path))
    a = cg.sample(torch.arange(20) % 10, list(range(20)), steps=5)
    b = cg.sample(torch.arange(30) % 10, list(range(30)), steps=5)  # the first 20 are hits
    assert gen.made == 30 and torch.equal(a.images, b.images[:20])
    assert b.stats["seconds"] == pytest.approx(0.030)  # charged for all 30, paid for 10
    c = cg.sample(torch.arange(5) % 10, list(range(5)), steps=4)  # other DDIM steps: another sample
    assert gen.made == 35 and c.images.shape[0] == 5
    gen2 = FakeGenerator()
    d = CachedGenerator(gen2, SampleCache(tmp_path)).sample(torch.arange(30) % 10, list(range(30)), steps=5)
    assert gen2.made == 0 and torch.equal(d.images, b.images)  # read back from disk


def test_sample_cache_key_holds_every_setting_that_changes_bytes(tmp_path, monkeypatch):
    """Samples made by another sampler version, another bf16 setting or another chunk size are never served."""
    import samplecache

    gen = FakeGenerator()
    gen.bf16 = True
    labels, seeds = torch.arange(10) % 10, list(range(10))
    CachedGenerator(gen, SampleCache(tmp_path)).sample(labels, seeds, steps=5, batch_size=10)
    assert gen.made == 10
    CachedGenerator(gen, SampleCache(tmp_path)).sample(labels, seeds, steps=5, batch_size=10)
    assert gen.made == 10  # same settings: all hits
    CachedGenerator(gen, SampleCache(tmp_path)).sample(labels, seeds, steps=5, batch_size=5)
    assert gen.made == 20  # another chunk size
    gen.bf16 = False
    CachedGenerator(gen, SampleCache(tmp_path)).sample(labels, seeds, steps=5, batch_size=10)
    assert gen.made == 30  # another precision
    gen.bf16 = True
    monkeypatch.setattr(samplecache, "SAMPLER_VERSION", samplecache.SAMPLER_VERSION + 1)
    CachedGenerator(gen, SampleCache(tmp_path)).sample(labels, seeds, steps=5, batch_size=10)
    assert gen.made == 40  # another sampler


@pytest.mark.slow
def test_tiny_benchmark_end_to_end(tmp_path):
    """Every stage of bench/run.py on a tiny generator trained on the spot (several minutes on 2 cores)."""
    import json

    import run as bench_run

    rc = bench_run.main(["--mode", "tiny", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
                         f"generator.cache_dir={tmp_path}/gen"])
    assert rc == 0
    res = json.loads((tmp_path / "out" / "latest.json").read_text())
    for k in ("samples_ratio", "iterations_ratio", "prune_compute_ratio", "guidance_cost_ratio"):
        assert isinstance(res["headline"][k], float) and res["goals"][k]["status"] in ("met", "not met", "undetermined")
    assert len(res["test_reads"]) == 1
    assert (tmp_path / "out" / "results.md").exists() and (tmp_path / "out" / "acc_vs_samples.png").exists()


def _fake_result():
    stat = {"mean": 0.7, "std": 0.01, "n": 3}
    pt = {"method": "dp", "setting": {"practice.initial_samples": "200"}, "ids": ["dp-1"], "test_acc": stat,
          "samples": {"mean": 500}, "generated": {"mean": 500}, "iterations": {"mean": 400},
          "label_fidelity": {"mean": 0.61}}
    goals = {k: {"value": 1.5, "bound": ">=", "goal": ">= 4", "status": "not met"}
             for k in ("samples_ratio", "iterations_ratio", "prune_compute_ratio", "guidance_cost_ratio")}
    return {"command": "python bench/run.py", "mode": "full", "machine": {"threads": 2, "device": "cpu"},
            "goals": goals, "points": {"dp_key": [pt]}}


def test_readme_table_replaces_only_its_block(tmp_path):
    from report import README_BEGIN, README_END, update_readme

    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nintro\n")
    update_readme(readme, _fake_result(), tmp_path / "bench" / "results")
    first = readme.read_text()
    assert first.startswith("# title\n\nintro\n") and first.count(README_BEGIN) == 1
    assert "| samples_ratio | ≥ 1.50× | >= 4 | not met |" in first
    assert "| dp | N=200 | 3 | 500 | 500 | 400 | 70.00 ± 1.00 | 61.00 |" in first
    assert "(bench/results/results.md)" in first
    # a second refresh with other numbers replaces the block and keeps the text around it
    readme.write_text(first + "\n## after\n")
    res = _fake_result()
    res["goals"]["samples_ratio"] |= {"value": 5.0, "bound": "=", "status": "met"}
    update_readme(readme, res, tmp_path / "bench" / "results")
    second = readme.read_text()
    assert second.count(README_BEGIN) == 1 and second.count(README_END) == 1
    assert "| samples_ratio | 5.00× | >= 4 | met |" in second and "≥ 1.50× | >= 4 | not met |\n| iterations" not in second
    assert second.endswith("\n## after\n") and second.startswith("# title\n\nintro\n")


def test_modelled_seconds_on_hand_counts():
    """Compute = counts × unit costs: plain generation, the guided extra over plain, training, validation, and for
    an entropy prune its scorer and scoring (hand-computed)."""
    from calibrate import modelled_seconds

    units = {"plain_image": 0.05, "guided_image": {"every": 0.125, "x0": 0.075}, "iteration": 0.2,
             "val_image": 0.001, "score_image": 0.002}
    dp = {"generated": 300, "guided": 100, "iterations": 400, "evaluations": 20, "val_size": 2000}
    m = modelled_seconds(dp, units, lambda r: "every")
    assert m == {"generation": 15.0, "guidance": 7.5, "training": 80.0, "evaluation": 40.0, "pruning": 0.0,
                 "total": 142.5}
    assert modelled_seconds(dp, units, lambda r: "x0")["guidance"] == 2.5
    prune = {"generated": 2000, "guided": 0, "iterations": 400, "evaluations": 20, "val_size": 2000,
             "scorer_iterations": 100}
    m = modelled_seconds(prune, units, lambda r: "every")
    assert m["generation"] == 100.0 and m["guidance"] == 0.0 and m["pruning"] == 100 * 0.2 + 2000 * 0.002
