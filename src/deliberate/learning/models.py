"""Learner architectures. ``cnn_small`` is ours (any size and channel count: the job passes the generator's); any
other name is created by timm.

Every model takes images in [-1, 1] (the generator's space): :class:`Preprocess` adapts them to a backbone's
input size and normalisation, so entropy guidance can differentiate through the exact learner input pipeline.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import LEARNERS


@LEARNERS.register("cnn_small")
def cnn_small(num_classes: int = 10, in_chans: int = 1, width: int = 32, **_) -> nn.Module:
    """A small VGG-style CNN (~0.3M parameters): 3 conv stages with BatchNorm, global pooling; built for 28x28
    images, it takes any size (the pooling is global) and ``in_chans`` channels."""
    w = width

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(in_chans, w), *block(w, w), nn.MaxPool2d(2),  # 14x14
        *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),  # 7x7
        *block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(0.2), nn.Linear(4 * w, num_classes),
    )


class Preprocess(nn.Module):
    """[-1, 1] images → the backbone's input: resize, channels adapted (grey repeated, colour averaged to grey, an
    alpha channel dropped), mean/std normalisation (differentiable)."""

    def __init__(self, size: int = 0, in_chans: int = 1, mean=None, std=None):
        super().__init__()
        self.size, self.in_chans = size, in_chans
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) if mean is not None else None)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) if std is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        if x.shape[1] != self.in_chans:
            if x.shape[1] == 1:
                x = x.expand(-1, self.in_chans, -1, -1)
            elif self.in_chans == 1:
                x = x.mean(1, keepdim=True)
            elif x.shape[1] > self.in_chans:  # RGBA → RGB
                x = x[:, :self.in_chans]
            else:
                raise ValueError(f"cannot feed {x.shape[1]}-channel images to a {self.in_chans}-channel learner")
        if self.mean is not None:
            x = ((x + 1) / 2 - self.mean) / self.std
        return x


def build_model(name: str, num_classes: int, in_chans: int, img_size: int = 0, pretrained_path: str = "") -> nn.Module:
    """``Preprocess`` followed by the backbone; a name not in our registry is handed to ``timm.create_model``."""
    if name in LEARNERS:
        return nn.Sequential(Preprocess(img_size, in_chans), LEARNERS.build(name, num_classes=num_classes,
                                                                            in_chans=in_chans))
    import timm

    kw = {"num_classes": num_classes, "pretrained": bool(pretrained_path)}
    if pretrained_path:
        kw["pretrained_cfg_overlay"] = {"file": pretrained_path}
    if img_size:
        kw["img_size"] = img_size
    try:
        net = timm.create_model(name.removeprefix("timm/"), **kw)
    except TypeError:  # CNNs take no img_size
        kw.pop("img_size", None)
        net = timm.create_model(name.removeprefix("timm/"), **kw)
    dc = net.pretrained_cfg
    size = img_size or dc.get("input_size", (3, 224, 224))[-1]
    chans = dc.get("input_size", (3,))[0]
    return nn.Sequential(Preprocess(size, chans, dc.get("mean"), dc.get("std")), net)
