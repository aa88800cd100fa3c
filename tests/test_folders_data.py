"""Class-folder datasets (data/classfolders.py): layouts, splits, image handling, one clear error per mistake, and
the exported Fashion-MNIST giving the embedded splits. The job end to end: tests/test_folders_job.py."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from deliberate.config import ConfigError, load_config
from deliberate.data import DataError
from deliberate.data.classfolders import load_class_folder_splits

FMNIST = "/usr/share/datasets/fashion-mnist"
SHAPES = ("circle", "square", "triangle")


def shapes(root: Path, per_class: int = 12, size: int = 32, classes=SHAPES, seed: int = 0, mode: str = "RGB",
           start: int = 0) -> Path:
    """``root/<shape>/<i>.png``: a filled circle, square or triangle of random size, place and colours."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 80, 3)))
            d = ImageDraw.Draw(im)
            r = int(rng.integers(size // 5, size // 3))
            cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
            col = tuple(int(v) for v in rng.integers(120, 256, 3))
            if c == "circle":
                d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=col)
            elif c == "triangle":
                d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
            else:
                d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=col)
            im.convert(mode).save(root / c / f"{i:03d}.png")
    return root


def data_cfg(root, *extra: str):
    return load_config(None, ["data.name=class_folders", f"data.root={root}", "data.val_size=6", "data.test_size=6",
                              "data.workers=2", *extra]).data


def file_pixels(root: Path) -> Counter:
    """(class folder, pixel bytes) of every image under ``root``, read here with PIL."""
    return Counter((p.parent.name, np.asarray(Image.open(p)).transpose(2, 0, 1).tobytes())
                   for p in root.glob("*/*.png"))


def split_pixels(split, classes) -> Counter:
    return Counter((classes[int(y)], x.numpy().tobytes()) for x, y in zip(split.images, split.labels))


# ------------------------------------------------------------------------------------------------ splits
def test_one_root_is_split_by_seed_into_three_disjoint_splits(tmp_path):
    root = shapes(tmp_path / "ds")
    s = load_class_folder_splits(data_cfg(root))
    test = s.test.read("test")
    assert s.classes == SHAPES and (len(s.gen_train), len(s.val), len(test)) == (24, 6, 6)
    assert s.gen_train.images.shape == (24, 3, 32, 32) and s.gen_train.images.dtype == torch.uint8
    # every image is one of the files, under its own class, and together the splits are all of them, once each
    parts = [split_pixels(x, s.classes) for x in (s.gen_train, s.val, test)]
    assert sum(parts, Counter()) == file_pixels(root)
    again = load_class_folder_splits(data_cfg(root))
    other = load_class_folder_splits(data_cfg(root, "data.split_seed=1"))
    assert torch.equal(again.val.images, s.val.images) and not torch.equal(other.val.images, s.val.images)
    assert s.meta["layout"] == "one root" and s.meta["gen_train"]["image_shape"] == [3, 32, 32]


def test_separate_roots_image_size_and_mode(tmp_path):
    shapes(tmp_path / "ds" / "train", 10)
    shapes(tmp_path / "ds" / "test", 4, seed=1)
    s = load_class_folder_splits(data_cfg(tmp_path / "ds", "data.image_size=16", "data.mode=L"))
    test = s.test.read("test")
    # val carved from train/ (data.val_size), test/ held out whole; resized to 16 px, converted to one channel
    assert (len(s.gen_train), len(s.val), len(test)) == (24, 6, 12) and s.meta["layout"] == "separate roots"
    assert test.images.shape == (12, 1, 16, 16)
    want = np.asarray(Image.open(tmp_path / "ds/test/circle/000.png").convert("L").resize((16, 16), Image.BILINEAR))
    assert np.array_equal(test.images[0, 0].numpy(), want) and test.labels[0] == 0  # first by file name: 000.png
    shapes(tmp_path / "ds" / "val", 2, seed=2)
    s = load_class_folder_splits(data_cfg(tmp_path / "ds", "data.test_per_class=3"))
    assert (len(s.gen_train), len(s.val), len(s.test)) == (30, 6, 9)  # val/ whole, test/ capped at 3 per class
    assert split_pixels(s.val, s.classes) == file_pixels(tmp_path / "ds" / "val")


def test_class_list_orders_the_labels(tmp_path):
    root = shapes(tmp_path / "ds")
    (tmp_path / "order.txt").write_text("# label order\ntriangle\ncircle\nsquare\n")
    s = load_class_folder_splits(data_cfg(root, f"data.class_list={tmp_path / 'order.txt'}"))
    assert s.classes == ("triangle", "circle", "square")
    assert sum((split_pixels(x, s.classes) for x in (s.gen_train, s.val, s.test.read("t"))), Counter()) \
        == file_pixels(root)


def test_exported_fashion_mnist_gives_the_embedded_splits(tmp_path):
    """The first 30 train / 10 test images of each class as PNG class folders: the folder path carves the same
    validation and generator-training images, in the same order, as the embedded code on those images."""
    from deliberate.data.export import embedded_subset_splits, export_fashion_mnist

    chosen = export_fashion_mnist(FMNIST, tmp_path / "fm", 30, 10)
    d = load_config(None, ["data.name=class_folders", f"data.root={tmp_path / 'fm'}", "data.val_size=60",
                           "data.gen_train_size=200", "data.split_seed=3",
                           f"data.class_list={tmp_path / 'fm' / 'classes.txt'}"]).data
    f = load_class_folder_splits(d)
    e = embedded_subset_splits(FMNIST, chosen, 60, 200, 3)
    for a, b in ((e.gen_train, f.gen_train), (e.val, f.val), (e.test.read("t"), f.test.read("t"))):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert np.array_equal(a.indices, b.indices)
    assert (len(f.gen_train), len(f.val), len(f.test)) == (200, 60, 100)
    # the study's comparison (bench/folders_check.py) sees them equal, and sees one changed pixel
    from bench.folders_check import all_equal, compare_splits

    assert all_equal(compare_splits(e, f))
    f.val.images[7, 0, 3, 3] ^= 1
    diff = compare_splits(e, f)
    assert not all_equal(diff) and diff["val"]["max_pixel_diff"] == 1 and diff["gen_train"]["images_equal"]


# ------------------------------------------------------------------------------------------------ errors
def test_empty_class_folder(tmp_path):
    root = shapes(tmp_path / "ds")
    for p in (root / "square").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=f"class folder {root / 'square'} is empty"):
        load_class_folder_splits(data_cfg(root))


def test_unreadable_image(tmp_path):
    root = shapes(tmp_path / "ds")
    (root / "circle" / "005.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"cannot read image {root / 'circle' / '005.png'}"):
        load_class_folder_splits(data_cfg(root))


def test_mixed_modes_and_sizes(tmp_path):
    root = shapes(tmp_path / "ds")
    Image.open(root / "square/004.png").convert("L").save(root / "square/004.png")
    with pytest.raises(DataError, match=f"mixed image modes: {root / 'square' / '004.png'} is L"):
        load_class_folder_splits(data_cfg(root))
    assert load_class_folder_splits(data_cfg(root, "data.mode=RGB")).gen_train.images.shape[1] == 3
    Image.open(root / "circle/002.png").resize((40, 40)).save(root / "circle/002.png")
    with pytest.raises(DataError, match=f"mixed image sizes: {root / 'circle' / '002.png'} is 40x40"):
        load_class_folder_splits(data_cfg(root, "data.mode=RGB"))
    assert load_class_folder_splits(data_cfg(root, "data.mode=RGB", "data.image_size=32")).val.images.shape[2] == 32


def test_class_in_one_split_only(tmp_path):
    shapes(tmp_path / "ds" / "train", 8)
    shapes(tmp_path / "ds" / "test", 3, classes=("circle", "square", "triangle", "star"))
    with pytest.raises(DataError, match=f"class folder {tmp_path / 'ds/test/star'} is in this split only"):
        load_class_folder_splits(data_cfg(tmp_path / "ds"))
    shapes(tmp_path / "b" / "train", 8)
    shapes(tmp_path / "b" / "test", 3, classes=("circle", "square"))
    with pytest.raises(DataError, match=f"data.root/test: {tmp_path / 'b/test'} has no folder for class 'triangle'"):
        load_class_folder_splits(data_cfg(tmp_path / "b"))


def test_fewer_images_than_the_split_sizes(tmp_path):
    root = shapes(tmp_path / "ds", per_class=4)  # 12 images
    with pytest.raises(DataError, match=f"data.root {root} has 12 images: data.val_size=6 \\+ data.test_size=6 "
                                        "leaves no generator-training images"):
        load_class_folder_splits(data_cfg(root))
    with pytest.raises(DataError, match="data.gen_train_size=9 exceeds the 8 images left"):
        load_class_folder_splits(data_cfg(root, "data.val_size=2", "data.test_size=2", "data.gen_train_size=9"))
    # a carved split that misses a class (one validation image cannot hold three classes)
    with pytest.raises(DataError, match="the plateau-validation split .* has no image of class .*raise data.val_size"):
        load_class_folder_splits(data_cfg(root, "data.val_size=1", "data.test_size=3"))


def test_bad_data_writes_nothing(tmp_path, capsys):
    """Through the command line: one line on stderr naming the folder, exit 1, no run directory, no cache."""
    from deliberate.cli import main

    root = shapes(tmp_path / "ds")
    for p in (root / "triangle").iterdir():
        p.unlink()
    rc = main(["run", "--config", str(Path(__file__).parents[1] / "configs/folders.yaml"), f"data.root={root}",
               f"run.out_dir={tmp_path / 'runs'}", f"generator.cache_dir={tmp_path / 'cache'}", "run.progress=false"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0 and f"class folder {root / 'triangle'} is empty" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


# ------------------------------------------------------------------------------------ generator and learner
def test_the_default_generator_key_is_unchanged():
    """The embedded default's generator cache key (cached generators stay valid): computed with generator_key on
    the default config before class-folder data existed."""
    from deliberate.data import load_splits
    from deliberate.generation.pixel import generator_key

    cfg = load_config(None, [])
    assert generator_key(cfg.generator, load_splits(FMNIST, 2000, 0, 0).meta) == "0d89fe10c08f"


def test_generator_shape_checks(tmp_path):
    from deliberate.generation.base import GeneratorError
    from deliberate.generation.pixel import PixelDiffusion, check_shape, obtain_pixel_generator

    g = load_config(None, ["generator.block_out_channels=[8,16,16]"]).generator
    check_shape(g, (3, 32, 32))
    with pytest.raises(GeneratorError, match="divisible by 4 .* got 3x30x30"):
        check_shape(g, (3, 30, 30))
    with pytest.raises(ConfigError, match="data.image_size=30 must be a multiple of 4"):
        load_config(None, ["data.name=class_folders", "data.root=x", "data.image_size=30",
                           "generator.block_out_channels=[8,16,16]"])
    # a generator given by path must make the data's classes at its size and channels
    PixelDiffusion.create(g, 3, (1, 32, 32)).save(tmp_path / "gen")
    cfg = load_config(None, ["generator.block_out_channels=[8,16,16]", f"generator.path={tmp_path / 'gen'}"])
    splits = load_class_folder_splits(data_cfg(shapes(tmp_path / "ds")))
    with pytest.raises(GeneratorError, match=r"makes 3 classes of \(1, 32, 32\) images, the data has 3 classes of "
                                             r"\(3, 32, 32\)"):
        obtain_pixel_generator(cfg, splits)


def test_learner_input_adapts_channels():
    from deliberate.learning.models import Preprocess

    x = torch.rand(2, 4, 8, 8) * 2 - 1
    assert torch.equal(Preprocess(0, 3)(x), x[:, :3])  # RGBA → RGB: alpha dropped
    assert torch.equal(Preprocess(0, 1)(x[:, :3]), x[:, :3].mean(1, keepdim=True))
    assert torch.equal(Preprocess(0, 3)(x[:, :1]), x[:, :1].expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match="2-channel images to a 3-channel learner"):
        Preprocess(0, 3)(x[:, :2])
