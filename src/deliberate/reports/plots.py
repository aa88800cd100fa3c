"""Plots people would rather look at than read: accuracy curves and sample grids."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

COLORS = {"dp": "C3", "static": "C0", "dynamic_unguided": "C2", "prune": "C1", "prune_random": "C4"}


def accuracy_curves(stats: dict[str, list[dict]], summary: dict, out: Path) -> None:
    """Validation accuracy against iterations and against generated samples; held-out test accuracy as stars."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, recs in stats.items():
        if not recs:
            continue
        c = COLORS.get(name)
        it = [r["iteration"] for r in recs]
        acc = [r["val_acc"] for r in recs]
        pool = [r["pool"] for r in recs]
        axes[0].plot(it, acc, label=f"{name} (val)", color=c)
        axes[1].plot(pool, acc, ".-", label=f"{name} (val)", color=c, alpha=0.7)
        m = summary["methods"].get(name, {})
        if "test_acc" in m:
            axes[0].plot([it[-1]], [m["test_acc"]], "*", ms=12, color=c, label=f"{name} held-out test")
            axes[1].plot([pool[-1]], [m["test_acc"]], "*", ms=12, color=c)
        adds = [r["iteration"] for r in recs if r.get("added")]
        for a in adds:
            axes[0].axvline(a, color=c, alpha=0.15, lw=1)
    axes[0].set(xlabel="training iterations", ylabel="accuracy", title="accuracy vs iterations")
    axes[1].set(xlabel="generated samples in the pool", ylabel="accuracy", title="accuracy vs generated samples")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def sample_grid(images: torch.Tensor, labels: torch.Tensor, num_classes: int, per_class: int, out: Path,
                title: str = "", class_names=None) -> None:
    """A grid with one row per class (first ``per_class`` samples of each)."""
    rows = []
    for c in range(num_classes):
        sel = images[labels == c][:per_class]
        if len(sel) < per_class:
            sel = torch.cat([sel, torch.zeros((per_class - len(sel), *images.shape[1:]), dtype=images.dtype)])
        rows.append(sel)
    grid = torch.stack(rows)  # C, K, ch, H, W
    c_, k, ch, h, w = grid.shape
    img = grid.permute(0, 3, 1, 4, 2).reshape(c_ * h, k * w, ch).numpy()
    fig, ax = plt.subplots(figsize=(max(3, k * 0.45), max(3, c_ * 0.45) + 0.4))
    ax.imshow(img.squeeze(-1) if ch == 1 else img, cmap="gray" if ch == 1 else None, vmin=0, vmax=255)
    ax.set_xticks([])
    if class_names:
        ax.set_yticks(np.arange(c_) * h + h / 2, labels=list(class_names), fontsize=7)
    else:
        ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
