"""The README's results table, generated from committed result files only.

    python -m bench headline            # prints the table and writes bench/results/headline.md

Each row names its result file; each file names the command that wrote it. tests/test_readme.py checks that the
README holds exactly this table, so a number in it cannot drift from its file.
"""
from __future__ import annotations

import json
from pathlib import Path

from .core import RESULTS, STUDIES

# (label, generator and setting, result file relative to bench/results, paired key)
ROWS = [
    ("batch-128 generator, seed 0, λ = 3", "job_seeds.json", "dp[entropy-paper0.01] − static"),
    ("same, another plain sample stream", "job_seeds_stream1/job_seeds.json", "dp[entropy-paper0.01] − static"),
    ("batch-128 generator, seed 0, λ = 2", "job_seeds_cfg2/job_seeds.json", "dp[g0-cfg2-dp] − static"),
    ("batch-128 generator, seed 1, λ = 3", "job_seeds_gen_seed1/job_seeds.json", "dp[g1] − static"),
]


def _static(methods: dict) -> dict:
    return methods["static"]


def render(results: Path = RESULTS) -> str:
    lines = ["| setting (default job's scale: `cnn_small`, 2,000 iterations, 2,500–3,000 samples) | DP test % | "
             "static test % | DP − static, paired (points) | learner seeds | file |", "|---|---|---|---|---|---|"]
    for label, rel, key in ROWS:
        d = json.loads((results / rel).read_text())
        p = d["paired"][key]
        dp = d["methods"][key.split(" − ")[0]]
        st = _static(d["methods"])
        lines.append(f"| {label} | {100 * dp['test_mean']:.2f} | {100 * st['test_mean']:.2f} | "
                     f"{p['mean_pp']:+.2f} ± {p['se_pp']:.2f} | {len(p['seeds'])} | `bench/results/{rel}` |")
    return "\n".join(lines) + "\n"


def render_scaling(results: Path = RESULTS) -> str:
    """The scaling study's table (bench/results/scaling/scaling.json): per generator, static's best (chosen on
    validation, with where it sits on the grid), DP's samples and iterations ratios at it, and DP's and the unguided
    loop's difference to static at equal samples and iterations; then the generator-averaged ratios."""
    from .scaling_analysis import _fmt_ratio, fmt_paired

    s = json.loads((results / "scaling" / "scaling.json").read_text())
    lines = ["| generator (shipped recipe, seed) | learner seeds | best static: pool, iterations (grid position) | "
             "static test % | DP samples ratio | DP iterations ratio | DP − static at equal samples (points) | "
             "unguided − static at equal samples (points) |", "|---|---|---|---|---|---|---|---|"]
    for g, row in sorted(s["per_generator"].items()):
        b, dp, pe = row.get("best_static"), row.get("dp", {}), row.get("paired_equal_samples", {})
        if not b:
            continue
        where = "plateau" if b["pool_axis"] == b["iterations_axis"] == "plateau" else (
            f"pool {b['pool_axis']}, iterations {b['iterations_axis']}")
        lines.append(f"| {g} | {len(row['learner_seeds'])} | {b['size']:,}, {b['iterations']:,} ({where}) | "
                     f"{100 * b['test']:.2f} | {_fmt_ratio(dp.get('samples_ratio'))} | "
                     f"{_fmt_ratio(dp.get('iterations_ratio'))} | {fmt_paired(pe.get('dp'))} | "
                     f"{fmt_paired(pe.get('dynamic_unguided'))} |")
    h = s["headline"].get("dp")
    if h and s["n_generators"] > 1:
        lines.append(f"| all {s['n_generators']} (averaged curves, 95% bootstrap over generators) | | | | "
                     f"{_fmt_ratio(h.get('samples_ratio'))} | {_fmt_ratio(h.get('iterations_ratio'))} | | |")
    return "\n".join(lines) + "\n"


@STUDIES.register("headline")
def main(argv: list[str]) -> int:
    """The README's results table, from committed result files (bench/results/headline.md)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench headline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(RESULTS / "headline.md"))
    args = p.parse_args(argv)
    table = render() + "\n" + render_scaling()
    Path(args.out).write_text(table)
    print(table)
    print(f"wrote {args.out}")
    return 0
