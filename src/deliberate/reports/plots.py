"""Plots people would rather look at than read: accuracy curves and sample grids."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
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
    ticks: set[int] = set()
    for name, recs in stats.items():
        if not recs:
            continue
        c = COLORS.get(name)
        it = [r["iteration"] for r in recs]
        acc = [r["val_acc"] for r in recs]
        axes[0].plot(it, acc, label=f"{name} (val)", color=c)
        sizes, by_pool = accuracy_by_pool(recs)
        axes[1].plot(sizes, by_pool, "o-" if len(sizes) > 1 else "o", ms=4, color=c, alpha=0.8, label=name)
        ticks |= set(sizes)
        m = summary["methods"].get(name, {})
        if m.get("test_acc") is not None:
            axes[0].plot([it[-1]], [m["test_acc"]], "*", ms=12, color=c, label=f"{name} held-out test")
            axes[1].plot([sizes[-1]], [m["test_acc"]], "*", ms=12, color=c)
            if name == "static":
                axes[1].axhline(m["test_acc"], color=c, ls=":", lw=1)
        adds = [r["iteration"] for r in recs if r.get("added")]
        for a in adds:
            axes[0].axvline(a, color=c, alpha=0.15, lw=1)
    axes[0].set(xlabel="training iterations", ylabel="accuracy", title="accuracy vs iterations")
    axes[1].set(xlabel="generated samples in the pool (log scale)", ylabel="accuracy",
                title="accuracy vs generated samples")
    axes[1].set_xscale("log")
    if 0 < len(ticks) <= 12:  # the pool sizes themselves, as plain numbers
        axes[1].set_xticks(sorted(ticks), labels=[f"{t:,}" for t in sorted(ticks)], fontsize=8)
        axes[1].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    handles, _ = axes[1].get_legend_handles_labels()
    handles += [plt.Line2D([], [], ls="", marker="o", ms=4, color="0.4", label="val, end of each pool size"),
                plt.Line2D([], [], ls="", marker="*", ms=10, color="0.4", label="held-out test")]
    axes[1].legend(handles=handles, fontsize=8, loc="best")
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
    intended class). One canvas (a montage), not an axes per image: seconds fewer per report."""
    from matplotlib.patches import Rectangle

    classes = sorted(set(labels.tolist()))
    per_row = max(int((labels == c).sum()) for c in classes)
    ch, h, w = left.shape[1:]
    inner, outer, band = max(1, w // 14), w // 2, int(h * 0.5)  # gap in a pair, between pairs, text under a row
    cell_w, cell_h = 2 * w + inner + outer, h + band
    canvas = np.full((len(classes) * cell_h, per_row * cell_w, ch), 255, dtype=np.uint8)
    fig, ax = plt.subplots(figsize=(per_row * cell_w / w * 1.0 + 1.0, len(classes) * cell_h / h * 1.0 + 0.6))
    for row, c in enumerate(classes):
        y0 = row * cell_h
        for k, i in enumerate((labels == c).nonzero().flatten().tolist()):
            for side, img in enumerate((left[i], right[i])):
                x0 = k * cell_w + side * (w + inner)
                canvas[y0:y0 + h, x0:x0 + w] = img.permute(1, 2, 0).numpy()
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, lw=1.2 if side == 0 else 0.6,
                                       ec="C3" if side == 0 else "0.6"))
                ax.text(x0 + w / 2, y0 + h + 1, "\n".join(notes[i][side]), ha="center", va="top", fontsize=6,
                        color="red" if wrong[i][side] else "black")
                if row == 0:
                    ax.text(x0 + w / 2, -1.5, heads[side], ha="center", va="bottom", fontsize=7)
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        ax.text(-2, y0 + h / 2, name, ha="right", va="center", fontsize=8)
    ax.imshow(canvas.squeeze(-1) if ch == 1 else canvas, cmap="gray" if ch == 1 else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9, pad=14)
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
