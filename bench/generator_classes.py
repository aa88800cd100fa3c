"""Per class: where a generator's plain samples land, and what static learns from them — why one generator is worse.

    python -m bench generator-classes RUN_DIR [RUN_DIR ...] [--method static] [--first N]
                                      [--out bench/results/generator_classes]

For each run directory (a ``deliberate run``) the pool of ``--method`` (static: plain samples only; ``--first N``:
its first N, the same prefix of the plain stream for every run) is classified by the real-data reference classifier
(``cache/reference``, as for every label-fidelity figure): per class the share on its label, the class the
off-label ones are taken for most, and improved precision / recall (Kynkäänniemi et al. 2019) against the real
validation images of the class in the reference classifier's penultimate features. The method's final learner
(``methods/<method>/model.safetensors``) is evaluated per class on the **validation** split; the held-out test split
is not read. Runs are grouped by generator (``generator.json``) and sampler settings (which fix the samples) and averaged over
the learner seeds of a group.
Writes ``<out>.json`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from .core import RESULTS, STUDIES, setup


def per_class(pred, labels, num_classes: int) -> dict:
    """On-label share per class and, for the off-label samples, the most frequent predicted class."""
    import torch

    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    conf.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    rows = conf.sum(1).clamp_min(1)
    off = conf.clone()
    off.fill_diagonal_(0)
    return {"on_label": (conf.diag() / rows).tolist(), "count": conf.sum(1).tolist(),
            "top_wrong": off.argmax(1).tolist(), "top_wrong_share": (off.max(1).values / rows).tolist()}


def features(learner, images):
    """Logits and the input of the learner's last linear layer (the penultimate features) for uint8 images, in one
    pass."""
    import torch

    last = [m for m in learner.eval_model.modules() if isinstance(m, torch.nn.Linear)][-1]
    grabbed = []
    hook = last.register_forward_pre_hook(lambda mod, args: grabbed.append(args[0].float()))
    try:
        with torch.no_grad():
            logits = learner.predict(images)
    finally:
        hook.remove()
    return logits, torch.cat(grabbed)


def knn_radii(x, k: int):
    import torch

    d = torch.cdist(x, x)
    return d.kthvalue(min(k + 1, len(x)), dim=1).values  # the k-th neighbour besides the point itself


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): the share of generated samples inside the real
    samples' k-NN balls, and of real samples inside the generated samples' k-NN balls (coverage of the real data)."""
    import torch

    if len(real) <= k or len(fake) <= k:
        return float("nan"), float("nan")
    d = torch.cdist(fake, real)
    precision = (d <= knn_radii(real, k)[None, :]).any(1).float().mean().item()
    recall = (d.T <= knn_radii(fake, k)[None, :]).any(1).float().mean().item()
    return precision, recall


def analyse(run_dirs: list[Path], method: str, first: int = 0) -> dict:
    import torch
    from safetensors.torch import load_file

    from deliberate.config import load_config
    from deliberate.learning.learner import Learner
    from deliberate.practice.pool import Pool

    reference, splits, val, f_real, out = None, None, None, None, defaultdict(list)
    for rd in run_dirs:
        cfg = load_config(rd / "config.yaml")
        if reference is None:  # the real-data reference classifier, on the first run's run.device
            su = setup(cfg, generator=False, reference=True)
            splits, reference = su.splits, su.reference
            val = splits.val  # validation only: the held-out test split is never read here
            f_real = features(reference, val.images)[1]  # the same for every run
        C = splits.num_classes
        pool = Pool(rd / "methods" / method / "pool")
        n = min(first, len(pool)) if first else len(pool)  # the same prefix of the plain stream for every run
        images, labels = pool.get(torch.arange(n))[0], pool.labels[:n]
        logits, f_fake = features(reference, images)
        samples = per_class(logits.argmax(-1), labels, C)
        pr = [precision_recall(f_real[val.labels == c], f_fake[labels == c]) for c in range(C)]
        samples |= {"precision": [p for p, _ in pr], "recall": [r for _, r in pr]}
        learner = Learner(cfg.learner, C, images.shape[1], cfg.practice.iterations, su.device,
                          seed=cfg.run.seed)
        learner.eval_model.load_state_dict(load_file(rd / "methods" / method / "model.safetensors"))
        val_pred = learner.predict(val.images).argmax(-1)
        gen = json.loads((rd / "generator.json").read_text())["generator_id"]
        sm = cfg.sampling  # the samples are fixed by (generator, label, seed, settings): one group per pair
        group = (gen, sm.solver, sm.steps, sm.cfg_scale, sm.eta, sm.seed_offset)
        out[group].append({"run": rd.name, "learner_seed": cfg.run.seed, "generator_seed": cfg.generator.seed,
                           "cfg_scale": sm.cfg_scale, "samples": len(labels), "plain_on_label": samples,
                           "val_per_class": per_class(val_pred, val.labels, C),
                           "val_acc": float((val_pred == val.labels).float().mean())})
    classes = list(splits.classes)
    gens = []
    for (gen, *_), runs in out.items():
        mean = lambda key, field: [sum(r[key][field][c] for r in runs) / len(runs) for c in range(C)]  # noqa: E731
        gens.append({"generator_id": gen, "generator_seed": runs[0]["generator_seed"], "cfg_scale": runs[0]["cfg_scale"],
                     "learner_seeds": [r["learner_seed"] for r in runs],
                     "plain_on_label": runs[0]["plain_on_label"],  # the same samples for every learner seed
                     "val_per_class": mean("val_per_class", "on_label"),
                     "val_acc": sum(r["val_acc"] for r in runs) / len(runs), "runs": runs})
    return {"classes": classes, "generators": gens}


def write(res: dict, out: Path, command: str) -> str:
    classes, gens = res["classes"], res["generators"]

    def pct(x):
        return f"{100 * x:.1f}"

    lines = [f"Made by `{command}`. Per generator: its plain samples (the method's pool) under the real-data reference "
             "classifier — the share on their label, the class the off-label ones are taken for most, and improved "
             "precision / recall (Kynkäänniemi et al. 2019, k = 3, in the reference classifier's penultimate features, "
             "against the real validation images of the class); then the static learner's accuracy per class on the "
             "real validation split (mean over learner seeds "
             + "; ".join(f"{g['generator_id']}: {', '.join(map(str, g['learner_seeds']))}" for g in gens)
             + "). The test split is not read.", ""]
    head = "| class | " + " | ".join(f"gen. seed {g['generator_seed']}, λ = {g['cfg_scale']:g}: on-label % "
                                     "(most off-label →) | precision % | "
                                     "recall % | static val %" for g in gens) + " |"
    lines += [head, "|---|" + "---|---|---|---|" * len(gens)]
    for c, name in enumerate(classes):
        cells = []
        for g in gens:
            s = g["plain_on_label"]
            wrong = (f" (→ {classes[s['top_wrong'][c]]} {pct(s['top_wrong_share'][c])})"
                     if s["top_wrong_share"][c] > 0 else "")
            cells.append(f"{pct(s['on_label'][c])}{wrong} | {pct(s['precision'][c])} | {pct(s['recall'][c])} | "
                         f"{pct(g['val_per_class'][c])}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for g in gens:
        s = g["plain_on_label"]
        n = sum(s["count"])
        mean = lambda key: sum(a * m for a, m in zip(s[key], s["count"])) / n  # noqa: E731
        cells.append(f"{pct(mean('on_label'))} | {pct(mean('precision'))} | {pct(mean('recall'))} | "
                     f"{100 * g['val_acc']:.2f}")
    lines.append("| all | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res | {"command": command}, indent=1))
    out.with_suffix(".md").write_text(text)
    return text


@STUDIES.register("generator-classes")
def main(argv: list[str]) -> int:
    """Per class: where a generator's plain samples land and what static learns from them (finished run dirs)."""
    ap = argparse.ArgumentParser(prog="python -m bench generator-classes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--method", default="static")
    ap.add_argument("--first", type=int, default=0, help="classify only the pool's first N samples (0: all), so "
                    "pools of different sizes are compared on the same prefix of the plain sample stream")
    ap.add_argument("--out", default=str(RESULTS / "generator_classes"))
    args = ap.parse_args(argv)
    dirs = [Path(p) for p in args.run_dirs]
    missing = [str(d) for d in dirs if not (d / "methods" / args.method / "model.safetensors").is_file()]
    if missing:
        raise SystemExit(f"no finished {args.method} run in: {', '.join(missing)}")
    res = analyse(dirs, args.method, args.first)
    print(write(res, Path(args.out), "python -m bench generator-classes " + " ".join(argv)))
    return 0

