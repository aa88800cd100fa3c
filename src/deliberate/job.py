"""The main job: real splits → generator → every practice method → held-out evaluation → report.

The held-out test split is read once, in :func:`evaluate_held_out`, after every method has finished.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from .config import Config
from .data.splits import RealSplits, load_splits
from .learning.learner import Learner
from .practice.loop import PracticeResult, practice
from .practice.pool import Pool
from .registry import GENERATORS, METHODS
from .rundir import JsonlLog, new_run_dir, write_config, write_json


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"run.device={name} but CUDA is not available")
    return torch.device(name)


def obtain_generator(cfg: Config, splits: RealSplits, device, progress: bool, log=None):
    return GENERATORS.get_entry(cfg.generator.name).obtain(cfg, splits, device=device, progress=progress, log=log)


def order_methods(methods) -> list[str]:
    """Methods that size themselves after others (``static`` matches DP's final pool) run last."""
    return sorted(methods, key=lambda m: m == "static")


def run_method(name: str, cfg: Config, splits: RealSplits, generator, run_dir: Path, device, budget=None,
               progress: bool = True) -> tuple[PracticeResult, Learner, Pool]:
    spec = METHODS.build(name, cfg, budget=budget)
    mdir = run_dir / "methods" / name
    mdir.mkdir(parents=True, exist_ok=True)
    learner = Learner(cfg.learner, splits.num_classes, generator.image_shape[0], cfg.practice.iterations, device,
                      seed=cfg.run.seed)
    pool = Pool(mdir / "pool")
    result = practice(spec, cfg, generator, learner, splits.val, pool, log=JsonlLog(mdir / "stats.jsonl"),
                      progress=progress)
    save_file({k: v.contiguous() for k, v in learner.eval_model.state_dict().items()}, mdir / "model.safetensors")
    return result, learner, pool


def evaluate_held_out(learners: dict[str, Learner], splits: RealSplits) -> dict[str, float]:
    """Held-out test accuracy of each final learner: the only read of the test split."""
    test = splits.test.read("final held-out evaluation")
    return {name: learner.accuracy(test.images, test.labels) for name, learner in learners.items()}


def run_job(cfg: Config, run_dir: Path | None = None, progress: bool | None = None) -> Path:
    progress = cfg.run.progress if progress is None else progress
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    t_start = time.perf_counter()
    splits = load_splits(cfg.data.root, cfg.data.val_size, cfg.data.gen_train_size, cfg.data.split_seed)
    run_dir = run_dir or new_run_dir(cfg.run.out_dir, cfg.run.name)
    write_config(run_dir / "config.yaml", cfg.to_dict())
    splits.record(run_dir / "splits.json")
    print(f"run directory: {run_dir}")

    generator, gen_info = obtain_generator(cfg, splits, device, progress, log=JsonlLog(run_dir / "generator_stats.jsonl"))
    write_json(run_dir / "generator.json", gen_info)
    print(f"generator: {gen_info['generator_id']} ({gen_info['source']}: {gen_info['path']})")

    results: dict[str, PracticeResult] = {}
    learners: dict[str, Learner] = {}
    pools: dict[str, Pool] = {}
    for name in order_methods(cfg.run.methods):
        budget = results["dp"].samples if name == "static" and "dp" in results else None
        results[name], learners[name], pools[name] = run_method(name, cfg, splits, generator, run_dir, device, budget,
                                                                progress)
        r = results[name]
        print(f"{name}: val {r.val_acc:.4f} (best {r.best_val_acc:.4f}), {r.samples} samples, {r.rounds} additions")

    test_acc = evaluate_held_out(learners, splits)
    summary = {
        "methods": {n: {"test_acc": test_acc[n], "val_acc": r.val_acc, "best_val_acc": r.best_val_acc,
                        "samples": r.samples, "iterations": r.iterations, "rounds": r.rounds, "seconds": r.seconds}
                    for n, r in results.items()},
        "generator": gen_info,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "held_out_reads": splits.test.read_log,
    }
    write_json(run_dir / "summary.json", summary)
    from .reports.report import write_report

    write_report(run_dir, summary, pools)
    for n, m in summary["methods"].items():
        print(f"{n:>18}: held-out test {m['test_acc']:.4f}  val {m['val_acc']:.4f}  samples {m['samples']}  "
              f"iterations {m['iterations']}")
    print(f"report: {run_dir / 'report.md'}")
    return run_dir
