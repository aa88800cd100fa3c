"""The pool of generated samples: append-only safetensors shards plus ``manifest.jsonl``.

Each manifest line describes one shard: its file, SHA-256, position in the pool and per-sample metadata
(label, seed, entropy under the guiding classifier) with the round, ω, λ, DDIM steps and generator id.
A shard is written to a temporary file, fsynced and renamed before its manifest line is appended and fsynced,
so after a crash the manifest never names missing or partial data: a torn last line is discarded and a shard
that no line names is removed (its samples are regenerated, identically, from their seeds).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .. import faults
from ..checkpoint import atomic_write, storage_error
from ..generation.base import sampling_env

MANIFEST = "manifest.jsonl"


class PoolError(RuntimeError):
    """A pool whose files are missing, corrupted or inconsistent."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_shard(path: Path, tensors: dict) -> str:
    """Write a shard atomically (temp file, fsync, rename; ENOSPC → DiskFullError, no temp file left);
    returns its SHA-256."""
    atomic_write(path, lambda p: save_file(tensors, p), fault="shard")
    return sha256_file(path)


def _write_all(f, data: bytes) -> None:
    f.write(data)


def append_line(path: Path, line: bytes) -> None:
    """Append one manifest line durably; on any failure the manifest is cut back to its previous length."""
    size = path.stat().st_size if path.exists() else 0
    try:
        with open(path, "ab") as f:
            faults.point("manifest", lambda: (_write_all(f, line[: len(line) // 2]), f.flush()))
            _write_all(f, line)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        with open(path, "r+b") as f:
            f.truncate(size)
        if isinstance(e, OSError):
            raise storage_error(e, path) from e
        raise


@dataclass
class ShardMeta:
    round: int
    omega: float
    cfg_scale: float
    steps: int
    generator_id: str
    chunk: int = 0  # samples per model call (sampling.batch_size): part of what fixes a sample's bytes
    env: dict = field(default_factory=dict)  # where it was made (generation.base.sampling_env)
    solver: str = "ddim"  # sampling.solver

    @classmethod
    def made_by(cls, round_: int, omega: float, sampling, generator) -> "ShardMeta":
        """The metadata of a shard that ``generator`` sampled with the ``sampling`` config, here and now."""
        return cls(round_, omega, sampling.cfg_scale, sampling.steps, generator.generator_id, sampling.batch_size,
                   sampling_env(getattr(generator, "device", "cpu")), sampling.solver)


def manifest_scores(score: torch.Tensor) -> list:
    """Per-sample scores as the manifest keeps them: 5 decimals, None for NaN."""
    return [None if s != s else round(float(s), 5) for s in score.tolist()]


def fingerprint(images: torch.Tensor) -> dict:
    """Per-sample pixel mean and standard deviation (uint8 levels, 2 decimals): what ``deliberate check --repair``
    compares when a shard regenerated in another environment cannot match its SHA-256 bit for bit."""
    x = images.flatten(1).double()
    if not len(x):
        return {"pix_mean": [], "pix_std": []}
    return {"pix_mean": [round(float(v), 2) for v in x.mean(1)],
            "pix_std": [round(float(v), 2) for v in x.std(1, unbiased=False)]}


def shard_record(start: int, images: torch.Tensor, labels: torch.Tensor, seeds: list[int], score: torch.Tensor,
                 meta: ShardMeta, extra: dict | None = None, **files) -> dict:
    """The manifest line of a shard (``files``: its name and SHA-256 where it is written)."""
    return {**files, "start": start, "count": len(labels), **meta.__dict__, "labels": labels.tolist(),
            "seeds": [int(s) for s in seeds], "score": manifest_scores(score), **fingerprint(images), **(extra or {})}


class Pool:
    """Samples in memory (uint8 images, labels) backed by shards on disk."""

    def __init__(self, root: str | Path, verify: bool = False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        self._images: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._cat: tuple[torch.Tensor, torch.Tensor] | None = None
        self._load(verify)

    # ------------------------------------------------------------------------------------------------ read
    def _read_manifest(self) -> list[dict]:
        path = self.root / MANIFEST
        if not path.exists():
            return []
        raw = path.read_bytes()
        lines = raw.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        out = []
        for i, line in enumerate(complete):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise PoolError(f"{path}: line {i + 1} is not valid JSON (corrupted manifest)") from None
        if tail:  # torn write of the last line: it names nothing yet
            with open(path, "r+b") as f:
                f.truncate(len(raw) - len(tail))
        return out

    def _load(self, verify: bool) -> None:
        self.records = self._read_manifest()
        named = set()
        for rec in self.records:
            path = self.root / rec["shard"]
            named.add(rec["shard"])
            if not path.exists():
                raise PoolError(f"pool shard {path} named in the manifest is missing; "
                                f"`deliberate check RUN_DIR --repair` regenerates it")
            if verify and sha256_file(path) != rec["sha256"]:
                raise PoolError(f"pool shard {path} is corrupted or truncated (SHA-256 differs from the manifest); "
                                f"`deliberate check RUN_DIR --repair` regenerates it")
            try:
                data = load_file(path)
            except Exception as e:  # safetensors raises several types on damage
                raise PoolError(f"pool shard {path} is unreadable ({e}); "
                                f"`deliberate check RUN_DIR --repair` regenerates it") from None
            if len(data["labels"]) != rec["count"]:
                raise PoolError(f"pool shard {path} holds {len(data['labels'])} samples, manifest says {rec['count']}")
            self._images.append(data["images"])
            self._labels.append(data["labels"])
        for orphan in self.root.glob("*.safetensors*"):
            if orphan.name not in named:
                orphan.unlink()  # written but never recorded: regenerated from its seeds
        self._cat = None

    def __len__(self) -> int:
        return sum(r["count"] for r in self.records)

    @property
    def images(self) -> torch.Tensor:
        return self._concat()[0]

    @property
    def labels(self) -> torch.Tensor:
        return self._concat()[1]

    def _concat(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cat is None:
            if self._images:
                self._cat = (torch.cat(self._images), torch.cat(self._labels))
                self._images, self._labels = [self._cat[0]], [self._cat[1]]  # hold the pool once, not twice
            else:
                self._cat = (torch.zeros(0, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
        return self._cat

    def get(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self._concat()
        return images[idx], labels[idx]

    def column(self, key: str) -> np.ndarray:
        """Per-sample metadata across the pool: ``labels``, ``seeds``, ``score``, or a shard field (``round``…)."""
        vals = []
        for r in self.records:
            vals.extend(r[key] if isinstance(r.get(key), list) else [r[key]] * r["count"])
        return np.asarray([np.nan if v is None else v for v in vals])

    # ----------------------------------------------------------------------------------------------- write
    def append(self, images: torch.Tensor, labels: torch.Tensor, seeds: list[int], score: torch.Tensor,
               meta: ShardMeta, extra: dict | None = None) -> dict:
        """Add one shard atomically; returns its manifest record."""
        n = len(labels)
        if not (len(images) == n == len(seeds) == len(score)):
            raise ValueError("images, labels, seeds and score must have the same length")
        start = len(self)
        name = f"r{meta.round:03d}-{start:09d}.safetensors"
        path = self.root / name
        tensors = {"images": images.contiguous(), "labels": labels.long().contiguous(),
                   "seeds": torch.tensor(seeds, dtype=torch.int64), "score": score.float().contiguous()}
        rec = shard_record(start, images, labels, seeds, score, meta, extra, shard=name,
                           sha256=write_shard(path, tensors))
        try:
            append_line(self.root / MANIFEST, (json.dumps(rec) + "\n").encode())
        except BaseException:
            path.unlink(missing_ok=True)  # published but never recorded
            raise
        self.records.append(rec)
        self._images.append(images)
        self._labels.append(labels.long())
        self._cat = None
        return rec
