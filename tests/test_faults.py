"""Bad input and faults: NaN guidance gradients, a full disk, a second writer, configs and checkpoints that do not
match, corrupted or missing shards (detected by name, repaired from their seeds)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from resume_support import (KILLED, NanEveryThird, job_config, leftovers, only_run_dir, reference_run, run_cli,
                            snapshot, tiny_cnn)


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    run_dir, gen = reference_run(tmp_path_factory)
    return run_dir, gen, snapshot(run_dir)


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / run_dir.name
    shutil.copytree(run_dir, dst)
    return dst


# --------------------------------------------------------------------------------------------- NaN gradients
def test_nonfinite_guidance_gradient_falls_back_to_unguided_for_that_sample():
    from deliberate.config import load_config
    from deliberate.generation.guidance import Guide
    from deliberate.generation.pixel import PixelDiffusion

    cfg = load_config(None, ["generator.block_out_channels=[8,16]"])
    gen = PixelDiffusion.create(cfg.generator, 10)
    clf = tiny_cnn().eval().requires_grad_(False)
    labels, seeds = torch.arange(12) % 10, list(range(100, 112))
    plain = gen.sample(labels, seeds, steps=3, batch_size=12)
    nan = gen.sample(labels, seeds, steps=3, batch_size=12, guide=Guide(NanEveryThird(clf), omega=20.0))
    bad = torch.tensor(seeds) % 3 == 0  # the criterion sees call slots: seed mod 12, and 12 is a multiple of 3
    assert nan.stats["guided_steps"] == 3
    assert nan.stats["nonfinite_grads"] == 3 * int(bad.sum())  # every guided step of every NaN sample
    assert torch.equal(nan.images[bad], plain.images[bad])  # those samples were never guided
    assert not torch.equal(nan.images[~bad], plain.images[~bad])  # the others were
    assert torch.isnan(nan.score[bad]).all() and torch.isfinite(nan.score[~bad]).all()


def test_nonfinite_gradient_count_reaches_manifest_log_and_summary(ref, tmp_path):
    _, gen, _ = ref
    cfg = job_config(tmp_path, gen, "runs", guidance__criterion="nan_every_third", run__methods=["dp"])
    assert run_cli(["run", "-c", str(cfg)], tmp_path / "log") == 0, (tmp_path / "log").read_text()
    run_dir = only_run_dir(tmp_path / "runs")
    records = [json.loads(x) for x in (run_dir / "methods/dp/pool/manifest.jsonl").read_text().splitlines()]
    guided = [r for r in records if r["round"] > 0]
    assert guided and all(r["nonfinite_grads"] == 0 for r in records if r["round"] == 0)
    # the criterion sees call slots (seed mod chunk): every third slot is NaN at each of the 3 guided DDIM steps
    for r in guided:
        nan = [i for i, s in enumerate(r["seeds"]) if s % r["chunk"] % 3 == 0]
        assert nan and r["nonfinite_grads"] == 3 * len(nan)
        assert [i for i, v in enumerate(r["score"]) if v is None] == nan
    total = sum(r["nonfinite_grads"] for r in records)
    assert json.loads((run_dir / "summary.json").read_text())["methods"]["dp"]["nonfinite_grads"] == total
    stats = [json.loads(x) for x in (run_dir / "methods/dp/stats.jsonl").read_text().splitlines()]
    assert stats[-1]["nonfinite_grads"] == total


# ----------------------------------------------------------------------------------------------- full disk
DISK_FULL_AT = {"shard": 6, "manifest": 9, "checkpoint": 4}  # inside guided round 1 / round 3 / after round 1


@pytest.mark.parametrize("what", sorted(DISK_FULL_AT))
def test_full_disk_is_a_clear_error_and_the_run_resumes(ref, tmp_path, what):
    _, gen, expected = ref
    cfg = job_config(tmp_path, gen, "runs")
    code = run_cli(["run", "-c", str(cfg)], tmp_path / "full.log", disk_full=(what, DISK_FULL_AT[what]))
    log = (tmp_path / "full.log").read_text()
    assert code == 1, log
    assert "disk full while writing" in log and "--resume" in log and "Traceback" not in log
    run_dir = only_run_dir(tmp_path / "runs")
    assert not leftovers(run_dir)  # nothing half-written
    manifest = (run_dir / "methods/dp/pool/manifest.jsonl").read_bytes()
    assert manifest.endswith(b"\n")
    from deliberate.repair import check

    report = check(run_dir)
    assert report.ok and not report.notes, report.format()
    code = run_cli(["run", "--resume", str(run_dir)], tmp_path / "resume.log")
    assert code == 0, (tmp_path / "resume.log").read_text()
    assert snapshot(run_dir) == expected


# ------------------------------------------------------------------------------------------------ the lock
def test_second_process_on_the_same_run_directory_is_refused(ref, tmp_path):
    from deliberate.lock import RunLock

    copy = copy_run(ref[0], tmp_path)
    with RunLock(copy):
        code = run_cli(["run", "--resume", str(copy)], tmp_path / "second.log")
        log = (tmp_path / "second.log").read_text()
        assert code == 1, log
        assert f"in use by another process (pid {os.getpid()})" in log
        with pytest.raises(RuntimeError, match=f"pid {os.getpid()}"):
            RunLock(copy).acquire()
    with RunLock(copy):  # released: available again
        pass


def test_a_killed_holder_leaves_no_stale_lock(ref, tmp_path):
    from deliberate.lock import RunLock

    _, gen, _ = ref
    cfg = job_config(tmp_path, gen, "runs")
    assert run_cli(["run", "-c", str(cfg)], tmp_path / "log", kill_at="iteration:3") == KILLED
    run_dir = only_run_dir(tmp_path / "runs")
    assert (run_dir / ".lock").exists()
    with RunLock(run_dir):
        pass


# ------------------------------------------------------------------------------- config and checkpoint mismatch
@pytest.mark.parametrize("override, key", [
    ("learner.model=tiny_cnn_wide", "learner.model"),
    ("generator.block_out_channels=[16,32]", "generator.block_out_channels"),
    ("practice.add_samples=30", "practice.add_samples"),
])
def test_resume_refuses_a_config_change_that_changes_results(ref, tmp_path, capsys, override, key):
    from deliberate.cli import main

    copy = copy_run(ref[0], tmp_path)
    assert main(["run", "--resume", str(copy), override]) == 2
    err = capsys.readouterr().err
    assert key in err and "changes the results" in err


@pytest.mark.parametrize("argv, message", [
    (["learner.nope=1"], "unknown config key 'learner.nope'"),
    (["practice.patience=0"], "practice.patience must be >= 1"),
    (["--config", "x.yaml"], "--resume reads RUN_DIR/config.yaml"),
])
def test_resume_rejects_bad_input(ref, tmp_path, capsys, argv, message):
    from deliberate.cli import main

    copy = copy_run(ref[0], tmp_path)
    assert main(["run", "--resume", str(copy), *argv]) == 2
    assert message in capsys.readouterr().err


def test_resume_of_something_that_is_not_a_run(tmp_path, capsys):
    from deliberate.cli import main

    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_learner_checkpoint_that_does_not_match_its_config(ref, tmp_path):
    import yaml

    from deliberate.checkpoint import CheckpointError, Checkpointer
    from deliberate.config import config_from_dict
    from deliberate.learning.learner import Learner
    from deliberate.registry import METHODS

    copy = copy_run(ref[0], tmp_path)
    # The run directory's config edited by hand: the checkpoints were made with another learner.
    cfg_path = copy / "config.yaml"
    data = yaml.safe_load(cfg_path.read_text())
    data["learner"]["model"] = "tiny_cnn_wide"
    cfg_path.write_text(yaml.safe_dump(data))
    code = run_cli(["run", "--resume", str(copy)], tmp_path / "log")
    log = (tmp_path / "log").read_text()
    assert code == 1, log
    assert "learner.model: 'tiny_cnn' → 'tiny_cnn_wide'" in log and "Traceback" not in log

    # Weights that do not fit the learner built from the config (same config recorded).
    cfg = config_from_dict(yaml.safe_load((ref[0] / "config.yaml").read_text()))
    wide = config_from_dict({**yaml.safe_load((ref[0] / "config.yaml").read_text())}).learner
    wide.model = "tiny_cnn_wide"
    ck = Checkpointer(ref[0] / "methods/dp", cfg, METHODS.build("dp", cfg))
    with pytest.raises(CheckpointError, match="does not match the learner built from learner.model"):
        ck.load_final(Learner(wide, 10, 1, cfg.practice.iterations))


def test_generator_that_is_not_the_run_s_generator_is_refused(ref, tmp_path):
    from deliberate.config import load_config
    from deliberate.generation.pixel import PixelDiffusion

    copy = copy_run(ref[0], tmp_path)
    other_cfg = load_config(None, ["generator.block_out_channels=[8,16]", "generator.seed=5"])
    other = PixelDiffusion.create(other_cfg.generator, 10)
    other.save(tmp_path / "other-generator")
    info = json.loads((copy / "generator.json").read_text())
    recorded_id = info["generator_id"]
    info["path"] = str(tmp_path / "other-generator")
    (copy / "generator.json").write_text(json.dumps(info))
    code = run_cli(["run", "--resume", str(copy)], tmp_path / "log")
    log = (tmp_path / "log").read_text()
    assert code == 1, log
    assert f"was made with {recorded_id}" in log and other.generator_id in log


# ------------------------------------------------------------------------------------- damaged pool, repair
@pytest.mark.determinism
def test_damaged_shards_are_named_and_repaired_from_their_seeds(ref, tmp_path, capsys):
    from deliberate.cli import main
    from deliberate.practice.pool import Pool, PoolError

    run_dir, _, expected = ref
    copy = copy_run(run_dir, tmp_path)
    dp, st = copy / "methods/dp/pool", copy / "methods/static/pool"
    flipped = dp / "r002-000000060.safetensors"  # a guided shard: regenerated with round 2's classifier
    data = bytearray(flipped.read_bytes())
    data[-50] ^= 0xFF  # one bit-flipped image byte: still a readable safetensors file
    flipped.write_bytes(bytes(data))
    truncated = dp / "r000-000000010.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:300])
    (st / "r000-000000050.safetensors").unlink()

    assert main(["check", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "damaged r002-000000060.safetensors" in out and "damaged r000-000000010.safetensors" in out
    assert "missing r000-000000050.safetensors" in out and "3 damaged or missing shards" in out
    with pytest.raises(PoolError, match="r000-000000010.safetensors is corrupted or truncated"):
        Pool(dp, verify=True)
    code = run_cli(["run", "--resume", str(copy)], tmp_path / "resume.log")
    assert code == 1 and "check RUN_DIR --repair" in (tmp_path / "resume.log").read_text()

    code = run_cli(["check", str(copy), "--repair"], tmp_path / "repair.log")
    log = (tmp_path / "repair.log").read_text()
    assert code == 0, log
    assert log.count("bytes identical to the original") == 3
    assert snapshot(copy) == expected  # exactly the original samples, in the original order
    assert main(["check", str(copy)]) == 0


def _edit_record(pool: Path, shard: str, **changes) -> None:
    path = pool / "manifest.jsonl"
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    for r in recs:
        if r["shard"] == shard:
            for k, v in changes.items():
                r[k] = v(r[k]) if callable(v) else v
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


@pytest.mark.parametrize("case", ["other_env_close", "same_env_differs", "other_env_far"])
def test_repair_states_what_it_accepted(ref, tmp_path, case):
    """A regenerated shard whose bytes cannot match: accepted within the stated tolerance only when the recorded
    environment differs from this one; a mismatch in the same environment, or beyond the tolerance, is refused and
    nothing is written. (The recorded SHA-256 is replaced to stand for bytes made elsewhere.)"""
    run_dir, _, _ = ref
    copy = copy_run(run_dir, tmp_path)
    dp = copy / "methods/dp/pool"
    shard = "r000-000000010.safetensors"
    recs = [json.loads(x) for x in (dp / "manifest.jsonl").read_text().splitlines()]
    here = f"cpu:{torch.backends.cpu.get_cpu_capability()}"  # resume_support pins run.device=cpu on any machine
    assert all(r["env"]["device"] == here and r["chunk"] > 0 and len(r["pix_mean"]) == r["count"]
               for r in recs)
    (dp / shard).write_bytes((dp / shard).read_bytes()[:300])  # damaged
    changes = {"sha256": "0" * 64}
    if case != "same_env_differs":
        changes["env"] = lambda e: {**e, "device": "cpu:ANOTHER", "torch": "0.0"}
    if case == "other_env_far":
        changes["pix_mean"] = lambda m: [m[0] + 3.0, *m[1:]]
    _edit_record(dp, shard, **changes)
    code = run_cli(["check", str(copy), "--repair"], tmp_path / "repair.log")
    log = (tmp_path / "repair.log").read_text()
    if case == "other_env_close":
        assert code == 0, log
        assert "regenerated-close" in log and "device cpu:ANOTHER" in log and "tolerance 1.0" in log
        rec = [json.loads(x) for x in (dp / "manifest.jsonl").read_text().splitlines() if shard in x][0]
        assert rec["sha256"] != "0" * 64 and rec["regenerated_env"]["device"] != "cpu:ANOTHER"
        from deliberate.practice.pool import Pool

        Pool(dp, verify=True)  # the manifest now names the regenerated bytes
    else:
        assert code == 1, log
        why = "reproducibility defect" if case == "same_env_differs" else "moved by 3.00 levels"
        assert "unrepairable" in log and why in log and "nothing written" in log
        assert len((dp / shard).read_bytes()) == 300  # the damaged file was left as it was


def test_fault_specification_is_validated():
    from deliberate import faults

    assert faults.parse("shard:3, iteration:20") == {"shard": 3, "iteration": 20}
    for bad in ("bogus:1", "shard:0", "shard", "iteration:x"):
        with pytest.raises(ValueError, match="DELIBERATE_KILL_AT"):
            faults.parse(bad)
