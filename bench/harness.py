"""The benchmark's runs: one :class:`Bench` per invocation, one :class:`RunSpec` per training run.

Every run is a job of one method (:func:`deliberate.job.run_job`) in ``<work>/runs/<id>``: a benchmark cell *is* a
run directory (``deliberate check`` verifies it, ``deliberate run --resume`` finishes it). The id hashes (method,
overrides, budget), so a run asked for twice runs once; a rerun skips finished runs, resumes an interrupted one and
runs again one whose config has changed. Each run copies the plain shards the finished runs hold (the pools' own
reuse, :meth:`~deliberate.practice.pool.Pool.same_shard`) and samples only the rest. No run reads the held-out test
split; :meth:`Bench.evaluate` reads it once, after them all. A run's record (validation numbers only: the choices
read records) is derived from its run directory and the real-data reference classifier.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from safetensors.torch import load_file

from deliberate.checkpoint import config_changes
from deliberate.config import load_config
from deliberate.evaluation import ood_sets, round_stats
from deliberate.job import run_job
from deliberate.learning.learner import Learner
from deliberate.practice.pool import open_pool
from deliberate.registry import METHODS
from deliberate.rundir import read_jsonl, write_json

from .core import setup


@dataclass(frozen=True)
class RunSpec:
    method: str
    overrides: tuple[str, ...] = ()
    budget: int | None = None  # pool size of static / prune (kept size M): practice.max_samples of its run
    tags: tuple[str, ...] = field(default=(), compare=False)

    @property
    def id(self) -> str:
        blob = json.dumps([self.method, sorted(self.overrides), self.budget])
        return f"{self.method}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def setting(self) -> dict:
        return dict(o.split("=", 1) for o in self.overrides)


class Bench:
    def __init__(self, mode, work: Path, device: str | None = None, progress: bool = False, log=print,
                 extra_overrides: list[str] | None = None):
        """The device is the config's ``run.device``; ``device`` (a study's ``--device``), when given, sets it."""
        self.mode, self.progress, self.log, self.records = mode, progress, log, {}
        self.base = list(mode.base) + list(mode.generator) + list(extra_overrides or []) + (
            [f"run.device={device}"] if device else [])
        self.cfg0 = load_config(None, self.base)
        s = setup(self.cfg0, reference=True, reference_iterations=mode.reference_iterations, progress=progress)
        self.splits, self.device, self.gen, self.gen_info = s.splits, s.device, s.generator, s.gen_info
        self.reference, self.ref_info = s.reference, s.ref_info
        self.runs_dir = Path(work) / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)

    def config(self, overrides=()):
        return load_config(None, self.base + list(overrides))

    def run_config(self, spec: RunSpec):
        """One method; the budget is its pool size (``practice.max_samples``, the initial pool no larger)."""
        ov = [*spec.overrides, f"run.methods=[{spec.method}]"]
        if spec.budget:
            n0 = self.config(ov).practice.initial_samples
            ov += [f"practice.max_samples={spec.budget}"] + ([f"practice.initial_samples={spec.budget}"]
                                                            if n0 > spec.budget else [])
        return self.config(ov)

    # ----------------------------------------------------------------------------------------------- runs
    def run(self, spec: RunSpec) -> dict:
        """Run ``spec`` through the job (or resume it, or find it finished); returns its record."""
        d = self.runs_dir / spec.id
        cfg = self.run_config(spec)
        if (d / "config.yaml").exists() and (changes := config_changes(yaml.safe_load((d / "config.yaml").read_text()),
                                                                        cfg.to_dict())):
            self.log(f"  stale run {spec.id} ({'; '.join(changes)[:200]}): running it again")
            shutil.rmtree(d)
            self.records.pop(spec.id, None)
        if not (d / "summary.json").exists():
            self.log(f"  run {spec.id} {spec.method} {' '.join(spec.overrides)}"
                     + (f" budget={spec.budget}" if spec.budget else ""))
            run_job(cfg, d, progress=self.progress, resume=(d / "config.yaml").exists(), held_out=False,
                    donors=self.donors(d))
        if spec.id not in self.records:
            self.records[spec.id] = self.record(spec, cfg, d)
            r = self.records[spec.id]
            self.log(f"    {spec.id}: val {r['val_acc']:.4f}  samples {r['samples']} (generated {r['generated']}, "
                     f"guided {r['guided']}, copied {r['reused']})  rounds {r['rounds']}  fidelity "
                     f"{r['label_fidelity']:.3f}  {r['wall_seconds']:.0f}s")
        rec = self.records[spec.id]
        rec["tags"] = sorted(set(rec["tags"]) | set(spec.tags))  # a run requested under several tags keeps them all
        return rec

    def donors(self, d: Path) -> list[Path]:
        """The pools of the work directory's finished runs, largest first: a run copies the plain shards they hold."""
        pools = [p for p in self.runs_dir.glob("*/methods/*/pool")
                 if p.parents[2] != d and (p.parents[2] / "summary.json").exists()]
        return sorted(pools, key=lambda p: -(p / "manifest.jsonl").stat().st_size)

    def record(self, spec: RunSpec, cfg, d: Path) -> dict:
        """A finished run as the analysis reads it: samples counted by the method's spec (k·M candidates for a pruned
        pool, sampled or copied), label fidelity per round under the reference classifier."""
        summary = json.loads((d / "summary.json").read_text())
        m = summary["methods"][spec.method]
        mdir = d / "methods" / spec.method
        pool = open_pool(mdir / "pool")
        stats = read_jsonl(mdir / "stats.jsonl")
        mspec = METHODS.build(spec.method, cfg)
        cost = mspec.cost(len(pool))
        guided = int((pool.column("omega").astype(float) > 0).sum())
        rounds = round_stats(pool, self.reference)
        g = cfg.guidance
        return {
            "id": spec.id, "method": spec.method, "overrides": list(spec.overrides), "budget": spec.budget,
            "tags": sorted(spec.tags), "setting": spec.setting(), "seed": cfg.run.seed,
            "iterations": m["iterations"], "eval_every": cfg.practice.eval_every,
            "val_acc": m["val_acc"], "best_val_acc": m["best_val_acc"], "val_size": len(self.splits.val),
            "samples": m["samples"], "generated": cost["generated"], "guided": guided,
            "plain": cost["generated"] - guided, "reused": m["reused_samples"], "rounds": m["rounds"],
            "evaluations": len(stats), "steps": cfg.sampling.steps,
            "guidance": {"omega": mspec.omega, "every": g.every, "window": list(g.window), "grad": g.grad,
                         "scale": g.scale},
            "scorer_iterations": cost["scorer_iterations"], "oversample": cost["oversample"],
            "seconds": m["seconds"], "wall_seconds": summary["wall_seconds"], "nonfinite_grads": m["nonfinite_grads"],
            "round_stats": rounds,
            "label_fidelity": sum(r["label_fidelity"] * r["count"] for r in rounds) / max(1, len(pool)),
            "curve": [{"iteration": r["iteration"], "val_acc": r["val_acc"], "pool": r["pool"]} for r in stats],
            "config": cfg.to_dict(),
            # the pool's samples per class (for a pruned pool: the kept ones; a grown pool cycles the labels)
            "kept_per_class": np.bincount(pool.column("labels").astype(int),
                                          minlength=self.splits.num_classes).tolist(),
        }

    # ------------------------------------------------------------------------------------------ evaluation
    def learner(self, rid: str) -> Learner:
        """The final learner of a recorded run, read from its run directory."""
        rec = self.records[rid]
        learner = Learner(self.config(rec["overrides"]).learner, self.splits.num_classes, self.gen.image_shape[0], 1,
                          self.device)
        learner.eval_model.load_state_dict(load_file(self.runs_dir / rid / "methods" / rec["method"] /
                                                     "model.safetensors"))
        return learner

    def evaluate(self) -> dict:
        """Held-out test accuracy and OOD accuracy (corrupted test copies) of every recorded run and of the
        real-data reference classifier: the benchmark's only read of the test split."""
        test = self.splits.test.read("bench: final evaluation of every run (held-out test + corrupted copies)")
        sets = ood_sets(test, seed=0, size=self.mode.ood_size)

        def accuracies(model) -> dict:
            return {"test_acc": model.accuracy(test.images, test.labels),
                    "ood": {k: model.accuracy(s.images, s.labels) for k, s in sets.items()}}

        out = {}
        for rid in sorted(self.records):
            f = self.runs_dir / rid / "eval.json"
            if not f.exists():
                write_json(f, accuracies(self.learner(rid)))
            out[rid] = json.loads(f.read_text())
        return {"runs": out, "reference": accuracies(self.reference), "test_reads": list(self.splits.test.read_log),
                "ood_size": len(next(iter(sets.values()))) if sets else 0}
