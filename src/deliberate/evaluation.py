"""Evaluation beyond held-out accuracy: label fidelity, per-round entropy and corrupted test copies (OOD).

* **Label fidelity** of generated samples: the fraction a *reference classifier*, trained on the real
  generator-training split, assigns to the label the sample was generated for. It is reported only: nothing
  trains on it or selects with it. The reference classifier is cached like the generator (same key idea:
  its settings plus the data it was trained on).
* **Round statistics**: per round of a pool, label fidelity, the mean entropy (Eq. 6) under the classifier
  that guided the round (the pool's stored score; none for plain rounds without a guide) and the mean entropy
  under the fixed reference classifier, a yardstick comparable across rounds and methods.
* **OOD**: deterministic corrupted copies of the real test split (the analogue of the paper's ImageNet-R /
  -Sketch columns): rotation, Gaussian blur, Gaussian noise, contrast inversion and elastic distortion, each at
  one fixed severity and seed (:data:`CORRUPTIONS`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from safetensors.torch import load_file, save_file

from .data.splits import Split
from .generation.guidance import entropy

# ------------------------------------------------------------------------------------------------- corruptions
# Fixed severities. rotate: each image turned by ±degrees (sign drawn per image); blur: Gaussian, kernel 5;
# noise: additive Gaussian, std in units of the [0, 1] intensity range, clipped; invert: 255 − x;
# elastic: Simard et al. (2003) displacement field, Gaussian-smoothed uniform noise × alpha pixels.
CORRUPTIONS: dict[str, dict] = {
    "rotate": {"degrees": 30.0},
    "blur": {"sigma": 1.0},
    "noise": {"std": 0.2},
    "invert": {},
    "elastic": {"alpha": 8.0, "sigma": 3.0},
}


def corrupt(images: torch.Tensor, kind: str, seed: int = 0, **severity) -> torch.Tensor:
    """A corrupted copy of uint8 ``images`` (N, C, H, W); the same (images, kind, seed, severity) always gives
    the same result. Severity keywords default to :data:`CORRUPTIONS`."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption '{kind}' (known: {', '.join(CORRUPTIONS)})")
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"corrupt() takes uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    unknown = set(severity) - set(CORRUPTIONS[kind])
    if unknown:
        raise ValueError(f"corruption '{kind}' has no parameter {sorted(unknown)} (has {sorted(CORRUPTIONS[kind])})")
    p = {**CORRUPTIONS[kind], **severity}
    g = torch.Generator().manual_seed(int(seed) * 1000 + list(CORRUPTIONS).index(kind))
    x = images.float()
    if kind == "rotate":
        sign = torch.where(torch.rand(len(x), generator=g) < 0.5, -1.0, 1.0)
        out = torch.empty_like(x)
        for s in (-1.0, 1.0):
            m = sign == s
            if m.any():
                out[m] = TF.rotate(x[m], s * p["degrees"], interpolation=TF.InterpolationMode.BILINEAR, fill=0.0)
        x = out
    elif kind == "blur":
        x = TF.gaussian_blur(x, kernel_size=[5, 5], sigma=[p["sigma"], p["sigma"]])
    elif kind == "noise":
        x = x + torch.randn(x.shape, generator=g) * (p["std"] * 255.0)
    elif kind == "invert":
        x = 255.0 - x
    elif kind == "elastic":
        x = _elastic(x, p["alpha"], p["sigma"], g)
    return x.round().clamp(0, 255).to(torch.uint8)


def _elastic(x: torch.Tensor, alpha: float, sigma: float, g: torch.Generator) -> torch.Tensor:
    """Per-image elastic distortion: a uniform(−1, 1) displacement field, Gaussian-smoothed (σ pixels), scaled
    to ``alpha`` pixels, applied with bilinear resampling (zero fill)."""
    n, _, h, w = x.shape
    k = 2 * int(math.ceil(2 * sigma)) + 1
    d = torch.rand((n, 2, h, w), generator=g) * 2 - 1
    d = TF.gaussian_blur(d, kernel_size=[k, k], sigma=[sigma, sigma]) * alpha
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    gx = (xs[None] + d[:, 0]) / (w - 1) * 2 - 1
    gy = (ys[None] + d[:, 1]) / (h - 1) * 2 - 1
    return F.grid_sample(x, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="zeros", align_corners=True)


def ood_sets(test: Split, seed: int = 0, size: int = 0, kinds=None) -> dict[str, Split]:
    """Corrupted copies of ``test`` (its first ``size`` images when ``size`` > 0, taken class-balanced by a fixed
    stride through the split), one per corruption kind."""
    split = test
    if size and size < len(test):
        idx = np.linspace(0, len(test) - 1, size).round().astype(np.int64)
        split = Split(test.images[idx], test.labels[idx], test.indices[idx])
    out = {}
    for kind in kinds or CORRUPTIONS:
        out[kind] = Split(corrupt(split.images, kind, seed), split.labels, split.indices)
    return out


# ------------------------------------------------------------------------------------------- reference model
def _reference_key(cfg, data_meta: dict, iterations: int, seed: int) -> str:
    lr = cfg.learner
    fields = {k: getattr(lr, k) for k in ("model", "batch_size", "lr", "weight_decay", "warmup_frac", "decay_frac",
                                          "label_smoothing", "augment")}
    if not lr.hflip:  # in the key only when off, so references cached before the option existed keep their key
        fields["hflip"] = False
    if lr.warmup_iterations:  # likewise: a fixed warm-up changes the schedule
        fields["warmup_iterations"] = lr.warmup_iterations
    fields |= {"iterations": iterations, "seed": seed, "data": {"seed": data_meta.get("seed"),
                                                                "gen_train": data_meta.get("gen_train")}}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=list).encode()).hexdigest()[:12]


def obtain_reference(cfg, splits, device="cpu", iterations: int = 2000, cache_dir: str | Path = "cache/reference",
                     seed: int = 0, progress: bool = False):
    """The reference classifier for label fidelity: ``learner.model`` trained on the REAL generator-training
    split for ``iterations`` steps (EMA and mixup off), cached under ``cache_dir/<key>``. Returns (learner, info);
    ``info["val_acc"]`` is its accuracy on the real validation split."""
    from tqdm.auto import tqdm

    from .learning.learner import Learner

    lcfg = replace(cfg.learner, ema=False, mixup=0.0, cutmix=0.0, pretrained_path="", bf16=False)  # fixed instrument
    key = _reference_key(cfg, splits.meta, iterations, seed)
    path = Path(cache_dir) / key
    learner = Learner(lcfg, splits.num_classes, splits.gen_train.images.shape[1], iterations, device, seed=seed)
    meta_file = path / "reference.json"
    if meta_file.exists():
        learner.model.load_state_dict(load_file(path / "model.safetensors"))
        info = json.loads(meta_file.read_text()) | {"source": "cache", "path": str(path)}
        return learner, info
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed + 101)
    x, y = splits.gen_train.images, splits.gen_train.labels
    for _ in tqdm(range(iterations), desc="reference classifier (real data)", disable=not progress, leave=False):
        idx = torch.randint(0, len(y), (lcfg.batch_size,), generator=g)
        learner.step(x[idx], y[idx])
    seconds = time.perf_counter() - t0
    info = {"key": key, "iterations": iterations, "seed": seed, "model": lcfg.model, "train_seconds": round(seconds, 1),
            "val_acc": learner.accuracy(splits.val.images, splits.val.labels), "trained_on": "real gen_train split"}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in learner.model.state_dict().items()}, tmp / "model.safetensors")
    (tmp / "reference.json").write_text(json.dumps(info, indent=1))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return learner, info | {"source": "trained", "path": str(path)}


# ------------------------------------------------------------------------------------------ sample statistics
def label_fidelity(reference, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of generated ``images`` (uint8) whose reference-classifier prediction is their intended label."""
    if len(labels) == 0:
        return float("nan")
    return (reference.predict(images).argmax(-1) == labels.long()).float().mean().item()


def round_stats(pool, reference) -> list[dict]:
    """Per round of ``pool``: sample count, ω, label fidelity, mean entropy under the guiding classifier (the
    stored score; NaN where the round had none) and mean entropy under the reference classifier."""
    rounds = pool.column("round").astype(int)
    scores = pool.column("score").astype(float)
    omegas = pool.column("omega").astype(float)
    images, labels = pool.images, pool.labels
    logits = reference.predict(images)
    ent_ref = entropy(logits).numpy()
    agree = (logits.argmax(-1) == labels).numpy()
    out = []
    for r in np.unique(rounds):
        m = rounds == r
        s = scores[m]
        out.append({"round": int(r), "count": int(m.sum()), "omega": float(omegas[m][0]),
                    "label_fidelity": float(agree[m].mean()),
                    "entropy_guiding": float(np.nanmean(s)) if np.isfinite(s).any() else None,
                    "entropy_reference": float(ent_ref[m].mean())})
    return out


# ---------------------------------------------------------------------------------------- FID / KID
class ReferenceFeatures(torch.nn.Module):
    """The reference classifier's penultimate features of uint8 images: the real-data feature network of FID/KID
    here (an ImageNet Inception would need a download and does not know Fashion-MNIST; torchmetrics takes any
    module that has ``num_features``)."""

    def __init__(self, reference, image_shape: tuple[int, int, int]):
        super().__init__()
        self.reference = reference
        with torch.no_grad():
            self.num_features = int(self(torch.zeros(1, *image_shape, dtype=torch.uint8)).shape[-1])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from .learning.learner import to_float

        model = self.reference.eval_model
        was = model.training
        model.eval()
        pre, net = model[0], model[1]
        x = pre(to_float(images).to(self.reference.device))
        if hasattr(net, "forward_head"):  # timm models
            out = net.forward_head(net.forward_features(x), pre_logits=True)
        else:  # cnn_small: every layer before the final Dropout + Linear
            layers = list(net)
            while isinstance(layers[-1], (torch.nn.Linear, torch.nn.Dropout)):
                layers.pop()
            for layer in layers:
                x = layer(x)
            out = x
        model.train(was)
        return out.float().cpu()


def fid_kid(reference, real: torch.Tensor, fake: torch.Tensor, batch: int = 500, kid_subset: int = 500,
            seed: int = 0) -> dict:
    """FID and KID (×1000, mean ± std over subsets) of uint8 ``fake`` images against uint8 ``real`` ones, in the
    reference classifier's feature space (torchmetrics, offline)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    feats = ReferenceFeatures(reference, tuple(real.shape[1:]))
    fid = FrechetInceptionDistance(feature=feats)
    torch.manual_seed(seed)  # KID draws its subsets from torch's global RNG
    kid = KernelInceptionDistance(feature=feats, subset_size=min(kid_subset, len(real), len(fake)))
    for m in (fid, kid):
        for images, is_real in ((real, True), (fake, False)):
            for s in range(0, len(images), batch):
                m.update(images[s:s + batch], real=is_real)
    k_mean, k_std = kid.compute()
    return {"fid": round(float(fid.compute()), 3), "kid_x1000": round(float(k_mean) * 1000, 3),
            "kid_x1000_std": round(float(k_std) * 1000, 3), "real": len(real), "fake": len(fake),
            "features": feats.num_features}
