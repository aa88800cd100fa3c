"""``deliberate check RUN_DIR [--repair]``: verify every pool shard against its manifest and regenerate the damaged.

A shard is *damaged* when its SHA-256 differs from the manifest's (bit flips, truncation) and *missing* when its
file is gone. Repair regenerates exactly the shard's samples from the manifest record: its labels and seeds, DDIM
steps, λ and ω, the run's generator (from ``generator.json``, identity checked) and, for rounds > 0, the classifier
that guided that round (``methods/<m>/guides/r{round}.safetensors``). The pool order is kept: the shard is written
back under its own name. A regenerated shard whose bytes match the recorded checksum is an exact restoration; one
that does not (possible only with non-deterministic kernels) is written, its manifest record updated, and reported.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import CHECKPOINT, atomic_write, set_deterministic
from .practice.pool import MANIFEST, sha256_file, write_shard


@dataclass
class ShardStatus:
    method: str
    shard: str
    status: str  # ok | damaged | missing | repaired | regenerated-different | unrepairable
    detail: str = ""
    line: int = 0  # index of the shard's record in the manifest


@dataclass
class CheckReport:
    run_dir: Path
    shards: list[ShardStatus] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # damage outside shards (manifest, checkpoint)
    notes: list[str] = field(default_factory=list)  # harmless leftovers of a crash, cleaned on resume

    @property
    def bad(self) -> list[ShardStatus]:
        return [s for s in self.shards if s.status in ("damaged", "missing", "unrepairable")]

    @property
    def ok(self) -> bool:
        return not self.bad and not self.problems

    def format(self) -> str:
        lines = [f"run {self.run_dir}"]
        for m in sorted({s.method for s in self.shards}):
            mine = [s for s in self.shards if s.method == m]
            counts: dict[str, int] = {}
            for s in mine:
                counts[s.status] = counts.get(s.status, 0) + 1
            lines.append(f"  {m}: {len(mine)} shards, " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
            lines += [f"    {s.status} {s.shard}: {s.detail}" for s in mine if s.status != "ok"]
        lines += [f"  problem: {p}" for p in self.problems] + [f"  note: {n}" for n in self.notes]
        lines.append("ok" if self.ok else f"{len(self.bad)} damaged or missing shards"
                     + (f", {len(self.problems)} other problems" if self.problems else ""))
        return "\n".join(lines)


def _manifest(root: Path, report: CheckReport, method: str) -> list[dict]:
    """The manifest's records, read without modifying anything (a torn last line is noted, not cut)."""
    path = root / MANIFEST
    if not path.exists():
        return []
    *complete, tail = path.read_bytes().split(b"\n")
    records = []
    for i, line in enumerate(complete):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            report.problems.append(f"{method}: {path} line {i + 1} is not valid JSON; the shards it names cannot be "
                                   f"checked or regenerated")
            return records
    if tail:
        report.notes.append(f"{method}: torn last line in {path} (a write interrupted by a crash; dropped on resume)")
    return records


def check(run_dir: str | Path) -> CheckReport:
    """Verify every shard of every method's pool against the manifest's SHA-256 (read-only)."""
    run_dir = Path(run_dir)
    report = CheckReport(run_dir)
    if not (run_dir / "config.yaml").is_file():
        report.problems.append(f"{run_dir} is not a run directory (no config.yaml)")
        return report
    for mdir in sorted(p for p in (run_dir / "methods").glob("*") if p.is_dir()):
        root, m = mdir / "pool", mdir.name
        records = _manifest(root, report, m)
        for i, rec in enumerate(records):
            path = root / rec["shard"]
            if not path.exists():
                report.shards.append(ShardStatus(m, rec["shard"], "missing", "named in the manifest, file absent", i))
            elif sha256_file(path) != rec["sha256"]:
                report.shards.append(ShardStatus(m, rec["shard"], "damaged", f"SHA-256 differs from the manifest "
                                                 f"(corrupted or truncated; {path.stat().st_size} bytes)", i))
            else:
                report.shards.append(ShardStatus(m, rec["shard"], "ok", "", i))
        named = {r["shard"] for r in records}
        for f in sorted(root.glob("*.safetensors*")):
            if f.name not in named:
                report.notes.append(f"{m}: {f.name} is not in the manifest (left by a crash; removed on resume)")
        ck = mdir / CHECKPOINT
        if ck.exists():
            try:
                torch.load(ck, map_location="cpu", weights_only=True)
            except Exception as e:
                report.problems.append(f"{m}: checkpoint {ck} is unreadable ({type(e).__name__}); it cannot be "
                                       f"regenerated: the method must be rerun (delete {mdir})")
    return report


def _guide_for(cfg, generator, mdir: Path, round_: int, omega: float, device):
    """The guide of round ``round_``: the classifier saved when the round started, with the config's criterion."""
    from safetensors.torch import load_file

    from .generation.guidance import build_guide
    from .learning.models import build_model

    path = mdir / "guides" / f"r{round_:03d}.safetensors"
    if not path.exists():
        return None, f"the weights of the classifier that guided round {round_} ({path}) are missing"
    lc = cfg.learner
    model = build_model(lc.model, generator.num_classes, generator.image_shape[0], lc.img_size, lc.pretrained_path)
    model.load_state_dict(load_file(path))
    model = model.to(device)
    if lc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval().requires_grad_(False)
    return build_guide(model, cfg.guidance, omega=omega), ""


def _load_generator(run_dir: Path, cfg, device):
    from .data.splits import load_splits
    from .generation.pixel import GeneratorError
    from .job import obtain_generator

    info_path = run_dir / "generator.json"
    if not info_path.exists():
        raise GeneratorError(f"{info_path} is missing: the run's generator is unknown, shards cannot be regenerated")
    recorded = json.loads(info_path.read_text())
    cfg.generator.path = recorded["path"]
    splits = load_splits(cfg.data.root, cfg.data.val_size, cfg.data.gen_train_size, cfg.data.split_seed)
    generator, info = obtain_generator(cfg, splits, device, progress=False)
    if info["generator_id"] != recorded["generator_id"]:
        raise GeneratorError(f"generator at {recorded['path']} is {info['generator_id']}, the run was made with "
                             f"{recorded['generator_id']}")
    return generator


def repair(run_dir: str | Path, log=print) -> CheckReport:
    """Regenerate every damaged or missing shard in place (same name, same position in the pool)."""
    from .config import load_config
    from .job import resolve_device
    from .lock import RunLock

    run_dir = Path(run_dir)
    report = check(run_dir)
    if not report.bad:
        return report
    cfg = load_config(run_dir / "config.yaml")
    with RunLock(run_dir):
        set_deterministic(cfg.run.deterministic)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        device = resolve_device(cfg.run.device)
        generator = _load_generator(run_dir, cfg, device)
        for st in report.bad:
            mdir = run_dir / "methods" / st.method
            root = mdir / "pool"
            records = _manifest(root, CheckReport(run_dir), st.method)
            rec = records[st.line]
            guide = None
            if rec["round"] > 0:  # guided rounds score (and with ω > 0 steer) samples with that round's classifier
                guide, why = _guide_for(cfg, generator, mdir, rec["round"], rec["omega"], device)
                if guide is None:
                    st.status, st.detail = "unrepairable", why
                    continue
            log(f"regenerating {st.method}/{st.shard} ({rec['count']} samples, round {rec['round']})")
            labels = torch.tensor(rec["labels"], dtype=torch.int64)
            out = generator.sample(labels, rec["seeds"], steps=rec["steps"], cfg_scale=rec["cfg_scale"], guide=guide,
                                   eta=cfg.sampling.eta, batch_size=cfg.sampling.batch_size)
            tensors = {"images": out.images.contiguous(), "labels": labels,
                       "seeds": torch.tensor(rec["seeds"], dtype=torch.int64), "score": out.score.float().contiguous()}
            sha = write_shard(root / rec["shard"], tensors)
            if sha == rec["sha256"]:
                st.status, st.detail = "repaired", "regenerated from its seeds; bytes identical to the original"
                continue
            st.status = "regenerated-different"
            st.detail = (f"regenerated from its seeds, but not bit-identical to the original (SHA-256 {sha[:12]} vs "
                         f"{rec['sha256'][:12]}): non-deterministic kernels; manifest updated")
            old_sha = rec["sha256"]
            rec.update(sha256=sha, score=[None if s != s else round(float(s), 5) for s in out.score.tolist()],
                       nonfinite_grads=out.stats["nonfinite_grads"])
            text = "".join(json.dumps(r) + "\n" for r in records)
            atomic_write(root / MANIFEST, lambda p: p.write_text(text))
            _patch_checkpoint(mdir / CHECKPOINT, old_sha, sha)
    return report


def _patch_checkpoint(path: Path, old_sha: str, new_sha: str) -> None:
    """Keep the checkpoint's recorded pool position consistent with a shard whose checksum changed."""
    if not path.exists():
        return
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["pool"].get("last_sha256") == old_sha:
        state["pool"]["last_sha256"] = new_sha
        atomic_write(path, lambda p: torch.save(state, p))


def main(run_dir: str, do_repair: bool = False) -> int:
    """CLI entry: print the report; exit status 0 when every shard is (now) intact, 1 otherwise."""
    from .generation.pixel import GeneratorError
    from .lock import RunLockedError

    try:
        report = repair(run_dir) if do_repair else check(run_dir)
    except (GeneratorError, RunLockedError) as e:
        print(f"deliberate: error: {e}", file=sys.stderr)
        return 1
    print(report.format())
    if report.bad and not do_repair:
        print(f"repair with: deliberate check {run_dir} --repair")
    return 0 if report.ok else 1
