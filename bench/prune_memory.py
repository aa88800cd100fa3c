"""Peak resident memory of oversample-then-prune's selection at k = 2, 4, 8: flat in k, where holding all k·M grows.

Each measurement runs in a forked child (the parent has imported everything and run no torch work), which resets
its resident high-water mark (``/proc/self/clear_refs``), then either

* ``stream``: :meth:`deliberate.practice.prune.PruneSpec.build_pool` as the job calls it (candidates shard by
  shard through the top-M merge, the kept written to a pool in a temporary folder), or
* ``hold_all``: the rule before streaming (every k·M candidate in one tensor, scored, the top M taken),

and reports VmHWM − VmRSS before the selection (after a small warm-up selection, so that code pages are already
resident, and with glibc's plain allocator settings: :func:`_plain_allocator`). The streamed peak is the merge's
M image slots plus transient copies of a few shards and of the scorer's N buffered candidates. The generator is a
stub (images from their seed alone) and so is the scorer (logits from channel means, no training), so what is
measured is the selection's own memory.
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import re
import sys
import tempfile
import time
from pathlib import Path

from .core import RESULTS, STUDIES, machine, stamp, write_result


def _status(key: str) -> int:
    """A /proc/self/status field in kB."""
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


class SeedGenerator:
    """Uniform uint8 images from their seed alone (a stand-in for a diffusion generator: no model memory)."""
    generator_id = "seed-noise"

    def __init__(self, num_classes: int, shape: tuple[int, ...]):
        self.num_classes, self.image_shape = num_classes, shape

    def sample(self, labels, seeds, **_):
        import torch

        from deliberate.generation.base import SampleOutput

        images = torch.stack([torch.randint(0, 256, self.image_shape, dtype=torch.uint8,
                                            generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        return SampleOutput(images, torch.full((len(seeds),), float("nan")), {"seconds": 0.0})


class ChannelMeanScorer:
    """Logits = the first ``num_classes`` channel-and-row means, scaled: cheap, deterministic, untrained."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def predict(self, images):
        x = images.float().mean(-1).flatten(1)[:, :self.num_classes] / 32
        return x


def _select(mode: str, k: int, kept: int, args, cfg_over: list[str]) -> int:
    """Run one selection of ``kept`` of ``k``·``kept`` candidates; returns the most candidates held at once."""
    import torch

    from deliberate.config import load_config
    from deliberate.generation.guidance import entropy
    from deliberate.practice.pool import Pool
    from deliberate.practice.prune import select
    from deliberate.registry import METHODS

    gen = SeedGenerator(args.classes, (args.channels, args.size, args.size))
    scorer = ChannelMeanScorer(args.classes)
    if mode == "stream":
        cfg = load_config(None, [f"practice.oversample={k}", *cfg_over])
        spec = METHODS.build("prune", cfg, budget=kept)

        class Stub(type(spec)):
            def scorer(self, *a, **kw):
                return scorer, 0.0

        spec = Stub(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)})
        with tempfile.TemporaryDirectory() as d:
            return spec.build_pool(Pool(Path(d) / "pool"), cfg, gen)["held_peak"]
    n = kept * k  # the rule before streaming: all k·M candidates in memory
    lab = torch.arange(n) % args.classes
    images = torch.cat([gen.sample(lab[i:i + args.shard], range(i, min(n, i + args.shard))).images
                        for i in range(0, n, args.shard)])
    h = torch.cat([entropy(scorer.predict(images[i:i + args.shard])) for i in range(0, n, args.shard)])
    images[select(h, kept, "entropy", labels=lab, num_classes=args.classes)].clone()
    return n


def _plain_allocator() -> str:
    """glibc's fixed defaults (buffers above 128 kB mmap'd and returned when freed), in place of the job's
    heap-keeping ``mallopt`` (deliberate.cli.setup_process), under which the high-water mark of identical runs
    moved by ±25 MB with heap fragmentation."""
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return "default"
    mallopt(-3, 128 << 10)  # M_MMAP_THRESHOLD
    mallopt(-1, 128 << 10)  # M_TRIM_THRESHOLD
    return "glibc, mmap threshold 128 kB"


def _measure(mode: str, k: int, args, queue) -> None:
    import torch

    torch.set_num_threads(1)
    _plain_allocator()
    over = [f"practice.initial_samples={args.scorer_samples}", f"sampling.shard_size={args.shard}",
            f"learner.eval_batch_size={args.shard}", "run.device=cpu"]
    _select(mode, 2, args.scorer_samples, args, over)  # warm-up: the code paths' pages are resident before the mark
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts at the current RSS
    base = _status("VmRSS")
    t0 = time.perf_counter()
    held = _select(mode, k, args.kept, args, over)
    queue.put({"mode": mode, "k": k, "peak_mb": round((_status("VmHWM") - base) / 1024, 1), "held_peak": held,
               "seconds": round(time.perf_counter() - t0, 2)})


@STUDIES.register("prune-memory")
def main(argv: list[str]) -> int:
    """Peak resident memory of oversample-then-prune's selection at k = 2, 4, 8: streamed (flat) and all held."""
    p = argparse.ArgumentParser(prog="python -m bench prune-memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ks", default="2,4,8", help="oversampling factors k (default 2,4,8)")
    p.add_argument("--kept", type=int, default=2000, help="M, samples kept (default 2000)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--shard", type=int, default=256, help="sampling.shard_size and the scoring block (default 256)")
    p.add_argument("--scorer-samples", type=int, default=500, help="N, the scorer's candidates held (default 500)")
    p.add_argument("--out", default=str(RESULTS / "prune_memory.json"))
    args = p.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    if not Path("/proc/self/clear_refs").exists():
        print("prune-memory: needs Linux /proc (resident high-water mark)", file=sys.stderr)
        return 2
    ctx = mp.get_context("fork")
    rows = []
    for mode in ("stream", "hold_all"):
        for k in ks:
            q = ctx.Queue()
            child = ctx.Process(target=_measure, args=(mode, k, args, q))
            child.start()
            row = q.get()
            child.join()
            image_mb = args.channels * args.size ** 2 / 2 ** 20
            row["candidates_mb"] = round(args.kept * k * image_mb, 1)
            rows.append(row)
            print(f"{mode:>8} k={k}: peak +{row['peak_mb']:.1f} MB, {row['held_peak']} candidates held at once "
                  f"(all k·M = {row['candidates_mb']:.1f} MB), {row['seconds']:.1f} s", flush=True)
    kept_mb = round(args.kept * args.channels * args.size ** 2 / 2 ** 20, 1)
    write_result(Path(args.out), {
        "command": " ".join(["python -m bench prune-memory", *argv]),
        "setting": {"kept": args.kept, "image": [args.channels, args.size, args.size], "classes": args.classes,
                    "shard": args.shard, "scorer_samples": args.scorer_samples, "kept_mb": kept_mb,
                    "generator": "stub (uniform noise from the seed)", "scorer": "stub (channel means, untrained)",
                    "allocator": "glibc, mmap threshold 128 kB"},
        "rows": rows, "machine": machine(), "written": stamp()})
    return 0
