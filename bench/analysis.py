"""From run records, held-out evaluations and unit costs to the results: curves, headline ratios, goals, notes.

Everything here is computed from the recorded numbers; nothing is typed in by hand. Curves use held-out test
accuracy (mean over seed replicates where there are several); the choices made during the benchmark used
validation accuracy only and are recorded under ``choices``.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from .calibrate import modelled_seconds
from .curves import goal_status, ratio, summarize, x_to_reach, reach_dict

GUIDANCE_KEYS = ("dp_minus_unguided_pp", "dp_minus_unguided_se", "added_fidelity", "plain_fidelity",
                 "dp_minus_unguided_detail")
GOALS = {"samples_ratio": (4.0, True), "iterations_ratio": (6.0, True), "prune_compute_ratio": (5.0, True),
         "guidance_cost_ratio": (1.5, False)}


def schedule_name(rec: dict, schedules: dict) -> str:
    """The schedule sweep name whose overrides a record carries ("every" when none)."""
    ov = set(rec["overrides"])
    for name, sov in schedules.items():
        if sov and set(sov) <= ov:
            return name
    return "every"


def point_key(rec: dict) -> str:
    """A run's setting without its seed: replicates share it."""
    skip = ("run.seed", "sampling.seed_offset")
    return rec["method"] + "|" + ",".join(sorted(o for o in rec["overrides"] if not o.startswith(skip))) + \
        f"|{rec['budget']}"


def aggregate(recs: list[dict]) -> dict:
    """Mean and spread over seed replicates of one setting."""
    out = {"ids": [r["id"] for r in recs], "seeds": [r["seed"] for r in recs], "method": recs[0]["method"],
           "setting": recs[0]["setting"], "budget": recs[0]["budget"], "tags": sorted({t for r in recs for t in r["tags"]})}
    for k in ("test_acc", "val_acc", "samples", "generated", "guided", "iterations", "label_fidelity", "rounds",
              "compute_seconds", "measured_seconds"):
        out[k] = summarize([r.get(k) for r in recs])
    out["ood"] = {c: summarize([r["ood"][c] for r in recs]) for c in recs[0].get("ood", {})}
    return out


def enrich(records: dict, evals: dict, units: dict, schedules: dict) -> dict[str, dict]:
    out = {}
    for rid, rec in records.items():
        r = dict(rec)
        ev = evals["runs"].get(rid, {})
        r["test_acc"] = ev.get("test_acc")
        r["ood"] = ev.get("ood", {})
        r["schedule"] = schedule_name(rec, schedules) if rec["guided"] else None
        r["modelled"] = modelled_seconds(rec, units, lambda x: schedule_name(x, schedules))
        r["compute_seconds"] = r["modelled"]["total"]
        s = rec["seconds"]
        r["measured_seconds"] = round(sum(s.values()), 2)
        n_g, n_p = rec["guided"], rec["plain"] - rec.get("reused", 0)  # plain samples the run itself generated
        plain = s.get("generation", 0.0) / n_p if n_p > 0 and s.get("generation") else units["plain_image"]
        r["measured_split"] = {  # guidance: guided generation time beyond the run's own plain cost per image
            "generation": round(s.get("generation", 0.0) + min(s.get("guided_generation", 0.0), n_g * plain), 2),
            "guidance": round(max(0.0, s.get("guided_generation", 0.0) - n_g * plain), 2),
            "training": round(s.get("training", 0.0) + s.get("scorer_training", 0.0), 2),
            "evaluation": round(s.get("evaluation", 0.0), 2), "scoring": round(s.get("scoring", 0.0), 2)}
        out[rid] = r
    return out


def points(runs: dict, tag: str) -> list[dict]:
    groups = defaultdict(list)
    for r in runs.values():
        if tag in r["tags"]:
            groups[point_key(r)].append(r)
    return [aggregate(g) for g in groups.values()]


def curve(pts: list[dict], x: str, y: str = "test_acc") -> tuple[list[float], list[float]]:
    pts = [p for p in pts if p[x]["mean"] and p[y]["mean"] is not None]
    return [p[x]["mean"] for p in pts], [p[y]["mean"] for p in pts]


def best_on_validation(pts: list[dict], x: str) -> int:
    """Index, in ``curve(pts, x)``'s order, of the point of the highest mean validation accuracy (ties: smaller x)."""
    pts = [p for p in pts if p[x]["mean"] and p["test_acc"]["mean"] is not None]
    return max(range(len(pts)), key=lambda i: (pts[i]["val_acc"]["mean"], -pts[i][x]["mean"]))


def paired_difference(runs: dict, a: dict, curve_pts: list[dict], x: str = "samples") -> dict | None:
    """``a`` − the curve at ``a``'s x, paired by learner seed: for each seed of ``a``, the curve of that seed's runs
    read at that seed's x by linear interpolation in log x (inside the seed's curve only); mean and standard error
    of the per-seed differences in points (SE None with one seed). None when no seed pairs."""
    diffs, used = [], []
    for rid in a["ids"]:
        r = runs[rid]
        pts = sorted((runs[i][x], runs[i]["test_acc"]) for p in curve_pts for i in p["ids"]
                     if runs[i]["seed"] == r["seed"] and runs[i].get("test_acc") is not None)
        if r.get("test_acc") is None or not pts or not pts[0][0] <= r[x] <= pts[-1][0]:
            continue
        xs, ys = zip(*pts)
        un = float(np.interp(math.log(r[x]), np.log(xs), ys))
        diffs.append(100 * (r["test_acc"] - un))
        used.append(r["seed"])
    if not diffs:
        return None
    se_pp = float(np.std(diffs, ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else None
    return {"mean_pp": float(np.mean(diffs)), "se_pp": se_pp, "seeds": used}


def paired_by_seed(runs: dict, a: dict, b: dict) -> dict:
    """``a`` − ``b`` (two points of runs), paired by learner seed: mean and SE of the per-seed differences (points)."""
    tb = {runs[i]["seed"]: runs[i]["test_acc"] for i in b["ids"]}
    pairs = [(runs[i]["seed"], runs[i]["test_acc"] - tb[runs[i]["seed"]]) for i in a["ids"] if runs[i]["seed"] in tb]
    diffs = [100 * d for _, d in pairs]
    return {"mean_pp": float(np.mean(diffs)) if diffs else None,
            "se_pp": float(np.std(diffs, ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else None,
            "seeds": [s for s, _ in pairs]}


def _num(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def _equal_accuracy(static_pts: list, dp_pts: list, axis: str, dp_acc: float, dp_x: float):
    """Static's ``axis`` needed to reach DP's accuracy ÷ DP's, and the same read at the best static point (best static
    x ÷ DP's x needed on the DP curve). Returns (ratio, ratio at best, static reach, DP reach, best acc, best x)."""
    sx, sy = curve(static_pts, axis)
    dx, dy = curve(dp_pts, axis)
    need = x_to_reach(dp_acc, sx, sy)
    best_i = best_on_validation(static_pts, axis)  # chosen on validation; its test accuracy is the target
    need_dp = x_to_reach(sy[best_i], dx, dy)
    return ratio(need, dp_x), ratio(sx[best_i], need_dp), need, need_dp, sy[best_i], sx[best_i]


def headline(runs: dict, choices: dict, units: dict, schedules: dict) -> tuple[dict, list[str]]:
    notes: list[str] = []
    key_id = choices["dp_key"]["id"]
    key_pt = next(p for p in points(runs, "dp_key") if key_id in p["ids"])
    dp_acc, dp_n, dp_it = key_pt["test_acc"]["mean"], key_pt["samples"]["mean"], key_pt["iterations"]["mean"]
    dp_comp = key_pt["compute_seconds"]["mean"]
    H = {}

    # (a) samples, (b) iterations: the same equal-accuracy reading on two axes
    st = points(runs, "static_samples")
    a, a_best, need, need_dp, best_acc, best_n = _equal_accuracy(st, points(runs, "dp_curve"), "samples", dp_acc, dp_n)
    H["samples_ratio"] = a["value"]
    H["samples_ratio_detail"] = {
        "bound": a["bound"], "dp_test_acc": dp_acc, "dp_samples": dp_n,
        "static_samples_needed": reach_dict(need),
        "at_best_static": {"ratio": a_best["value"], "bound": a_best["bound"], "best_static_test_acc": best_acc,
                           "best_static_samples": best_n, "dp_samples_needed": reach_dict(need_dp)}}

    si = points(runs, "static_iters")
    b, b_best, need_it, need_dp_it, best_acc_it, best_it = _equal_accuracy(si, points(runs, "dp_iters"), "iterations",
                                                                           dp_acc, dp_it)
    H["iterations_ratio"] = b["value"]
    H["iterations_ratio_detail"] = {
        "bound": b["bound"], "dp_test_acc": dp_acc, "dp_iterations": dp_it,
        "static_pool": si[0]["budget"] if si else None, "static_iterations_needed": reach_dict(need_it),
        "at_best_static": {"ratio": b_best["value"], "bound": b_best["bound"], "best_static_test_acc": best_acc_it,
                           "best_static_iterations": best_it, "dp_iterations_needed": reach_dict(need_dp_it)}}

    # (c) compute against oversample-then-prune
    pp = points(runs, "prune_curve")
    px, py = curve(pp, "compute_seconds")
    need_c = x_to_reach(dp_acc, px, py)
    c = ratio(need_c, dp_comp)
    H["prune_compute_ratio"] = c["value"]
    H["prune_compute_ratio_detail"] = {
        "bound": c["bound"], "dp_test_acc": dp_acc, "dp_compute_seconds": dp_comp,
        "prune_compute_needed": reach_dict(need_c), "kept_size": choices["prune_kept"],
        "prune_points": [{"k": int(p["setting"].get("practice.oversample", 1)), "test_acc": p["test_acc"]["mean"],
                          "compute_seconds": p["compute_seconds"]["mean"], "n": p["test_acc"]["n"]} for p in pp],
        "basis": "modelled compute: counts × unit costs measured back to back (calibration); measured live seconds "
                 "are in runs[*].measured_seconds"}

    # (d) guided / plain image cost per schedule, with the accuracy each gives
    sched = {}
    for p in points(runs, "schedule_sweep"):
        name = schedule_name({"overrides": [f"{k}={v}" for k, v in p["setting"].items()]}, schedules)
        sched[name] = {"cost_ratio": units["guided_ratio"].get(name), "val_acc": p["val_acc"]["mean"],
                       "test_acc": p["test_acc"]["mean"], "label_fidelity": p["label_fidelity"]["mean"]}
    chosen = choices["schedule"]["name"]
    H["guidance_cost_ratio"] = units["guided_ratio"][chosen]
    H["guidance_cost_ratio_detail"] = {"schedule": chosen, "every_step_cost_ratio": units["guided_ratio"]["every"],
                                       "per_schedule": sched,
                                       "test_acc": sched.get(chosen, {}).get("test_acc"),
                                       "every_step_test_acc": sched.get("every", {}).get("test_acc")}
    return H, notes


def guidance_headline(runs: dict, choices: dict) -> dict:
    """What guidance adds and what it costs, at the key DP setting (held-out test; chosen on validation):
    ``dp_minus_unguided_pp`` — DP's test accuracy minus the unguided loop's at DP's sample count (points), paired
    by learner seed: each seed's unguided runs read at that seed's DP sample count by linear interpolation in log x
    where it lies inside them, else the unguided run of the same setting and seed (:func:`paired_difference`);
    ``dp_minus_unguided_se`` — the standard error of the per-seed differences (None with one seed); ``added_fidelity`` / ``plain_fidelity`` — label fidelity
    (reference classifier) of DP's guided additions / its plain initial pool, sample-weighted over rounds and
    seeds."""
    key_id = choices["dp_key"]["id"]
    key = next(p for p in points(runs, "dp_key") if key_id in p["ids"])
    dyn_key = points(runs, "dynamic_key")
    out = {"dp_minus_unguided_pp": None, "dp_minus_unguided_se": None, "added_fidelity": None,
           "plain_fidelity": None, "dp_minus_unguided_detail": {}}
    if dyn_key:
        d = dyn_key[0]
        n = key["samples"]["mean"]
        diff = paired_difference(runs, key, points(runs, "dynamic_curve") + dyn_key)
        how = "per seed, the unguided runs of that seed read at DP's samples (log-x interpolation)"
        if diff is None:  # DP's samples outside every seed's unguided curve: the unguided run of the same setting
            diff = paired_by_seed(runs, key, d)
            how = f"the unguided run of the same setting ({d['samples']['mean']:.0f} samples), paired by seed"
        out["dp_minus_unguided_pp"] = diff["mean_pp"]
        out["dp_minus_unguided_se"] = diff["se_pp"]
        out["dp_minus_unguided_detail"] = {"dp_test_acc": key["test_acc"]["mean"], "dp_samples": n,
                                           "unguided_from": how, "paired_seeds": diff["seeds"]}
    fid = {"added": [0.0, 0], "plain": [0.0, 0]}
    for rid in key["ids"]:
        for r in runs[rid].get("round_stats", []):
            part = fid["added" if r["round"] > 0 else "plain"]
            part[0] += r["label_fidelity"] * r["count"]
            part[1] += r["count"]
    for k, (tot, cnt) in fid.items():
        out[f"{k}_fidelity"] = tot / cnt if cnt else None
    return out


def goals(H: dict, runs: dict, choices: dict, val_size: int, test_size: int) -> dict:
    out = {}
    for k, (goal, up) in GOALS.items():
        d = H[f"{k}_detail"]
        r = {"value": H[k], "bound": d.get("bound", "=")}
        status = goal_status(r, goal, up)
        if k == "guidance_cost_ratio":
            acc, every = d.get("test_acc"), d.get("every_step_test_acc")
            se = math.sqrt(max(every * (1 - every), 1e-6) / test_size) if every is not None else 0.0
            lost = acc is not None and every is not None and acc < every - se
            if status == "met" and lost:
                status = "not met"
            r["accuracy_kept"] = None if acc is None else not lost
            r["tolerance"] = round(se, 4)
        out[k] = {"goal": (">= " if up else "<= ") + str(goal), "status": status, **r}
    return out


def _pm(p: dict) -> str:
    """' ± std' over seeds, or nothing for a single seed."""
    return f" ± {100 * p['test_acc']['std']:.1f}" if p["test_acc"]["n"] > 1 and p["test_acc"]["std"] is not None else ""


def explain(H: dict, G: dict, runs: dict, choices: dict) -> dict[str, list[str]]:
    """Facts that say why a goal is or is not met, computed from the results."""
    why = defaultdict(list)
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    st = sorted(points(runs, "static_samples"), key=lambda p: p["samples"]["mean"])
    key = next(p for p in points(runs, "dp_key") if choices["dp_key"]["id"] in p["ids"])
    if st:
        lo, hi = st[0], st[-1]
        why["samples_ratio"].append(
            f"static goes from {pct(lo['test_acc']['mean'])} at {lo['samples']['mean']:.0f} samples to "
            f"{pct(hi['test_acc']['mean'])} at {hi['samples']['mean']:.0f}; best "
            f"{pct(max(p['test_acc']['mean'] for p in st))}")
    why["samples_ratio"].append(
        f"DP key point ({choices['dp_key']['label']}, chosen on validation): {pct(key['test_acc']['mean'])}"
        f"{_pm(key)} with {key['samples']['mean']:.0f} samples (n={key['test_acc']['n']})")
    dk = [p for p in points(runs, "dynamic_key")]
    if dk:
        d = dk[0]
        why["samples_ratio"].append(
            f"dynamic-unguided at the same setting: {pct(d['test_acc']['mean'])}{_pm(d)} "
            f"with {d['samples']['mean']:.0f} samples: guidance adds "
            f"{100 * (key['test_acc']['mean'] - d['test_acc']['mean']):+.1f} points over adding plain data when stuck")
    g_fid = [rs["label_fidelity"] for r in runs.values() if r["method"] == "dp" and "dp_key" in r["tags"]
             for rs in r["round_stats"] if rs["omega"] > 0]
    p_fid = [rs["label_fidelity"] for r in runs.values() if r["method"] == "dp" and "dp_key" in r["tags"]
             for rs in r["round_stats"] if rs["omega"] == 0]
    if g_fid and p_fid:
        why["samples_ratio"].append(
            f"label fidelity (real-data reference classifier) of the key DP runs: plain rounds {pct(np.mean(p_fid))}, "
            f"guided rounds {pct(np.mean(g_fid))}")
    sm = points(runs, "static_matched")
    if sm:
        s0 = sm[0]
        diff = key["test_acc"]["mean"] - s0["test_acc"]["mean"]
        spread = max(key["test_acc"]["std"] or 0, s0["test_acc"]["std"] or 0)
        one = min(key["test_acc"]["n"], s0["test_acc"]["n"]) < 2
        verdict = ("is " + ("above" if diff > 0 else "below")) if one else \
            ("beats" if diff > spread else "trails" if diff < -spread else "ties (within the seed spread)")
        why["samples_ratio"].append(
            f"at the same pool size ({s0['samples']['mean']:.0f}) DP {verdict} static trained on all samples from the "
            f"start: {100 * diff:+.1f} points " + ("(one seed: no spread measured)" if one else
                                                   f"(seed std up to {100 * spread:.1f})"))
    if st and len(st) >= 3:
        accs = [p["test_acc"]["mean"] for p in st]
        ib = max(range(len(st)), key=lambda i: (st[i]["val_acc"]["mean"], -st[i]["samples"]["mean"]))  # validation
        if ib < len(st) - 1:
            why["samples_ratio"].append(
                f"the static curve peaks at {st[ib]['samples']['mean']:.0f} samples and does not improve beyond: more "
                f"plain samples of this generator stop helping, so no amount of static data reaches a higher accuracy")
        gain = accs[-1] - accs[0]
        span = st[-1]["samples"]["mean"] / st[0]["samples"]["mean"]
        why["samples_ratio"].append(f"static gains {100 * gain:+.1f} points over a {span:.0f}× range of sizes: the "
                                    f"flatter this curve, the more samples a small accuracy gap is worth")
    si = sorted(points(runs, "static_iters"), key=lambda p: p["iterations"]["mean"])
    if si:
        why["iterations_ratio"].append("static at its largest pool, by iterations: " + ", ".join(
            f"{p['iterations']['mean']:.0f} → {pct(p['test_acc']['mean'])}" for p in si))
    di = sorted(points(runs, "dp_iters"), key=lambda p: p["iterations"]["mean"])
    if di:
        why["iterations_ratio"].append("DP key setting, by iterations: " + ", ".join(
            f"{p['iterations']['mean']:.0f} → {pct(p['test_acc']['mean'])}" for p in di))
    for name in ("prune", "prune_random"):
        pp = sorted(points(runs, "prune_curve" if name == "prune" else "prune_random"),
                    key=lambda p: p["generated"]["mean"])
        if pp:
            why["prune_compute_ratio"].append(f"{name} (kept {choices['prune_kept']}): " + ", ".join(
                f"k={int(p['setting'].get('practice.oversample', 1))} → {pct(p['test_acc']['mean'])} at "
                f"{p['compute_seconds']['mean']:.0f} s" for p in pp))
    pe = {int(p["setting"].get("practice.oversample", 1)): p for p in points(runs, "prune_curve")}
    pr = {int(p["setting"].get("practice.oversample", 1)): p for p in points(runs, "prune_random")}
    for k in sorted(set(pe) & set(pr)):
        why["prune_compute_ratio"].append(
            f"k={k}: entropy keep {pct(pe[k]['test_acc']['mean'])} vs random keep {pct(pr[k]['test_acc']['mean'])}, "
            f"label fidelity {pct(pe[k]['label_fidelity']['mean'])} vs {pct(pr[k]['label_fidelity']['mean'])}")
    why["prune_compute_ratio"].append(f"DP key point: {pct(key['test_acc']['mean'])} at "
                                      f"{key['compute_seconds']['mean']:.0f} s modelled compute")
    d = H["guidance_cost_ratio_detail"]
    why["guidance_cost_ratio"].append("guided/plain cost and test accuracy per schedule: " + ", ".join(
        f"{k}: {v['cost_ratio']:.2f}× → {pct(v['test_acc'])} (val {pct(v['val_acc'])})"
        for k, v in d["per_schedule"].items() if v["cost_ratio"] is not None))
    for k, g in G.items():
        if g["status"] != "met":
            why[k].insert(0, f"goal {g['goal']} {g['status']}: {g['bound'] if g['bound'] != '=' else ''}"
                             f"{g['value']:.2f}" if g["value"] is not None else f"goal {g['goal']} {g['status']}")
    return dict(why)
