"""Benchmark modes: what runs, at which sizes. Every number here is a setting, not a result.

``full`` took 45 minutes (66 with DDIM 25 and the fp32 learner) and ``quick`` 8 (was 14) on an idle
2-core CPU with the default generator cached (bench/README.md); ``tiny`` exercises every stage in a couple of
minutes with a small generator trained on the spot (meaningless numbers; for development and the slow test).

Config overrides of ``base`` apply to every run. ``sampling.batch_size=100`` aligns the model calls with every pool
size and round of the full and quick modes (multiples of 100), so no call is padded (bench/archive/sampling_chunks.py:
a misaligned request costs up to 2×, an aligned one nothing; chunk sizes 50-250 cost the same per image on 2
cores); ``sampling.shard_size=100`` aligns the pools' shards the same way, so a run copies every plain shard an
earlier run holds (a shard is copied whole: bench/harness.py). The full and quick modes sample like the package
default (DPM-Solver++ 2M, 10 steps, λ chosen by the sweep) and guide in the paper's step convention
(``guidance.scale=paper``, ω = 0.01 the default): their steps check compares 10 solver steps with 6. The tiny mode
keeps DDIM in the raw convention (a development check of every stage). Data settings stay at the defaults so that
the embedded default generator (cached under ``generator.cache_dir``, keyed by its config and its training data) is
found, not retrained.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Mode:
    name: str
    base: list[str]  # config overrides for every run
    steps_reference: int  # solver steps of the default
    steps_candidates: list[int]  # fewer steps tried, kept when validation accuracy holds (smallest first)
    steps_check_size: int  # static pool size of the steps check
    static_sizes: list[int]
    dp_base: dict  # the DP setting the ω and schedule sweeps run at: N, P, T (patience), growth, max
    dp_settings: list[dict]  # DP settings spanning final pool sizes (the curve); the best on val is the key point
    omegas: list[float]  # ω sweep (0 = dynamic-unguided)
    schedules: dict[str, list[str]]  # guidance schedule sweep: name → guidance overrides ("every" = every step)
    prune_ks: list[int]
    prune_random_ks: list[int]
    seeds: list[int]  # replicates of the key points (the first is the seed of every other run)
    iter_factors_static: list[float]  # static at its largest size, iterations × factor (besides 1)
    iter_factors_dp: list[float]  # the key DP setting, iterations × factor (besides 1)
    reference_iterations: int  # reference classifier (label fidelity) on real data
    ood_size: int  # test images per corruption (0 = the whole test split)
    calib_images: int  # images per generation-cost measurement
    calib_reps: int
    seed_offset_stride: int = 1_000_000  # seed replicate s draws samples from seeds s·stride + i
    steps_check_seeds: list = field(default_factory=lambda: [0])  # learner seeds the steps check averages over
    learner_candidates: list = field(default_factory=list)  # faster learner settings, kept if validation holds
    prune_seeds: bool = True  # replicate prune at its middle k over the seeds (k·M fresh samples each)
    generator: list[str] = field(default_factory=list)  # generator overrides (tiny: a small one trained here)
    cfg_scales: list = field(default_factory=lambda: [0.0, 1.0, 2.0, 3.0])  # λ sweep (classifier-free guidance)
    cfg_check_seeds: list = field(default_factory=lambda: [0, 1])  # learner seeds the λ sweep averages over


SCHEDULES = {
    "every": [],
    "every3": ["guidance.every=3"],
    "early": ["guidance.window=[0.0,0.5]"],
    "late": ["guidance.window=[0.5,1.0]"],
    "x0": ["guidance.grad=x0"],
}


def dp(n: int, p: int, t: int = 1, growth: int = 1, max_: int = 0, rounds: int = 6) -> dict:
    return {"N": n, "P": p, "T": t, "growth": growth, "max": max_ or n + rounds * p}


MODES = {
    "full": Mode(
        name="full",
        base=["practice.iterations=400", "practice.eval_every=20", "run.progress=false", "sampling.batch_size=100",
              "sampling.shard_size=100", "sampling.solver=dpmpp_2m", "guidance.scale=paper"],
        steps_reference=10, steps_candidates=[6], steps_check_size=400, steps_check_seeds=[0, 1],
        static_sizes=[200, 400, 800, 1600, 3200],
        dp_base=dp(400, 200, max_=1000),
        dp_settings=[dp(200, 100, max_=500), dp(400, 200, max_=1000)],
        omegas=[0.0, 0.005, 0.01, 0.03],
        schedules=SCHEDULES,
        prune_ks=[1, 2, 4, 8], prune_random_ks=[4, 8],
        seeds=[0, 1, 2], seed_offset_stride=0,
        iter_factors_static=[2.0], iter_factors_dp=[0.5],
        reference_iterations=2000, ood_size=2000, calib_images=16, calib_reps=3,
    ),
    "quick": Mode(
        name="quick",
        base=["practice.iterations=200", "practice.eval_every=20", "run.progress=false", "sampling.batch_size=100",
              "sampling.shard_size=100", "sampling.solver=dpmpp_2m", "guidance.scale=paper"],
        steps_reference=10, steps_candidates=[6], steps_check_size=400,
        static_sizes=[200, 800, 3200],
        dp_base=dp(400, 200, max_=1000),
        dp_settings=[dp(400, 200, max_=1000)],
        omegas=[0.0, 0.01],
        schedules={k: SCHEDULES[k] for k in ("every", "late")},
        prune_ks=[1, 4], prune_random_ks=[4], prune_seeds=False,
        seeds=[0], seed_offset_stride=0,
        iter_factors_static=[2.0], iter_factors_dp=[0.5],
        reference_iterations=2000, ood_size=1000, calib_images=16, calib_reps=2,
        cfg_scales=[0.0, 2.0],
    ),
    "tiny": Mode(
        name="tiny",
        base=["practice.iterations=60", "practice.eval_every=5", "learner.batch_size=32", "run.progress=false",
              "learner.eval_batch_size=500", "sampling.batch_size=100", "sampling.shard_size=50",
              "sampling.solver=ddim", "guidance.scale=raw",
              "data.val_size=300", "data.gen_train_size=1500"],
        steps_reference=5, steps_candidates=[3], steps_check_size=40,
        static_sizes=[20, 40, 80, 160],
        dp_base=dp(40, 20, max_=100),
        dp_settings=[dp(20, 10, max_=60), dp(40, 20, max_=100)],
        omegas=[0.0, 0.05, 0.5],
        schedules={k: SCHEDULES[k] for k in ("every", "every3", "late", "x0")},
        prune_ks=[1, 2, 4], prune_random_ks=[2],
        seeds=[0, 1, 2],
        iter_factors_static=[2.0], iter_factors_dp=[0.5],
        reference_iterations=60, ood_size=200, calib_images=8, calib_reps=1,
        generator=["generator.block_out_channels=[8,16]", "generator.train_steps=30", "generator.batch_size=32"],
        learner_candidates=[["learner.bf16=true", "learner.channels_last=true"]],
        cfg_scales=[0.0, 2.0],
    ),
}
