"""Training-state checkpoints, so that a killed run resumes exactly where it was.

One file per method, ``methods/<name>/checkpoint.pt``, replaced atomically (temp file, fsync, rename). It holds
everything the practice loop (Algorithm 1) carries from one iteration to the next:

* the learner: weights, optimizer, EMA, its augmentation RNG, and ``iteration`` (which is also the position of the
  warmup-stable-decay LR schedule),
* the patience trigger (best validation score, stale count, additions), the number of rounds, the loop's
  mini-batch RNG and the process-global torch / NumPy / Python RNGs,
* the pool's manifest position (samples, shards, last shard's SHA-256) and the byte length of ``stats.jsonl``,
* the method spec and the full config (a resume under a config that changes the results is refused, naming the key),
* ``pending``: a generation round that has started (trigger fired, guide fixed) but may not have finished; a resume
  completes it from the pool's current length, since sample i depends only on its seed and the guiding classifier.

The weights of the classifier that guided round r are kept in ``methods/<name>/guides/r{r:03d}.safetensors`` so
that ``deliberate check --repair`` can regenerate a damaged guided shard.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import yaml

from . import distributed
from .config import Config, load_config
from .fileio import DiskFullError, atomic_write  # noqa: F401  (DiskFullError: re-exported for callers)

VERSION = 1
CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
# Keys that may differ between a run and its resume: where and how it runs, never what it computes.
# (Bitwise equality also needs the same run.threads: see docs/robustness.md.)
RUNTIME_KEYS = frozenset({"run.progress", "run.device", "run.threads", "run.out_dir", "run.name",
                          "run.checkpoint_every", "run.keep_checkpoints", "data.root", "data.workers", "generator.path",
                          "generator.source", "generator.cache_dir", "learner.loader_workers"})


class ResumeError(RuntimeError):
    """A run directory that cannot be resumed as it stands."""


class CheckpointError(ResumeError):
    """A checkpoint that is unreadable or does not match the config, the learner or the pool."""


# ------------------------------------------------------------------------------------------------- config
def flatten(d: dict) -> dict:
    """``{"learner": {"lr": 1e-3}}`` → ``{"learner.lr": 1e-3}`` (configs are two levels deep)."""
    return {f"{sec}.{k}": v for sec, vals in d.items() for k, v in (vals or {}).items()}


def config_changes(old: dict, new: dict) -> list[str]:
    """Dotted keys, other than :data:`RUNTIME_KEYS`, whose values differ, as ``key: old → new`` (a key missing from
    a config written by an older version counts as its default)."""
    defaults = flatten(Config().to_dict())
    a, b = {**defaults, **flatten(old)}, {**defaults, **flatten(new)}
    return [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k not in RUNTIME_KEYS and a.get(k) != b.get(k)]


def require_same_config(old: dict, new: dict, what: str) -> None:
    changes = config_changes(old, new)
    if changes:
        raise ResumeError(f"the config differs from the one {what} was made with, in a way that changes the "
                          f"results: {'; '.join(changes)}. Resume with the original values (only "
                          f"{', '.join(sorted(RUNTIME_KEYS))} may change).")


def resume_config(run_dir: str | Path, overrides: list[str] | None = None):
    """The config of an existing run (``RUN_DIR/config.yaml``) with ``overrides``; refuses overrides that change
    the results (naming the key)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ResumeError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = load_config(path, overrides)
    require_same_config(yaml.safe_load(path.read_text()), cfg.to_dict(), f"run {run_dir}")
    return cfg


# ----------------------------------------------------------------------------------------------------- RNG
def seed_all(seed: int) -> None:
    """Seed the process-global NumPy and Python RNGs (timm's mixup draws from NumPy's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels where torch offers them (a no-op for the CPU kernels we use, which already are)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "python": random.getstate(),
          "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    name, keys, pos, has_gauss, gauss = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# ------------------------------------------------------------------------------------------------ checkpoints
class Checkpointer:
    """Saves and restores one method's training state in ``method_dir`` (see the module docstring)."""

    def __init__(self, method_dir: str | Path, cfg, spec, log_path: str | Path | None = None):
        self.dir = Path(method_dir)
        self.cfg, self.spec = cfg, spec
        self.path = self.dir / CHECKPOINT
        self.log_path = Path(log_path) if log_path else None
        self.every = cfg.run.checkpoint_every
        self.keep = frozenset(cfg.run.keep_checkpoints)  # iterations whose state is also kept (run.keep_checkpoints)

    def kept_path(self, iteration: int) -> Path:
        """Where the state after ``iteration`` (before its evaluation) is kept: the start of a branched decay."""
        return self.dir / "kept" / f"it{iteration:06d}.pt"

    def guide_path(self, round_: int) -> Path:
        return self.dir / "guides" / f"r{round_:03d}.safetensors"

    def save(self, learner, trigger, batch_rng: torch.Generator, pool, *, rounds: int, seconds: dict,
             val_acc: float, counters: dict, pending: dict | None = None, path: Path | None = None) -> None:
        """Save the training state to the checkpoint (or to ``path``: a kept copy, :meth:`kept_path`)."""
        if pending is not None:  # the classifier that guides this round, for repairs
            from safetensors.torch import save_file

            sd = {k: v.detach().cpu().contiguous() for k, v in learner.eval_model.state_dict().items()}
            self.guide_path(pending["round"]).parent.mkdir(exist_ok=True)
            atomic_write(self.guide_path(pending["round"]), lambda p: save_file(sd, p))
        state = {
            "version": VERSION, "config": self.cfg.to_dict(), "spec": asdict(self.spec),
            "learner": learner.state_dict(), "trigger": trigger.state_dict(), "batch_rng": batch_rng.get_state(),
            "rng": rng_state(), "rounds": rounds, "seconds": dict(seconds), "val_acc": val_acc,
            "counters": dict(counters), "pending": pending,
            "pool": {"samples": len(pool), "shards": len(pool.records),
                     "last_sha256": pool.records[-1]["sha256"] if pool.records else None},
            "log_bytes": self.log_path.stat().st_size if self.log_path and self.log_path.exists() else 0,
        }
        target = Path(path) if path is not None else self.path
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda p: torch.save(state, p), fault="checkpoint")

    def _read(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"checkpoint {self.path} is unreadable ({type(e).__name__}: {e})") from None
        if state.get("version") != VERSION:
            raise CheckpointError(f"checkpoint {self.path} has format version {state.get('version')}, "
                                  f"this deliberate writes {VERSION}")
        require_same_config(state["config"], self.cfg.to_dict(), f"checkpoint {self.path}")
        if state["spec"] != asdict(self.spec):
            raise CheckpointError(f"checkpoint {self.path} was made for method {state['spec']}, the run now asks "
                                  f"for {asdict(self.spec)}")
        return state

    def _load_learner(self, learner, state: dict) -> None:
        try:
            learner.load_state_dict(state["learner"])
        except (RuntimeError, KeyError, ValueError) as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"learner checkpoint {self.path} does not match the learner built from "
                                  f"learner.model={self.cfg.learner.model!r} (learner.* config): {first}") from None

    def restore(self, learner, trigger, batch_rng: torch.Generator, pool) -> dict | None:
        """Load the latest state into the given objects; returns the loop's scalars (rounds, seconds, val_acc,
        counters, pending) or None when training has not checkpointed yet. Rewinds ``stats.jsonl`` to the
        checkpoint and checks the pool against the recorded manifest position."""
        state = self._read()
        if state is None:
            if len(pool) > self.spec.initial:
                raise CheckpointError(f"{self.dir}: the pool holds {len(pool)} samples but there is no checkpoint "
                                      f"(expected at most the {self.spec.initial} initial samples)")
            self._rewind_log(0)
            return None
        self._load_learner(learner, state)
        trigger.load_state_dict(state["trigger"])
        batch_rng.set_state(state["batch_rng"])
        set_rng_state(state["rng"])
        p, pending = state["pool"], state["pending"]
        lo, hi = p["samples"], (pending["target"] if pending else p["samples"])
        if not lo <= len(pool) <= hi or (p["shards"] and pool.records[p["shards"] - 1]["sha256"] != p["last_sha256"]):
            raise CheckpointError(f"pool {pool.root} holds {len(pool)} samples in {len(pool.records)} shards, "
                                  f"which does not continue the checkpoint at iteration {learner.iteration} "
                                  f"({lo}{'' if lo == hi else f'..{hi}'} samples, shard {p['shards']} "
                                  f"sha256 {p['last_sha256']})")
        self._rewind_log(state["log_bytes"])
        return {k: state[k] for k in ("rounds", "seconds", "val_acc", "counters", "pending")}

    def _rewind_log(self, size: int) -> None:
        """Drop log records written after the checkpoint (they are written again, identically)."""
        if self.log_path and self.log_path.exists() and self.log_path.stat().st_size > size:
            with open(self.log_path, "r+b") as f:
                f.truncate(size)

    # ------------------------------------------------------------------------------------- finished methods
    def finished(self) -> dict | None:
        """The recorded result of a method that completed before the crash, or None."""
        path = self.dir / RESULT
        return json.loads(path.read_text()) if path.exists() else None

    def mark_finished(self, result: dict) -> None:
        atomic_write(self.dir / RESULT, lambda p: p.write_text(json.dumps(result, indent=1)))

    def load_final(self, learner) -> None:
        """Load the final learner of a finished method (for the held-out evaluation of a resumed run)."""
        state = self._read()
        if state is None:
            raise CheckpointError(f"{self.dir} is marked finished but its checkpoint {self.path} is missing")
        self._load_learner(learner, state)


class ReadOnlyCheckpointer(Checkpointer):
    """The checkpointer of ranks other than 0: it restores (every rank resumes from the same state), never writes."""

    def save(self, *a, **k) -> None:
        pass

    def mark_finished(self, result: dict) -> None:
        pass

    def _rewind_log(self, size: int) -> None:
        pass


def checkpointer(*args, **kw) -> Checkpointer:
    """A :class:`Checkpointer` on rank 0; a :class:`ReadOnlyCheckpointer` elsewhere."""
    return (Checkpointer if distributed.is_main() else ReadOnlyCheckpointer)(*args, **kw)
