"""The benchmark analysis' rules (bench/analysis.py, bench/harness.py), each against its known answer:

* the best static point is chosen on validation (its test accuracy is the target), not on test;
* DP − the unguided loop is paired by learner seed and read on the unguided curve in log x;
* a run requested under several tags keeps them all (the guidance schedule "every" lost its tag before).
"""
from __future__ import annotations

import pytest

from bench import analysis
from bench.harness import Bench, RunSpec
from deliberate.rundir import write_config


def rec(i, method, seed, samples, test, val=None, tags=("t",), overrides=(), budget=None):
    return {"id": f"r{i}", "method": method, "seed": seed, "samples": samples, "test_acc": test,
            "val_acc": test if val is None else val, "tags": list(tags), "overrides": list(overrides),
            "setting": {}, "budget": budget}


def runs_of(*recs):
    return {r["id"]: r for r in recs}


def test_best_static_is_chosen_on_validation():
    runs = runs_of(rec(1, "static", 0, 1000, 0.80, 0.80, budget=1000), rec(2, "static", 0, 2000, 0.90, 0.81, budget=2000),
                   rec(3, "static", 0, 4000, 0.85, 0.86, budget=4000), rec(4, "dp", 0, 1000, 0.84, budget=1))
    pts = analysis.points(runs, "t")
    st, dp = [p for p in pts if p["method"] == "static"], [p for p in pts if p["method"] == "dp"]
    *_, best_acc, best_x = analysis._equal_accuracy(st, dp, "samples", 0.84, 1000)
    assert (best_x, best_acc) == (4000, 0.85)  # the test-best 2000 point (0.90) was not chosen


def test_dp_minus_unguided_is_paired_by_seed_on_a_log_axis():
    # seed 0: unguided 0.80 at 1000 and 0.84 at 4000 → 0.82 at 2000 in log x (0.8133 in linear x); DP 0.85 → +3
    # seed 1: the same curve + 0.01, DP 0.88 → +5.  Mean +4, paired SE = std(3, 5) / √2 = 1.
    runs = runs_of(rec(1, "dynamic_unguided", 0, 1000, 0.80, budget=1), rec(2, "dynamic_unguided", 0, 4000, 0.84, budget=2),
                   rec(3, "dynamic_unguided", 1, 1000, 0.81, budget=1), rec(4, "dynamic_unguided", 1, 4000, 0.85, budget=2),
                   rec(5, "dp", 0, 2000, 0.85, budget=3), rec(6, "dp", 1, 2000, 0.88, budget=3))
    pts = analysis.points(runs, "t")
    key = next(p for p in pts if p["method"] == "dp")
    d = analysis.paired_difference(runs, key, [p for p in pts if p["method"] == "dynamic_unguided"])
    assert d["mean_pp"] == pytest.approx(4.0) and d["se_pp"] == pytest.approx(1.0) and sorted(d["seeds"]) == [0, 1]


def test_a_run_requested_under_several_tags_keeps_every_tag(tmp_path, monkeypatch):
    bench = Bench.__new__(Bench)  # no set-up: the run directory is finished already
    bench.base, bench.runs_dir, bench.records, bench.log = [], tmp_path, {}, lambda *_: None
    spec = RunSpec("dp", ("guidance.omega=0.01",), tags=("A",))
    d = tmp_path / spec.id
    d.mkdir()
    write_config(d / "config.yaml", bench.run_config(spec).to_dict())
    (d / "summary.json").write_text("{}")
    fields = dict.fromkeys(("val_acc", "samples", "generated", "guided", "reused", "rounds", "label_fidelity",
                            "wall_seconds"), 0)
    monkeypatch.setattr(Bench, "record", lambda self, s, cfg, d: {**fields, "tags": sorted(s.tags)})
    bench.run(spec)
    bench.run(RunSpec("dp", spec.overrides, tags=("B",)))
    rec = bench.run(RunSpec("dp", spec.overrides, tags=("C",)))
    assert rec["tags"] == ["A", "B", "C"] and bench.records[spec.id]["tags"] == ["A", "B", "C"]
