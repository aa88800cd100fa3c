"""Training input (Algorithm 1, step 2): a ``torch.utils.data.DataLoader`` with worker processes over the pool.

Every mini-batch is drawn exactly as the in-process loop drew it, so a run's results do not depend on the number of
workers (0 included) and a resume stays exact:

* the **sampler** (:class:`BatchPlan`, in the main process) draws iteration t's global batch uniformly from the
  current pool with the loop's ``batch_rng`` (``torch.randint(0, len(pool), (batch_size,))``), keeps this
  rank's share (:meth:`~deliberate.learning.learner.Learner.local_indices`: under DDP each rank draws its share of
  every global batch) and draws the augmentation parameters with the learner's RNG. It draws ahead of training
  (the workers prefetch) on *copies* of both generators and sends their states along with the batch; the loop
  sets the real generators to them when it consumes the batch, so a checkpoint holds the state after the last
  batch trained on, never after a prefetched one;
* the **workers** read the samples from the shards (the pool is disk-backed: practice/pool.py) and augment them
  (:class:`~deliberate.learning.learner.Prepare`: uint8 crops and flips); the batch goes to the device as uint8
  (pinned memory on GPUs) and becomes float there;
* the pool **grows** only between iterations (a round of Algorithm 1): :meth:`TrainFeed.reset` then drops the
  prefetched batches and the workers, and the next batch is drawn, from the generators' current state, over the
  grown pool. Workers are forked, so they see the pool's shards as of that moment.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class BatchPlan(Sampler):
    """An endless sequence of (this rank's pool indices, augmentation parameters, batch-RNG state after the draw,
    augmentation-RNG state after the draw), starting from the given generator states."""

    def __init__(self, pool_len: int, batch_size: int, batch_state: torch.Tensor, aug_state: torch.Tensor, learner):
        self.pool_len, self.batch_size = pool_len, batch_size
        self.batch_state, self.aug_state = batch_state, aug_state
        self.local_indices, self.draw_augment = learner.local_indices, learner.draw_augment

    def __iter__(self):
        gb, ga = torch.Generator(), torch.Generator()
        gb.set_state(self.batch_state)
        ga.set_state(self.aug_state)
        while True:
            idx = torch.randint(0, self.pool_len, (self.batch_size,), generator=gb)
            local = self.local_indices(idx)
            params = self.draw_augment(len(local), ga)
            yield local, params, gb.get_state(), ga.get_state()


class PoolBatches(Dataset):
    """Whole batches: item = a :class:`BatchPlan` entry → (augmented uint8 images, labels, RNG states)."""

    def __init__(self, pool, prepare):
        self.pool, self.prepare = pool, prepare

    def __getitem__(self, item):
        local, params, batch_state, aug_state = item
        images, labels = self.pool.get(local)
        if params is not None:
            images = self.prepare(images, params)
        return images, labels, batch_state, aug_state


class TrainFeed:
    """The loop's mini-batches: ``next()`` returns this process's (images, labels) of the next iteration, ready
    for ``learner.step(images, labels, prepared=True)``, and advances ``batch_rng`` and the learner's RNG exactly
    as drawing the batch in the loop would."""

    def __init__(self, pool, learner, batch_rng: torch.Generator, batch_size: int, workers: int = 0,
                 prefetch: int = 2):
        self.pool, self.learner, self.batch_rng = pool, learner, batch_rng
        self.batch_size, self.workers, self.prefetch = batch_size, workers, prefetch
        self._it = None

    def _start(self):
        plan = BatchPlan(len(self.pool), self.batch_size, self.batch_rng.get_state(), self.learner.rng.get_state(),
                         self.learner)
        kw = {"prefetch_factor": self.prefetch, "multiprocessing_context": "fork"} if self.workers else {}
        # generator: the loader seeds its workers from it; without one it would draw from (and so change) the
        # process-global torch RNG that the rest of training uses.
        loader = DataLoader(PoolBatches(self.pool, self.learner.preparer()), batch_size=None, sampler=plan,
                            num_workers=self.workers, pin_memory=self.learner.device.type == "cuda",
                            generator=torch.Generator().manual_seed(0), **kw)
        return iter(loader)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None:
            self._it = self._start()
        images, labels, batch_state, aug_state = next(self._it)
        self.batch_rng.set_state(batch_state)
        self.learner.rng.set_state(aug_state)
        return images, labels

    def reset(self) -> None:
        """The pool grew (or training ends): drop prefetched batches and stop the workers."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        del it

    close = reset
