"""Decays branched from a stable-phase trunk (branch.py): the branch of a run is that run, bit for bit.

Known answer: the run of T iterations computed from scratch. The trunk (``learner.decay_frac=0``, longer) keeps its
state at T's decay start; :func:`branch_run` + resume must give the same final weights and held-out accuracy — for
static (a fixed pool) and for DP (a pool that grew before the branch point and keeps growing in the trunk after it).
"""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from conftest import tiny_config
from deliberate.branch import branch_point, branch_run
from deliberate.checkpoint import ResumeError
from deliberate.job import run_job
from deliberate.learning.schedule import WarmupStableDecay
from deliberate.practice.pool import open_pool

T, L, W = 50, 70, 8  # branch length, trunk length, fixed warm-up


@pytest.fixture(scope="module")
def gen_cache(tmp_path_factory):
    return f"generator.cache_dir={tmp_path_factory.mktemp('gen')}"  # one tiny generator for the module


def _cfgs(tmp_path, method, *extra):
    # model calls of one shard (20 samples) each, not TINY's 64 slots: a branch equals its run at any call size
    common = [f"run.methods=[{method}]", f"learner.warmup_iterations={W}", "sampling.batch_size=20", *extra]
    run = tiny_config(tmp_path, *common, f"practice.iterations={T}")
    trunk = tiny_config(tmp_path, *common, f"practice.iterations={L}", "learner.decay_frac=0",
                        f"run.keep_checkpoints=[{branch_point(T)}]")
    return run, trunk


def _weights(run_dir, method):
    return load_file(run_dir / "methods" / method / "model.safetensors")


@pytest.mark.parametrize("method", ["static", "dp"])
def test_a_branch_is_the_standalone_run(tmp_path, method, gen_cache):
    # DP's budget leaves room to grow past the branch point in the trunk; static's pool (the budget, sampled by the
    # solo run and by the trunk) needs no more than TINY's 120 samples to be fixed
    budget = 400 if method == "dp" else 120
    run, trunk = _cfgs(tmp_path, method, f"practice.max_samples={budget}", gen_cache)
    solo = run_job(run, tmp_path / "solo", progress=False)
    tdir = run_job(trunk, tmp_path / "trunk", progress=False, held_out=False)
    assert json.loads((tdir / "summary.json").read_text())["methods"][method]["test_acc"] is None  # not read
    bdir = branch_run(tdir, method, run, tmp_path / "branch")
    run_job(run, bdir, progress=False, resume=True)
    a, b = _weights(solo, method), _weights(bdir, method)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    sa, sb = (json.loads((d / "summary.json").read_text())["methods"][method] for d in (solo, bdir))
    assert (sa["test_acc"], sa["val_acc"], sa["samples"], sa["rounds"]) == \
           (sb["test_acc"], sb["val_acc"], sb["samples"], sb["rounds"])
    if method == "dp":  # the trunk grew its pool past the branch point; the branch holds the pool as it was there
        assert len(open_pool(tdir / "methods/dp/pool")) > sb["samples"] > run.practice.initial_samples


def test_branch_refuses_other_changes_and_other_schedules(tmp_path, gen_cache):
    run, trunk = _cfgs(tmp_path, "static", gen_cache)
    tdir = run_job(trunk, tmp_path / "trunk", progress=False, held_out=False)
    lr = tiny_config(tmp_path, "run.methods=[static]", f"learner.warmup_iterations={W}", f"practice.iterations={T}",
                     "learner.lr=0.01", gen_cache)
    with pytest.raises(ResumeError, match="learner.lr"):
        branch_run(tdir, "static", lr, tmp_path / "b1")
    frac = tiny_config(tmp_path, "run.methods=[static]", f"practice.iterations={T}", gen_cache)  # warm-up as a fraction of T
    with pytest.raises(ResumeError, match="warmup_iterations"):
        branch_run(tdir, "static", frac, tmp_path / "b2")
    other = tiny_config(tmp_path, "run.methods=[static]", f"learner.warmup_iterations={W}", "practice.iterations=40",
                        gen_cache)
    with pytest.raises(ResumeError, match="did not keep"):  # decay start 32: not kept
        branch_run(tdir, "static", other, tmp_path / "b3")
    assert not any(p.name.startswith("b") for p in tmp_path.iterdir())  # nothing half-written


def test_fixed_warmup_schedule_known_values():
    s = WarmupStableDecay(100, warmup_frac=0.5, decay_frac=0.2, warmup_iterations=10)
    assert (s.warmup_end, s.decay_start) == (10, 80)
    assert s.factor(0) == pytest.approx(0.1) and s.factor(9) == 1.0 and s.factor(79) == 1.0
    assert s.factor(90) == pytest.approx(0.5)  # half-way through the cosine decay
    trunk = WarmupStableDecay(1000, decay_frac=0.0, warmup_iterations=10)
    assert all(trunk.factor(i) == s.factor(i) for i in range(80))


def test_a_fixed_warmup_enters_the_reference_classifiers_key():
    from deliberate.config import load_config
    from deliberate.evaluation import _reference_key

    meta = {"seed": 0, "gen_train": [0, 1]}
    plain, fixed = (load_config(None, o) for o in ([], ["learner.warmup_iterations=100"]))
    assert _reference_key(plain, meta, 2000, 0) != _reference_key(fixed, meta, 2000, 0)
    assert _reference_key(plain, meta, 2000, 0) == _reference_key(load_config(), meta, 2000, 0)
