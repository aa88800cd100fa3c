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

import sys
from typing import Callable

import torch
from torch.profiler import record_function

from .guidance import Guide

# Bumped whenever the sampler's arithmetic changes the bytes it produces (caches key on it).
# 2: ε re-derived from the clipped x̂0; index-aligned model calls (generation/base.py).
SAMPLER_VERSION = 2

SOLVER_NAMES = ("dpmpp_2m", "unipc")


def __getattr__(name: str):
    """``SOLVERS`` (solver name → diffusers scheduler class), built at its first use: diffusers loads when sampling
    starts, not when the module is imported."""
    if name != "SOLVERS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    globals()["SOLVERS"] = solvers = {"dpmpp_2m": DPMSolverMultistepScheduler, "unipc": UniPCMultistepScheduler}
    return solvers


def make_solver(scheduler: DDIMScheduler, solver: str):
    """The scheduler that integrates a sampling run: ``scheduler`` itself for ``ddim``; otherwise a fresh multistep
    solver (it keeps the previous model outputs, so one per run) with the same noise schedule, in data-prediction
    form, whose x̂0 is clipped to [-1, 1] where ``scheduler`` clips (diffusers' thresholding with
    ``sample_max_value=1`` is exactly a clip). DPM-Solver++ 2M: Lu et al. 2022; UniPC: Zhao et al. 2023."""
    if solver == "ddim":
        return scheduler
    if solver not in SOLVER_NAMES:
        raise ValueError(f"unknown solver '{solver}' (known: ddim, {', '.join(SOLVER_NAMES)})")
    solvers = sys.modules[__name__].SOLVERS
    c = scheduler.config
    clip = bool(c.get("clip_sample", False))
    kw = dict(num_train_timesteps=c.num_train_timesteps, beta_start=c.beta_start, beta_end=c.beta_end,
              beta_schedule=c.beta_schedule, trained_betas=c.get("trained_betas"), prediction_type="epsilon",
              solver_order=2, thresholding=clip, sample_max_value=float(c.get("clip_sample_range", 1.0)))
    if solver == "dpmpp_2m":
        kw["algorithm_type"] = "dpmsolver++"
    return solvers[solver](**kw)


def _full(t: torch.Tensor) -> torch.Tensor:
    """Half-precision outputs (autocast) to float32; float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def guidance_gradient(eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                      t: torch.Tensor, a: torch.Tensor, guide: Guide, labels: torch.Tensor | None = None,
                      decode: Callable[[torch.Tensor], torch.Tensor] = lambda z: z
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of one guided step and the ε it was read at: (∇_{x_t} score(decode(x̂0)), ε), both float32
    (half-precision results of autocast upcast), ε detached. x̂0 is Eq. 4 at ᾱ_t = ``a``; the score is
    ``guide.criterion`` (Eq. 6 for ``entropy``) with the intended ``labels``.

    ``guide.grad="unet"`` differentiates through ε (the classifier-free combination of Eq. 5, both branches: the
    exact ∂x̂0/∂x_t = (I − sqrt(1−ᾱ_t)·((1+λ)J_cond − λJ_uncond))/sqrt(ᾱ_t) needs each branch's Jacobian), so the
    step costs a forward that keeps its graph and a backward of the UNet; ``"x0"`` holds ε fixed,
    ∇_{x_t} = ∇_{x̂0}/sqrt(ᾱ_t), and runs the UNet without a graph. The backward runs in two parts, to x̂0 and on
    to x_t (the same operations as one), so that the profiler scopes separate the classifier's part from the
    UNet's: ``python -m bench guidance-profile`` reads them."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(guide.grad != "x0")
        with torch.set_grad_enabled(guide.grad != "x0"), record_function("guidance: unet forward"):
            eps = eps_fn(x_in, t)  # x0: ε is held fixed, no UNet graph is needed
        with record_function("guidance: criterion forward"):
            x0 = (x_in - (1 - a).sqrt() * _full(eps)) / a.sqrt()  # Eq. 4
            if guide.grad == "x0":
                x0 = x0.detach().requires_grad_(True)
            img = decode(x0)
            h = guide.criterion(img.clamp(-1, 1) if guide.clip_x0 else img, labels)
        with record_function("guidance: criterion backward"):
            (g,) = torch.autograd.grad(h.sum(), x0)  # ∇_{x̂0} (through decode); the graph beyond x̂0 is kept
        if guide.grad != "x0":
            with record_function("guidance: unet backward"):
                (g,) = torch.autograd.grad(x0, x_in, g)  # on through ε to x_t: one backward, split at x̂0
    if guide.grad == "x0":
        g = g / a.sqrt()  # ∂x̂0/∂x_t with ε held fixed
    return _full(g), _full(eps.detach())


def guided_ddim(eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], scheduler: DDIMScheduler,
                x: torch.Tensor, steps: int, guide: Guide | None = None,
                decode: Callable[[torch.Tensor], torch.Tensor] = lambda z: z, eta: float = 0.0,
                rngs: list[torch.Generator] | None = None, solver: str = "ddim",
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Run DDIM (or the multistep ``solver``, :func:`make_solver`) from x_T = ``x``; returns the final sample (in the
    scheduler's space) and step statistics. Guidance changes ε the same way under every solver (x̂0 read at the
    step's t, Eq. 4, gradient :func:`guidance_gradient`); the solver then builds its update from the guided ε.

    ``eps_fn(x_t, t)`` is the (classifier-free-guided) noise prediction; ``decode`` maps x̂0 to the image space
    the criterion reads (identity in pixel space, the VAE decoder in latent space); ``labels`` are the intended
    labels the criterion receives. With η > 0, the per-step noise
    of each sample is drawn from its own RNG in ``rngs`` so that samples stay independent of batching.
    """
    scheduler = make_solver(scheduler, solver)
    scheduler.set_timesteps(steps, device=x.device)
    acp = scheduler.alphas_cumprod.to(x.device)
    stats = {"guided_steps": 0}
    nonfinite = torch.zeros(len(x), dtype=torch.long)  # guided steps each sample took unguided (NaN/Inf gradient)
    for i, t in enumerate(scheduler.timesteps):
        if guide is not None and guide.active(i, steps):
            a = acp[t].float()
            g, eps = guidance_gradient(eps_fn, x, t, a, guide, labels, decode)
            with record_function("guidance: step update"):
                nonfinite += (~torch.isfinite(g.flatten(1)).all(dim=1)).long().cpu()
                g, _ = guide.rescale(g)
                if guide.scale == "paper":  # FG convention: x_t += ω·‖x_t‖·g/‖g‖, ε unchanged
                    norm = x.detach().float().flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
                    x = (x.detach() + guide.omega * norm * g).to(x.dtype)
                else:
                    eps = eps - guide.omega * (1 - a).sqrt() * g  # ascend H (see guidance.py)
            stats["guided_steps"] += 1
        else:
            with torch.no_grad(), record_function("plain: unet forward"):
                eps = _full(eps_fn(x, t))
        noise = None
        if eta > 0 and rngs is not None:
            noise = torch.stack([torch.randn(x.shape[1:], generator=r) for r in rngs]).to(x.device, x.dtype)
        with torch.no_grad(), record_function("solver step"):
            if solver == "ddim":
                x = scheduler.step(eps.to(x.dtype), t, x.detach(), eta=eta, variance_noise=noise,
                                   use_clipped_model_output=True).prev_sample
            else:
                x = scheduler.step(eps.to(x.dtype), t, x.detach()).prev_sample
    return x, stats | {"nonfinite_grads": int(nonfinite.sum()), "nonfinite_per_sample": nonfinite.tolist()}
