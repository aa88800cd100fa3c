"""Learner augmentation: the 28-px path (pad-shift + flip) is unchanged bit for bit, and timm learners at ≥ 64 px
train on timm's own transforms (random-resized-crop, flip, RandAugment), drawn from the learner's seeded RNG."""
from __future__ import annotations

import hashlib
import math

import pytest
import torch

from deliberate.config import load_config
from deliberate.learning.learner import Learner, to_float


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


# Written from the code before timm transforms existed (learner.augment / Prepare / Learner.step at commit 5e561dc):
# (config overrides, sha256 of the loader-prepared uint8 batch, sha256 of the float batch step() feeds the model,
# the learner RNG's next four draws after the step).
GOLDEN = [
    ([], "8fadaa169e8c70970ddfd31ee4ccc2ced7ad8910f86243d462f20aa0b3f47e0c",
     "09f1f256db69200554b79e7625fb0b539daaac815b10c4f3d50fd63749489b9e"),
    (["learner.micro_batch_size=4"], "da1ad5d0f1830fc6d0ecd25c4847833894a7d789a5a59f4b38937ab02661925d",
     "87f916b19024a3e75a18f48cb46ac6445514f383f92a09feb6d5124982c4a2fe"),
    (["learner.hflip=false"], "79d3e0e5badb27781cea3cd3419879979aaf4c2fb67b0a57da0b4e8b82f845af",
     "cc6461026c1b03c806fd49f70d9e20e87ce28ff1473bf1a8d965ab36235885e3"),
]


@pytest.mark.parametrize("extra,prepared,stepped", GOLDEN)
def test_the_28px_augmentation_is_unchanged_bit_for_bit(extra, prepared, stepped):
    cfg = load_config(None, ["learner.batch_size=8", "run.device=cpu", *extra])
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(11))
    labels = torch.arange(8) % 10
    learner = Learner(cfg.learner, 10, 1, 10, "cpu", seed=7)
    params = learner.draw_augment(8)
    if not extra:  # the drawn shifts and flips themselves
        assert [p.tolist() for p in params] == [[3, 3, 1, 4, 2, 1, 1, 0], [2, 1, 3, 4, 3, 3, 2, 4],
                                                [False, True, True, True, True, False, True, False]]
    assert _sha(learner.preparer()(images, params)) == prepared
    learner = Learner(cfg.learner, 10, 1, 10, "cpu", seed=7)
    seen = []
    learner.model.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    learner.step(images, labels)
    assert _sha(torch.cat(seen)) == stepped
    assert torch.randint(0, 1000, (4,), generator=learner.rng).tolist() == [602, 139, 490, 614]


# ---------------------------------------------------------------------------------------- timm learners
def timm_learner(*extra, seed: int = 3) -> Learner:
    cfg = load_config(None, ["learner.model=test_resnet", "learner.img_size=64", "learner.batch_size=6",
                             "run.device=cpu", *extra])
    return Learner(cfg.learner, 10, 3, 10, "cpu", seed=seed)


def rgb_batch(n: int = 6, size: int = 32) -> torch.Tensor:
    """Images with structure (a bright square at a sample-dependent place on a gradient), so crops differ."""
    x = torch.linspace(0, 200, size).view(1, 1, 1, size).expand(n, 3, size, size).clone()
    for i in range(n):
        x[i, i % 3, 4 + i:14 + i, 6:16] = 255
    return x.round().to(torch.uint8)


def reference(images: torch.Tensor, seeds: torch.Tensor, size: int, hflip: float = 0.5) -> torch.Tensor:
    """timm's training transform called directly (its first two stages: crop + flip, RandAugment), each sample
    after seeding Python's, NumPy's and torch's generators with its seed."""
    import random

    import numpy as np
    from PIL import Image
    from timm.data import create_transform

    primary, secondary, _ = create_transform((3, size, size), is_training=True, separate=True, hflip=hflip,
                                             auto_augment="rand-m9-mstd0.5-inc1", interpolation="bilinear",
                                             mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    out = []
    for x, s in zip(images, seeds.tolist()):
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        y = secondary(primary(Image.fromarray(x.permute(1, 2, 0).numpy())))
        out.append(torch.from_numpy(np.array(y)).permute(2, 0, 1))
    return torch.stack(out)


def test_timm_learners_at_64px_and_above_use_timms_factory_and_the_rest_keep_pad_shift():
    from timm.data.auto_augment import RandAugment
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision.transforms import RandomHorizontalFlip

    from deliberate.learning.learner import TimmAugment

    t = timm_learner().transform
    assert isinstance(t, TimmAugment) and t.size == 64
    crop, flip, rand = t.pil.transforms[0].transforms + t.pil.transforms[1].transforms
    assert isinstance(crop, RandomResizedCropAndInterpolation) and crop.size == (64, 64)
    assert (crop.scale, str(crop.interpolation)) == ((0.08, 1.0), "InterpolationMode.BILINEAR")  # test_resnet's cfg
    assert isinstance(flip, RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(rand, RandAugment) and rand.num_layers == 2 and rand.ops[0].magnitude == 9
    no_flip = timm_learner("learner.hflip=false").transform.pil.transforms[0].transforms
    assert not any(isinstance(f, RandomHorizontalFlip) for f in no_flip)
    # the interpolation is the model's: bicubic for test_vit, at the native 160 px when img_size is 0
    vit = timm_learner("learner.model=test_vit", "learner.img_size=0").transform
    assert vit.size == 160 and str(vit.pil.transforms[0].transforms[0].interpolation) == "InterpolationMode.BICUBIC"
    # below 64 px, our own model, or augmentation off: no timm transform, and the 28-px parameters are drawn
    for extra in (["learner.img_size=32"], ["learner.model=cnn_small"], ["learner.augment=false"]):
        learner = timm_learner(*extra)
        assert learner.transform is None
        assert (learner.draw_augment(4) is None) == ("learner.augment=false" in extra)
    assert len(timm_learner("learner.img_size=32").draw_augment(4)) == 3


@pytest.mark.parametrize("extra", [[], ["learner.micro_batch_size=2"]])
def test_a_timm_batch_is_timms_transform_seeded_by_the_learner_and_step_sees_the_prepared_batch(extra):
    images, labels = rgb_batch(), torch.arange(6)
    learner = timm_learner(*extra)
    params = learner.draw_augment(6)
    assert len(params) == 1 and params[0].shape == (6,)
    prepared = learner.preparer()(images, params)
    assert prepared.shape == (6, 3, 64, 64) and prepared.dtype == torch.uint8
    if not extra:
        assert torch.equal(prepared, reference(images, params[0], 64))
        # the seeds are the learner RNG's draws: the same learner seed gives the same batch, another seed another
        assert torch.equal(timm_learner().preparer()(images, timm_learner().draw_augment(6)), prepared)
        other = timm_learner(seed=4)
        assert not torch.equal(other.preparer()(images, other.draw_augment(6)), prepared)
    # step() on the raw batch feeds the model exactly what the loader's workers prepare
    learner = timm_learner(*extra)
    seen = []
    learner.model.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    loss = learner.step(images, labels)
    assert math.isfinite(loss) and torch.equal(torch.cat(seen), to_float(prepared))


def test_timm_transforms_leave_the_global_generators_as_they_were():
    import random

    import numpy as np

    learner = timm_learner()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    before = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    learner.preparer()(rgb_batch(), learner.draw_augment(6))
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])


def test_grey_images_are_transformed_as_grey_rgb_and_stay_one_channel():
    learner = timm_learner()
    grey = rgb_batch()[:, :1].contiguous()
    params = learner.draw_augment(6)
    out = learner.preparer()(grey, params)
    assert out.shape == (6, 1, 64, 64)
    assert torch.equal(out, reference(grey.expand(-1, 3, -1, -1), params[0], 64)[:, :1])


def test_the_loader_draws_timm_seeds_as_the_loop_does(tmp_path):
    """TrainFeed (DataLoader workers) gives the in-loop batches and leaves the learner's RNG where they do."""
    from deliberate.practice.loader import TrainFeed
    from deliberate.practice.pool import Pool, ShardMeta

    pool = Pool(tmp_path / "pool")
    pool.append(rgb_batch(12), torch.arange(12) % 10, list(range(12)), torch.zeros(12), ShardMeta(0, 0.0, 0.0, 1, "g"))
    ref, g_ref = timm_learner(), torch.Generator().manual_seed(5)
    want = []
    for _ in range(3):
        images, labels = pool.get(torch.randint(0, 12, (6,), generator=g_ref))
        want.append(ref.preparer()(images, ref.draw_augment(6)))
    learner, g = timm_learner(), torch.Generator().manual_seed(5)
    feed = TrainFeed(pool, learner, g, 6, workers=2)
    got = [feed.next()[0] for _ in range(3)]
    feed.close()
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert torch.equal(learner.rng.get_state(), ref.rng.get_state())
