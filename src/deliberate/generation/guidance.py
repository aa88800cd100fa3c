"""Entropy guidance (paper Eq. 4-7).

At a guided DDIM step with noise prediction ε(x_t, y):

    x̂0 = (x_t − sqrt(1−ᾱ_t)·ε) / sqrt(ᾱ_t)                                   (Eq. 4)
    H  = −Σ_y f(y|x̂0) log f(y|x̂0)          (the current classifier f)       (Eq. 6)
    ε̃  = ε − ω·sqrt(1−ᾱ_t)·∇_{x_t} H                                          (direction fixed, see below)

Direction. The printed Eq. 7 is ε̃ = ε + ω∇H. Since ε̂ ≈ −sqrt(1−ᾱ_t)·∇log p(x_t), adding ∇H to ε *subtracts*
it from the score, and a deterministic DDIM step then moves toward *lower* entropy. Algorithm 1 (line 13) adds
ω∇H to the score, which raises entropy, and raising entropy is the stated intent; we therefore subtract
ω·sqrt(1−ᾱ_t)·∇H from ε (= add ω∇H to the score). ``tests/test_guidance.py`` checks that entropy rises with ω.

Gradient: ``grad="unet"`` backpropagates through the UNet and the classifier (exact ∇_{x_t}); ``grad="x0"``
treats ε as constant, so ∇_{x_t}H ≈ ∇_{x̂0}H / sqrt(ᾱ_t): nearly free, an approximation (``bench/`` compares).
``scale="normalized"`` rescales each sample's gradient to unit RMS before ω is applied.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import CRITERIA


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Predictive entropy H(f(x)) in nats, per sample (Eq. 6)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


@CRITERIA.register("entropy")
class EntropyCriterion(nn.Module):
    """Score whose gradient guidance ascends: the classifier's predictive entropy of an image in [-1, 1]."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return entropy(self.classifier(images))


@CRITERIA.register("margin")
class MarginCriterion(EntropyCriterion):
    """Negative top-2 logit margin: another uncertainty score (larger = harder)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        top2 = self.classifier(images).float().topk(2, dim=-1).values
        return top2[:, 1] - top2[:, 0]


@dataclass
class Guide:
    """What steers a sampling run: a criterion (a per-sample score of an image), its scale ω and its schedule."""

    criterion: Callable[[torch.Tensor], torch.Tensor]
    omega: float = 0.0
    every: int = 1
    window: tuple[float, float] = (0.0, 1.0)
    grad: str = "unet"
    scale: str = "raw"

    def active(self, i: int, steps: int) -> bool:
        """Whether DDIM step i of ``steps`` (0 = the noisiest) is guided."""
        if self.omega == 0:
            return False
        frac = i / steps
        return i % self.every == 0 and self.window[0] <= frac < self.window[1]

    def rescale(self, g: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Scale the per-sample gradient and zero it where it is not finite; returns (g, number zeroed)."""
        flat = g.flatten(1)
        bad = ~torch.isfinite(flat).all(dim=1)
        flat = torch.where(bad[:, None], torch.zeros_like(flat), flat)
        if self.scale == "normalized":
            rms = flat.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12)
            flat = flat / rms
        return flat.view_as(g), int(bad.sum())


def build_guide(classifier: nn.Module, cfg, omega: float | None = None) -> Guide:
    """A :class:`Guide` from a :class:`~deliberate.config.GuidanceConfig` and the current classifier."""
    crit = CRITERIA.build(cfg.criterion, classifier)
    return Guide(crit, cfg.omega if omega is None else omega, cfg.every, tuple(cfg.window), cfg.grad, cfg.scale)
