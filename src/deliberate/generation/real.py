"""``real_images``: a generator whose "samples" are the real generator-training images.

Any method run on it is the same recipe on real data: ``static`` on the whole generator split is the real-data
learner that the synthetic-only learner is measured against (the paper's "real data" reference line, and the
denominator of the scaling study's ``gap_closed``). Sample i of a pool (label y = i mod C, seed s) is the
(s // C)-th real image of class y (cycling), so pools are prefixes of one fixed order, like a generated stream.
It cannot be guided: entropy guidance needs a sampler to steer.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Sequence

import torch

from ..registry import GENERATORS
from .base import GeneratorError, SampleOutput, check_request


@GENERATORS.register("real_images")
class RealImages:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, generator_id: str):
        self.images, self.num_classes, self.generator_id = images, num_classes, generator_id
        self.image_shape = tuple(images.shape[1:])
        self.by_class = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
        empty = [c for c, idx in enumerate(self.by_class) if not len(idx)]
        if empty:
            raise GeneratorError(f"generator.name=real_images: the generator split has no image of class(es) {empty}")

    def sample(self, labels: torch.Tensor, seeds: Sequence[int], *, guide=None, progress: bool = False,
               **_) -> SampleOutput:
        check_request(labels, seeds, self.num_classes)
        if guide is not None and guide.omega > 0:
            raise GeneratorError("generator.name=real_images cannot be guided (ω > 0): run it with static or "
                                 "dynamic_unguided")
        t0 = time.perf_counter()
        c = self.num_classes
        idx = [int(self.by_class[y][(int(s) // c) % len(self.by_class[y])]) for y, s in zip(labels.tolist(), seeds)]
        images = self.images[idx].clone() if idx else self.images[:0].clone()
        return SampleOutput(images, torch.full((len(idx),), float("nan")),
                            {"guided_steps": 0, "nonfinite_grads": 0, "seconds": time.perf_counter() - t0,
                             "calls": 0, "padded": 0})

    @staticmethod
    def obtain(cfg, splits, device="cpu", progress: bool = True, log=None) -> tuple["RealImages", dict]:
        digest = hashlib.sha256(json.dumps(splits.meta, sort_keys=True, default=str).encode()).hexdigest()[:12]
        gen = RealImages(splits.gen_train.images, splits.gen_train.labels, splits.num_classes, f"real_images-{digest}")
        return gen, {"source": "real", "path": "", "generator_id": gen.generator_id}
