"""Paper-scale generator: Stable Diffusion (the paper's LDM-1.5) prompted with class names, sampled with
entropy-guided DDIM in latent space.

Weights. The five components (``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel``, ``CLIPTokenizer``,
``DDIMScheduler``) load from a local diffusers-format directory, ``generator.path`` (``model_index.json``,
``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), with ``local_files_only``: nothing is
downloaded. A missing or unloadable component raises :class:`GeneratorError` naming it. A scheduler saved for
another sampler (SD 1.5 ships a PNDM config) is read as DDIM; v-prediction models (SD 2.x-768) are converted to ε.

Prompts. Sample i of class y with seed s is prompted with ``generator.prompt_templates[s % T].format(name_y)``:
the prompt, like the noise, depends on the sample alone.

Classifier-free guidance. The paper writes ε = (1+λ)·ε(z, c) − λ·ε(z, ∅) (Eq. 5); diffusers writes
ε = ε(z, ∅) + s·(ε(z, c) − ε(z, ∅)). Both are the same with **s = 1 + λ**: ``sampling.cfg_scale`` is the paper's
λ, so the paper's λ = 3 is diffusers' ``guidance_scale=4`` (λ = 0: the conditional model alone, no ∅ pass).

Entropy guidance in latent space (Eq. 4, 6, 7; the latent version is *inferred*, see PAPER.md). At a guided step,
ẑ0 = (z_t − sqrt(1−ᾱ_t)·ε)/sqrt(ᾱ_t) (Eq. 4) is decoded by the VAE *with gradients*, resized to the stored image
size, and read by the learner, whose ``Preprocess`` resizes and normalises it exactly as for pool images; the
gradient of the entropy (Eq. 6) w.r.t. z_t (through the classifier, the VAE decoder and, with
``guidance.grad=unet``, the UNet) enters ε as in pixel space: ε̃ = ε − ω·sqrt(1−ᾱ_t)·∇_{z_t}H (see guidance.py for
the direction). The loop itself is :func:`~deliberate.generation.ddim.guided_ddim`, shared with ``pixel_unet``.

Memory (backpropagating through UNet and VAE at 512²): ``generator.vae_slicing`` decodes one sample at a time,
``generator.vae_tiling`` in tiles, ``generator.gradient_checkpointing`` recomputes UNet and VAE-decoder
activations in the backward pass, ``generator.guided_batch_size`` caps the batch of guided calls. On CUDA the
models run under autocast to ``generator.dtype``; ``bfloat16`` is the safe choice for guidance (``float16`` has the
range problem of an unscaled backward pass). The DDIM state and the scheduler arithmetic stay in float32.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..registry import GENERATORS
from .base import GeneratorError, SampleOutput, check_request, per_sample_noise, sample_in_chunks, to_uint8
from .ddim import guided_ddim
from .guidance import Guide

# component → (files that must exist, alternatives per entry separated by "|")
COMPONENTS = {
    "unet": ("config.json", "diffusion_pytorch_model*.safetensors*|diffusion_pytorch_model*.bin*"),
    "vae": ("config.json", "diffusion_pytorch_model*.safetensors*|diffusion_pytorch_model*.bin*"),
    "text_encoder": ("config.json", "model*.safetensors*|pytorch_model*.bin*"),
    "tokenizer": ("tokenizer.json|vocab.json",),
    "scheduler": ("scheduler_config.json",),
}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_pipeline_dir(path: str | Path) -> Path:
    """Raise :class:`GeneratorError` naming the first missing piece of a diffusers Stable Diffusion directory."""
    path = Path(path)
    if not path.is_dir():
        raise GeneratorError(f"generator.path {path} is not a directory (expected a local diffusers-format Stable "
                             "Diffusion directory: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    if not (path / "model_index.json").is_file():
        raise GeneratorError(f"generator.path {path}: missing model_index.json (not a diffusers pipeline directory)")
    for comp, needs in COMPONENTS.items():
        if not (path / comp).is_dir():
            raise GeneratorError(f"generator.path {path}: missing component '{comp}/'")
        for need in needs:
            if not any(any((path / comp).glob(alt)) for alt in need.split("|")):
                raise GeneratorError(f"generator.path {path}: component '{comp}' is incomplete: no {need.replace('|', ' or ')}")
    return path


def _load(comp: str, path: Path, fn):
    try:
        return fn()
    except GeneratorError:
        raise
    except Exception as e:  # diffusers/transformers raise OSError, ValueError, EnvironmentError, KeyError...
        raise GeneratorError(f"generator.path {path}: cannot load component '{comp}': {type(e).__name__}: {e}") from None


def pipeline_id(path: Path, templates: Sequence[str], class_names: Sequence[str]) -> str:
    """Cheap identity of the weights (configs, weight file names and sizes) and of the prompts."""
    h = hashlib.sha256((path / "model_index.json").read_bytes())
    for comp in COMPONENTS:
        for f in sorted((path / comp).iterdir()):
            if f.is_file():
                h.update(f.name.encode())
                h.update(f.read_bytes() if f.suffix in (".json", ".txt") else str(f.stat().st_size).encode())
    h.update(json.dumps([list(templates), list(class_names)]).encode())
    return f"stable_diffusion-{h.hexdigest()[:12]}"


@GENERATORS.register("stable_diffusion")
class LatentDiffusion:
    """Text-to-image latent diffusion, class-conditional through prompts; images in [-1, 1] (stored as uint8)."""

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: CLIPTextModel,
                 tokenizer: CLIPTokenizer, scheduler: DDIMScheduler, class_names: Sequence[str], *,
                 templates: Sequence[str] = ("a photo of a {}.",), resolution: int = 512, out_size: int = 0,
                 device: str | torch.device = "cpu", dtype: str = "float32", vae_slicing: bool = True,
                 vae_tiling: bool = False, gradient_checkpointing: bool = False, guided_batch_size: int = 0,
                 generator_id: str = "stable_diffusion"):
        from diffusers import DDIMScheduler

        self.device = torch.device(device)
        self.unet = unet.to(self.device).eval().requires_grad_(False)
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.text_encoder = text_encoder.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        pred = scheduler.config.get("prediction_type", "epsilon")
        if pred not in ("epsilon", "v_prediction"):
            raise GeneratorError(f"unsupported scheduler prediction_type '{pred}' (epsilon or v_prediction)")
        self.v_prediction = pred == "v_prediction"
        self.scheduler = DDIMScheduler.from_config(scheduler.config, prediction_type="epsilon")  # we hand it ε
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.templates = tuple(templates)
        if not self.templates or any("{}" not in t for t in self.templates):
            raise GeneratorError(f"generator.prompt_templates must be non-empty strings containing '{{}}', got {self.templates}")
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        if resolution <= 0 or resolution % self.vae_scale:
            raise GeneratorError(f"generator.resolution={resolution} must be a positive multiple of the VAE's "
                                 f"downsampling factor {self.vae_scale}")
        self.resolution = resolution
        self.latent_shape = (unet.config.in_channels, resolution // self.vae_scale, resolution // self.vae_scale)
        self.out_size = out_size or resolution
        self.image_shape = (3, self.out_size, self.out_size)
        self.amp_dtype = _DTYPES[dtype]
        self.guided_batch_size = guided_batch_size
        self.generator_id = generator_id
        if vae_slicing:
            self.vae.enable_slicing()
        if vae_tiling:
            self.vae.enable_tiling()
        if gradient_checkpointing:  # active only while gradients are recorded, i.e. in guided steps
            self.unet.enable_gradient_checkpointing()
            self.vae.enable_gradient_checkpointing()
        self._embeds: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | Path, class_names: Sequence[str], cfg=None, out_size: int = 0,
             device: str | torch.device = "cpu") -> "LatentDiffusion":
        """Components from a local diffusers directory; ``cfg`` is a :class:`~deliberate.config.GeneratorConfig`."""
        try:  # the backend loads when a pipeline is built (registering needs none of it)
            from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError as e:
            raise GeneratorError(f"generator.name=stable_diffusion needs diffusers and transformers: {e}") from e
        path = check_pipeline_dir(path)
        variant = (getattr(cfg, "variant", "") or None) if cfg is not None else None
        kw = {"local_files_only": True}
        unet = _load("unet", path, lambda: UNet2DConditionModel.from_pretrained(path, subfolder="unet", variant=variant, **kw))
        vae = _load("vae", path, lambda: AutoencoderKL.from_pretrained(path, subfolder="vae", variant=variant, **kw))
        text = _load("text_encoder", path, lambda: CLIPTextModel.from_pretrained(path, subfolder="text_encoder",
                                                                               variant=variant, **kw))
        tok = _load("tokenizer", path, lambda: CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kw))
        sched = _load("scheduler", path, lambda: DDIMScheduler.from_pretrained(path, subfolder="scheduler", **kw))
        opts = {}
        if cfg is not None:
            opts = dict(templates=tuple(cfg.prompt_templates), resolution=cfg.resolution, dtype=cfg.dtype,
                        vae_slicing=cfg.vae_slicing, vae_tiling=getattr(cfg, "vae_tiling", False),
                        gradient_checkpointing=cfg.gradient_checkpointing,
                        guided_batch_size=getattr(cfg, "guided_batch_size", 0))
        gid = pipeline_id(path, opts.get("templates", ("a photo of a {}.",)), class_names)
        return cls(unet, vae, text, tok, sched, class_names, out_size=out_size, device=device, generator_id=gid, **opts)

    # ------------------------------------------------------------------------------------------------ parts
    def _autocast(self):
        if self.device.type == "cuda" and self.amp_dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def prompt(self, label: int, seed: int) -> str:
        return self.templates[int(seed) % len(self.templates)].format(self.class_names[int(label)])

    @torch.no_grad()
    def embed(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP text embeddings, one prompt at a time and cached (so a sample never depends on its batch)."""
        for p in dict.fromkeys(prompts):
            if p not in self._embeds:
                ids = self.tokenizer([p], padding="max_length", max_length=self.tokenizer.model_max_length,
                                     truncation=True, return_tensors="pt").input_ids.to(self.device)
                with self._autocast():
                    self._embeds[p] = self.text_encoder(ids)[0].float()
        return torch.cat([self._embeds[p] for p in prompts])

    def eps_fn(self, cond: torch.Tensor, uncond: torch.Tensor | None, cfg_scale: float):
        """ε(z_t, t) with classifier-free guidance ε = (1+λ)ε(z, c) − λε(z, ∅) (Eq. 5; diffusers' s = 1+λ)."""
        acp = self.scheduler.alphas_cumprod

        def fn(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                if cfg_scale == 0:
                    out = self.unet(z, t, encoder_hidden_states=cond).sample.float()
                else:
                    ctx = torch.cat([cond, uncond.expand(len(z), -1, -1)])
                    c, u = self.unet(torch.cat([z, z]), t, encoder_hidden_states=ctx).sample.float().chunk(2)
                    out = (1 + cfg_scale) * c - cfg_scale * u
            if self.v_prediction:  # ε = sqrt(ᾱ)·v + sqrt(1−ᾱ)·z_t
                a = acp[int(t)].to(z.device).float()
                out = a.sqrt() * out + (1 - a).sqrt() * z.float()
            return out

        return fn

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent → image in [-1, 1] at the stored size; differentiable (the guidance path, Eq. 6 through the VAE)."""
        cfg = self.vae.config
        z = z / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)
        with self._autocast():
            x = self.vae.decode(z).sample
        x = x.float()
        if x.shape[-1] != self.out_size:
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return x

    # ----------------------------------------------------------------------------------------------- sample
    def sample(self, labels: torch.Tensor, seeds: Sequence[int], *, steps: int = 50, cfg_scale: float = 0.0,
               guide: Guide | None = None, eta: float = 0.0, batch_size: int = 16, solver: str = "ddim",
               progress: bool = False) -> SampleOutput:
        """Images (uint8) for ``labels``; sample i depends only on (label, ``seeds[i]``, ω, λ, steps, η) and the call
        size B (index-aligned calls, :func:`~deliberate.generation.base.sample_in_chunks`)."""
        check_request(labels, seeds, self.num_classes)
        guided = guide is not None and guide.omega > 0
        if guided and self.guided_batch_size:
            batch_size = min(batch_size, self.guided_batch_size)
        if guide is not None and self.device.type == "cuda" and self.amp_dtype != torch.float32:
            crit = guide.criterion

            def amp_criterion(images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
                with self._autocast():
                    return crit(images, labels).float()

            guide = dataclasses.replace(guide, criterion=amp_criterion)
        uncond = self.embed([""]) if cfg_scale else None

        def call(y: torch.Tensor, sd: list[int]):
            cond = self.embed([self.prompt(c, k) for c, k in zip(y.tolist(), sd)])
            z, rngs = per_sample_noise(sd, self.latent_shape, self.device)
            z = z * self.scheduler.init_noise_sigma
            z, st = guided_ddim(self.eps_fn(cond, uncond, cfg_scale), self.scheduler, z, steps, guide,
                                decode=self.decode, eta=eta, rngs=rngs, solver=solver, labels=y.to(self.device))
            with torch.no_grad():
                return to_uint8(self.decode(z)).cpu(), st

        return sample_in_chunks(labels, seeds, batch_size, self.image_shape, call, guide, self.device, progress,
                                "sample" + (" (guided)" if guided else ""))


def obtain_latent_generator(cfg, splits, device="cpu", progress: bool = True, log=None) -> tuple[LatentDiffusion, dict]:
    """Load Stable Diffusion from ``generator.path``; class names (``splits.classes``) fill the prompt templates.
    Generated images are stored at ``data.image_size`` (0 = ``generator.resolution``)."""
    g = cfg.generator
    if not g.path:
        raise GeneratorError("generator.name=stable_diffusion needs generator.path: a local diffusers-format Stable "
                             "Diffusion directory (nothing is downloaded)")
    out_size = getattr(cfg.data, "image_size", 0)
    gen = LatentDiffusion.load(g.path, list(splits.classes), g, out_size=out_size, device=device)
    info = {"source": "path", "path": str(g.path), "generator_id": gen.generator_id, "resolution": gen.resolution,
            "stored_size": gen.out_size, "latent_shape": list(gen.latent_shape), "templates": list(gen.templates),
            "diffusers_guidance_scale": 1 + cfg.sampling.cfg_scale, "v_prediction": gen.v_prediction}
    if log:
        log({"event": "loaded", **info})
    return gen, info


LatentDiffusion.obtain = staticmethod(obtain_latent_generator)
