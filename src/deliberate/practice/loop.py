"""Algorithm 1 of the paper, top to bottom.

    pool ← N plain samples                                     (step 1; ω = 0: the classifier is untrained)
    for it in 1..iterations:
        train on a mini-batch drawn uniformly from the pool    (step 2)
        every τ iterations: validation accuracy → trigger      (step 3)
        trigger fired, LR constant, budget left:               (steps 4-5)
            pool ← pool ∪ P samples guided by the current classifier

The held-out test split is not an argument: nothing here can read it.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .. import faults
from ..data.splits import Split
from ..generation.base import sampling_kwargs
from ..generation.guidance import build_guide
from ..generation.label_check import replace_off_label
from ..learning.learner import Learner
from .loader import TrainFeed
from .pool import Pool, ShardMeta, donor_shard
from .trigger import PatienceTrigger


@dataclass
class PracticeResult:
    method: str
    val_acc: float
    best_val_acc: float
    samples: int
    iterations: int
    rounds: int
    seconds: dict = field(default_factory=dict)
    nonfinite_grads: int = 0  # guidance gradients that were NaN/Inf: that sample took that step unguided
    reused: int = 0  # plain samples copied from an earlier method's identical shards (grow's donors), not sampled


def grow(pool: Pool, count: int, generator, cfg, round_: int, guide=None, progress: bool = False,
         donors: Sequence[Pool] = ()) -> dict:
    """Generate ``count`` samples into ``pool``, shard by shard. Sample i of the pool has label i mod C and seed
    ``sampling.seed_offset + i``, so any pool is reproducible sample by sample. A plain shard that one of the
    ``donors`` (pools of methods run earlier in the same job) already holds, made identically
    (:meth:`Pool.same_shard`), is copied instead of sampled again: the bytes are the ones sampling would give."""
    s = cfg.sampling
    stats = {"seconds": 0.0, "guided_steps": 0, "nonfinite_grads": 0, "reused": 0}
    omega = guide.omega if guide is not None else 0.0
    start = len(pool)
    bar = tqdm(total=count, desc=f"round {round_}: generate" + (" (guided)" if guide and guide.omega else ""),
               disable=not progress, dynamic_ncols=True, leave=False)
    for lo in range(start, start + count, s.shard_size):
        hi = min(start + count, lo + s.shard_size)
        idx = torch.arange(lo, hi)
        labels = idx % generator.num_classes
        seeds = [s.seed_offset + int(i) for i in idx]
        meta = ShardMeta.made_by(round_, omega, s, generator)
        hit = donor_shard(donors, lo, labels, seeds, meta) if omega == 0 else None
        if hit is not None:
            faults.point("generate")
            pool.append(hit[0], labels, seeds, hit[1], meta, extra={"nonfinite_grads": 0, "reused": True})
            stats["reused"] += hi - lo
            bar.update(hi - lo)
            continue
        out = generator.sample(labels, seeds, **sampling_kwargs(s), guide=guide, progress=progress)
        extra = {"nonfinite_grads": out.stats["nonfinite_grads"]}
        if guide is not None and guide.omega > 0 and cfg.guidance.label_check != "none":
            t0 = time.perf_counter()
            extra["replaced"] = replace_off_label(generator, out, labels, seeds, sampling_kwargs(s), guide,
                                                  cfg.guidance.check_timesteps)
            out.stats["seconds"] += time.perf_counter() - t0  # the check's cost is guided generation's
        faults.point("generate")
        pool.append(out.images, labels, seeds, out.score, meta, extra=extra)
        for k in ("seconds", "guided_steps", "nonfinite_grads"):
            stats[k] += out.stats[k]
        bar.update(hi - lo)
    bar.close()
    return stats


def practice(spec: "MethodSpec", cfg, generator, learner: Learner, val: Split, pool: Pool, log=None,
             progress: bool = True, ckpt=None, donors: Sequence[Pool] = ()) -> PracticeResult:
    """Algorithm 1. With ``ckpt`` (a :class:`~deliberate.checkpoint.Checkpointer`), the latest saved state is restored
    first and the state is saved after the initial pool, when a round starts and ends, every
    ``run.checkpoint_every`` iterations and at the end: a killed run resumes exactly where it was."""
    p = cfg.practice
    seconds = {"generation": 0.0, "guided_generation": 0.0, "training": 0.0, "evaluation": 0.0}
    counters = {"guided_steps": 0, "nonfinite_grads": 0}
    rounds, val_acc, pending = 0, 0.0, None
    trigger = PatienceTrigger(p.patience, p.patience_growth, p.min_delta)
    batch_rng = torch.Generator().manual_seed(cfg.run.seed + 17)

    def save(pending_step: dict | None = None, keep: int | None = None) -> None:
        if ckpt is not None:
            ckpt.save(learner, trigger, batch_rng, pool, rounds=rounds, seconds=seconds, val_acc=val_acc,
                      counters=counters, pending=pending_step and {**pending_step, "round": rounds},
                      path=ckpt.kept_path(keep) if keep else None)

    def finish(step: dict) -> None:
        """Steps 4-5, second half: fill the round the step started (if any) up to its target, log, checkpoint."""
        if "target" in step:
            with learner.frozen() as clf:
                guide = build_guide(clf, cfg.guidance, omega=spec.omega)
                st = grow(pool, step["target"] - len(pool), generator, cfg, rounds, guide=guide, progress=progress)
            seconds["guided_generation" if spec.omega > 0 else "generation"] += st["seconds"]
            for k in counters:
                counters[k] += st[k]
            trigger.added()
        record = {"method": spec.name, "iteration": step["iteration"], "loss": step["loss"], "val_acc": val_acc,
                  "best_val_acc": trigger.best, "stale": trigger.stale, "t_max": trigger.t_max, "pool": len(pool),
                  "added": step["added"], "round": rounds, "lr": step["lr"],
                  "nonfinite_grads": counters["nonfinite_grads"],
                  **({"blocked": step["blocked"]} if step["blocked"] else {})}
        if log is not None:
            log(record)
        done = step["iteration"]
        if "target" in step or done == p.iterations or (ckpt is not None and ckpt.every and done % ckpt.every == 0):
            save()

    state = ckpt.restore(learner, trigger, batch_rng, pool) if ckpt is not None else None
    if state is not None:
        rounds, val_acc, pending = state["rounds"], state["val_acc"], state["pending"]
        seconds.update(state["seconds"])
        counters.update(state["counters"])
    elif len(pool) < spec.initial:
        # Step 1: the initial pool, as the method builds it (plain sampling by default; after a crash: continued
        # from its last complete shard).
        for k, v in spec.build_pool(pool, cfg, generator, learner.device, progress, donors=donors)["seconds"].items():
            seconds[k] = seconds.get(k, 0.0) + v
        save()
    if pending is not None:  # a round had started when the run was killed: complete it
        finish(pending)

    feed = TrainFeed(pool, learner, batch_rng, cfg.learner.batch_size, cfg.learner.loader_workers)
    bar = tqdm(range(learner.iteration, p.iterations), desc=f"{spec.name}: train", disable=not progress,
               dynamic_ncols=True)
    for it in bar:
        # Step 2: a mini-batch drawn uniformly from the current pool (this process's share of it; read and augmented
        # by the loader's workers: loader.py).
        t0 = time.perf_counter()
        loss = learner.step(*feed.next(), prepared=True)
        seconds["training"] += time.perf_counter() - t0
        faults.point("iteration")
        done = it + 1
        if ckpt is not None and done in ckpt.keep:  # a decay may branch from here (run.keep_checkpoints)
            save(keep=done)
        if done % p.eval_every and done != p.iterations:
            if ckpt is not None and ckpt.every and done % ckpt.every == 0:
                save()
            continue

        # Step 3: validation on real data drives the patience counter.
        t0 = time.perf_counter()
        val_acc = learner.accuracy(val.images, val.labels)
        seconds["evaluation"] += time.perf_counter() - t0
        fired = trigger.update(val_acc)

        # Steps 4-5: stuck → add P samples guided by the current classifier, only while the LR is constant.
        step = {"iteration": done, "loss": loss, "lr": learner.opt.param_groups[0]["lr"], "added": 0, "blocked": ""}
        if fired and spec.add > 0:
            if not learner.schedule.is_stable(done):
                step["blocked"] = "lr not constant"
            elif len(pool) + spec.add > spec.max_samples:
                step["blocked"] = "sample budget"
            else:
                rounds += 1
                step.update(added=spec.add, target=len(pool) + spec.add)
                save(step)  # the round's starting state: a crash from here on resumes inside the round
                feed.reset()  # batches from here on are drawn over the grown pool
        finish(step)
        bar.set_postfix(val=f"{val_acc:.3f}", pool=len(pool))
    bar.close()
    feed.close()
    return PracticeResult(spec.name, val_acc, trigger.best, len(pool), p.iterations, rounds,
                          {k: round(v, 2) for k, v in seconds.items()}, counters["nonfinite_grads"],
                          sum(r["count"] for r in pool.records if r.get("reused")))  # from the manifest: resume-proof
