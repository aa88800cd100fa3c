"""Command line: ``deliberate run | report | train-generator | config | check | theory``.

Overrides are ``section.key=value`` words after the options, e.g.
``deliberate run --config configs/smoke.yaml practice.iterations=500 run.methods=dp,static``.
``deliberate run --resume RUN_DIR`` continues a killed run; ``deliberate check RUN_DIR [--repair]`` verifies
(and repairs) its pool; ``deliberate report RUN_DIR [--sample-twins]`` writes its report again.
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import os
import sys

from .config import ConfigError, load_config


def setup_process() -> None:
    """Set the process up for training on CPUs; called before torch is imported (``deliberate``, ``python -m
    bench``). Only defaults: what the user set in the environment stands.

    * ``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads that spin while waiting make CPU training collapse when cores are
      shared (docs/measurements.md). It must be set before torch is imported.
    * glibc keeps freed buffers up to 128 MB in the heap (``mallopt``), instead of returning every buffer above its
      mmap threshold (dynamic, at most 32 MB) to the kernel and page-faulting the next one in page by page, as
      sampling's activations at every UNet call would be (docs/measurements.md). Only where the process uses glibc
      and neither MALLOC_MMAP_THRESHOLD_ nor MALLOC_TRIM_THRESHOLD_ (glibc's own variables, which then decide) is
      set."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not sys.platform.startswith("linux") or {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): leave the allocator alone
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    mallopt(m_mmap_threshold, 128 << 20)  # buffers up to 128 MB come from the heap ...
    mallopt(m_trim_threshold, 512 << 20)  # ... and up to 512 MB of freed heap is kept for the next ones


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config file (defaults: the embedded Fashion-MNIST job)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")


_TWINS_HELP = ("sample the plain twins of DP's added samples that no pool of the run holds (the report's grid; "
               "costs model calls of sampling.batch_size slots)")


def _print_report(path) -> None:
    """The report's path, then what the run shows (summary.json's comparison): the console's last lines."""
    import json

    print(f"report: {path}")
    for c in (json.loads((path.parent / "summary.json").read_text()).get("comparison") or {}).values():
        print(c["meaning"])


def _report(run_dir: str, sample_twins: bool) -> int:
    """``deliberate report RUN_DIR``: the report of a finished run, written again."""
    from pathlib import Path

    from .generation.base import GeneratorError
    from .practice.pool import PoolError
    from .reports.report import report_run

    if not (Path(run_dir) / "summary.json").is_file():
        print(f"deliberate: error: {run_dir} holds no finished run (no summary.json)", file=sys.stderr)
        return 1
    try:
        _print_report(report_run(run_dir, sample_twins=sample_twins))
    except ConfigError as e:
        print(f"deliberate: config error: {Path(run_dir) / 'config.yaml'}: {e}", file=sys.stderr)
        return 2
    except (GeneratorError, PoolError, FileNotFoundError) as e:
        print(f"deliberate: error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    setup_process()  # before anything imports torch
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="deliberate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    p_run = sub.add_parser("run", help="run Deliberate Practice and its baselines (default: embedded Fashion-MNIST)")
    _config_args(p_run)
    p_run.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (config from RUN_DIR)")
    p_run.add_argument("--sample-twins", action="store_true", help=_TWINS_HELP)
    p_rep = sub.add_parser("report", help="write RUN_DIR/report.md (and summary.json's comparison) again")
    p_rep.add_argument("run_dir", metavar="RUN_DIR")
    p_rep.add_argument("--sample-twins", action="store_true", help=_TWINS_HELP)
    p_gen = sub.add_parser("train-generator", help="train (or find in the cache) the generator and print its path")
    _config_args(p_gen)
    p_cfg = sub.add_parser("config", help="print the resolved config as YAML")
    _config_args(p_cfg)
    p_chk = sub.add_parser("check", help="verify every pool shard of a run directory against its manifest")
    p_chk.add_argument("run_dir", metavar="RUN_DIR")
    p_chk.add_argument("--repair", action="store_true", help="regenerate damaged or missing shards from their seeds")
    sub.add_parser("theory", help="reproduce the paper's Section 4 figures (see `deliberate theory --help`)",
                   add_help=False)
    if argv[:1] == ["theory"]:
        from .theory.figures import main as theory_main

        return theory_main(argv[1:])
    args = parser.parse_args(argv)
    if args.cmd is None:
        args = parser.parse_args(["run", *argv])
    from .checkpoint import DiskFullError, ResumeError, resume_config
    from .lock import RunLockedError

    if args.cmd == "check":
        from .repair import main as check_main

        return check_main(args.run_dir, args.repair)
    if args.cmd == "report":
        return _report(args.run_dir, args.sample_twins)
    resume = getattr(args, "resume", None)
    try:
        if resume and args.config:
            raise ConfigError("--resume reads RUN_DIR/config.yaml; give changes as section.key=value overrides")
        cfg = resume_config(resume, args.overrides) if resume else load_config(args.config, args.overrides)
    except (ConfigError, ResumeError) as e:
        print(f"deliberate: config error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "config":
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from .data.idx import DataError
    from .generation.base import GeneratorError
    from .practice.pool import PoolError

    try:
        if args.cmd == "train-generator":
            from .job import load_real_splits, obtain_generator, resolve_device

            splits = load_real_splits(cfg)  # the embedded data or a class-folder dataset (data.name)
            gen, info = obtain_generator(cfg, splits, resolve_device(cfg.run.device), cfg.run.progress)
            print(f"generator {info['generator_id']} ({info['source']}): {info['path']}")
            return 0
        from . import distributed
        from .job import run_job
        from .reports.report import report_run

        distributed.setup(cfg.run.device)  # (run_job joins the group too; here to know the rank after it left)
        main = distributed.is_main()
        run_dir = run_job(cfg, run_dir=resume, resume=bool(resume))
        if main:
            _print_report(report_run(run_dir, sample_twins=args.sample_twins))
        return 0
    except (DataError, GeneratorError, PoolError, ResumeError, RunLockedError, DiskFullError) as e:
        print(f"deliberate: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(f"deliberate: error: disk full ({e}); free space and continue with `deliberate run --resume RUN_DIR`",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
