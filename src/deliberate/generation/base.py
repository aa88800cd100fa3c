"""The generator seam. A generator turns (labels, one seed per sample) into images in [-1, 1], optionally steered
by a :class:`~deliberate.generation.guidance.Guide`. Backends: ``pixel_unet`` (the embedded default) and
``stable_diffusion`` (paper scale); both share :func:`~deliberate.generation.ddim.guided_ddim`.

Batch invariance by construction. On some CPUs (AVX-512/AMX) and on GPUs the kernels a model call uses, and so
the last bits of its results, depend on how many samples share the call and where each one sits. A sample must not
depend on how a caller happened to split its request (shard size, cache misses, number of ranks), so every model
call of sampling is an *index-aligned chunk* (:func:`chunk_calls`): with chunk size B (``sampling.batch_size``),
the sample of seed s is computed in slot ``s mod B`` of a call of exactly B slots that holds only samples whose
seeds share ``s // B``; slots nobody asked for are filled with a stand-in (label 0, the slot's own seed) and
dropped. Each row of a convolution, matmul or group norm depends only on its own input, so a sample's bytes are a
function of (generator, label, seed, settings incl. B) on a given machine, whatever the request around it.
Pool seeds are contiguous (``seed_offset + i``), so pools whose shards and rounds are multiples of B pay nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import time
from typing import Callable, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from .. import distributed


class GeneratorError(RuntimeError):
    """A generator (checkpoint, pipeline directory or settings) that is missing, incomplete or does not match its
    config; raised by every backend."""


@dataclass
class SampleOutput:
    images: torch.Tensor  # uint8 (B, C, H, W)
    score: torch.Tensor  # float (B,): criterion (entropy) of the final sample under the guiding classifier; NaN without one
    # guided_steps (guided DDIM steps each sample took), nonfinite_grads (sample-steps that fell back to unguided),
    # seconds, calls (model calls of chunk size), padded (stand-in slots computed and dropped)
    stats: dict = field(default_factory=dict)


class Generator(Protocol):
    generator_id: str
    num_classes: int
    image_shape: tuple[int, int, int]

    def sample(self, labels: torch.Tensor, seeds: Sequence[int], *, steps: int, cfg_scale: float = 0.0,
               guide=None, eta: float = 0.0, batch_size: int = 256, solver: str = "ddim",
               progress: bool = False) -> SampleOutput:
        """Images for (label, seed) pairs. ``batch_size`` is B, the slots of every model call (index-aligned
        chunks of seeds, see the module doc): a setting of the samples, not of the request."""


def per_sample_noise(seeds: Sequence[int], shape: tuple[int, ...], device, dtype=torch.float32) -> tuple[torch.Tensor, list]:
    """x_T for each sample from its own seed, and the per-sample RNGs (for η > 0 noise), so that a sample depends
    on its seed only, never on its batch or its position in it."""
    gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    x = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device=device, dtype=dtype)
    return x, gens


def chunk_calls(seeds: Sequence[int], size: int) -> list[tuple[int, dict[int, int]]]:
    """The model calls that compute a request: ``(chunk, {slot: request position})`` in chunk order. The sample of
    seed s sits in slot ``s % size`` of a call for chunk ``s // size``; a seed requested twice (another label, say)
    goes into a further call of the same chunk, so a slot never holds two samples."""
    if size <= 0:
        raise ValueError(f"chunk size must be > 0, got {size}")
    calls: dict[tuple[int, int], dict[int, int]] = {}
    for j, s in enumerate(seeds):
        c, slot = divmod(int(s), size)
        k = 0
        while slot in calls.setdefault((c, k), {}):
            k += 1
        calls[(c, k)][slot] = j
    return [(c, members) for (c, _), members in sorted(calls.items())]


def chunk_request(labels: torch.Tensor, chunk: int, members: dict[int, int],
                  size: int) -> tuple[torch.Tensor, list[int]]:
    """Labels and seeds of all ``size`` slots of one call: the requested samples in their slots, stand-ins (label 0,
    the slot's own seed) elsewhere."""
    lab = torch.zeros(size, dtype=torch.long)
    for slot, j in members.items():
        lab[slot] = labels[j]
    return lab, [chunk * size + slot for slot in range(size)]


def sample_in_chunks(labels: torch.Tensor, seeds: Sequence[int], size: int, image_shape: tuple[int, ...],
                     call: Callable[[torch.Tensor, list[int]], tuple[torch.Tensor, dict]], guide=None,
                     device: torch.device | str = "cpu", progress: bool = False, desc: str = "sample") -> SampleOutput:
    """Run a request as index-aligned calls of exactly ``size`` slots (:func:`chunk_calls`). ``call(labels, seeds)``
    samples one full call and returns (uint8 images, stats); with a guide, each call's images are scored as stored,
    in the same slots, so that the score too is independent of the request."""
    n = len(labels)
    images = torch.zeros((n, *image_shape), dtype=torch.uint8)
    score = torch.full((n,), float("nan"))
    stats = {"guided_steps": 0, "nonfinite_grads": 0, "seconds": 0.0, "calls": 0, "padded": 0}
    t0 = time.perf_counter()
    bar = tqdm(total=n, desc=desc, disable=not progress, dynamic_ncols=True, leave=False)
    for chunk, members in chunk_calls(seeds, size):
        y, sd = chunk_request(labels, chunk, members, size)
        out, st = call(y, sd)
        slots = torch.tensor(list(members.keys()), dtype=torch.long)
        pos = torch.tensor(list(members.values()), dtype=torch.long)
        images[pos] = out[slots]
        if guide is not None:  # the call's own images, as stored, in their slots
            score[pos] = _score(guide.criterion, out, y, device)[slots]
        stats["guided_steps"] = max(stats["guided_steps"], st["guided_steps"])  # per sample: the schedule's count
        stats["nonfinite_grads"] += sum(st["nonfinite_per_sample"][k] for k in members)  # stand-ins not counted
        stats["calls"] += 1
        stats["padded"] += size - len(members)
        bar.update(len(members))
    bar.close()
    stats["seconds"] = time.perf_counter() - t0
    return SampleOutput(images, score, stats)


def score_in_chunks(criterion, images: torch.Tensor, labels: torch.Tensor, seeds: Sequence[int], size: int,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """``criterion`` of stored uint8 ``images`` read in the same index-aligned calls as sampling (stand-in slots are
    zeros), so that a sample's score does not depend on the request either."""
    score = torch.full((len(images),), float("nan"))
    for _, members in chunk_calls(seeds, size):
        slots = torch.tensor(list(members.keys()), dtype=torch.long)
        pos = torch.tensor(list(members.values()), dtype=torch.long)
        batch = torch.zeros((size, *images.shape[1:]), dtype=torch.uint8)
        batch[slots] = images[pos]
        lab = torch.zeros(size, dtype=torch.long)
        lab[slots] = labels[pos].long()
        score[pos] = _score(criterion, batch, lab, device)[slots]
    return score


@torch.no_grad()
def _score(criterion, images: torch.Tensor, labels: torch.Tensor, device) -> torch.Tensor:
    """``criterion`` of one call's uint8 images, read as stored (in [-1, 1]), with their intended labels."""
    return criterion(images.to(device).float().div(127.5).sub(1), labels.to(device)).float().cpu()


def sampling_kwargs(sampling) -> dict:
    """The keyword arguments of :meth:`Generator.sample` that a :class:`~deliberate.config.SamplingConfig` fixes."""
    return {"steps": sampling.steps, "cfg_scale": sampling.cfg_scale, "eta": sampling.eta,
            "batch_size": sampling.batch_size, "solver": sampling.solver}


def check_request(labels: torch.Tensor, seeds: Sequence[int], num_classes: int) -> None:
    """One label and one seed per sample, labels in range: the contract of :meth:`Generator.sample`."""
    if len(labels) != len(seeds):
        raise ValueError(f"{len(labels)} labels but {len(seeds)} seeds")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float → uint8 [0, 255]."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def sampling_env(device: torch.device | str = "cpu") -> dict:
    """What besides (generator, label, seed, settings) can change a sample's last bits: the torch version, the CPU
    kernel capability (AVX2 / AVX512…) or the GPU's name, intra-op threads and the determinism flag. Recorded with
    every pool shard; ``deliberate check --repair`` expects identical bytes only where it is identical."""
    dev = torch.device(device)
    if dev.type == "cuda":
        where = f"cuda:{torch.cuda.get_device_name(dev)}"
    else:
        where = f"{dev.type}:{torch.backends.cpu.get_cpu_capability()}"
    return {"torch": torch.__version__, "device": where, "threads": torch.get_num_threads(),
            "deterministic": torch.are_deterministic_algorithms_enabled()}


def autocast(device: torch.device | str, enabled: bool):
    dev = torch.device(device).type
    return torch.autocast(dev, dtype=torch.bfloat16, enabled=enabled and dev in ("cpu", "cuda"))


class ShardedGenerator:
    """A generator whose ``sample`` calls are split across ranks (``deliberate.distributed``) by whole index-aligned
    chunks (chunk k of the request's chunks goes to rank k mod W) and gathered back in request order. Every model
    call is then the one a single process would make (:func:`chunk_calls`), so the pool's bytes do not depend on the
    number of ranks."""

    def __init__(self, inner):
        self.inner = inner

    @classmethod
    def wrap(cls, generator):
        return cls(generator) if distributed.world_size() > 1 else generator

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def sample(self, labels: torch.Tensor, seeds: Sequence[int], **kw) -> SampleOutput:
        w, r, n = distributed.world_size(), distributed.rank(), len(labels)
        calls = chunk_calls(seeds, kw.get("batch_size", 256))
        mine = torch.tensor(sorted(j for c in calls[r::w] for j in c[1].values()), dtype=torch.long)
        kw["progress"] = kw.get("progress", False) and distributed.is_main()  # one bar, on rank 0
        out = self.inner.sample(labels[mine], [seeds[int(j)] for j in mine], **kw)
        parts = distributed.all_gather_object((mine, out.images, out.score, out.stats))
        images = torch.empty((n, *tuple(self.inner.image_shape)), dtype=torch.uint8)
        score = torch.empty(n, dtype=torch.float32)
        stats = {"guided_steps": 0, "nonfinite_grads": 0, "seconds": 0.0}
        for idx, im, sc, st in parts:
            images[idx] = im
            score[idx] = sc.float()
            stats["guided_steps"] = max(stats["guided_steps"], st["guided_steps"])
            stats["nonfinite_grads"] += st["nonfinite_grads"]
            stats["seconds"] = max(stats["seconds"], st["seconds"])
        return SampleOutput(images, score, stats)
