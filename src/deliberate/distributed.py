"""Several processes on one or more machines, through ``torch.distributed``.

Launch with ``torchrun`` or ``accelerate launch`` (both set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``); :func:`setup` joins the process group they describe (NCCL on GPUs, gloo on CPUs).
A single process (no ``WORLD_SIZE``) runs exactly as before: every helper here is then the identity.

This module is the bottom of the package's import graph (it imports nothing of ``deliberate``); the wrappers that
make the rest rank-aware sit next to what they wrap: :class:`~deliberate.generation.base.ShardedGenerator`,
:func:`~deliberate.practice.pool.open_pool` (:class:`~deliberate.practice.pool.ReplicaPool`),
:func:`~deliberate.checkpoint.checkpointer` and :func:`~deliberate.lock.main_lock`.

With W processes, process r (rank r):

* **generation** (``ShardedGenerator``): in every ``sample`` call, rank r draws the positions j ≡ r (mod W).
  Sample i of a pool depends only on its label, its seed and the guiding classifier (identical on every rank), so
  the pool is the same whatever W. The images are all-gathered in pool order; only rank 0 writes shards and
  the manifest, the other ranks read the shards it wrote (``open_pool``: a ``ReplicaPool`` elsewhere; ranks on one
  node share the page cache).
* **training**: ``DistributedDataParallel``. Every rank draws the same global mini-batch from the current pool (same
  RNG, the pool's current length: the sampler follows the pool as it grows); the global batch is split into G
  chunks ``idx[c::G]`` and rank r trains on chunks r, r+W, … (``Learner.local_indices``), averaging gradients over
  chunks. The data seen per step is the same for every W that divides G.
* **evaluation**: each rank predicts its share of a split; correct and total counts are summed (:func:`all_sum`).
* **files**: the run directory is chosen on rank 0 and broadcast; logs, checkpoints, the pool, models, the summary
  and the report are written by rank 0 only (:func:`main_only`, ``checkpointer``).
"""
from __future__ import annotations

import datetime
import os
from typing import Callable, Sequence

import torch
import torch.distributed as dist

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
