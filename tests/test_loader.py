"""The training input (practice/loader.py): batches from DataLoader workers equal the batches the loop drew
in-process, the generators advance exactly as if drawn there, and the sampler follows the pool as it grows."""
from __future__ import annotations

import pytest
import torch

from deliberate.config import load_config
from deliberate.learning.learner import Learner, augment, augment_params, to_float
from deliberate.practice.loader import TrainFeed
from deliberate.practice.pool import Pool, ShardMeta


def _pool(root, n=90, shape=(1, 12, 12)):
    pool = Pool(root)
    for start in range(0, n, 30):
        pool.append(torch.randint(0, 256, (30, *shape), dtype=torch.uint8), torch.arange(start, start + 30) % 10,
                    list(range(start, start + 30)), torch.zeros(30), ShardMeta(0, 0.0, 0.0, 1, "g"))
    return pool


def _learner(*extra):
    cfg = load_config(None, ["learner.batch_size=16", "run.device=cpu", *extra])
    return Learner(cfg.learner, 10, 1, 100, "cpu", seed=3)


def reference_augment(x: torch.Tensor, params, pad: int = 2) -> torch.Tensor:
    """The learner's augmentation as it was written before the loader (one gather on float images)."""
    b, _, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx, dy, flip = params
    rows, cols = dy[:, None] + torch.arange(h)[None], dx[:, None] + torch.arange(w)[None]
    out = xp[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
             rows[:, None, :, None], cols[:, None, None, :]]
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


@pytest.mark.parametrize("shape", [(1, 12, 12), (3, 7, 9)])
def test_uint8_augmentation_equals_the_float_one(shape):
    x = torch.randint(0, 256, (20, *shape), dtype=torch.uint8)
    params = augment_params(20, torch.Generator().manual_seed(1))
    want = reference_augment(to_float(x), params)
    assert torch.equal(to_float(augment(x, None, params=params)), want)
    assert torch.equal(augment(to_float(x), None, params=params), want)


def in_loop_batches(pool, learner, batch_rng, n):
    """What the loop did before the loader: draw, read, augment in the training process."""
    out = []
    for _ in range(n):
        idx = torch.randint(0, len(pool), (learner.cfg.batch_size,), generator=batch_rng)
        images, labels = pool.get(learner.local_indices(idx))
        params = learner.draw_augment(len(labels))
        out.append((learner.preparer()(images, params) if params is not None else images, labels))
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_feed_equals_in_loop_draws_and_leaves_the_same_rng_state(tmp_path, workers):
    pool = _pool(tmp_path)
    ref_l, ref_g = _learner(), torch.Generator().manual_seed(5)
    want = in_loop_batches(pool, ref_l, ref_g, 7)
    learner, g = _learner(), torch.Generator().manual_seed(5)
    feed = TrainFeed(pool, learner, g, 16, workers=workers)
    got = [feed.next() for _ in range(7)]
    feed.close()
    for (a, la), (b, lb) in zip(got, want):
        assert torch.equal(a, b) and torch.equal(la, lb)
    # the workers drew ahead, but the generators stand where 7 in-loop batches leave them (checkpoints are exact)
    assert torch.equal(g.get_state(), ref_g.get_state()) and torch.equal(learner.rng.get_state(), ref_l.rng.get_state())


def test_feed_sees_shards_appended_after_a_round(tmp_path):
    pool = _pool(tmp_path, n=30)
    learner, g = _learner(), torch.Generator().manual_seed(0)
    feed = TrainFeed(pool, learner, g, 16, workers=2)
    before = torch.cat([feed.next()[1] for _ in range(3)])
    pool.append(torch.randint(0, 256, (300, 1, 12, 12), dtype=torch.uint8), torch.full((300,), 7),
                list(range(30, 330)), torch.zeros(300), ShardMeta(1, 0.0, 0.0, 1, "g"))
    feed.reset()  # the loop does this when a round grows the pool
    after = torch.cat([feed.next()[1] for _ in range(3)])
    feed.close()
    # labels 7 are 3 of the first 30 samples, but 300 of the 330 after the round: uniform draws see the new shard
    assert (before == 7).float().mean() < 0.3 and (after == 7).float().mean() > 0.7


def test_micro_batches_under_two_processes_take_their_share(tmp_path, monkeypatch):
    """Rank r of W takes chunks r, r+W, … of the global batch, augmented with the global batch's parameters."""
    import deliberate.distributed as dist

    pool = _pool(tmp_path)
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(dist, "world_size", lambda: 2)
        monkeypatch.setattr(dist, "rank", lambda r=rank: r)
        monkeypatch.setattr(dist, "wrap_ddp", lambda m, d: m)
        learner = _learner("learner.micro_batch_size=4")
        feed = TrainFeed(pool, learner, torch.Generator().manual_seed(2), 16, workers=0)
        shares.append(feed.next())
        feed.close()
    one = _learner("learner.micro_batch_size=4")  # one process: 4 micro-batches, chunks c::4
    monkeypatch.setattr(dist, "world_size", lambda: 1)
    monkeypatch.setattr(dist, "rank", lambda: 0)
    one = _learner("learner.micro_batch_size=4")
    full = TrainFeed(pool, one, torch.Generator().manual_seed(2), 16, workers=0).next()[0]
    # one process, micro-batch k = chunk k; two processes: rank r micro-batch k = chunk r + 2k
    chunks = {k: full[4 * k:4 * k + 4] for k in range(4)}
    assert torch.equal(shares[0][0], torch.cat([chunks[0], chunks[2]]))
    assert torch.equal(shares[1][0], torch.cat([chunks[1], chunks[3]]))


def test_the_run_lock_dies_with_its_holder_not_with_its_forked_workers(tmp_path):
    """A loader worker (forked) shares the run lock's open file; it must not keep the lock after the holder is
    killed (a resume right after a crash would be refused as 'in use')."""
    import os
    import signal
    import time

    from deliberate.lock import RunLock

    r, w = os.pipe()
    holder = os.fork()
    if holder == 0:  # the run: takes the lock, forks a worker that lives on, then is killed
        try:
            RunLock(tmp_path).acquire()
            worker = os.fork()
            if worker == 0:
                time.sleep(30)
                os._exit(0)
            os.write(w, str(worker).encode())
            time.sleep(30)
        finally:
            os._exit(0)
    worker = int(os.read(r, 32))
    os.kill(holder, signal.SIGKILL)
    os.waitpid(holder, 0)
    try:
        RunLock(tmp_path).acquire().release()  # the worker still lives: the lock must be free
    finally:
        os.kill(worker, signal.SIGKILL)
