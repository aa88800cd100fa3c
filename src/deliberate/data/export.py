"""Fashion-MNIST written out as a class-folder dataset (data/classfolders.py), to check the folder path against the
embedded one (bench/folders_check.py, tests/test_folders.py).

Layout: ``<out>/train/<class>/<index>.png`` and ``<out>/test/<class>/<index>.png`` (8-bit grey PNGs, ``index`` the
image's position in its IDX file, zero-padded), and ``<out>/classes.txt``, the class folders in label order (for
``data.class_list``). The folder path orders images by file name, so it reads them in the IDX files' order and,
with the same seed, carves the same validation and generator-training images as :func:`~.splits.load_splits`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .idx import load_idx_folder
from .splits import CLASSES, RealSplits, split_arrays


def folder_name(name: str) -> str:
    """A class name as a folder name ("T-shirt/top" → "T-shirt_top")."""
    return name.replace("/", "_")


def first_per_class(labels: np.ndarray, n: int | None) -> np.ndarray:
    """Sorted positions of the first ``n`` images of each class (all for None)."""
    if n is None:
        return np.arange(len(labels))
    return np.sort(np.concatenate([np.flatnonzero(labels == k)[:n] for k in np.unique(labels)]))


def export_fashion_mnist(root: str | Path, out: str | Path, per_class: int | None = None,
                         test_per_class: int | None = None) -> dict[str, np.ndarray]:
    """Write the first ``per_class`` train and ``test_per_class`` test images of each class (None: all) under
    ``out``; returns the exported positions ``{"train": ..., "test": ...}`` in the IDX files."""
    from PIL import Image

    out = Path(out)
    names = [folder_name(c) for c in CLASSES]
    chosen = {}
    for part, n in (("train", per_class), ("test", test_per_class)):
        x, y = load_idx_folder(root, part)
        chosen[part] = idx = first_per_class(y, n)
        width = len(str(len(y) - 1))
        for name in names:
            (out / part / name).mkdir(parents=True, exist_ok=True)
        for i in idx:
            Image.fromarray(x[i], mode="L").save(out / part / names[y[i]] / f"{i:0{width}d}.png", compress_level=1)
    (out / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    return chosen


def embedded_subset_splits(root: str | Path, chosen: dict[str, np.ndarray], val_size: int, gen_train_size: int = 0,
                           seed: int = 0) -> RealSplits:
    """The embedded splits (:func:`~.splits.split_arrays`, the code of :func:`~.splits.load_splits`) of the exported
    images only: what the folder path must reproduce."""
    tr_x, tr_y = load_idx_folder(root, "train")
    te_x, te_y = load_idx_folder(root, "test")
    tr, te = chosen["train"], chosen["test"]
    return split_arrays(tr_x[tr], tr_y[tr], te_x[te], te_y[te], str(root), val_size, gen_train_size, seed)
