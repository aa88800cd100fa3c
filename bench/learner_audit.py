"""Learner audit: horizontal flips kept or dropped, and bf16 autocast (faster), by validation accuracy.

    python -m bench learner-audit [--samples 1000] [--iterations 600] [--seeds 0,1,2] [overrides...]

Static generation with the default config: the first ``--samples`` plain samples of the default generator, one
``cnn_small`` per (learner variant, seed), each trained for ``--iterations`` with the default schedule. Validation
accuracy chooses; the held-out test split is read once, at the end, for every learner. Writes
``bench/results/learner_audit.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from .core import RESULTS, STUDIES, setup

VARIANTS = {
    "flip (before)": ["learner.hflip=true"],
    "no flip": ["learner.hflip=false"],
    "no flip, bf16": ["learner.hflip=false", "learner.bf16=true"],
}


@STUDIES.register("learner-audit")
def main(argv: list[str]) -> int:
    """Learner audit: horizontal flips kept or dropped, and bf16 autocast, chosen by validation accuracy."""
    ap = argparse.ArgumentParser(prog="python -m bench learner-audit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args(argv)
    from deliberate.config import load_config

    from .generator_quality import static_runs

    seeds = [int(v) for v in args.seeds.split(",")]
    t0 = time.perf_counter()
    base = load_config(None, list(args.overrides))
    su = setup(base, progress=True)
    splits, gen, info = su.splits, su.generator, su.gen_info
    s = base.sampling
    labels = torch.arange(args.samples) % splits.num_classes
    out = gen.sample(labels, list(range(s.seed_offset, s.seed_offset + args.samples)), steps=s.steps,
                     cfg_scale=s.cfg_scale, batch_size=s.batch_size, solver=s.solver, progress=True)
    print(f"[{time.perf_counter() - t0:.0f}s] {args.samples} samples of {info['generator_id']}", flush=True)
    rows, learners = {}, {}
    for name, over in VARIANTS.items():
        cfg = load_config(None, list(args.overrides) + over)
        t1 = time.perf_counter()
        learners[name] = static_runs(out.images, labels, splits, cfg, seeds, args.iterations, su.device)
        rows[name] = {"overrides": over, "seconds_per_iteration": round((time.perf_counter() - t1)
                                                                        / (len(seeds) * args.iterations), 4),
                      "val_acc": [lr.accuracy(splits.val.images, splits.val.labels) for lr in learners[name]]}
        print(f"[{time.perf_counter() - t0:.0f}s] {name}: val {np.mean(rows[name]['val_acc']):.4f}", flush=True)
    chosen = max(rows, key=lambda k: np.mean(rows[k]["val_acc"]))
    test = splits.test.read("learner audit: final evaluation")
    for name, lrs in learners.items():
        rows[name]["test_acc"] = [lr.accuracy(test.images, test.labels) for lr in lrs]
    res = {"command": "python -m bench learner-audit " + " ".join(argv),
           "generator": info["generator_id"], "samples": args.samples, "iterations": args.iterations,
           "seeds": seeds, "chosen_on_validation": chosen, "rows": rows, "test_reads": list(splits.test.read_log),
           "seconds": round(time.perf_counter() - t0, 1)}
    lines = [f"Measured by `{res['command']}`: static on {args.samples} plain samples of {info['generator_id']}, "
             f"{args.iterations} iterations, seeds {seeds}. Chosen on validation: **{chosen}**.", "",
             "| learner | val % (mean ± std) | held-out test % (mean ± std) | s / iteration |", "|---|---|---|---|"]
    for name, r in rows.items():
        v, t = np.array(r["val_acc"]) * 100, np.array(r["test_acc"]) * 100
        lines.append(f"| {name} | {v.mean():.2f} ± {v.std(ddof=1):.2f} | {t.mean():.2f} ± {t.std(ddof=1):.2f} | "
                     f"{r['seconds_per_iteration']:.3f} |")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "learner_audit.json").write_text(json.dumps(res, indent=1))
    (out_dir / "learner_audit.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0

