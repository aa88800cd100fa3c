"""The benchmark's pieces: equal-accuracy ratios on curves with known answers, deterministic corruptions,
oversample-then-prune keeping the highest-entropy samples, label fidelity, and runs as the job's run directories."""
from __future__ import annotations

import math

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

from bench import curves


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
    cfg = prune_cfg("practice.prune_keep=global")  # the global rule (the default keeps per class: test_prune.py)
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


# ------------------------------------------------------------------------------------------ runs of the job
def test_bench_sets_up_through_core_setup_on_the_configs_run_device(tmp_path, monkeypatch):
    """The harness's set-up (generator and reference classifier) is bench.core.setup on the mode's config: the
    device is ``run.device`` (the config's ``auto`` by default), and a study's ``--device`` sets it."""
    from types import SimpleNamespace

    from bench import harness

    seen, gen = [], FakeGenerator()

    def fake_setup(cfg, **kw):
        seen.append(cfg.run.device)
        return SimpleNamespace(splits=None, device=cfg.run.device, generator=gen, gen_info={},
                               reference=cfg.run.device if kw["reference"] else None, ref_info={})

    monkeypatch.setattr(harness, "setup", fake_setup)
    mode = SimpleNamespace(base=["run.progress=false"], generator=[], reference_iterations=1)
    default = harness.Bench(mode, tmp_path / "a")
    pinned = harness.Bench(mode, tmp_path / "b", device="cpu")
    assert seen == ["auto", "cpu"] and (default.device, pinned.device) == ("auto", "cpu")
    assert pinned.reference == "cpu" and pinned.cfg0.run.device == "cpu" and pinned.gen is gen


def test_bench_runs_are_job_run_directories_that_share_plain_shards(tmp_path, monkeypatch):
    """A benchmark run is a run directory of the job (``deliberate check`` verifies it; no run reads the test
    split): a finished run is not run again, an interrupted one is resumed, one whose config changed runs again;
    a run copies the plain shards of earlier runs (static's ladder and prune's candidates sample each plain sample
    once), and a prune run's cost still counts all k·M candidates."""
    import json
    from types import SimpleNamespace

    import deliberate.job as job
    from bench import harness
    from conftest import TINY
    from deliberate.repair import main as check

    gen = FakeGenerator()
    monkeypatch.setattr(job, "obtain_generator", lambda *a, **k: (gen, {"generator_id": gen.generator_id,
                                                                        "source": "test", "path": "-"}))
    resumed, run_job = [], harness.run_job
    monkeypatch.setattr(harness, "run_job", lambda cfg, d, **kw: resumed.append(kw["resume"]) or run_job(cfg, d, **kw))
    mode = SimpleNamespace(base=[*TINY, f"generator.cache_dir={tmp_path}/gen", "practice.iterations=10"],
                           generator=[], reference_iterations=5, ood_size=20)
    bench = harness.Bench(mode, tmp_path / "work")
    big = bench.run(harness.RunSpec("static", ("run.seed=0",), budget=60, tags=("a",)))
    assert gen.made == 60 and (big["samples"], big["generated"], big["reused"]) == (60, 60, 0)
    spec = harness.RunSpec("static", ("run.seed=1",), budget=40, tags=("a",))
    small = bench.run(spec)
    assert gen.made == 60 and small["reused"] == 40  # shards of 20 (TINY): the first two of the 60-sample pool
    prune = bench.run(harness.RunSpec("prune", ("practice.oversample=2", "practice.initial_samples=20",
                                                "practice.prune_scorer_iterations=5"), budget=40))
    assert gen.made == 80 and prune["generated"] == 80 and prune["samples"] == 40  # candidates 60..79 sampled
    assert bench.run(harness.RunSpec("static", spec.overrides, budget=40, tags=("b",)))["tags"] == ["a", "b"]
    assert resumed == [False, False, False]
    d = tmp_path / "work" / "runs" / spec.id
    assert check(str(d), False) == 0 and json.loads((d / "summary.json").read_text())["methods"]["static"][
        "test_acc"] is None
    ev = bench.evaluate()
    assert set(ev["runs"]) == set(bench.records) and len(ev["test_reads"]) == 1 and (d / "eval.json").exists()

    again = harness.Bench(mode, tmp_path / "work")  # a later invocation: finished, so not run
    assert again.run(spec)["val_acc"] == small["val_acc"] and len(resumed) == 3
    (d / "summary.json").unlink()  # interrupted before its summary: resumed from the finished method
    assert harness.Bench(mode, tmp_path / "work").run(spec)["val_acc"] == small["val_acc"] and resumed[-1] is True
    mode.base.append("learner.batch_size=16")  # the mode's base settings changed: run again, from scratch
    assert harness.Bench(mode, tmp_path / "work").run(spec)["samples"] == 40 and resumed[-1] is False
    assert gen.made == 80 and len(resumed) == 5


def test_job_seeds_runs_each_seed_and_variant_in_this_process(tmp_path, monkeypatch):
    """``job-seeds run`` calls the command line's own function, once per (seed, variant), each named for its own
    run directory; the first variant runs DP, the unguided loop and static, the others DP alone; a failing run
    stops the study with its exit status."""
    import deliberate.cli
    from bench import job_seeds

    calls = []
    monkeypatch.setattr(deliberate.cli, "main", lambda argv: calls.append(argv) or (3 if len(calls) == 5 else 0))
    assert job_seeds.main(["run", "--seeds", "0,1", "--variants", "entropy,projected", "--out-dir", str(tmp_path),
                           "practice.iterations=10"]) == 0
    names = [next(a for a in argv if a.startswith("run.name=")) for argv in calls]
    assert names == [f"run.name=seeds-{v}-s{s}" for s in (0, 1) for v in ("entropy", "projected")]
    assert [next(a for a in argv if a.startswith("run.methods=")) for argv in calls[:2]] == [
        "run.methods=dp,dynamic_unguided,static", "run.methods=dp"]
    assert all(argv[:2] == ["run", "practice.iterations=10"] and f"run.out_dir={tmp_path}" in argv for argv in calls)
    assert job_seeds.main(["run", "--seeds", "2", "--variants", "entropy,projected"]) == 3 and len(calls) == 5


@pytest.mark.slow
def test_tiny_benchmark_end_to_end(tmp_path):
    """Every stage of the benchmark on a tiny generator trained on the spot (several minutes on 2 cores)."""
    import json

    from bench import run as bench_run

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
    return {"command": "python -m bench benchmark", "mode": "full", "machine": {"threads": 2, "device": "cpu"},
            "goals": goals, "points": {"dp_key": [pt]}}


def test_summary_table_of_headline_ratios_and_methods():
    """The short results table goes beside results.md (the README is written by people, never rewritten)."""
    from bench.report import summary_md

    text = summary_md(_fake_result())
    assert "| samples_ratio | ≥ 1.50× | >= 4 | not met |" in text
    assert "| dp | N=200 | 3 | 500 | 500 | 400 | 70.00 ± 1.00 | 61.00 |" in text
    assert "`python -m bench benchmark`" in text and "[results.md](results.md)" in text


def test_report_study_refuses_a_missing_results_file(tmp_path):
    from bench import report

    with pytest.raises(SystemExit, match=f"no results file {tmp_path / 'latest.json'}"):
        report.main([str(tmp_path / "latest.json")])
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_every_study_is_listed_and_answers_help(capsys):
    """``python -m bench`` lists every registered study with its one-line summary; each parses ``--help``."""
    from bench.__main__ import main
    from bench.core import STUDIES

    assert main([]) == 0
    listing = capsys.readouterr().out
    names = {"benchmark", "report", "cfg-sweep", "criteria-sweep", "generator-classes", "generator-quality",
             "job-ladder", "job-seeds", "learner-audit", "pool-scale", "recipe-screen", "scaling", "folders-check",
             "prune-memory"}
    assert names <= set(STUDIES)
    for name in names:
        summary = STUDIES[name].__doc__.strip().splitlines()[0]
        assert f"  {name:<18} {summary}" in listing
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0 and f"python -m bench {name}" in capsys.readouterr().out
    assert main(["no-such-study"]) == 2


def test_modelled_seconds_on_hand_counts():
    """Compute = counts × unit costs: plain generation, the guided extra over plain, training, validation, and for
    an entropy prune its scorer and scoring (hand-computed)."""
    from bench.calibrate import modelled_seconds

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


# ------------------------------------------------------------------------- headline ratios and goals (analysis)
def _rec(rid, tags, x, acc, *, method="static", budget=0, seed=0, overrides=(), setting=None, val_acc=None):
    """One enriched run record as analysis reads it; ``x`` holds samples/iterations/compute_seconds."""
    vals = {"samples": None, "iterations": None, "compute_seconds": None} | x
    return {"id": rid, "seed": seed, "method": method, "overrides": [*overrides, f"run.seed={seed}"],
            "setting": setting or {}, "budget": budget, "tags": tags, "test_acc": acc,
            "val_acc": 1.0 - acc if val_acc is None else val_acc,  # validation must not be read for the curves
            "generated": None, "guided": None, "label_fidelity": None, "rounds": None, "measured_seconds": None, **vals}


def _bench_runs(dp_comp=20.0, late_acc=0.69):
    """Hand-made curves with answers computed below in closed form.

    static by samples: acc = 0.5 + 0.05·log2(n/1000) at n = 1000..16000 (the 8000 point is the mean of two seeds,
    0.64 and 0.66); DP key: 0.675 with 2000 samples, 100 iterations, ``dp_comp`` s. static by iterations tops out
    at 0.66 < 0.675 (never reaches); prune starts at 0.70 > 0.675 (reaches at its first point)."""
    R = []
    # static's validation accuracy is its test accuracy − 0.05: static's best point (chosen on validation) is its
    # best on test, while a curve read from validation would be 5 points off
    for i, n in enumerate([1000, 2000, 4000, 16000]):
        a = 0.5 + 0.05 * math.log2(n / 1000)
        R.append(_rec(f"s{i}", ["static_samples"], {"samples": n}, a, budget=n, val_acc=a - 0.05))
    R += [_rec(f"s8-{s}", ["static_samples"], {"samples": 8000}, a, budget=8000, seed=s, val_acc=a - 0.05)
          for s, a in ((0, 0.64), (1, 0.66))]
    R.append(_rec("key", ["dp_key", "dp_curve", "dp_iters"], {"samples": 2000, "iterations": 100,
                                                               "compute_seconds": dp_comp}, 0.675, method="dp"))
    R.append(_rec("dpc1", ["dp_curve"], {"samples": 1000}, 0.60, method="dp", budget=1000))
    R.append(_rec("dpc4", ["dp_curve"], {"samples": 4000}, 0.75, method="dp", budget=4000))
    R.append(_rec("dpi50", ["dp_iters"], {"iterations": 50, "samples": 2000}, 0.60, method="dp",
                  overrides=["practice.iterations=50"]))
    for it, a in ((100, 0.5), (200, 0.6), (400, 0.65), (800, 0.66)):
        R.append(_rec(f"si{it}", ["static_iters"], {"iterations": it}, a, budget=16000,
                      overrides=[f"practice.iterations={it}"], val_acc=a - 0.05))
    for k, (c, a) in enumerate(((50.0, 0.70), (100.0, 0.72), (200.0, 0.74))):
        R.append(_rec(f"p{k}", ["prune_curve"], {"compute_seconds": c}, a, method="prune",
                      overrides=[f"practice.oversample={2 ** k}"], setting={"practice.oversample": 2 ** k}))
    for name, a, ov in (("every", 0.70, []), ("late", late_acc, ["guidance.window=[0.5,1.0]"])):
        R.append(_rec(f"g-{name}", ["schedule_sweep"], {}, a, method="dp", overrides=ov,
                      setting=dict(o.split("=", 1) for o in ov)))
    runs = {r["id"]: r for r in R}
    choices = {"dp_key": {"id": "key", "label": "key"}, "prune_kept": 2000, "schedule": {"name": "late"}}
    units = {"guided_ratio": {"every": 3.0, "late": 1.4}}
    schedules = {"every": [], "late": ["guidance.window=[0.5,1.0]"]}
    return runs, choices, units, schedules


def test_headline_ratios_on_hand_made_curves():
    from bench.analysis import headline

    H, _ = headline(*_bench_runs())
    # (a) static reaches 0.675 at 1000·2^3.5 samples (log-linear, between 8000 and 16000); DP used 2000
    d = H["samples_ratio_detail"]
    assert H["samples_ratio"] == pytest.approx(1000 * 2 ** 3.5 / 2000, rel=1e-9) and d["bound"] == "="
    assert d["static_samples_needed"] == {"value": pytest.approx(1000 * 2 ** 3.5), "bound": "="}
    # …and at static's best (0.70 at 16000) the DP curve needs 2000·2^(1/3) (a third of the way 0.675 → 0.75)
    b = d["at_best_static"]
    assert (b["best_static_test_acc"], b["best_static_samples"]) == (pytest.approx(0.70), 16000)
    assert b["ratio"] == pytest.approx(16000 / (2000 * 2 ** (1 / 3)), rel=1e-9) and b["bound"] == "="
    # (b) static by iterations never reaches 0.675: more than its last 800 iterations, ratio > 8
    d = H["iterations_ratio_detail"]
    assert (H["iterations_ratio"], d["bound"]) == (pytest.approx(8.0), ">")
    assert d["static_iterations_needed"] == {"value": 800, "bound": ">"} and d["static_pool"] == 16000
    b = d["at_best_static"]  # 0.66 on the DP curve (50 → 0.60, 100 → 0.675): 50·2^0.8 iterations
    assert b["ratio"] == pytest.approx(800 / (50 * 2 ** 0.8), rel=1e-9) and b["bound"] == "="
    # (c) prune already beats DP at its first point: compute needed ≤ 50 s, ratio ≤ 50 / 20
    d = H["prune_compute_ratio_detail"]
    assert (H["prune_compute_ratio"], d["bound"]) == (pytest.approx(2.5), "<=")
    assert [p["k"] for p in d["prune_points"]] == [1, 2, 4]
    # (d) the chosen schedule's cost ratio, with both schedules' accuracies
    d = H["guidance_cost_ratio_detail"]
    assert H["guidance_cost_ratio"] == 1.4 and d["every_step_cost_ratio"] == 3.0
    assert (d["test_acc"], d["every_step_test_acc"]) == (pytest.approx(0.69), pytest.approx(0.70))


def test_goal_status_on_hand_made_curves():
    from bench.analysis import goals, headline

    args = _bench_runs()
    G = goals(headline(*args)[0], args[0], args[1], 300, test_size=10_000)
    assert G["samples_ratio"]["status"] == "met"  # 5.66 ≥ 4
    assert G["iterations_ratio"]["status"] == "met"  # > 8 ≥ 6 (a lower bound above the goal)
    assert G["prune_compute_ratio"]["status"] == "not met"  # ≤ 2.5 < 5
    # 1.4 ≤ 1.5, but the schedule loses a point of accuracy (0.69 vs 0.70) with a test-set SE of 0.0046
    g = G["guidance_cost_ratio"]
    assert (g["status"], g["accuracy_kept"], g["tolerance"]) == ("not met", False, pytest.approx(0.0046, abs=1e-4))
    # the same point lost is within the SE of a 100-image test set: met
    assert goals(headline(*args)[0], args[0], args[1], 300, test_size=100)["guidance_cost_ratio"]["status"] == "met"
    # an upper bound above the goal decides nothing: prune reaches DP's accuracy with ≤ 50 s against DP's 5 s
    args = _bench_runs(dp_comp=5.0, late_acc=0.70)
    G = goals(headline(*args)[0], args[0], args[1], 300, test_size=10_000)
    assert (G["prune_compute_ratio"]["value"], G["prune_compute_ratio"]["status"]) == (10.0, "undetermined")
    assert G["guidance_cost_ratio"]["status"] == "met" and G["guidance_cost_ratio"]["accuracy_kept"] is True


def _recipe(work, name, overrides, vals, tests, fid=0.99):
    d = work / name
    d.mkdir(parents=True)
    pts = [{"run": f"r{s}", "seed": s, "samples": 3000, "val_acc": v, "test_acc": t, "label_fidelity": fid}
           for s, (v, t) in enumerate(zip(vals, tests))]
    rec = {"name": name, "overrides": overrides, "device": "cpu", "parallel": 1, "rc": 0,
           "generator": {"generator_id": name, "train_seconds": 1.0}, "ladder": {"command": "x", "points": pts}}
    (d / "recipe.json").write_text(__import__("json").dumps(rec))


def test_recipe_screen_groups_generator_seeds_into_families(tmp_path):
    import json

    from bench import recipe_screen

    _recipe(tmp_path, "a0", ["generator.batch_size=64"], [0.80, 0.82], [0.79, 0.81])
    _recipe(tmp_path, "a1", ["generator.batch_size=64", "generator.seed=1"], [0.84, 0.86], [0.83, 0.85])
    _recipe(tmp_path, "d", [], [0.70], [0.71])
    assert recipe_screen.main(["table", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    out = json.loads((tmp_path / "out" / "recipe_screen.json").read_text())
    fams = {f["family"]: f for f in out["families"]}
    assert set(fams) == {"generator.batch_size=64", "(default)"}
    a = fams["generator.batch_size=64"]
    assert a["generator_seeds"] == [0, 1]
    assert math.isclose(a["val_mean"], 0.83) and math.isclose(a["test_mean"], 0.82)
    assert math.isclose(a["val_se"], 0.02)  # the recipes' means 0.81 and 0.85: SD 0.0283, SE 0.02
    assert fams["(default)"]["val_se"] is None and out["families"][0]["family"] == "generator.batch_size=64"
    assert "| a1 | `generator.batch_size=64` | 1 |" in (tmp_path / "out" / "recipe_screen.md").read_text()


@pytest.mark.parametrize("text", ["noequals", "a.b=generator.lr=1", "x=generator.lr", "y=lr=0.1", "=generator.lr=1"])
def test_recipe_screen_rejects_malformed_recipes(text):
    from bench import recipe_screen

    with pytest.raises(SystemExit, match="recipe"):
        recipe_screen.parse_recipe(text)
    assert recipe_screen.parse_recipe("b64=generator.batch_size=64 generator.seed=2") == (
        "b64", ["generator.batch_size=64", "generator.seed=2"])


def test_generator_classes_precision_recall_and_confusion():
    from bench import generator_classes as gc

    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 8, generator=g)
    same = torch.randn(400, 8, generator=g)
    collapsed = 0.05 * torch.randn(400, 8, generator=g)  # every sample near one mode
    shifted = torch.randn(400, 8, generator=g) + 6.0  # another distribution altogether
    p, r = gc.precision_recall(real, same)
    assert p > 0.8 and r > 0.8
    p, r = gc.precision_recall(real, collapsed)
    assert p > 0.9 and r < 0.2  # precise but covering little of the real data
    p, r = gc.precision_recall(real, shifted)
    assert p < 0.05 and r < 0.05
    pc = gc.per_class(torch.tensor([0, 0, 1, 0, 2, 2]), torch.tensor([0, 0, 0, 1, 2, 2]), 3)
    assert np.allclose(pc["on_label"], [2 / 3, 0.0, 1.0]) and pc["count"] == [3, 1, 2]
    assert pc["top_wrong"][:2] == [1, 0] and np.allclose(pc["top_wrong_share"][:2], [1 / 3, 1.0])
