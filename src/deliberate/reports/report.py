"""The short markdown report of a run: what it shows (DP − static, explain.py), results table, accuracy against
iterations and against generated samples, DP's added samples beside their plain twins (twins.py), sample grids of
each round."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.splits import CLASSES
from ..fileio import write_text
from ..practice.pool import Pool
from ..rundir import read_jsonl
from .explain import explain_run
from .plots import accuracy_curves, pair_grid, sample_grid
from .twins import Twins, class_names, make_twins


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


def _pct(x) -> str:
    return f"{100 * float(x):.0f} %"


def twin_section(twins: Twins | None, run_dir: Path, plots: Path) -> list[str]:
    """The markdown of the added-vs-plain grid (drawn to ``plots/added_vs_plain.png``), or why there is none."""
    head = ["## What DP changed: added samples beside their plain twins", ""]
    if twins is None:
        return head + ["DP added no guided sample in this run.", ""]
    if not len(twins.labels):
        return head + [f"No plain twin of the {twins.missing} chosen guided samples is in this run's pools (static "
                       "did not run with DP's settings); `deliberate report RUN_DIR --sample-twins` samples them.", ""]
    names = class_names(run_dir)
    short = [n.split("/")[0] for n in names]
    lp = twins.readings["learner"]
    ref = twins.readings.get("reference")
    notes, wrong = [], []
    for i, y in enumerate(twins.labels.tolist()):
        pair_notes, pair_wrong = [], []
        for side in ("guided", "plain"):
            pred, h = lp[side][0][i].item(), lp[side][1][i].item()
            lines = [f"DP: {short[pred]} H={h:.2f}"]
            bad = pred != y
            if ref is not None:
                rp = ref[side][0][i].item()
                lines.append(f"ref: {short[rp]}")
                bad = bad or rp != y
            pair_notes.append(lines)
            pair_wrong.append(bad)
        notes.append(tuple(pair_notes))
        wrong.append(tuple(pair_wrong))
    rounds = sorted(set(twins.rounds))
    pair_grid(twins.guided, twins.plain, twins.labels, notes, wrong, names, plots / "added_vs_plain.png",
              title=f"DP's added samples (round{'s' if len(rounds) > 1 else ''} {', '.join(map(str, rounds))}) "
                    "beside their plain twins (same label and seed, ω = 0)")
    y = twins.labels
    h_g, h_p = lp["guided"][1].mean().item(), lp["plain"][1].mean().item()
    facts = [f"final DP learner's mean entropy {h_g:.2f} nats on the guided samples vs {h_p:.2f} on their twins, "
             f"on-label {_pct((lp['guided'][0] == y).float().mean())} vs {_pct((lp['plain'][0] == y).float().mean())}"]
    if ref is not None:
        info = twins.reference_info
        facts.append(f"reference classifier (real data, {info['iterations']} iterations, val "
                     f"{100 * info['val_acc']:.1f} %): on-label {_pct((ref['guided'][0] == y).float().mean())} guided "
                     f"vs {_pct((ref['plain'][0] == y).float().mean())} plain")
    else:
        facts.append("no reference classifier cached")
    where = sorted({f"{s[5:]}'s pool" if s.startswith("pool:") else "sampled again" for s in twins.sources})
    extra = []
    if twins.missing:
        extra.append(f"{twins.missing} chosen guided samples without a twin in the run's pools are not shown "
                     "(`deliberate report RUN_DIR --sample-twins` samples them)")
    if twins.replaced:
        extra.append(f"{twins.replaced} guided samples the label check replaced by their plain twin are not shown")
    return head + [
        "![added vs plain](plots/added_vs_plain.png)", "",
        "Each pair: a sample DP added, guided by its learner (left, red frame), and its plain twin (right): the same "
        "label and seed, ω = 0. Under each: the final DP learner's prediction and entropy H, and the reference "
        "classifier's label; red where one differs from the row's intended class.",
        "Look at what the guidance changed (shape, texture, ambiguity), whether the learner still finds the guided "
        "sample harder (higher H) and whether it stays on its label.", "",
        f"Over these {len(y)} pairs (twins from {', '.join(where)}): " + "; ".join(facts) + "."
        + ("" if not extra else " " + "; ".join(extra) + "."), ""]


def comparison_section(summary: dict) -> list[str]:
    block = summary.get("comparison") or {}
    if not block:
        return []
    lines = ["## What this run shows", "", "| | DP − baseline (test, points) | DP test | baseline test | DP samples | "
             "baseline samples |", "|---|---|---|---|---|---|"]
    for name, c in block.items():
        lines.append(f"| DP − {name} | {c['dp_minus_baseline_points']:+.2f} | {100 * c['dp_test_acc']:.2f} % | "
                     f"{100 * c['baseline_test_acc']:.2f} % | {c['dp_samples']:,} | {c['baseline_samples']:,} |")
    return lines + [""] + [c["meaning"] for c in block.values()] + [""]


def write_report(run_dir: Path, summary: dict, pools: dict, twins: Twins | None = None) -> None:
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    stats = {m: read_jsonl(run_dir / "methods" / m / "stats.jsonl") for m in summary["methods"]}
    accuracy_curves(stats, summary, plots / "accuracy.png")
    lines = [f"# Deliberate Practice run `{run_dir.name}`", "",
             f"Generator `{summary['generator']['generator_id']}` ({summary['generator']['source']}). "
             f"Wall-clock {summary['wall_seconds']:.0f} s.", "", *comparison_section(summary),
             "| method | held-out test acc | val acc (final / best) | generated samples | iterations | additions |"
             " triggers blocked | generation s | guided generation s | training s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in summary["methods"].items():
        s = m["seconds"]
        test = "not read" if m["test_acc"] is None else f"{m['test_acc']:.4f}"
        lines.append(f"| {name} | {test} | {m['val_acc']:.4f} / {m['best_val_acc']:.4f} | {m['samples']} "
                     f"| {m['iterations']} | {m['rounds']} | "
                     + (", ".join(f"{k} ×{v}" for k, v in m.get("blocked", {}).items()) or "–")
                     + f" | {s.get('generation', 0):.0f} | "
                     f"{s.get('guided_generation', 0):.0f} | {s.get('training', 0):.0f} |")
    lines += ["", "Held-out test accuracy is measured once, after every method finished; the validation split alone "
              "drove the patience trigger.", "", "![accuracy](plots/accuracy.png)", "",
              "Left: validation accuracy during training (faint vertical lines: DP's additions). Right: accuracy against "
              "generated samples: for each pool size, the validation accuracy at its last evaluation (DP's rounds are "
              "mid-training, before the learning-rate decay; static trains on one pool), stars the final held-out "
              "test accuracy, the dotted line static's.", ""]
    lines += twin_section(twins, run_dir, plots)
    for name, pool in pools.items():
        grids = round_grids(pool, plots, name)
        if grids:
            lines.append(f"## Samples: {name}")
            lines += [f"![{p.stem}](plots/{p.name})" for p in grids]
            lines.append("")
    write_text(run_dir / "report.md", "\n".join(lines) + "\n")


def report_run(run_dir: str | Path, sample_twins: bool = False, generator=None) -> Path:
    """``RUN_DIR/report.md`` of a finished run, from its ``summary.json`` (to which the ``comparison`` block is
    added: explain.py), logs and pools (read from disk). ``sample_twins``: plain twins no pool of the run holds are
    sampled (with ``generator``, or the run's, re-obtained from ``generator.json``)."""
    run_dir = Path(run_dir)
    explain_run(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    pools = {m: Pool(run_dir / "methods" / m / "pool") for m in summary["methods"]}
    twins = make_twins(run_dir, sample=sample_twins, generator=generator) if "dp" in summary["methods"] else None
    write_report(run_dir, summary, pools, twins)
    return run_dir / "report.md"
