"""A practice method is complete in its spec: one registered here, and nowhere else, runs through the job.

``half`` takes half of DP's final pool as its size (``sized_by``; 10 samples without it), builds its initial pool
through its own hook (plain growth, plus a timing entry of its own) and counts its cost without copying DP's plain
samples.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import ClassVar

import pytest
import torch

import deliberate.job as job
from deliberate.data.splits import HeldOut
from deliberate.practice.loop import PracticeResult
from deliberate.practice.methods import MethodSpec
from deliberate.practice.pool import Pool
from deliberate.registry import METHODS
from conftest import tiny_config


@dataclass(frozen=True)
class HalfSpec(MethodSpec):
    sized_by: ClassVar[str | None] = "dp"

    def build_pool(self, pool, cfg, generator, device="cpu", progress=False, donors=()) -> dict:
        out = super().build_pool(pool, cfg, generator, device, progress, donors)
        out["seconds"]["half_pool"] = 1.0  # a kind of seconds only this hook reports
        return out

    def cost(self, pool_size: int, shared: int = 0) -> dict:
        return {"generated": pool_size, "oversample": 1, "scorer_iterations": 0}  # counts even what it copies


def half(cfg, budget: int | None = None) -> HalfSpec:
    n = budget // 2 if budget else 10  # without DP's pool: 10 samples
    return HalfSpec("half", n, 0, 0.0, n)


@pytest.fixture
def registered():
    METHODS.register("half")(half)
    yield
    METHODS.pop("half")


def test_a_method_registered_in_a_test_runs_through_the_job(registered, tmp_path, monkeypatch, splits,
                                                            tiny_generator):
    cfg = tiny_config(tmp_path, "run.methods=half,dp")  # listed first, it still runs after DP, which sizes it
    monkeypatch.setattr(job, "load_splits", lambda *a, **k: replace(splits, test=HeldOut(splits.test._split)))
    monkeypatch.setattr(job, "obtain_generator", lambda *a, **k: (tiny_generator, {
        "generator_id": tiny_generator.generator_id, "source": "test", "path": "-"}))
    run_dir = job.run_job(cfg, tmp_path / "run", progress=False)

    methods = json.loads((run_dir / "summary.json").read_text())["methods"]
    assert list(methods) == ["dp", "half"]  # the order they ran in
    dp_samples, n = methods["dp"]["samples"], methods["dp"]["samples"] // 2
    assert dp_samples > cfg.practice.initial_samples  # DP grew, so its final pool (not the config) sized half
    assert methods["half"]["samples"] == n and methods["half"]["rounds"] == 0
    assert methods["half"]["seconds"]["half_pool"] == 1.0  # the loop built the pool through the spec's hook
    pool, dp_pool = Pool(run_dir / "methods" / "half" / "pool"), Pool(run_dir / "methods" / "dp" / "pool")
    assert pool.column("seeds").tolist() == list(range(n))  # the plain stream, sample i with seed i
    m = min(n, cfg.practice.initial_samples)
    assert torch.equal(pool.images[:m], dp_pool.images[:m])  # the plain samples both made are the same bytes


def test_the_time_left_counts_what_the_spec_says(registered, tmp_path):
    cfg = tiny_config(tmp_path, "practice.iterations=1000", "practice.initial_samples=500",
                      "practice.max_samples=4000")
    dp = PracticeResult("dp", 0.8, 0.8, 2000, 1000, 3, {"generation": 50.0, "guided_generation": 300.0,
                                                           "training": 150.0, "evaluation": 50.0})
    # 0.2 s per iteration, 0.1 s per plain sample; half of DP's 2000 samples, all counted (its cost says so)
    assert job.time_left(cfg, ["half"], {"dp": dp}) == 1000 * 0.2 + 1000 * 0.1
    # before DP finished: 10 samples
    st = PracticeResult("static", 0.8, 0.8, 4000, 1000, 0, {"generation": 400.0, "training": 150.0,
                                                             "evaluation": 50.0})
    assert job.time_left(cfg, ["half"], {"static": st}) == 1000 * 0.2 + 10 * 0.1
    assert job.order_methods(["half", "static", "dp", "dynamic_unguided"], cfg) == ["dp", "dynamic_unguided",
                                                                                   "half", "static"]
