"""The short markdown report of a run: results table, plots, sample grids of each round."""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.splits import CLASSES
from ..rundir import read_jsonl, write_atomic
from .plots import accuracy_curves, sample_grid


def round_grids(pool, out_dir: Path, method: str, per_class: int = 8) -> list[Path]:
    rounds = pool.column("round") if len(pool) else []
    paths = []
    labels = pool.labels
    for r in sorted(set(int(x) for x in rounds)):
        sel = torch.from_numpy(rounds == r)
        path = out_dir / f"samples_{method}_round{r:03d}.png"
        omega = pool.column("omega")[sel.numpy()][0]
        score = pool.column("score")[sel.numpy()]
        h = "" if torch.isnan(torch.tensor(score)).all() else f", mean entropy {float(torch.tensor(score).nanmean()):.3f}"
        n_cls = int(labels.max()) + 1
        sample_grid(pool.images[sel], labels[sel], n_cls, per_class, path,
                    title=f"{method} round {r} (ω={omega:g}, {int(sel.sum())} samples{h})",
                    class_names=CLASSES if n_cls == len(CLASSES) else None)
        paths.append(path)
    return paths


def write_report(run_dir: Path, summary: dict, pools: dict) -> None:
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    stats = {m: read_jsonl(run_dir / "methods" / m / "stats.jsonl") for m in summary["methods"]}
    accuracy_curves(stats, summary, plots / "accuracy.png")
    lines = [f"# Deliberate Practice run `{run_dir.name}`", "",
             f"Generator `{summary['generator']['generator_id']}` ({summary['generator']['source']}). "
             f"Wall-clock {summary['wall_seconds']:.0f} s.", "",
             "| method | held-out test acc | val acc (final / best) | generated samples | iterations | additions |"
             " triggers blocked | generation s | guided generation s | training s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in summary["methods"].items():
        s = m["seconds"]
        lines.append(f"| {name} | {m['test_acc']:.4f} | {m['val_acc']:.4f} / {m['best_val_acc']:.4f} | {m['samples']} "
                     f"| {m['iterations']} | {m['rounds']} | "
                     + (", ".join(f"{k} ×{v}" for k, v in m.get("blocked", {}).items()) or "–")
                     + f" | {s.get('generation', 0):.0f} | "
                     f"{s.get('guided_generation', 0):.0f} | {s.get('training', 0):.0f} |")
    lines += ["", "Held-out test accuracy is measured once, after every method finished; the validation split alone "
              "drove the patience trigger.", "", "![accuracy](plots/accuracy.png)", ""]
    for name, pool in pools.items():
        grids = round_grids(pool, plots, name)
        if grids:
            lines.append(f"## Samples: {name}")
            lines += [f"![{p.stem}](plots/{p.name})" for p in grids]
            lines.append("")
    write_atomic(run_dir / "report.md", "\n".join(lines) + "\n")
