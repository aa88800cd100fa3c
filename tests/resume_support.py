"""Shared by test_resume.py and test_faults.py: a tiny job, a tiny learner, and runs in separate processes.

Runs are real child processes (forked from a fork server, so that the seconds of importing torch/diffusers are
paid once), each calling the ``deliberate`` command line with its own stdout/stderr file; a fault is armed in the child
(:mod:`deliberate.faults`), so a kill is a real SIGKILL of a real process. ``test_resume.py`` also drives fresh
interpreters through the environment variable.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
from pathlib import Path

import torch
import torch.nn as nn
import yaml

from deliberate.generation.guidance import EntropyCriterion
from deliberate.registry import CRITERIA, LEARNERS

DATA_ROOT = "/usr/share/datasets/fashion-mnist"
KILLED = -signal.SIGKILL  # multiprocessing's exit code of a child killed by SIGKILL


def tiny_cnn(num_classes: int = 10, in_chans: int = 1, **_) -> nn.Module:
    """A learner small enough that a held-out evaluation of 10k images costs little; BatchNorm and dropout keep
    the state (running statistics, global RNG) that a resume must restore."""
    return nn.Sequential(
        nn.Conv2d(in_chans, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(16, num_classes))


def tiny_cnn_wide(num_classes: int = 10, in_chans: int = 1, **_) -> nn.Module:
    """Another architecture, for checkpoint-mismatch tests."""
    return nn.Sequential(nn.Conv2d(in_chans, 12, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(12, num_classes))


class NanEveryThird(EntropyCriterion):
    """Entropy, but NaN (so its gradient is NaN) for every third slot of a model call (slots 0, 3, 6, ...)."""

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = super().forward(images, labels)
        w = torch.ones_like(h)
        w[::3] = float("nan")
        return h * w


for _reg, _name, _fn in ((LEARNERS, "tiny_cnn", tiny_cnn), (LEARNERS, "tiny_cnn_wide", tiny_cnn_wide),
                         (CRITERIA, "nan_every_third", NanEveryThird)):
    if not dict.__contains__(_reg, _name):
        _reg.register(_name)(_fn)


def tiny_config(base: Path, **extra) -> dict:
    """The tiny job: ~4 s on one core; DP makes 4 additions (12 shards of 10), static gets 120 samples up front.
    EMA, mixup (NumPy's global RNG), dropout (torch's) and periodic checkpoints are on so that resume must get
    every piece of state right. ``run.device=cpu``: on a GPU machine too, these tests check the CPU path they
    were written for (the recorded sampling environment is ``cpu:<capability>``)."""
    cfg = {
        "data": {"root": DATA_ROOT, "val_size": 200, "gen_train_size": 500},
        "generator": {"cache_dir": str(base / "gen-cache"), "block_out_channels": [8, 16], "train_steps": 5,
                      "batch_size": 16},
        "sampling": {"steps": 3, "batch_size": 20, "shard_size": 10},
        "guidance": {"omega": 0.05},
        "learner": {"model": "tiny_cnn", "batch_size": 16, "eval_batch_size": 2000, "ema": True, "ema_decay": 0.9,
                    "mixup": 0.2},
        "practice": {"iterations": 60, "eval_every": 5, "initial_samples": 40, "add_samples": 20, "patience": 1,
                     "patience_growth": 0, "max_samples": 120},
        "run": {"methods": ["dp", "static"], "out_dir": str(base / "runs"), "progress": False, "threads": 1,
                "checkpoint_every": 7, "deterministic": True, "device": "cpu"},  # CPU on any machine: no silent CUDA
    }
    for key, value in extra.items():
        sec, k = key.split("__")
        cfg[sec][k] = value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _half_file(_, path) -> None:
    Path(path).write_bytes(b"\0" * 100)


def _half_line(f, data: bytes) -> None:
    f.write(data[: len(data) // 2])


# A full disk at the n-th call of a write function: (module, function, partial write before the error).
DISK_FULL = {
    "shard": ("deliberate.practice.pool", "save_file", _half_file),
    "manifest": ("deliberate.practice.pool", "_write_all", _half_line),
    "checkpoint": ("torch", "save", _half_file),
}


def _disk_full_at(what: str, n: int) -> None:
    """Make the n-th call of a write function write part of its data, then fail with ENOSPC."""
    import errno
    import importlib

    module, attr, partial = DISK_FULL[what]
    mod = importlib.import_module(module)
    real, calls = getattr(mod, attr), [0]

    def failing(*args, **kw):
        calls[0] += 1
        if calls[0] == n:
            partial(*args)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kw)

    setattr(mod, attr, failing)


def _child(argv: list[str], kill_at: str, log: str, disk_full) -> None:
    out = open(log, "a", buffering=1)
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    sys.stdout = sys.stderr = out
    from deliberate import faults
    from deliberate.cli import main

    faults.arm(kill_at)
    if disk_full is not None:
        _disk_full_at(*disk_full)
    sys.exit(main(argv))


# Children are forked from a fork server (a fresh interpreter that has imported deliberate but never run a torch
# kernel): forking the test process itself would be unsafe once torch's OpenMP threads exist. The server also
# imports what the job imports lazily (diffusers' UNet and schedulers, timm, the evaluation and plotting backends):
# ~2,500 modules that each child would otherwise import again (seconds of every run on 2 cores; importing runs no
# torch kernel).
_CTX = mp.get_context("forkserver")
_CTX.set_forkserver_preload([
    "resume_support", "deliberate.job", "deliberate.repair", "deliberate.reports.report", "deliberate.evaluation",
    "diffusers.models.unets.unet_2d", "diffusers.training_utils", "diffusers.schedulers.scheduling_ddim",
    "diffusers.schedulers.scheduling_ddpm", "diffusers.schedulers.scheduling_dpmsolver_multistep",
    "diffusers.schedulers.scheduling_unipc_multistep", "timm.data", "timm.loss", "timm.optim", "timm.utils",
    "timm.models", "matplotlib.backends.backend_agg",
])


def run_cli(argv: list[str], log: Path, kill_at: str = "", disk_full: tuple[str, int] | None = None,
            timeout: float = 300) -> int:
    """``deliberate ARGV`` in a child process; returns its exit code (:data:`KILLED` after a SIGKILL).
    ``kill_at`` arms :mod:`deliberate.faults` in the child; ``disk_full=(what, n)`` makes the n-th write of
    ``what`` (a key of :data:`DISK_FULL`) fail with ENOSPC."""
    p = _CTX.Process(target=_child, args=(list(argv), kill_at, str(log), disk_full))
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        raise TimeoutError(f"deliberate {' '.join(argv)} did not finish in {timeout} s; log: {log.read_text()}")
    return p.exitcode


def pretrain_generator(base: Path) -> str:
    """Train the tiny generator once (in a child) and return its path."""
    cfg_path = write_config(base / "gen.yaml", tiny_config(base))
    log = base / "gen.log"
    code = run_cli(["train-generator", "-c", str(cfg_path)], log)
    assert code == 0, log.read_text()
    return log.read_text().strip().splitlines()[-1].split(": ", 1)[1]


def job_config(base: Path, gen_path: str, name: str, **extra) -> Path:
    cfg = tiny_config(base, **extra)
    cfg["generator"]["path"] = gen_path
    cfg["run"]["out_dir"] = str(base / name)
    return write_config(base / f"{name}.yaml", cfg)


def only_run_dir(out_dir: Path) -> Path:
    dirs = [p for p in Path(out_dir).iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def shared(tmp_path_factory, name: str, make):
    """A directory computed once per test session (shared by both test modules)."""
    path = tmp_path_factory.getbasetemp() / name
    done = path / ".done"
    if not done.exists():
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        make(path)
        done.write_text("ok")
    return path


def generator_path(tmp_path_factory) -> str:
    """The tiny generator, trained once per test session."""
    gen_dir = shared(tmp_path_factory, "tiny-generator", lambda p: (p / "path").write_text(pretrain_generator(p)))
    return (gen_dir / "path").read_text()


def reference_run(tmp_path_factory, name: str = "reference-run", **extra) -> tuple[Path, str]:
    """(run directory of an uninterrupted tiny job, generator path); ``extra`` as in :func:`tiny_config`."""
    gen_path = generator_path(tmp_path_factory)

    def make(path: Path) -> None:
        cfg = job_config(path, gen_path, "runs", **extra)
        code = run_cli(["run", "-c", str(cfg)], path / "run.log")
        assert code == 0, (path / "run.log").read_text()

    ref = shared(tmp_path_factory, name, make)
    return only_run_dir(ref / "runs"), gen_path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(run_dir: Path) -> dict:
    """Everything a run produced that must not depend on interruptions: every method's manifest (labels, seeds,
    scores, checksums), shard bytes, validation log, final weights and result, and the summary's metrics
    (wall-clock seconds excluded)."""
    run_dir = Path(run_dir)
    snap: dict = {}
    for mdir in sorted((run_dir / "methods").iterdir()):
        pool = mdir / "pool"
        result = json.loads((mdir / "result.json").read_text())
        result.pop("seconds")
        snap[mdir.name] = {
            "manifest": [json.loads(x) for x in (pool / "manifest.jsonl").read_text().splitlines()],
            "files": sorted(p.name for p in pool.iterdir()),
            "shards": {p.name: _sha(p) for p in sorted(pool.glob("*.safetensors"))},
            "stats": (mdir / "stats.jsonl").read_text().splitlines(),
            "model": _sha(mdir / "model.safetensors"),
            "guides": {p.name: _sha(p) for p in sorted((mdir / "guides").glob("*"))},
            "result": result,
        }
    summary = json.loads((run_dir / "summary.json").read_text())
    for m in summary["methods"].values():
        m.pop("seconds")
    summary.pop("wall_seconds")
    snap["summary"] = summary
    return snap


def leftovers(run_dir: Path) -> list[str]:
    """Files a crash may leave that a finished run must not hold (temporary files)."""
    return sorted(str(p.relative_to(run_dir)) for p in Path(run_dir).rglob("*") if ".tmp" in p.name)
