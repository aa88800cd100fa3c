"""Three disjoint real splits, fixed by seed and recorded in the run directory.

* ``gen_train``: images the generator is trained on (official train set),
* ``val``: the small plateau-validation set that drives patience (official train set, disjoint),
* the held-out ``test`` split (official 10k test set), wrapped in :class:`HeldOut` so that every read is
  counted: no decision of the practice loop may read it, and the tests check that none does.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .idx import DataError, load_idx_folder

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    indices: np.ndarray  # positions in the official file

    def __len__(self) -> int:
        return len(self.labels)


class HeldOut:
    """The held-out test split. Reading it increments ``reads``; the loop never receives this object."""

    def __init__(self, split: Split):
        self._split = split
        self.reads = 0
        self.read_log: list[str] = []

    def __len__(self) -> int:
        return len(self._split)

    def read(self, reason: str) -> Split:
        self.reads += 1
        self.read_log.append(reason)
        return self._split


@dataclass
class RealSplits:
    gen_train: Split
    val: Split
    test: HeldOut
    classes: tuple[str, ...] = CLASSES
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def record(self, path: Path) -> None:
        """Write the split definition (indices and digests) to ``path`` (JSON)."""
        path.write_text(json.dumps(self.meta, indent=1))


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def carve(n: int, seed: int, val_size: int, test_size: int = 0, gen_train_size: int = 0,
          where: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted indices (generator training, validation, held-out) of ``n`` images split by ``seed``: one permutation,
    the first ``val_size`` for validation, the next ``test_size`` held out, the first ``gen_train_size`` of the
    rest (0 = all of it) for the generator. With ``test_size`` = 0 this is the embedded split of the official train
    set. ``where`` names the images in the errors."""
    if val_size + test_size >= n:
        asked = f"data.val_size={val_size}" + (f" + data.test_size={test_size}" if test_size else "")
        raise DataError(f"{where}{asked} leaves no generator-training images out of {n}")
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = np.sort(perm[:val_size])
    test_idx = np.sort(perm[val_size:val_size + test_size])
    rest = perm[val_size + test_size:]
    if gen_train_size:
        if gen_train_size > len(rest):
            raise DataError(f"{where}data.gen_train_size={gen_train_size} exceeds the {len(rest)} images left after "
                            + ("validation and held-out" if test_size else "validation"))
        rest = rest[:gen_train_size]
    return np.sort(rest), val_idx, test_idx


def split_arrays(tr_x: np.ndarray, tr_y: np.ndarray, te_x: np.ndarray, te_y: np.ndarray, root: str,
                 val_size: int = 2000, gen_train_size: int = 0, seed: int = 0) -> RealSplits:
    """The embedded splits of train arrays (N, 28, 28) / test arrays: validation and generator training carved from
    the train set by ``seed`` (:func:`carve`), the whole test set held out."""
    gen_idx, val_idx, _ = carve(len(tr_y), seed, val_size, 0, gen_train_size)

    def split(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> Split:
        return Split(torch.from_numpy(x[idx].copy()).unsqueeze(1), torch.from_numpy(y[idx].copy()), idx)

    test_idx = np.arange(len(te_y))
    meta = {
        "root": str(root), "seed": seed,
        "gen_train": {"source": "train", "size": len(gen_idx), "indices_sha256": _digest(gen_idx)},
        "val": {"source": "train", "size": len(val_idx), "indices": val_idx.tolist()},
        "test": {"source": "t10k", "size": len(test_idx), "indices_sha256": _digest(test_idx)},
    }
    return RealSplits(split(tr_x, tr_y, gen_idx), split(tr_x, tr_y, val_idx), HeldOut(split(te_x, te_y, test_idx)),
                      meta=meta)


def load_splits(root: str, val_size: int = 2000, gen_train_size: int = 0, seed: int = 0) -> RealSplits:
    """Fashion-MNIST from an IDX folder, split deterministically by ``seed`` (:func:`split_arrays`)."""
    tr_x, tr_y = load_idx_folder(root, "train")
    te_x, te_y = load_idx_folder(root, "test")
    return split_arrays(tr_x, tr_y, te_x, te_y, root, val_size, gen_train_size, seed)
