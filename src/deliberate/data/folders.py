"""Real data from ImageFolder-style directories (paper scale): the validation set that drives patience, the
held-out set, and optional OOD sets, all restricted to a class subset.

Layout: ``<dir>/<wnid>/<image>`` (ImageNet train and val, ImageNet-Sketch, -R, -A). ImageNet-V2 names its class
folders by ImageNet-1k index (``0`` … ``999``): they are mapped to WordNet ids through timm's ImageNet-1k synset order.
``data.class_list`` is a built-in list (``imagenet100``, shipped in ``deliberate/resources``), a file with one
``wnid name`` per line, or empty for every class folder of ``data.val_dir`` (names from timm's ImageNet
lemmas). Label k is the k-th class of the list; the names fill the generator's prompt templates.

Paper protocol (PAPER.md, Evaluation): ``data.val_dir`` = the real validation set (drives patience);
``data.test_dir`` = the held-out set, the real *train* set in the paper (never used by the loop);
``data.ood_dirs`` = ``{name: dir}`` for ImageNet-V2/-Sketch/-R/-A.

Images are decoded with PIL (``data.workers`` threads), resized on the shorter side and centre-cropped to
``data.image_size``, and kept as uint8 (N, 3, S, S).

Memory. Every rank holds only its share of a split: files i with i % world == rank (accuracy counts are summed
across ranks). The validation share is decoded once, eagerly (it is read at every evaluation: ImageNet-1k's 50k
images are 7.5 GB at 224² in total). The held-out set (1.28M images for ImageNet-1k) and the OOD sets are *lazy*:
their ``images`` is a :class:`LazyImages` that decodes the requested slice on access, so the single evaluation
after training streams them batch by batch and never holds them whole.

OOD coverage. ImageNet-R and -A cover 200 of ImageNet-1k's classes. An OOD set is evaluated on the images of the
subset's classes present in its folder, with the argmax restricted to those classes (the usual protocol for R and
A; a no-op when every class is present); the summary records how many classes were evaluated and which are missing.
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .idx import DataError
from .splits import HeldOut, RealSplits, Split

BUILTIN_LISTS = ("imagenet100",)


# ------------------------------------------------------------------------------------------------ classes
def read_class_list(spec: str) -> list[tuple[str, str]]:
    """``[(wnid, name), ...]`` from a built-in list name or a file of ``wnid name`` lines (``#`` comments)."""
    if spec in BUILTIN_LISTS:
        text = resources.files("deliberate").joinpath("resources", f"{spec}.txt").read_text()
        where = f"built-in class list '{spec}'"
    else:
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"data.class_list: {spec} is neither a built-in list ({', '.join(BUILTIN_LISTS)}) nor a file")
        text, where = path.read_text(), str(path)
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 1)
        out.append((parts[0], parts[1].strip() if len(parts) > 1 else imagenet_names([parts[0]])[0]))
    if not out:
        raise DataError(f"{where} names no class")
    dup = sorted({w for w, _ in out if sum(w == v for v, _ in out) > 1})
    if dup:
        raise DataError(f"{where} lists classes more than once: {dup}")
    return out


def imagenet_names(wnids: list[str]) -> list[str]:
    """Prompt names: the first WordNet lemma (timm's ImageNet metadata); lemmas shared by two classes (crane,
    maillot) are completed with the synset's gloss; unknown ids keep the folder name."""
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo("imagenet-22k")
        desc = {}
        for w in wnids:
            try:
                desc[w] = (info.label_name_to_description(w), info.label_name_to_description(w, detailed=True))
            except (KeyError, IndexError, ValueError):
                pass
    except Exception:  # pragma: no cover - timm metadata unavailable
        desc = {}
    short = [desc[w][0].split(",")[0].strip() if w in desc else w for w in wnids]
    out = []
    for w, s in zip(wnids, short):
        if short.count(s) > 1 and w in desc:
            gloss = " ".join(desc[w][1].split(":", 1)[-1].split(";")[0].split()[:6])
            s = f"{s}, {gloss}"
        out.append(s)
    return out


def imagenet1k_wnids() -> list[str]:
    """ImageNet-1k WordNet ids in class-index order (timm's metadata), to read ImageNet-V2's numbered folders."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo("imagenet-1k").label_names())


def folder_wnids(root: Path) -> dict[str, str]:
    """Class folder name → wnid (numbered folders are ImageNet-1k indices)."""
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    if names and all(n.isdigit() for n in names):
        order = imagenet1k_wnids()
        return {n: order[int(n)] for n in names if int(n) < len(order)}
    return {n: n for n in names}


# ---------------------------------------------------------------------------------------------- images
def scan(root: str | Path, wnids: list[str], key: str, require_all: bool = True) -> tuple[list[str], np.ndarray]:
    """Image files and labels of the classes ``wnids`` under ``root`` (sorted: the same order on every rank)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{key}: {root} is not a directory")
    to_wnid = folder_wnids(root)
    label = {w: k for k, w in enumerate(wnids)}
    class_to_idx = {folder: label[w] for folder, w in to_wnid.items() if w in label}
    missing = [w for w in wnids if w not in set(to_wnid[f] for f in class_to_idx)]
    if require_all and missing:
        raise DataError(f"{key}: {root} has no folder for {len(missing)} of the {len(wnids)} classes "
                        f"(first: {missing[:5]})")
    if not class_to_idx:
        raise DataError(f"{key}: {root} has no folder for any of the {len(wnids)} classes")
    try:
        items = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=not require_all)
    except FileNotFoundError as e:
        raise DataError(f"{key}: {e}") from None
    items.sort(key=lambda it: (it[1], it[0]))
    return [p for p, _ in items], np.asarray([y for _, y in items], dtype=np.int64)


def decode(path: str, size: int) -> torch.Tensor:
    """One image → uint8 (3, size, size): RGB, shorter side resized to ``size`` (antialiased), centre crop."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im = TF.center_crop(TF.resize(im, size, antialias=True), size)
            return TF.pil_to_tensor(im)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


class LazyImages:
    """An (N, 3, S, S) uint8 image array decoded on access: ``len``, ``shape`` and slicing like a tensor."""

    def __init__(self, paths: list[str], size: int, workers: int = 0):
        self.paths, self.size, self.workers = list(paths), size, workers

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.size, self.size)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, slice):
            paths = self.paths[idx]
        else:
            sel = torch.as_tensor(idx).reshape(-1).tolist()
            paths = [self.paths[i] for i in sel]
        if not paths:
            return torch.zeros((0, 3, self.size, self.size), dtype=torch.uint8)
        if self.workers > 1 and len(paths) > 1:
            with ThreadPoolExecutor(self.workers) as ex:  # PIL releases the GIL while decoding and resizing
                out = list(ex.map(lambda p: decode(p, self.size), paths))
        else:
            out = [decode(p, self.size) for p in paths]
        return torch.stack(out)

    def load(self, chunk: int = 1024) -> torch.Tensor:
        """Everything, decoded now."""
        parts = [self[s:s + chunk] for s in range(0, len(self), chunk)]
        return torch.cat(parts) if parts else self[0:0]


class LazyHeldOut(HeldOut):
    """The held-out split with lazily decoded images; reads are counted as for :class:`HeldOut`."""

    def __init__(self, split: Split, total: int):
        super().__init__(split)
        self.total = total  # images over all ranks

    def __len__(self) -> int:
        return self.total


def _digest(paths: list[str], root: str) -> str:
    rel = [str(Path(p).relative_to(root)) for p in paths]
    return hashlib.sha256(json.dumps(rel).encode()).hexdigest()[:16]


def _cap_per_class(labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Indices keeping at most ``cap`` files of each class, drawn by ``seed`` (sorted)."""
    rng = np.random.default_rng(seed)
    keep = []
    for y in np.unique(labels):
        idx = np.flatnonzero(labels == y)
        keep.append(np.sort(rng.choice(idx, cap, replace=False)) if len(idx) > cap else idx)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def class_list(d) -> list[tuple[str, str]]:
    if d.class_list:
        return read_class_list(d.class_list)
    root = Path(d.val_dir)
    if not root.is_dir():
        raise DataError(f"data.val_dir: {root} is not a directory")
    wnids = sorted(set(folder_wnids(root).values()))
    if not wnids:
        raise DataError(f"data.val_dir: {root} has no class folders")
    return list(zip(wnids, imagenet_names(wnids)))


def load_folder_splits(d, rank: int = 0, world: int = 1) -> RealSplits:
    """Validation (eager) and held-out (lazy) splits of this rank from ``data.val_dir`` / ``data.test_dir``;
    ``gen_train`` is empty (the latent generator is pretrained). ``d`` is a :class:`~deliberate.config.DataConfig`."""
    classes = class_list(d)
    wnids = [w for w, _ in classes]
    if d.test_dir and Path(d.test_dir).resolve() == Path(d.val_dir).resolve():
        raise DataError(f"data.test_dir and data.val_dir are the same folder ({d.val_dir}): the held-out set must "
                        "be disjoint from the validation set that drives patience")
    val_paths, val_y = scan(d.val_dir, wnids, "data.val_dir")
    test_paths, test_y = scan(d.test_dir, wnids, "data.test_dir")
    if d.test_per_class:
        keep = _cap_per_class(test_y, d.test_per_class, d.split_seed)
        test_paths, test_y = [test_paths[i] for i in keep], test_y[keep]
    size = d.image_size
    vi = np.arange(rank, len(val_paths), world)
    ti = np.arange(rank, len(test_paths), world)
    val = Split(LazyImages([val_paths[i] for i in vi], size, d.workers).load(), torch.from_numpy(val_y[vi]), vi)
    test = Split(LazyImages([test_paths[i] for i in ti], size, d.workers), torch.from_numpy(test_y[ti]), ti)
    meta = {
        "name": "folders", "image_size": size, "seed": d.split_seed, "classes": wnids, "world_size": world,
        "gen_train": {"size": 0},
        "val": {"dir": str(d.val_dir), "size": len(val_paths), "files_sha256": _digest(val_paths, d.val_dir)},
        "test": {"dir": str(d.test_dir), "size": len(test_paths), "per_class_cap": d.test_per_class,
                 "files_sha256": _digest(test_paths, d.test_dir)},
    }
    empty = Split(torch.zeros((0, 3, size, size), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64),
                  np.zeros(0, dtype=np.int64))
    return RealSplits(empty, val, LazyHeldOut(test, len(test_paths)), classes=tuple(n for _, n in classes), meta=meta)


# --------------------------------------------------------------------------------------------------- OOD
def evaluate_ood(learners: dict, d, wnids: list[str], rank: int = 0, world: int = 1, chunk: int = 1024) -> dict:
    """Accuracy of each learner on each ``data.ood_dirs`` set (intersection of classes, argmax restricted to the
    classes present; see the module docstring). Returns ``{ood_name: {method: acc, "images": n, "classes": k,
    "missing_classes": [...], "restricted": bool}}``; counts are summed across ranks."""
    from ..distributed import all_sum

    out = {}
    for name, root in d.ood_dirs.items():
        paths, labels = scan(root, wnids, f"data.ood_dirs.{name}", require_all=False)
        present = sorted(set(labels.tolist()))
        mask = torch.full((len(wnids),), float("-inf"))
        mask[present] = 0.0
        mine = np.arange(rank, len(paths), world)
        images = LazyImages([paths[i] for i in mine], d.image_size, d.workers)
        y = torch.from_numpy(labels[mine])
        correct = torch.zeros(len(learners), dtype=torch.float64)
        for s in range(0, len(images), chunk):
            batch = images[s:s + chunk]
            for k, learner in enumerate(learners.values()):
                pred = (learner.predict(batch) + mask).argmax(-1)
                correct[k] += (pred == y[s:s + chunk]).sum().item()
        counts = all_sum(torch.cat([correct, torch.tensor([float(len(mine))], dtype=torch.float64)]))
        total = counts[-1].item()
        res = {m: (counts[k].item() / total if total else float("nan")) for k, m in enumerate(learners)}
        res.update(images=int(total), classes=len(present), restricted=len(present) < len(wnids),
                   missing_classes=[wnids[k] for k in range(len(wnids)) if k not in set(present)])
        out[name] = res
    return out
