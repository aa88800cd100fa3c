"""Decays branched from a stable-phase run: the whole iteration axis of a method for about the cost of its longest run.

With a fixed warm-up (``learner.warmup_iterations``) the warmup-stable-decay schedule of a run of T iterations equals,
before its decay starts at c = T − decay_frac·T, the schedule of a "trunk" run of any length L ≥ c with
``learner.decay_frac = 0`` (learning/schedule.py). Everything else a run carries from iteration to iteration is
in its checkpoint (checkpoint.py). So the state the trunk kept after iteration c (``run.keep_checkpoints``, taken
before that iteration's evaluation) *is* the state the standalone T-iteration run has after iteration c, and
continuing it is that run: :func:`branch_run` writes it as an ordinary run directory — its own ``config.yaml``, the
trunk's pool up to that point, log and checkpoint — and ``deliberate run --resume`` (or
``job.run_job(..., resume=True)``) finishes it, decay, held-out evaluation and ``summary.json`` included.

The only difference from running the T-iteration config from scratch: the evaluation *at* iteration c is not in the
branch's ``stats.jsonl``. During the decay the pool cannot grow (Algorithm 1, step 5: additions only while the LR is
constant), so that evaluation changes no training state and the final model is the same.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .checkpoint import CHECKPOINT, VERSION, ResumeError, config_changes
from .config import Config, config_from_dict
from .fileio import atomic_write
from .learning.schedule import WarmupStableDecay
from .practice.pool import MANIFEST
from .rundir import write_config

BRANCH_KEYS = ("practice.iterations", "learner.decay_frac")  # what a branch may set differently from its trunk
DECAY_FRAC = 0.2  # the decay share of every branch (the paper's WSD recipe, learner.decay_frac's default)


def schedule_of(cfg: Config) -> WarmupStableDecay:
    lr = cfg.learner
    return WarmupStableDecay(cfg.practice.iterations, lr.warmup_frac, lr.decay_frac,
                             warmup_iterations=lr.warmup_iterations)


def branch_config(trunk: Config, iterations: int) -> Config:
    """The config of the standalone run of ``iterations`` whose decay starts where a trunk checkpoint can be kept:
    the trunk's, with ``practice.iterations`` and the default ``learner.decay_frac`` of the trunk's recipe."""
    d = trunk.to_dict()
    d["practice"]["iterations"] = iterations
    d["learner"]["decay_frac"] = DECAY_FRAC
    d["run"]["keep_checkpoints"] = []
    return config_from_dict(d)


def branch_point(iterations: int, decay_frac: float = DECAY_FRAC) -> int:
    """Iteration c at which a run of ``iterations`` starts its decay (:attr:`WarmupStableDecay.decay_start`)."""
    return WarmupStableDecay(iterations, decay_frac=decay_frac).decay_start


def branch_run(trunk_dir: str | Path, method: str, cfg: Config, run_dir: str | Path) -> Path:
    """Write ``run_dir``: the run of ``cfg`` (one method) whose first c iterations the trunk in ``trunk_dir`` already
    did, c = ``cfg``'s decay start. Refuses, naming the reason, when the trunk kept no state at c, when the configs
    differ in anything but :data:`BRANCH_KEYS` or when the two LR schedules differ before c. Atomic: the directory
    appears whole or not at all. Finish it with ``job.run_job(cfg, run_dir, resume=True)``."""
    trunk_dir, run_dir = Path(trunk_dir), Path(run_dir)
    c = schedule_of(cfg).decay_start
    kept = trunk_dir / "methods" / method / "kept" / f"it{c:06d}.pt"
    if not kept.is_file():
        raise ResumeError(f"{kept} does not exist: the trunk {trunk_dir} did not keep its state after iteration {c} "
                          f"(run.keep_checkpoints), where a run of {cfg.practice.iterations} iterations starts "
                          f"its decay")
    if run_dir.exists():
        raise ResumeError(f"{run_dir} already exists: finish it with `deliberate run --resume {run_dir}`")
    state = torch.load(kept, map_location="cpu", weights_only=True)
    if state.get("version") != VERSION or state["learner"]["iteration"] != c or state["pending"] is not None:
        raise ResumeError(f"{kept} is not a kept state after iteration {c} outside a round")
    trunk_cfg = config_from_dict(state["config"])
    other = [ch for ch in config_changes(state["config"], cfg.to_dict()) if ch.split(":")[0] not in BRANCH_KEYS]
    if other:
        raise ResumeError(f"a branch of {trunk_dir} may change only {', '.join(BRANCH_KEYS)}; this config also "
                          f"changes {'; '.join(other)}")
    old, new = schedule_of(trunk_cfg), schedule_of(cfg)
    if any(old.factor(i) != new.factor(i) or old.is_stable(i) != new.is_stable(i) for i in range(c)):
        raise ResumeError(f"the LR schedules of {trunk_dir} and the branch differ before iteration {c}: give both "
                          f"the same learner.warmup_iterations and the trunk learner.decay_frac=0")

    tmp = run_dir.with_name(run_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    mdir = tmp / "methods" / method
    (mdir / "pool").mkdir(parents=True)
    write_config(tmp / "config.yaml", cfg.to_dict())
    for name in ("splits.json", "generator.json"):
        shutil.copy2(trunk_dir / name, tmp / name)
    src = trunk_dir / "methods" / method
    lines = (src / "pool" / MANIFEST).read_bytes().splitlines(keepends=True)[:state["pool"]["shards"]]
    for line in lines:  # the pool as it was at c: its first shards (append-only, so linked, not copied)
        name = json.loads(line)["shard"]
        os.link(src / "pool" / name, mdir / "pool" / name)
    (mdir / "pool" / MANIFEST).write_bytes(b"".join(lines))
    log = (src / "stats.jsonl").read_bytes()[:state["log_bytes"]] if (src / "stats.jsonl").exists() else b""
    (mdir / "stats.jsonl").write_bytes(log)
    for r in range(1, state["rounds"] + 1):  # the classifiers that guided the rounds so far (for repairs)
        g = src / "guides" / f"r{r:03d}.safetensors"
        if g.exists():
            (mdir / "guides").mkdir(exist_ok=True)
            shutil.copy2(g, mdir / "guides" / g.name)
    state["config"] = cfg.to_dict()
    atomic_write(mdir / CHECKPOINT, lambda p: torch.save(state, p))
    os.replace(tmp, run_dir)
    return run_dir
