"""The main job: real splits → generator → every practice method → held-out evaluation → ``summary.json``
(the report of the run directory is written above this layer: :func:`deliberate.reports.report.report_run`).

The held-out test split is read once, in :func:`evaluate_held_out`, after every method has finished.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from . import distributed
from .checkpoint import ResumeError, checkpointer, require_same_config, seed_all, set_deterministic
from .config import Config
from .data.splits import RealSplits, load_splits
from .fileio import atomic_write
from .generation.base import GeneratorError, ShardedGenerator
from .learning.learner import Learner
from .practice.loop import PracticeResult, practice
from .lock import main_lock
from .practice.pool import Pool, open_pool
from .registry import GENERATORS, METHODS
from .rundir import JsonlLog, new_run_dir, read_jsonl, write_config, write_json


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"run.device={name} but CUDA is not available")
    if torch.device(name).type == "cuda" and distributed.is_distributed():
        return torch.device("cuda", distributed.local_rank())  # one GPU per process
    return torch.device(name)


def load_real_splits(cfg: Config) -> RealSplits:
    """``data.name``: the embedded Fashion-MNIST splits, a class-folder dataset, or ImageFolder directories (this
    process's share)."""
    d = cfg.data
    if d.name == "class_folders":
        from .data.classfolders import load_class_folder_splits

        return load_class_folder_splits(d, distributed.rank(), distributed.world_size())
    if d.name == "folders":
        from .data.folders import load_folder_splits

        return load_folder_splits(d, distributed.rank(), distributed.world_size())
    return load_splits(d.root, d.val_size, d.gen_train_size, d.split_seed)


def obtain_generator(cfg: Config, splits: RealSplits, device, progress: bool, log=None):
    return GENERATORS.get_entry(cfg.generator.name).obtain(cfg, splits, device=device, progress=progress, log=log)


def method_budget(name: str, cfg: Config, done: dict[str, PracticeResult]) -> int | None:
    """The ``budget`` of method ``name``: the final pool size of the method its spec is ``sized_by`` (static and
    prune take DP's), when that one has finished; else None (the method sizes itself from the config)."""
    by = METHODS.build(name, cfg).sized_by
    return done[by].samples if by in done else None


def order_methods(methods, cfg: Config) -> list[str]:
    """``methods`` in the given order, except that a method runs after the one it is ``sized_by`` (and a method
    sized by one that is itself sized, after both): every sized method after the unsized ones."""
    def depth(name: str) -> int:
        n, seen = 0, {name}
        while name in METHODS and (name := METHODS.build(name, cfg).sized_by) is not None and name not in seen:
            n, seen = n + 1, seen | {name}
        return n

    return sorted(methods, key=depth)


def run_method(name: str, cfg: Config, splits: RealSplits, generator, run_dir: Path, device, budget=None,
               progress: bool = True, donors: list[Pool] = ()) -> tuple[PracticeResult, Learner, Pool]:
    """One method of the job in ``run_dir/methods/NAME``. ``donors``: the pools of the methods run before it, whose
    plain initial shards it copies where they are what it would sample (:func:`~deliberate.practice.loop.grow`)."""
    spec = METHODS.build(name, cfg, budget=budget)
    mdir = run_dir / "methods" / name
    mdir.mkdir(parents=True, exist_ok=True)
    seed_all(cfg.run.seed)  # each method starts from the same global RNG state, whether or not others were rerun
    learner = Learner(cfg.learner, splits.num_classes, generator.image_shape[0], cfg.practice.iterations, device,
                      seed=cfg.run.seed)
    pool = open_pool(mdir / "pool", verify=True)  # rank 0 writes; other ranks hold replicas
    ckpt = checkpointer(mdir, cfg, spec, log_path=mdir / "stats.jsonl")
    if (done := ckpt.finished()) is not None:  # finished before an interruption: not rerun
        ckpt.load_final(learner)
        print(f"{name}: finished before the interruption, not rerun")
        return PracticeResult(**done), learner, pool
    result = practice(spec, cfg, generator, learner, splits.val, pool,
                      log=distributed.main_only(JsonlLog(mdir / "stats.jsonl")), progress=progress, ckpt=ckpt,
                      donors=donors)
    weights = {k: v.contiguous() for k, v in learner.eval_model.state_dict().items()}
    if distributed.is_main():
        atomic_write(mdir / "model.safetensors", lambda p: save_file(weights, p))
    ckpt.mark_finished(dataclasses.asdict(result))
    return result, learner, pool


def blocked_triggers(stats_path: Path) -> dict[str, int]:
    """How many times the patience trigger fired but no samples were added, by reason ("lr not constant": in
    warm-up or decay; "sample budget": the next addition would cross ``practice.max_samples``)."""
    out: dict[str, int] = {}
    for row in read_jsonl(stats_path) if stats_path.exists() else []:
        if row.get("blocked"):
            out[row["blocked"]] = out.get(row["blocked"], 0) + 1
    return out


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def time_left(cfg: Config, methods: list[str], done: dict[str, PracticeResult]) -> float | None:
    """Seconds the ``methods`` still to run should take at the rates the first finished method measured (training
    and evaluation seconds per iteration, plain-generation seconds per sample); None before one finished. Each
    method's spec counts the samples it generates (:meth:`~deliberate.practice.methods.MethodSpec.cost`), given
    the plain initial pool the first method made."""
    if not done:
        return None
    r = next(iter(done.values()))
    per_it = (r.seconds["training"] + r.seconds["evaluation"]) / max(1, r.iterations)
    plain = (cfg.practice.initial_samples if r.seconds.get("guided_generation") else r.samples) - r.reused
    per_sample = r.seconds["generation"] / max(1, plain)
    shared = cfg.practice.initial_samples  # the plain initial pool the first method made, copied by the others
    specs = [METHODS.build(m, cfg, budget=method_budget(m, cfg, done)) for m in methods]
    return sum(cfg.practice.iterations * per_it + spec.cost(spec.initial, shared)["generated"] * per_sample
               for spec in specs)


def evaluate_held_out(learners: dict[str, Learner], splits: RealSplits) -> dict[str, float]:
    """Held-out test accuracy of each final learner: the only read of the test split."""
    test = splits.test.read("final held-out evaluation")
    return {name: learner.accuracy(test.images, test.labels) for name, learner in learners.items()}


def run_job(cfg: Config, run_dir: Path | None = None, progress: bool | None = None, resume: bool = False,
            held_out: bool = True, donors: tuple = ()) -> Path:
    """Run the job in a new run directory, or with ``resume`` continue the one in ``run_dir`` (its generator from
    the recorded path, finished methods not rerun, the others from their checkpoints). The run directory is
    locked against a second process. Under ``torchrun``/``accelerate launch`` every process runs this; rank 0 alone
    writes (distributed.py). ``held_out=False``: the test split is not read (a run that only feeds others, such as
    the stable-phase trunk of branched decays: branch.py); ``donors``: pool directories of other runs whose plain
    shards are copied where they are what this run would sample (:func:`~deliberate.practice.loop.grow`)."""
    distributed.setup(cfg.run.device)
    if resume:
        saved = Path(run_dir or "") / "config.yaml"
        if not saved.is_file():
            raise ResumeError(f"cannot resume {run_dir}: not a run directory (no config.yaml)")
        require_same_config(yaml.safe_load(saved.read_text()), cfg.to_dict(), f"run {run_dir}")
    elif run_dir is not None and (Path(run_dir) / "config.yaml").exists():
        raise ResumeError(f"{run_dir} already holds a run; continue it with `deliberate run --resume {run_dir}`")
    splits = load_real_splits(cfg)  # before anything is written: bad data leaves no run directory behind
    run_dir = Path(run_dir) if run_dir else distributed.on_main(lambda: new_run_dir(cfg.run.out_dir, cfg.run.name))
    run_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier()  # every rank has checked the directory before rank 0 writes to it
    with main_lock(run_dir):
        out = _run_job(cfg, splits, run_dir, progress, resume, held_out, donors)
    distributed.shutdown()  # waits for rank 0's summary, then leaves the process group
    return out


def _run_job(cfg: Config, splits: RealSplits, run_dir: Path, progress: bool | None, resume: bool, held_out: bool = True,
             donors: tuple = ()) -> Path:
    progress = (cfg.run.progress if progress is None else progress) and distributed.is_main()
    main = distributed.is_main()
    set_deterministic(cfg.run.deterministic)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    t_start = time.perf_counter()
    if main:
        if not resume:
            write_config(run_dir / "config.yaml", cfg.to_dict())
        splits.record(run_dir / "splits.json")
        print(f"run directory: {run_dir}")

    recorded = json.loads((run_dir / "generator.json").read_text()) if (run_dir / "generator.json").exists() else None
    if resume and recorded:  # the generator the run started with, re-obtained from its recorded path
        cfg = copy.deepcopy(cfg)
        moved = not Path(recorded["path"]).exists() and cfg.generator.path  # moved, and given as generator.path
        cfg.generator.path = cfg.generator.path if moved else recorded["path"]
    generator, gen_info = distributed.main_first(lambda: obtain_generator(
        cfg, splits, device, progress, log=distributed.main_only(JsonlLog(run_dir / "generator_stats.jsonl"))))
    generator = ShardedGenerator.wrap(generator)  # each rank samples its share of every call
    if resume and recorded:
        if gen_info["generator_id"] != recorded["generator_id"]:
            raise GeneratorError(f"generator at {gen_info['path']} is {gen_info['generator_id']}, but run {run_dir} "
                                 f"was made with {recorded['generator_id']}")
        gen_info = recorded
    if main:
        write_json(run_dir / "generator.json", gen_info)
        print(f"generator: {gen_info['generator_id']} ({gen_info['source']}: {gen_info['path']})")

    results: dict[str, PracticeResult] = {}
    learners: dict[str, Learner] = {}
    pools: list[Pool] = [open_pool(d) for d in donors]
    methods = order_methods(cfg.run.methods, cfg)
    for k, name in enumerate(methods):
        budget = method_budget(name, cfg, results)
        if main:
            print(f"[stage {k + 1}/{len(methods)}] {name}  (elapsed {_mmss(time.perf_counter() - t_start)}"
                  + (f", about {_mmss(eta)} left)" if (eta := time_left(cfg, methods[k:], results)) else ")"),
                  flush=True)
        results[name], learners[name], pool = run_method(name, cfg, splits, generator, run_dir, device, budget,
                                                         progress, donors=pools)
        pools = [*pools, pool]
        r = results[name]
        if main:
            why = blocked_triggers(run_dir / "methods" / name / "stats.jsonl")
            print(f"{name}: val {r.val_acc:.4f} (best {r.best_val_acc:.4f}), {r.samples} samples"
                  + (f" ({r.reused} plain ones shared with an earlier method)" if r.reused else "")
                  + f", {r.rounds} additions"
                  + (" (triggers blocked: " + ", ".join(f"{k} ×{v}" for k, v in why.items()) + ")" if why else ""))

    test_acc = evaluate_held_out(learners, splits) if held_out else dict.fromkeys(learners)
    ood = {}
    if cfg.data.ood_dirs and held_out:  # after the held-out read; never seen by the loop
        from .data.folders import evaluate_ood

        ood = evaluate_ood(learners, cfg.data, list(splits.meta["classes"]), distributed.rank(),
                           distributed.world_size())
    summary = {
        "methods": {n: {"test_acc": test_acc[n], "val_acc": r.val_acc, "best_val_acc": r.best_val_acc,
                        "samples": r.samples, "iterations": r.iterations, "rounds": r.rounds, "seconds": r.seconds,
                        "nonfinite_grads": r.nonfinite_grads, "reused_samples": r.reused,
                        "blocked": blocked_triggers(run_dir / "methods" / n / "stats.jsonl")}
                    for n, r in results.items()},
        "generator": gen_info,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "held_out_reads": splits.test.read_log,
        **({"ood": ood} if ood else {}),
        "world_size": distributed.world_size(),
    }
    if not main:
        return run_dir
    write_json(run_dir / "summary.json", summary)
    for n, m in summary["methods"].items():
        test = "not read" if m["test_acc"] is None else f"{m['test_acc']:.4f}"
        print(f"{n:>18}: held-out test {test}  val {m['val_acc']:.4f}  samples {m['samples']}  "
              f"iterations {m['iterations']}")
    return run_dir
