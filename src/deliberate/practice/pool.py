"""The pool of generated samples: append-only safetensors shards plus ``manifest.jsonl``.

Each manifest line describes one shard: its file, SHA-256, position in the pool and per-sample metadata
(label, seed, entropy under the guiding classifier) with the round, ω, λ, DDIM steps and generator id.
A shard is written to a temporary file, fsynced and renamed before its manifest line is appended and fsynced,
so after a crash the manifest never names missing or partial data: a torn last line is discarded and a shard
that no line names is removed (its samples are regenerated, identically, from their seeds).

The pool lives on disk. Opening it reads the manifest line by line and each shard's safetensors header and labels;
images are read when asked for (:meth:`Pool.get`), with positioned reads (``os.preadv``) at the offsets the
header gives, straight into the batch. A process's resident memory is then independent of the pool's size (the
OS page cache holds hot shards, shared by every process and rank on a node), and forked loader workers read the
same files. Positioned reads rather than ``mmap``: pages a process touches through a mapping count in its RSS until
unmapped, so a long run's uniform draws would map the whole pool into every worker (bench/pool_scale.py measures
both, and WebDataset-style tar shards, which are built for sequential streaming, not uniform random access).
:class:`MemoryPool` is the previous all-in-RAM pool, kept for comparison.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .. import distributed, faults
from ..fileio import atomic_write, storage_error
from ..generation.base import sampling_env

MANIFEST = "manifest.jsonl"
PER_SAMPLE = ("labels", "seeds", "score", "pix_mean", "pix_std")  # manifest fields with one value per sample
_DTYPES = {"U8": np.uint8, "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64, "F16": np.float16,
           "F32": np.float32, "F64": np.float64, "BOOL": np.bool_}


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


class Shard:
    """One safetensors shard, read lazily: the header (dtype, shape, byte offsets) is parsed when the pool opens;
    rows of ``images`` are read on demand with positioned reads. File descriptors are opened on first use and kept
    in a small per-process cache (a forked worker inherits them: positioned reads share no file offset)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        st = self.path.stat()
        size = st.st_size
        self.key = (str(self.path), st.st_ino, st.st_mtime_ns)  # a file replaced under the same name is another key
        with open(self.path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("file shorter than a safetensors header")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size, 1 << 27):
                raise ValueError(f"header length {n} exceeds the file")
            header = json.loads(f.read(n))
        self.base = 8 + n
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        if self.base + max(ends, default=0) != size:
            raise ValueError(f"{size} bytes, the header describes {self.base + max(ends, default=0)} (truncated?)")
        self.header = header
        im = header["images"]
        self.dtype = _DTYPES[im["dtype"]]
        self.count, self.sample_shape = im["shape"][0], tuple(im["shape"][1:])
        self.row = int(np.prod(self.sample_shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize
        self.offset = self.base + im["data_offsets"][0]

    def read_tensor(self, name: str) -> np.ndarray:
        """A whole (small) tensor of the shard, e.g. its labels."""
        t = self.header[name]
        lo, hi = t["data_offsets"]
        return np.frombuffer(os.pread(_fd(self.key), hi - lo, self.base + lo), dtype=_DTYPES[t["dtype"]]).reshape(t["shape"])

    def read_rows(self, rows: np.ndarray, out: np.ndarray) -> None:
        """``out[k] = images[rows[k]]`` (``rows`` sorted and unique; ``out`` a C-contiguous uint8 view)."""
        fd, row, off = _fd(self.key), self.row, self.offset
        k, n = 0, len(rows)
        while k < n:  # runs of consecutive rows: one read each
            j = k + 1
            while j < n and rows[j] == rows[j - 1] + 1:
                j += 1
            want = (j - k) * row
            got = os.preadv(fd, [out[k:j]], off + int(rows[k]) * row)
            if got != want:
                raise PoolError(f"pool shard {self.path} is truncated (read {got} of {want} bytes); "
                                f"`deliberate check RUN_DIR --repair` regenerates it")
            k = j


_FDS: "OrderedDict[tuple, int]" = OrderedDict()
_FD_CACHE = 512


def _fd(key: tuple) -> int:
    """An open read-only descriptor of the file ``key`` = (path, inode, mtime) names (least recently used ones
    are closed beyond :data:`_FD_CACHE`)."""
    fd = _FDS.get(key)
    if fd is not None:
        _FDS.move_to_end(key)
        return fd
    fd = os.open(key[0], os.O_RDONLY)
    if os.fstat(fd).st_ino != key[1]:
        os.close(fd)
        raise PoolError(f"pool shard {key[0]} was replaced while the pool was open; reopen the pool")
    _FDS[key] = fd
    if len(_FDS) > _FD_CACHE:
        os.close(_FDS.popitem(last=False)[1])
    return fd


class PoolImages:
    """The pool's images as a lazy (N, C, H, W) uint8 array: ``len``, ``shape`` and indexing (int, slice, index
    or boolean tensor) like a tensor; only the rows asked for are read."""

    def __init__(self, pool: "Pool"):
        self.pool = pool

    def __len__(self) -> int:
        return len(self.pool)

    @property
    def shape(self) -> tuple:
        return (len(self.pool), *self.pool.sample_shape)

    dtype = torch.uint8

    def __getitem__(self, idx) -> torch.Tensor:
        n = len(self.pool)
        if isinstance(idx, int):
            return self.pool.get(torch.tensor([idx % n if idx < 0 else idx]))[0][0]
        if isinstance(idx, slice):
            idx = torch.arange(n)[idx]
        idx = torch.as_tensor(idx)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().reshape(-1)
        return self.pool.get(idx)[0]


class Pool:
    """Samples on disk (uint8 images, labels) in shards, read lazily (see the module docstring). ``records`` holds
    each shard's manifest line without its per-sample lists (those are read back from the manifest by
    :meth:`column`), so memory grows by a few bytes per sample (the labels) and one small dict per shard."""

    def __init__(self, root: str | Path, verify: bool = False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        self._shards: list[Shard | None] = []  # None: a shard held in memory only (ReplicaPool without the file)
        self._held: dict[int, torch.Tensor] = {}
        self._labels: list[np.ndarray] = []
        self._starts = np.zeros(1, dtype=np.int64)  # shard k holds samples _starts[k] .. _starts[k+1]-1
        self._label_cat: torch.Tensor | None = None
        self.sample_shape: tuple = ()
        self._load(verify)

    # ------------------------------------------------------------------------------------------------ read
    def _manifest_lines(self, repair: bool = False):
        """The manifest's complete lines (bytes), in order; with ``repair``, a torn last line is cut off the file."""
        path = self.root / MANIFEST
        if not path.exists():
            return
        good = 0
        with open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):  # torn write of the last line: it names nothing yet
                    break
                good += len(line)
                yield line
        if repair and good != path.stat().st_size:
            with open(path, "r+b") as f:
                f.truncate(good)

    def _read_manifest(self, repair: bool = False):
        """Manifest records in order; ``repair`` (the writer, when it opens the pool) cuts off a torn last line."""
        for i, line in enumerate(self._manifest_lines(repair)):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise PoolError(f"{self.root / MANIFEST}: line {i + 1} is not valid JSON (corrupted manifest)") from None

    def _open_shard(self, rec: dict, verify: bool) -> Shard:
        path = self.root / rec["shard"]
        if not path.exists():
            raise PoolError(f"pool shard {path} named in the manifest is missing; "
                            f"`deliberate check RUN_DIR --repair` regenerates it")
        if verify and sha256_file(path) != rec["sha256"]:
            raise PoolError(f"pool shard {path} is corrupted or truncated (SHA-256 differs from the manifest); "
                            f"`deliberate check RUN_DIR --repair` regenerates it")
        try:
            shard = Shard(path)
            labels = shard.read_tensor("labels")
        except Exception as e:  # damaged header or tensors
            raise PoolError(f"pool shard {path} is unreadable ({e}); "
                            f"`deliberate check RUN_DIR --repair` regenerates it") from None
        if len(labels) != rec["count"] or shard.count != rec["count"]:
            raise PoolError(f"pool shard {path} holds {len(labels)} samples, manifest says {rec['count']}")
        if self.sample_shape and shard.sample_shape != self.sample_shape:
            raise PoolError(f"pool shard {path} holds images of shape {shard.sample_shape}, the pool "
                            f"{self.sample_shape}")
        return shard, labels

    def _add(self, rec: dict, shard: Shard | None, labels: np.ndarray, sample_shape: tuple) -> None:
        self.records.append({k: v for k, v in rec.items() if k not in PER_SAMPLE})
        self._shards.append(shard)
        self._labels.append(np.asarray(labels, dtype=np.int64))
        self._starts = np.append(self._starts, self._starts[-1] + len(labels))
        self.sample_shape = self.sample_shape or tuple(sample_shape)
        self._label_cat = None

    def _load(self, verify: bool) -> None:
        named = set()
        for rec in self._read_manifest(repair=True):
            named.add(rec["shard"])
            shard, labels = self._open_shard(rec, verify)
            self._add(rec, shard, labels, shard.sample_shape)
        for orphan in self.root.glob("*.safetensors*"):
            if orphan.name not in named:
                orphan.unlink()  # written but never recorded: regenerated from its seeds

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def images(self) -> torch.Tensor:
        """Every image, read now (the whole pool in memory: for small pools; see :attr:`lazy_images`)."""
        return self.get(torch.arange(len(self)))[0]

    @property
    def lazy_images(self) -> PoolImages:
        """The images, lazily: ``pool.lazy_images[idx]`` reads only the rows asked for."""
        return PoolImages(self)

    @property
    def labels(self) -> torch.Tensor:
        if self._label_cat is None:
            self._label_cat = torch.from_numpy(np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64))
        return self._label_cat

    def get(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of pool positions ``idx`` (any order, repeats allowed), read from the shards."""
        flat = torch.as_tensor(idx, dtype=torch.long).reshape(-1).numpy()
        n = len(self)
        if len(flat) and (flat.min() < -n or flat.max() >= n):
            raise IndexError(f"pool index out of range for a pool of {n} samples")
        flat = np.where(flat < 0, flat + n, flat)
        uniq, inverse = np.unique(flat, return_inverse=True)
        out = np.empty((len(uniq), *self.sample_shape), dtype=np.uint8)
        rows = out.reshape(len(uniq), -1)
        which = np.searchsorted(self._starts, uniq, side="right") - 1
        bounds = np.flatnonzero(np.diff(which)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(uniq)]):
            if lo == hi:
                continue
            k = int(which[lo])
            local = uniq[lo:hi] - self._starts[k]
            if self._shards[k] is None:
                rows[lo:hi] = self._held[k][torch.from_numpy(local)].reshape(hi - lo, -1).numpy()
            else:
                self._shards[k].read_rows(local, rows[lo:hi])
        images = torch.from_numpy(out)[torch.from_numpy(inverse.reshape(-1))] if len(uniq) != len(flat) \
            or not np.array_equal(uniq, flat) else torch.from_numpy(out)
        return images, self.labels[torch.from_numpy(flat)]

    def column(self, key: str) -> np.ndarray:
        """Per-sample metadata across the pool: ``labels``, ``seeds``, ``score``, or a shard field (``round``…).
        Per-sample fields are read back from the manifest (they are not held in memory)."""
        vals = []
        if key in PER_SAMPLE:
            for r in self._all_records():
                vals.extend(r[key])
        else:
            for r in self.records:
                vals.extend([r[key]] * r["count"])
        return np.asarray([np.nan if v is None else v for v in vals])

    def _all_records(self):
        """The full manifest records (per-sample lists included), in order."""
        return self._read_manifest()

    def same_shard(self, start: int, labels: torch.Tensor, seeds: list[int],
                   meta: ShardMeta) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(images, score) of this pool's shard that holds exactly the samples asked for — same first index, labels,
        seeds and :class:`ShardMeta` (generator, sampling settings, round, ω, environment) — or None. A sample is
        determined by those alone, so such a shard is the one a fresh call would write (used to share the plain
        initial pool between the methods of one job)."""
        want = json.loads(json.dumps({"start": start, "count": len(labels), **meta.__dict__}))
        for k, rec in enumerate(self.records):
            if not all(rec.get(f) == v for f, v in want.items()):
                continue
            full = next(r for i, r in enumerate(self._all_records()) if i == k)
            if full["labels"] != labels.tolist() or full["seeds"] != [int(v) for v in seeds]:
                continue
            images, _ = self.get(torch.arange(start, start + len(labels)))
            shard = self._shards[k]
            score = (torch.from_numpy(shard.read_tensor("score").copy()) if shard is not None
                     else torch.tensor([np.nan if v is None else v for v in full["score"]], dtype=torch.float32))
            return images, score
        return None

    # ----------------------------------------------------------------------------------------------- write
    def _record(self, images, labels, seeds, score, meta, extra, **files) -> dict:
        n = len(labels)
        if not (len(images) == n == len(seeds) == len(score)):
            raise ValueError("images, labels, seeds and score must have the same length")
        if self.sample_shape and tuple(images.shape[1:]) != self.sample_shape:
            raise ValueError(f"images of shape {tuple(images.shape[1:])} do not fit the pool's {self.sample_shape}")
        return shard_record(len(self), images, labels, seeds, score, meta, extra, **files)

    def append(self, images: torch.Tensor, labels: torch.Tensor, seeds: list[int], score: torch.Tensor,
               meta: ShardMeta, extra: dict | None = None) -> dict:
        """Add one shard atomically; returns its manifest record. With several processes the other ranks'
        :class:`ReplicaPool` waits for the write, then reads the shard from disk."""
        start = len(self)
        name = f"r{meta.round:03d}-{start:09d}.safetensors"
        path = self.root / name
        tensors = {"images": images.contiguous(), "labels": labels.long().contiguous(),
                   "seeds": torch.tensor(seeds, dtype=torch.int64), "score": score.float().contiguous()}
        rec = self._record(images, labels, seeds, score, meta, extra, shard=name, sha256=None)
        rec["sha256"] = write_shard(path, tensors)
        try:
            append_line(self.root / MANIFEST, (json.dumps(rec) + "\n").encode())
        except BaseException:
            path.unlink(missing_ok=True)  # published but never recorded
            raise
        self._add(rec, Shard(path), labels.numpy(), images.shape[1:])
        distributed.barrier()  # the shard and its manifest line are on disk before the other ranks look
        return rec


class ReplicaPool(Pool):
    """The pool on ranks other than 0 (:func:`open_pool`): opened after rank 0 (which repairs the directory), it
    writes nothing. On ``append`` it waits for rank 0 to write the same shard, then reads it from disk like rank 0
    (ranks on one node share the page cache); where the directory is not shared with rank 0 (another node without a
    shared filesystem), it holds the shard's samples in memory instead."""

    def __init__(self, root, verify: bool = False):
        self._held_recs: dict[int, dict] = {}
        super().__init__(root, verify=verify)

    def _load(self, verify: bool) -> None:
        for rec in self._read_manifest():  # rank 0 removed orphans; a replica removes nothing
            shard, labels = self._open_shard(rec, verify)
            self._add(rec, shard, labels, shard.sample_shape)

    def _all_records(self):
        disk = iter(self._read_manifest())
        for k in range(len(self.records)):
            yield self._held_recs[k] if k in self._held else next(disk)

    def append(self, images: torch.Tensor, labels: torch.Tensor, seeds: list[int], score: torch.Tensor,
               meta: ShardMeta, extra: dict | None = None) -> dict:
        rec = self._record(images, labels, seeds, score, meta, extra, shard=None, sha256=None)
        distributed.barrier()  # rank 0 has written the shard and its manifest line
        k = len(self.records)
        lines = [json.loads(x) for x in self._manifest_lines()]
        on_disk = lines[k] if len(lines) > k else None
        if on_disk is not None and on_disk["start"] == rec["start"] and on_disk["seeds"] == rec["seeds"]:
            shard, stored = self._open_shard(on_disk, verify=False)
            self._add(on_disk, shard, stored, shard.sample_shape)
            return on_disk
        self._held[k], self._held_recs[k] = images.contiguous(), rec
        self._add(rec, None, labels.numpy(), images.shape[1:])
        return rec


class MemoryPool(Pool):
    """The previous pool: every image of every shard read into one tensor at open and on append (resident memory
    grows with the pool). For comparison (bench/pool_scale.py) and small pools."""

    def _load(self, verify: bool) -> None:
        super()._load(verify)
        parts = [torch.from_numpy(s.read_tensor("images").copy()) for s in self._shards]
        self._cat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.uint8)
        del parts

    def append(self, images, labels, seeds, score, meta, extra=None) -> dict:
        rec = super().append(images, labels, seeds, score, meta, extra)
        self._cat = torch.cat([self._cat, images]) if len(self._cat) else images.clone()
        return rec

    def get(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return self._cat[idx], self.labels[idx]


def open_pool(root, **kw) -> Pool:
    """:class:`Pool` on rank 0; after it, a :class:`ReplicaPool` of the same directory on the other ranks."""
    pool = Pool(root, **kw) if distributed.is_main() else None
    distributed.barrier()
    pool = pool if pool is not None else ReplicaPool(root, **kw)
    distributed.barrier()  # no rank writes to the directory while another is still reading it
    return pool


def donor_shard(donors, start: int, labels: torch.Tensor, seeds: list[int],
                meta: ShardMeta) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(images, score) of the first of ``donors`` (pools run earlier) that holds this shard made identically
    (:meth:`Pool.same_shard`), or None: the copy that replaces sampling it again."""
    return next((h for d in donors if (h := d.same_shard(start, labels, seeds, meta)) is not None), None)
