"""Reproduce the Section 4 figures (analytic curves + simulation points) as PNG and CSV.

* ``fig3``:  accuracy against the size N of the selected set, keeping the 10/50/80/90/100% hardest samples
  of a pool of N/p (d = 512).
* ``fig7``:  test error against the kept fraction p, keep-easy against keep-hard, d = 350,
  n ∈ {250, 600, 1000} (columns), lam ∈ {1e-6, 1e-2} (rows); the interpolation threshold n p = d is marked.
* ``fig5c``: accuracy against the oversampling ratio n/N when the kept set size N is fixed (d = 512,
  N ∈ {d/2, 4d}), keep-hard and keep-easy, lam ∈ {1e-6, 1e-2}.
* ``errata.csv``: the corrected Theorem 1 against the printed/approximate variants and simulation.

Every CSV is long-format: one row per (curve, x) with ``kind`` = ``analytic`` or ``sim``; ``error`` is the
test error (angle/π), ``accuracy = 1 - error``, ``se`` the Monte Carlo standard error (sim rows only).

Run ``python -m deliberate.theory.figures --out runs/theory`` (or ``deliberate theory``); ``--quick`` uses
fewer trials and simulation points.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from .analytic import VARIANTS, predicted_error
from .simulate import simulated_error

FIELDS = ["figure", "panel", "rule", "d", "n", "p", "n_kept", "oversampling", "rho", "lam", "kind",
          "error", "accuracy", "se", "trials"]


def _row(figure, panel, rule, d, n, p, rho, lam, kind, err, se=float("nan"), trials=0):
    return {
        "figure": figure, "panel": panel, "rule": rule, "d": d, "n": round(float(n), 3), "p": round(float(p), 6),
        "n_kept": round(float(n) * float(p), 3), "oversampling": round(1.0 / float(p), 6), "rho": rho,
        "lam": lam, "kind": kind, "error": err, "accuracy": 1.0 - err if math.isfinite(err) else float("nan"),
        "se": se, "trials": trials,
    }


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


# --------------------------------------------------------------------------------------------- plan
def plan(quick: bool, rho: float) -> dict:
    """Parameters of every figure and the simulation points (x values) of each curve."""
    if quick:
        f3_sim = [128, 1024, 4096]
        f7_sim = [0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
        f5_sim = [1, 2, 4, 8]
    else:
        f3_sim = [128, 256, 384, 768, 1024, 2048, 4096, 8192]
        f7_sim = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
        f5_sim = [1, 1.25, 1.5, 2, 3, 4, 6, 8, 12, 16]
    return {
        "rho": rho,
        "fig3": {"d": 512, "lam": 1e-6, "keep": [0.1, 0.5, 0.8, 0.9, 1.0], "sim_N": f3_sim,
                 "grid_N": np.unique(np.round(np.geomspace(64, 8192, 160))).tolist()},
        "fig7": {"d": 350, "ns": [250, 600, 1000], "lams": [1e-6, 1e-2], "sim_p": f7_sim,
                 "grid_p": np.linspace(0.01, 1.0, 199).tolist()},
        "fig5c": {"d": 512, "Ns": [256, 2048], "lams": [1e-6, 1e-2], "sim_r": f5_sim,
                  "grid_r": np.geomspace(1.0, 16.0, 120).tolist()},
        "errata": [  # (d, n, p, lam, rule) at the figure's rho
            (350, 1000, 0.8, 1e-6, "hard"), (350, 1000, 0.8, 1e-6, "easy"), (350, 600, 0.3, 1e-6, "hard"),
            (350, 600, 0.3, 1e-6, "easy"), (512, 2048, 0.9, 1e-2, "hard"), (512, 5120, 0.1, 1e-2, "hard"),
            (350, 1000, 0.5, 1e-2, "easy"), (350, 250, 0.5, 1e-2, "hard"),
        ],
    }


def sim_jobs(pl: dict) -> list[tuple]:
    """All simulation points: (figure, panel, rule, d, n, p, lam)."""
    jobs = []
    f3 = pl["fig3"]
    for p in f3["keep"]:
        for N in f3["sim_N"]:
            jobs.append(("fig3", f"keep {int(round(100 * p))}% hardest", "hard", f3["d"], N / p, p, f3["lam"]))
    f7 = pl["fig7"]
    for lam in f7["lams"]:
        for n in f7["ns"]:
            for rule in ("hard", "easy"):
                for p in f7["sim_p"]:
                    jobs.append(("fig7", f"n={n}, lam={lam:g}", rule, f7["d"], n, p, lam))
    f5 = pl["fig5c"]
    for lam in f5["lams"]:
        for N in f5["Ns"]:
            for rule in ("hard", "easy"):
                for r in f5["sim_r"]:
                    if r == 1 and rule == "easy":
                        continue  # identical to keep-hard at ratio 1 (keep everything)
                    jobs.append(("fig5c", f"N={N}, lam={lam:g}", rule, f5["d"], N * r, 1.0 / r, lam))
    for d, n, p, lam, rule in pl["errata"]:
        jobs.append(("errata", "", rule, d, n, p, lam))
    return jobs


def analytic_rows(pl: dict) -> dict[str, list[dict]]:
    rho = pl["rho"]
    out: dict[str, list[dict]] = {"fig3": [], "fig7": [], "fig5c": [], "errata": []}
    f3 = pl["fig3"]
    for p in f3["keep"]:
        panel = f"keep {int(round(100 * p))}% hardest"
        for N in f3["grid_N"]:
            e = predicted_error(f3["d"], N / p, p, rho, f3["lam"], "hard")
            out["fig3"].append(_row("fig3", panel, "hard", f3["d"], N / p, p, rho, f3["lam"], "analytic", e))
    f7 = pl["fig7"]
    for lam in f7["lams"]:
        for n in f7["ns"]:
            for rule in ("hard", "easy"):
                for p in f7["grid_p"]:
                    e = predicted_error(f7["d"], n, p, rho, lam, rule)
                    out["fig7"].append(_row("fig7", f"n={n}, lam={lam:g}", rule, f7["d"], n, p, rho, lam,
                                            "analytic", e))
    f5 = pl["fig5c"]
    for lam in f5["lams"]:
        for N in f5["Ns"]:
            for rule in ("hard", "easy"):
                for r in f5["grid_r"]:
                    e = predicted_error(f5["d"], N * r, 1.0 / r, rho, lam, rule)
                    out["fig5c"].append(_row("fig5c", f"N={N}, lam={lam:g}", rule, f5["d"], N * r, 1.0 / r, rho,
                                             lam, "analytic", e))
    for d, n, p, lam, rule in pl["errata"]:
        for v in VARIANTS:
            e = predicted_error(d, n, p, rho, lam, rule, variant=v)
            out["errata"].append(_row("errata", v, rule, d, n, p, rho, lam, "analytic", e))
    return out


# --------------------------------------------------------------------------------------------- plots
def _curves(rows, panel, rule, kind):
    sel = [r for r in rows if r["panel"] == panel and r["rule"] == rule and r["kind"] == kind]
    return sel


def plot_fig3(rows, pl, path):
    import matplotlib.pyplot as plt

    f3 = pl["fig3"]
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(f3["keep"])))
    for c, p in zip(colors, f3["keep"]):
        panel = f"keep {int(round(100 * p))}% hardest"
        a = _curves(rows, panel, "hard", "analytic")
        ax.plot([r["n_kept"] for r in a], [r["accuracy"] for r in a], color=c,
                label="all samples" if p == 1.0 else panel)
        s = _curves(rows, panel, "hard", "sim")
        ax.errorbar([r["n_kept"] for r in s], [r["accuracy"] for r in s], yerr=[r["se"] for r in s], fmt="o",
                    ms=3.5, color=c, capsize=2)
    ax.axvline(f3["d"], color="gray", ls=":", lw=1)
    ax.text(f3["d"] * 1.05, 0.52, "N = d", color="gray", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("size of the selected set N = n p")
    ax.set_ylabel("test accuracy (1 - angle/π)")
    ax.set_title(f"Fig. 3: keep the hardest (d={f3['d']}, ρ={pl['rho']}, λ={f3['lam']:g})\n"
                 "lines: Theorem 1, points: simulation (±1 SE)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_fig7(rows, pl, path):
    import matplotlib.pyplot as plt

    f7 = pl["fig7"]
    fig, axes = plt.subplots(len(f7["lams"]), len(f7["ns"]), figsize=(12, 6.6), sharey=True)
    colors = {"hard": "tab:red", "easy": "tab:blue"}
    for i, lam in enumerate(f7["lams"]):
        for j, n in enumerate(f7["ns"]):
            ax = axes[i][j]
            panel = f"n={n}, lam={lam:g}"
            for rule in ("easy", "hard"):
                a = _curves(rows, panel, rule, "analytic")
                ax.plot([r["p"] for r in a], [r["error"] for r in a], color=colors[rule], label=f"keep-{rule}")
                s = _curves(rows, panel, rule, "sim")
                ax.errorbar([r["p"] for r in s], [r["error"] for r in s], yerr=[r["se"] for r in s], fmt="o",
                            ms=3.5, color=colors[rule], capsize=2)
            if f7["d"] / n <= 1.0:
                ax.axvline(f7["d"] / n, color="gray", ls=":", lw=1)
                ax.text(f7["d"] / n + 0.01, 0.47, "np = d", color="gray", fontsize=8)
            ax.set_title(f"n = {n}, λ = {lam:g}", fontsize=9)
            ax.set_ylim(0.0, 0.52)
            ax.grid(alpha=0.3)
            if i == len(f7["lams"]) - 1:
                ax.set_xlabel("kept fraction p")
            if j == 0:
                ax.set_ylabel("test error")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Fig. 7: keep-easy vs keep-hard (d={f7['d']}, ρ={pl['rho']}); lines: theory, points: "
                 "simulation (±1 SE)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fig5c(rows, pl, path):
    import matplotlib.pyplot as plt

    f5 = pl["fig5c"]
    fig, axes = plt.subplots(1, len(f5["lams"]), figsize=(11, 4.4), sharey=True)
    styles = {"hard": "-", "easy": "--"}
    colors = plt.cm.plasma(np.linspace(0.1, 0.7, len(f5["Ns"])))
    for ax, lam in zip(axes, f5["lams"]):
        for c, N in zip(colors, f5["Ns"]):
            panel = f"N={N}, lam={lam:g}"
            for rule in ("hard", "easy"):
                a = _curves(rows, panel, rule, "analytic")
                ax.plot([r["oversampling"] for r in a], [r["accuracy"] for r in a], styles[rule], color=c,
                        label=f"N={N} ({N / f5['d']:g}d), keep-{rule}")
                s = _curves(rows, panel, rule, "sim")
                ax.errorbar([r["oversampling"] for r in s], [r["accuracy"] for r in s], yerr=[r["se"] for r in s],
                            fmt="o" if rule == "hard" else "s", mfc="none" if rule == "easy" else c, ms=4,
                            color=c, capsize=2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("oversampling ratio n / N (pool size / kept size)")
        ax.set_title(f"λ = {lam:g}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Fig. 5c analogue: fixed kept size N, growing pool (d={f5['d']}, ρ={pl['rho']}); lines: theory, "
                 "points: simulation", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="deliberate theory",
                                 description="Section 4 theory: Figures 3, 7 and 5c (analytic + simulation).")
    ap.add_argument("--out", default="runs/theory", help="output directory (default: runs/theory)")
    ap.add_argument("--trials", type=int, default=None,
                    help="simulation trials per point (default 10; 3 with --quick)")
    ap.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    ap.add_argument("--rho", type=float, default=0.9, help="selector/teacher overlap rho (default 0.9)")
    ap.add_argument("--quick", action="store_true", help="fewer trials and simulation points (smoke run)")
    ap.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    trials = args.trials if args.trials is not None else (3 if args.quick else 10)
    if trials < 2:
        print("error: --trials must be >= 2 (the standard error needs two trials)", file=sys.stderr)
        return 2
    if args.seed < 0:
        print("error: --seed must be >= 0", file=sys.stderr)
        return 2
    if not 0.0 <= args.rho <= 1.0:
        print("error: --rho must be in [0, 1]", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    from tqdm import tqdm

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pl = plan(args.quick, args.rho)
    rows = analytic_rows(pl)
    jobs = sim_jobs(pl)
    for k, (figure, panel, rule, d, n, p, lam) in enumerate(
            tqdm(jobs, desc="theory sims", unit="pt", disable=args.no_progress, file=sys.stderr)):
        n_int = max(1, int(round(n)))
        m, se = simulated_error(d, n_int, p, args.rho, lam, rule, trials=trials, seed=args.seed * 100_003 + k)
        rows[figure].append(_row(figure, panel if figure != "errata" else "simulation", rule, d, n_int, p,
                                 args.rho, lam, "sim", m, se, trials))

    for name in ("fig3", "fig7", "fig5c", "errata"):
        _write_csv(out / f"{name}.csv", rows[name])
    plot_fig3(rows["fig3"], pl, out / "fig3.png")
    plot_fig7(rows["fig7"], pl, out / "fig7.png")
    plot_fig5c(rows["fig5c"], pl, out / "fig5c.png")
    dt = time.perf_counter() - t0
    print(f"wrote fig3/fig7/fig5c (.png, .csv) and errata.csv to {out} "
          f"({len(jobs)} simulated points x {trials} trials, {dt:.1f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("MPLBACKEND", "Agg")
    raise SystemExit(main())
