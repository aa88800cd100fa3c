"""The scaling study's numbers and figures, from its committed cells alone (``bench/results/scaling/cells``).

Rules, stated once:

* **Per generator**, a cell's accuracy is the mean over the learner seeds that finished it (only cells that every
  listed seed finished enter a comparison, so no curve mixes seed sets).
* **Best static** = the static (pool, iterations) cell with the highest mean *validation* accuracy. Its test accuracy
  is the target. It sits on a plateau of an axis when a larger pool (more iterations) was measured and did not
  beat it on validation; otherwise the study says it sits on the grid's edge.
* **Reaching the target**: DP's (and the unguided loop's) points — every branch of every budget, x = the samples it
  had (or its iterations), y = mean test accuracy — form a Pareto frontier; the x at which it first reaches the
  target is interpolated linearly in log x between frontier points (``curves.x_to_reach``). Outside the measured
  range the answer is a bound, never an extrapolation.
* ``samples_ratio`` = best static's pool / DP's samples at the target; ``iterations_ratio`` likewise with
  iterations. ``dp_over_static_ceiling_pp`` at an iteration budget b = DP at b (its sample budget chosen on
  validation) − the best static at b over all pools (chosen on validation), in points of test accuracy.
* **Headline** values are computed on the generator-averaged curves; the interval is a bootstrap over generators,
  resampling learner seeds within each (percentile 2.5-97.5; with one generator it covers learner seeds only and
  says so).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .core import stamp, write_result
from .curves import Reach, ratio, x_to_reach

LOOPS = ("dp", "dynamic_unguided")


def load_cells(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(results) / "cells").glob("*.json"))]


# --------------------------------------------------------------------------------------------- per generator
def cell_means(cells: list[dict], pick=None) -> dict:
    """{(method, size, iterations): {"val", "test", "samples", "seeds"}} averaged over learner seeds (``pick``: a
    {seed: weight} resample, default every seed once)."""
    groups = defaultdict(list)
    for c in cells:
        groups[(c["method"], c["size"], c["iterations"])].append(c)
    out = {}
    for k, cs in groups.items():
        w = [(c, (pick or {}).get(c["seed"], 0 if pick else 1)) for c in cs]
        tot = sum(n for _, n in w)
        if not tot:
            continue
        mean = lambda f: sum(c[f] * n for c, n in w) / tot  # noqa: E731
        out[k] = {"val": mean("val_acc"), "test": mean("test_acc"), "samples": mean("samples"),
                  "seeds": sorted(c["seed"] for c in cs)}
    return out


def best_static(means: dict) -> dict | None:
    """The static cell of the highest mean validation accuracy, with where it sits on the grid."""
    st = {k: v for k, v in means.items() if k[0] == "static"}
    if not st:
        return None
    k = max(st, key=lambda k: (st[k]["val"], -k[1], -k[2]))
    _, n, b = k
    larger_pool = [v for (_, n2, b2), v in st.items() if b2 == b and n2 > n]
    longer = [v for (_, n2, b2), v in st.items() if n2 == n and b2 > b]
    return {"size": n, "iterations": b, **st[k],
            "pool_axis": "plateau" if larger_pool else "edge", "iterations_axis": "plateau" if longer else "edge"}


def loop_points(means: dict, method: str) -> list[dict]:
    return [{"size": k[1], "iterations": k[2], **v} for k, v in sorted(means.items()) if k[0] == method]


def ratios(means: dict) -> dict:
    """samples and iterations ratios, and the per-budget ceiling differences, of one set of (generator-averaged or
    single-generator) cell means."""
    best = best_static(means)
    out = {"best_static": best}
    if best is None:
        return out
    for m in LOOPS:
        pts = loop_points(means, m)
        if not pts:
            continue
        xs, its, ys = [p["samples"] for p in pts], [p["iterations"] for p in pts], [p["test"] for p in pts]
        r_s, r_i = x_to_reach(best["test"], xs, ys), x_to_reach(best["test"], its, ys)
        out[m] = {"samples_ratio": ratio(Reach(best["size"]), r_s), "iterations_ratio": ratio(Reach(best["iterations"]), r_i),
                  "samples_to_reach": r_s.__dict__, "iterations_to_reach": r_i.__dict__,
                  "ceiling": ceiling(means, m)}
    return out


def ceiling(means: dict, method: str) -> dict:
    """At each iteration budget: the method (its sample budget chosen on validation) − the best static over all
    pools (chosen on validation), in points of test accuracy."""
    out = {}
    for b in sorted({k[2] for k in means}):
        st = {k: v for k, v in means.items() if k[0] == "static" and k[2] == b}
        lp = {k: v for k, v in means.items() if k[0] == method and k[2] == b}
        if st and lp:
            s = st[max(st, key=lambda k: st[k]["val"])]
            d = lp[max(lp, key=lambda k: lp[k]["val"])]
            out[str(b)] = {"pp": 100 * (d["test"] - s["test"]), "static": s["test"], "loop": d["test"],
                           "loop_samples": d["samples"]}
    return out


def complete(cells: list[dict]) -> list[dict]:
    """The cells of the keys that every learner seed of this generator finished."""
    seeds = {c["seed"] for c in cells}
    by = defaultdict(set)
    for c in cells:
        by[(c["method"], c["size"], c["iterations"])].add(c["seed"])
    return [c for c in cells if by[(c["method"], c["size"], c["iterations"])] == seeds]


def paired_equal_samples(cells: list[dict], method: str) -> dict | None:
    """The method − static at equal samples and equal iterations, paired by learner seed: each branch of the method
    that added samples (a branch that added none is the static run itself, bit for bit) against static of the same
    seed and iterations, read at the branch's sample count on static's pools — the pool of that size, or linear in
    log samples between the two measured pools that bracket it (never extrapolated). Mean over such pairs."""
    st = defaultdict(dict)
    for c in cells:
        if c["method"] == "static":
            st[(c["seed"], c["iterations"])][c["size"]] = c["test_acc"]
    diffs = []
    for c in cells:
        if c["method"] != method or not c.get("rounds"):
            continue
        pools = st.get((c["seed"], c["iterations"]), {})
        n = c["samples"]
        lo = max((p for p in pools if p <= n), default=None)
        hi = min((p for p in pools if p >= n), default=None)
        if lo is None or hi is None:
            continue
        w = 0.0 if hi == lo else math.log(n / lo) / math.log(hi / lo)
        diffs.append(100 * (c["test_acc"] - ((1 - w) * pools[lo] + w * pools[hi])))
    if not diffs:
        return None
    return {"mean_pp": float(np.mean(diffs)), "n_pairs": len(diffs),
            "se_pp": float(np.std(diffs, ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else None}


# ------------------------------------------------------------------------------------------------ aggregate
def averaged(per_gen: dict, picks: dict | None = None) -> dict:
    """Generator-averaged cell means over the keys every generator has (``picks``: {generator: (weight,
    seed-resample)} for the bootstrap; a generator the resample did not draw has weight 0)."""
    pick = {g: (1, None) for g in per_gen} if picks is None else {g: picks.get(g, (0, None)) for g in per_gen}
    means = {g: cell_means(cs, pick[g][1]) for g, cs in per_gen.items() if pick[g][0]}
    weights = {g: pick[g][0] for g in means}
    keys = set.intersection(*(set(m) for m in means.values())) if means else set()
    tot = sum(weights.values())
    return {k: {f: sum(means[g][k][f] * weights[g] for g in means) / tot for f in ("val", "test", "samples")}
            for k in keys}


def bootstrap(per_gen: dict, n: int = 1000, seed: int = 0) -> dict:
    """Percentile intervals of the headline quantities: generators resampled with replacement, learner seeds within
    each resampled generator too."""
    rng = np.random.default_rng(seed)
    gens = sorted(per_gen)
    draws = defaultdict(list)
    for _ in range(n):
        gw = defaultdict(int)
        for g in rng.choice(gens, len(gens)):
            gw[int(g)] += 1
        picks = {}
        for g, w in gw.items():
            seeds = sorted({c["seed"] for c in per_gen[g]})
            sw = defaultdict(int)
            for s in rng.choice(seeds, len(seeds)):
                sw[int(s)] += 1
            picks[g] = (w, dict(sw))
        r = ratios(averaged(per_gen, picks))
        for m in LOOPS:
            if m in r:
                for q in ("samples_ratio", "iterations_ratio"):
                    draws[f"{m}.{q}"].append(r[m][q]["value"])
                last = list(r[m]["ceiling"].values())
                if last:
                    draws[f"{m}.ceiling_pp"].append(last[-1]["pp"])
    return {k: {"ci_low": float(np.percentile(v, 2.5)), "ci_high": float(np.percentile(v, 97.5)), "draws": len(v)}
            for k, v in draws.items()}


def analyse(results: Path, log=print, real: dict | None = None) -> dict | None:
    """Write ``scaling.json``, ``scaling.md`` and the figures from the cells under ``results``."""
    cells = load_cells(results)
    if not cells:
        log(f"no finished cells under {results}/cells yet")
        return None
    per_gen = defaultdict(list)
    real_cells = [c for c in cells if c["generator"] == "real"]
    for c in cells:
        if c["generator"] != "real":
            per_gen[c["generator"]].append(c)
    if real is None and real_cells:  # the real-data learner at each iteration budget (mean over learner seeds)
        rm = cell_means(complete(real_cells))
        real = {str(b): v["test"] for (_, _, b), v in rm.items()}
    ids = {g: sorted({c["generator_id"] for c in cs}) for g, cs in per_gen.items()}
    mixed = {g: v for g, v in ids.items() if len(v) > 1}
    if mixed:
        raise SystemExit(f"cells of one generator seed come from different generators {mixed}: a generator was "
                         f"retrained differently; keep one (bench/results/scaling/cells) and rerun the others")
    per_gen = {g: complete(cs) for g, cs in per_gen.items()}
    rows = {}
    for g, cs in sorted(per_gen.items()):
        means = cell_means(cs)
        r = ratios(means)
        rows[str(g)] = {"generator_id": ids[g][0], "learner_seeds": sorted({c["seed"] for c in cs}),
                        "cells": len(cs), **r,
                        "paired_equal_samples": {m: paired_equal_samples(cs, m) for m in LOOPS},
                        "label_fidelity": fidelity(cs)}
    agg = ratios(averaged(per_gen))
    ci = bootstrap(per_gen) if agg.get("best_static") else {}
    head = {}
    for m in LOOPS:
        if m not in agg:
            continue
        h = {}
        for q in ("samples_ratio", "iterations_ratio"):
            h[q] = {**agg[m][q], **{k: ci.get(f"{m}.{q}", {}).get(k) for k in ("ci_low", "ci_high")}}
        if agg[m]["ceiling"]:
            b, last = list(agg[m]["ceiling"].items())[-1]
            h["dp_over_static_ceiling_pp"] = {"value": last["pp"], "at_iterations": int(b),
                                              **{k: ci.get(f"{m}.ceiling_pp", {}).get(k) for k in ("ci_low", "ci_high")}}
            if real and real.get(b) is not None:
                gap = 100 * (real[b] - last["static"])
                h["gap_closed"] = {"value": last["pp"] / gap if gap > 0 else None, "real_learner": real[b]}
        head[m] = h
    out = {"rules": __doc__.split("Rules, stated once:")[1].strip(), "generators": sorted(per_gen),
           "n_generators": len(per_gen), "headline": head, "real_learner_test": real or {}, "aggregate": agg, "per_generator": rows,
           "written": stamp(),
           "commands": sorted({c["command"] for c in cells}),
           "devices": sorted({c["device"] for c in cells}),
           "cells": [{k: c[k] for k in ("cell", "generator", "seed", "method", "size", "iterations", "samples",
                                         "val_acc", "test_acc", "device")} for c in cells]}
    write_result(Path(results) / "scaling.json", out)
    (Path(results) / "scaling.md").write_text(markdown(out))
    figures(per_gen, out, Path(results))
    log(f"wrote {results}/scaling.json, scaling.md and figures ({len(cells)} cells, {len(per_gen)} generators)")
    return out


def fidelity(cells: list[dict]) -> dict:
    out = {}
    for m in ("static", *LOOPS):
        cs = [c for c in cells if c["method"] == m]
        for f in ("plain_on_label", "added_on_label", "added_ref_entropy", "plain_ref_entropy"):
            v = [c[f] for c in cs if c.get(f) is not None]
            if v:
                out[f"{m}.{f}"] = float(np.mean(v))
    return out


# ------------------------------------------------------------------------------------------------- reports
def _fmt_ratio(r: dict | None) -> str:
    if not r:
        return "–"
    b = "" if r["bound"] == "=" else r["bound"] + " "
    ci = f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if r.get("ci_low") is not None else ""
    return f"{b}{r['value']:.2f}{ci}"


def fmt_paired(pe: dict | None) -> str:
    """'+0.55 (4 branches)' for a paired_equal_samples entry: branches of one trajectory are not independent
    replicates, so no standard error is shown (the spread that counts is across generators)."""
    if not pe:
        return "–"
    return f"{pe['mean_pp']:+.2f} ({pe['n_pairs']} branches)"


def markdown(out: dict) -> str:
    lines = ["# Scaling study (embedded default)", "",
             f"Written by `{' ; '.join(out['commands'])}` from {len(out['cells'])} cells over "
             f"{out['n_generators']} generator(s) ({', '.join(out['devices'])}). Rules: see `bench/scaling_analysis.py`.",
             "", "| method | samples ratio | iterations ratio | − static ceiling (pp) at b |", "|---|---|---|---|"]
    for m, h in out["headline"].items():
        c = h.get("dp_over_static_ceiling_pp")
        lines.append(f"| {m} | {_fmt_ratio(h.get('samples_ratio'))} | {_fmt_ratio(h.get('iterations_ratio'))} | "
                     + (f"{c['value']:+.2f} at {c['at_iterations']}" if c else "–") + " |")
    lines += ["", "## Per generator", "", "| generator | seeds | best static (pool, its, val, test, axes) | "
              "DP samples ratio | DP iterations ratio | DP − static, equal samples (pp) | unguided − static, equal samples (pp) |",
              "|---|---|---|---|---|---|---|"]
    for g, r in out["per_generator"].items():
        b = r.get("best_static")
        bs = (f"{b['size']}, {b['iterations']}, {100 * b['val']:.2f}, {100 * b['test']:.2f}, "
              f"pool {b['pool_axis']} / its {b['iterations_axis']}") if b else "–"
        dp = r.get("dp", {})
        lines.append(f"| {g} ({r['generator_id']}) | {r['learner_seeds']} | {bs} | {_fmt_ratio(dp.get('samples_ratio'))} | "
                     f"{_fmt_ratio(dp.get('iterations_ratio'))} | " + " | ".join(
                         fmt_paired(r["paired_equal_samples"].get(m)) for m in LOOPS) + " |")
    lines += ["", "## Cells", "", "| cell | samples | val | test | device |", "|---|---|---|---|---|"]
    for c in out["cells"]:
        lines.append(f"| {c['cell']} | {c['samples']} | {100 * c['val_acc']:.2f} | {100 * c['test_acc']:.2f} | "
                     f"{c['device']} |")
    return "\n".join(lines) + "\n"


def figures(per_gen: dict, out: dict, results: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(str(g), cell_means(cs)) for g, cs in sorted(per_gen.items())]
    if len(panels) > 1:
        panels.append(("mean over generators", averaged(per_gen)))
    for axis, fname in (("samples", "acc_vs_samples.png"), ("iterations", "acc_vs_iterations.png")):
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, sharey=True)
        for ax, (title, means) in zip(axes[0], panels):
            _panel(ax, means, axis)
            ax.set_title(title if title.startswith("mean") else f"generator seed {title}")
        axes[0][0].set_ylabel("held-out test accuracy")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(results / fname, dpi=110)
        plt.close(fig)


def _panel(ax, means: dict, axis: str) -> None:
    st = {k: v for k, v in means.items() if k[0] == "static"}
    if axis == "samples":  # static: each pool at its best (validation) iteration budget
        sizes = sorted({k[1] for k in st})
        best = [st[max((k for k in st if k[1] == n), key=lambda k: st[k]["val"])] for n in sizes]
        ax.plot(sizes, [100 * v["test"] for v in best], "o-", color="k", label="static (best its per pool)")
    else:  # static: each budget at its best (validation) pool
        its = sorted({k[2] for k in st})
        best = [st[max((k for k in st if k[2] == b), key=lambda k: st[k]["val"])] for b in its]
        ax.plot(its, [100 * v["test"] for v in best], "o-", color="k", label="static (best pool per budget)")
    for m, color in (("dp", "tab:red"), ("dynamic_unguided", "tab:blue")):
        for size in sorted({k[1] for k in means if k[0] == m}):
            pts = sorted((v["samples"] if axis == "samples" else k[2], 100 * v["test"])
                         for k, v in means.items() if k[0] == m and k[1] == size)
            if pts:
                ax.plot(*zip(*pts), "s--" if m == "dynamic_unguided" else "^-", color=color, alpha=0.5 + 0.5 * (
                    size == max(k[1] for k in means if k[0] == m)), label=f"{'DP' if m == 'dp' else 'unguided'} ≤{size}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("generated samples" if axis == "samples" else "training iterations")
    ax.grid(alpha=0.3)
