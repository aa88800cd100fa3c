"""Several processes on one or more machines, through ``torch.distributed``.

Launch with ``torchrun`` or ``accelerate launch`` (both set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``); :func:`setup` joins the process group they describe (NCCL on GPUs, gloo on CPUs).
A single process (no ``WORLD_SIZE``) runs exactly as before: every helper here is then the identity.

With W processes, process r (rank r):

* **generation** (:class:`ShardedGenerator`): in every ``sample`` call, rank r draws the positions j ≡ r (mod W).
  Sample i of a pool depends only on its label, its seed and the guiding classifier (identical on every rank), so
  the pool is the same whatever W. The images are all-gathered in pool order; every rank appends the shard to its
  in-memory pool, and only rank 0 writes shards and the manifest (:func:`open_pool`: a :class:`ReplicaPool`
  elsewhere).
* **training**: ``DistributedDataParallel``. Every rank draws the same global mini-batch from the current pool (same
  RNG, the pool's current length: the sampler follows the pool as it grows); the global batch is split into G
  chunks ``idx[c::G]`` and rank r trains on chunks r, r+W, … (``Learner.local_indices``), averaging gradients over
  chunks. The data seen per step is the same for every W that divides G.
* **evaluation**: each rank predicts its share of a split; correct and total counts are summed (:func:`all_sum`).
* **files**: the run directory is chosen on rank 0 and broadcast; logs, checkpoints, the pool, models, the summary
  and the report are written by rank 0 only (:func:`main_only`, :func:`checkpointer`).
"""
from __future__ import annotations

import contextlib
import datetime
import os
from typing import Callable, Sequence

import torch
import torch.distributed as dist

from .generation.base import SampleOutput, chunk_calls
from .practice.pool import Pool, ShardMeta, shard_record

TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("DELIBERATE_DIST_TIMEOUT_MIN", "120")))


# ------------------------------------------------------------------------------------------------- basics
def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: str = "auto") -> None:
    """Join the process group described by the launcher's environment (a no-op without ``WORLD_SIZE`` > 1).
    ``device`` is ``run.device``: GPUs use NCCL (each process on ``cuda:LOCAL_RANK``), CPUs gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)


def shutdown() -> None:
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj):
    """``obj`` as rank 0 has it, on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj) -> list:
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_sum(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (float64, returned on the CPU): counts for evaluation, losses for logging."""
    t = torch.as_tensor(values, dtype=torch.float64).detach().cpu().clone()
    if is_distributed():
        dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        t = t.to(dev)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t = t.cpu()
    return t


def main_only(obj):
    """``obj`` on rank 0, None elsewhere (for logs and other writers)."""
    return obj if is_main() else None


def main_first(fn: Callable):
    """Run ``fn`` on rank 0, then on the other ranks (e.g. a generator trained and cached by rank 0, loaded by
    the others from the cache)."""
    if is_main():
        out = fn()
        barrier()
        return out
    barrier()
    return fn()


def lock(run_dir):
    """The run-directory lock, held by rank 0 only (the other ranks are part of the same run)."""
    if not is_main():
        return contextlib.nullcontext()
    from .lock import RunLock

    return RunLock(run_dir)


# ------------------------------------------------------------------------------------------------ generation
class ShardedGenerator:
    """A generator whose ``sample`` calls are split across ranks by whole index-aligned chunks (chunk k of the
    request's chunks goes to rank k mod W) and gathered back in request order. Every model call is then the one a
    single process would make (:func:`~deliberate.generation.base.chunk_calls`), so the pool's bytes do not depend
    on the number of ranks."""

    def __init__(self, inner):
        self.inner = inner

    @classmethod
    def wrap(cls, generator):
        return cls(generator) if world_size() > 1 else generator

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def sample(self, labels: torch.Tensor, seeds: Sequence[int], **kw) -> SampleOutput:
        w, r, n = world_size(), rank(), len(labels)
        calls = chunk_calls(seeds, kw.get("batch_size", 256))
        mine = torch.tensor(sorted(j for c in calls[r::w] for j in c[1].values()), dtype=torch.long)
        kw["progress"] = kw.get("progress", False) and is_main()  # one bar, on rank 0
        out = self.inner.sample(labels[mine], [seeds[int(j)] for j in mine], **kw)
        parts = all_gather_object((mine, out.images, out.score, out.stats))
        images = torch.empty((n, *tuple(self.inner.image_shape)), dtype=torch.uint8)
        score = torch.empty(n, dtype=torch.float32)
        stats = {"guided_steps": 0, "nonfinite_grads": 0, "seconds": 0.0}
        for idx, im, sc, st in parts:
            images[idx] = im
            score[idx] = sc.float()
            stats["guided_steps"] = max(stats["guided_steps"], st["guided_steps"])
            stats["nonfinite_grads"] += st["nonfinite_grads"]
            stats["seconds"] = max(stats["seconds"], st["seconds"])
        return SampleOutput(images, score, stats)


# ------------------------------------------------------------------------------------------------------ pool
class ReplicaPool(Pool):
    """The pool on ranks other than 0: opened after rank 0 (which repairs the directory), it reads the shards rank 0
    wrote and appends new shards in memory only."""

    def append(self, images: torch.Tensor, labels: torch.Tensor, seeds: list[int], score: torch.Tensor,
               meta: ShardMeta, extra: dict | None = None) -> dict:
        n = len(labels)
        if not (len(images) == n == len(seeds) == len(score)):
            raise ValueError("images, labels, seeds and score must have the same length")
        rec = shard_record(len(self), images, labels, seeds, score, meta, extra, shard=None, sha256=None)
        self.records.append(rec)
        self._images.append(images)
        self._labels.append(labels.long())
        self._cat = None
        return rec


def open_pool(root, **kw) -> Pool:
    """:class:`Pool` on rank 0; after it, a :class:`ReplicaPool` of the same directory on the other ranks."""
    pool = Pool(root, **kw) if is_main() else None
    barrier()
    pool = pool if pool is not None else ReplicaPool(root, **kw)
    barrier()  # no rank writes to the directory while another is still reading it
    return pool


def checkpointer(*args, **kw):
    """A :class:`~deliberate.checkpoint.Checkpointer` on rank 0; elsewhere one that restores (every rank resumes from
    the same state) but never writes."""
    from .checkpoint import Checkpointer

    if is_main():
        return Checkpointer(*args, **kw)

    class ReadOnlyCheckpointer(Checkpointer):
        def save(self, *a, **k) -> None:
            pass

        def mark_finished(self, result: dict) -> None:
            pass

        def _rewind_log(self, size: int) -> None:
            pass

    return ReadOnlyCheckpointer(*args, **kw)


# ------------------------------------------------------------------------------------------------- training
def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model`` itself."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def on_main(fn: Callable):
    """``fn()`` evaluated on rank 0 only, its result broadcast to every rank (e.g. a new run directory's path)."""
    return broadcast_object(fn() if is_main() else None)
