"""A content cache of generated samples, so the benchmark pays for each distinct sample once.

A sample is fixed by (generator id, label, seed, λ, DDIM steps, η, the sampler's version, the generator's bf16 flag,
the chunk size of its model calls) and, when guided, by the guidance settings and the guiding classifier's weights
(hashed): every setting that changes its bytes is in the key, so samples made another way are never served.
:class:`CachedGenerator` wraps a generator with the same ``sample()`` signature: hits are read from the cache, misses
are generated (in one call) and stored. Because pool sample i has label i mod C and seed ``seed_offset + i``, every
plain pool is a prefix of one plain stream: the static ladder, DP's initial pool, dynamic-unguided's additions and
prune's candidates all share it.

Time is *charged*, not re-paid: each stored sample keeps the seconds its generation took (its batch's time split
evenly), and ``stats["seconds"]`` of a call is the sum over its samples, hits included; ``stats["actual_seconds"]``
is what the call really spent.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from deliberate.generation.base import SampleOutput, score_in_chunks
from deliberate.generation.ddim import SAMPLER_VERSION


def module_hash(module: torch.nn.Module) -> str:
    """SHA-256 (12 hex) of a module's state (parameters and buffers, in order)."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:12]


def guide_key(guide) -> dict | None:
    """What a guided sample depends on beyond (label, seed): None for plain sampling (no guide or ω = 0)."""
    if guide is None or guide.omega == 0:
        return None
    crit = guide.criterion
    key = {"criterion": type(crit).__name__, "state": module_hash(crit) if isinstance(crit, torch.nn.Module) else
           repr(crit), "omega": guide.omega, "every": guide.every, "window": list(guide.window), "grad": guide.grad,
           "scale": guide.scale}
    if getattr(crit, "params", None) and crit.params():  # absent when empty, so earlier keys stay valid
        key["params"] = crit.params()
    return key


class SampleCache:
    """Chunks of samples on disk (safetensors) under ``root/<setting key>/``, indexed by (label, seed) in memory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._index: dict[str, dict[tuple[int, int], tuple[int, int]]] = {}
        self._chunks: dict[str, list[dict]] = {}

    @staticmethod
    def setting_key(setting: dict) -> str:
        """The directory key of a sampling setting (see :meth:`CachedGenerator.sample`)."""
        return hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:16]

    def _load(self, key: str) -> None:
        if key in self._index:
            return
        self._index[key], self._chunks[key] = {}, []
        d = self.root / key
        for f in sorted(d.glob("chunk-*.safetensors")) if d.exists() else []:
            try:
                self._add(key, load_file(f))
            except Exception:  # a chunk torn by a crash: its samples are regenerated
                f.unlink()

    def _add(self, key: str, chunk: dict) -> None:
        c = len(self._chunks[key])
        self._chunks[key].append(chunk)
        for row, (lab, sd) in enumerate(zip(chunk["labels"].tolist(), chunk["seeds"].tolist())):
            self._index[key].setdefault((lab, sd), (c, row))

    def lookup(self, key: str, labels: list[int], seeds: list[int]) -> list[tuple[int, int] | None]:
        self._load(key)
        idx = self._index[key]
        return [idx.get((lab, sd)) for lab, sd in zip(labels, seeds)]

    def store(self, key: str, chunk: dict, meta: dict) -> None:
        """Add a chunk (``labels``, ``seeds``, ``images``, ``score``, ``seconds``) and persist it atomically."""
        self._load(key)
        d = self.root / key
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "setting.json").exists():
            (d / "setting.json").write_text(json.dumps(meta, indent=1))
        path = d / f"chunk-{len(self._chunks[key]):06d}-{os.getpid()}.safetensors"
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.contiguous() for k, v in chunk.items()}, tmp)
        os.replace(tmp, path)
        self._add(key, chunk)

    def get(self, key: str, where: tuple[int, int]) -> dict:
        c, row = where
        return {k: v[row] for k, v in self._chunks[key][c].items()}

    def size(self) -> dict[str, int]:
        return {k: len(v) for k, v in self._index.items()}


class CachedGenerator:
    """A generator whose ``sample()`` answers from a :class:`SampleCache` and generates only the misses."""

    def __init__(self, generator, cache: SampleCache):
        self.inner = generator
        self.cache = cache
        self.generator_id = generator.generator_id
        self.num_classes = generator.num_classes
        self.image_shape = generator.image_shape
        self.counts = {"hits": 0, "misses": 0, "charged_seconds": 0.0, "actual_seconds": 0.0}

    def sample(self, labels: torch.Tensor, seeds, *, steps: int, cfg_scale: float = 0.0, guide=None,
               eta: float = 0.0, batch_size: int = 256, solver: str = "ddim", progress: bool = False) -> SampleOutput:
        t0 = time.perf_counter()
        gkey = guide_key(guide)
        setting = {"generator": self.generator_id, "steps": steps, "cfg_scale": cfg_scale, "eta": eta, "guide": gkey,
                   "sampler": SAMPLER_VERSION, "bf16": getattr(self.inner, "bf16", None), "chunk": batch_size}
        if solver != "ddim":  # absent for DDIM, so samples cached before solvers existed keep their key
            setting["solver"] = solver
        key = SampleCache.setting_key(setting)
        labs = [int(v) for v in labels.tolist()]
        seeds = [int(s) for s in seeds]
        found = self.cache.lookup(key, labs, seeds)
        miss = [i for i, w in enumerate(found) if w is None]
        stats = {"guided_steps": 0, "nonfinite_grads": 0}
        if miss:
            out = self.inner.sample(labels[miss], [seeds[i] for i in miss], steps=steps, cfg_scale=cfg_scale,
                                    guide=guide if gkey is not None else None, eta=eta, batch_size=batch_size,
                                    solver=solver, progress=progress)
            n = len(miss)
            stats["nonfinite_grads"] += out.stats["nonfinite_grads"]
            chunk = {"labels": labels[miss].long(), "seeds": torch.tensor([seeds[i] for i in miss]),
                     "images": out.images, "score": out.score.float(),
                     "seconds": torch.full((n,), out.stats["seconds"] / n, dtype=torch.float64),
                     "guided_steps": torch.full((n,), float(out.stats["guided_steps"]))}
            self.cache.store(key, chunk, setting)
            found = self.cache.lookup(key, labs, seeds)
        rows = [self.cache.get(key, w) for w in found]
        images = torch.stack([r["images"] for r in rows]) if rows else torch.zeros((0, *self.image_shape), dtype=torch.uint8)
        charged = float(sum(float(r["seconds"]) for r in rows))
        if gkey is not None:
            score = torch.stack([r["score"] for r in rows])
            stats["guided_steps"] = int(round(float(rows[0]["guided_steps"]))) if rows else 0
        elif guide is not None:  # ω = 0 with a criterion: plain samples, scored as stored (as the generators do)
            score = score_in_chunks(guide.criterion, images, labels, seeds, batch_size,
                                    getattr(self.inner, "device", "cpu"))
        else:
            score = torch.full((len(rows),), float("nan"))
        actual = time.perf_counter() - t0
        self.counts["hits"] += len(rows) - len(miss)
        self.counts["misses"] += len(miss)
        self.counts["charged_seconds"] += charged
        self.counts["actual_seconds"] += actual
        return SampleOutput(images, score, {**stats, "seconds": charged, "actual_seconds": actual})
