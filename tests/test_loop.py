"""Algorithm 1 end to end on tiny models: pool growth, phase and budget rules, the held-out split left alone."""
from __future__ import annotations

import json

import torch

import deliberate.job as job
from deliberate.data.splits import HeldOut
from deliberate.rundir import read_jsonl
from conftest import tiny_config


def test_run_job_reads_held_out_once_after_all_loops(tmp_path, monkeypatch, splits, tiny_generator):
    cfg = tiny_config(tmp_path, "run.methods=dp,static,dynamic_unguided")
    events: list[str] = []
    real_practice, real_read = job.practice, HeldOut.read

    def practice(spec, *a, **k):
        events.append(f"start {spec.name}")
        out = real_practice(spec, *a, **k)
        events.append(f"end {spec.name}")
        return out

    def read(self, reason):
        events.append("held-out read")
        return real_read(self, reason)

    monkeypatch.setattr(job, "practice", practice)
    monkeypatch.setattr(HeldOut, "read", read)
    monkeypatch.setattr(job, "load_splits", lambda *a, **k: _fresh(splits))
    monkeypatch.setattr(job, "obtain_generator", lambda *a, **k: (tiny_generator, {
        "generator_id": tiny_generator.generator_id, "source": "test", "path": "-"}))
    run_dir = job.run_job(cfg)

    assert events.count("held-out read") == 1
    assert events[-1] == "held-out read"  # after every loop finished
    assert [e for e in events if e.startswith("end")] == ["end dp", "end dynamic_unguided", "end static"]

    summary = json.loads((run_dir / "summary.json").read_text())
    for name in ("dp", "static", "dynamic_unguided"):
        m = summary["methods"][name]
        assert set(m) >= {"test_acc", "val_acc", "samples", "iterations"}
        assert 0 <= m["test_acc"] <= 1 and m["iterations"] == cfg.practice.iterations
    # static gets the same sample budget as DP used
    assert summary["methods"]["static"]["samples"] == summary["methods"]["dp"]["samples"]
    assert (run_dir / "report.md").exists() and (run_dir / "plots" / "accuracy.png").exists()
    assert (run_dir / "config.yaml").exists() and (run_dir / "splits.json").exists()

    # DP pool: grows by exactly P per trigger, only in the stable LR phase, never past the budget
    p, n, P = cfg.practice, cfg.practice.initial_samples, cfg.practice.add_samples
    stats = read_jsonl(run_dir / "methods" / "dp" / "stats.jsonl")
    prev = n
    sched = job.Learner(cfg.learner, 10, 1, p.iterations).schedule
    for r in stats:
        assert r["pool"] - prev == r["added"] and r["added"] in (0, P)
        if r["added"]:
            assert r["stale"] == 0 and sched.is_stable(r["iteration"])
        prev = r["pool"]
    additions = sum(1 for r in stats if r["added"])
    assert additions >= 1, "the tiny loop must trigger at least once"
    assert stats[-1]["pool"] == n + additions * P <= p.max_samples
    assert summary["methods"]["dp"]["rounds"] == additions
    # guided rounds are recorded with their ω; the unguided baseline adds with ω = 0
    from deliberate.practice.pool import Pool

    dp_pool = Pool(run_dir / "methods" / "dp" / "pool")
    omegas = dp_pool.column("omega")
    rounds = dp_pool.column("round")
    assert (omegas[rounds == 0] == 0).all() and (omegas[rounds > 0] == cfg.guidance.omega).all()
    assert not torch.isnan(torch.tensor(dp_pool.column("score")[rounds > 0])).any()
    ug = Pool(run_dir / "methods" / "dynamic_unguided" / "pool")
    assert (ug.column("omega") == 0).all()
    # sample i of every pool: label i mod C, seed offset + i; identical plain samples across methods
    assert dp_pool.column("seeds").tolist() == list(range(len(dp_pool)))
    assert torch.equal(dp_pool.labels, torch.arange(len(dp_pool)) % 10)
    st = Pool(run_dir / "methods" / "static" / "pool")
    assert torch.equal(st.images[:n], dp_pool.images[:n])


def test_no_additions_in_decay_phase_or_past_budget(tmp_path, splits, tiny_generator):
    from deliberate.learning import Learner
    from deliberate.practice import Pool
    from deliberate.practice.loop import practice
    from deliberate.registry import METHODS

    cfg = tiny_config(tmp_path, "practice.max_samples=80", "learner.decay_frac=0.5")
    learner = Learner(cfg.learner, 10, 1, cfg.practice.iterations)
    log: list[dict] = []
    res = practice(METHODS.build("dp", cfg), cfg, tiny_generator, learner, splits.val, Pool(tmp_path / "pool"),
                   log=log.append, progress=False)
    assert res.samples <= 80 and res.rounds == (res.samples - 40) // 20
    decay_start = learner.schedule.decay_start
    assert all(not r["added"] for r in log if r["iteration"] >= decay_start)
    assert any(r.get("blocked") for r in log), "the trigger should have fired past the budget or in the decay"


def _fresh(splits):
    """The session splits with a fresh held-out counter."""
    from dataclasses import replace

    return replace(splits, test=HeldOut(splits.test._split))
