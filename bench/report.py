"""Outputs of the benchmark: ``latest.json``, the plots, ``results.md`` and ``summary.md``, all generated from the
result dict (``python -m bench report`` regenerates them from a ``latest.json``). The README is written by people:
nothing here touches it."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from .core import RESULTS, STUDIES

COLORS = {"static": "C0", "dp": "C3", "dynamic_unguided": "C2", "prune": "C1", "prune_random": "C4", "reference": "k"}
LABELS = {"static_samples": ("static", "C0"), "dp_curve": ("DP", "C3"), "dynamic_curve": ("dynamic-unguided", "C2"),
          "prune_curve": ("oversample-then-prune", "C1"), "prune_random": ("prune (random keep)", "C4")}
ITER_LABELS = {"static_iters": ("static (largest pool)", "C0"), "dp_iters": ("DP (key setting)", "C3")}


def _pct(v, std=None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{100 * v:.2f}" + (f" ± {100 * std:.2f}" if std else "")


def _xy(pts, x, y="test_acc"):
    pts = sorted([p for p in pts if p[x]["mean"] is not None and p[y]["mean"] is not None], key=lambda p: p[x]["mean"])
    return (np.array([p[x]["mean"] for p in pts]), np.array([p[y]["mean"] for p in pts]),
            np.array([p[y]["std"] or 0.0 for p in pts]))


def plot_curves(res: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    P = res["points"]
    ref = res["reference_classifier"].get("test_acc")
    files = []
    for name, x, xlabel, tags in (
            ("acc_vs_samples.png", "generated", "generated samples (log)", list(LABELS)),
            ("acc_vs_compute.png", "compute_seconds", "compute, seconds (modelled from unit costs, log)", list(LABELS)),
            ("acc_vs_iterations.png", "iterations", "training iterations (log)", ["static_iters", "dp_iters"])):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for tag in tags:
            pts = P.get(tag, [])
            if not pts:
                continue
            label, color = LABELS[tag] if tag in LABELS else ITER_LABELS[tag]
            xs, ys, es = _xy(pts, x)
            ax.errorbar(xs, ys, yerr=es, fmt="o-", color=color, label=label, capsize=3, ms=4)
        if ref is not None:
            ax.axhline(ref, color="k", ls=":", lw=1, label="real-data reference")
        ax.set_xscale("log")
        ax.set(xlabel=xlabel, ylabel="held-out test accuracy", title=name[:-4].replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)

    # ω sweep with label fidelity and entropy beside it.
    sw = sorted(P.get("omega_sweep", []), key=lambda p: _omega(p))
    if sw:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        om = [_omega(p) for p in sw]
        axes[0].plot(om, [p["val_acc"]["mean"] for p in sw], "o-", label="validation")
        axes[0].plot(om, [p["test_acc"]["mean"] for p in sw], "s-", label="held-out test")
        axes[0].set(xlabel="ω", ylabel="accuracy", title="ω sweep (DP base setting; ω = 0: dynamic-unguided)")
        fid, ent = [], []
        for p in sw:
            rs = [s for rid in p["ids"] for s in res["runs"][rid]["round_stats"] if s["round"] > 0]
            fid.append(np.mean([s["label_fidelity"] for s in rs]) if rs else np.nan)
            ent.append(np.mean([s["entropy_reference"] for s in rs]) if rs else np.nan)
        axes[1].plot(om, fid, "o-", color="C2", label="label fidelity of added samples")
        ax2 = axes[1].twinx()
        ax2.plot(om, ent, "s--", color="C1", label="entropy under the reference (nats)")
        axes[1].set(xlabel="ω", ylabel="label fidelity", title="added samples: fidelity and entropy")
        ax2.set_ylabel("mean entropy (reference classifier)")
        for a in axes:
            a.set_xscale("symlog", linthresh=min([o for o in om if o > 0] or [0.01]))
            a.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        h1, l1 = axes[1].get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        axes[1].legend(h1 + h2, l1 + l2, fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "omega_sweep.png", dpi=110)
        plt.close(fig)
        files.append("omega_sweep.png")

    # OOD per corruption.
    rows = ood_rows(res)
    if rows:
        kinds = ["clean"] + list(res["ood"]["corruptions"])
        fig, ax = plt.subplots(figsize=(10, 4.2))
        w = 0.8 / len(rows)
        for i, (label, vals) in enumerate(rows):
            ax.bar(np.arange(len(kinds)) + i * w - 0.4 + w / 2, [vals.get(k) or 0 for k in kinds], w, label=label)
        ax.set_xticks(np.arange(len(kinds)), kinds)
        ax.set(ylabel="accuracy", title="held-out test and corrupted copies (OOD)")
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(out / "ood.png", dpi=110)
        plt.close(fig)
        files.append("ood.png")

    # Guidance schedules: cost against accuracy.
    ps = res["headline"]["guidance_cost_ratio_detail"]["per_schedule"]
    if ps:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, v in ps.items():
            if v["cost_ratio"] is None or v["test_acc"] is None:
                continue
            ax.plot(v["cost_ratio"], v["test_acc"], "o", color="C3")
            ax.annotate(name, (v["cost_ratio"], v["test_acc"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
        ax.axvline(1.5, color="gray", ls=":", lw=1)
        ax.set(xlabel="guided image cost ÷ plain image cost", ylabel="held-out test accuracy",
               title="guidance schedules")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "guidance_schedules.png", dpi=110)
        plt.close(fig)
        files.append("guidance_schedules.png")
    return files


def _omega(p) -> float:
    return float(p["setting"].get("guidance.omega", 0.0)) if p["method"] == "dp" else 0.0


def ood_rows(res: dict) -> list[tuple[str, dict]]:
    P = res["points"]
    rows = [("real-data reference", {"clean": res["reference_classifier"]["test_acc"], **res["reference_classifier"]["ood"]})]

    def row(label, p):
        rows.append((label, {"clean": p["test_acc"]["mean"], **{k: v["mean"] for k, v in p["ood"].items()}}))

    st = P.get("static_samples", [])
    if st:  # fixed choices, not the best on test: the largest static pool and the replicated prune point
        big = max(st, key=lambda p: p["samples"]["mean"])
        row(f"static largest pool ({big['samples']['mean']:.0f})", big)
    for tag, label in (("static_matched", "static matched"), ("dp_key", "DP key"), ("dynamic_key", "dynamic key")):
        if P.get(tag):
            row(label, P[tag][0])
    pr = [p for p in P.get("prune_curve", []) if p["method"] == "prune"]
    if pr:
        rep = max(pr, key=lambda p: (p["test_acc"]["n"], -int(p["setting"].get("practice.oversample", 1))))
        row(f"prune k={rep['setting'].get('practice.oversample', 1)}", rep)
    for p in P.get("prune_random", [])[:1]:
        row(f"prune random keep k={p['setting'].get('practice.oversample', 1)}", p)
    return rows


def results_md(res: dict, plots: list[str]) -> str:
    H, G, C = res["headline"], res["goals"], res["choices"]
    L = [f"# Scaling benchmark results ({res['mode']} mode)", "",
         f"> {res['note']}. Regenerate with `{res['command']}` (this invocation "
         f"{res['seconds']['this_invocation'] / 60:.1f} min, the training runs alone {res['seconds']['all_runs_wall'] / 60:.1f} min, on "
         f"{res['machine']['threads']} threads, {res['machine']['device']}). Generated from `latest.json`; "
         "do not edit by hand.", "",
         "## Headline ratios", "",
         "| ratio | value | goal | status | computed at |", "|---|---|---|---|---|"]
    d = H["samples_ratio_detail"]
    at = {"samples_ratio": f"DP test {_pct(d['dp_test_acc'])} with {d['dp_samples']:.0f} samples; at best static "
                           f"({_pct(d['at_best_static']['best_static_test_acc'])}, "
                           f"{d['at_best_static']['best_static_samples']:.0f} samples): "
                           f"{_fmt(d['at_best_static']['ratio'], d['at_best_static']['bound'])}"}
    d = H["iterations_ratio_detail"]
    at["iterations_ratio"] = (f"DP test {_pct(d['dp_test_acc'])} at {d['dp_iterations']:.0f} iterations; static on "
                              f"{d['static_pool']} samples; at best static ({_pct(d['at_best_static']['best_static_test_acc'])}"
                              f", {d['at_best_static']['best_static_iterations']:.0f} it.): "
                              f"{_fmt(d['at_best_static']['ratio'], d['at_best_static']['bound'])}")
    d = H["prune_compute_ratio_detail"]
    at["prune_compute_ratio"] = (f"DP test {_pct(d['dp_test_acc'])} at {d['dp_compute_seconds']:.0f} s; prune keeps "
                                 f"{d['kept_size']}")
    d = H["guidance_cost_ratio_detail"]
    at["guidance_cost_ratio"] = (f"schedule '{d['schedule']}': test {_pct(d['test_acc'])} vs every step "
                                 f"{_pct(d['every_step_test_acc'])} ({d['every_step_cost_ratio']:.2f}×)")
    for k in ("samples_ratio", "iterations_ratio", "prune_compute_ratio", "guidance_cost_ratio"):
        g = G[k]
        L.append(f"| {k} | {_fmt(g['value'], g['bound'])} | {g['goal']} | **{g['status']}** | {at[k]} |")
    L += ["", "A bound (≥, >, ≤, <) means the curve it was read from does not reach that accuracy inside the measured "
          "range: the ratio is not extrapolated.", ""]
    if H.get("dp_minus_unguided_pp") is not None:
        dd = H["dp_minus_unguided_detail"]
        se = H.get("dp_minus_unguided_se")
        unguided = (f"unguided {_pct(dd['unguided_test_acc'])} %" if "unguided_test_acc" in dd  # results before 2868fba
                    else f"learner seeds {', '.join(map(str, dd['paired_seeds']))}")
        L += ["## What guidance adds", "",
              f"- DP minus the unguided loop at DP's samples: **{H['dp_minus_unguided_pp']:+.2f} points**"
              + (f" ± {se:.2f} (SE)" if se is not None else "") + f" (DP {_pct(dd['dp_test_acc'])} % with "
              f"{dd['dp_samples']:.0f} samples; {unguided}, {dd['unguided_from']})",
              f"- label fidelity (reference classifier): plain initial pool {_pct(H['plain_fidelity'])} %, guided "
              f"additions {_pct(H['added_fidelity'])} %", ""]
    L += ["## Why", ""]
    for k, items in res["why"].items():
        L.append(f"**{k}**")
        L += [f"- {s}" for s in items]
        L.append("")
    L += ["## Choices (validation split only)", "",
          *([f"- classifier-free guidance: **λ = {C['cfg_scale']['chosen']:g}** ({C['cfg_scale']['rule']}); val "
             + ", ".join(f"λ={k} {_pct(v)}" for k, v in C["cfg_scale"]["val_acc"].items()) + "; label fidelity "
             + ", ".join(f"λ={k} {_pct(v)}" for k, v in C["cfg_scale"]["label_fidelity"].items())]
            if "cfg_scale" in C else []),
          f"- solver steps: **{C['steps']['chosen']}** ({C['steps']['rule']}); val "
          + ", ".join(f"{s} steps {_pct(v)}" for s, v in C["steps"]["val_acc"].items()),
          *([f"- learner: **{C['learner']['chosen']}** ({C['learner']['rule']}); val "
             + ", ".join(f"{k} {_pct(v)}" for k, v in C["learner"]["val_acc"].items()) + "; ms/iteration "
             + ", ".join(f"{k} {v}" for k, v in C["learner"]["ms_per_iteration"].items())] if "learner" in C else []),
          f"- ω: **{C['omega']['chosen']}** ({C['omega']['rule']}); val "
          + ", ".join(f"ω={o} {_pct(v)}" for o, v in C["omega"]["val_acc"].items())
          + (" — note: ω = 0 had the higher validation accuracy" if C["omega"].get("omega0_better") else ""),
          f"- guidance schedule: **{C['schedule']['name']}** ({C['schedule']['rule']}); val "
          + ", ".join(f"{n} {_pct(v)}" for n, v in C["schedule"]["val_acc"].items()),
          f"- key DP setting: **{C['dp_key']['label']}** ({C['dp_key']['rule']})",
          f"- prune: kept size M = {C['prune_kept']} (the key DP run's final pool); scorer: {C['prune_scorer']['rule']} "
          f"(N = {C['prune_scorer']['samples']}, {C['prune_scorer']['iterations']} iterations)", "",
          "## Methods", "",
          "| method | setting | seeds | pool | generated | guided | iterations | val % | test % | label fidelity | "
          "compute s (modelled) | measured s: generation / guidance / training |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    seen = set()
    for tag in ("static_samples", "dp_curve", "dynamic_curve", "prune_curve", "prune_random", "static_iters", "dp_iters"):
        for p in sorted(res["points"].get(tag, []), key=lambda p: (p["method"], p["generated"]["mean"] or 0,
                                                                    p["iterations"]["mean"] or 0)):
            key = tuple(p["ids"])
            if key in seen or any(set(key) <= set(k) for k in seen):
                continue
            seen.add(key)
            L.append(f"| {p['method']} | {_setting(p)} | {p['test_acc']['n']} | {p['samples']['mean']:.0f} | "
                     f"{p['generated']['mean']:.0f} | {p['guided']['mean']:.0f} | {p['iterations']['mean']:.0f} | "
                     f"{_pct(p['val_acc']['mean'])} | {_pct(p['test_acc']['mean'], p['test_acc']['std'])} | "
                     f"{_pct(p['label_fidelity']['mean'])} | {p['compute_seconds']['mean']:.0f} | {_split(res, p)} |")
    ref = res["reference_classifier"]
    cached = any("cache_hits" in r for r in res["runs"].values())  # made with the former sample cache
    L += ["", "Compute (modelled) = the run's counts × this invocation's unit costs: the basis of every compute "
          "comparison. " + ("Measured generation seconds are charged from the sample cache, i.e. as measured when "
                            "each sample was first generated — possibly by an earlier invocation on a differently "
                            "loaded machine — so they are shown for reference only." if cached else
                            "Measured generation seconds count the samples a run generated itself (plain shards "
                            "copied from an earlier run's pool cost it nothing), so they are shown for reference "
                            "only.")]
    L += ["", f"Real-data reference classifier ({ref['model']}, {ref['iterations']} iterations on the real generator "
          f"split; used only for label fidelity): val {_pct(ref['val_acc'])}, test {_pct(ref['test_acc'])}.", "",
          "## Out-of-distribution (corrupted test copies)", "",
          f"{res['ood']['size']} test images per corruption; severities: "
          + "; ".join(f"{k} {v}" for k, v in res["ood"]["corruptions"].items()) + ".", ""]
    rows = ood_rows(res)
    kinds = ["clean"] + list(res["ood"]["corruptions"])
    L += ["| model | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    L += [f"| {label} | " + " | ".join(_pct(v.get(k)) for k in kinds) + " |" for label, v in rows]
    L += ["", "## ω sweep and guidance schedules", "",
          "| run | val % | test % | label fidelity (added) | entropy, guiding (added) | entropy, reference (added) |",
          "|---|---|---|---|---|---|"]
    for tag in ("omega_sweep", "schedule_sweep"):
        for p in sorted(res["points"].get(tag, []), key=_omega):
            rs = [s for rid in p["ids"] for s in res["runs"][rid]["round_stats"] if s["round"] > 0]
            eg = [s["entropy_guiding"] for s in rs if s["entropy_guiding"] is not None]
            fid = np.mean([s["label_fidelity"] for s in rs]) if rs else None
            er = f"{np.mean([s['entropy_reference'] for s in rs]):.3f}" if rs else "–"
            L.append(f"| {tag}: {p['method']} {_setting(p)} | {_pct(p['val_acc']['mean'])} | "
                     f"{_pct(p['test_acc']['mean'])} | {_pct(fid)} | {f'{np.mean(eg):.3f}' if eg else '–'} | {er} |")
    key = res["runs"].get(C["dp_key"]["id"])
    if key:
        L += ["", f"Rounds of the key DP run (seed {key['seed']}): entropy (Eq. 6) of each round's samples under the "
              "classifier that guided it and under the fixed real-data reference; label fidelity under the reference.", "",
              "| round | samples | ω | label fidelity | entropy, guiding | entropy, reference |", "|---|---|---|---|---|---|"]
        for r in key["round_stats"]:
            eg = "–" if r["entropy_guiding"] is None else f"{r['entropy_guiding']:.3f}"
            L.append(f"| {r['round']} | {r['count']} | {r['omega']} | {_pct(r['label_fidelity'])} | {eg} | "
                     f"{r['entropy_reference']:.3f} |")
    U = res["units"]
    L += ["", "## Unit costs and speed", "",
          f"Unit costs at {U['steps']} solver steps (median of {U['reps']}, {U['images_per_measurement']} images each): "
          f"plain image {U['plain_image'] * 1e3:.1f} ms, training iteration {U['iteration'] * 1e3:.1f} ms, validation "
          f"image {U['val_image'] * 1e6:.0f} µs; guided ÷ plain: "
          + ", ".join(f"{k} {v:.2f}×" for k, v in U["guided_ratio"].items()) + ".", "",
          "| knob | ms |", "|---|---|"]
    S = res["speed"]
    L += [f"| {k} | {v:.2f} / image |" for k, v in S["generation_ms_per_image"].items()]
    L += [f"| {k} | {v:.2f} / iteration |" for k, v in S["learner_ms_per_iteration"].items()]
    L += ["", f"Before → after: plain image {S['plain_speedup']:.2f}× faster (fewer steps), guided image "
          f"{S['guided_speedup']:.2f}× faster (steps and schedule); bf16 autocast vs fp32 for the generator: "
          f"{S['bf16_speedup']:.2f}×.", "", "## Time", ""]
    L += [f"- {k}: {v / 60:.1f} min" for k, v in res["seconds"].items()]
    L += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(L) + "\n"


def _split(res: dict, p: dict) -> str:
    """Mean measured seconds over a point's replicates: generation, guidance (guided generation beyond the plain
    cost of the same samples), training (scorer included)."""
    rs = [res["runs"][i]["measured_split"] for i in p["ids"]]
    return " / ".join(f"{np.mean([r[k] for r in rs]):.0f}" for k in ("generation", "guidance", "training"))


def _fmt(v, bound="=") -> str:
    if v is None:
        return "–"
    b = {"=": "", ">=": "≥ ", ">": "> ", "<=": "≤ ", "<": "< ", "?": "~ "}[bound]
    return f"{b}{v:.2f}×"


def _setting(p) -> str:
    s = p["setting"]
    short = {"practice.initial_samples": "N", "practice.add_samples": "P", "practice.patience": "T",
             "practice.max_samples": "max", "guidance.omega": "ω", "guidance.every": "every", "guidance.window": "window",
             "guidance.grad": "grad", "practice.oversample": "k", "practice.iterations": "its", "sampling.steps": "steps",
             "sampling.cfg_scale": "λ"}
    parts = [f"{short[k]}={v}" for k, v in s.items() if k in short and k != "sampling.steps"]
    if p["method"] in ("static", "prune", "prune_random") and p.get("budget"):
        parts.insert(0, f"M={p['budget']}")
    return ", ".join(parts)


def write_outputs(res: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_curves(res, out)
    res["plots"] = plots
    (out / "latest.json").write_text(json.dumps(res, indent=1, default=float))
    (out / "results.md").write_text(results_md(res, plots))
    (out / "summary.md").write_text(summary_md(res))


def summary_md(res: dict) -> str:
    """The short results table (the four headline ratios and the main points of every method) beside
    ``results.md``, for a person to quote."""
    G = res["goals"]
    L = [f"# Benchmark summary ({res['mode']} mode)", "",
         f"Measured by `{res['command']}` ({res['machine']['threads']} threads, {res['machine']['device']}); all "
         "tables, plots and the reasons behind each status: [results.md](results.md). Generated from `latest.json`; "
         "do not edit by hand.", "",
         "| headline ratio | measured | goal | status |", "|---|---|---|---|"]
    L += [f"| {k} | {_fmt(G[k]['value'], G[k]['bound'])} | {G[k]['goal']} | {G[k]['status']} |"
          for k in ("samples_ratio", "iterations_ratio", "prune_compute_ratio", "guidance_cost_ratio")]
    L += ["", "| method | setting | seeds | pool | generated | iterations | test % (mean ± std) | label fidelity |",
          "|---|---|---|---|---|---|---|---|"]
    seen = set()
    for tag in ("static_samples", "dp_key", "dynamic_key", "prune_curve", "prune_random"):
        for p in sorted(res["points"].get(tag, []), key=lambda p: (p["method"], p["generated"]["mean"] or 0)):
            if any(set(p["ids"]) <= set(k) for k in seen):
                continue
            seen.add(tuple(p["ids"]))
            L.append(f"| {p['method']} | {_setting(p)} | {p['test_acc']['n']} | {p['samples']['mean']:.0f} | "
                     f"{p['generated']['mean']:.0f} | {p['iterations']['mean']:.0f} | "
                     f"{_pct(p['test_acc']['mean'], p['test_acc']['std'])} | {_pct(p['label_fidelity']['mean'])} |")
    return "\n".join(L) + "\n"


@STUDIES.register("report")
def main(argv: list[str]) -> int:
    """Regenerate the benchmark's explanations, results.md, summary.md and plots from a latest.json (no training)."""
    ap = argparse.ArgumentParser(prog="python -m bench report", description=main.__doc__)
    ap.add_argument("results", nargs="?", default=str(RESULTS / "latest.json"),
                    help="the benchmark's latest.json; outputs are written beside it")
    a = ap.parse_args(argv)
    src = Path(a.results)
    if not src.is_file():
        raise SystemExit(f"no results file {src}")
    res = json.loads(src.read_text())
    from .analysis import GUIDANCE_KEYS, explain, guidance_headline

    if any(k not in res["headline"] for k in GUIDANCE_KEYS):  # results written before these keys existed
        res["headline"] |= guidance_headline(res["runs"], res["choices"])
    res["why"] = explain(res["headline"], res["goals"], res["runs"], res["choices"])  # its wording may have changed
    write_outputs(res, src.parent)
    return 0
