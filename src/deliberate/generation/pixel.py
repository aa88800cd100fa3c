"""The embedded default generator: a class-conditional pixel-space diffusion model on diffusers' ``UNet2DModel``.

Class embeddings with a null class (index ``num_classes``) for classifier-free guidance, the DDPM
noise-prediction objective, DDIM sampling. Weights are saved as safetensors next to their config, in a cache
keyed by the config and the data they were trained on.

The UNet takes the size and channels of its training split (``sample_size``, ``in/out_channels``): 28x28x1 on the
embedded Fashion-MNIST, e.g. 32x32x3 on a class-folder dataset (data/classfolders.py). Each level after the first
halves the image, so the side must be a multiple of 2^(levels − 1) (:func:`check_shape`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed
from ..registry import GENERATORS
from .base import GeneratorError, SampleOutput, autocast, check_request, per_sample_noise, sample_in_chunks, to_uint8
from .ddim import guided_ddim
from .guidance import Guide
from .shipped import shipped_generator

META_FILE = "deliberate_generator.json"
# options added after the first cached generators, at their original values (see generator_key)
ADDED_OPTION_DEFAULTS = {"prediction": "epsilon", "loss_weight": "uniform", "min_snr_gamma": 5.0,
                         "time_embedding_dim": 0, "timestep_sampling": "uniform", "lognormal_mean": -1.2,
                         "lognormal_std": 1.2, "time_conditioning": "default"}


def check_shape(cfg, image_shape: tuple[int, int, int]) -> None:
    """A square image whose side the UNet's levels can halve evenly (else the skip connections would not match)."""
    c, h, w = image_shape
    levels = len(cfg.block_out_channels)
    if h != w or h % 2 ** (levels - 1):
        raise GeneratorError(f"the pixel generator needs square images with a side divisible by {2 ** (levels - 1)} "
                             f"(generator.block_out_channels has {levels} levels), got {c}x{h}x{w}: set "
                             "data.image_size or change generator.block_out_channels")


def build_unet(cfg, num_classes: int, image_shape: tuple[int, int, int]) -> UNet2DModel:
    from diffusers import UNet2DModel  # the backend loads when a model is built (registering needs none of it)

    check_shape(cfg, image_shape)
    levels = len(cfg.block_out_channels)
    return UNet2DModel(
        sample_size=image_shape[1], in_channels=image_shape[0], out_channels=image_shape[0],
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
        add_attention=False,  # the mid-block attention costs ~25% of a training step at 7x7 for no visible gain
        norm_num_groups=8, num_class_embeds=num_classes + 1, time_embedding_dim=cfg.time_embedding_dim or None,
        resnet_time_scale_shift=cfg.time_conditioning,
    )


def generator_key(cfg, data_meta: dict) -> str:
    """Cache key: the generator's architecture and training settings plus the data it was trained on."""
    fields = {k: getattr(cfg, k) for k in ("name", "block_out_channels", "layers_per_block", "num_train_timesteps",
                                           "beta_schedule", "train_steps", "batch_size", "lr", "ema_decay",
                                           "cond_drop", "bf16", "seed")}
    # options added later (ADDED_OPTION_DEFAULTS) enter the key only when not the original ones, so generators
    # cached before they existed keep their key
    fields |= {k: getattr(cfg, k) for k, old in ADDED_OPTION_DEFAULTS.items() if getattr(cfg, k) != old}
    fields["data"] = {k: data_meta.get(k) for k in ("seed",)} | {"gen_train": data_meta.get("gen_train")}
    blob = json.dumps(fields, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def train_timesteps(noise_sched: DDPMScheduler, cfg, n: int, g: torch.Generator) -> torch.Tensor:
    """Timesteps of one training batch. ``uniform``: t ~ U{0, …, T−1} (DDPM). ``lognormal``: EDM's noise-level
    distribution (Karras et al. 2022, Sec. 5, "noise distribution"), ln σ ~ N(P_mean, P_std²) in the units of the
    [-1, 1] images, each σ mapped to the first timestep whose σ_t = sqrt((1 − ᾱ_t)/ᾱ_t) reaches it (σ_t increases
    with t; levels beyond the schedule's ends take its first or last step)."""
    if cfg.timestep_sampling == "uniform":
        return torch.randint(0, cfg.num_train_timesteps, (n,), generator=g)
    ab = noise_sched.alphas_cumprod.double()
    sigma_t = ((1 - ab) / ab).sqrt()
    sigma = (cfg.lognormal_mean + cfg.lognormal_std * torch.randn(n, generator=g, dtype=torch.float64)).exp()
    return torch.searchsorted(sigma_t, sigma).clamp_(0, len(sigma_t) - 1)


@GENERATORS.register("pixel_unet")
class PixelDiffusion:
    """Class-conditional DDPM/DDIM in pixel space; images in [-1, 1]."""

    def __init__(self, unet: UNet2DModel, scheduler: DDIMScheduler, num_classes: int, generator_id: str = "untrained",
                 bf16: bool = True, device: str | torch.device = "cpu", prediction: str = "epsilon"):
        self.unet = unet.to(device).eval().requires_grad_(False)
        self.prediction = prediction  # what the UNet outputs; sampling always works with ε (see eps_fn)
        self.scheduler = scheduler
        self.num_classes = num_classes
        self.image_shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        self.generator_id = generator_id
        self.bf16 = bf16
        self.device = torch.device(device)

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def create(cls, cfg, num_classes: int, image_shape=(1, 28, 28), device="cpu") -> "PixelDiffusion":
        from diffusers import DDIMScheduler

        torch.manual_seed(cfg.seed)
        unet = build_unet(cfg, num_classes, image_shape)
        sched = DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                              clip_sample=True, set_alpha_to_one=True, prediction_type="epsilon")
        return cls(unet, sched, num_classes, bf16=cfg.bf16, device=device, prediction=cfg.prediction)

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        """Write weights (safetensors), UNet and scheduler configs and our metadata; atomic via a temp folder."""
        path = Path(path)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        self.unet.save_pretrained(tmp / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(tmp / "scheduler")
        weights = (tmp / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
        self.generator_id = f"pixel_unet-{hashlib.sha256(weights).hexdigest()[:12]}"
        meta = {"name": "pixel_unet", "num_classes": self.num_classes, "generator_id": self.generator_id,
                "image_shape": list(self.image_shape), "prediction": self.prediction, **(extra or {})}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, cfg=None, device="cpu") -> "PixelDiffusion":
        from diffusers import DDIMScheduler, UNet2DModel

        path = Path(path)
        for need in (META_FILE, "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler"):
            if not (path / need).exists():
                raise GeneratorError(f"generator checkpoint {path} is incomplete: missing {need}")
        meta = json.loads((path / META_FILE).read_text())
        unet = UNet2DModel.from_pretrained(path / "unet")
        if cfg is not None:
            want = tuple(cfg.block_out_channels)
            have = tuple(unet.config.block_out_channels)
            if want != have or unet.config.layers_per_block != cfg.layers_per_block:
                raise GeneratorError(f"generator checkpoint {path} does not match the config: block_out_channels "
                                     f"{have} / layers_per_block {unet.config.layers_per_block} in the checkpoint, "
                                     f"{want} / {cfg.layers_per_block} in generator.*")
        sched = DDIMScheduler.from_pretrained(path / "scheduler")
        return cls(unet, sched, meta["num_classes"], meta["generator_id"], bf16=cfg.bf16 if cfg else True,
                   device=device, prediction=meta.get("prediction", "epsilon"))

    # ------------------------------------------------------------------------------------------------ train
    def fit(self, images: torch.Tensor, labels: torch.Tensor, cfg, progress: bool = True, log=None) -> list[float]:
        """DDPM training on uint8 ``images``; EMA weights are kept. Returns the loss curve.

        Objective (``cfg.prediction``): ε-prediction, ‖ε̂ − ε‖², or v-prediction, ‖v̂ − v‖² with
        v = sqrt(ᾱ_t)·ε − sqrt(1−ᾱ_t)·x0 (Salimans & Ho 2022). Weighting (``cfg.loss_weight``): uniform, or min-SNR-γ
        (Hang et al. 2023): the per-sample loss times min(SNR_t, γ)/SNR_t for ε, min(SNR_t, γ)/(SNR_t + 1) for v,
        with SNR_t = ᾱ_t/(1−ᾱ_t) — both equal min(SNR_t, γ)·‖x̂0 − x0‖², capping the weight of the easy low-noise
        steps that dominate uniform training. With ``cfg.train_processes`` (:func:`train_processes`) > 1 the steps
        are computed by that many processes, data-parallel through DDP (:func:`_train_worker`)."""
        n = train_processes(cfg, self.device)
        self.trained_with_processes = n
        if n == 1:
            losses = train_loop(self.unet, images, labels, cfg, self.num_classes, self.bf16, self.device, progress, log)
        else:
            threads = max(1, torch.get_num_threads() // n)
            with tempfile.TemporaryDirectory(prefix="deliberate-gen-") as tmp:
                out = Path(tmp) / "trained.pt"
                state = {k: v.detach().cpu() for k, v in self.unet.state_dict().items()}
                torch.multiprocessing.spawn(_train_worker, nprocs=n, join=True, args=(
                    n, str(Path(tmp) / "store"), str(out), state, images, labels, cfg, self.num_classes, self.bf16,
                    threads, progress))
                trained = torch.load(out, weights_only=True)
            self.unet.load_state_dict(trained["state"])
            losses = trained["losses"]
            if log:  # the workers cannot call back into this process: their curve is logged once they are done
                lr = lr_factor(cfg)
                for step in range(0, len(losses), 50):
                    log({"step": step, "loss": losses[step], "lr": cfg.lr * lr(step + 1)})
        self.unet = self.unet.eval().requires_grad_(False)
        return losses

    # ----------------------------------------------------------------------------------------------- sample
    def eps_fn(self, labels: torch.Tensor, cfg_scale: float):
        """ε(x_t, t) with classifier-free guidance ε = (1+λ)ε(x,y) − λε(x) (Eq. 5). A v-prediction model's output
        is turned into ε = sqrt(ᾱ_t)·v + sqrt(1−ᾱ_t)·x_t first, so that the sampler and guidance see ε alone."""
        null = torch.full_like(labels, self.num_classes)
        acp = self.scheduler.alphas_cumprod

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with autocast(self.device, self.bf16):
                if cfg_scale == 0:
                    out = self.unet(x, t, class_labels=labels).sample.float()
                else:
                    both = self.unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, null])).sample.float()
                    cond, uncond = both.chunk(2)
                    out = (1 + cfg_scale) * cond - cfg_scale * uncond
            if self.prediction == "v_prediction":
                a = acp[int(t)].to(x.device)
                out = a.sqrt() * out + (1 - a).sqrt() * x.float()
            return out

        return fn

    def sample(self, labels: torch.Tensor, seeds: Sequence[int], *, steps: int = 25, cfg_scale: float = 0.0,
               guide: Guide | None = None, eta: float = 0.0, batch_size: int = 256, solver: str = "ddim",
               progress: bool = False) -> SampleOutput:
        """Images (uint8) for ``labels``, sample i drawn from ``seeds[i]`` alone (see :func:`per_sample_noise`), in
        index-aligned calls of ``batch_size`` slots (:func:`~deliberate.generation.base.sample_in_chunks`)."""
        check_request(labels, seeds, self.num_classes)

        def call(y: torch.Tensor, sd: list[int]):
            x, rngs = per_sample_noise(sd, self.image_shape, self.device)
            x, st = guided_ddim(self.eps_fn(y.to(self.device), cfg_scale), self.scheduler, x, steps, guide, eta=eta,
                                rngs=rngs, solver=solver, labels=y.to(self.device))
            return to_uint8(x).cpu(), st

        return sample_in_chunks(labels, seeds, batch_size, self.image_shape, call, guide, self.device, progress,
                                "sample" + (" (guided)" if guide and guide.omega else ""))


def train_processes(cfg, device) -> int:
    """How many processes train the generator: ``cfg.train_processes``, or for 0 (auto) 2 on a CPU with at least
    2 intra-op threads and at least 200 steps (starting them costs a few seconds), else 1. CUDA and runs under
    ``torchrun`` train in one process."""
    cpu = torch.device(device).type == "cpu" and not distributed.is_distributed()
    if cfg.train_processes > 1 and not cpu:
        raise GeneratorError(f"generator.train_processes={cfg.train_processes} splits CPU training over processes; "
                             f"on {device} or under torchrun the generator trains in one process (set it to 0 or 1)")
    if cfg.train_processes:
        return cfg.train_processes
    return 2 if cpu and torch.get_num_threads() >= 2 and cfg.train_steps >= 200 else 1


def lr_factor(cfg):
    """The learning-rate multiplier after step s: 0.1 + 0.9 · warm-up(s) · cosine(s), a linear warm-up over the first
    5 % of the steps times a half cosine over all of them (from 1 to 0.1 overall)."""
    warm = max(1, cfg.train_steps // 20)
    return lambda s: min(1.0, (s + 1) / warm) * (
        0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, cfg.train_steps))))) * 0.9 + 0.1


def train_loop(unet: UNet2DModel, images: torch.Tensor, labels: torch.Tensor, cfg, num_classes: int, bf16: bool,
               dev, progress: bool = True, log=None, rank: int = 0, world: int = 1) -> list[float]:
    """The training steps of :meth:`PixelDiffusion.fit`; ``unet`` ends holding the EMA weights. In a process group
    of ``world`` processes every process draws the same global batch and computes rows ``rank::world`` of it through
    ``DistributedDataParallel`` (the learner's wrapper, :func:`~deliberate.distributed.wrap_ddp`): DDP averages the
    processes' gradients, so each backpropagates ``world`` times its rows' share of the batch's mean loss and the
    step is that of the whole batch, the same on every process."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel, compute_snr

    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    unet.train().requires_grad_(True)
    params = list(unet.parameters())
    model = distributed.wrap_ddp(unet, torch.device(dev)) if world > 1 else unet
    ema = EMAModel(params, decay=cfg.ema_decay)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg))
    noise_sched = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule)
    x_all = images.float().div(127.5).sub(1)
    losses = []
    bar = tqdm(range(cfg.train_steps), desc="train generator" + (f" ({world} processes)" if world > 1 else ""),
               disable=not progress, dynamic_ncols=True)
    for step in bar:
        idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=g)
        x0 = x_all[idx].to(dev)
        y = labels[idx].to(dev)
        drop = torch.rand(len(y), generator=g).to(dev) < cfg.cond_drop
        y = torch.where(drop, torch.full_like(y, num_classes), y)
        noise = torch.randn(x0.shape, generator=g).to(dev)
        t = train_timesteps(noise_sched, cfg, len(y), g).to(dev)
        if world > 1:  # this process's rows of the global batch
            x0, y, noise, t = x0[rank::world], y[rank::world], noise[rank::world], t[rank::world]
        xt = noise_sched.add_noise(x0, noise, t)
        with autocast(dev, bf16):
            pred = model(xt, t, class_labels=y).sample
        target = noise if cfg.prediction == "epsilon" else noise_sched.get_velocity(x0, noise, t)
        per_sample = (pred.float() - target).pow(2).flatten(1).mean(1)
        if cfg.loss_weight == "min_snr":
            snr = compute_snr(noise_sched, t)
            per_sample = per_sample * snr.clamp_max(cfg.min_snr_gamma) / (snr if cfg.prediction == "epsilon"
                                                                          else snr + 1)
        loss = per_sample.mean() if world == 1 else per_sample.sum() / cfg.batch_size  # this process's share
        opt.zero_grad(set_to_none=True)
        (loss if world == 1 else loss * world).backward()  # DDP averages the processes' gradients
        if world > 1:
            dist.all_reduce(loss := loss.detach())  # the batch's loss, for the curve
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.step(params)
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
            if log:
                log({"step": step, "loss": losses[-1], "lr": sched.get_last_lr()[0]})
    ema.copy_to(params)
    return losses


def _train_worker(rank: int, world: int, store: str, out: str, state: dict, images: torch.Tensor,
                  labels: torch.Tensor, cfg, num_classes: int, bf16: bool, threads: int, progress: bool) -> None:
    """One of ``world`` CPU training processes (started by :meth:`PixelDiffusion.fit`): joins a gloo group through a
    file store, trains its rows of every batch under DDP (:func:`train_loop`); rank 0 writes the EMA weights and the
    loss curve to ``out``."""
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        unet = build_unet(cfg, num_classes, tuple(images.shape[1:]))
        unet.load_state_dict(state)
        losses = train_loop(unet, images, labels, cfg, num_classes, bf16, torch.device("cpu"),
                            progress and rank == 0, rank=rank, world=world)
        if rank == 0:
            torch.save({"state": unet.state_dict(), "losses": losses}, out + ".tmp")
            os.replace(out + ".tmp", out)
    finally:
        dist.destroy_process_group()


def cpu_seconds() -> float:
    """CPU seconds of this process's threads plus those of its finished child processes (the training processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def obtain_pixel_generator(cfg, splits, device="cpu", progress: bool = True, log=None) -> tuple[PixelDiffusion, dict]:
    """Load the generator from ``generator.path`` or from the cache, or train it on the generator split and cache it."""
    g = cfg.generator
    if g.path:
        gen = PixelDiffusion.load(g.path, g, device)
        data = (splits.num_classes, tuple(splits.val.images.shape[1:]))
        if (gen.num_classes, tuple(gen.image_shape)) != data:
            raise GeneratorError(f"generator.path {g.path} makes {gen.num_classes} classes of {gen.image_shape} "
                                 f"images, the data has {data[0]} classes of {data[1]}")
        return gen, {"source": "path", "path": g.path, "generator_id": gen.generator_id}
    key = generator_key(g, splits.meta)
    path = Path(g.cache_dir) / key
    if (path / META_FILE).exists():
        gen = PixelDiffusion.load(path, g, device)
        return gen, {"source": "cache", "path": str(path), "generator_id": gen.generator_id, "key": key}
    shipped = shipped_generator(key) if g.source == "auto" else None  # this recipe on this data, pretrained
    if shipped is not None:
        gen = PixelDiffusion.load(shipped, g, device)
        return gen, {"source": "shipped", "path": str(shipped), "generator_id": gen.generator_id, "key": key}
    gen = PixelDiffusion.create(g, splits.num_classes, tuple(splits.gen_train.images.shape[1:]), device)
    t0, c0 = time.perf_counter(), cpu_seconds()
    losses = gen.fit(splits.gen_train.images, splits.gen_train.labels, g, progress=progress, log=log)
    seconds = time.perf_counter() - t0
    gen.save(path, extra={"key": key, "train_seconds": round(seconds, 1),
                          "train_cpu_seconds": round(cpu_seconds() - c0, 1),  # all threads and training processes
                          "final_loss": losses[-1] if losses else None,
                          "train_processes": gen.trained_with_processes,
                          "config": {k: v for k, v in vars(g).items()}})
    return gen, {"source": "trained", "path": str(path), "generator_id": gen.generator_id, "key": key,
                 "train_seconds": round(seconds, 1)}


PixelDiffusion.obtain = staticmethod(obtain_pixel_generator)
