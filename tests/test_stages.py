"""The default job's stage lines: the time-left estimate is the measured rates times the work left."""
from __future__ import annotations

from deliberate.config import load_config
from deliberate.job import time_left
from deliberate.practice.loop import PracticeResult


def test_time_left_uses_measured_rates():
    cfg = load_config(None, ["practice.iterations=1000", "practice.initial_samples=500", "practice.max_samples=4000"])
    assert time_left(cfg, ["dp", "static"], {}) is None
    dp = PracticeResult("dp", 0.8, 0.8, 2000, 1000, 3, {"generation": 50.0, "guided_generation": 300.0,
                                                           "training": 150.0, "evaluation": 50.0})
    # 0.2 s per iteration (training + evaluation), 0.1 s per plain sample (500 initial ones took 50 s);
    # static trains 1000 iterations on DP's 2000 samples, of which it copies DP's 500 plain initial ones
    assert time_left(cfg, ["static"], {"dp": dp}) == 1000 * 0.2 + 1500 * 0.1
    # an unguided method copies its initial pool from DP (its additions are not known in advance)
    assert time_left(cfg, ["dynamic_unguided", "static"], {"dp": dp}) == 200 + (200 + 150)
    # prune samples its k·M candidates (k = practice.oversample = 4) but DP's 500 plain initial ones, which it copies
    assert time_left(cfg, ["prune"], {"dp": dp}) == 200 + (4 * 2000 - 500) * 0.1
    # the rate excludes samples the first method copied rather than sampled
    st = PracticeResult("static", 0.8, 0.8, 2000, 1000, 0, {"generation": 100.0, "training": 150.0,
                                                             "evaluation": 50.0}, reused=1000)
    assert time_left(cfg, ["dp"], {"static": st}) == 200 + 0 * 0.1


def test_blocked_triggers_are_counted_by_reason(tmp_path):
    import json

    from deliberate.job import blocked_triggers

    rows = [{"iteration": 50}, {"iteration": 100, "blocked": "lr not constant"}, {"iteration": 150, "added": 500},
            {"iteration": 200, "blocked": "sample budget"}, {"iteration": 250, "blocked": "lr not constant"}]
    path = tmp_path / "stats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert blocked_triggers(path) == {"lr not constant": 2, "sample budget": 1}
    assert blocked_triggers(tmp_path / "absent.jsonl") == {}


def test_static_copies_the_plain_initial_pool_of_dp_byte_for_byte(tmp_path, tiny_generator):
    """The second method of a job copies the first's plain initial shards (same generator, labels, seeds and
    settings); they equal what sampling would give, and a shard made with other settings is not copied."""
    import torch

    from deliberate.practice.loop import grow
    from deliberate.practice.pool import Pool

    cfg = load_config(None, ["sampling.steps=3", "sampling.shard_size=8", "sampling.batch_size=8"])
    gen = tiny_generator
    dp = Pool(tmp_path / "dp")
    st = grow(dp, 20, gen, cfg, 0)
    assert st["reused"] == 0
    static = Pool(tmp_path / "static")
    st = grow(static, 30, gen, cfg, 0, donors=[dp])
    assert st["reused"] == 16  # shards [0, 8) and [8, 16); DP's [16, 20) is not a shard of static's [16, 24)
    fresh = Pool(tmp_path / "fresh")
    grow(fresh, 30, gen, cfg, 0)
    assert torch.equal(static.images, fresh.images) and torch.equal(static.labels, fresh.labels)
    assert [r["sha256"] for r in static.records] == [r["sha256"] for r in fresh.records]
    # other settings (CFG scale) or other seeds: nothing copied
    other = load_config(None, ["sampling.steps=3", "sampling.shard_size=8", "sampling.batch_size=8",
                               "sampling.cfg_scale=1.0"])
    assert grow(Pool(tmp_path / "other"), 16, gen, other, 0, donors=[dp])["reused"] == 0
    shifted = load_config(None, ["sampling.steps=3", "sampling.shard_size=8", "sampling.batch_size=8",
                                 "sampling.seed_offset=1"])
    assert grow(Pool(tmp_path / "shifted"), 16, gen, shifted, 0, donors=[dp])["reused"] == 0
