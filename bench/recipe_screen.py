"""Generator recipes side by side at the default job's scale, several at once (made for one GPU).

    python -m bench recipe-screen run --work DIR [--device cuda] [--parallel 5] [--seeds 0,1] NAME="k=v k=v" ...
                                      [--common "k=v ..."]
    python -m bench recipe-screen table DIR [DIR ...] [--out bench/results]

``run``: for each recipe (a name and its generator overrides) one ``job-ladder run --sizes 3000`` study — the
recipe's generator trained from scratch, then static on the first 3,000 plain samples of its stream for each learner
seed (2,000 iterations, the default job's settings), the held-out test split read once per run by the harness —
in ``DIR/NAME``, up to ``--parallel`` recipes at a time, each with an equal share of the CPU threads. Every recipe
gets its own generator cache and a copy of ``cache/reference`` (the real-data reference classifier, so label
fidelity is measured by the same network everywhere and not retrained per recipe). A recipe already recorded in
``DIR`` is not rerun.

``table``: reads the recipes of one or more ``DIR``s and writes ``recipe_screen.{json,md}`` in ``--out``: per recipe
the generator's training time (wall, shared with the other recipes of its batch), plain samples' label fidelity,
static validation and test accuracy per learner seed; then per *family* (a recipe's overrides without
``generator.seed``) the mean and standard error over generator seeds — how much of a difference between two
recipes is the generator's own training randomness. Choices are made on validation accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .core import RESULTS, ROOT, STUDIES
from .curves import se


def parse_recipe(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition("=")
    if not sep or not name or "." in name or not all(c.isalnum() or c in "_-" for c in name):
        raise SystemExit(f"recipe {text!r}: expected NAME=\"section.key=value ...\" (NAME of letters, digits, _ or -)")
    words = overrides.split()
    bad = [w for w in words if "=" not in w or "." not in w.split("=", 1)[0]]
    if bad:
        raise SystemExit(f"recipe {name}: {bad[0]!r} is not a section.key=value override")
    return name, words


def run_one(name: str, overrides: list[str], args, threads: int) -> dict:
    d = Path(args.work) / name
    done = d / "recipe.json"
    if done.exists():
        return json.loads(done.read_text())
    (d / "cache").mkdir(parents=True, exist_ok=True)
    ref = ROOT / "cache" / "reference"
    if ref.is_dir() and not (d / "cache" / "reference").exists():
        shutil.copytree(ref, d / "cache" / "reference")
    cmd = [sys.executable, "-m", "bench", "job-ladder", "run", "--sizes", "3000", "--seeds", args.seeds,
           "--device", args.device, "--work", str(d / "work"),
           f"generator.cache_dir={d / 'cache' / 'generators'}", *args.common.split(), *overrides]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    with open(d / "log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    wall = round(time.perf_counter() - t0, 1)
    if rc != 0:
        print(f"{name}: failed (exit {rc}); see {d / 'log'}", file=sys.stderr)
        return {"name": name, "rc": rc}
    metas = list((d / "cache" / "generators").glob("*/deliberate_generator.json"))
    meta = json.loads(metas[0].read_text()) if metas else {}
    rec = {"name": name, "overrides": overrides, "common": args.common.split(), "device": args.device,
           "card": card(),
           "parallel": args.parallel, "threads": threads, "wall_seconds": wall, "rc": rc,
           "generator": {k: meta.get(k) for k in ("generator_id", "train_seconds", "train_cpu_seconds",
                                                  "train_processes", "final_loss")},
           "ladder": json.loads((d / "work" / "ladder.json").read_text())}
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    tmp.replace(done)
    print(f"{name}: done in {wall:.0f} s", flush=True)
    return rec


def card() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def run(args) -> int:
    recipes = [parse_recipe(r) for r in args.recipes]
    names = [n for n, _ in recipes]
    if len(set(names)) != len(names):
        raise SystemExit(f"recipe names repeat: {names}")
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    with ThreadPoolExecutor(args.parallel) as pool:
        recs = list(pool.map(lambda r: run_one(r[0], r[1], args, threads), recipes))
    return 0 if all(r.get("rc") == 0 for r in recs) else 1


def family(overrides: list[str]) -> str:
    rest = [o for o in overrides if not o.startswith("generator.seed=")]
    return " ".join(rest) or "(default)"


def gen_seed(overrides: list[str]) -> int:
    return next((int(o.split("=", 1)[1]) for o in overrides if o.startswith("generator.seed=")), 0)


def table(args) -> int:
    recs = []
    for w in args.work:
        for f in sorted(Path(w).glob("*/recipe.json")):
            r = json.loads(f.read_text())
            if r.get("rc") == 0:
                recs.append(r)
    if not recs:
        raise SystemExit(f"no finished recipe under {args.work}")
    rows = []
    for r in recs:
        pts = sorted(r["ladder"]["points"], key=lambda p: p["seed"])
        rows.append({"name": r["name"], "family": family(r["overrides"]), "generator_seed": gen_seed(r["overrides"]),
                     "generator_id": r["generator"]["generator_id"],
                     "train_seconds": r["generator"]["train_seconds"], "device": r.get("card") or r["device"],
                     "parallel": r["parallel"], "label_fidelity": pts[0]["label_fidelity"],
                     "learner_seeds": [p["seed"] for p in pts], "val_acc": [p["val_acc"] for p in pts],
                     "test_acc": [p["test_acc"] for p in pts],
                     "val_mean": float(np.mean([p["val_acc"] for p in pts])),
                     "test_mean": float(np.mean([p["test_acc"] for p in pts])),
                     "command": r["ladder"]["command"]})
    fams = {}
    for row in rows:
        fams.setdefault(row["family"], []).append(row)
    families = []
    for fam, rs in fams.items():
        v, t = [r["val_mean"] for r in rs], [r["test_mean"] for r in rs]
        families.append({"family": fam, "generator_seeds": sorted(r["generator_seed"] for r in rs),
                         "val_mean": float(np.mean(v)), "val_se": se(v) if len(v) > 1 else None,
                         "test_mean": float(np.mean(t)), "test_se": se(t) if len(t) > 1 else None,
                         "fidelity_mean": float(np.mean([r["label_fidelity"] for r in rs]))})
    families.sort(key=lambda f: -f["val_mean"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench recipe-screen " + " ".join(args.argv)
    (out / "recipe_screen.json").write_text(json.dumps({"command": command, "recipes": rows, "families": families},
                                                       indent=1))

    def pct(x):
        return f"{100 * x:.2f}"

    lines = [f"Made by `{command}` from recipes run by `python -m bench recipe-screen run` (each a "
             "`python -m bench job-ladder run --sizes 3000` with its overrides: static on the first 3,000 plain samples, "
             "2,000 iterations, learner seeds as listed; held-out test read once per run). Training seconds are wall "
             "time with the recipe's batch sharing the device.", "",
             "| recipe | overrides | gen. seed | device | training s | fidelity % | static val % per learner seed | "
             "static test % per learner seed |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["family"], r["generator_seed"])):
        lines.append(f"| {r['name']} | `{r['family']}` | {r['generator_seed']} | {r['device']} (×{r['parallel']}) | "
                     f"{r['train_seconds']:.0f} | {100 * r['label_fidelity']:.1f} | "
                     f"{' / '.join(pct(x) for x in r['val_acc'])} | {' / '.join(pct(x) for x in r['test_acc'])} |")
    lines += ["", "| family (overrides but the generator seed) | generator seeds | fidelity % | static val % "
              "(mean ± SE over generator seeds) | static test % |", "|---|---|---|---|---|"]
    for f in families:
        pm = (lambda m, s: f"{pct(m)}" + (f" ± {pct(s)}" if s is not None else ""))
        lines.append(f"| `{f['family']}` | {', '.join(map(str, f['generator_seeds']))} | "
                     f"{100 * f['fidelity_mean']:.1f} | {pm(f['val_mean'], f['val_se'])} | "
                     f"{pm(f['test_mean'], f['test_se'])} |")
    (out / "recipe_screen.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


@STUDIES.register("recipe-screen")
def main(argv: list[str]) -> int:
    """Generator recipes side by side at the default job's scale (static on 3,000 samples), several at once."""
    ap = argparse.ArgumentParser(prog="python -m bench recipe-screen", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--work", required=True)
    r.add_argument("--device", default="auto")
    r.add_argument("--parallel", type=int, default=1)
    r.add_argument("--seeds", default="0,1")
    r.add_argument("--common", default="", help="overrides given to every recipe (e.g. data.root=...)")
    r.add_argument("recipes", nargs="+", metavar='NAME="k=v ..."')
    t = sub.add_parser("table")
    t.add_argument("work", nargs="+")
    t.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    args.argv = argv
    if args.cmd == "run" and args.parallel < 1:
        raise SystemExit("--parallel must be at least 1")
    return run(args) if args.cmd == "run" else table(args)
