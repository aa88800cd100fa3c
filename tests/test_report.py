"""The run explains itself: summary.json's comparison (DP − static, DP − unguided) and its sentence, the console's
last lines, the accuracy-vs-samples points, and DP's added samples beside their plain twins in report.md."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

import deliberate.job as job
from conftest import tiny_config
from deliberate.data.splits import HeldOut
from deliberate.generation.base import sampling_kwargs
from deliberate.reports import explain, twins
from deliberate.reports.plots import accuracy_by_pool
from deliberate.reports.report import twin_section
from deliberate.rundir import read_jsonl


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, splits, tiny_generator):
    """A tiny job of DP and static (ω = 0.5: guided rounds), its generator saved to a path that generator.json
    records (as a shipped or cached one would be). The unguided loop's comparison is tested on a summary made by
    hand (the same function)."""
    from dataclasses import replace

    base = tmp_path_factory.mktemp("report")
    gen_dir = base / "generator"
    tiny_generator.save(gen_dir)
    cfg = tiny_config(base, "run.methods=dp,static", "guidance.omega=0.5")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(job, "load_splits", lambda *a, **k: replace(splits, test=HeldOut(splits.test._split)))
        mp.setattr(job, "obtain_generator", lambda *a, **k: (tiny_generator, {
            "generator_id": tiny_generator.generator_id, "source": "test", "path": str(gen_dir)}))
        run_dir = job.run_job(cfg)
    return run_dir, cfg, base


def _copy(run_dir, tmp_path):
    out = tmp_path / run_dir.name
    shutil.copytree(run_dir, out)
    return out


def test_comparison_block_equals_the_summary_and_is_the_console_s_last_lines(tiny_run, tmp_path, capsys):
    from deliberate.cli import main

    run_dir = _copy(tiny_run[0], tmp_path)
    assert main(["report", str(run_dir)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    summary = json.loads((run_dir / "summary.json").read_text())
    m, block = summary["methods"], summary["comparison"]
    assert set(block) == {"static"}
    for name, c in block.items():
        assert c["dp_minus_baseline_points"] == round(100 * (m["dp"]["test_acc"] - m[name]["test_acc"]), 2)
        assert (c["dp_test_acc"], c["baseline_test_acc"]) == (m["dp"]["test_acc"], m[name]["test_acc"])
        assert (c["dp_samples"], c["baseline_samples"]) == (m["dp"]["samples"], m[name]["samples"])
        assert c["test_images"] == 10_000  # the whole t10k file is held out
    assert block["static"]["baseline_samples"] == block["static"]["dp_samples"]  # static is sized by DP
    assert printed[-1] == block["static"]["meaning"]
    report = (run_dir / "report.md").read_text()
    assert block["static"]["meaning"] in report and "| DP − static |" in report
    for fig in ("accuracy", "added_vs_plain"):  # the new figures, embedded and drawn
        assert f"(plots/{fig}.png)" in report and (run_dir / "plots" / f"{fig}.png").stat().st_size > 0


def test_meaning_is_written_from_the_numbers_and_flips_with_the_order():
    """A summary made by hand: DP 85.12 %, static 84.01 % on 10,000 images, 3,000 samples each."""
    summary = {"methods": {"dp": {"test_acc": 0.8512, "samples": 3000}, "static": {"test_acc": 0.8401, "samples": 3000},
                           "dynamic_unguided": {"test_acc": 0.8600, "samples": 2500}}}
    block = explain.comparison(summary, 10_000)
    se = 100 * math.sqrt(0.84565 * (1 - 0.84565) / 10_000)  # 0.3614 points at the mean accuracy
    assert block["static"]["dp_minus_baseline_points"] == 1.11
    assert block["static"]["sampling_error_points"] == round(se, 2) == 0.36
    assert block["static"]["meaning"] == (
        "DP's learner is 1.11 points more accurate on the held-out test set than static's, with the same 3,000 "
        "generated samples; a single run's test accuracy on 10,000 images has a sampling error of about ±0.36 "
        "points, so compare several learner seeds (run.seed) before concluding.")
    assert block["dynamic_unguided"]["meaning"].startswith(
        "DP's learner is 0.88 points less accurate on the held-out test set than the unguided loop's, with 3,000 "
        "generated samples against the unguided loop's 2,500;")
    flipped = {"methods": {"dp": summary["methods"]["static"], "static": summary["methods"]["dp"]}}
    back = explain.comparison(flipped, 10_000)["static"]
    assert back["dp_minus_baseline_points"] == -1.11 and "1.11 points less accurate" in back["meaning"]
    same = {"methods": {"dp": summary["methods"]["dp"], "static": summary["methods"]["dp"]}}
    assert "exactly as accurate" in explain.comparison(same, 10_000)["static"]["meaning"]
    assert explain.comparison({"methods": {"dp": {"test_acc": None, "samples": 1}, "static": {"test_acc": 0.5,
                                                                                               "samples": 1}}}, 10) == {}


def test_accuracy_by_pool_is_the_last_evaluation_of_each_pool_size(tiny_run):
    stats = read_jsonl(tiny_run[0] / "methods" / "dp" / "stats.jsonl")
    sizes, accs = accuracy_by_pool(stats)
    want = {}
    for r in stats:
        want[r["pool"]] = r["val_acc"]  # later evaluations of the same pool overwrite earlier ones
    assert sizes == sorted(want) and accs == [want[s] for s in sizes] and len(sizes) >= 2
    static = read_jsonl(tiny_run[0] / "methods" / "static" / "stats.jsonl")
    assert accuracy_by_pool(static) == ([static[-1]["pool"]], [static[-1]["val_acc"]])


def test_twins_are_plain_samples_of_the_same_label_and_seed(tiny_run, tiny_generator):
    """Twins found in the other methods' pools and twins sampled again both equal a direct ω = 0 call of the
    generator for the guided samples' (label, seed); the guided samples are DP's pool's own."""
    run_dir, cfg, _ = tiny_run
    tw = twins.make_twins(run_dir)
    manifest = read_jsonl(run_dir / "methods" / "dp" / "pool" / "manifest.jsonl")
    guided = {(lab, sd) for r in manifest if r["omega"] > 0 for lab, sd in zip(r["labels"], r["seeds"])}
    assert len(tw.labels) and all((int(y), s) in guided for y, s in zip(tw.labels, tw.seeds))
    assert set(tw.sources) == {"pool:static"} and tw.missing == 0
    direct = tiny_generator.sample(tw.labels, tw.seeds, **sampling_kwargs(cfg.sampling)).images
    assert torch.equal(tw.plain, direct)
    assert not torch.equal(tw.guided, direct)  # ω = 0.5 changed them
    # the learner's readings are of these images
    assert torch.equal(tw.readings["learner"]["plain"][0], twins.final_learner(
        cfg, run_dir, 10, 1).predict(direct).argmax(-1))


def test_twins_are_sampled_only_on_request_with_the_run_s_generator(tiny_run, tmp_path, tiny_generator):
    run_dir = _copy(tiny_run[0], tmp_path)
    shutil.rmtree(run_dir / "methods" / "static")  # no pool holds a twin now
    without = twins.make_twins(run_dir)
    assert len(without.labels) == 0 and without.missing > 0
    assert "--sample-twins" in "\n".join(twin_section(without, run_dir, tmp_path))
    tw = twins.make_twins(run_dir, sample=True)  # the generator from generator.json's path
    cfg = tiny_run[1]
    assert set(tw.sources) == {"sampled"} and tw.missing == 0
    assert torch.equal(tw.plain, tiny_generator.sample(tw.labels, tw.seeds, **sampling_kwargs(cfg.sampling)).images)


def test_choose_takes_the_last_rounds_first_and_skips_replaced_samples():
    recs = [{"omega": 0.0, "start": 0, "round": 0, "labels": [0, 1], "seeds": [0, 1]},
            {"omega": 0.5, "start": 2, "round": 1, "labels": [0, 1, 0, 1], "seeds": [2, 3, 4, 5]},
            {"omega": 0.5, "start": 6, "round": 2, "labels": [0, 1, 0, 1], "seeds": [6, 7, 8, 9], "replaced": [1]}]
    guided, replaced = twins._guided(recs)
    assert replaced == 1 and [g["seed"] for g in guided] == [2, 3, 4, 5, 6, 8, 9]
    assert [(g["label"], g["seed"]) for g in twins.choose(guided, 2)] == [(0, 6), (0, 8), (1, 3), (1, 9)]


def test_the_reference_classifier_is_read_only_where_cached(tiny_run, tmp_path, splits):
    from deliberate.evaluation import obtain_reference

    run_dir, cfg, base = tiny_run
    ref_dir = base / "reference"
    tw = twins.make_twins(run_dir)
    assert not ref_dir.exists() and tw.reference_info is None and "reference" not in tw.readings  # none trained
    assert "no reference classifier cached" in "\n".join(twin_section(tw, run_dir, tmp_path))
    ref, info = obtain_reference(cfg, splits, iterations=5, cache_dir=ref_dir)
    tw = twins.make_twins(run_dir)
    assert tw.reference_info["key"] == info["key"] and tw.reference_info["source"] == "cache"
    assert torch.equal(tw.readings["reference"]["guided"][0], ref.predict(tw.guided).argmax(-1))
    text = "\n".join(twin_section(tw, run_dir, tmp_path))
    assert "no reference classifier cached" not in text and "reference classifier (real data, 5 iterations" in text
    assert (tmp_path / "added_vs_plain.png").stat().st_size > 0
