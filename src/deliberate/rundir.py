"""The run directory (EDM-style): resolved config, split record, per-method ``stats.jsonl``, ``summary.json``."""
from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from .fileio import write_text


def new_run_dir(out_dir: str, name: str = "") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(out_dir) / (f"{stamp}-{name}" if name else stamp)
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    path.mkdir(parents=True)
    return path


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1, default=str))


def write_config(path: Path, cfg_dict: dict) -> None:
    write_text(path, yaml.safe_dump(cfg_dict, sort_keys=False))


class JsonlLog:
    """Append-only JSON-lines log, flushed per record."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # torn last line
    return out
