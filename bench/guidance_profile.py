"""Where the time of a guided image goes, and what each cheaper gradient path gives up.

    python -m bench guidance-profile [--batch B] [--reps 3] [--cosine-batch 100] [--out FILE] [key=value ...]

The config's generator and sampler (by default the shipped pixel generator, DPM-Solver++ 2M, 10 steps,
classifier-free λ = 2 (Eq. 5), bf16 autocast, ``guidance.scale=paper``) guided by the config's learner (``cnn_small``)
trained like the loop's first phase: ``--learner-iterations`` steps on the first ``--initial`` plain samples of a
pool. The images are those the loop's first guided round adds (pool index i ≥ ``--initial``: label i mod C, seed
``sampling.seed_offset`` + i) in one index-aligned call of B = ``sampling.batch_size`` slots, as the loop calls.

1. **Cost per image**, plain and under each guidance path a config option selects (``guidance.grad``,
   ``guidance.every``, ``guidance.window``; and ``generator.bf16`` off, plain and guided), timed round robin in this
   process (median of ``--reps``): ratios to the plain image of the same run, so that a concurrent load cancels,
   of CPU seconds (this process, all threads: what such a load changes least) and of wall-clock seconds.
   Each variant's effect at the config's ω: mean entropy gain (Eq. 6, guiding learner) over the plain images of
   the same seeds, and label fidelity under the real-data reference classifier. A variant's images must be the
   same bytes in every repetition (checked).
2. **Breakdown**: torch.profiler over plain and guided calls (median of ``--profile-reps``), read by the scopes of
   generation/ddim.py (UNet forward of guided and of plain steps, classifier forward and backward to x̂0, UNet
   backward to x_t, step update, solver step; the rest of a call is x_T, the uint8 conversion and the final score),
   with how often each ran, and by operator (convolution, normalisation, activations, copies and dtype casts,
   other; forward and backward, self time).
3. **Gradient agreement**: along the default guided trajectory of ``--cosine-batch`` images, at every solver step,
   the cosine per image of each path's ∇_{x_t} to the exact fp32 one (generator autocast off), and each path's
   CPU seconds at that step beside one plain ε. Paths: the default (UNet and its backward under bf16 autocast, the
   classifier in fp32), the classifier under bf16 autocast too, ``guidance.grad=x0``, and two that are not options
   because they change the arithmetic: the unconditional branch of Eq. 5 held fixed ("cond only": a forward of the
   conditional branch with a graph, of the unconditional one without, one backward; gradient through (1+λ)·J_c)
   and J_c standing for the whole combination ("cond for CFG": read off the branch-wise backward of the exact
   gradient). Under ``scale=paper`` a step is ω·‖x_t‖·g/‖g‖: the direction is all of g that counts.

Writes ``bench/results/guidance_profile.json`` and ``.md`` beside it (``--out``).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

from .core import RESULTS, ROOT, STUDIES, machine, setup, stamp, write_result

# timed variants: name → (guidance overrides or None for plain, generator bf16 autocast)
VARIANTS = {
    "plain": (None, True),
    "guided: every step, UNet gradient (default)": ([], True),
    "guided: grad=x0": (["guidance.grad=x0"], True),
    "guided: every=3": (["guidance.every=3"], True),
    "guided: window=[0,0.5] (early)": (["guidance.window=[0.0,0.5]"], True),
    "guided: window=[0.5,1] (late)": (["guidance.window=[0.5,1.0]"], True),
    "plain, fp32": (None, False),
    "guided: every step, UNet gradient, fp32": ([], False),
}
SCOPES = {"guidance: unet forward": "UNet forward, guided steps (cond + uncond, with graph)",
          "plain: unet forward": "UNet forward, unguided steps (cond + uncond)",
          "guidance: criterion forward": "x̂0 and classifier forward",
          "guidance: criterion backward": "classifier backward (to x̂0)",
          "guidance: unet backward": "UNet backward (to x_t, cond + uncond)",
          "guidance: step update": "guidance update (rescale, ‖x_t‖, move x_t)",
          "solver step": "solver step (DPM-Solver++ 2M)"}
OPS = {"convolution": ("convolution", "addmm", "aten::mm", "linear"), "normalisation": ("norm",),
       "activations": ("silu", "relu", "threshold", "clamp_min"), "copies and dtype casts": ("copy_", "_to_copy",
                                                                                          "clone", "contiguous")}


@contextlib.contextmanager
def generator_bf16(gen, on: bool):
    """The pixel generator's autocast (read at every model call) set to ``on`` for the block."""
    old, gen.bf16 = gen.bf16, on
    try:
        yield
    finally:
        gen.bf16 = old


def cosines(a, b) -> list[float]:
    """Cosine per sample of two batches of gradients (flattened per sample)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)).tolist()


def summary(values: list[float]) -> dict | None:
    """Mean, minimum and 5th percentile (None for no values)."""
    if not values:
        return None
    v = sorted(values)
    return {"mean": round(statistics.fmean(v), 5), "min": round(v[0], 5), "p05": round(v[int(0.05 * (len(v) - 1))], 5)}


def op_category(name: str) -> str:
    """The operator table's row of a profiler key: a kind (OPS, else other) and forward or backward."""
    kind = next((k for k, parts in OPS.items() if any(p in name for p in parts)), "other")
    return f"{kind} ({'backward' if 'backward' in name.lower() else 'forward'})"


def read_profile(prof, images: int) -> dict:
    """Milliseconds per image: each ddim.py scope (inclusive) and each operator category (self time); the number of
    times each scope ran."""
    scopes, counts, ops = {k: 0.0 for k in SCOPES}, {k: 0 for k in SCOPES}, {}
    for e in prof.key_averages():
        if e.key in scopes:
            scopes[e.key] += e.cpu_time_total / 1e3 / images
            counts[e.key] += e.count
        elif e.key.startswith("aten::") or "Backward" in e.key:
            c = op_category(e.key)
            ops[c] = ops.get(c, 0.0) + e.self_cpu_time_total / 1e3 / images
    return {"scopes": scopes, "counts": counts, "ops": ops}


def branch_parts(gen, labels, lam: float, x, t, a, criterion):
    """The exact gradient split by path (pixel generator, ε-prediction): ∇ through the direct x_t of Eq. 4, through
    the conditional branch, through the unconditional one; their sum is ``guidance_gradient``'s (up to the order
    of the sums). The same batched forward as ``eps_fn`` (one call on cond and uncond), each half its own leaf."""
    import torch

    from deliberate.generation.base import autocast

    null = torch.full_like(labels, gen.num_classes)
    xd, xc, xu = (x.detach().requires_grad_(True) for _ in range(3))
    with torch.enable_grad():
        with autocast(gen.device, gen.bf16):
            both = gen.unet(torch.cat([xc, xu]), t, class_labels=torch.cat([labels, null])).sample.float()
        cond, uncond = both.chunk(2)
        eps = (1 + lam) * cond - lam * uncond
        x0 = (xd - (1 - a).sqrt() * eps) / a.sqrt()
        return torch.autograd.grad(criterion(x0, labels).sum(), (xd, xc, xu))


def cond_only_gradient(gen, labels, lam: float, x, t, a, criterion):
    """∇_{x_t} with the unconditional ε held fixed: the conditional branch forward with a graph, the unconditional
    one without, one backward of B (the exact path runs 2B both ways)."""
    import torch

    from deliberate.generation.base import autocast

    xi = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with autocast(gen.device, gen.bf16):
            cond = gen.unet(xi, t, class_labels=labels).sample.float()
            with torch.no_grad():
                uncond = gen.unet(x, t, class_labels=torch.full_like(labels, gen.num_classes)).sample.float()
        x0 = (xi - (1 - a).sqrt() * ((1 + lam) * cond - lam * uncond)) / a.sqrt()
        (g,) = torch.autograd.grad(criterion(x0, labels).sum(), xi)
    return g


def train_guide_learner(su, cfg, initial: int, iterations: int):
    """The config's learner after ``iterations`` steps on the first ``initial`` plain samples of a pool (uniform
    mini-batches with the learner's augmentation, seed 0): the classifier of the loop's first guided round."""
    import torch

    from deliberate.generation.base import sampling_kwargs
    from deliberate.learning.learner import Learner

    C = su.splits.num_classes
    labels = torch.arange(initial) % C
    seeds = [cfg.sampling.seed_offset + i for i in range(initial)]
    images = su.generator.sample(labels, seeds, **sampling_kwargs(cfg.sampling)).images
    ln = Learner(cfg.learner, C, su.generator.image_shape[0], cfg.practice.iterations, su.device, seed=0)
    g = torch.Generator().manual_seed(0)
    for _ in range(iterations):
        idx = torch.randint(0, initial, (cfg.learner.batch_size,), generator=g)
        ln.step(images[idx], labels[idx])
    return ln


def portable(info: dict) -> dict:
    """``info`` with its ``path`` relative to the repository when it lies inside it (the shipped generator), else
    its last part: a result file names no machine's directories."""
    path = Path(info.get("path", ""))
    if "path" in info:
        info = info | {"path": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name}
    return info


def timed(fn):
    """(wall seconds, result) of ``fn()``."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def timed_cpu(fn):
    """(wall seconds, CPU seconds of this process, all threads, result) of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def cost_section(su, cfg, overrides: list[str], clf, reference, labels, seeds, reps: int) -> tuple[dict, dict]:
    """Seconds per image of every variant (its guidance overrides after the study's ``overrides``), round robin
    (median of ``reps``), with its effect at the config's ω; and each variant's first output."""
    import torch

    from deliberate.config import load_config
    from deliberate.evaluation import label_fidelity
    from deliberate.generation.base import sampling_kwargs, score_in_chunks
    from deliberate.generation.guidance import build_guide

    gen, kw, n = su.generator, sampling_kwargs(cfg.sampling), len(labels)
    guides = {k: None if ov is None else build_guide(clf, load_config(None, [*overrides, *ov]).guidance)
              for k, (ov, _) in VARIANTS.items()}
    times, cpu, outs = {k: [] for k in VARIANTS}, {k: [] for k in VARIANTS}, {}
    for r in range(reps):
        for k, (_, bf16) in VARIANTS.items():
            with generator_bf16(gen, bf16):
                s, c, out = timed_cpu(lambda: gen.sample(labels, seeds, guide=guides[k], **kw))
            times[k].append(s / n)
            cpu[k].append(c / n)
            if k in outs and not torch.equal(outs[k].images, out.images):
                raise RuntimeError(f"{k}: repetition {r} made other bytes than the first")
            outs.setdefault(k, out)
            print(f"  rep {r}: {k}: {s:.1f} s, {c:.1f} CPU s", flush=True)
    crit = guides["guided: every step, UNet gradient (default)"].criterion
    res = {}
    for k, (ov, bf16) in VARIANTS.items():
        o, plain = outs[k], outs["plain" if bf16 else "plain, fp32"]
        h = score_in_chunks(crit, o.images, labels, seeds, kw["batch_size"], su.device) if ov is None else o.score
        h_plain = score_in_chunks(crit, plain.images, labels, seeds, kw["batch_size"], su.device)
        res[k] = {"overrides": ov or [], "generator_bf16": bf16, "guided_steps": o.stats["guided_steps"],
                  "cpu_seconds_per_image": round(statistics.median(cpu[k]), 5),
                  "cpu_seconds_all": [round(t, 5) for t in cpu[k]],
                  "seconds_per_image": round(statistics.median(times[k]), 5),
                  "seconds_all": [round(t, 5) for t in times[k]],
                  "entropy": round(float(h.mean()), 4), "entropy_gain": round(float((h - h_plain).mean()), 4),
                  "label_fidelity": round(label_fidelity(reference, o.images, labels), 4),
                  "nonfinite_grads": o.stats["nonfinite_grads"]}
    for k, v in res.items():  # ratios of CPU time (what a concurrent load changes least) and of wall time
        v["ratio_to_plain"] = round(v["cpu_seconds_per_image"] / res["plain"]["cpu_seconds_per_image"], 3)
        v["wall_ratio_to_plain"] = round(v["seconds_per_image"] / res["plain"]["seconds_per_image"], 3)
    fp = "guided: every step, UNet gradient, fp32"
    res[fp]["ratio_to_plain_fp32"] = round(res[fp]["cpu_seconds_per_image"]
                                           / res["plain, fp32"]["cpu_seconds_per_image"], 3)
    return res, outs


def breakdown_section(su, cfg, guide, labels, seeds, reps: int) -> dict:
    """ms per image of each part of a plain and a guided call (profiler scopes, median over ``reps``), how often
    each part ran per call, and the operator categories."""
    from torch.profiler import ProfilerActivity, profile

    from deliberate.generation.base import sampling_kwargs

    gen, kw, n = su.generator, sampling_kwargs(cfg.sampling), len(labels)
    runs = {"plain": [], "guided": []}
    for _ in range(reps):
        for k, g in (("plain", None), ("guided", guide)):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                s, c, _ = timed_cpu(lambda: gen.sample(labels, seeds, guide=g, **kw))
            runs[k].append(read_profile(prof, n) | {"total": s * 1e3 / n, "cpu": c * 1e3 / n})
    res = {}
    for k, rs in runs.items():
        scopes = {s: statistics.median(r["scopes"][s] for r in rs) for s in SCOPES}
        total = statistics.median(r["total"] for r in rs)
        scopes["other (x_T, uint8, final score, set-up)"] = total - sum(scopes.values())
        res[k] = {"total": round(total, 4), "cpu": round(statistics.median(r["cpu"] for r in rs), 4),
                  "parts": {s: round(v, 4) for s, v in scopes.items()},
                  "shares": {s: round(v / total, 4) for s, v in scopes.items()},
                  "calls": {s: rs[0]["counts"][s] for s in SCOPES},
                  "ops": {c: round(statistics.median(r["ops"].get(c, 0.0) for r in rs), 4) for c in
                          sorted({c for r in rs for c in r["ops"]})}}
    res["profiled_ratio"] = round(res["guided"]["total"] / res["plain"]["total"], 3)
    res["profiled_cpu_ratio"] = round(res["guided"]["cpu"] / res["plain"]["cpu"], 3)
    g = res["guided"]
    ub = "guidance: unet backward"
    if g["calls"][ub]:  # one UNet backward, as a share of a guided image
        res["one_unet_backward_share"] = round(g["parts"][ub] / g["calls"][ub] / g["total"], 4)
    return res


def gradient_section(su, cfg, guide, labels, seeds) -> dict:
    """Per solver step of the default guided trajectory: cosine of each path to the exact fp32 gradient, and each
    path's seconds beside one plain ε at that step."""
    import torch

    from deliberate.generation.base import autocast, per_sample_noise
    from deliberate.generation.ddim import guidance_gradient, guided_ddim, make_solver

    gen, s = su.generator, cfg.sampling
    lam, dev = s.cfg_scale, su.device
    labels = labels.to(dev)
    eps_fn = gen.eps_fn(labels, lam)
    visited = []

    def recording(x, t):  # every step calls ε once, at x_t before the step's guidance
        visited.append((x.detach().clone(), t))
        return eps_fn(x, t)

    x, _ = per_sample_noise(seeds, gen.image_shape, dev)
    guided_ddim(recording, gen.scheduler, x, s.steps, guide, solver=s.solver, labels=labels)
    acp = make_solver(gen.scheduler, s.solver).alphas_cumprod.to(dev)

    def clf_bf16(img, y=None):
        with autocast(dev, True):
            return guide.criterion(img, y)

    branches = lam > 0 and getattr(gen, "prediction", "") == "epsilon" and hasattr(gen, "unet")
    paths = {"default (bf16 UNet, fp32 classifier)": lambda x_, t_, a_: guidance_gradient(eps_fn, x_, t_, a_, guide,
                                                                                         labels)[0],
             "bf16 classifier too": lambda x_, t_, a_: guidance_gradient(
                 eps_fn, x_, t_, a_, dataclasses.replace(guide, criterion=clf_bf16), labels)[0],
             "grad=x0": lambda x_, t_, a_: guidance_gradient(eps_fn, x_, t_, a_, dataclasses.replace(guide, grad="x0"),
                                                             labels)[0]}
    if branches:
        paths["cond only (not an option)"] = lambda x_, t_, a_: cond_only_gradient(gen, labels, lam, x_, t_, a_,
                                                                                   guide.criterion)
    rows = []
    for i, (x_t, t) in enumerate(visited):
        a = acp[t].float()
        _, plain_s, _ = timed_cpu(lambda: torch.no_grad()(eps_fn)(x_t, t))
        with generator_bf16(gen, False):
            _, ref_s, ref = timed_cpu(lambda: guidance_gradient(eps_fn, x_t, t, a, guide, labels)[0])
        live = ref.flatten(1).ne(0).any(1)  # a zero gradient (saturated classifier) has no direction
        row = {"step": i, "t": int(t), "plain_eps_cpu_seconds": round(plain_s, 4), "cosine": {},
               "cpu_seconds": {"fp32 (reference)": round(ref_s, 4)},
               "zero_reference_gradient_share": round(1 - float(live.float().mean()), 4)}
        grads = {}
        for name, fn in paths.items():
            _, sec, grads[name] = timed_cpu(lambda: fn(x_t, t, a))
            row["cosine"][name] = summary(cosines(grads[name][live], ref[live]))
            row["cpu_seconds"][name] = round(sec, 4)
        row["zero_default_gradient_share"] = round(  # all of them: the sampler skips the UNet backward
            1 - float(grads["default (bf16 UNet, fp32 classifier)"].flatten(1).ne(0).any(1).float().mean()), 4)
        if branches:  # the branch-wise parts of the default's gradient: their sum must be it
            gd, gc, gu = branch_parts(gen, labels, lam, x_t, t, a, guide.criterion)
            default = grads["default (bf16 UNet, fp32 classifier)"]
            scale = default.abs().max()
            row["branch_sum_vs_default_max_rel"] = float((gd + gc + gu - default).abs().max() / scale) if scale else 0.0
            row["cosine"]["cond for CFG (not an option)"] = summary(cosines((gd + gc / (1 + lam))[live], ref[live]))
        rows.append(row)
        print(f"  step {i}: zero reference {row['zero_reference_gradient_share']:.2f}; " + ", ".join(
            f"{k} {v['mean']:.4f}" for k, v in row["cosine"].items() if v), flush=True)
    names = list(rows[0]["cpu_seconds"])
    over = {}
    for k in rows[0]["cosine"]:
        steps = [r["cosine"][k] for r in rows if r["cosine"][k]]
        over[k] = {"cosine_mean_over_steps": round(statistics.fmean(c["mean"] for c in steps), 5),
                   "cosine_min_over_steps": round(min(c["min"] for c in steps), 5), "steps": len(steps)}
    for k in names:
        over.setdefault(k, {})["step_cpu_over_plain_eps"] = round(statistics.median(
            r["cpu_seconds"][k] / r["plain_eps_cpu_seconds"] for r in rows), 3)
    return {"images": len(seeds), "per_step": rows, "summary": over}


@STUDIES.register("guidance-profile")
def main(argv: list[str]) -> int:
    """Where a guided image's time goes (profile), cost per guidance path, gradient cosines to fp32."""
    p = argparse.ArgumentParser(prog="python -m bench guidance-profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=0, help="slots of the sampling call (default: sampling.batch_size)")
    p.add_argument("--reps", type=int, default=3, help="round-robin repetitions of the cost measurement")
    p.add_argument("--profile-reps", type=int, default=2, help="profiled plain and guided calls (median)")
    p.add_argument("--cosine-batch", type=int, default=100, help="images of the gradient-agreement trajectory")
    p.add_argument("--initial", type=int, default=1000, help="plain samples the guiding learner trains on")
    p.add_argument("--learner-iterations", type=int, default=500, help="training steps of the guiding learner")
    p.add_argument("--out", default=str(RESULTS / "guidance_profile.json"))
    p.add_argument("--render", action="store_true", help="only write the .md again from the JSON at --out")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    if args.render:
        out = Path(args.out)
        if not out.is_file():
            print(f"error: no result file {out} to render (run the study first)", file=sys.stderr)
            return 2
        out.with_suffix(".md").write_text(markdown(json.loads(out.read_text())))
        return 0
    import torch

    from deliberate.config import ConfigError, load_config
    from deliberate.generation.guidance import build_guide

    try:
        cfg = load_config(None, args.overrides + ([f"sampling.batch_size={args.batch}"] if args.batch else []))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    su = setup(cfg, generator=True, reference=True)
    B, C = cfg.sampling.batch_size, su.splits.num_classes
    print(f"generator {su.gen_info['generator_id']} ({su.gen_info['source']}); training the guiding learner",
          flush=True)
    ln = train_guide_learner(su, cfg, args.initial, args.learner_iterations)
    val_acc = ln.accuracy(su.splits.val.images, su.splits.val.labels)
    idx = torch.arange(args.initial, args.initial + B)
    labels, seeds = idx % C, [cfg.sampling.seed_offset + int(i) for i in idx]
    with ln.frozen() as clf:
        guide = build_guide(clf, cfg.guidance)
        print("cost per image", flush=True)
        cost, outs = cost_section(su, cfg, args.overrides, clf, su.reference, labels, seeds, args.reps)
        print("breakdown", flush=True)
        brk = breakdown_section(su, cfg, guide, labels, seeds, args.profile_reps)
        print("gradient agreement", flush=True)
        nc = min(args.cosine_batch, B)
        grads = gradient_section(su, cfg, guide, labels[:nc], seeds[:nc])
    res = {"generator": portable(su.gen_info), "reference": {k: su.ref_info.get(k) for k in ("key", "val_acc", "iterations")},
           "sampling": {k: getattr(cfg.sampling, k) for k in ("solver", "steps", "cfg_scale", "batch_size")},
           "guidance": {k: getattr(cfg.guidance, k) for k in ("criterion", "omega", "scale", "grad", "every")}
           | {"window": list(cfg.guidance.window)},
           "guiding_learner": {"model": cfg.learner.model, "initial_samples": args.initial,
                               "iterations": args.learner_iterations, "val_acc": round(val_acc, 4)},
           "images": {"labels": "i mod C", "seeds": [seeds[0], seeds[-1]], "per_call": B},
           "cost": cost, "breakdown": brk, "gradients": grads, "threads": torch.get_num_threads(),
           "seconds": round(time.perf_counter() - t0, 1), "machine": machine(), "written": stamp(),
           "command": "python -m bench guidance-profile " + " ".join(argv)}
    out = Path(args.out)
    write_result(out, res)
    out.with_suffix(".md").write_text(markdown(res))
    d = cost["guided: every step, UNet gradient (default)"]
    print(f"guided/plain {d['ratio_to_plain']:.2f}× (profiled {brk['profiled_ratio']:.2f}×) → {out}")
    return 0


PATHS = ("default (bf16 UNet, fp32 classifier)", "bf16 classifier too", "grad=x0", "cond only (not an option)",
         "cond for CFG (not an option)", "fp32 (reference)")


def ordered(keys) -> list[str]:
    """Gradient paths in the order of PATHS (a JSON file has them sorted)."""
    return sorted(keys, key=lambda k: PATHS.index(k) if k in PATHS else len(PATHS))


def markdown(r: dict) -> str:
    """The result file as tables."""
    s, g = r["sampling"], r["guidance"]
    L = [f"# Guided-image cost: profile and gradient paths ({r['machine']['host_cpu']}, {r['threads']} threads, "
         f"{r['machine']['cpu_capability']})", "",
         f"`{r['command']}` ({r['written']}, {r['seconds'] / 60:.0f} min). Generator {r['generator']['generator_id']} "
         f"({r['generator']['source']}); {s['solver']} {s['steps']} steps, λ = {s['cfg_scale']}, one call of "
         f"{s['batch_size']} images; guidance {g['criterion']}, ω = {g['omega']}, scale {g['scale']}; guiding "
         f"learner {r['guiding_learner']['model']} after {r['guiding_learner']['iterations']} iterations on "
         f"{r['guiding_learner']['initial_samples']} plain samples (validation accuracy "
         f"{r['guiding_learner']['val_acc']:.3f}). Timings on a shared machine: read the ratios, measured side by "
         "side in one process; costs are CPU seconds of this process (all threads), which a concurrent load changes "
         "least (wall-clock ratios beside them).", "", "## Cost per image", "",
         "| variant | guided steps | CPU s / image | × plain (CPU) | × plain (wall) | entropy gain (nats) | "
         "label fidelity |", "|---|---:|---:|---:|---:|---:|---:|"]
    for k in [k for k in VARIANTS if k in r["cost"]]:
        v = r["cost"][k]
        L.append(f"| {k} | {v['guided_steps']} | {v['cpu_seconds_per_image']:.4f} | {v['ratio_to_plain']:.2f} | "
                 f"{v['wall_ratio_to_plain']:.2f} | "
                 f"{v['entropy_gain']:+.3f} | {v['label_fidelity']:.3f} |")
    b = r["breakdown"]
    L += ["", f"## Where the time goes (profiled, wall ms per image: guided {b['guided']['total']:.1f}, plain "
          f"{b['plain']['total']:.1f}, ratio {b['profiled_ratio']:.2f}; CPU-time ratio {b['profiled_cpu_ratio']:.2f})",
          "",
          "| part | plain | guided | share of guided | runs per guided call |", "|---|---:|---:|---:|---:|"]
    for k in [*SCOPES, *(k for k in b["guided"]["parts"] if k not in SCOPES)]:
        v = b["guided"]["parts"][k]
        L.append(f"| {SCOPES.get(k, k)} | {b['plain']['parts'][k]:.2f} | {v:.2f} | "
                 f"{100 * b['guided']['shares'][k]:.1f} % | {b['guided']['calls'].get(k, '')} |")
    L += ["", "Operators (self time, ms per image):", "", "| operators | plain | guided |", "|---|---:|---:|"]
    for c in sorted(set(b["plain"]["ops"]) | set(b["guided"]["ops"])):
        L.append(f"| {c} | {b['plain']['ops'].get(c, 0.0):.2f} | {b['guided']['ops'].get(c, 0.0):.2f} |")
    gr = r["gradients"]
    names = ordered(gr["per_step"][0]["cosine"])
    L += ["", f"## Gradient agreement ({gr['images']} images, cosine to the exact fp32 gradient per image: mean over "
          "images, min in brackets; zero ∇: share of images whose fp32 / default gradient is exactly zero)", "",
          "| step | t | zero ∇ | " + " | ".join(names) + " |", "|---:|---:|---:|" + "---:|" * len(names)]
    for row in gr["per_step"]:
        zero = (f"{row['zero_reference_gradient_share']:.2f} / "
                f"{row.get('zero_default_gradient_share', float('nan')):.2f}")
        L.append(f"| {row['step']} | {row['t']} | {zero} | " + " | ".join(
            f"{row['cosine'][k]['mean']:.4f} ({row['cosine'][k]['min']:.3f})" if row["cosine"][k] else
            "zero gradient" for k in names) + " |")
    L += ["", "| path | mean cosine | min cosine | step CPU time ÷ one plain ε |",
          "|---|---:|---:|---:|"]
    for k in ordered(gr["summary"]):
        v = gr["summary"][k]
        cm = v.get("cosine_mean_over_steps")
        L.append(f"| {k} | {'' if cm is None else f'{cm:.4f}'} | "
                 f"{'' if cm is None else format(v['cosine_min_over_steps'], '.3f')} | "
                 f"{v['step_cpu_over_plain_eps'] if 'step_cpu_over_plain_eps' in v else ''} |")
    L += ["", "'cond for CFG' runs what 'cond only' runs (its cosine is read off the exact gradient's branch-wise "
          "parts)."]
    return "\n".join(L) + "\n"
