"""Algorithm 1 end to end on tiny models: pool growth, phase and budget rules, the held-out split left alone."""
from __future__ import annotations

import json

import torch

import deliberate.job as job
from deliberate.reports.report import report_run
from deliberate.data.splits import HeldOut
from deliberate.rundir import read_jsonl
from conftest import recomputed_test_acc, tiny_config


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
    report_run(run_dir)  # the report is written above the job (by the command line)

    assert events.count("held-out read") == 1
    assert events[-1] == "held-out read"  # after every loop finished
    assert [e for e in events if e.startswith("end")] == ["end dp", "end dynamic_unguided", "end static"]

    summary = json.loads((run_dir / "summary.json").read_text())
    for name in ("dp", "static", "dynamic_unguided"):
        m = summary["methods"][name]
        assert set(m) >= {"test_acc", "val_acc", "samples", "iterations"}
        assert m["test_acc"] == recomputed_test_acc(run_dir, name) and m["iterations"] == cfg.practice.iterations
    # static gets the same sample budget as DP used
    assert summary["methods"]["static"]["samples"] == summary["methods"]["dp"]["samples"]
    assert (run_dir / "report.md").exists() and (run_dir / "plots" / "accuracy.png").exists()
    assert (run_dir / "config.yaml").exists() and (run_dir / "splits.json").exists()

    # DP pool: grows by exactly P per trigger, only in the stable LR phase, never past the budget
    p, n, P = cfg.practice, cfg.practice.initial_samples, cfg.practice.add_samples
    stats = read_jsonl(run_dir / "methods" / "dp" / "stats.jsonl")
    prev = {"pool": n, "stale": 0, "t_max": p.patience, "best_val_acc": float("-inf")}
    sched = job.Learner(cfg.learner, 10, 1, p.iterations).schedule
    for r in stats:
        assert r["pool"] - prev["pool"] == r["added"] and r["added"] in (0, P)
        if r["added"]:
            assert sched.is_stable(r["iteration"])
            # it fired on a stale evaluation: no new best, the count reached T_max; then the trigger was reset
            assert r["best_val_acc"] == prev["best_val_acc"] and prev["stale"] + 1 >= prev["t_max"]
            assert r["stale"] == 0 and r["t_max"] == prev["t_max"] + p.patience_growth
        prev = r
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


def _always_stale(tmp_path, splits, tiny_generator, *extra):
    """A DP loop whose trigger fires at every evaluation after the first (no gain can exceed min_delta = 1)."""
    from deliberate.learning import Learner
    from deliberate.practice import Pool
    from deliberate.practice.loop import practice
    from deliberate.registry import METHODS

    cfg = tiny_config(tmp_path, "practice.min_delta=1.0", "practice.patience=1", "practice.patience_growth=0",
                      "learner.warmup_frac=0.3", "learner.decay_frac=0.2", "sampling.cfg_scale=0", *extra)
    learner = Learner(cfg.learner, 10, 1, cfg.practice.iterations)
    log: list[dict] = []
    res = practice(METHODS.build("dp", cfg), cfg, tiny_generator, learner, splits.val, Pool(tmp_path / "pool"),
                   log=log.append, progress=False)
    return res, log, learner.schedule


def test_additions_only_while_the_lr_is_constant(tmp_path, splits, tiny_generator):
    """Warm-up-stable-decay gate (Algorithm 1, step 5): a trigger in warm-up or decay, with budget left, is blocked
    as "lr not constant"; every trigger in the stable phase adds P."""
    res, log, sched = _always_stale(tmp_path, splits, tiny_generator, "practice.max_samples=10000")
    phases = {"warmup": 0, "stable": 0, "decay": 0}
    for r in log[1:]:
        it = r["iteration"]
        if sched.is_stable(it):
            phases["stable"] += 1
            assert r["added"] == 20 and "blocked" not in r, r
        else:
            phases["warmup" if it < sched.warmup_end else "decay"] += 1
            assert r["added"] == 0 and r["blocked"] == "lr not constant", r
    assert min(phases.values()) >= 1, phases  # every phase was exercised
    assert res.rounds == phases["stable"] and res.samples == 40 + 20 * phases["stable"]


def test_no_addition_past_the_budget(tmp_path, splits, tiny_generator):
    res, log, sched = _always_stale(tmp_path, splits, tiny_generator, "practice.max_samples=80")
    assert res.samples == 80 and res.rounds == 2
    late = [r for r in log[1:] if sched.is_stable(r["iteration"]) and not r["added"]]
    assert late and all(r["blocked"] == "sample budget" for r in late)


def _fresh(splits):
    """The session splits with a fresh held-out counter."""
    from dataclasses import replace

    return replace(splits, test=HeldOut(splits.test._split))
