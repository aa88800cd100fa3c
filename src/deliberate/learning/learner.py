"""The learner: a classifier trained on mini-batches of generated images (AdamW, warmup-stable-decay LR,
label smoothing; timm's EMA and mixup/cutmix as options). Augmentation: pad-shift + flip (:func:`augment`), or
for timm models at >= 64 px timm's own training transforms (:class:`TimmAugment`)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from .. import distributed
from ..config import ConfigError
from ..generation.base import autocast
from .models import build_model
from .schedule import WarmupStableDecay


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [-1, 1], the space generators produce and learners read."""
    return images.float().div(127.5).sub(1)


def augment_params(n: int, g: torch.Generator, pad: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample shifts (dx, dy) and flips for ``n`` samples, drawn from ``g`` in this order."""
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    return dx, dy, torch.rand(n, generator=g) < 0.5


def augment(x: torch.Tensor, g: torch.Generator, pad: int = 2, params=None, hflip: bool = True) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (reflect padding) and, with ``hflip``, horizontal flip, per
    sample; ``params`` (from :func:`augment_params`) are drawn from ``g`` when not given (flips are drawn either
    way, so the translations do not depend on ``hflip``). Pure data movement: it works on uint8 and
    float images alike and commutes with :func:`to_float`, so loader workers augment uint8 batches."""
    b, _, h, w = x.shape
    dx, dy, flip = augment_params(b, g, pad) if params is None else params
    if not hflip:
        flip = torch.zeros_like(flip)
    if x.device.type == "cpu":  # loader workers: gather each sample's reflected rows, then its (flipped) columns
        xn, out = x.numpy(), torch.empty_like(x)
        on = out.numpy()
        for i, (ox, oy, f) in enumerate(zip(dx.tolist(), dy.tolist(), flip.tolist())):
            cols = _reflected(ox - pad, w)
            on[i] = xn[i][:, _reflected(oy - pad, h)][:, :, cols[::-1] if f else cols]
        return out
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    out = torch.empty_like(x)
    for i, (ox, oy, f) in enumerate(zip(dx.tolist(), dy.tolist(), flip.tolist())):  # a crop per sample
        crop = xp[i, :, oy:oy + h, ox:ox + w]
        out[i] = crop.flip(-1) if f else crop
    return out


def _reflected(start: int, n: int) -> np.ndarray:
    """Source indices of positions start … start+n-1 of an axis of length n under reflection padding."""
    i = np.abs(np.arange(start, start + n))
    return np.where(i > n - 1, 2 * (n - 1) - i, i)


# timm's RandAugment policy of its ViT/DeiT ImageNet recipe (2 ops per image, magnitude 9 ± 0.5)
TIMM_AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"


class TimmAugment:
    """Training augmentation of a timm learner at ≥ 64 px, built by timm's own factory
    (``timm.data.create_transform``, training mode) from the model's pretrained data config
    (``resolve_data_config``: interpolation, mean for RandAugment's fill) at the learner's input size:
    random-resized-crop, horizontal flip (with ``hflip``) and RandAugment (:data:`TIMM_AUTO_AUGMENT`). Its PIL
    stages run on uint8 images and return uint8 at the input size (the model's :class:`~.models.Preprocess` then
    normalises). Randomness: one seed per sample (:meth:`draw`, from the learner's RNG); each sample is transformed
    with Python's, NumPy's and torch's global generators seeded from it, and their states are restored after, so
    a sample's augmentation depends on its seed only (not on the batch, the worker or the process)."""

    def __init__(self, size: int, data_config: dict, hflip: bool = True, auto_augment: str = TIMM_AUTO_AUGMENT):
        self.size, self.data_config, self.hflip, self.auto_augment = size, dict(data_config), hflip, auto_augment
        self._pil = None

    @classmethod
    def for_model(cls, name: str, model: nn.Module, hflip: bool = True) -> "TimmAugment | None":
        """The augmentation of learner ``name`` built as ``model`` (``Preprocess`` + backbone); None for our own
        architectures and for timm models below 64 px (those keep the pad-shift + flip of :func:`augment`)."""
        from ..registry import LEARNERS

        size = model[0].size
        if name in LEARNERS or size < 64:
            return None
        from timm.data import resolve_data_config

        return cls(size, resolve_data_config(model=model[1]), hflip)

    @property
    def pil(self):
        """The PIL stages of timm's training transform: (crop and flip) then RandAugment, without ToTensor and
        normalisation."""
        if self._pil is None:
            from timm.data import create_transform
            from torchvision import transforms

            dc = self.data_config
            primary, secondary, _ = create_transform(
                (3, self.size, self.size), is_training=True, separate=True, hflip=0.5 if self.hflip else 0.0,
                auto_augment=self.auto_augment, interpolation=dc.get("interpolation", "bilinear"),
                mean=dc.get("mean", (0.485, 0.456, 0.406)), std=dc.get("std", (0.229, 0.224, 0.225)))
            self._pil = transforms.Compose([primary, secondary])
        return self._pil

    @staticmethod
    def draw(n: int, g: torch.Generator) -> torch.Tensor:
        """Per-sample seeds for ``n`` samples, drawn from ``g``."""
        return torch.randint(0, 2 ** 31 - 1, (n,), generator=g)

    def __call__(self, images: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) → uint8 (B, C, size, size); C = 1 is transformed as grey RGB and returned as one."""
        import random

        from PIL import Image

        c = images.shape[1]
        out = np.empty((len(images), c, self.size, self.size), dtype=np.uint8)
        py, npr = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                for i, (x, s) in enumerate(zip(images.cpu().numpy(), seeds.tolist())):
                    random.seed(s)
                    np.random.seed(s)
                    torch.random.default_generator.manual_seed(s)
                    img = Image.fromarray(x[0], "L").convert("RGB") if c == 1 else Image.fromarray(x.transpose(1, 2, 0))
                    out[i] = np.asarray(self.pil(img)).transpose(2, 0, 1)[:c]  # (numpy: a strided torch copy is slow)
        finally:
            random.setstate(py)
            np.random.set_state(npr)
        return torch.from_numpy(out)


class Prepare:
    """What a training step does to its uint8 batch before the model, in the loader's worker processes: the
    augmentation of :meth:`Learner.step`, micro-batch by micro-batch, with the parameters drawn for the global
    batch (picklable: numbers, and a timm learner's :class:`TimmAugment`, which builds its transform when used)."""

    def __init__(self, chunks: int, world: int, rank: int, batch_size: int, hflip: bool = True,
                 transform: TimmAugment | None = None):
        self.chunks, self.world, self.rank, self.batch_size, self.hflip = chunks, world, rank, batch_size, hflip
        self.transform = transform  # a timm learner's augmentation (params: per-sample seeds), else pad-shift + flip

    def micro_batches(self, n_local: int) -> tuple[int, int]:
        """(micro-batches on this process, their size) for a local batch of ``n_local`` samples."""
        w = self.world
        n = self.chunks // w if n_local * w == self.batch_size else 1
        return n, -(-n_local // n)

    def __call__(self, images: torch.Tensor, params) -> torch.Tensor:
        n, m = self.micro_batches(len(images))
        w, r = self.world, self.rank
        if self.transform is not None:
            return torch.cat([self.transform(images[k * m:(k + 1) * m], params[0][r + k * w::n * w])
                              for k in range(n)]) if len(images) else images
        return torch.cat([augment(images[k * m:(k + 1) * m], None, params=tuple(p[r + k * w::n * w] for p in params),
                                  hflip=self.hflip)
                          for k in range(n)]) if len(images) else images


class Learner:
    def __init__(self, cfg, num_classes: int, in_chans: int, total_iterations: int, device="cpu", seed: int = 0):
        from timm.data import Mixup  # timm (and the torchvision it imports) loads when a learner is built
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
        from timm.optim import param_groups_weight_decay
        from timm.utils import ModelEmaV3

        self.cfg = cfg
        self.device = torch.device(device)
        self.num_classes = num_classes
        torch.manual_seed(seed)
        self.rng = torch.Generator().manual_seed(seed + 1)
        self.model = build_model(cfg.model, num_classes, in_chans, cfg.img_size, cfg.pretrained_path).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # timm learners at >= 64 px train on timm's transforms; the rest (cnn_small at 28 px) on pad-shift + flip
        self.transform = TimmAugment.for_model(cfg.model, self.model, cfg.hflip) if cfg.augment else None
        # Several processes (distributed.py): DDP for training; the global batch is cut into `chunks` micro-batches.
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.chunks = global_chunks(cfg.batch_size, cfg.micro_batch_size, self.world)
        self.train_model = distributed.wrap_ddp(self.model, self.device)
        groups = param_groups_weight_decay(self.model, cfg.weight_decay)
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr)
        self.schedule = WarmupStableDecay(total_iterations, cfg.warmup_frac, cfg.decay_frac,
                                          warmup_iterations=cfg.warmup_iterations)
        self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup) if cfg.ema else None
        self.mixup = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                               num_classes=num_classes)
            self.loss_fn = SoftTargetCrossEntropy()
        else:
            self.loss_fn = LabelSmoothingCrossEntropy(cfg.label_smoothing) if cfg.label_smoothing else nn.CrossEntropyLoss()
        self.iteration = 0

    # --------------------------------------------------------------------------------------------- training
    def local_indices(self, idx: torch.Tensor) -> torch.Tensor:
        """This process's share of a global mini-batch ``idx`` (pool indices): the global batch is cut into G chunks
        ``idx[c::G]`` of ``micro_batch_size``; rank r takes chunks r, r+W, … (W processes). The identity for one
        process without micro-batches."""
        if self.chunks == 1:
            return idx
        return torch.cat([idx[c::self.chunks] for c in range(self.rank, self.chunks, self.world)])

    def draw_augment(self, n_local: int, g: torch.Generator | None = None):
        """The augmentation parameters of a step on ``n_local`` samples, drawn for the global batch from ``g``
        (default: the learner's RNG, as :meth:`step` draws them): (dx, dy, flip), or (per-sample seeds,) for a
        timm learner's :class:`TimmAugment`; None without augmentation."""
        if not self.cfg.augment:
            return None
        g = self.rng if g is None else g
        if self.transform is not None:
            return (self.transform.draw(n_local * self.world, g),)
        return augment_params(n_local * self.world, g)

    def preparer(self) -> Prepare:
        return Prepare(self.chunks, self.world, self.rank, self.cfg.batch_size, self.cfg.hflip, self.transform)

    def step(self, images: torch.Tensor, labels: torch.Tensor, prepared: bool = False) -> float:
        """One optimisation step on a uint8 batch (this process's share, :meth:`local_indices`, of the global
        batch); the LR follows the schedule at the current iteration. ``prepared``: the batch is already augmented
        (by :class:`Prepare`, with parameters from :meth:`draw_augment`: practice/loader.py) and is only
        converted to float here, on the device. Micro-batch gradients are averaged (and, under
        DDP, across processes), so a step sees the same data and the same augmentation draws for any W dividing
        the number of chunks (mixup/cutmix excepted: timm draws them per call). Returns the global mean loss."""
        lr = self.cfg.lr * self.schedule.factor(self.iteration)
        for group in self.opt.param_groups:
            group["lr"] = lr
        w, r = self.world, self.rank
        n, m = self.preparer().micro_batches(len(labels))  # micro-batches on this process, their size
        params = None if prepared else self.draw_augment(len(labels))  # for the global batch
        self.train_model.train()
        self.opt.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(n):
            c = r + k * w  # global chunk id: positions c::(n·w) of the global batch
            xb = images[k * m:(k + 1) * m]
            if params is not None and self.transform is not None:  # timm's transforms, on the uint8 CPU batch
                xb = self.transform(xb, params[0][c::n * w])
            x = to_float(xb.to(self.device, non_blocking=True))
            y = labels[k * m:(k + 1) * m].to(self.device, non_blocking=True)
            if params is not None and self.transform is None:
                x = augment(x, self.rng, params=tuple(p[c::n * w] for p in params), hflip=self.cfg.hflip)
            if self.mixup is not None:
                x, y = self.mixup(x, y)
            if self.cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            sync = k == n - 1 or self.train_model is self.model
            with contextlib.nullcontext() if sync else self.train_model.no_sync():
                with autocast(self.device, self.cfg.bf16):
                    logits = self.train_model(x)
                loss = self.loss_fn(logits.float(), y)
                (loss / n if n > 1 else loss).backward()
            total += loss.item() / n
        self.opt.step()
        if self.ema is not None:
            self.ema.update(self.model, step=self.iteration)
        self.iteration += 1
        return total if w == 1 else distributed.all_sum([total]).item() / w

    @property
    def eval_model(self) -> nn.Module:
        """The model that is evaluated and guides sampling: the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    @contextlib.contextmanager
    def frozen(self) -> Iterator[nn.Module]:
        """The eval model in eval mode with frozen weights (gradients still reach its input), for guidance."""
        m = self.eval_model
        was_training = m.training
        flags = [p.requires_grad for p in m.parameters()]
        m.eval().requires_grad_(False)
        try:
            yield m
        finally:
            for p, f in zip(m.parameters(), flags):
                p.requires_grad_(f)
            m.train(was_training)

    # ------------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for uint8 images, in batches, with the eval model."""
        m = self.eval_model
        was = m.training
        m.eval()
        out = []
        for s in range(0, len(images), self.cfg.eval_batch_size):
            x = to_float(images[s:s + self.cfg.eval_batch_size]).to(self.device)
            with autocast(self.device, self.cfg.bf16):
                out.append(m(x).float().cpu())
        m.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.num_classes)

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 accuracy. With several processes each holds a share of the split: the counts are summed."""
        counts = [float((self.predict(images).argmax(-1) == labels).sum()), float(len(labels))]
        correct, total = distributed.all_sum(counts).tolist() if self.world > 1 else counts
        return correct / total if total else float("nan")

    # -------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "iteration": self.iteration,
                "ema": self.ema.state_dict() if self.ema is not None else None, "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.iteration = state["iteration"]
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.rng.set_state(state["rng"])


def global_chunks(batch_size: int, micro_batch_size: int, world: int) -> int:
    """Number G of chunks of a global batch: batch / micro_batch_size, or one per process; W must divide G."""
    g = batch_size // micro_batch_size if micro_batch_size else world
    if (micro_batch_size and batch_size % micro_batch_size) or batch_size % world or g % world:
        raise ConfigError(f"learner.batch_size={batch_size} with learner.micro_batch_size={micro_batch_size} cannot be "
                          f"split evenly over {world} processes (need batch_size / micro_batch_size to be a multiple of "
                          f"the number of processes)")
    return g

