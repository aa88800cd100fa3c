"""Learner augmentation: the 28-px path (pad-shift + flip) is unchanged bit for bit, and timm learners at ≥ 64 px
train on timm's own transforms (random-resized-crop, flip, RandAugment), drawn from the learner's seeded RNG."""
from __future__ import annotations

import hashlib

import pytest
import torch

from deliberate.config import load_config
from deliberate.learning.learner import Learner


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
