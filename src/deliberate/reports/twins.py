"""Added samples beside their plain twins: what DP's guidance changed, sample by sample.

Sample i of every pool has label i mod C and seed ``sampling.seed_offset + i`` (practice/loop.py: ``grow``), so each
guided sample DP added (ω > 0 in its pool manifest) has a *plain twin*: the sample of the same (label, seed) and
sampling settings with ω = 0, i.e. what the generator gives without the learner's entropy gradient (Eq. 7). A pool
of another method of the run often holds it already (static, sized by DP, holds every position DP filled, unguided),
found by (label, seed) and the shard's generator and sampling settings; otherwise it is sampled again with the run's
generator and ``sampling`` settings — only on request (``deliberate report RUN_DIR --sample-twins``), because every
model call costs ``sampling.batch_size`` slots (index-aligned chunks, generation/base.py).

Under each image the report writes the final DP learner's prediction and entropy (Eq. 6, nats) and, where a
real-data reference classifier is cached for this run's learner settings and data (evaluation.obtain_reference,
under the generator cache's parent ``reference/``), its prediction. None is ever trained for the report.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from ..config import load_config
from ..data.splits import CLASSES
from ..generation.base import GeneratorError, sampling_kwargs
from ..generation.guidance import entropy
from ..practice.pool import MANIFEST, Pool
from ..rundir import read_jsonl

MATCH = ("generator_id", "cfg_scale", "steps", "chunk", "solver")  # shard fields that fix a sample with its seed


@dataclass
class Twins:
    """Guided samples of DP's pool and their plain twins, index-aligned, with the classifiers' readings."""

    guided: torch.Tensor  # uint8 (K, C, H, W)
    plain: torch.Tensor
    labels: torch.Tensor  # intended labels (K,)
    seeds: list[int]
    rounds: list[int]
    sources: list[str]  # where each twin came from: "pool:<method>" or "sampled"
    missing: int = 0  # chosen guided samples whose twin no pool holds (not sampled: no --sample-twins)
    replaced: int = 0  # guided samples the label check replaced by their plain twin (identical: not shown)
    readings: dict = field(default_factory=dict)  # {"learner"|"reference": {"guided"|"plain": (pred, entropy)}}
    reference_info: dict | None = None


def _guided(records: list[dict]) -> tuple[list[dict], int]:
    """Every guided sample of a manifest (position, label, seed, round, shard settings), and how many the label
    check replaced (skipped)."""
    out, replaced = [], 0
    for rec in records:
        if not rec["omega"] > 0:
            continue
        skip = set(rec.get("replaced") or [])
        replaced += len(skip)
        key = tuple(rec.get(f) for f in MATCH)
        out += [{"pos": rec["start"] + j, "label": int(lab), "seed": int(sd), "round": rec["round"], "key": key}
                for j, (lab, sd) in enumerate(zip(rec["labels"], rec["seeds"])) if j not in skip]
    return out, replaced


def choose(guided: list[dict], per_class: int) -> list[dict]:
    """Up to ``per_class`` guided samples of each class, from the last round back (the first ones of a round)."""
    taken: dict[int, list[dict]] = {}
    for r in sorted({g["round"] for g in guided}, reverse=True):
        for g in guided:
            if g["round"] == r and len(taken.setdefault(g["label"], [])) < per_class:
                taken[g["label"]].append(g)
    return [g for c in sorted(taken) for g in sorted(taken[c], key=lambda g: g["pos"])]


def plain_index(run_dir: Path, skip: str = "dp") -> dict[tuple, tuple[str, int]]:
    """(label, seed, shard settings) → (method, pool position) of every plain (ω = 0) sample of the other methods'
    pools."""
    index: dict[tuple, tuple[str, int]] = {}
    for mdir in sorted((run_dir / "methods").iterdir()):
        if mdir.name == skip or not (mdir / "pool" / MANIFEST).exists():
            continue
        for rec in read_jsonl(mdir / "pool" / MANIFEST):
            if rec["omega"] != 0:
                continue
            key = tuple(rec.get(f) for f in MATCH)
            for j, (lab, sd) in enumerate(zip(rec["labels"], rec["seeds"])):
                index.setdefault((int(lab), int(sd), key), (mdir.name, rec["start"] + j))
    return index


def run_generator(cfg, run_dir: Path, device):
    """The run's generator, re-obtained from the path ``generator.json`` records (never trained here)."""
    from ..job import load_real_splits, obtain_generator

    rec = json.loads((run_dir / "generator.json").read_text())
    cfg = copy.deepcopy(cfg)
    cfg.generator.path = rec["path"]
    gen, info = obtain_generator(cfg, load_real_splits(cfg), device, False)
    if info["generator_id"] != rec["generator_id"]:
        raise GeneratorError(f"generator at {rec['path']} is {info['generator_id']}, but run {run_dir} was made "
                             f"with {rec['generator_id']}")
    return gen


def class_names(run_dir: Path) -> tuple[str, ...]:
    meta = json.loads((run_dir / "splits.json").read_text()) if (run_dir / "splits.json").exists() else {}
    return tuple(meta.get("classes") or CLASSES)


def final_learner(cfg, run_dir: Path, num_classes: int, channels: int, method: str = "dp"):
    """The final learner of ``method`` (its saved eval weights) on the CPU."""
    from safetensors.torch import load_file

    from ..learning.learner import Learner

    learner = Learner(cfg.learner, num_classes, channels, cfg.practice.iterations, "cpu", seed=cfg.run.seed)
    learner.eval_model.load_state_dict(load_file(run_dir / "methods" / method / "model.safetensors"))
    return learner


def cached_reference(cfg, run_dir: Path, num_classes: int, channels: int):
    """(reference classifier, info) cached for this run's learner settings and data, the longest-trained one, or
    None. Only a directory whose name is the key this run would ask for is taken, so obtain_reference loads it."""
    from ..evaluation import _reference_key, obtain_reference

    cache = Path(cfg.generator.cache_dir).parent / "reference"
    meta = json.loads((run_dir / "splits.json").read_text())
    found = []
    for f in sorted(cache.glob("*/reference.json")) if cache.is_dir() else []:
        info = json.loads(f.read_text())
        if (f.parent / "model.safetensors").exists() and \
                _reference_key(cfg, meta, info["iterations"], info["seed"]) == f.parent.name:
            found.append(info)
    if not found:
        return None
    best = max(found, key=lambda i: i["iterations"])
    like = SimpleNamespace(meta=meta, num_classes=num_classes,
                           gen_train=SimpleNamespace(images=torch.zeros((0, channels, 1, 1), dtype=torch.uint8)))
    return obtain_reference(cfg, like, "cpu", best["iterations"], cache, seed=best["seed"])


def _readings(clf, guided: torch.Tensor, plain: torch.Tensor) -> dict:
    out = {}
    for name, x in (("guided", guided), ("plain", plain)):
        logits = clf.predict(x).float()
        out[name] = (logits.argmax(-1), entropy(logits))
    return out


def make_twins(run_dir: str | Path, per_class: int = 4, sample: bool = False, generator=None) -> Twins | None:
    """The guided samples to show (:func:`choose`) and their plain twins, from the run's pools or, with ``sample``,
    sampled with ω = 0 (``generator``: the run's, re-obtained from ``generator.json`` when not given); None where DP
    added no guided sample."""
    run_dir = Path(run_dir)
    dp_dir = run_dir / "methods" / "dp" / "pool"
    if not (dp_dir / MANIFEST).exists():
        return None
    guided, replaced = _guided(read_jsonl(dp_dir / MANIFEST))
    chosen = choose(guided, per_class)
    if not chosen:
        return None
    cfg = load_config(run_dir / "config.yaml")
    dp = Pool(dp_dir)
    index = plain_index(run_dir)
    hits = [index.get((g["label"], g["seed"], g["key"])) for g in chosen]
    plain = torch.zeros((len(chosen), *dp.sample_shape), dtype=torch.uint8)
    sources = [f"pool:{h[0]}" if h else "" for h in hits]
    for method in {h[0] for h in hits if h}:
        rows = [k for k, h in enumerate(hits) if h and h[0] == method]
        pool = Pool(run_dir / "methods" / method / "pool")
        plain[rows] = pool.get(torch.tensor([hits[k][1] for k in rows]))[0]
    todo = [k for k, h in enumerate(hits) if not h]
    if todo and sample:
        from ..job import resolve_device

        gen = generator if generator is not None else run_generator(cfg, run_dir, resolve_device(cfg.run.device))
        out = gen.sample(torch.tensor([chosen[k]["label"] for k in todo]), [chosen[k]["seed"] for k in todo],
                         **sampling_kwargs(cfg.sampling))  # no guide: ω = 0
        plain[todo] = out.images
        for k in todo:
            sources[k] = "sampled"
        todo = []
    keep = [k for k in range(len(chosen)) if k not in set(todo)]
    if not keep:
        return Twins(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long), [], [], [], len(todo), replaced)
    sel = [chosen[k] for k in keep]
    tw = Twins(guided=dp.get(torch.tensor([g["pos"] for g in sel]))[0], plain=plain[keep],
               labels=torch.tensor([g["label"] for g in sel]), seeds=[g["seed"] for g in sel],
               rounds=[g["round"] for g in sel], sources=[sources[k] for k in keep], missing=len(todo),
               replaced=replaced)
    names = class_names(run_dir)
    channels = int(dp.sample_shape[0])
    tw.readings["learner"] = _readings(final_learner(cfg, run_dir, len(names), channels), tw.guided, tw.plain)
    ref = cached_reference(cfg, run_dir, len(names), channels)
    if ref is not None:
        tw.readings["reference"] = _readings(ref[0], tw.guided, tw.plain)
        tw.reference_info = ref[1]
    return tw
