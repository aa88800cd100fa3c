"""The benchmark's foundation: the study registry and the shared set-up every study starts from.

A study is a small module that registers a ``main(argv) -> int`` under a name::

    @STUDIES.register("scaling")
    def main(argv: list[str]) -> int: ...

and runs with ``python -m bench scaling [options]``. Every training a study does goes through the job's own run
path (:func:`deliberate.job.run_job`): a study's cell *is* a run directory that ``deliberate check`` and
``deliberate run --resume`` understand.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from deliberate.registry import Registry

STUDIES = Registry("study")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "work"


@dataclass
class Setup:
    """What every study needs before its first run: the config's real splits, the device, the generator and (on
    request) the real-data reference classifier that measures label fidelity."""

    cfg: object
    splits: object
    device: torch.device
    generator: object = None
    gen_info: dict | None = None
    reference: object = None
    ref_info: dict | None = None


def setup(cfg, generator: bool = True, reference: bool = False, reference_iterations: int = 2000,
          progress: bool = False) -> Setup:
    """Splits, device (``run.device``), generator and reference classifier of ``cfg``, as the job obtains them."""
    from deliberate.evaluation import obtain_reference
    from deliberate.job import load_real_splits, obtain_generator, resolve_device

    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    s = Setup(cfg, load_real_splits(cfg), device)
    if generator:
        s.generator, s.gen_info = obtain_generator(cfg, s.splits, device, progress)
    if reference:
        cache = Path(cfg.generator.cache_dir).parent / "reference"
        s.reference, s.ref_info = obtain_reference(cfg, s.splits, device, reference_iterations, cache,
                                                   progress=progress)
    return s


def machine() -> dict:
    """Where a measurement was taken: the CPU (and its ATen kernel level) or the GPU."""
    info = {"host_cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_result(path: Path, data: dict) -> None:
    """Write a committed result file atomically (temp file, rename), sorted keys, one trailing newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
