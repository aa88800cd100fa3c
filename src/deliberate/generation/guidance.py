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
With ``clip_x0`` the criterion reads clamp(x̂0, −1, 1) (in image space, after decoding): H(f(clip(x̂0))), whose
gradient is zero on pixels outside the range.
Scale of the step (``guidance.scale``; docs/guidance_scale.md maps each to the paper's ω):
- ``raw``: ε̃ = ε − ω·sqrt(1−ᾱ_t)·∇_{x_t}H, ω as written in Eq. 7 (its size depends on the classifier's logits);
- ``normalized``: the same with ∇H rescaled to unit RMS per sample;
- ``paper``: the Feedback-Guided-Synthesis convention the paper's ω = 0.05 is given in: x_t ← x_t + ω·‖x_t‖·g/‖g‖
  (per-sample L2 norms, g = ∇_{x_t}H), then the sampler's step with ε unchanged.

Criteria (``guidance.criterion``) are called with the intended labels: ``entropy`` (the paper), ``margin``, and
the label-aware ``entropy_onlabel``, ``entropy_projected`` and ``loss_capped`` (formulas in their docstrings).
"""
from __future__ import annotations

import math
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
    """The paper's score (Eq. 6): the classifier's predictive entropy H(f(x)) of an image x in [-1, 1]. Every
    criterion is called as ``criterion(images, labels)`` with the intended labels; this one ignores them.
    Label-aware criteria return their base quantity as the value (what the pool stores as ``score``) and shape
    only the gradient."""

    def __init__(self, classifier: nn.Module, **_):
        super().__init__()
        self.classifier = classifier

    def params(self) -> dict:
        """Settings beyond the classifier's weights that change the gradient (cache keys record them)."""
        return {}

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return entropy(self.classifier(images))


@CRITERIA.register("margin")
class MarginCriterion(EntropyCriterion):
    """Negative top-2 logit margin: another uncertainty score (larger = harder)."""

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        top2 = self.classifier(images).float().topk(2, dim=-1).values
        return top2[:, 1] - top2[:, 0]


def _gradient_only(value: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """``value`` everywhere, with a gradient only where ``active``: value·a + stopgrad(value·(1 − a))."""
    a = active.to(value.dtype)
    return value * a + (value * (1 - a)).detach()


@CRITERIA.register("entropy_onlabel")
class OnLabelEntropy(EntropyCriterion):
    """Entropy ascended only while the sample is still its intended class y: with p = f(·|x),

        score = H(p),   ∇score = ∇H(p) · 1[argmax p = y  and  p_y ≥ floor]

    A per-sample stop: the step is unguided for a sample whose x̂0 has left its class (or come too close to
    leaving it); guidance resumes if a later step brings it back. ``guidance.floor`` = 0 keeps the argmax test only."""

    def __init__(self, classifier: nn.Module, floor: float = 0.0, **_):
        super().__init__(classifier)
        self.floor = floor

    def params(self) -> dict:
        return {"floor": self.floor}

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.classifier(images).float()
        p = logits.softmax(-1)
        py = p.gather(1, labels.long().view(-1, 1).to(p.device))[:, 0]
        on = (logits.argmax(-1) == labels.to(p.device)) & (py >= self.floor)
        return _gradient_only(entropy(logits), on.detach())


@CRITERIA.register("entropy_projected")
class ProjectedEntropy(EntropyCriterion):
    """Entropy ascent with the part that lowers the intended class removed: with g_H = ∇_x H(p) and
    g_y = ∇_x log p_y (p = f(·|x), gradients w.r.t. the image the classifier reads),

        ∇score = g_H + c·g_y,   c = max(0, −⟨g_H, g_y⟩ / ‖g_y‖²)

    so the step never decreases log p_y to first order (the projection of Projected Gradient / PCGrad). Computed as
    score = H + c·(log p_y − stopgrad(log p_y)) with c held fixed, so the value stays H and the gradient flows on
    through x̂0 to x_t (``guidance.grad=unet``) unchanged otherwise. One extra classifier backward per step."""

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        with torch.enable_grad():
            x = images if images.requires_grad else images.detach().requires_grad_(True)
            logits = self.classifier(x).float()
            h = entropy(logits)
            logpy = logits.log_softmax(-1).gather(1, labels.long().view(-1, 1).to(logits.device))[:, 0]
            (gh,) = torch.autograd.grad(h.sum(), x, retain_graph=True)
            (gy,) = torch.autograd.grad(logpy.sum(), x, retain_graph=True)
        dot = (gh * gy).flatten(1).sum(1)
        c = (-dot / gy.flatten(1).pow(2).sum(1).clamp_min(1e-20)).clamp_min(0).detach()
        return h + c * (logpy - logpy.detach())


@CRITERIA.register("loss_capped")
class CappedLoss(EntropyCriterion):
    """The intended class's loss ascended up to a cap: with p = f(·|x),

        score = −log p_y,   ∇score = −∇log p_y · 1[−log p_y < cap]

    samples are pushed toward the decision boundary and stop before crossing it: the default cap log 2 stops at
    p_y = 1/2, where y is still the argmax (no other class can hold more than the other half)."""

    def __init__(self, classifier: nn.Module, cap: float = math.log(2), **_):
        super().__init__(classifier)
        self.cap = cap

    def params(self) -> dict:
        return {"cap": self.cap}

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.classifier(images).float()
        loss = -logits.log_softmax(-1).gather(1, labels.long().view(-1, 1).to(logits.device))[:, 0]
        return _gradient_only(loss, (loss < self.cap).detach())


@dataclass
class Guide:
    """What steers a sampling run: a criterion (a per-sample score of an image), its scale ω and its schedule."""

    criterion: Callable[[torch.Tensor], torch.Tensor]
    omega: float = 0.0
    every: int = 1
    window: tuple[float, float] = (0.0, 1.0)
    grad: str = "unet"
    scale: str = "raw"
    clip_x0: bool = False  # the criterion reads the decoded x̂0 clamped to [-1, 1]

    def active(self, i: int, steps: int) -> bool:
        """Whether DDIM step i of ``steps`` (0 = the noisiest) is guided."""
        if self.omega == 0:
            return False
        frac = i / steps
        return i % self.every == 0 and self.window[0] <= frac < self.window[1]

    def rescale(self, g: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Scale the per-sample gradient and zero it where it is not finite; returns (g, number zeroed).
        ``normalized``: unit RMS; ``paper``: unit L2 norm (the step is then ω·‖x_t‖·g/‖g‖, see :mod:`ddim`)."""
        flat = g.flatten(1)
        bad = ~torch.isfinite(flat).all(dim=1)
        flat = torch.where(bad[:, None], torch.zeros_like(flat), flat)
        if self.scale == "normalized":
            flat = flat / flat.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12)
        elif self.scale == "paper":
            flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return flat.view_as(g), int(bad.sum())


def build_guide(classifier: nn.Module, cfg, omega: float | None = None) -> Guide:
    """A :class:`Guide` from a :class:`~deliberate.config.GuidanceConfig` and the current classifier."""
    crit = CRITERIA.build(cfg.criterion, classifier, floor=cfg.floor, cap=cfg.cap)
    return Guide(crit, cfg.omega if omega is None else omega, cfg.every, tuple(cfg.window), cfg.grad, cfg.scale,
                 cfg.clip_x0)
