"""The card of a generator: label fidelity, precision/recall and FID/KID of its plain samples, static accuracy.

    python -m bench generator-card [--pool RUN_DIR/methods/static/pool] [--first 3000] [--out FILE] [key=value ...]

The plain samples are the first ``--first`` of a pool the job made with this generator (a scaling-study trunk, say:
no sampling here), or, without ``--pool``, sampled now (sample i: label i mod C, seed i, the config's sampler and λ).
Measured against the *validation* split with the real-data reference classifier (deliberate.evaluation): share on
the intended label, improved precision / recall (Kynkäänniemi et al. 2019, k = 3, per class, reference features),
FID and KID in the reference's feature space. Static accuracy is read from the scaling study's committed cells of
the same generator id (``bench/results/scaling/cells``), never recomputed here. Writes a JSON (default
``bench/results/generator_card.json``) with the generator's metadata, its files' SHA-256 when it is the shipped
one, and the command.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .core import RESULTS, STUDIES, machine, setup, stamp, write_result
from .generator_classes import features, precision_recall


@STUDIES.register("generator-card")
def main(argv: list[str]) -> int:
    """Label fidelity, precision/recall, FID/KID and static accuracy of a generator's plain samples."""
    p = argparse.ArgumentParser(prog="python -m bench generator-card", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", default="", help="a pool directory made with this generator (default: sample now)")
    p.add_argument("--first", type=int, default=3000, help="plain samples to judge (default 3000)")
    p.add_argument("--out", default=str(RESULTS / "generator_card.json"))
    p.add_argument("--cells", default=str(RESULTS / "scaling" / "cells"))
    p.add_argument("--reference-cache", default="", help="reference classifier cache (default: beside the generator "
                                                        "cache)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    import torch

    from deliberate.config import ConfigError, load_config
    from deliberate.evaluation import fid_kid, obtain_reference
    from deliberate.generation.base import sampling_kwargs
    from deliberate.generation.shipped import SHIPPED
    from deliberate.practice.pool import open_pool

    try:
        cfg = load_config(None, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    su = setup(cfg, generator=True)
    ref_dir = Path(args.reference_cache) if args.reference_cache else Path(cfg.generator.cache_dir).parent / "reference"
    reference, ref_info = obtain_reference(cfg, su.splits, su.device, 2000, ref_dir)
    C = su.splits.num_classes
    if args.pool:
        pool = open_pool(args.pool)
        n = min(args.first, len(pool))
        images, labels = pool.get(torch.arange(n))
        made = {r["generator_id"] for r in pool.records[: -(-n // max(1, pool.records[0]["count"]))]}
        if made != {su.gen_info["generator_id"]}:
            raise SystemExit(f"{args.pool} was made by {sorted(made)}, the config's generator is "
                             f"{su.gen_info['generator_id']}")
        source = f"first {n} samples of {args.pool}"
    else:
        labels = torch.arange(args.first) % C
        images = su.generator.sample(labels, [cfg.sampling.seed_offset + i for i in range(args.first)],
                                     **sampling_kwargs(cfg.sampling)).images
        source = f"{args.first} plain samples drawn now"
    val = su.splits.val  # validation only: the held-out split is never read here
    logits, f_fake = features(reference, images)
    _, f_real = features(reference, val.images)
    on = (logits.argmax(-1) == labels).float()
    pr = [precision_recall(f_real[val.labels == c], f_fake[labels == c]) for c in range(C)]
    fk = fid_kid(reference, val.images, images)
    gid = su.gen_info["generator_id"]
    cells = [json.loads(f.read_text()) for f in sorted(Path(args.cells).glob("*.json"))]
    static = [{k: c[k] for k in ("cell", "seed", "size", "iterations", "val_acc", "test_acc")}
              for c in cells if c.get("generator_id") == gid and c["method"] == "static"]
    shipped = next(({"key": k, **v} for k, v in SHIPPED.items() if v["generator_id"] == gid), None)
    card = {
        "generator_id": gid, "generator": su.gen_info, "shipped": shipped, "samples": source,
        "sampling": {"solver": cfg.sampling.solver, "steps": cfg.sampling.steps, "cfg_scale": cfg.sampling.cfg_scale},
        "reference": {"val_acc": ref_info["val_acc"], "iterations": ref_info["iterations"]},
        "plain_on_label": round(float(on.mean()), 4),
        "plain_on_label_per_class": [round(float(on[labels == c].mean()), 4) for c in range(C)],
        "precision": round(sum(p for p, _ in pr) / C, 4), "recall": round(sum(r for _, r in pr) / C, 4),
        "precision_recall_per_class": [[round(p, 4), round(r, 4)] for p, r in pr],
        "fid_kid_vs_val": fk, "static_cells": static, "classes": list(su.splits.classes),
        "seconds": round(time.perf_counter() - t0, 1), "machine": machine(), "written": stamp(),
        "command": "python -m bench generator-card " + " ".join(argv),
    }
    write_result(Path(args.out), card)
    print(f"{gid}: on-label {card['plain_on_label']:.4f}, precision {card['precision']:.3f}, recall "
          f"{card['recall']:.3f}, FID {fk['fid']:.2f}, KID×1000 {fk['kid_x1000']:.2f}; {len(static)} static cells → "
          f"{args.out}")
    return 0
