"""Any class-folder dataset (``data.name=class_folders``): ``<root>/<class name>/<image>``, one folder per class, any
image size and mode (L, RGB, RGBA), cut into the three splits the job reads, as for the embedded Fashion-MNIST
(data/splits.py): generator training, plateau validation (drives patience), held out (read once, at the end).

Layouts:

* one root, ``data.root/<class>/…``: ``data.val_size`` validation and ``data.test_size`` held-out images are carved
  by ``data.split_seed`` (:func:`~deliberate.data.splits.carve`); the rest (or ``data.gen_train_size`` of it) train
  the generator;
* separate roots: ``data.root/train``, ``data.root/test`` and optionally ``data.root/val`` (found when these are the
  only sub-folders), or ``data.val_dir`` / ``data.test_dir`` beside ``data.root``: a split with its own root takes
  all of it (``data.test_per_class`` caps the held-out one); a split without one is carved from the train root.
  Every root must hold the same class folders.

Order: labels follow the class folders sorted by name, or the lines of ``data.class_list`` (a file of folder names,
one per line). Images are ordered by file name, then class, and that order is what the seed permutes:
Fashion-MNIST exported as ``train/<class>/<index>.png`` (zero-padded) gives the embedded splits image for image
(bench/folders_check.py).

Pixels: uint8 (N, C, S, S). ``data.image_size`` > 0 resizes the shorter side to it (bilinear, antialiased) and
centre-crops; 0 keeps the native size, which must then be one square size for all images. ``data.mode`` (L, RGB,
RGBA) converts every image; empty keeps the images' own mode, which must be one for all.

Errors: an empty class folder, an unreadable image, mixed modes or sizes, a class folder in one split only, a class
that a carved split misses, or fewer images than the split sizes ask for raise :class:`DataError` with one line
naming the folder or file. Folders and image headers are checked before any pixel is decoded; nothing is written.
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .idx import DataError
from .splits import HeldOut, RealSplits, Split, carve

MODES = {"L": 1, "RGB": 3, "RGBA": 4}
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_NAMES = {"gen_train": "generator-training", "val": "plateau-validation", "test": "held-out"}
SIZE_KEYS = {"gen_train": "data.gen_train_size", "val": "data.val_size", "test": "data.test_size"}


# ------------------------------------------------------------------------------------------------ folders
def class_folders(root: Path, key: str) -> list[str]:
    """The class folder names under ``root``, sorted (hidden folders skipped)."""
    if not root.is_dir():
        raise DataError(f"{key}: {root} is not a directory")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"{key}: {root} has no class folders (expected {root}/<class name>/<image>)")
    return names


def roots(d) -> dict[str, tuple[str, Path]]:
    """``{split: (what to call it, folder)}``: ``train`` always, ``val`` / ``test`` when they have their own root."""
    root = Path(d.root)
    sub = set(class_folders(root, "data.root"))
    if not d.val_dir and not d.test_dir and sub in ({"train", "test"}, {"train", "val", "test"}):
        return {s: (f"data.root/{s}", root / s) for s in ("train", "val", "test") if s in sub}
    out = {"train": ("data.root", root)}
    for s in ("val", "test"):
        if getattr(d, f"{s}_dir"):
            out[s] = (f"data.{s}_dir", Path(getattr(d, f"{s}_dir")))
    return out


def class_order(spec: str, found: list[str], where: str) -> list[str]:
    """The classes in label order: ``found`` (sorted folder names), or the folder names listed in the file ``spec``
    (one per line, ``#`` lines skipped), which must be exactly the class folders of ``where``."""
    if not spec:
        return found
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"data.class_list: {spec} is not a file (one class folder name per line)")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"data.class_list: {path} lists classes more than once: {dup[:5]}")
    missing, extra = sorted(set(found) - set(names)), sorted(set(names) - set(found))
    if missing:
        raise DataError(f"data.class_list: {path} does not list the class folder(s) {missing[:5]} of {where}")
    if extra:
        raise DataError(f"data.class_list: {path} lists {extra[:5]}, which {where} has no folder for")
    return names


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in EXTENSIONS)


def scan(key: str, root: Path, classes: list[str], first: str) -> tuple[list[Path], np.ndarray]:
    """Image files and labels of ``root``, ordered by (file name, label); ``first`` names the train root."""
    present = class_folders(root, key)
    if first:
        missing, extra = sorted(set(classes) - set(present)), sorted(set(present) - set(classes))
        if missing:
            raise DataError(f"{key}: {root} has no folder for class '{missing[0]}' (present in {first}): "
                            "every split needs every class")
        if extra:
            raise DataError(f"{key}: class folder {root / extra[0]} is in this split only (not in {first}): "
                            "every split needs every class")
    items = []
    for k, c in enumerate(classes):
        files = image_files(root / c)
        if not files:
            raise DataError(f"{key}: class folder {root / c} is empty (no {', '.join(EXTENSIONS)} images)")
        items += [(f.name, k, f) for f in files]
    items.sort(key=lambda it: (it[0], it[1]))
    return [f for _, _, f in items], np.asarray([k for _, k, _ in items], dtype=np.int64)


# ------------------------------------------------------------------------------------------------- pixels
def header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) of an image, read from its header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def check_headers(paths: list[Path], size: int, mode: str) -> tuple[int, int]:
    """(channels, side) of the stored images; one error naming the first file whose mode or size breaks the rule."""
    m0, s0 = header(paths[0])
    for p in paths:
        m, s = header(p)
        if not mode and m not in MODES:
            raise DataError(f"image {p} has mode {m}, not one of {'/'.join(MODES)}: set data.mode=RGB (or L) to "
                            "convert every image")
        if not mode and m != m0:
            raise DataError(f"mixed image modes: {p} is {m}, {paths[0]} is {m0}: set data.mode=RGB (or L) to "
                            "convert every image")
        if not size and s != s0:
            raise DataError(f"mixed image sizes: {p} is {s[0]}x{s[1]}, {paths[0]} is {s0[0]}x{s0[1]}: set "
                            "data.image_size to resize and centre-crop every image")
    if not size and s0[0] != s0[1]:
        raise DataError(f"images are {s0[0]}x{s0[1]} ({paths[0]}), not square: set data.image_size to resize and "
                        "centre-crop them")
    return MODES[mode or m0], size or s0[0]


def decode(path: Path, size: int, mode: str) -> np.ndarray:
    """One image → uint8 (C, S, S): converted to ``mode`` (if set); with ``size``, the shorter side resized to it
    (bilinear, antialiased) and centre-cropped."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if mode:
                im = im.convert(mode)
            if size and im.size != (size, size):
                w, h = im.size
                nw, nh = (size, max(size, round(size * h / w))) if w <= h else (max(size, round(size * w / h)), size)
                im = im.resize((nw, nh), Image.BILINEAR)
                left, top = (nw - size) // 2, (nh - size) // 2
                im = im.crop((left, top, left + size, top + size))
            a = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def load_images(paths: list[Path], size: int, mode: str, workers: int) -> torch.Tensor:
    if workers > 1 and len(paths) > 1:
        with ThreadPoolExecutor(workers) as ex:  # PIL releases the GIL while decoding and resizing
            arrays = list(ex.map(lambda p: decode(p, size, mode), paths))
    else:
        arrays = [decode(p, size, mode) for p in paths]
    return torch.from_numpy(np.stack(arrays))


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()[:16]


def _cap_per_class(labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Indices keeping at most ``cap`` images of each class, drawn by ``seed`` (sorted)."""
    rng = np.random.default_rng(seed)
    keep = [np.sort(rng.choice(idx, cap, replace=False)) if len(idx) > cap else idx
            for idx in (np.flatnonzero(labels == y) for y in np.unique(labels))]
    return np.sort(np.concatenate(keep))


# ------------------------------------------------------------------------------------------------- splits
def load_class_folder_splits(d, rank: int = 0, world: int = 1) -> RealSplits:
    """The three splits of a class-folder dataset (``d``: a :class:`~deliberate.config.DataConfig`); validation and
    held-out hold this rank's share (files i with i % world == rank), generator training all of it."""
    where = roots(d)
    train_key, train_root = where["train"]
    classes = class_order(d.class_list, class_folders(train_root, train_key), f"{train_key} {train_root}")
    first = f"{train_key} {train_root}"
    files = {s: scan(k, r, classes, "" if s == "train" else first) for s, (k, r) in where.items()}
    paths, labels = files["train"]
    if "test" not in where and d.test_size <= 0:
        raise DataError(f"data.test_size must be > 0: the held-out split is carved from {first}, which has no test "
                        "folder (and data.test_dir is empty)")
    gen, val, test = carve(len(paths), d.split_seed, 0 if "val" in where else d.val_size,
                           0 if "test" in where else d.test_size, d.gen_train_size,
                           where=f"{first} has {len(paths)} images: ")
    chosen = {"gen_train": ("train", gen), "val": ("val", np.arange(len(files["val"][0])))
              if "val" in where else ("train", val),
              "test": ("test", np.arange(len(files["test"][0]))) if "test" in where else ("train", test)}
    if "test" in where and d.test_per_class:
        chosen["test"] = ("test", _cap_per_class(files["test"][1], d.test_per_class, d.split_seed))
    for split, (src, idx) in chosen.items():
        have = set(files[src][1][idx].tolist())
        if len(have) < len(classes):
            k = next(k for k in range(len(classes)) if k not in have)
            own = src != "train" or split == "gen_train"
            fix = "add images of it" if own else f"raise {SIZE_KEYS[split]}"
            raise DataError(f"the {SPLIT_NAMES[split]} split ({len(idx)} images of {where[src][0]} "
                            f"{where[src][1]}, seed {d.split_seed}) has no image of class '{classes[k]}': {fix}")
    mine = {s: (src, idx if s == "gen_train" else idx[rank::world]) for s, (src, idx) in chosen.items()}
    used = [files[src][0][i] for src, idx in mine.values() for i in idx]
    chans, side = check_headers(used, d.image_size, d.mode)

    def split(s: str) -> Split:
        src, idx = mine[s]
        x = load_images([files[src][0][i] for i in idx], d.image_size, d.mode, d.workers)
        return Split(x.reshape(len(idx), chans, side, side), torch.from_numpy(files[src][1][idx]), idx)

    def record(s: str) -> dict:
        src, idx = chosen[s]
        rel = [str(files[src][0][i].relative_to(where[src][1])) for i in idx]
        return {"source": f"{where[src][0]} {where[src][1]}", "size": len(idx),
                "files_sha256": _digest(json.dumps(rel).encode()), **({"files": rel} if s == "val" else {})}

    g, v, t = split("gen_train"), split("val"), split("test")
    meta = {"name": "class_folders", "seed": d.split_seed, "classes": classes, "image_shape": [chans, side, side],
            "world_size": world, "layout": "one root" if len(where) == 1 else "separate roots",
            # what the generator cache key reads (with the seed): the training pixels and labels, not where they lie
            "gen_train": {"size": len(g), "classes": classes, "image_shape": [chans, side, side],
                          "pixels_sha256": _digest(g.images.numpy().tobytes(), g.labels.numpy().tobytes())},
            "gen_train_files": record("gen_train"), "val": record("val"), "test": record("test")}
    return RealSplits(g, v, HeldOut(t), classes=tuple(classes), meta=meta)
