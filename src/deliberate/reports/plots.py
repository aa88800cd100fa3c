"""Plots people would rather look at than read: accuracy curves and sample grids."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

COLORS = {"dp": "C3", "static": "C0", "dynamic_unguided": "C2", "prune": "C1", "prune_random": "C4"}


def accuracy_by_pool(recs: list[dict]) -> tuple[list[int], list[float]]:
    """(pool size, validation accuracy at the last evaluation with that pool) for each pool size a method trained
    on, in order: a growing method's rounds (the accuracy it reached before each addition), one point for a fixed
    pool (its final validation accuracy)."""
    sizes, accs = [], []
    for r in recs:
        if sizes and sizes[-1] == r["pool"]:
            accs[-1] = r["val_acc"]
        else:
            sizes.append(r["pool"])
            accs.append(r["val_acc"])
    return sizes, accs


def accuracy_curves(stats: dict[str, list[dict]], summary: dict, out: Path) -> None:
    """Left: validation accuracy against iterations (additions as vertical lines). Right: accuracy against generated
    samples: per pool size, the validation accuracy at its last evaluation (:func:`accuracy_by_pool`: DP's rounds,
    static's single pool), the held-out test accuracy as a star at the final pool, and a dotted line at static's
    test accuracy to read DP's curve against."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, recs in stats.items():
        if not recs:
            continue
        c = COLORS.get(name)
        it = [r["iteration"] for r in recs]
        acc = [r["val_acc"] for r in recs]
        axes[0].plot(it, acc, label=f"{name} (val)", color=c)
        sizes, by_pool = accuracy_by_pool(recs)
        axes[1].plot(sizes, by_pool, "o-" if len(sizes) > 1 else "o", ms=4, color=c, alpha=0.8,
                     label=f"{name} (val, end of each pool size)")
        m = summary["methods"].get(name, {})
        if m.get("test_acc") is not None:
            axes[0].plot([it[-1]], [m["test_acc"]], "*", ms=12, color=c, label=f"{name} held-out test")
            axes[1].plot([sizes[-1]], [m["test_acc"]], "*", ms=12, color=c, label=f"{name} held-out test")
            if name == "static":
                axes[1].axhline(m["test_acc"], color=c, ls=":", lw=1)
        adds = [r["iteration"] for r in recs if r.get("added")]
        for a in adds:
            axes[0].axvline(a, color=c, alpha=0.15, lw=1)
    axes[0].set(xlabel="training iterations", ylabel="accuracy", title="accuracy vs iterations")
    axes[1].set(xlabel="generated samples in the pool", ylabel="accuracy", title="accuracy vs generated samples")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _show(ax, img: torch.Tensor) -> None:
    x = img.permute(1, 2, 0).numpy()
    ax.imshow(x.squeeze(-1) if x.shape[-1] == 1 else x, cmap="gray" if x.shape[-1] == 1 else None, vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])


def pair_grid(left: torch.Tensor, right: torch.Tensor, labels: torch.Tensor, notes: list[tuple[list[str], list[str]]],
              wrong: list[tuple[bool, bool]], class_names, out: Path, title: str = "",
              heads: tuple[str, str] = ("guided", "plain")) -> None:
    """Pairs (left | right) of uint8 images, one row per class, up to as many pairs per row as the fullest class
    has; under each image its lines of ``notes``, in red where ``wrong`` (e.g. a prediction other than the row's
    intended class)."""
    classes = sorted(set(labels.tolist()))
    per_row = max(int((labels == c).sum()) for c in classes)
    fig, axes = plt.subplots(len(classes), 2 * per_row, figsize=(1.15 * 2 * per_row, 1.45 * len(classes) + 0.5),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, c in enumerate(classes):
        idx = (labels == c).nonzero().flatten().tolist()
        for k, i in enumerate(idx):
            for side, img in enumerate((left[i], right[i])):
                ax = axes[row, 2 * k + side]
                ax.axis("on")
                _show(ax, img)
                for sp in ax.spines.values():
                    sp.set_color("C3" if side == 0 else "0.6")
                    sp.set_linewidth(1.5 if side == 0 else 0.8)
                ax.set_xlabel("\n".join(notes[i][side]), fontsize=6, labelpad=2,
                              color="red" if wrong[i][side] else "black")
                if row == 0:
                    ax.set_title(heads[side], fontsize=7)
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        axes[row, 0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
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
