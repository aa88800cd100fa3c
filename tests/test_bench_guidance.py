"""bench/analysis.guidance_headline on hand-made runs: DP minus the unguided loop at equal samples, its SE, and the
label fidelity of plain vs guided samples."""
from __future__ import annotations

import math

import pytest

from bench.analysis import guidance_headline


def run(rid, method, tags, seed, acc, samples, rounds=(), overrides=()):
    return rid, {"id": rid, "method": method, "tags": list(tags), "seed": seed, "overrides": list(overrides),
                 "budget": None, "setting": {}, "test_acc": acc, "val_acc": acc, "samples": samples,
                 "generated": samples, "guided": 0, "iterations": 100, "label_fidelity": 0.9, "rounds": len(rounds),
                 "compute_seconds": 1.0, "measured_seconds": 1.0, "round_stats": list(rounds)}


def test_dp_minus_unguided_interpolates_at_dps_samples_and_weights_fidelity_by_count():
    rs = [{"round": 0, "count": 100, "label_fidelity": 0.9}, {"round": 1, "count": 50, "label_fidelity": 0.6}]
    runs = dict([
        run("dp0", "dp", ["dp_key"], 0, 0.80, 150, rs, ["p=1"]),
        run("dp1", "dp", ["dp_key"], 1, 0.82, 150, [{"round": 0, "count": 100, "label_fidelity": 0.8},
                                                    {"round": 1, "count": 50, "label_fidelity": 0.7}], ["p=1"]),
        # each seed's unguided curve: seed 0 0.70 at 100 samples, 0.77 at 200; seed 1 0.74 and 0.79
        run("u100a", "dynamic_unguided", ["dynamic_curve"], 0, 0.70, 100, overrides=["a=1"]),
        run("u100b", "dynamic_unguided", ["dynamic_curve"], 1, 0.74, 100, overrides=["a=1"]),
        run("u200a", "dynamic_unguided", ["dynamic_curve", "dynamic_key"], 0, 0.77, 200, overrides=["a=2"]),
        run("u200b", "dynamic_unguided", ["dynamic_curve", "dynamic_key"], 1, 0.79, 200, overrides=["a=2"]),
    ])
    h = guidance_headline(runs, {"dp_key": {"id": "dp0"}})
    # paired by seed: DP minus its own seed's unguided curve read at DP's 150 samples, linear in log x
    f = math.log2(150 / 100)
    d = [100 * (0.80 - (0.70 + 0.07 * f)), 100 * (0.82 - (0.74 + 0.05 * f))]
    assert h["dp_minus_unguided_pp"] == pytest.approx((d[0] + d[1]) / 2)
    assert h["dp_minus_unguided_se"] == pytest.approx(abs(d[0] - d[1]) / 2)  # SD/sqrt(2) of two differences
    assert h["plain_fidelity"] == pytest.approx((90 + 80) / 200)
    assert h["added_fidelity"] == pytest.approx((30 + 35) / 100)


def test_outside_the_unguided_curve_the_same_setting_is_used():
    runs = dict([run("dp0", "dp", ["dp_key"], 0, 0.80, 500, overrides=["p=1"]),
                 run("u", "dynamic_unguided", ["dynamic_curve", "dynamic_key"], 0, 0.75, 300, overrides=["a=2"])])
    h = guidance_headline(runs, {"dp_key": {"id": "dp0"}})
    assert h["dp_minus_unguided_pp"] == pytest.approx(5.0)
    assert h["dp_minus_unguided_se"] is None  # single seeds: no standard error
    assert "same setting" in h["dp_minus_unguided_detail"]["unguided_from"]


def test_criteria_are_compared_at_equal_entropy_gain():
    from bench.criteria_sweep import fidelity_at_gain

    rows = [{"entropy_gain": 0.0, "label_fidelity": 0.98}, {"entropy_gain": 0.4, "label_fidelity": 0.90},
            {"entropy_gain": 1.2, "label_fidelity": 0.50}]
    assert fidelity_at_gain(rows, 0.2) == pytest.approx(0.94)
    assert fidelity_at_gain(rows[::-1], 0.8) == pytest.approx(0.70)  # order of the rows does not matter
    assert fidelity_at_gain(rows, 1.5) is None and fidelity_at_gain(rows[:1], 0.1) is None  # not bracketed


def test_job_ladder_reads_the_static_samples_a_method_needs_off_the_seed_mean_curve():
    from bench.job_ladder import samples_ratios, static_curve

    # static: 80 % at 1,000, 82 % at 4,000 (seed means of 79/81 and 81.5/82.5), 84 % at 16,000
    pts = [{"seed": s, "samples": m, "val_acc": a, "test_acc": a, "label_fidelity": 0.99}
           for m, accs in ((1000, (0.79, 0.81)), (4000, (0.815, 0.825)), (16000, (0.84, 0.84))) for s, a in enumerate(accs)]
    curve = static_curve(pts)
    assert [c["samples"] for c in curve] == [1000, 4000, 16000]
    assert curve[0]["test_mean"] == pytest.approx(0.80) and curve[0]["test_se"] == pytest.approx(0.01)
    methods = {"dp": {"test_mean": 0.83, "test_se": 0.001, "val_mean": 0.83, "samples": [2000, 2000]},
               "high": {"test_mean": 0.85, "test_se": 0.001, "val_mean": 0.85, "samples": [3000]},
               "low": {"test_mean": 0.79, "test_se": 0.001, "val_mean": 0.79, "samples": [3000]}}
    r = samples_ratios(curve, methods)
    # 83 % lies halfway (in accuracy) between 4,000 and 16,000: log-x interpolation gives 8,000 samples, ratio 4
    assert r["dp"]["static_samples_needed"] == {"value": pytest.approx(8000.0), "bound": "="}
    assert r["dp"]["samples_ratio"] == {"value": pytest.approx(4.0), "bound": "="}
    assert r["high"]["samples_ratio"]["bound"] == ">"  # above the whole curve: a bound, not an extrapolation
    assert r["low"]["samples_ratio"]["bound"] == "<="


def test_job_ladder_headline_is_the_variant_chosen_on_validation():
    from bench.job_ladder import headline

    seeds = {"methods": {"dp[a]": {"added_fidelity": 0.97, "plain_fidelity": 0.99}},
             "paired": {"dp[a] − dynamic_unguided": {"mean_pp": 1.0, "se_pp": 0.1, "seeds": [0, 1]},
                        "dp[a] − static": {"mean_pp": 0.8, "se_pp": 0.3, "seeds": [0]}}}
    ratios = {"dp[a]": {"samples_ratio": {"value": 2.0, "bound": "="}}, "dp[b]": {"samples_ratio": {"value": 9.0}}}
    h = headline(seeds, ratios, "dp[a]")
    assert h["samples_ratio"]["value"] == 2.0 and h["dp_minus_unguided_pp"] == 1.0 and h["dp_minus_static_se"] == 0.3
    assert (h["added_fidelity"], h["plain_fidelity"]) == (0.97, 0.99)
    assert headline(seeds, ratios, None) == {"method": None}


def test_job_ladder_pairs_a_method_with_the_static_of_its_own_seed_and_pool_size():
    from bench.job_ladder import paired_with_ladder

    pts = [{"seed": 0, "samples": 3000, "test_acc": 0.80}, {"seed": 1, "samples": 3000, "test_acc": 0.82},
           {"seed": 0, "samples": 6000, "test_acc": 0.90}, {"seed": 2, "samples": 6000, "test_acc": 0.50}]
    # JSON per-seed keys are strings; seed 2 has no ladder run at 3,000 and is left out, not paired with another size
    methods = {"dp": {"per_seed": {"0": {"samples": 3000, "test_acc": 0.81}, "1": {"samples": 3000, "test_acc": 0.84},
                                   "2": {"samples": 3000, "test_acc": 0.99}}},
               "dp@big": {"per_seed": {"0": {"samples": 6000, "test_acc": 0.91}}},
               "none": {"per_seed": {"5": {"samples": 3000, "test_acc": 0.9}}}}
    p = paired_with_ladder(pts, methods)
    assert p["dp"]["seeds"] == [0, 1] and p["dp"]["mean_pp"] == pytest.approx(1.5)
    assert p["dp"]["se_pp"] == pytest.approx(0.5)
    assert p["dp@big"]["mean_pp"] == pytest.approx(1.0) and "none" not in p


def test_job_seeds_budget_variants_scale_the_pool_and_never_win_the_choice():
    from bench import job_seeds

    ov = job_seeds.variant_overrides("entropy-paper0.01@n2000")
    assert ov[:len(job_seeds.VARIANTS["entropy-paper0.01"])] == job_seeds.VARIANTS["entropy-paper0.01"]
    assert "practice.initial_samples=2000" in ov and "practice.add_samples=1000" in ov
    assert job_seeds.variant_overrides("projected") == job_seeds.VARIANTS["projected"]
    for bad in ("nope", "projected@n7"):
        with pytest.raises(SystemExit, match="unknown variant"):
            job_seeds.variant_overrides(bad)
    dps = {"dp[a]": {"val_mean": 0.84}, "dp[b]": {"val_mean": 0.85}, "dp[b@n2000]": {"val_mean": 0.87}}
    assert job_seeds.chosen_on_validation(dps) == "dp[b]"
    assert job_seeds.chosen_on_validation({"dp[b@n2000]": {"val_mean": 0.9}}) is None
