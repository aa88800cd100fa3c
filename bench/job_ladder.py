"""Static generation's accuracy curve at the default job's scale, and the paper's equal-accuracy samples ratio there.

    python -m bench job-ladder run [--sizes 1000,3000,6000,12000] [--seeds 0,1] [overrides]
    python -m bench job-ladder table [--job-seeds bench/results/job_seeds.json]

``run``: static at each pool size (the first M samples of the plain stream: sample i has label i mod C and seed i,
so every size is a prefix of the largest, run first, whose shards the smaller ones copy) for each learner seed, with
the default job's settings plus any overrides, each a run directory of the benchmark harness (``bench/harness.py``)
under ``--work`` (a rerun skips the finished ones); then the held-out test split is read once for every run.

``table``: the static curve (mean ± SE over seeds per size) and, for each method of ``job-seeds`` (DP
variants, the unguided loop), the static pool size needed to reach its mean test accuracy (log-x interpolation on
the curve's frontier; a bound where the curve does not reach it, never an extrapolation) divided by its mean pool
size: the paper's ``samples_ratio`` (3.4x on ImageNet-100) at this scale. Writes ``bench/results/job_ladder.{json,md}``
and ``bench/results/plots/job_ladder.png``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .core import RESULTS, ROOT, STUDIES, WORK
from .curves import paired_pp, ratio, reach_dict, se, x_to_reach


def run(args) -> int:
    from .harness import Bench, RunSpec

    mode = SimpleNamespace(name="job_ladder", base=["run.progress=false", *args.overrides], generator=[],
                           reference_iterations=2000, ood_size=1000)
    bench = Bench(mode, Path(args.work), device=args.device, progress=False)
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        for m in sorted(sizes, reverse=True):  # largest first: it generates every sample the smaller ones use
            bench.run(RunSpec("static", (f"run.seed={seed}",), budget=m, tags=("ladder",)))
    ev = bench.evaluate()
    points = []
    for rid, rec in sorted(bench.records.items()):
        points.append({"run": rid, "seed": rec["seed"], "samples": rec["samples"], "val_acc": rec["val_acc"],
                       "test_acc": ev["runs"][rid]["test_acc"], "label_fidelity": rec["label_fidelity"],
                       "wall_seconds": rec["wall_seconds"], "generation_seconds": rec["seconds"].get("generation")})
    command = "python -m bench job-ladder " + " ".join(args.argv)
    old = Path(args.work) / "ladder.json"  # a later run into the same work dir adds points: keep them and every command
    prev = json.loads(old.read_text()) if old.exists() else {}
    if prev and prev["generator"] != bench.gen_info.get("generator_id"):
        raise SystemExit(f"{old} holds points of generator {prev['generator']}, this run uses "
                         f"{bench.gen_info.get('generator_id')}: use another --work")
    commands = [c for c in prev.get("commands", [prev["command"]] if prev else []) if c != command] + [command]
    ids = {p["run"] for p in points}
    points = sorted([p for p in prev.get("points", []) if p["run"] not in ids] + points,
                    key=lambda p: (p["samples"], p["seed"]))
    out = {"command": "; ".join(commands), "commands": commands, "overrides": args.overrides,
           "generator": bench.gen_info.get("generator_id"), "points": points,
           "reference_test_acc": ev["reference"]["test_acc"], "test_reads": prev.get("test_reads", []) + ev["test_reads"]}
    Path(args.work).mkdir(parents=True, exist_ok=True)
    (Path(args.work) / "ladder.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(points, indent=1))
    return 0


def static_curve(points: list[dict]) -> list[dict]:
    by = {}
    for p in points:
        by.setdefault(p["samples"], []).append(p)
    return [{"samples": m, "seeds": sorted(p["seed"] for p in ps),
             "test_mean": float(np.mean([p["test_acc"] for p in ps])), "test_se": se([p["test_acc"] for p in ps]),
             "val_mean": float(np.mean([p["val_acc"] for p in ps])),
             "label_fidelity": float(np.mean([p["label_fidelity"] for p in ps]))} for m, ps in sorted(by.items())]


def samples_ratios(curve: list[dict], methods: dict) -> dict:
    """For each method (mean test accuracy, mean pool size): static samples needed to reach it ÷ its samples."""
    xs = [c["samples"] for c in curve]
    ys = [c["test_mean"] for c in curve]
    out = {}
    for name, m in methods.items():
        n = float(np.mean(m["samples"]))
        need = x_to_reach(m["test_mean"], xs, ys)
        out[name] = {"test_mean": m["test_mean"], "test_se": m["test_se"], "val_mean": m["val_mean"], "samples": n,
                     "static_samples_needed": reach_dict(need), "samples_ratio": ratio(need, n)}
    return out


def paired_with_ladder(points: list[dict], methods: dict) -> dict:
    """Each method minus the ladder's static of the same learner seed and the same pool size (held-out test, points):
    equal samples without interpolation, where the ladder has that size."""
    static = {(p["seed"], p["samples"]): p["test_acc"] for p in points}
    out = {}
    for name, m in methods.items():
        per_seed = sorted((int(s), r) for s, r in m["per_seed"].items())  # JSON keys are strings
        pairs = [(s, r["test_acc"] - static[(s, r["samples"])], r["samples"]) for s, r in per_seed
                 if (s, r["samples"]) in static]
        if pairs:
            out[name] = paired_pp([s for s, _, _ in pairs], [d for _, d, _ in pairs]) | {
                "samples": [n for _, _, n in pairs]}
    return out


def headline(seeds: dict, ratios: dict, chosen: str | None) -> dict:
    """The benchmark's headline keys at the job's scale, for the DP variant chosen on validation: its samples ratio,
    its paired held-out difference to the unguided loop and to static (same learner seeds), and the label fidelity of
    its plain and added samples."""
    if chosen not in ratios:
        return {"method": None}
    m = seeds["methods"][chosen]
    pu = seeds["paired"].get(f"{chosen} − dynamic_unguided", {})
    ps = seeds["paired"].get(f"{chosen} − static", {})
    return {"method": chosen, "samples_ratio": ratios[chosen]["samples_ratio"],
            "dp_minus_unguided_pp": pu.get("mean_pp"), "dp_minus_unguided_se": pu.get("se_pp"),
            "dp_minus_unguided_seeds": pu.get("seeds"), "dp_minus_static_pp": ps.get("mean_pp"),
            "dp_minus_static_se": ps.get("se_pp"), "dp_minus_static_seeds": ps.get("seeds"),
            "added_fidelity": m["added_fidelity"], "plain_fidelity": m["plain_fidelity"]}


def table(args) -> int:
    ladder = json.loads((Path(args.work) / "ladder.json").read_text())
    ladder["command"] = ladder["command"].replace(str(ROOT) + "/", "")  # paths relative to the repository
    seeds = json.loads(Path(args.job_seeds).read_text())
    curve = static_curve(ladder["points"])
    methods = {k: v for k, v in seeds["methods"].items() if k != "static"}
    ratios = samples_ratios(curve, methods)
    paired = paired_with_ladder(ladder["points"], methods)
    chosen = seeds.get("chosen_on_validation")
    out = {"command": ladder["command"], "table_command": "python -m bench job-ladder " + " ".join(args.argv),
           "job_seeds_command": seeds["command"], "generator": ladder["generator"], "static_curve": curve,
           "methods": ratios, "paired_with_ladder_static": paired, "chosen_on_validation": chosen,
           "headline": headline(seeds, ratios, chosen)}
    res = Path(args.out)
    (res / "plots").mkdir(parents=True, exist_ok=True)
    (res / "job_ladder.json").write_text(json.dumps(out, indent=1))

    def bound(r):
        return f"{'' if r['bound'] == '=' else r['bound'] + ' '}{r['value']:,.0f}"

    lines = [f"Static curve: `{ladder['command']}`; methods: `{seeds['command']}` (bench/results/job_seeds.md). "
             f"Held-out test accuracy; static sizes are prefixes of one plain stream.", "",
             "| static pool | seeds | test % (mean ± SE) | val % | label fidelity % |", "|---|---|---|---|---|"]
    for c in curve:
        lines.append(f"| {c['samples']:,} | {len(c['seeds'])} | {100 * c['test_mean']:.2f} ± {100 * c['test_se']:.2f} | "
                     f"{100 * c['val_mean']:.2f} | {100 * c['label_fidelity']:.1f} |")
    lines += ["", "| method | test % (mean ± SE) | val % | mean samples | static samples to match | samples ratio |",
              "|---|---|---|---|---|---|"]
    for n, r in ratios.items():
        sr = r["samples_ratio"]
        lines.append(f"| {n}{' (chosen on val)' if n == chosen else ''} | {100 * r['test_mean']:.2f} ± "
                     f"{100 * r['test_se']:.2f} | {100 * r['val_mean']:.2f} | {r['samples']:,.0f} | "
                     f"{bound(r['static_samples_needed'])} | {'' if sr['bound'] == '=' else sr['bound'] + ' '}"
                     f"{sr['value']:.2f} |")
    if paired:
        lines += ["", "| method − ladder static of the same seed and pool size | seeds | samples | mean (points) | SE |",
                  "|---|---|---|---|---|"]
        for n, p in paired.items():
            err = f"{p['se_pp']:.2f}" if len(p["seeds"]) > 1 else "–"
            lines.append(f"| {n} | {', '.join(map(str, p['seeds']))} | {', '.join(f'{x:,}' for x in p['samples'])} | "
                         f"{p['mean_pp']:+.2f} | {err} |")
    (res / "job_ladder.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.errorbar([c["samples"] for c in curve], [100 * c["test_mean"] for c in curve],
                yerr=[100 * np.nan_to_num(c["test_se"]) for c in curve], marker="o", color="k", capsize=3,
                label="static (ladder)")
    curves = {}  # one variant at several budgets (``name@budget``): joined by a line, DP's own curve
    for n, r in ratios.items():
        curves.setdefault(n.split("@")[0].rstrip("]"), []).append((r["samples"], 100 * r["test_mean"]))
    for pts in (sorted(v) for v in curves.values() if len(v) > 1):
        ax.plot([x for x, _ in pts], [y for _, y in pts], color="0.6", linestyle="--", linewidth=1)
    for k, (n, r) in enumerate(ratios.items()):
        ax.errorbar([r["samples"]], [100 * r["test_mean"]], yerr=[100 * np.nan_to_num(r["test_se"])], marker="s^vD<>"[k % 6],
                    linestyle="none", capsize=3, label=n + (" (chosen)" if n == chosen else ""))
    ax.set_xscale("log")
    ax.set_xlabel("generated samples in the pool")
    ax.set_ylabel("held-out test accuracy (%)")
    ax.set_title("Default job scale (2,000 iterations): static curve vs DP")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(res / "plots" / "job_ladder.png", dpi=120)
    return 0


@STUDIES.register("job-ladder")
def main(argv: list[str]) -> int:
    """Static's accuracy curve at the default job's scale, and each job-seeds method's equal-accuracy samples ratio."""
    ap = argparse.ArgumentParser(prog="python -m bench job-ladder", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run")
    r.add_argument("--sizes", default="1000,3000,6000,12000")
    r.add_argument("--seeds", default="0,1")
    r.add_argument("--device", default=None, help="sets run.device (default: the config's, auto)")
    r.add_argument("overrides", nargs="*")
    t = sub.add_parser("table")
    t.add_argument("--job-seeds", default=str(RESULTS / "job_seeds.json"))
    t.add_argument("--out", default=str(RESULTS))
    for p in (r, t):
        p.add_argument("--work", default=str(WORK / "job_ladder"))
    args = ap.parse_args(argv)
    args.argv = argv
    return run(args) if args.what == "run" else table(args)
