"""Unit costs, measured back to back in one process: the basis of the compute comparisons.

The machine the benchmark runs on may be shared, so a run's live wall-clock moves with the load. The compute
ratios are therefore computed from *unit costs* measured here, interleaved round-robin and repeated (median):
seconds per plain image, per guided image under each guidance schedule, per training iteration, per validation
image and per scored image. A run's modelled compute is its counts times these costs (:func:`modelled_seconds`);
its live, measured seconds are reported beside it.

The same machinery measures the speed knobs (issue point 6): bf16 autocast, channels-last, batch size, solver
steps, guidance on a subset of steps and the x̂0 gradient, for the generator and the learner.
"""
from __future__ import annotations

import statistics
import time

import torch

from deliberate.generation.guidance import build_guide
from deliberate.learning.learner import Learner

FAR_SEED = 2_000_000_000  # calibration samples use seeds far from every pool's


def _timer(fn, per: int) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) / per


def round_robin(fns: dict, per: dict, reps: int, warm: bool = True) -> dict:
    """Median seconds per unit of each callable, measured ``reps`` times in interleaved order."""
    if warm:
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            times[k].append(_timer(f, per[k]))
    return {k: statistics.median(v) for k, v in times.items()}


def _learner(bench, overrides=(), total: int = 1000) -> Learner:
    cfg = bench.config(overrides)
    return Learner(cfg.learner, bench.splits.num_classes, bench.gen.image_shape[0], total, bench.device, seed=0)


def _gen_fn(gen, n: int, steps: int, batch: int, guide=None, cfg_scale: float = 0.0):
    labels = torch.arange(n) % gen.num_classes
    seeds = [FAR_SEED + i for i in range(n)]
    return lambda: gen.sample(labels, seeds, steps=steps, guide=guide, batch_size=batch, cfg_scale=cfg_scale)


def unit_costs(bench, steps: int, schedules: dict[str, list[str]], omega: float, learner_ov=(),
               cfg_scale: float = 0.0) -> dict:
    """Seconds per plain image, per guided image for each schedule (an untrained classifier of the learner's
    architecture guides: the cost does not depend on its weights), per training iteration, per validation image
    and per scored image."""
    m = bench.mode
    gen = bench.gen
    n = m.calib_images
    batch = min(n, bench.cfg0.sampling.batch_size)
    fns, per = {"plain": _gen_fn(gen, n, steps, batch, cfg_scale=cfg_scale)}, {"plain": n}
    learner = _learner(bench, learner_ov)
    with learner.frozen() as clf:
        for name, ov in schedules.items():
            g = build_guide(clf, bench.config(ov).guidance, omega=omega)
            fns[f"guided:{name}"] = _gen_fn(gen, n, steps, batch, g, cfg_scale)
            per[f"guided:{name}"] = n
        costs = round_robin(fns, per, m.calib_reps)
    x = bench.splits.val.images
    y = bench.splits.val.labels
    bs = bench.cfg0.learner.batch_size
    idx = torch.randint(0, len(y), (bs,), generator=torch.Generator().manual_seed(0))
    k = 10
    it = round_robin({"iteration": lambda: [learner.step(x[idx], y[idx]) for _ in range(k)],
                      "val_image": lambda: learner.accuracy(x, y)},
                     {"iteration": k, "val_image": len(y)}, max(3, m.calib_reps))
    out = {"plain_image": costs["plain"], "iteration": it["iteration"], "val_image": it["val_image"],
           "score_image": it["val_image"], "steps": steps, "cfg_scale": cfg_scale, "images_per_measurement": n,
           "reps": m.calib_reps,
           "guided_image": {k.split(":", 1)[1]: v for k, v in costs.items() if k.startswith("guided:")}}
    out["guided_ratio"] = {k: v / out["plain_image"] for k, v in out["guided_image"].items()}
    return out


def learner_iteration_costs(bench, options: dict[str, list[str]]) -> dict[str, float]:
    """Seconds per training iteration for each set of learner overrides (round robin, median)."""
    x, y = bench.splits.val.images, bench.splits.val.labels
    idx = torch.randint(0, len(y), (bench.cfg0.learner.batch_size,), generator=torch.Generator().manual_seed(0))
    k = 10
    fns = {}
    for name, ov in options.items():
        ln = _learner(bench, ov)
        fns[name] = (lambda ln=ln: [ln.step(x[idx], y[idx]) for _ in range(k)])
    return round_robin(fns, {n: k for n in fns}, max(3, bench.mode.calib_reps))


def modelled_seconds(rec: dict, units: dict, schedule_of) -> dict:
    """A run's compute from its counts and the unit costs: plain generation, guidance (the extra cost of its
    guided samples over plain ones), training, validation, and for prune the scorer and the scoring."""
    plain = units["plain_image"]
    g = units["guided_image"].get(schedule_of(rec), plain) if rec["guided"] else plain
    out = {"generation": rec["generated"] * plain,
           "guidance": rec["guided"] * (g - plain),
           "training": rec["iterations"] * units["iteration"],
           "evaluation": rec["evaluations"] * rec["val_size"] * units["val_image"],
           "pruning": rec.get("scorer_iterations", 0) * units["iteration"]
           + (rec["generated"] * units["score_image"] if rec.get("scorer_iterations") else 0.0)}
    out["total"] = sum(out.values())
    return {k: round(v, 2) for k, v in out.items()}


def speed_knobs(bench, steps_ref: int, steps: int, schedule_ov: list[str], omega: float,
                cfg_scale: float = 0.0) -> dict:
    """Before/after timings of the speed knobs, measured in this process. Generation in ms per image, learner
    in ms per iteration. "before" = the defaults as they stood (fp32 learner, guidance at every step through
    the UNet, ``steps_ref`` solver steps); "after" = what the benchmark runs with."""
    m = bench.mode
    gen = bench.gen
    n = m.calib_images
    batch = min(n, bench.cfg0.sampling.batch_size)
    learner = _learner(bench)
    res = {}

    def gf(steps_: int, batch_: int, guide=None):
        return _gen_fn(gen, n, steps_, batch_, guide, cfg_scale)

    with learner.frozen() as clf:
        g_every = build_guide(clf, bench.config([]).guidance, omega=omega)
        g_after = build_guide(clf, bench.config(schedule_ov).guidance, omega=omega)
        g_x0 = build_guide(clf, bench.config(["guidance.grad=x0"]).guidance, omega=omega)
        fns = {
            "plain, bf16 autocast, %d steps (default)" % steps_ref: gf(steps_ref, batch),
            "plain, fp32, %d steps" % steps_ref: _with_attr(gen, "bf16", False, gf(steps_ref, batch)),
            "plain, channels-last UNet, %d steps" % steps_ref: _channels_last(gen, gf(steps_ref, batch)),
            "plain, batch 4, %d steps" % steps_ref: gf(steps_ref, 4),
            "plain, %d steps" % steps: gf(steps, batch),
            "guided every step (UNet grad), %d steps (default)" % steps_ref: gf(steps_ref, batch, g_every),
            "guided every step (x0 grad), %d steps" % steps_ref: gf(steps_ref, batch, g_x0),
            "guided, benchmark schedule, %d steps" % steps: gf(steps, batch, g_after),
        }
        gen_ms = round_robin(fns, {k: n for k in fns}, m.calib_reps)
    res["generation_ms_per_image"] = {k: round(v * 1000, 2) for k, v in gen_ms.items()}
    knobs = {"learner fp32 (default)": [], "learner bf16 autocast": ["learner.bf16=true"],
             "learner channels-last": ["learner.channels_last=true"]}
    its = learner_iteration_costs(bench, knobs)
    res["learner_ms_per_iteration"] = {k: round(v * 1000, 2) for k, v in its.items()}
    g = res["generation_ms_per_image"]
    res["plain_speedup"] = g["plain, bf16 autocast, %d steps (default)" % steps_ref] / g["plain, %d steps" % steps]
    res["guided_speedup"] = (g["guided every step (UNet grad), %d steps (default)" % steps_ref]
                             / g["guided, benchmark schedule, %d steps" % steps])
    res["bf16_speedup"] = g["plain, fp32, %d steps" % steps_ref] / g["plain, bf16 autocast, %d steps (default)" % steps_ref]
    return res


def _with_attr(obj, name, value, fn):
    def run():
        old = getattr(obj, name)
        setattr(obj, name, value)
        try:
            return fn()
        finally:
            setattr(obj, name, old)
    return run


def _channels_last(gen, fn):
    def run():
        gen.unet.to(memory_format=torch.channels_last)
        try:
            return fn()
        finally:
            gen.unet.to(memory_format=torch.contiguous_format)
    return run
