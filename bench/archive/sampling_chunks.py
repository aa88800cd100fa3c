"""What index-aligned sampling calls cost: seconds per plain image, measured back to back in one process.

    python bench/archive/sampling_chunks.py [--images 500] [--reps 3] [--out bench/results/sampling_chunks.json]

* ``request batches``: the sampler before chunking: the request cut into consecutive batches of B (the bytes then
  depended on the request on AVX-512/AMX CPUs);
* ``aligned chunks``: what ``generator.sample`` does now, on a request aligned to B (pool sizes, rounds and shards
  that are multiples of B, as in the defaults): the same calls, so the cost should be ≈ 1.0×;
* ``misaligned``: a request whose seeds start mid-chunk (e.g. a round of P = B/2): the stand-in slots are the cost;
* B = 50, 100, 250 with aligned chunks: the per-image cost of the chunk size itself on this machine.
Uses the default generator (cached under ``generator.cache_dir``; trained first if missing).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--out", default=str(HERE.parent / "results" / "sampling_chunks.json"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)

    from deliberate.config import load_config
    from deliberate.data.splits import load_splits
    from deliberate.generation.base import per_sample_noise, to_uint8
    from deliberate.generation.ddim import guided_ddim
    from deliberate.job import obtain_generator

    cfg = load_config(None, list(args.overrides))
    d = cfg.data
    splits = load_splits(d.root, d.val_size, d.gen_train_size, d.split_seed)
    gen, info = obtain_generator(cfg, splits, "cpu", progress=True)
    n, steps, B = args.images, args.steps, cfg.sampling.batch_size
    labels = torch.arange(n) % gen.num_classes
    seeds = list(range(n))

    def request_batches():  # the old sampler: consecutive batches of the request
        out = []
        for s in range(0, n, B):
            x, rngs = per_sample_noise(seeds[s:s + B], gen.image_shape, gen.device)
            x, _ = guided_ddim(gen.eps_fn(labels[s:s + B], 0.0), gen.scheduler, x, steps)
            out.append(to_uint8(x))
        return torch.cat(out)

    half = B // 2
    fns = {
        f"request batches, B={B}": (request_batches, n),
        f"aligned chunks, B={B}": (lambda: gen.sample(labels, seeds, steps=steps, batch_size=B).images, n),
        f"misaligned: {B} samples from seed {half}, B={B}": (
            lambda: gen.sample(labels[:B], [half + i for i in range(B)], steps=steps, batch_size=B).images, B),
    }
    for b in (50, 100, 250):
        if b != B:
            fns[f"aligned chunks, B={b}"] = (lambda b=b: gen.sample(labels, seeds, steps=steps, batch_size=b).images, n)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.reps):  # round robin, so that drift of the machine's speed hits every variant alike
        for k, (fn, count) in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) / count)
    ms = {k: round(statistics.median(v) * 1e3, 3) for k, v in times.items()}
    base = ms[f"request batches, B={B}"]
    same = torch.equal(request_batches(), gen.sample(labels, seeds, steps=steps, batch_size=B).images)
    res = {"command": "python bench/archive/sampling_chunks.py" + "".join(f" {o}" for o in args.overrides),
           "ms_per_image": ms, "ratio_to_request_batches": {k: round(v / base, 3) for k, v in ms.items()},
           "aligned_equals_request_batches_bitwise": same, "images": n, "steps": steps, "reps": args.reps,
           "generator": info["generator_id"],
           "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                       "cpu_capability": torch.backends.cpu.get_cpu_capability()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
