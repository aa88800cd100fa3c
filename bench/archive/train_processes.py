"""What data-parallel CPU training buys the generator: seconds per training step with 1 process using every thread
against ``generator.train_processes`` = 2, 3, … processes sharing them (DistributedDataParallel over gloo),
measured alternately in one run.

    python bench/archive/train_processes.py [--steps 120] [--reps 3] [--processes 1,2] [--out bench/results/train_processes.json] [overrides]

Each measurement is a whole ``PixelDiffusion.fit`` of ``--steps`` steps of the default generator's recipe (the
configuration's architecture, batch and precision, on the real generator split), from a fresh initialisation, so the
process start-up is included; ``start_seconds`` is a 2-step fit, the fixed cost, and a step's cost is (the N-step
fit − the 2-step fit) / (N − 2). Settings alternate within each repetition so that the machine's drift (~20 % between
runs here) hits all of them alike; reported: medians over repetitions, and the speed-up per step as the median of
the per-repetition ratios (whole fits, start-up included, too). Nothing is cached.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--out", default=str(HERE.parent / "results" / "train_processes.json"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    if args.steps <= 2:
        ap.error(f"--steps must be > 2 (a 2-step fit is the start-up measurement), got {args.steps}")

    import copy

    from deliberate.config import load_config
    from deliberate.data.splits import load_splits
    from deliberate.generation.pixel import PixelDiffusion

    cfg = load_config(None, args.overrides)
    d = cfg.data
    splits = load_splits(d.root, d.val_size, d.gen_train_size, d.split_seed)
    split, classes = splits.gen_train, splits.num_classes
    shape = tuple(split.images.shape[1:])
    settings = [int(p) for p in args.processes.split(",")]
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)

    def fit(n: int, steps: int) -> float:
        g = copy.deepcopy(cfg.generator)
        g.train_processes, g.train_steps = n, steps
        gen = PixelDiffusion.create(g, classes, shape)
        t0 = time.perf_counter()
        gen.fit(split.images, split.labels, g, progress=False)
        return time.perf_counter() - t0

    load_start = os.getloadavg()  # the machine's other work: the timings are only as good as it is steady
    seconds = {n: [] for n in settings}
    start = {n: [] for n in settings}
    for rep in range(args.reps):
        for n in settings:
            start[n].append(fit(n, 2))
            seconds[n].append(fit(n, args.steps))
            print(f"rep {rep}: {n} process(es): {seconds[n][-1]:.1f} s for {args.steps} steps "
                  f"(start-up {start[n][-1]:.1f} s)", flush=True)
    # a step's cost without the fixed start-up: (fit of N steps − fit of 2 steps) / (N − 2), per repetition
    step_cost = {n: [(a - b) / (args.steps - 2) for a, b in zip(seconds[n], start[n])] for n in settings}
    per_step = {n: statistics.median(v) for n, v in step_cost.items()}
    whole = {n: statistics.median(v) for n, v in seconds.items()}
    first = settings[0]
    out = {
        "command": " ".join(["python bench/archive/train_processes.py", *(argv if argv is not None else sys.argv[1:])]),
        "steps": args.steps, "reps": args.reps, "batch_size": cfg.generator.batch_size,
        "block_out_channels": list(cfg.generator.block_out_channels), "bf16": cfg.generator.bf16,
        "seconds_per_step": {str(n): round(v, 4) for n, v in per_step.items()},
        # per repetition, the first setting's step cost over this one's (the pairs ran back to back)
        "speedup_per_step": {str(n): round(statistics.median([a / b for a, b in zip(step_cost[first], step_cost[n])]), 3)
                             for n in settings},
        "speedup_whole_fit": {str(n): round(whole[first] / whole[n], 3) for n in settings},
        "start_seconds": {str(n): round(statistics.median(v), 2) for n, v in start.items()},
        "runs": {str(n): [round(s, 2) for s in v] for n, v in seconds.items()},
        "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "load_average_1_5_15min": {"start": [round(x, 2) for x in load_start],
                                               "end": [round(x, 2) for x in os.getloadavg()]}},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("seconds_per_step", "speedup_per_step", "speedup_whole_fit",
                                          "start_seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
