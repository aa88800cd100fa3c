"""The classifier-free guidance (λ) sweep alone: label fidelity and static accuracy per λ, with the choice.

    python -m bench cfg-sweep [--mode full|quick|tiny] [--out bench/results]

The same stage as stage 0 of ``python -m bench benchmark`` (the same runs: records are shared through ``--work``),
then the held-out test accuracy of its runs (read once, after the choice) → ``cfg_sweep.json``, ``cfg_sweep.md`` and
``plots/cfg_sweep.png`` in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from .core import RESULTS, STUDIES, WORK
from .plan import MODES


def table(res: dict) -> str:
    lines = [f"Static generation on {res['size']} samples, {res['iterations']} iterations, {len(res['seeds'])} learner "
             f"seeds, {res['steps']} solver steps; label fidelity = the real-data reference classifier "
             f"(test {res['reference_test_acc'] * 100:.1f} %) agrees with the intended label. Chosen on validation: "
             f"**λ = {res['chosen']:g}** ({res['rule']}).", "",
             "| λ | label fidelity % | val % (mean) | held-out test % (mean ± std) | per seed (test) |",
             "|---|---|---|---|---|"]
    for lam, row in res["rows"].items():
        t = np.array(row["test_acc"]) * 100
        lines.append(f"| {float(lam):g}{' (chosen)' if float(lam) == res['chosen'] else ''} | "
                     f"{row['label_fidelity'] * 100:.1f} | {row['val_acc'] * 100:.2f} | "
                     f"{t.mean():.2f} ± {t.std(ddof=1) if len(t) > 1 else 0:.2f} | "
                     + ", ".join(f"{v:.2f}" for v in t) + " |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam = [float(k) for k in res["rows"]]
    fid = [r["label_fidelity"] * 100 for r in res["rows"].values()]
    test = [np.mean(r["test_acc"]) * 100 for r in res["rows"].values()]
    err = [np.std(r["test_acc"], ddof=1) * 100 if len(r["test_acc"]) > 1 else 0 for r in res["rows"].values()]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(lam, fid, "o-")
    ax[0].set(xlabel="λ (classifier-free guidance)", ylabel="label fidelity %", title="samples on their label")
    ax[1].errorbar(lam, test, yerr=err, fmt="o-", capsize=3)
    ax[1].set(xlabel="λ", ylabel="held-out test %", title=f"static on {res['size']} samples")
    for a in ax:
        a.axvline(res["chosen"], color="grey", ls=":", lw=1)
        a.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


@STUDIES.register("cfg-sweep")
def main(argv: list[str]) -> int:
    """The classifier-free guidance (λ) sweep alone: label fidelity and static accuracy per λ, with the choice."""
    ap = argparse.ArgumentParser(prog="python -m bench cfg-sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="full")
    ap.add_argument("--out", default="", help="default: bench/results (full) or bench/results/<mode>")
    ap.add_argument("--work", default="", help="run records (default: bench/work/<mode>, shared with the benchmark)")
    ap.add_argument("--device", default=None, help="sets run.device (default: the config's, auto)")
    ap.add_argument("--threads", type=int, default=0, help="sets run.threads")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = ap.parse_args(argv)
    mode = MODES[args.mode]
    work = Path(args.work) if args.work else WORK / args.mode
    out = Path(args.out) if args.out else RESULTS if args.mode == "full" else RESULTS / args.mode
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    from .harness import Bench
    from .run import Plan
    from .sweeps import cfg_sweep

    threads = [f"run.threads={args.threads}"] if args.threads else []
    bench = Bench(mode, work, args.device, args.progress, log, args.overrides + threads)
    log(f"generator {bench.gen_info['generator_id']} ({bench.gen_info['source']})")
    plan = Plan(mode)
    choice = cfg_sweep(bench, plan, mode, log)
    evals = bench.evaluate()  # the only read of the test split, after the choice
    rows = {}
    for lam, ids in choice["runs"].items():
        rows[lam] = {"label_fidelity": choice["label_fidelity"][lam], "val_acc": choice["val_acc"][lam],
                     "val_acc_per_seed": choice["val_acc_per_seed"][lam],
                     "test_acc": [evals["runs"][i]["test_acc"] for i in ids], "runs": ids}
    rec0 = bench.records[choice["runs"][str(mode.cfg_scales[0])][0]]
    res = {"command": "python -m bench cfg-sweep" + (f" --mode {args.mode}" if args.mode != "full" else "")
           + ("".join(f" {o}" for o in args.overrides)), "mode": args.mode, "chosen": choice["chosen"],
           "rule": choice["rule"], "size": choice["size"], "seeds": choice["seeds"], "steps": rec0["steps"],
           "iterations": rec0["iterations"], "generator": bench.gen_info,
           "reference_test_acc": evals["reference"]["test_acc"], "rows": rows, "test_reads": evals["test_reads"],
           "seconds": round(time.perf_counter() - t0, 1),
           "machine": {"threads": torch.get_num_threads(), "device": str(bench.device), "torch": torch.__version__,
                       "cpu_capability": torch.backends.cpu.get_cpu_capability()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "cfg_sweep.json").write_text(json.dumps(res, indent=1))
    (out / "cfg_sweep.md").write_text("# Classifier-free guidance sweep\n\nMeasured by `" + res["command"] + "`.\n\n"
                                      + table(res))
    plot(res, out / "plots" / "cfg_sweep.png")
    print(table(res))
    log(f"done → {out / 'cfg_sweep.json'}")
    return 0
