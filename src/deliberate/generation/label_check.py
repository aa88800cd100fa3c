"""The generator's own label check: the class-conditional diffusion model as a zero-shot classifier (Li et al.,
ICCV 2023, "Your Diffusion Model is Secretly a Zero-Shot Classifier").

For an image x0 and each class c, with the *same* noise levels t_k and noises ε_k for every class,

    err_c(x0) = mean_k ‖ε_k − ε_θ(sqrt(ᾱ_{t_k})·x0 + sqrt(1−ᾱ_{t_k})·ε_k, t_k, c)‖²,
    p(c | x0) ∝ exp(−err_c),   predicted class = argmin_c err_c.

A guided sample whose predicted class is not its intended label has been pushed off its class (label noise, not
practice) and is replaced by the plain sample of the same (label, seed). The ε_k of a sample come from its seed alone; the
model calls are batched by position (not index-aligned like sampling), so on CPUs whose kernels depend on batch
composition the errors may differ in their last bits with the request, which could change a verdict only at a
near-exact tie. Repair re-runs the check on the same request, so it reproduces the same calls. Cost: classes × noise levels conditional UNet evaluations
per checked sample, charged to guided generation.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .base import score_in_chunks

CHECK_SEED = 7_919  # offsets the seed of a sample's check noises from the seed of its sampling noise


@torch.no_grad()
def diffusion_errors(generator, images: torch.Tensor, seeds: Sequence[int], timesteps: Sequence[int],
                     batch_size: int = 250) -> torch.Tensor:
    """(N, C) mean denoising errors err_c of uint8 ``images`` under every class c (the formula above)."""
    generator = getattr(generator, "inner", generator)  # the model itself behind a sharding or caching wrapper
    n, C = len(images), generator.num_classes
    acp = generator.scheduler.alphas_cumprod
    noise = torch.stack([torch.randn((len(timesteps), *images.shape[1:]),
                                     generator=torch.Generator().manual_seed(int(s) + CHECK_SEED)) for s in seeds])
    x0 = images.float().div(127.5).sub(1)
    err = torch.zeros(n, C)
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        for k, t in enumerate(timesteps):
            a = acp[int(t)].float()
            eps = noise[lo:hi, k]
            xt = (a.sqrt() * x0[lo:hi] + (1 - a).sqrt() * eps).to(generator.device)
            tt = torch.tensor(int(t), device=generator.device)
            for c in range(C):
                pred = generator.eps_fn(torch.full((hi - lo,), c, dtype=torch.long, device=generator.device), 0.0)(
                    xt, tt).float().cpu()
                err[lo:hi, c] += (pred - eps).pow(2).flatten(1).mean(1) / len(timesteps)
    return err


def replace_off_label(generator, out, labels: torch.Tensor, seeds: Sequence[int], sample_kw: dict, guide,
                      timesteps: Sequence[int]) -> list[int]:
    """Check the guided ``out`` (a :class:`SampleOutput` for ``labels``/``seeds``) in place: samples the diffusion
    classifier assigns to another class get the plain sample of their (label, seed) and its score under ``guide``'s
    criterion. Returns the replaced positions."""
    err = diffusion_errors(generator, out.images, seeds, timesteps, sample_kw.get("batch_size", 250))
    bad = (err.argmin(1) != labels.long()).nonzero().flatten().tolist()
    if bad:
        sd = [seeds[i] for i in bad]
        plain = generator.sample(labels[bad], sd, **sample_kw)
        out.images[bad] = plain.images
        out.score[bad] = score_in_chunks(guide.criterion, plain.images, labels[bad], sd,
                                         sample_kw.get("batch_size", 250), getattr(generator, "device", "cpu"))
    return bad
