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
    # static generates DP's 2000 samples plainly and trains 1000 iterations
    assert time_left(cfg, ["static"], {"dp": dp}) == 1000 * 0.2 + 2000 * 0.1
    # an unguided method generates its initial pool (its additions are not known in advance)
    assert time_left(cfg, ["dynamic_unguided", "static"], {"dp": dp}) == (200 + 50) + (200 + 200)


def test_blocked_triggers_are_counted_by_reason(tmp_path):
    import json

    from deliberate.job import blocked_triggers

    rows = [{"iteration": 50}, {"iteration": 100, "blocked": "lr not constant"}, {"iteration": 150, "added": 500},
            {"iteration": 200, "blocked": "sample budget"}, {"iteration": 250, "blocked": "lr not constant"}]
    path = tmp_path / "stats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert blocked_triggers(path) == {"lr not constant": 2, "sample budget": 1}
    assert blocked_triggers(tmp_path / "absent.jsonl") == {}
