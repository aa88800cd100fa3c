"""Pool scale: peak resident memory and training-input throughput of the in-RAM pool and the disk-backed pool.

    python -m bench pool-scale             # writes bench/results/pool_scale.json (tens of GB of scratch files)
    python -m bench pool-scale --quick     # small sizes only, for a check

For each image shape and pool size a synthetic pool (random uint8 bytes, real shard and manifest format) is grown
in ``--dir`` and each pool kind is measured in a fresh subprocess:

* ``in_ram``: :class:`~deliberate.practice.pool.MemoryPool`, the previous pool (every image in one tensor);
* ``disk``: :class:`~deliberate.practice.pool.Pool`, shards read lazily with positioned reads.

Both feed training through the same :class:`~deliberate.practice.loader.TrainFeed` (the loop's code path:
uniform draws over the pool, reads and uint8 augmentation in ``learner.loader_workers`` forked workers, default
config), so the pool's storage is the only difference. ``images_per_s``: images delivered to the training step per
second (after warm-up batches), no model step. ``rss_mb``: peak resident set of the training process (``ru_maxrss``,
over opening the pool and feeding: ``VmHWM``); ``workers_rss_mb``: the largest worker's (a forked worker's
resident set counts the pages it shares with its parent). The shards were just written, as in a run (a round
appends shards, then training reads them), so they are mostly in the page cache; ``disk_cold`` repeats the
largest size of each shape with its shards evicted first (reads from the device). The in-RAM pool reads
every shard when it opens.

``readers`` compares three ways to read random samples from shards, in-process, over one epoch's worth of uniform
draws: positioned reads of safetensors (what the pool does), memory-mapped safetensors and WebDataset-style tar
shards (one member per sample, random access through an index of member offsets), each from a cold page cache.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .core import RESULTS, ROOT, STUDIES

SHARD = 1000  # samples per shard (sampling.shard_size's default)
FULL = {"28x28": {"shape": (1, 28, 28), "sizes": [10_000, 100_000, 1_000_000]},
        "224x224x3": {"shape": (3, 224, 224), "sizes": [10_000, 30_000, 100_000]}}
QUICK = {"28x28": {"shape": (1, 28, 28), "sizes": [2_000, 20_000]},
         "224x224x3": {"shape": (3, 224, 224), "sizes": [1_000, 3_000]}}
IN_RAM_LIMIT_GB = 12.0  # in_ram is measured only where its peak (2× the pool while concatenating) fits under this


def rss_mb(pid: int | str = "self") -> float:
    """Peak resident set (VmHWM) of a process, MB. (Not ``ru_maxrss``: after fork and exec it keeps the parent's.)"""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def grow_synthetic(root: Path, shape: tuple, target: int, seed: int = 0) -> None:
    """Append shards of random uint8 images to the pool at ``root`` (shard and manifest format of Pool.append,
    per-sample fingerprints left out) until it holds ``target`` samples."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from deliberate.practice.pool import MANIFEST, sha256_file

    root.mkdir(parents=True, exist_ok=True)
    man = root / MANIFEST
    have = sum(json.loads(x)["count"] for x in man.read_text().splitlines()) if man.exists() else 0
    rng = np.random.default_rng(seed + have)
    with open(man, "a") as f:
        for start in range(have, target, SHARD):
            n = min(SHARD, target - start)
            images = torch.from_numpy(rng.integers(0, 256, (n, *shape), dtype=np.uint8))
            labels = torch.arange(start, start + n) % 10
            name = f"r000-{start:09d}.safetensors"
            save_file({"images": images, "labels": labels, "seeds": torch.arange(start, start + n),
                       "score": torch.zeros(n)}, root / name)
            rec = {"shard": name, "sha256": sha256_file(root / name), "start": start, "count": n, "round": 0,
                   "omega": 0.0, "cfg_scale": 0.0, "steps": 0, "generator_id": "synthetic", "chunk": 0, "env": {},
                   "labels": labels.tolist(), "seeds": list(range(start, start + n)), "score": [0.0] * n}
            f.write(json.dumps(rec) + "\n")


# ----------------------------------------------------------------------------------------------- measurement
def measure_feed(kind: str, root: str, batches: int, warmup: int) -> dict:
    """In a fresh process: open the pool, feed ``batches`` training batches through TrainFeed."""
    import torch

    from deliberate.config import load_config
    from deliberate.learning.learner import Learner
    from deliberate.practice.loader import TrainFeed
    from deliberate.practice.pool import MemoryPool, Pool

    torch.set_num_threads(1)
    cfg = load_config(None, ["run.device=cpu"])
    t0 = time.perf_counter()
    pool = (MemoryPool if kind == "in_ram" else Pool)(root)
    open_s = time.perf_counter() - t0
    learner = Learner(cfg.learner, 10, pool.sample_shape[0], 1000, "cpu", seed=0)
    rng = torch.Generator().manual_seed(17)
    feed = TrainFeed(pool, learner, rng, cfg.learner.batch_size, cfg.learner.loader_workers)
    for _ in range(warmup):
        feed.next()
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        images, _labels = feed.next()
        n += len(images)
    secs = time.perf_counter() - t0
    workers = [w.pid for w in getattr(feed._it, "_workers", [])]
    workers_rss = max((rss_mb(pid) for pid in workers), default=0.0)
    feed.close()
    return {"rss_mb": round(rss_mb(), 1), "workers_rss_mb": round(workers_rss, 1),
            "images_per_s": round(n / secs, 1), "batches": batches, "batch_size": cfg.learner.batch_size,
            "workers": cfg.learner.loader_workers, "open_s": round(open_s, 2), "pool": len(pool)}


def make_tar(root: Path, out: Path) -> None:
    """WebDataset-style copies of the shards: one tar per shard, members ``{key}.npy`` (raw image bytes) and
    ``{key}.cls``."""
    import io
    import tarfile

    from deliberate.practice.pool import Pool

    pool = Pool(root)
    out.mkdir(parents=True, exist_ok=True)
    for k, rec in enumerate(pool.records):
        path = out / rec["shard"].replace(".safetensors", ".tar")
        if path.exists():
            continue
        shard = pool._shards[k]
        images = shard.read_tensor("images")
        labels = shard.read_tensor("labels")
        with tarfile.open(path, "w") as tf:
            for i in range(rec["count"]):
                key = f"{rec['start'] + i:09d}"
                for name, data in ((f"{key}.npy", images[i].tobytes()), (f"{key}.cls", str(int(labels[i])).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))


def measure_reader(reader: str, root: str, tar_dir: str, draws: int) -> dict:
    """In a fresh process: ``draws`` uniform random samples (batches of 128) through one reader, in-process."""
    import mmap
    import tarfile

    import numpy as np
    import torch

    from deliberate.practice.pool import Pool

    pool = Pool(root)
    n, shape = len(pool), pool.sample_shape
    starts = pool._starts
    if reader == "mmap_safetensors":
        arrays = []
        for s in pool._shards:
            with open(s.path, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            arrays.append(np.frombuffer(mm, np.uint8, s.count * s.row, s.offset).reshape(s.count, *shape))

        def get(idx):
            which = np.searchsorted(starts, idx, side="right") - 1
            return np.stack([arrays[w][i - starts[w]] for w, i in zip(which, idx)])
    elif reader == "tar":
        index = []  # per tar: (path, {member offset of sample i})
        for rec in pool.records:
            path = Path(tar_dir) / rec["shard"].replace(".safetensors", ".tar")
            with tarfile.open(path) as tf:
                offs = [m.offset_data for m in tf.getmembers() if m.name.endswith(".npy")]
            index.append((os.open(path, os.O_RDONLY), offs))
        row = int(np.prod(shape))

        def get(idx):
            which = np.searchsorted(starts, idx, side="right") - 1
            out = np.empty((len(idx), row), np.uint8)
            for k, (w, i) in enumerate(zip(which, idx)):
                fd, offs = index[w]
                os.preadv(fd, [out[k]], offs[i - starts[w]])
            return out.reshape(len(idx), *shape)
    else:
        def get(idx):
            return pool.get(torch.from_numpy(idx))[0]
    g = np.random.default_rng(0)
    t0 = time.perf_counter()
    done = 0
    while done < draws:
        get(g.integers(0, n, 128))
        done += 128
    secs = time.perf_counter() - t0
    return {"rss_mb": round(rss_mb(), 1), "images_per_s": round(done / secs, 1), "draws": done, "pool": n}


def in_child(args: list[str], timeout: int = 1800) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench", "pool-scale", *args], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"{args}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def drop_file_cache(*roots: Path) -> None:
    """Evict shards from the page cache (POSIX_FADV_DONTNEED), so every measurement starts cold."""
    for p in (p for root in roots for p in root.glob("*") if p.suffix in (".safetensors", ".tar")):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@STUDIES.register("pool-scale")
def main(argv: list[str]) -> int:
    """Peak resident memory and training-input throughput of the in-RAM and the disk-backed pool, by pool size."""
    ap = argparse.ArgumentParser(prog="python -m bench pool-scale", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", default="/tmp/deliberate-pool-scale", help="scratch directory (removed at the end)")
    ap.add_argument("--out", default=str(RESULTS / "pool_scale.json"))
    ap.add_argument("--keep", action="store_true", help="keep the scratch files")
    ap.add_argument("--measure", nargs=2, metavar=("KIND", "ROOT"), help=argparse.SUPPRESS)
    ap.add_argument("--reader", nargs=3, metavar=("READER", "ROOT", "TAR"), help=argparse.SUPPRESS)
    ap.add_argument("--batches", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--draws", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.measure:  # a child of in_child
        print(json.dumps(measure_feed(a.measure[0], a.measure[1], a.batches, warmup=5)))
        return 0
    if a.reader:
        print(json.dumps(measure_reader(*a.reader, a.draws)))
        return 0

    import torch

    from deliberate.config import Config

    plan = QUICK if a.quick else FULL
    scratch = Path(a.dir)
    result = {"command": "python -m bench pool-scale" + (" --quick" if a.quick else ""),
              "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                          "loader_workers": Config().learner.loader_workers,
                          "batch_size": Config().learner.batch_size},
              "kinds": {"in_ram": {}, "disk": {}, "disk_cold": {}}, "not_measured": {}, "readers": {}}
    try:
        for name, spec in plan.items():
            shape = spec["shape"]
            root = scratch / name / "pool"
            bytes_per = int(torch.tensor(shape).prod())
            batches = 300 if bytes_per < 10_000 else 40
            for size in spec["sizes"]:
                t0 = time.perf_counter()
                grow_synthetic(root, shape, size)
                print(f"{name} {size}: pool written in {time.perf_counter() - t0:.0f} s", flush=True)
                for kind in ("in_ram", "disk"):
                    key = f"{name}/{size}"
                    gb = 2 * size * bytes_per / 2**30
                    if kind == "in_ram" and gb > IN_RAM_LIMIT_GB:
                        result["not_measured"][f"in_ram/{key}"] = (
                            f"the in-RAM pool holds {size * bytes_per / 2**30:.1f} GiB (peak {gb:.1f} GiB while it "
                            f"concatenates its shards), more than this machine may use ({IN_RAM_LIMIT_GB:g} GiB); "
                            f"its RSS is that, by construction")
                        continue
                    r = in_child(["--measure", kind, str(root), "--batches", str(batches)])
                    result["kinds"][kind][key] = r
                    print(f"  {kind:>6}: rss {r['rss_mb']:.0f} MB (workers {r['workers_rss_mb']:.0f}), "
                          f"{r['images_per_s']:.0f} images/s, open {r['open_s']} s", flush=True)
                if size == spec["sizes"][-1]:  # the largest pool again, its shards evicted from the page cache
                    drop_file_cache(root)
                    r = in_child(["--measure", "disk", str(root), "--batches", str(batches)])
                    result["kinds"]["disk_cold"][f"{name}/{size}"] = r
                    print(f"  disk, cold page cache: rss {r['rss_mb']:.0f} MB, {r['images_per_s']:.0f} images/s",
                          flush=True)
            # readers: at the middle size of 28x28 and the smallest of 224x224x3
            rsize = spec["sizes"][1] if name == "28x28" else spec["sizes"][0]
            rroot = scratch / name / f"readers-{rsize}"
            grow_synthetic(rroot, shape, rsize, seed=1)
            make_tar(rroot, scratch / name / f"tar-{rsize}")
            for reader in ("pread_safetensors", "mmap_safetensors", "tar"):
                drop_file_cache(rroot, scratch / name / f"tar-{rsize}")
                r = in_child(["--reader", reader, str(rroot), str(scratch / name / f"tar-{rsize}"),
                              "--draws", str(rsize)])
                result["readers"][f"{name}/{rsize}/{reader}"] = r
                print(f"  reader {reader:>18} ({name}, {rsize}): rss {r['rss_mb']:.0f} MB, "
                      f"{r['images_per_s']:.0f} images/s", flush=True)
            shutil.rmtree(rroot, ignore_errors=True)
            shutil.rmtree(scratch / name / f"tar-{rsize}", ignore_errors=True)
    finally:
        if not a.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    result["goals"] = goals(result, plan)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["goals"], indent=1))
    return 0


def goals(result: dict, plan: dict) -> dict:
    """RSS flat (largest ≤ 1.5× smallest, per shape, disk pool) and disk throughput ≥ 0.8× in-RAM at 28x28."""
    out = {}
    for name, spec in plan.items():
        disk = [result["kinds"]["disk"][f"{name}/{s}"] for s in spec["sizes"]]
        ratio = max(d["rss_mb"] for d in disk) / min(d["rss_mb"] for d in disk)
        out[f"{name}/disk_rss_largest_over_smallest"] = round(ratio, 3)
        out[f"{name}/disk_rss_flat"] = ratio <= 1.5
        tp = {}
        for s in spec["sizes"]:
            ram = result["kinds"]["in_ram"].get(f"{name}/{s}")
            if ram:
                tp[s] = round(result["kinds"]["disk"][f"{name}/{s}"]["images_per_s"] / ram["images_per_s"], 3)
        out[f"{name}/disk_over_in_ram_images_per_s"] = tp
        if name == "28x28":
            out["28x28/throughput_at_least_0.8x"] = all(v >= 0.8 for v in tp.values())
    return out

