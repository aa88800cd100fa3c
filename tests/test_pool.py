import json

import pytest
import torch

from deliberate.practice.pool import MANIFEST, Pool, PoolError, ShardMeta


def _add(pool, n, round_=0, start_seed=0, side=4):
    images = torch.randint(0, 256, (n, 1, side, side), dtype=torch.uint8)
    labels = torch.arange(n) % 3
    return pool.append(images, labels, list(range(start_seed, start_seed + n)), torch.rand(n),
                       ShardMeta(round_, 0.1, 0.0, 5, "gen-x"))


def test_append_and_reload(tmp_path):
    p = Pool(tmp_path)
    _add(p, 5)
    _add(p, 7, round_=1, start_seed=5)
    q = Pool(tmp_path, verify=True)
    assert len(q) == 12 and torch.equal(q.images, p.images) and torch.equal(q.labels, p.labels)
    assert q.column("seeds").tolist() == list(range(12))
    assert q.column("round").tolist() == [0] * 5 + [1] * 7
    rec = json.loads((tmp_path / MANIFEST).read_text().splitlines()[1])
    assert rec["omega"] == 0.1 and rec["steps"] == 5 and rec["generator_id"] == "gen-x" and len(rec["score"]) == 7


def test_torn_manifest_line_is_discarded_and_orphan_shard_removed(tmp_path):
    p = Pool(tmp_path)
    _add(p, 5)
    rec = _add(p, 4, start_seed=5)
    # simulate a crash after the shard rename but in the middle of the manifest append
    lines = (tmp_path / MANIFEST).read_bytes().split(b"\n")
    (tmp_path / MANIFEST).write_bytes(lines[0] + b"\n" + lines[1][:20])
    q = Pool(tmp_path)
    assert len(q) == 5
    assert not (tmp_path / rec["shard"]).exists()
    assert (tmp_path / MANIFEST).read_bytes().endswith(b"\n")
    _add(q, 4, start_seed=5)  # the same samples can be appended again
    assert len(Pool(tmp_path)) == 9


def test_missing_or_corrupted_shard_is_named(tmp_path):
    p = Pool(tmp_path)
    rec = _add(p, 5)
    shard = tmp_path / rec["shard"]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(PoolError, match=f"{rec['shard']} is corrupted"):
        Pool(tmp_path, verify=True)
    shard.unlink()
    with pytest.raises(PoolError, match=f"{rec['shard']} named in the manifest is missing"):
        Pool(tmp_path)


def test_length_mismatch_rejected(tmp_path):
    p = Pool(tmp_path)
    with pytest.raises(ValueError):
        p.append(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), [0, 1, 2],
                 torch.zeros(3), ShardMeta(0, 0, 0, 1, "g"))
    assert len(Pool(tmp_path)) == 0


def test_lazy_reads_match_the_in_memory_pool_and_hold_no_images(tmp_path):
    """Any indices (order, repeats, negative) read from the shards equal the all-in-RAM pool's; the pool object
    itself holds no image bytes (what bench/pool_scale.py measures as flat RSS)."""
    import pickle

    from deliberate.practice.pool import MemoryPool

    p = Pool(tmp_path)
    for k in range(4):
        _add(p, 50, round_=k, start_seed=50 * k, side=32)
    ram, disk = MemoryPool(tmp_path), Pool(tmp_path)
    idx = torch.cat([torch.randint(0, 200, (300,), generator=torch.Generator().manual_seed(0)),
                     torch.tensor([199, 0, 0, 49, 50, -1])])
    for q in (disk, p):
        im, lab = q.get(idx)
        assert torch.equal(im, ram.get(idx)[0]) and torch.equal(lab, ram.get(idx)[1])
    assert torch.equal(disk.images, ram.get(torch.arange(200))[0])
    assert torch.equal(disk.lazy_images[torch.arange(200) % 7 == 0], disk.images[::7])
    assert len(pickle.dumps(disk)) < disk.images.numel() // 10  # no image bytes held


def test_replica_reads_the_shards_rank0_wrote_or_holds_them(tmp_path):
    """A replica (rank > 0) maps the shard rank 0 wrote when the directory is shared, else holds the samples."""
    from deliberate.practice.pool import ReplicaPool

    writer, shared, alone = Pool(tmp_path / "a"), ReplicaPool(tmp_path / "a"), ReplicaPool(tmp_path / "b")
    images = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8)
    args = (images, torch.arange(6) % 3, list(range(6)), torch.rand(6), ShardMeta(0, 0.0, 0.0, 5, "g"))
    writer.append(*args)
    shared.append(*args)
    alone.append(*args)
    assert shared._shards[-1] is not None and shared.records[-1]["sha256"] == writer.records[-1]["sha256"]
    assert alone._shards[-1] is None and not list((tmp_path / "b").glob("*.safetensors"))
    for q in (shared, alone):
        assert torch.equal(q.images, images) and q.column("seeds").tolist() == list(range(6))
