"""The generator seam. A generator turns (labels, one seed per sample) into images in [-1, 1], optionally steered
by a :class:`~deliberate.generation.guidance.Guide`. Backends: ``pixel_unet`` (the embedded default) and
``stable_diffusion`` (paper scale); both share :func:`~deliberate.generation.ddim.guided_ddim`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch


@dataclass
class SampleOutput:
    images: torch.Tensor  # uint8 (B, C, H, W)
    score: torch.Tensor  # float (B,): criterion (entropy) of the final sample under the guiding classifier; NaN without one
    stats: dict = field(default_factory=dict)  # guided_steps, nonfinite_grads, seconds


class Generator(Protocol):
    generator_id: str
    num_classes: int
    image_shape: tuple[int, int, int]

    def sample(self, labels: torch.Tensor, seeds: Sequence[int], *, steps: int, cfg_scale: float = 0.0,
               guide=None, eta: float = 0.0, batch_size: int = 256, progress: bool = False) -> SampleOutput: ...


def per_sample_noise(seeds: Sequence[int], shape: tuple[int, ...], device, dtype=torch.float32) -> tuple[torch.Tensor, list]:
    """x_T for each sample from its own seed, and the per-sample RNGs (for η > 0 noise), so that a sample depends
    on its seed only, never on its batch or its position in it."""
    gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    x = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device=device, dtype=dtype)
    return x, gens


def check_request(labels: torch.Tensor, seeds: Sequence[int], num_classes: int) -> None:
    """One label and one seed per sample, labels in range: the contract of :meth:`Generator.sample`."""
    if len(labels) != len(seeds):
        raise ValueError(f"{len(labels)} labels but {len(seeds)} seeds")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float → uint8 [0, 255]."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def autocast(device: torch.device | str, enabled: bool):
    dev = torch.device(device).type
    return torch.autocast(dev, dtype=torch.bfloat16, enabled=enabled and dev in ("cpu", "cuda"))
