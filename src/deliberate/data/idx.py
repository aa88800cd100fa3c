"""Reader for the IDX format of (Fashion-)MNIST, with one clear error per bad file."""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
EXPECTED = {  # shapes of the official files
    "train_images": (60000, 28, 28),
    "train_labels": (60000,),
    "test_images": (10000, 28, 28),
    "test_labels": (10000,),
}


class DataError(RuntimeError):
    """A data file that is missing, truncated or of the wrong shape."""


def read_idx(path: Path, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing data file: {path}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"unreadable or truncated data file {path}: {e}") from None
    if len(raw) < 4:
        raise DataError(f"truncated data file {path}: {len(raw)} bytes")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"truncated data file {path}: header cut short")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    n = int(np.prod(shape))
    if len(raw) - header != n:
        raise DataError(f"truncated data file {path}: header promises {n} values of shape {shape}, "
                        f"found {len(raw) - header}")
    if expected_shape is not None and tuple(shape) != tuple(expected_shape):
        raise DataError(f"mis-shaped data file {path}: shape {tuple(shape)}, expected {tuple(expected_shape)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_idx_folder(root: str | Path, part: str, strict_shape: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of the ``train`` or ``test`` part of an IDX folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root} (install Debian's dataset-fashion-mnist or set data.root)")
    ki, kl = f"{part}_images", f"{part}_labels"
    images = read_idx(root / FILES[ki])
    labels = read_idx(root / FILES[kl])
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"mis-shaped data file {root / FILES[ki]}: shape {images.shape}, expected (N, 28, 28)")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"mis-shaped data file {root / FILES[kl]}: {labels.shape} labels for {len(images)} images")
    if strict_shape and images.shape != EXPECTED[ki]:
        raise DataError(f"mis-shaped data file {root / FILES[ki]}: shape {images.shape}, expected {EXPECTED[ki]}")
    if labels.max(initial=0) > 9:
        raise DataError(f"bad labels in {root / FILES[kl]}: values up to {labels.max()}, expected 0..9")
    return images, labels.astype(np.int64)
