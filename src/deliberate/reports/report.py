"""The short markdown report of a run: results table, plots, sample grids of each round."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.splits import CLASSES
from ..fileio import write_text
from ..practice.pool import Pool
from ..rundir import read_jsonl
from .plots import accuracy_curves, sample_grid


def _first_per_class(labels: torch.Tensor, sel: torch.Tensor, per_class: int) -> torch.Tensor:
    """Positions of the first ``per_class`` samples of each class among ``sel`` (all a grid shows)."""
    pos = sel.nonzero().reshape(-1)
    return torch.cat([pos[labels[pos] == c][:per_class] for c in labels[pos].unique()]).sort().values


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
        shown = _first_per_class(labels, sel, per_class)
        sample_grid(pool.lazy_images[shown], labels[shown], n_cls, per_class, path,
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
    write_text(run_dir / "report.md", "\n".join(lines) + "\n")


def report_run(run_dir: str | Path) -> Path:
    """``RUN_DIR/report.md`` of a finished run, from its ``summary.json``, logs and pools (read from disk)."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    pools = {m: Pool(run_dir / "methods" / m / "pool") for m in summary["methods"]}
    write_report(run_dir, summary, pools)
    return run_dir / "report.md"
