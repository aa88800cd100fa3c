"""Generator quality per CPU-minute, and sampling solvers at fewer steps (issue: a generator worth guiding).

    python -m bench generator-quality generators [--variants a,b] [--samples 1000]
    python -m bench generator-quality solvers --generator NAME [--solvers ddim:25,dpmpp_2m:10]

``generators``: each variant (a set of ``generator.*`` overrides on the default config, see ``VARIANTS``) is
trained (or read from the generator cache, with the training seconds it recorded) and judged by
- label fidelity: the real-data reference classifier agrees with the intended label, at λ = 0 and the default λ;
- FID and KID against the real validation images, in the reference classifier's feature space (torchmetrics);
- static accuracy: ``learner.*`` defaults trained on its first ``--samples`` plain samples for ``--iterations``,
  one run per learner seed: validation accuracy (chooses), held-out test accuracy (read once, at the end).
``solvers``: the same measures for one generator under each ``solver:steps``, plus a guided check: a learner
trained on the plain samples guides ``--guided`` samples at ω (``guidance.*`` defaults) under each solver, and
the mean entropy of guided vs plain samples under that learner shows whether guidance still does what it should.

Writes ``bench/results/generator_quality.json`` (or ``solvers.json``), a markdown table and a plot. Run one job
at a time: the timings are CPU seconds of this machine.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from .core import RESULTS, STUDIES, setup

# name → generator overrides. "issue10" is the default generator as of the sampler fix (kept for reference).
VARIANTS = {
    "issue10": [],
    "fp32": ["generator.bf16=false"],
    "fp32-minsnr": ["generator.bf16=false", "generator.loss_weight=min_snr"],
    "fp32-v-minsnr": ["generator.bf16=false", "generator.loss_weight=min_snr", "generator.prediction=v_prediction"],
    "fp32-600": ["generator.bf16=false", "generator.train_steps=600"],
    "fp32-600-minsnr": ["generator.bf16=false", "generator.train_steps=600", "generator.loss_weight=min_snr"],
    "fp32-600-v-minsnr": ["generator.bf16=false", "generator.train_steps=600", "generator.loss_weight=min_snr",
                          "generator.prediction=v_prediction"],
    # bf16 (the default precision) at half the default steps: the candidates for a default job in <= 20 min
    "600-minsnr": ["generator.train_steps=600", "generator.loss_weight=min_snr"],
    "600-minsnr-lr3e-3": ["generator.train_steps=600", "generator.loss_weight=min_snr", "generator.lr=3e-3"],
    "600-v-minsnr-lr3e-3": ["generator.train_steps=600", "generator.loss_weight=min_snr", "generator.lr=3e-3",
                            "generator.prediction=v_prediction"],
}


def log(msg: str, t0=time.perf_counter()) -> None:
    print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)


def static_runs(images, labels, splits, cfg, seeds, iterations, device) -> list:
    """One learner per seed trained on (images, labels) alone, uniform mini-batches (static generation)."""
    from deliberate.learning.learner import Learner

    out = []
    for sd in seeds:
        torch.manual_seed(sd)
        lr = Learner(cfg.learner, splits.num_classes, images.shape[1], iterations, device, seed=sd)
        g = torch.Generator().manual_seed(sd + 7)
        for _ in range(iterations):
            idx = torch.randint(0, len(labels), (cfg.learner.batch_size,), generator=g)
            lr.step(images[idx], labels[idx])
        out.append(lr)
    return out


def judge(gen, cfg, splits, reference, args, device, solver="ddim", steps=None) -> tuple[dict, list]:
    """Fidelity, FID/KID and static validation accuracy of ``args.samples`` plain samples (label i mod C, seed i)."""
    from deliberate.evaluation import fid_kid, label_fidelity

    s = cfg.sampling
    steps = steps or s.steps
    n = args.samples
    labels = torch.arange(n) % splits.num_classes
    t0 = time.perf_counter()
    out = gen.sample(labels, list(range(n)), steps=steps, cfg_scale=s.cfg_scale, batch_size=s.batch_size,
                     solver=solver, progress=args.progress)
    per_image = (time.perf_counter() - t0) / n
    m = min(n, args.lambda0_samples)
    out0 = gen.sample(labels[:m], list(range(m)), steps=steps, cfg_scale=0.0, batch_size=s.batch_size,
                      solver=solver, progress=args.progress)
    row = {"label_fidelity": label_fidelity(reference, out.images, labels),
           "label_fidelity_lambda0": label_fidelity(reference, out0.images, labels[:m]),
           **fid_kid(reference, splits.val.images, out.images),
           "sample_seconds_per_image": round(per_image, 4), "steps": steps, "solver": solver,
           "cfg_scale": s.cfg_scale}
    learners = static_runs(out.images, labels, splits, cfg, args.seeds, args.iterations, device)
    row["val_acc"] = [lr.accuracy(splits.val.images, splits.val.labels) for lr in learners]
    row["images"] = out.images[:100]  # for the grid; dropped before writing
    return row, learners


def guided_check(gen, cfg, learner, solver, steps, args) -> dict:
    """Mean entropy (under ``learner``) and its fidelity of ``args.guided`` samples at ω vs plain, one solver."""
    from deliberate.generation.guidance import build_guide, entropy

    s = cfg.sampling
    n = args.guided
    labels = torch.arange(n) % gen.num_classes
    seeds = list(range(10_000, 10_000 + n))
    res = {}
    with learner.frozen() as clf:
        for name, omega in (("plain", 0.0), ("guided", cfg.guidance.omega)):
            guide = build_guide(clf, cfg.guidance, omega=omega)
            t0 = time.perf_counter()
            out = gen.sample(labels, seeds, steps=steps, cfg_scale=s.cfg_scale, guide=guide, batch_size=s.batch_size,
                             solver=solver, progress=args.progress)
            res[name] = {"entropy": float(entropy(learner.predict(out.images)).mean()),
                         "seconds_per_image": round((time.perf_counter() - t0) / n, 4)}
    res["omega"] = cfg.guidance.omega
    return res


@STUDIES.register("generator-quality")
def main(argv: list[str]) -> int:
    """Generator variants (or sampling solvers) judged by label fidelity, FID/KID and static accuracy."""
    ap = argparse.ArgumentParser(prog="python -m bench generator-quality", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["generators", "solvers"])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--generator", default="issue10", help="solvers: the variant whose generator is used")
    ap.add_argument("--solvers", default="ddim:25,ddim:10,dpmpp_2m:10,unipc:10")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--lambda0-samples", type=int, default=300)
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--guided", type=int, default=250)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides for every variant (e.g. sampling.batch_size=250)")
    args = ap.parse_intermixed_args(argv)
    args.seeds = [int(v) for v in args.seeds.split(",")]
    from deliberate.config import load_config
    from deliberate.job import obtain_generator

    base = load_config(None, list(args.overrides))
    su = setup(base, generator=False, reference=True, progress=args.progress)
    splits, device, reference, ref_info = su.splits, su.device, su.reference, su.ref_info
    log(f"reference classifier: val {ref_info['val_acc']:.4f} ({ref_info['source']})")
    rows, learners = {}, {}
    if args.what == "generators":
        # the sampler is the config's (sampling.solver / sampling.steps overrides); rows name it unless DDIM 25
        sc = load_config(None, list(args.overrides)).sampling
        tag = "" if (sc.solver, sc.steps) == ("ddim", 25) else f" @ {sc.solver}:{sc.steps}"
        todo = [(v + tag, VARIANTS[v], sc.solver, sc.steps) for v in args.variants.split(",")]
    else:
        todo = [(f"{sv}:{st}", VARIANTS[args.generator], sv, int(st))
                for sv, st in (x.split(":") for x in args.solvers.split(","))]
    for name, over, solver, steps in todo:
        cfg = load_config(None, list(args.overrides) + over)
        t0 = time.perf_counter()
        gen, info = obtain_generator(cfg, splits, device, args.progress)
        meta = json.loads((Path(info["path"]) / "deliberate_generator.json").read_text())
        log(f"{name}: generator {info['generator_id']} ({info['source']}, trained in {meta.get('train_seconds')} s)")
        row, lrs = judge(gen, cfg, splits, reference, args, device, solver, steps)
        row |= {"overrides": over, "generator_id": info["generator_id"],
                "train_seconds": meta.get("train_seconds"), "train_cpu_seconds": meta.get("train_cpu_seconds"),
                "train_steps": cfg.generator.train_steps,
                "bf16": cfg.generator.bf16}
        if args.what == "solvers":
            row["guided_check"] = guided_check(gen, cfg, lrs[0], solver, steps, args)
        rows[name], learners[name] = row, lrs
        log(f"  fidelity {row['label_fidelity']:.3f} (λ=0: {row['label_fidelity_lambda0']:.3f})  FID {row['fid']:.2f}  "
            f"KID×1000 {row['kid_x1000']:.2f}  val {np.mean(row['val_acc']):.4f}  "
            f"{row['sample_seconds_per_image'] * 1000:.0f} ms/image  ({time.perf_counter() - t0:.0f} s)")
    test = splits.test.read("generator_quality: final evaluation of every static learner")
    for name, lrs in learners.items():
        rows[name]["test_acc"] = [lr.accuracy(test.images, test.labels) for lr in lrs]
    grids = {k: r.pop("images") for k, r in rows.items()}
    res = {"command": "python -m bench generator-quality " + " ".join(argv),
           "what": args.what, "samples": args.samples, "iterations": args.iterations, "seeds": args.seeds,
           "reference": {k: ref_info[k] for k in ("key", "val_acc")}, "rows": rows,
           "test_reads": list(splits.test.read_log),
           "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                       "cpu_capability": torch.backends.cpu.get_cpu_capability()}}
    out = Path(args.out)
    stem = "generator_quality" if args.what == "generators" else "solvers"
    out.mkdir(parents=True, exist_ok=True)
    prev = json.loads((out / f"{stem}.json").read_text()) if (out / f"{stem}.json").exists() else None
    same = ("samples", "iterations", "seeds", "reference")
    if prev and all(prev.get(k) == res[k] for k in same):  # rows of earlier invocations with the same protocol stay
        res["rows"] = {**{k: v for k, v in prev["rows"].items() if k not in rows}, **rows}
        res["command"] = "; ".join(dict.fromkeys(prev["command"].split("; ") + [res["command"]]))
        res["test_reads"] = prev.get("test_reads", []) + res["test_reads"]
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    (out / f"{stem}.md").write_text(table(res))
    plot(res, grids, out / "plots" / f"{stem}.png")
    print(table(res))
    return 0


def table(res: dict) -> str:
    lines = [f"Measured by `{res['command']}`: {res['samples']} plain samples per row; static = `cnn_small` "
             f"{res['iterations']} iterations on them, seeds {res['seeds']}; label fidelity and FID/KID by the "
             f"real-data reference classifier (val {res['reference']['val_acc'] * 100:.1f} %).", "",
             "| variant | training min wall (CPU) | ms/image | fidelity % (λ) | fidelity % (λ=0) | FID | KID×1000 | static val % | "
             "static test % (mean ± std) |" + (" entropy plain → guided |" if res["what"] == "solvers" else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if res["what"] == "solvers" else "")]
    for name, r in res["rows"].items():
        t = np.array(r["test_acc"]) * 100
        mins = (f"{r['train_seconds'] / 60:.1f} ({r['train_cpu_seconds'] / 60:.1f})" if r.get("train_cpu_seconds")
                else f"{r['train_seconds'] / 60:.1f}" if r.get("train_seconds") else "?")
        line = (f"| {name} | {mins} | {r['sample_seconds_per_image'] * 1000:.0f} | {r['label_fidelity'] * 100:.1f} "
                f"({r['cfg_scale']:g}) | {r['label_fidelity_lambda0'] * 100:.1f} | {r['fid']:.2f} | "
                f"{r['kid_x1000']:.2f} ± {r['kid_x1000_std']:.2f} | {np.mean(r['val_acc']) * 100:.2f} | "
                f"{t.mean():.2f} ± {t.std(ddof=1) if len(t) > 1 else 0:.2f} |")
        if "guided_check" in r:
            g = r["guided_check"]
            line += f" {g['plain']['entropy']:.3f} → {g['guided']['entropy']:.3f} (ω={g['omega']:g}) |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def plot(res: dict, grids: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["rows"])
    shown = [n for n in names if n in grids]  # sample grids of this invocation's rows
    fig, axes = plt.subplots(1, 2 + len(shown), figsize=(7 + 2.2 * len(shown), 3.4),
                             gridspec_kw={"width_ratios": [3, 3] + [2] * len(shown)})
    xkey = "train_seconds" if res["what"] == "generators" else "sample_seconds_per_image"
    xlabel = "generator training (CPU s)" if res["what"] == "generators" else "sampling s / image"
    for name in names:
        r = res["rows"][name]
        x = (r.get("train_cpu_seconds") or r["train_seconds"] or 0) if xkey == "train_seconds" else r[xkey]
        axes[0].scatter(x, r["label_fidelity_lambda0"] * 100, label=name)
        axes[1].scatter(x, np.mean(r["test_acc"]) * 100, label=name)
    axes[0].set(xlabel=xlabel, ylabel="label fidelity % at λ = 0", title="on-label samples")
    axes[1].set(xlabel=xlabel, ylabel="static held-out test %", title=f"static on {res['samples']}")
    axes[1].legend(fontsize=7)
    for a in axes[:2]:
        a.grid(alpha=0.3)
    for a, name in zip(axes[2:], shown):
        g = grids[name][:64]
        g = torch.cat([g, torch.zeros(64 - len(g), *g.shape[1:], dtype=g.dtype)])
        tiles = g.view(8, 8, *g.shape[1:]).permute(2, 0, 3, 1, 4).reshape(g.shape[1], 8 * g.shape[2], 8 * g.shape[3])
        a.imshow(tiles[0].numpy(), cmap="gray")
        a.set_title(name, fontsize=8)
        a.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

