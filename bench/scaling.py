"""The paper's scaling claim on the embedded default: static's frontier over (samples, iterations), DP's and the
unguided loop's trajectories, over several generators — and the samples and iterations ratios at static's best.

    python -m bench scaling --plan                      # the grid, what is done, the modelled time left
    python -m bench scaling [--stop-after MIN] [key=value ...]   # run what is missing, then analyse
    python -m bench scaling --analyse                   # tables, scaling.json and figures from the committed cells

The grid (paper Sec. 5 / Fig. 1 and 5, Table 1), every run through the job's own run path (``job.run_job``):

* **Generators** as replicates: generator seeds of the default recipe (``generator.seed``), each with its own plain
  sample stream (``sampling.seed_offset`` = 1,000,000 × seed): a generator's seed moves static by ~3 points, more than
  DP's effect, so every headline interval is a bootstrap over generators.
* **Static frontier**: pools that are prefixes of the generator's stream (sample i has seed offset + i, so a pool of
  n is the first n samples: each run copies the shards that earlier runs of the generator hold — the pool's own donor
  reuse — and samples only the rest), each trained over a ladder of iteration budgets. The ladder is *branched* (deliberate/branch.py): one
  stable-phase trunk per pool (``learner.decay_frac=0``, fixed warm-up) keeps its state where each budget's decay
  starts, and each budget's run is that state plus its own decay — the run of that budget, bit for bit, for the cost
  of its decay. Learner seeds within each generator.
* **DP and the unguided loop** (ω = 0) at several sample budgets (``practice.max_samples``), with the same branched
  ladder: each branch is DP's decayed model at that point of its trajectory (samples it had then, iterations).

Each finished cell — one (generator, learner seed, method, size, iterations) run directory — writes a small JSON
to ``bench/results/scaling/cells/``; committed, they let the study continue on another machine without recomputing,
and ``--analyse`` reads only them. Selection uses validation only: the best static cell is the highest mean
validation accuracy; each cell's run reads the held-out test split once, at its end (trunks never read it).
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .core import RESULTS, STUDIES, WORK, machine, stamp, write_result

DEFAULTS = {
    "generators": "0,1,2",
    "seeds": "0,1",
    "pools": "1000,2000,4000,8000,16000,32000",
    "budgets": "500,1000,2000,4000,8000",
    "dp_budgets": "2000,4000,8000",
    "methods": "static,dp,dynamic_unguided",
}
STREAM_OFFSET = 1_000_000  # sampling.seed_offset = STREAM_OFFSET × generator seed: one plain stream per generator
MAX_EPOCHS = 256  # a pool's ladder stops at the first budget giving it >= this many epochs (it has plateaued by then)
# modelled rates on 2 CPU cores (replaced by the rates of finished cells): seconds per learner iteration
# (evaluation included), per plain sample, per guided sample
RATES = {"iteration": 0.07, "plain": 0.035, "guided": 0.08}


@dataclass(frozen=True)
class Trunk:
    """One stable-phase run: (generator, learner seed, method, size) with its ladder of branch budgets."""

    generator: int | str  # a generator seed, or "real": the real generator-training images (generation/real.py)
    seed: int
    method: str
    size: int  # static: the pool; DP / unguided: practice.max_samples
    budgets: tuple

    @property
    def name(self) -> str:
        g = "real" if self.generator == "real" else f"g{self.generator}"
        return f"{g}-s{self.seed}-{self.method}-{self.size}"

    def cell(self, budget: int) -> str:
        return f"{self.name}-it{budget}"


def ladder(size: int, budgets: list[int], method: str, batch: int = 128) -> tuple:
    """A static pool's budgets, up to the first that gives it >= MAX_EPOCHS epochs; DP and the unguided loop, whose
    pools grow, get every budget."""
    if method != "static":
        return tuple(budgets)
    out = []
    for b in sorted(budgets):
        out.append(b)
        if b * batch / size >= MAX_EPOCHS:
            break
    return tuple(out)


def plan(args) -> list[Trunk]:
    """The trunks, in the order they run: generator by generator; within one, learner seed by seed; within a
    seed the static pools of the required sizes (1k, 4k, 16k, largest) first, then DP and the unguided loop at
    the largest budget, then the other sizes and budgets."""
    ints = lambda s: [int(v) for v in str(s).split(",") if v.strip()]  # noqa: E731
    pools, budgets, dp_budgets = ints(args.pools), ints(args.budgets), ints(args.dp_budgets)
    methods = [m for m in args.methods.split(",") if m]
    first = {min(pools), max(pools), *[p for p in pools if p in (4000, 16000)]}
    out = []
    for i, g in enumerate(ints(args.generators)):
        for s in ints(args.seeds):
            items = [(1.5, args.real_size, "real")] if i == 0 and args.real_size else []
            if "static" in methods:
                items += [(0 if p in first else 2, p, "static") for p in pools]
            for m in ("dp", "dynamic_unguided"):
                if m in methods:
                    items += [(1 if b == max(dp_budgets) else 3, b, m) for b in dp_budgets]
            for _, size, m in sorted(items, key=lambda t: (t[0], t[2] != "static", t[2], t[1])):
                if m == "real":  # the real-data learner of the same recipe, once per learner seed
                    out.append(Trunk("real", s, "static", size, ladder(size, budgets, "static")))
                else:
                    out.append(Trunk(g, s, m, size, ladder(size, budgets, m)))
    return out


# ------------------------------------------------------------------------------------------------ configs
def base_overrides(args, generator: int | str) -> list[str]:
    work = Path(args.work)
    common = ["run.progress=" + ("true" if args.progress else "false"), f"learner.warmup_iterations={args.warmup}"]
    if generator == "real":
        return [*common, "generator.name=real_images", *args.overrides]
    return [*common, f"generator.seed={generator}", f"generator.cache_dir={work / 'generators'}",
            f"sampling.seed_offset={STREAM_OFFSET * generator}", *args.overrides]


def trunk_config(args, t: Trunk):
    from deliberate.branch import branch_point
    from deliberate.config import load_config

    keep = sorted({branch_point(b) for b in t.budgets})
    return load_config(None, base_overrides(args, t.generator) + [
        f"run.methods=[{t.method}]", f"run.seed={t.seed}", f"practice.max_samples={t.size}",
        f"practice.iterations={keep[-1]}", "learner.decay_frac=0", f"run.keep_checkpoints={keep}",
        "run.checkpoint_every=500"])


# --------------------------------------------------------------------------------------------------- runs
class Study:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.work)
        self.cells_dir = Path(args.results) / "cells"
        self.t0 = time.perf_counter()
        self.rates = dict(RATES)
        self.command = "python -m bench scaling " + " ".join(args.argv)

    def cell_file(self, name: str) -> Path:
        return self.cells_dir / f"{name}.json"

    def missing(self, t: Trunk) -> list[int]:
        return [b for b in t.budgets if not self.cell_file(t.cell(b)).exists()]

    def run_dir(self, t: Trunk, what: str) -> Path:
        return self.work / "runs" / t.name.split("-")[0] / t.name / what

    def modelled_seconds(self, trunks: list[Trunk]) -> float:
        """Seconds the missing cells should take at the current rates (a trunk: its stable phase plus the decay
        branches still missing; its samples; a generator stream not yet sampled)."""
        from deliberate.branch import branch_point

        total, streams = 0.0, set()
        largest = max(int(p) for p in self.args.pools.split(","))
        for t in trunks:
            miss = self.missing(t)
            if not miss:
                continue
            if t.generator != "real" and t.generator not in streams:  # its plain stream, sampled once
                streams.add(t.generator)
                held = max((sum(1 for _ in open(p / "manifest.jsonl")) for p in self.donors(t.generator)), default=0)
                total += max(0, largest - held * 1000) * self.rates["plain"]
            trunk_done = (self.run_dir(t, "trunk") / "summary.json").exists()
            its = 0 if trunk_done else branch_point(max(t.budgets))
            its += sum(b - branch_point(b) for b in miss)
            total += its * self.rates["iteration"]
            if t.method == "dp" and not trunk_done:
                total += (t.size - 1000) * self.rates["guided"]
            elif t.method == "dynamic_unguided" and not trunk_done:
                total += (t.size - 1000) * self.rates["plain"]
        return total

    def donors(self, generator: int) -> tuple:
        """Every pool of this generator's runs so far, largest first (a stream sampled earlier included): a run
        copies the plain shards they hold (sample i is the same in all of them) and samples only the rest."""
        root = self.work / "runs" / f"g{generator}"
        pools = [p for pat in ("*/trunk/methods/*/pool", "stream/methods/*/pool") for p in root.glob(pat)
                 if (p / "manifest.jsonl").exists()]
        return tuple(sorted(pools, key=lambda p: -(p / "manifest.jsonl").stat().st_size))

    def run_trunk(self, t: Trunk) -> None:
        from deliberate.branch import branch_config, branch_run
        from deliberate.job import run_job

        donors = () if t.generator == "real" else self.donors(t.generator)
        cfg = trunk_config(self.args, t)
        tdir = self.run_dir(t, "trunk")
        if not (tdir / "summary.json").exists():
            self.log(f"  trunk {t.name}: {cfg.practice.iterations} stable-phase iterations, "
                     f"kept at {list(cfg.run.keep_checkpoints)}")
            t0 = time.perf_counter()
            run_job(cfg, tdir, resume=(tdir / "config.yaml").exists(), held_out=False, donors=donors)
            self._rate(tdir, t.method, time.perf_counter() - t0)
        for b in self.missing(t):
            bdir = self.run_dir(t, f"it{b}")
            bcfg = branch_config(cfg, b)
            if not (bdir / "config.yaml").exists():
                shutil.rmtree(bdir.with_name(bdir.name + ".tmp"), ignore_errors=True)
                branch_run(tdir, t.method, bcfg, bdir)
            if not (bdir / "summary.json").exists():
                run_job(bcfg, bdir, resume=True)
            self.write_cell(t, b, bdir)

    def _rate(self, tdir: Path, method: str, wall: float) -> None:
        s = json.loads((tdir / "summary.json").read_text())["methods"][method]
        its = max(1, s["iterations"])
        self.rates["iteration"] = (s["seconds"]["training"] + s["seconds"]["evaluation"]) / its
        made = s["samples"] - s["reused_samples"] - (s["samples"] - 1000 if s["seconds"].get("guided_generation") else 0)
        if s["seconds"]["generation"] > 0 and made > 0:
            self.rates["plain"] = s["seconds"]["generation"] / made
        if s["seconds"].get("guided_generation"):
            self.rates["guided"] = s["seconds"]["guided_generation"] / max(1, s["samples"] - 1000)

    def write_cell(self, t: Trunk, budget: int, bdir: Path) -> None:
        from deliberate.branch import branch_point

        summary = json.loads((bdir / "summary.json").read_text())
        m = summary["methods"][t.method]
        fidelity = {} if t.generator == "real" else self.fidelity(bdir / "methods" / t.method / "pool")
        cell = {
            "cell": t.cell(budget), "generator": t.generator, "generator_id": summary["generator"]["generator_id"],
            "seed": t.seed, "method": t.method, "size": t.size, "iterations": budget,
            "samples": m["samples"], "rounds": m["rounds"], "val_acc": m["val_acc"], "best_val_acc": m["best_val_acc"],
            "test_acc": m["test_acc"], "seconds": m["seconds"], **fidelity,
            "run_dir": str(bdir.relative_to(self.work)), "branched_at": branch_point(budget),
            "machine": machine(), "device": self.device_name(), "finished": stamp(), "command": self.command,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),  # the study process's so far
        }
        write_result(self.cell_file(t.cell(budget)), cell)
        self.log(f"  cell {t.cell(budget)}: samples {m['samples']}, val {m['val_acc']:.4f}, test {m['test_acc']:.4f}")

    def device_name(self) -> str:
        import torch

        from deliberate.config import load_config
        from deliberate.job import resolve_device

        dev = resolve_device(load_config(None, list(self.args.overrides)).run.device)
        return torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.backends.cpu.get_cpu_capability()})"

    def fidelity(self, pool_dir: Path) -> dict:
        """Label fidelity of the cell's pool under the real-data reference classifier: plain samples and, for DP,
        the guided ones (the samples the loop added), with their mean reference entropy."""
        import torch

        from deliberate.generation.guidance import entropy
        from deliberate.practice.pool import open_pool

        ref = self.reference()
        pool = open_pool(pool_dir)
        omega = torch.as_tensor(pool.column("omega").astype(float))
        images, labels = pool.get(torch.arange(len(pool)))
        logits = ref.predict(images)
        ok = logits.argmax(-1) == labels
        h = entropy(logits)
        out = {}
        for name, mask in (("plain", omega == 0), ("added", omega > 0)):
            if mask.any():
                out[f"{name}_on_label"] = round(float(ok[mask].float().mean()), 4)
                out[f"{name}_ref_entropy"] = round(float(h[mask].mean()), 4)
                out[f"{name}_count"] = int(mask.sum())
        return out

    def reference(self):
        if not hasattr(self, "_reference"):
            from deliberate.config import load_config

            from .core import setup

            cfg = load_config(None, list(self.args.overrides))  # the standard instrument: the default learner recipe
            s = setup(cfg, generator=False, reference=True, reference_iterations=self.args.reference_iterations)
            self._reference, self.ref_info = s.reference, s.ref_info
        return self._reference

    def log(self, msg: str) -> None:
        el = time.perf_counter() - self.t0
        print(f"[{int(el) // 3600}:{int(el) % 3600 // 60:02d}:{int(el) % 60:02d}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------- command
@STUDIES.register("scaling")
def main(argv: list[str]) -> int:
    """Static frontier, DP and unguided-loop curves over generators; samples and iterations ratios at static's best."""
    p = argparse.ArgumentParser(prog="python -m bench scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for k, v in DEFAULTS.items():
        p.add_argument("--" + k.replace("_", "-"), default=v, help=f"comma-separated (default {v})")
    p.add_argument("--work", default=str(WORK / "scaling"), help="run directories (default bench/work/scaling)")
    p.add_argument("--results", default=str(RESULTS / "scaling"), help="cells, scaling.json, figures")
    p.add_argument("--plan", action="store_true", help="print the grid, what is done and the modelled time; run nothing")
    p.add_argument("--analyse", action="store_true", help="only aggregate the committed cells")
    p.add_argument("--stop-after", type=float, default=0, help="start no new trunk after this many minutes")
    p.add_argument("--progress", action="store_true", help="progress bars of every run")
    p.add_argument("--warmup", type=int, default=100,
                   help="learner.warmup_iterations of every run: one fixed warm-up, so all budgets share one trunk")
    p.add_argument("--reference-iterations", type=int, default=2000,
                   help="training iterations of the real-data reference classifier that measures label fidelity")
    p.add_argument("overrides", nargs="*", help="config overrides for every run (e.g. run.device=cuda)")
    p.add_argument("--real-size", type=int, default=-1, help="pool of the real-data learner (the same recipe on "
                   "real generator-training images; default: the whole generator split; 0: none)")
    args = p.parse_args(argv)
    args.argv = argv
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        p.error(f"not a key=value override: {bad[0]}")
    from deliberate.config import ConfigError

    study = Study(args)
    try:
        if args.real_size < 0:
            from deliberate.config import load_config
            from deliberate.job import load_real_splits

            args.real_size = len(load_real_splits(load_config(None, list(args.overrides))).gen_train.labels)
        trunks = plan(args)
        for g in {t.generator for t in trunks}:  # validates the overrides before any work
            trunk_config(args, next(t for t in trunks if t.generator == g))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    todo = [t for t in trunks if study.missing(t)]
    cells = sum(len(t.budgets) for t in trunks)
    left = study.modelled_seconds(trunks)
    print(f"scaling study: {len(trunks)} trunks, {cells} cells, {cells - sum(len(study.missing(t)) for t in trunks)} "
          f"done; modelled time left {left / 3600:.1f} h at {study.rates}")
    if args.plan:
        for t in trunks:
            miss = study.missing(t)
            print(f"  {t.name:<32} budgets {list(t.budgets)}  " + ("done" if not miss else f"missing {miss}"))
        return 0
    if not args.analyse:
        for k, t in enumerate(todo):
            if args.stop_after and time.perf_counter() - study.t0 > args.stop_after * 60:
                study.log(f"--stop-after {args.stop_after} min reached: {len(todo) - k} trunks left for the next run")
                break
            study.log(f"[{k + 1}/{len(todo)}] {t.name}  (about {study.modelled_seconds(todo[k:]) / 60:.0f} min left)")
            study.run_trunk(t)
    from .scaling_analysis import analyse

    analyse(Path(args.results), log=study.log)
    return 0
