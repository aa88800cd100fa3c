"""Hardness criteria at matched strength: how far guidance raises the learner's entropy, and what it costs in labels.

    python -m bench criteria-sweep [--criteria entropy,entropy_onlabel,...] [--strengths 0.02,0.05,0.1] [overrides]

A guiding learner (``cnn_small``, the default learner config) is trained on ``--train-samples`` plain samples of the
default generator for ``--iterations`` (the state DP is in when it first adds). For every (criterion, ω) it guides
``--guided`` samples (labels i mod C, seeds from 10,000) with the config's scale, gradient and schedule, and reports
- the entropy gain: mean entropy of guided minus plain samples under the guiding learner (the effect asked for);
- label fidelity: the real-data reference classifier agrees with the intended label (the price);
- the mean intended-class probability under the guiding learner, and seconds per guided image.
Criteria are then compared at equal entropy gain, not equal ω (docs/guidance_scale.md). Validation and test
splits are not read. Writes ``bench/results/criteria_sweep.{json,md}`` and a plot.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .core import RESULTS, STUDIES, setup


# named variants: (criterion, guidance overrides) — the x̂0-range question of the issue (clip, or skip the noisiest
# steps) and the onlabel criterion with a probability floor
VARIANTS = {
    "entropy+clip": ("entropy", ["guidance.clip_x0=true"]),
    "entropy+skip30": ("entropy", ["guidance.window=[0.3,1.0]"]),
    "entropy_onlabel+floor0.5": ("entropy_onlabel", ["guidance.floor=0.5"]),
}


def fidelity_at_gain(rows: list[dict], gain: float) -> float | None:
    """Label fidelity at entropy gain ``gain``, linearly interpolated between a criterion's measured strengths
    (None where its rows do not bracket ``gain``): the comparison at equal effect."""
    pts = sorted((r["entropy_gain"], r["label_fidelity"]) for r in rows)
    for (g0, f0), (g1, f1) in zip(pts, pts[1:]):
        if g0 <= gain <= g1:
            return f0 if g1 == g0 else f0 + (f1 - f0) * (gain - g0) / (g1 - g0)
    return None


@STUDIES.register("criteria-sweep")
def main(argv: list[str]) -> int:
    """Hardness criteria at matched strength: the entropy gain guidance buys and the label fidelity it costs."""
    ap = argparse.ArgumentParser(prog="python -m bench criteria-sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criteria", default="entropy,entropy_onlabel,entropy_projected,loss_capped")
    ap.add_argument("--strengths", default="0.02,0.05,0.1")
    ap.add_argument("--train-samples", type=int, default=1000)
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--guided", type=int, default=200)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--gains", default="0.2,0.4", help="entropy gains at which criteria are compared")
    ap.add_argument("overrides", nargs="*", help="e.g. guidance.scale=paper guidance.grad=unet")
    args = ap.parse_intermixed_args(argv)
    from deliberate.config import load_config
    from deliberate.evaluation import label_fidelity
    from deliberate.generation.guidance import build_guide, entropy

    from .generator_quality import static_runs

    t0 = time.perf_counter()
    cfg = load_config(None, ["guidance.scale=paper"] + list(args.overrides))
    s = cfg.sampling
    su = setup(cfg, reference=True, progress=True)
    splits, gen, info, reference = su.splits, su.generator, su.gen_info, su.reference
    labels = torch.arange(args.train_samples) % splits.num_classes
    plain = gen.sample(labels, list(range(args.train_samples)), steps=s.steps, cfg_scale=s.cfg_scale,
                       batch_size=s.batch_size, solver=s.solver, progress=True)
    (learner,) = static_runs(plain.images, labels, splits, cfg, [0], args.iterations, su.device)
    n = args.guided
    glabels = torch.arange(n) % splits.num_classes
    seeds = list(range(10_000, 10_000 + n))

    def measure(criterion: str, omega: float) -> dict:
        crit, extra = VARIANTS.get(criterion, (criterion, []))
        gcfg = load_config(None, ["guidance.scale=paper"] + list(args.overrides)
                           + [f"guidance.criterion={crit}"] + extra).guidance
        with learner.frozen() as clf:
            guide = build_guide(clf, gcfg, omega=omega)
            t1 = time.perf_counter()
            out = gen.sample(glabels, seeds, steps=s.steps, cfg_scale=s.cfg_scale, guide=guide,
                             batch_size=s.batch_size, solver=s.solver)
            sec = (time.perf_counter() - t1) / n
        logits = learner.predict(out.images)
        return {"entropy": float(entropy(logits).mean()),
                "p_label": float(logits.softmax(-1)[torch.arange(n), glabels].mean()),
                "label_fidelity": label_fidelity(reference, out.images, glabels), "seconds_per_image": round(sec, 4),
                "nonfinite_grads": out.stats["nonfinite_grads"]}

    base = measure("entropy", 0.0)
    print(f"[{time.perf_counter() - t0:.0f}s] plain: entropy {base['entropy']:.3f} fidelity "
          f"{base['label_fidelity']:.3f}", flush=True)
    rows = {}
    for crit in args.criteria.split(","):
        for w in (float(v) for v in args.strengths.split(",")):
            r = measure(crit, w)
            r["entropy_gain"] = r["entropy"] - base["entropy"]
            rows[f"{crit}@{w:g}"] = {"criterion": crit, "omega": w, **r}
            print(f"[{time.perf_counter() - t0:.0f}s] {crit} ω={w:g}: entropy +{r['entropy_gain']:.3f} fidelity "
                  f"{r['label_fidelity']:.3f} p(y) {r['p_label']:.3f} {r['seconds_per_image'] * 1000:.0f} ms/image",
                  flush=True)
    res = {"command": "python -m bench criteria-sweep " + " ".join(argv),
           "generator": info["generator_id"], "guidance": {k: v for k, v in vars(cfg.guidance).items()
                                                           if k not in ("criterion", "omega")},
           "sampling": vars(s), "guiding_learner": {"train_samples": args.train_samples,
                                                    "iterations": args.iterations},
           "guided": n, "plain": base, "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"Measured by `{res['command']}` ({n} guided samples per row; plain: entropy {base['entropy']:.3f}, "
             f"fidelity {base['label_fidelity'] * 100:.1f} %).", "",
             "| criterion | ω | entropy gain (nats) | label fidelity % | p(intended) | ms/image |", "|---|---|---|---|---|---|"]
    for r in rows.values():
        lines.append(f"| {r['criterion']} | {r['omega']:g} | {r['entropy_gain']:+.3f} | "
                     f"{r['label_fidelity'] * 100:.1f} | {r['p_label']:.3f} | {r['seconds_per_image'] * 1000:.0f} |")
    gains = [float(v) for v in args.gains.split(",")]
    res["at_gain"] = {c: {f"{g:g}": fidelity_at_gain([base | {"entropy_gain": 0.0}]
                                                     + [r for r in rows.values() if r["criterion"] == c], g)
                          for g in gains} for c in dict.fromkeys(r["criterion"] for r in rows.values())}
    lines += ["", "Label fidelity % at equal entropy gain (interpolated between the strengths above; plain = gain 0; "
              "– where not bracketed):", "",
              "| criterion | " + " | ".join(f"gain +{g:g}" for g in gains) + " |", "|---|" + "---|" * len(gains)]
    for c, v in res["at_gain"].items():
        lines.append(f"| {c} | " + " | ".join("–" if v[f"{g:g}"] is None else f"{v[f'{g:g}'] * 100:.1f}"
                                              for g in gains) + " |")
    (out_dir / "criteria_sweep.json").write_text(json.dumps(res, indent=1, default=list))
    (out_dir / "criteria_sweep.md").write_text("\n".join(lines) + "\n")
    plot(res, out_dir / "plots" / "criteria_sweep.png")
    print("\n".join(lines))
    return 0


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for crit in dict.fromkeys(r["criterion"] for r in res["rows"].values()):
        rs = [r for r in res["rows"].values() if r["criterion"] == crit]
        ax.plot([0] + [r["entropy_gain"] for r in rs], [res["plain"]["label_fidelity"] * 100]
                + [r["label_fidelity"] * 100 for r in rs], "o-", label=crit)
    ax.set(xlabel="entropy gain under the guiding learner (nats)", ylabel="label fidelity % (reference)",
           title="hardness vs labels, at matched effect")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

