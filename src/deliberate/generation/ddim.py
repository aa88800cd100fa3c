"""Guided DDIM sampling over diffusers' :class:`~diffusers.DDIMScheduler`, shared by every backend.

One rule for every backend: **the DDIM update is built from the clipped x̂0 and the ε re-derived from it**
(``scheduler.step(..., use_clipped_model_output=True)``, as in GLIDE). A scheduler with ``clip_sample=True`` (the
pixel backend: images live in [-1, 1]) clips x̂0 = (x_t − sqrt(1−ᾱ_t)·ε)/sqrt(ᾱ_t) (Eq. 4); the step

    x_{t−1} = sqrt(ᾱ_{t−1})·x̂0 + sqrt(1−ᾱ_{t−1}−σ_t²)·ε' + σ_t·z,    ε' = (x_t − sqrt(ᾱ_t)·x̂0)/sqrt(1−ᾱ_t)

must then use ε' (consistent with the clipped x̂0), not the model's ε. With the model's ε the part of x̂0 that
clipping removed still enters through the direction term, and classifier-free guidance, which overshoots exactly
where Fashion-MNIST's background sits at −1, pushed every step the wrong way (label fidelity fell with λ instead of
rising). Where a scheduler does not clip (the latent backend), ε' equals ε up to rounding and the rule changes
nothing. ``tests/test_sampler.py`` checks it against an exact denoiser.
"""
from __future__ import annotations

from typing import Callable

import torch
from diffusers import DDIMScheduler

from .guidance import Guide

# Bumped whenever the sampler's arithmetic changes the bytes it produces (caches key on it).
# 2: ε re-derived from the clipped x̂0; index-aligned model calls (generation/base.py).
SAMPLER_VERSION = 2


def _full(t: torch.Tensor) -> torch.Tensor:
    """Half-precision outputs (autocast) to float32; float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def guided_ddim(eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], scheduler: DDIMScheduler,
                x: torch.Tensor, steps: int, guide: Guide | None = None,
                decode: Callable[[torch.Tensor], torch.Tensor] = lambda z: z, eta: float = 0.0,
                rngs: list[torch.Generator] | None = None) -> tuple[torch.Tensor, dict]:
    """Run DDIM from x_T = ``x``; returns the final sample (in the scheduler's space) and step statistics.

    ``eps_fn(x_t, t)`` is the (classifier-free-guided) noise prediction; ``decode`` maps x̂0 to the image space
    the criterion reads (identity in pixel space, the VAE decoder in latent space). With η > 0, the per-step noise
    of each sample is drawn from its own RNG in ``rngs`` so that samples stay independent of batching.
    """
    scheduler.set_timesteps(steps, device=x.device)
    acp = scheduler.alphas_cumprod.to(x.device)
    stats = {"guided_steps": 0}
    nonfinite = torch.zeros(len(x), dtype=torch.long)  # guided steps each sample took unguided (NaN/Inf gradient)
    for i, t in enumerate(scheduler.timesteps):
        if guide is not None and guide.active(i, steps):
            a = acp[t].float()
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(guide.grad != "x0")
                with torch.set_grad_enabled(guide.grad != "x0"):  # x0: ε is held fixed, no UNet graph is needed
                    eps = eps_fn(x_in, t)
                x0 = (x_in - (1 - a).sqrt() * _full(eps)) / a.sqrt()  # Eq. 4
                if guide.grad == "x0":
                    x0 = x0.detach().requires_grad_(True)
                h = guide.criterion(decode(x0))
                (g,) = torch.autograd.grad(h.sum(), x0 if guide.grad == "x0" else x_in)
            if guide.grad == "x0":
                g = g / a.sqrt()  # ∂x̂0/∂x_t with ε held fixed
            g = _full(g)
            nonfinite += (~torch.isfinite(g.flatten(1)).all(dim=1)).long().cpu()
            g, _ = guide.rescale(g)
            eps = _full(eps.detach()) - guide.omega * (1 - a).sqrt() * g  # ascend H (see guidance.py)
            stats["guided_steps"] += 1
        else:
            with torch.no_grad():
                eps = _full(eps_fn(x, t))
        noise = None
        if eta > 0 and rngs is not None:
            noise = torch.stack([torch.randn(x.shape[1:], generator=r) for r in rngs]).to(x.device, x.dtype)
        with torch.no_grad():
            x = scheduler.step(eps.to(x.dtype), t, x.detach(), eta=eta, variance_noise=noise,
                               use_clipped_model_output=True).prev_sample
    return x, stats | {"nonfinite_grads": int(nonfinite.sum()), "nonfinite_per_sample": nonfinite.tolist()}
