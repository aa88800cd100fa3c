"""The benchmark's run machinery: one :class:`Bench` per invocation, one :class:`RunSpec` per training run.

A run is fixed by (method, config overrides, pool budget); its id hashes those, so a plan that asks for the same
run twice (the ω sweep's ω* point is also a DP ladder point, say) runs it once, and a rerun of the benchmark skips
every run already recorded under ``<work>/runs/<id>/record.json``. Records hold validation numbers only; the
held-out test split and its corrupted copies are read in :meth:`Bench.evaluate`, after every run has finished,
and written beside them (``eval.json``). Choices (ω, schedule, DDIM steps, the key DP setting) read records only.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from deliberate.checkpoint import config_changes
from deliberate.config import load_config
from deliberate.evaluation import label_fidelity, obtain_reference, ood_sets, round_stats
from deliberate.generation.ddim import SAMPLER_VERSION
from deliberate.learning.learner import Learner
from deliberate.practice.loop import practice
from deliberate.practice.pool import Pool
from deliberate.registry import METHODS
from deliberate.rundir import JsonlLog, read_jsonl, write_json

from .core import setup
from .samplecache import CachedGenerator, SampleCache


@dataclass(frozen=True)
class RunSpec:
    method: str
    overrides: tuple[str, ...] = ()
    budget: int | None = None  # pool size of static / prune (kept size M)
    tags: tuple[str, ...] = field(default=(), compare=False)

    @property
    def id(self) -> str:
        blob = json.dumps([self.method, sorted(self.overrides), self.budget])
        return f"{self.method}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def setting(self) -> dict:
        out = {}
        for o in self.overrides:
            k, v = o.split("=", 1)
            out[k] = v
        return out


class Bench:
    def __init__(self, mode, work: Path, device: str | None = None, progress: bool = False, log=print,
                 extra_overrides: list[str] | None = None):
        """The device is the config's ``run.device``; ``device`` (a study's ``--device``), when given, sets it."""
        self.mode, self.work, self.progress, self.log = mode, Path(work), progress, log
        self.base = list(mode.base) + list(mode.generator) + list(extra_overrides or []) + (
            [f"run.device={device}"] if device else [])
        cfg = load_config(None, self.base)
        self.cfg0 = cfg
        t0 = time.perf_counter()
        s = setup(cfg, progress=progress)
        self.splits, self.device, gen, self.gen_info = s.splits, s.device, s.generator, s.gen_info
        self.gen_info["obtain_seconds"] = round(time.perf_counter() - t0, 1)
        cache_root = Path(cfg.generator.cache_dir).parent
        self.cache = SampleCache(cache_root / "bench-samples")
        self.gen = CachedGenerator(gen, self.cache)
        self.reference, self.ref_info = obtain_reference(cfg, self.splits, self.device, mode.reference_iterations,
                                                         cache_root / "reference", progress=progress)
        self.runs_dir = self.work / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict] = {}

    def config(self, overrides=()):
        return load_config(None, self.base + list(overrides))

    # ----------------------------------------------------------------------------------------------- runs
    def run(self, spec: RunSpec) -> dict:
        """Train one run (or load its record); returns the record (validation numbers only)."""
        d = self.runs_dir / spec.id
        rec_file = d / "record.json"
        cfg = self.config(spec.overrides)
        if rec_file.exists():
            rec = json.loads(rec_file.read_text())
            # the id hashes the run's own overrides; the mode's base settings are checked here, so that a record
            # made under other settings (a mode edited since, say) is run again rather than silently reused
            changes = config_changes(rec["config"], cfg.to_dict()) if "config" in rec else ["(no config recorded)"]
            if rec.get("sampler") != SAMPLER_VERSION:  # samples made by another sampler: never reused
                changes.append(f"sampler version {rec.get('sampler')} → {SAMPLER_VERSION}")
            if not changes:
                # tags merged in memory by earlier requests of this run in the same invocation are kept too
                known = self.records.get(spec.id, {}).get("tags", [])
                rec["tags"] = sorted(set(rec.get("tags", [])) | set(known) | set(spec.tags))
                self.records[spec.id] = rec
                return rec
            self.log(f"  stale record {spec.id} ({'; '.join(changes)[:200]}): running it again")
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        torch.manual_seed(cfg.run.seed)
        mspec = METHODS.build(spec.method, cfg, budget=spec.budget)
        learner = Learner(cfg.learner, self.splits.num_classes, self.gen.image_shape[0], cfg.practice.iterations,
                          self.device, seed=cfg.run.seed)
        pool = Pool(d / "pool")
        before = dict(self.gen.counts)
        self.log(f"  run {spec.id} {spec.method} {' '.join(spec.overrides)}"
                 + (f" budget={spec.budget}" if spec.budget else ""))
        t0 = time.perf_counter()
        res = practice(mspec, cfg, self.gen, learner, self.splits.val, pool, log=JsonlLog(d / "stats.jsonl"),
                       progress=self.progress)
        wall = time.perf_counter() - t0
        save_file({k: v.contiguous() for k, v in learner.eval_model.state_dict().items()}, d / "model.safetensors")
        rounds = round_stats(pool, self.reference)
        stats = read_jsonl(d / "stats.jsonl")
        omega = pool.column("omega").astype(float)
        guided = int((omega > 0).sum())
        cost = mspec.cost(len(pool))  # samples generated (k·M candidates for a pruned pool), helper training
        generated = cost["generated"]
        rec = {
            "id": spec.id, "method": spec.method, "overrides": list(spec.overrides), "budget": spec.budget,
            "tags": sorted(spec.tags), "setting": spec.setting(),
            "seed": cfg.run.seed, "iterations": res.iterations, "eval_every": cfg.practice.eval_every,
            "val_acc": res.val_acc, "best_val_acc": res.best_val_acc, "val_size": len(self.splits.val),
            "samples": res.samples, "generated": generated, "guided": guided, "plain": generated - guided,
            "rounds": res.rounds, "evaluations": len(stats), "steps": cfg.sampling.steps,
            "guidance": {"omega": mspec.omega, "every": cfg.guidance.every, "window": list(cfg.guidance.window),
                         "grad": cfg.guidance.grad, "scale": cfg.guidance.scale},
            "scorer_iterations": cost["scorer_iterations"], "oversample": cost["oversample"],
            "seconds": res.seconds, "wall_seconds": round(wall, 2),
            "generation_actual_seconds": round(self.gen.counts["actual_seconds"] - before["actual_seconds"], 2),
            "cache_hits": self.gen.counts["hits"] - before["hits"],
            "nonfinite_grads": res.nonfinite_grads,
            "round_stats": rounds,
            "label_fidelity": label_fidelity(self.reference, pool.images, pool.labels),
            "curve": [{"iteration": r["iteration"], "val_acc": r["val_acc"], "pool": r["pool"]} for r in stats],
            "config": cfg.to_dict(),
            "sampler": SAMPLER_VERSION,
            # the pool's samples per class (for a pruned pool: the kept ones; a grown pool cycles the labels)
            "kept_per_class": np.bincount(pool.column("labels").astype(int),
                                          minlength=self.splits.num_classes).tolist(),
        }
        write_json(rec_file, rec)
        for shard in (d / "pool").glob("*.safetensors"):  # the samples live on in the sample cache
            shard.unlink()
        self.records[spec.id] = rec
        self.log(f"    val {rec['val_acc']:.4f}  samples {rec['samples']} (generated {generated}, guided {guided})  "
                 f"rounds {rec['rounds']}  fidelity {rec['label_fidelity']:.3f}  {wall:.0f}s")
        return rec

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict:
        """Held-out test accuracy and OOD accuracy (corrupted test copies) of every recorded run and of the
        real-data reference: the benchmark's only read of the test split."""
        test = self.splits.test.read("bench: final evaluation of every run (held-out test + corrupted copies)")
        sets = ood_sets(test, seed=0, size=self.mode.ood_size)
        out = {}
        for rid, rec in sorted(self.records.items()):
            d = self.runs_dir / rid
            f = d / "eval.json"
            if f.exists():
                out[rid] = json.loads(f.read_text())
                continue
            cfg = self.config(rec["overrides"])
            learner = Learner(cfg.learner, self.splits.num_classes, self.gen.image_shape[0], 1, self.device)
            learner.eval_model.load_state_dict(load_file(d / "model.safetensors"))
            ev = {"test_acc": learner.accuracy(test.images, test.labels),
                  "ood": {k: learner.accuracy(s.images, s.labels) for k, s in sets.items()}}
            write_json(f, ev)
            out[rid] = ev
        ref = {"test_acc": self.reference.accuracy(test.images, test.labels),
               "ood": {k: self.reference.accuracy(s.images, s.labels) for k, s in sets.items()}}
        return {"runs": out, "reference": ref, "ood_size": len(next(iter(sets.values()))) if sets else 0,
                "test_reads": list(self.splits.test.read_log)}
