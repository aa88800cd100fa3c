"""The scaling benchmark, one command: does Deliberate Practice beat static generation and pruning, by how much?

    python -m bench benchmark [--quick] [--out bench/results]

Stages (all choices on the validation split; the held-out test split is read once, at the end):

0. Classifier-free guidance λ (sweeps.py): static at a fixed size for each λ, over the mode's learner seeds; the λ
   of the highest mean validation accuracy is used from here on (label fidelity reported beside it).
   Solver steps: static at a fixed size with the default steps and with fewer; the fewest steps whose validation
   accuracy stays within one binomial standard error of the default's are used from here on.
1. Unit costs (plain / guided image per schedule, iteration, validation image), measured back to back, and the
   speed knobs before/after (calibrate.py).
2. ω sweep: DP at the base setting for each ω (ω = 0 is dynamic-unguided); ω* = best validation accuracy (ω > 0).
3. Guidance schedule sweep at ω*: the cheapest schedule within one standard error of every-step guidance on
   validation is used from here on.
4. Curves: static ladder, DP settings and dynamic-unguided at the same settings.
5. Key points: the DP setting with the best validation accuracy; its final pool M sizes a matched static run and
   oversample-then-prune (k·M candidates, entropy and random keep); seed replicates of the key points; iteration
   ladders (static at its largest pool, DP at the key setting).
6. Held-out test and corrupted-copy (OOD) evaluation of every run and of the real-data reference classifier.
7. Ratios from the curves, goals, notes → ``latest.json``, plots, ``results.md``.

Runs are recorded under ``--work`` (default ``bench/work/<mode>``) and skipped when the benchmark is rerun.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from .core import RESULTS, STUDIES, WORK
from .plan import MODES

TAGS = ("cfg_sweep", "static_samples", "static_ladder", "static_matched", "dp_curve", "dp_key", "dynamic_curve",
        "dynamic_key", "prune_curve", "prune_random", "static_iters", "dp_iters", "omega_sweep", "schedule_sweep", "steps_check")


def holding(accs: dict, ref: float, tol: float) -> list:
    """Keys whose validation accuracy is within ``tol`` of ``ref`` (the options a speed choice may pick from)."""
    return [k for k, v in accs.items() if v >= ref - tol]


def se(p: float, n: int) -> float:
    """Binomial standard error of an accuracy ``p`` measured on ``n`` images."""
    return math.sqrt(max(p * (1 - p), 1e-6) / n)


class Plan:
    """Builds the runs of each stage from the mode and the choices made so far."""

    def __init__(self, mode):
        self.m = mode
        self.steps = mode.steps_reference
        self.cfg_scale = None  # λ: chosen by the λ sweep (stage 0); pinned in every run after it
        self.omega = None
        self.schedule = "every"
        self.learner: list[str] = []

    def common(self, seed: int = 0, steps: int | None = None, cfg_scale: float | None = None) -> list[str]:
        lam = self.cfg_scale if cfg_scale is None else cfg_scale
        return [f"sampling.steps={steps or self.steps}", f"run.seed={seed}",
                f"sampling.seed_offset={seed * self.m.seed_offset_stride}"] + self.learner + (
                    [f"sampling.cfg_scale={lam}"] if lam is not None else [])

    @staticmethod
    def dp_ov(s: dict) -> list[str]:
        return [f"practice.initial_samples={s['N']}", f"practice.add_samples={s['P']}", f"practice.patience={s['T']}",
                f"practice.patience_growth={s['growth']}", f"practice.max_samples={s['max']}"]

    def static(self, n: int, seed: int = 0, tags=(), steps=None, extra=(), cfg_scale=None):
        from .harness import RunSpec
        return RunSpec("static", tuple(self.common(seed, steps, cfg_scale)) + tuple(extra), budget=n, tags=tuple(tags))

    def dp(self, s: dict, seed: int = 0, omega=None, schedule=None, tags=(), extra=()):
        from .harness import RunSpec
        omega = self.omega if omega is None else omega
        if omega == 0:
            return self.dynamic(s, seed, tags, extra)
        sched = self.m.schedules[schedule or self.schedule]
        return RunSpec("dp", tuple(self.common(seed) + self.dp_ov(s) + [f"guidance.omega={omega}"] + list(sched))
                       + tuple(extra), tags=tuple(tags))

    def dynamic(self, s: dict, seed: int = 0, tags=(), extra=()):
        from .harness import RunSpec
        return RunSpec("dynamic_unguided", tuple(self.common(seed) + self.dp_ov(s)) + tuple(extra), tags=tuple(tags))

    def prune(self, m: int, k: int, n_scorer: int, scorer_its: int, seed: int = 0, random: bool = False, tags=()):
        from .harness import RunSpec
        ov = self.common(seed) + [f"practice.oversample={k}", f"practice.initial_samples={min(n_scorer, m * k)}"]
        if not random:
            ov.append(f"practice.prune_scorer_iterations={scorer_its}")
        return RunSpec("prune_random" if random else "prune", tuple(ov), budget=m, tags=tuple(tags))


@STUDIES.register("benchmark")
def main(argv: list[str]) -> int:
    """The scaling benchmark of static, DP, the unguided loop and oversample-then-prune (full, quick or tiny mode)."""
    ap = argparse.ArgumentParser(prog="python -m bench benchmark", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the ~10-minute mode (smaller ladders, fewer iterations)")
    ap.add_argument("--mode", choices=sorted(MODES), help="full (default), quick, or tiny (a development check "
                    "with a small generator trained on the spot)")
    ap.add_argument("--out", default="", help="where latest.json, plots and results.md go (default: bench/results for "
                    "the full mode, bench/results/<mode> for the others)")
    ap.add_argument("--work", default="", help="run records and models (default: bench/work/<mode>)")
    ap.add_argument("--device", default=None, help="sets run.device (default: the config's, auto)")
    ap.add_argument("--threads", type=int, default=0, help="sets run.threads: torch threads (0 = torch's default)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--recalibrate", action="store_true", help="measure unit costs and speed knobs again even when "
                    "the work directory holds them")
    ap.add_argument("overrides", nargs="*", help="extra config overrides for every run (section.key=value), "
                    "e.g. generator.cache_dir=/tmp/gen for the tiny mode")
    args = ap.parse_args(argv)
    mode_name = args.mode or ("quick" if args.quick else "full")
    mode = MODES[mode_name]
    work = Path(args.work) if args.work else WORK / mode_name
    out = Path(args.out) if args.out else RESULTS if mode_name == "full" else RESULTS / mode_name
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    stage_t = {}

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    from deliberate.evaluation import CORRUPTIONS

    from .analysis import GUIDANCE_KEYS, enrich, explain, goals, guidance_headline, headline, points
    from .calibrate import learner_iteration_costs, speed_knobs, unit_costs
    from .harness import Bench
    from .report import write_outputs
    from .sweeps import cfg_sweep

    t = time.perf_counter()
    threads = [f"run.threads={args.threads}"] if args.threads else []
    bench = Bench(mode, work, args.device, args.progress, log, args.overrides + threads)
    stage_t["setup (generator, reference classifier)"] = time.perf_counter() - t
    log(f"generator {bench.gen_info['generator_id']} ({bench.gen_info['source']}); reference classifier "
        f"{bench.ref_info['source']}, val {bench.ref_info['val_acc']:.4f}")
    plan = Plan(mode)
    n_val = len(bench.splits.val)
    choices: dict = {}

    # 0. λ, then solver steps.
    t = time.perf_counter()
    log("stage 0: classifier-free guidance λ sweep")
    choices["cfg_scale"] = cfg_sweep(bench, plan, mode, log)
    plan.cfg_scale = choices["cfg_scale"]["chosen"]
    stage_t["0 cfg sweep"] = time.perf_counter() - t
    t = time.perf_counter()
    log("stage 0: solver steps check")
    seeds = mode.steps_check_seeds

    def check(steps: int) -> dict:  # static at the check size, averaged over the check's learner seeds
        rs = [bench.run(plan.static(mode.steps_check_size, seed=sd, steps=steps, tags=("steps_check",)))
              for sd in seeds]
        return {k: float(np.mean([r[k] for r in rs])) for k in ("val_acc", "label_fidelity")} | {"runs": rs}

    cands = {mode.steps_reference: check(mode.steps_reference)}
    for s in mode.steps_candidates:
        cands[s] = check(s)
    ref = cands[mode.steps_reference]
    tol = se(ref["val_acc"], n_val) / math.sqrt(len(seeds))
    plan.steps = min(holding({s: r["val_acc"] for s, r in cands.items()}, ref["val_acc"], tol))
    choices["steps"] = {"chosen": plan.steps, "tolerance": round(tol, 4), "seeds": list(seeds),
                        "val_acc": {str(s): r["val_acc"] for s, r in cands.items()},
                        "label_fidelity": {str(s): r["label_fidelity"] for s, r in cands.items()},
                        "rule": "fewest solver steps whose static validation accuracy (mean over "
                                f"{len(seeds)} learner seed{'s' if len(seeds) > 1 else ''}) is within one standard "
                                f"error of {mode.steps_reference} steps'"}
    log(f"  steps → {plan.steps}")
    if mode.learner_candidates:  # faster learner settings (bf16 autocast, channels-last), kept if validation holds
        base = cands[plan.steps]["runs"][0]
        opts = {"default": (base, [])}
        for ov in mode.learner_candidates:
            opts[",".join(ov)] = (bench.run(plan.static(mode.steps_check_size, tags=("learner_check",), extra=ov)), ov)
        its = learner_iteration_costs(bench, {k: ov for k, (_, ov) in opts.items()})
        tol = se(base["val_acc"], n_val)
        pick = min(holding({k: r["val_acc"] for k, (r, _) in opts.items()}, base["val_acc"], tol), key=its.get)
        plan.learner = list(opts[pick][1])
        choices["learner"] = {"chosen": pick, "overrides": plan.learner, "tolerance": round(tol, 4),
                              "val_acc": {k: r["val_acc"] for k, (r, _) in opts.items()},
                              "ms_per_iteration": {k: round(v * 1e3, 2) for k, v in its.items()},
                              "rule": "fastest learner setting whose static validation accuracy is within one "
                                      "binomial SE of the default's"}
        log(f"  learner → {pick}")
    stage_t["0 steps check"] = time.perf_counter() - t

    # 1. Unit costs and speed knobs.
    t = time.perf_counter()
    log("stage 1: unit costs and speed knobs")
    omega_probe = max(o for o in mode.omegas)
    units_file = work / "units.json"  # kept, so that a resumed benchmark makes the same cost-based choices
    units = json.loads(units_file.read_text()) if units_file.exists() and not args.recalibrate else None
    if units is None or units["steps"] != plan.steps or set(units["guided_image"]) != set(mode.schedules) \
            or units.get("cfg_scale") != plan.cfg_scale \
            or units.get("learner", []) != plan.learner:
        units = unit_costs(bench, plan.steps, mode.schedules, omega_probe, plan.learner, plan.cfg_scale)
        units["learner"] = plan.learner
        units_file.write_text(json.dumps(units, indent=1))
    log("  plain %.1f ms/img, iteration %.1f ms; guided/plain: %s" % (
        units["plain_image"] * 1e3, units["iteration"] * 1e3,
        ", ".join(f"{k} {v:.2f}" for k, v in units["guided_ratio"].items())))
    stage_t["1 calibration"] = time.perf_counter() - t

    # 2. ω sweep at the base setting.
    t = time.perf_counter()
    log("stage 2: ω sweep")
    sweep = {o: bench.run(plan.dp(mode.dp_base, omega=o, schedule="every", tags=("omega_sweep",))) for o in mode.omegas}
    pos = {o: r for o, r in sweep.items() if o > 0}
    plan.omega = max(pos, key=lambda o: (pos[o]["val_acc"], -o))
    choices["omega"] = {"chosen": plan.omega, "val_acc": {str(o): r["val_acc"] for o, r in sweep.items()},
                        "rule": "highest final validation accuracy among ω > 0 (ties: smaller ω)",
                        "omega0_better": sweep.get(0.0, {}).get("val_acc", -1) > pos[plan.omega]["val_acc"]}
    log(f"  ω → {plan.omega}")
    stage_t["2 omega sweep"] = time.perf_counter() - t

    # 3. Guidance schedule sweep at ω*.
    t = time.perf_counter()
    log("stage 3: guidance schedule sweep")
    sched = {name: bench.run(plan.dp(mode.dp_base, schedule=name, tags=("schedule_sweep",))) for name in mode.schedules}
    tol = se(sched["every"]["val_acc"], n_val)
    plan.schedule = min(holding({n: r["val_acc"] for n, r in sched.items()}, sched["every"]["val_acc"], tol),
                        key=units["guided_ratio"].get)
    choices["schedule"] = {"name": plan.schedule, "overrides": mode.schedules[plan.schedule], "tolerance": round(tol, 4),
                           "val_acc": {n: r["val_acc"] for n, r in sched.items()},
                           "rule": "cheapest schedule (unit costs) whose validation accuracy is within one binomial "
                                   "SE of guidance at every step"}
    log(f"  schedule → {plan.schedule}")
    stage_t["3 schedule sweep"] = time.perf_counter() - t

    # 4. Curves.
    t = time.perf_counter()
    log("stage 4: static ladder, DP settings, dynamic-unguided")
    for n in mode.static_sizes:
        bench.run(plan.static(n, tags=("static_ladder", "static_samples")))
    dp_recs = {}
    for i, s in enumerate(mode.dp_settings):
        dp_recs[i] = bench.run(plan.dp(s, tags=("dp_curve",)))
        bench.run(plan.dynamic(s, tags=("dynamic_curve",)))
    stage_t["4 curves"] = time.perf_counter() - t

    # 5. Key points, prune, seeds, iteration ladders.
    t = time.perf_counter()
    log("stage 5: key points, oversample-then-prune, seeds, iteration ladders")
    ki = max(dp_recs, key=lambda i: (dp_recs[i]["val_acc"], -i))
    key_s = mode.dp_settings[ki]
    key = dp_recs[ki]
    m_kept = key["samples"]
    choices["dp_key"] = {"id": key["id"], "setting": key_s, "val_acc": {str(i): r["val_acc"] for i, r in dp_recs.items()},
                         "label": f"N={key_s['N']}, P={key_s['P']}, T_max={key_s['T']}+{key_s['growth']}/round, "
                                  f"max {key_s['max']}",
                         "rule": "DP setting with the highest final validation accuracy (seed 0)"}
    choices["prune_kept"] = m_kept
    scorer_its = max(1, bench.cfg0.practice.iterations // 4)
    choices["prune_scorer"] = {"samples": key_s["N"], "iterations": scorer_its,
                               "rule": "a fresh learner trained on the first N plain samples (DP's initial pool) for "
                                       "a quarter of the iteration budget"}
    for seed in mode.seeds:
        bench.run(plan.dp(key_s, seed=seed, tags=("dp_curve", "dp_key", "dp_iters")))
        bench.run(plan.dynamic(key_s, seed=seed, tags=("dynamic_curve", "dynamic_key")))
        bench.run(plan.static(m_kept, seed=seed, tags=("static_matched", "static_samples")))
    mid_k = max(k for k in mode.prune_ks if k <= 4)
    for k in mode.prune_ks:
        for seed in (mode.seeds if k == mid_k and mode.prune_seeds else mode.seeds[:1]):
            if k == 1:  # keeping all of M candidates is static on M: the same run (its point on the prune curve)
                bench.run(plan.static(m_kept, seed=seed, tags=("static_matched", "static_samples", "prune_curve")))
            else:
                bench.run(plan.prune(m_kept, k, key_s["N"], scorer_its, seed=seed, tags=("prune_curve",)))
    for k in mode.prune_random_ks:
        bench.run(plan.prune(m_kept, k, key_s["N"], scorer_its, random=True, tags=("prune_random",)))
    its = bench.cfg0.practice.iterations
    n_max = max(mode.static_sizes)
    bench.run(plan.static(n_max, tags=("static_iters",)))
    for f in mode.iter_factors_static:
        bench.run(plan.static(n_max, tags=("static_iters",), extra=(f"practice.iterations={int(its * f)}",)))
    for f in mode.iter_factors_dp:
        bench.run(plan.dp(key_s, tags=("dp_iters",), extra=(f"practice.iterations={int(its * f)}",)))
    stage_t["5 key points"] = time.perf_counter() - t

    # Speed knobs (before/after), with the choices now known.
    t = time.perf_counter()
    speed_file = work / "speed.json"
    speed = json.loads(speed_file.read_text()) if speed_file.exists() and not args.recalibrate else None
    if speed is None or speed.get("choices") != [plan.steps, plan.schedule, plan.omega, plan.cfg_scale]:
        speed = speed_knobs(bench, mode.steps_reference, plan.steps, mode.schedules[plan.schedule], plan.omega,
                            plan.cfg_scale)
        speed["choices"] = [plan.steps, plan.schedule, plan.omega, plan.cfg_scale]
        speed_file.write_text(json.dumps(speed, indent=1))
    stage_t["speed knobs"] = time.perf_counter() - t

    # 6. Held-out and OOD evaluation.
    t = time.perf_counter()
    log("stage 6: held-out test and OOD evaluation")
    evals = bench.evaluate()
    stage_t["6 evaluation"] = time.perf_counter() - t

    # 7. Results.
    runs = enrich(bench.records, evals, units, mode.schedules)
    H, _ = headline(runs, choices, units, mode.schedules)
    H |= guidance_headline(runs, choices)
    G = goals(H, runs, choices, n_val, len(bench.splits.test))
    why = explain(H, G, runs, choices)
    total = time.perf_counter() - t_start
    cmd = "python -m bench benchmark" + (" --quick" if mode_name == "quick" else f" --mode {mode_name}" if mode_name != "full"
                                   else "") + (" " + " ".join(args.overrides) if args.overrides else "")
    result = {
        "mode": mode_name,
        "command": cmd,
        "note": ("QUICK MODE: small ladders, few iterations; numbers are indicative, not the full benchmark"
                 if mode_name == "quick" else "TINY MODE: development check, meaningless numbers"
                 if mode_name == "tiny" else "full mode"),
        "headline": {k: H[k] for k in ("samples_ratio", "iterations_ratio", "prune_compute_ratio",
                                       "guidance_cost_ratio")} | {f"{k}_detail": H[f"{k}_detail"] for k in
                                                                  ("samples_ratio", "iterations_ratio",
                                                                   "prune_compute_ratio", "guidance_cost_ratio")}
                    | {k: H[k] for k in GUIDANCE_KEYS},
        "goals": G,
        "why": why,
        "choices": choices,
        "units": units,
        "speed": speed,
        "reference_classifier": bench.ref_info | {"test_acc": evals["reference"]["test_acc"],
                                                  "ood": evals["reference"]["ood"]},
        "generator": bench.gen_info,
        "ood": {"size": evals["ood_size"], "corruptions": CORRUPTIONS},
        "test_reads": evals["test_reads"],
        "points": {tag: points(runs, tag) for tag in TAGS},
        "runs": runs,
        "seconds": {"this_invocation": round(total, 1),
                    "all_runs_wall": round(sum(r["wall_seconds"] for r in bench.records.values()), 1),
                    **{k: round(v, 1) for k, v in stage_t.items()}},
        "machine": {"threads": torch.get_num_threads(), "device": str(bench.device), "torch": torch.__version__},
    }
    write_outputs(result, out)
    log(f"done in {total:.0f}s → {out / 'latest.json'}")
    for k in ("samples_ratio", "iterations_ratio", "prune_compute_ratio", "guidance_cost_ratio"):
        g = G[k]
        log(f"  {k}: {g['bound'] if g['bound'] != '=' else ''}{g['value']:.2f} (goal {g['goal']}: {g['status']})")
    return 0
