"""Pretrained generators shipped with the package, as the paper takes a pretrained generator (LDM-1.5) and studies
the learner's loop.

A shipped generator is a filled cache entry: ``resources/generators/<key>/``, where ``key`` is the cache key of the
recipe and data it was trained on (pixel.generator_key), so a config whose generator and data settings are that
recipe gets it without training, and any other config trains as before. Its files' SHA-256 are listed here, in the
code, so that a missing or damaged file is an error naming it — never a silent retrain.

``generator.source=train`` trains instead (the cache, then training: the path of every config without a shipped
generator).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .base import GeneratorError

ROOT = Path(__file__).resolve().parents[1] / "resources" / "generators"

# key → what it is and the SHA-256 of each file. Reproduce with `deliberate train-generator` (default config).
SHIPPED = {
    "0d89fe10c08f": {
        "generator_id": "pixel_unet-144ec5d6149c",
        "recipe": "the default generator config (32/64/64, one layer per block, 1,200 steps at batch 64, seed 0) on "
                  "the default Fashion-MNIST generator-training split",
        "files": {
            "deliberate_generator.json": "04229366d48d2e03fa00b304ae9a0003180cf934996b2541c954129a387a47de",
            "scheduler/scheduler_config.json": "29c93cbdbc1424e86d8d13d22f8f91f9f70eeae93f0b60f35547061f01e69550",
            "unet/config.json": "ad7e43dc4d1a27d02d2055bba5090d5f13ad61fbdc63f1ebf0f9f3edf065ef8b",
            "unet/diffusion_pytorch_model.safetensors":
                "144ec5d6149c4858f7543a722ef38ffafaca132ba52b9fe4b73cabf3ff22f693",
        },
    },
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shipped_generator(key: str, root: Path = ROOT) -> Path | None:
    """The directory of the shipped generator of cache key ``key``, every file checked against its SHA-256; None
    when no generator of that key is shipped. A missing or damaged file raises :class:`GeneratorError` naming it and
    the two ways out."""
    entry = SHIPPED.get(key)
    if entry is None:
        return None
    d = Path(root) / key
    for rel, digest in entry["files"].items():
        p = d / rel
        what = "is missing" if not p.is_file() else "is damaged (its SHA-256 differs)" \
            if sha256_file(p) != digest else None
        if what:
            raise GeneratorError(f"the shipped generator file {p} {what}: restore it (`git checkout -- {p}` in a "
                                 f"clone) or train the generator instead with `deliberate run generator.source=train` "
                                 f"(about 6 minutes on 2 CPU cores)")
    return d
