"""The loop's bookkeeping end to end, with a stub generator (issue 27): incremental patience as the loop uses it,
static sized by DP's final pool when DP stops short of its budget, and every guidance and sampling option of the
config reaching the generator's calls.

The stub returns seeded random images at once, so these runs cost a tiny learner's training and nothing else. With
``practice.min_delta=1`` no evaluation after the first can improve (accuracy gains are below 1), so every later
evaluation is stale and the additions are known by hand.
"""
from __future__ import annotations

import json

import torch

import deliberate.job as job
from deliberate.data.splits import HeldOut
from deliberate.generation.base import SampleOutput
from deliberate.learning import Learner
from deliberate.practice import Pool
from deliberate.practice.loop import practice
from deliberate.registry import METHODS

from conftest import tiny_config


class StubGenerator:
    """Seeded random uint8 images, recording every call's settings and guide."""

    generator_id = "stub-generator"
    num_classes = 10
    image_shape = (1, 28, 28)
    device = torch.device("cpu")

    def __init__(self):
        self.calls: list[dict] = []

    def sample(self, labels, seeds, *, steps, cfg_scale, guide=None, eta, batch_size, solver,
               progress=False) -> SampleOutput:  # no defaults: a setting the caller drops is an error
        self.calls.append({"n": len(labels), "steps": steps, "cfg_scale": cfg_scale, "eta": eta,
                           "batch_size": batch_size, "solver": solver, "guide": guide})
        images = torch.stack([torch.randint(0, 256, self.image_shape, dtype=torch.uint8,
                                            generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        score = torch.full((len(labels),), float("nan")) if guide is None else torch.full((len(labels),), 0.5)
        return SampleOutput(images, score, {"guided_steps": 0, "nonfinite_grads": 0,
                                            "nonfinite_per_sample": [0] * len(labels), "seconds": 0.0})


# 120 iterations, an evaluation every 5, warm-up to 12, decay from 108: additions only at evaluations 15 … 105
STALE = ["practice.min_delta=1.0", "practice.patience=1", "practice.iterations=120", "practice.eval_every=5",
         "learner.warmup_frac=0.1", "learner.decay_frac=0.1", "learner.loader_workers=0", "practice.max_samples=400"]


def _dp(tmp_path, splits, *extra):
    cfg = tiny_config(tmp_path, *STALE, *extra)
    gen = StubGenerator()
    log: list[dict] = []
    res = practice(METHODS.build("dp", cfg), cfg, gen, Learner(cfg.learner, 10, 1, cfg.practice.iterations),
                   splits.val, Pool(tmp_path / "pool"), log=log.append, progress=False)
    return cfg, gen, res, log


def test_incremental_patience_spaces_the_additions(tmp_path, splits):
    """``practice.patience_growth=1``: T_max = 1 + k after k additions, so additions come after 1 stale evaluation
    in warm-up (blocked at 10: "lr not constant"), then at 15, and 2, 3, 4, 5 evaluations apart: 25, 40, 60, 85;
    the next would be 6 later (115), in the decay. With the growth ignored they come at every evaluation from 15 to
    105 (19 additions)."""
    cfg, gen, res, log = _dp(tmp_path, splits, "practice.patience_growth=1")
    assert cfg.practice.patience_growth == 1
    added = [r["iteration"] for r in log if r["added"]]
    assert added == [15, 25, 40, 60, 85], added
    assert [r["t_max"] for r in log if r["added"]] == [2, 3, 4, 5, 6]  # raised right after each addition
    blocked = {r["iteration"]: r["blocked"] for r in log if r.get("blocked")}
    assert blocked == {10: "lr not constant", 115: "lr not constant", 120: "lr not constant"}, blocked
    assert res.rounds == 5 and res.samples == 40 + 5 * 20 == len(Pool(tmp_path / "pool"))
    # with the growth at 0 (the same loop otherwise) every stable evaluation from 15 adds until the budget: 40 + 18·20
    cfg0, _, res0, log0 = _dp(tmp_path / "fixed", splits, "practice.patience_growth=0")
    assert [r["iteration"] for r in log0 if r["added"]] == list(range(15, 105, 5))
    assert res0.samples == 400 and {r["blocked"] for r in log0 if r.get("blocked")} == {"lr not constant",
                                                                                          "sample budget"}


def test_guided_rounds_get_every_option_of_the_config(tmp_path, splits):
    """The loop builds each round's guide from ``guidance.*`` and samples with ``sampling.*``: a dropped option
    (build_guide, the loop, grow) shows up as a default value in the generator's calls."""
    cfg, gen, res, log = _dp(tmp_path, splits, "practice.patience_growth=1", "guidance.scale=normalized",
                             "guidance.grad=x0", "guidance.every=2", "guidance.window=[0.1,0.8]",
                             "guidance.clip_x0=true", "guidance.criterion=margin", "guidance.omega=0.2",
                             "sampling.cfg_scale=1.5", "sampling.eta=0.5", "sampling.solver=ddim",
                             "sampling.steps=7", "sampling.batch_size=16")
    plain = [c for c in gen.calls if c["guide"] is None]
    guided = [c for c in gen.calls if c["guide"] is not None]
    assert sum(c["n"] for c in plain) == 40 and sum(c["n"] for c in guided) == 5 * 20
    for c in gen.calls:
        assert (c["steps"], c["cfg_scale"], c["eta"], c["solver"], c["batch_size"]) == (7, 1.5, 0.5, "ddim", 16)
    for c in guided:
        g = c["guide"]
        assert (g.scale, g.grad, g.every, g.window, g.clip_x0, g.omega) == ("normalized", "x0", 2, (0.1, 0.8), True,
                                                                             0.2)
        assert type(g.criterion).__name__ == "MarginCriterion"
    assert (Pool(tmp_path / "pool").column("omega")[40:] == 0.2).all()


def test_static_gets_dps_final_pool_when_dp_stops_short_of_its_budget(tmp_path, monkeypatch, splits):
    """Job level: DP ends at 40 + 5·20 = 140 samples with a budget of 400 (incremental patience and the decay
    stop it), and static, run after it, must train on exactly 140, the same plain samples. Run alone, static takes
    the budget (400): a job that sized static by ``max_samples`` would pass a run where DP reaches its budget."""
    cfg = tiny_config(tmp_path, *STALE, "practice.patience_growth=1", "run.methods=[static,dp]")
    gen = StubGenerator()
    monkeypatch.setattr(job, "load_splits", lambda *a, **k: _fresh(splits))
    monkeypatch.setattr(job, "obtain_generator", lambda *a, **k: (gen, {
        "generator_id": gen.generator_id, "source": "test", "path": "-"}))
    run_dir = job.run_job(cfg, tmp_path / "run", progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())["methods"]
    assert summary["dp"]["samples"] == 140 < cfg.practice.max_samples and summary["dp"]["rounds"] == 5
    assert summary["static"]["samples"] == 140 and summary["static"]["rounds"] == 0
    dp, st = Pool(run_dir / "methods/dp/pool"), Pool(run_dir / "methods/static/pool")
    assert len(st) == 140 and (st.column("omega") == 0).all()
    assert torch.equal(st.images[:40], dp.images[:40])  # the shared plain initial pool
    assert st.column("seeds").tolist() == list(range(140))
    assert METHODS.build("static", cfg).initial == 400  # without DP's count: the budget


def _fresh(splits):
    """The session splits with a fresh held-out counter."""
    from dataclasses import replace

    return replace(splits, test=HeldOut(splits.test._split))
