"""The pretrained generator shipped with the package (generation/shipped.py): its files, that the default config
gets it without training, that a damaged or missing file is an error naming it, and that its plain samples are
on their labels."""
from __future__ import annotations

import shutil

import pytest
import torch

from deliberate.config import load_config
from deliberate.generation.base import GeneratorError
from deliberate.generation.pixel import PixelDiffusion, generator_key, obtain_pixel_generator
from deliberate.generation.shipped import ROOT, SHIPPED, sha256_file, shipped_generator

KEY = "0d89fe10c08f"


@pytest.fixture(scope="module")
def default_splits():
    from deliberate.data import load_splits

    d = load_config().data
    return load_splits(d.root, d.val_size, d.gen_train_size, d.split_seed)


def test_shipped_files_match_their_hashes_and_id():
    d = shipped_generator(KEY)
    files = SHIPPED[KEY]["files"]
    assert {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()} == set(files)
    assert all(sha256_file(d / rel) == h for rel, h in files.items())
    weights = files["unet/diffusion_pytorch_model.safetensors"]
    assert SHIPPED[KEY]["generator_id"] == f"pixel_unet-{weights[:12]}"


def test_default_config_gets_the_shipped_generator_without_training(tmp_path, default_splits, monkeypatch):
    cfg = load_config(None, [f"generator.cache_dir={tmp_path}"])
    assert generator_key(cfg.generator, default_splits.meta) == KEY

    def no_training(*a, **k):
        raise AssertionError("trained instead of loading the shipped generator")

    monkeypatch.setattr(PixelDiffusion, "fit", no_training)
    gen, info = obtain_pixel_generator(cfg, default_splits, progress=False)
    assert info["source"] == "shipped" and gen.generator_id == SHIPPED[KEY]["generator_id"]
    train = load_config(None, [f"generator.cache_dir={tmp_path}", "generator.source=train"])
    with pytest.raises(AssertionError, match="trained instead"):  # generator.source=train trains
        obtain_pixel_generator(train, default_splits, progress=False)


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_a_damaged_or_missing_file_is_an_error_naming_it(tmp_path, damage):
    shutil.copytree(ROOT / KEY, tmp_path / KEY)
    f = tmp_path / KEY / "unet" / "diffusion_pytorch_model.safetensors"
    if damage == "flip":
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 1
        f.write_bytes(bytes(data))
    else:
        f.unlink()
    with pytest.raises(GeneratorError, match=r"diffusion_pytorch_model.safetensors is (damaged|missing).*"
                                             r"generator.source=train"):
        shipped_generator(KEY, root=tmp_path)
    assert shipped_generator("000000000000") is None  # no shipped generator for other recipes: they train


@pytest.mark.slow  # a reference classifier of 1,000 iterations and 200 samples: minutes on 2 shared cores
def test_plain_samples_of_the_shipped_generator_are_on_label(tmp_path, default_splits):
    """200 plain samples at the default λ, scored by the real-data reference classifier: >= 95 % on their label."""
    from deliberate.evaluation import obtain_reference
    from deliberate.generation.base import sampling_kwargs

    cfg = load_config(None, [f"generator.cache_dir={tmp_path}", "run.device=cpu"])
    gen, _ = obtain_pixel_generator(cfg, default_splits, progress=False)
    ref, info = obtain_reference(cfg, default_splits, "cpu", 1000, tmp_path / "reference")
    assert info["val_acc"] > 0.85  # the instrument itself reads real images
    labels = torch.arange(200) % 10
    out = gen.sample(labels, list(range(200)), **sampling_kwargs(cfg.sampling))
    on_label = float((ref.predict(out.images).argmax(-1) == labels).float().mean())
    assert on_label >= 0.95, on_label
