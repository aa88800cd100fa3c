"""Consistency of the class-folder path with the embedded one: Fashion-MNIST written out as PNG class folders gives
the same splits, the same generator, the same samples and the same accuracies.

    python -m bench folders-check --out DIR [--images-per-class 50] [--test-per-class N] [key=value ...]

1. The first ``--images-per-class`` train images and ``--test-per-class`` test images (default: as many) of each
   class are exported to ``DIR/data/{train,test}/<class>/<index>.png`` with ``DIR/data/classes.txt``
   (deliberate/data/export.py).
2. Splits: the folder path (``data.name=class_folders``, ``data.class_list=classes.txt``) against the embedded
   splitting code on the same images (``split_arrays``, the body of ``load_splits``; with every image exported,
   ``load_splits`` itself): the same images (bitwise), labels and positions in each of the three splits.
3. The job, twice with the same config and seeds, through ``job.run_job``: once on the embedded splits (on a subset,
   ``job.load_real_splits`` is pointed at the embedded subset splits of step 2), once on the folders, each training
   its own generator from an empty cache. Compared: the generator's weights (its id is their SHA-256), every
   method's pool (images, labels, seeds, scores), the validation curve and the final validation and held-out
   accuracies. The arithmetic is the same, so everything is expected bitwise equal; a difference is reported with
   its size.

Default settings are tiny (a 2-level generator trained 60 steps, 100 learner iterations): the check is of equality,
not of quality; ``key=value`` overrides change them. Writes ``DIR/folders_check.json``; exit status 0 when every
comparison is equal.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from .core import STUDIES, machine, stamp, write_result

TINY = [
    "data.val_size=100", "generator.block_out_channels=[16,32]", "generator.train_steps=60",
    "generator.batch_size=32", "generator.train_processes=1", "sampling.steps=5", "sampling.batch_size=100",
    "sampling.shard_size=100", "learner.batch_size=64", "learner.eval_batch_size=500", "learner.loader_workers=0",
    "practice.iterations=100", "practice.eval_every=10", "practice.initial_samples=100", "practice.add_samples=50",
    "practice.patience=1", "practice.patience_growth=0", "practice.max_samples=250", "run.progress=false",
    "run.device=cpu", "run.methods=dp,static",
]


def compare_splits(a, b) -> dict:
    """Per split: equal images (bitwise), labels and positions, and the largest pixel difference."""
    out = {}
    for name in ("gen_train", "val", "test"):
        x = a.test.read("folders-check: compare") if name == "test" else getattr(a, name)
        y = b.test.read("folders-check: compare") if name == "test" else getattr(b, name)
        same_shape = x.images.shape == y.images.shape
        out[name] = {"size": [len(x), len(y)], "images_equal": same_shape and torch.equal(x.images, y.images),
                     "labels_equal": torch.equal(x.labels, y.labels),
                     "indices_equal": bool(np.array_equal(x.indices, y.indices)),
                     "max_pixel_diff": int((x.images.int() - y.images.int()).abs().max()) if same_shape else None}
    return out


def compare_runs(a: Path, b: Path) -> dict:
    """Generators, pools, validation curves and accuracies of two run directories."""
    from deliberate.practice.pool import open_pool
    from deliberate.rundir import read_jsonl

    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    out = {"generator_id": [sa["generator"]["generator_id"], sb["generator"]["generator_id"]], "methods": {}}
    out["generator_equal"] = out["generator_id"][0] == out["generator_id"][1]
    for m in sa["methods"]:
        pa, pb = open_pool(a / "methods" / m / "pool"), open_pool(b / "methods" / m / "pool")
        xa, xb = pa.images, pb.images
        same = xa.shape == xb.shape
        curve = [[(r["iteration"], r.get("loss"), r["val_acc"]) for r in read_jsonl(d / "methods" / m / "stats.jsonl")
                  if "val_acc" in r] for d in (a, b)]
        ma, mb = sa["methods"][m], sb["methods"][m]
        out["methods"][m] = {
            "samples": [len(pa), len(pb)],
            "pool_images_equal": same and torch.equal(xa, xb),
            "pool_max_pixel_diff": int((xa.int() - xb.int()).abs().max()) if same and len(xa) else None,
            "pool_labels_seeds_scores_equal": all(np.array_equal(pa.column(k), pb.column(k), equal_nan=True)
                                                  for k in ("labels", "seeds", "score")),
            "val_curve_equal": curve[0] == curve[1],
            "val_acc": [ma["val_acc"], mb["val_acc"]], "test_acc": [ma["test_acc"], mb["test_acc"]],
            "accuracies_equal": (ma["val_acc"], ma["test_acc"]) == (mb["val_acc"], mb["test_acc"]),
        }
    return out


def all_equal(node) -> bool:
    if isinstance(node, dict):
        return all(all_equal(v) for k, v in node.items() if k.endswith("_equal") or isinstance(v, dict))
    return bool(node)


@STUDIES.register("folders-check")
def main(argv: list[str]) -> int:
    """Fashion-MNIST as PNG class folders against the embedded path: same splits, generator, samples, accuracies."""
    p = argparse.ArgumentParser(prog="python -m bench folders-check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="work folder (exported PNGs, two run directories, the result)")
    p.add_argument("--images-per-class", type=int, default=50, help="train images exported per class (6000 = all)")
    p.add_argument("--test-per-class", type=int, default=0, help="test images per class (0 = --images-per-class)")
    p.add_argument("overrides", nargs="*", help="section.key=value, after the tiny defaults")
    args = p.parse_args(argv)

    from deliberate import job
    from deliberate.config import load_config
    from deliberate.data.export import embedded_subset_splits, export_fashion_mnist
    from deliberate.data.splits import load_splits

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        p.error(f"--out {out} is not empty")
    base = TINY + list(args.overrides)
    emb_cfg = load_config(None, base + [f"generator.cache_dir={out}/cache-embedded", f"run.out_dir={out}/runs",
                                        "run.name=embedded"])
    d = emb_cfg.data
    per, per_test = args.images_per_class, args.test_per_class or args.images_per_class
    full = per >= 6000 and per_test >= 1000
    t0 = time.perf_counter()
    chosen = export_fashion_mnist(d.root, out / "data", None if full else per, None if full else per_test)
    t_export = time.perf_counter() - t0
    fold_cfg = load_config(None, base + [
        "data.name=class_folders", f"data.root={out}/data", f"data.class_list={out}/data/classes.txt",
        f"generator.cache_dir={out}/cache-folders", f"run.out_dir={out}/runs", "run.name=folders"])
    embedded = (load_splits(d.root, d.val_size, d.gen_train_size, d.split_seed) if full else
                embedded_subset_splits(d.root, chosen, d.val_size, d.gen_train_size, d.split_seed))
    t0 = time.perf_counter()
    folders = job.load_real_splits(fold_cfg)
    t_load = time.perf_counter() - t0
    splits = compare_splits(embedded, folders)
    print("splits:", json.dumps(splits), flush=True)

    fresh = lambda: embedded_subset_splits(d.root, chosen, d.val_size, d.gen_train_size, d.split_seed)  # noqa: E731
    t0 = time.perf_counter()
    if full:
        run_a = job.run_job(emb_cfg)
    else:
        with mock.patch.object(job, "load_real_splits", lambda cfg: fresh()):
            run_a = job.run_job(emb_cfg)
    t_a = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_b = job.run_job(fold_cfg)
    t_b = time.perf_counter() - t0
    runs = compare_runs(run_a, run_b)
    ok = all_equal(splits) and all_equal(runs)
    result = {"stamp": stamp(), "machine": machine(), "command": "python -m bench folders-check " + " ".join(argv),
              "images_per_class": per, "test_per_class": per_test, "full_dataset": full, "overrides": base,
              "splits": splits, "runs": runs, "run_dirs": [str(run_a), str(run_b)], "all_equal": ok,
              "seconds": {"export": round(t_export, 1), "load_folders": round(t_load, 1),
                          "job_embedded": round(t_a, 1), "job_folders": round(t_b, 1)}}
    write_result(out / "folders_check.json", result)
    for m, r in runs["methods"].items():
        print(f"{m:>8}: samples {r['samples']}  pool equal {r['pool_images_equal']}  val {r['val_acc']}  "
              f"test {r['test_acc']}  equal {r['accuracies_equal']}")
    print(f"generator equal {runs['generator_equal']} ({runs['generator_id'][0]}); "
          f"{'ALL EQUAL' if ok else 'DIFFERENCES (see folders_check.json)'}: {out / 'folders_check.json'}")
    return 0 if ok else 1
