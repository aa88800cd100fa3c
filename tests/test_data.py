import gzip
import shutil
import struct

import numpy as np
import pytest

from deliberate.data import DataError, load_splits

ROOT = "/usr/share/datasets/fashion-mnist"


def test_splits_are_disjoint_reproducible_and_recorded(tmp_path):
    a = load_splits(ROOT, val_size=2000, seed=3)
    b = load_splits(ROOT, val_size=2000, seed=3)
    c = load_splits(ROOT, val_size=2000, seed=4)
    assert len(a.val) == 2000 and len(a.gen_train) == 58000 and len(a.test) == 10000
    assert not set(a.val.indices) & set(a.gen_train.indices)
    assert np.array_equal(a.val.indices, b.val.indices) and np.array_equal(a.gen_train.indices, b.gen_train.indices)
    assert not np.array_equal(a.val.indices, c.val.indices)
    assert a.val.images.shape == (2000, 1, 28, 28) and a.val.images.dtype.is_floating_point is False
    a.record(tmp_path / "splits.json")
    import json

    rec = json.loads((tmp_path / "splits.json").read_text())
    assert rec["val"]["indices"] == a.val.indices.tolist() and rec["test"]["source"] == "t10k"


def test_held_out_reads_are_counted():
    s = load_splits(ROOT, val_size=100, gen_train_size=100)
    assert s.test.reads == 0
    s.test.read("because")
    assert s.test.reads == 1 and s.test.read_log == ["because"]


def _copy(tmp_path):
    d = tmp_path / "fm"
    shutil.copytree(ROOT, d)
    return d


def test_missing_file_named(tmp_path):
    d = _copy(tmp_path)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing data file: .*t10k-labels-idx1-ubyte.gz"):
        load_splits(str(d))


def test_truncated_file_named(tmp_path):
    d = _copy(tmp_path)
    f = d / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:100000])
    with pytest.raises(DataError, match="truncated data file .*train-images-idx3-ubyte.gz"):
        load_splits(str(d))


def test_truncated_payload_named(tmp_path):
    d = _copy(tmp_path)
    f = d / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(DataError, match="truncated data file .*train-labels-idx1-ubyte.gz"):
        load_splits(str(d))


def test_misshaped_file_named(tmp_path):
    d = _copy(tmp_path)
    f = d / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(gzip.compress(struct.pack(">HBBIII", 0, 8, 3, 10, 32, 32) + bytes(10 * 32 * 32)))
    with pytest.raises(DataError, match="mis-shaped data file .*t10k-images-idx3-ubyte.gz"):
        load_splits(str(d))


def test_missing_folder_named(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        load_splits(str(tmp_path / "nowhere"))
