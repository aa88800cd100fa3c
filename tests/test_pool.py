import json

import pytest
import torch

from deliberate.practice.pool import MANIFEST, Pool, PoolError, ShardMeta


def _add(pool, n, round_=0, start_seed=0):
    images = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8)
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
