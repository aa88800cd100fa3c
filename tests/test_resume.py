"""Crash and resume: real processes are SIGKILLed at chosen points (shard write, generation, manifest update,
checkpoint write, mid-training, inside a guided round, in the second method), resumed with
``deliberate run --resume``, and must end with exactly the pool, logs, weights and metrics of an uninterrupted run
with the same config (on CPU every kernel we use is deterministic: equality is bitwise)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from resume_support import KILLED, job_config, leftovers, only_run_dir, reference_run, run_cli, snapshot

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    run_dir, gen = reference_run(tmp_path_factory)
    return run_dir, gen, snapshot(run_dir)


def kill_and_resume(base: Path, gen: str, kills: list[str], check=None, **extra) -> Path:
    """A run killed at ``kills[0]``, each resume killed at the next point, then resumed to the end. Every kill
    must really happen (exit by SIGKILL), so that no step of the chain passes vacuously; ``check(i, run_dir)``, when
    given, is called after the i-th kill (to assert where it landed). ``extra``: config as in ``tiny_config``."""
    cfg = job_config(base, gen, "runs", **extra)
    code = run_cli(["run", "-c", str(cfg)], base / "0.log", kill_at=kills[0])
    assert code == KILLED, f"not killed at {kills[0]}: {(base / '0.log').read_text()}"
    run_dir = only_run_dir(base / "runs")
    if check:
        check(0, run_dir)
    for i, kill in enumerate(kills[1:], 1):
        code = run_cli(["run", "--resume", str(run_dir)], base / f"{i}.log", kill_at=kill)
        assert code == KILLED, f"resume {i} not killed at {kill}: {(base / f'{i}.log').read_text()}"
        if check:
            check(i, run_dir)
    code = run_cli(["run", "--resume", str(run_dir)], base / "final.log")
    assert code == 0, (base / "final.log").read_text()
    return run_dir


def test_reference_run_exercises_every_stage(ref):
    run_dir, _, snap = ref
    dp = snap["dp"]
    assert snap["summary"]["methods"]["dp"]["rounds"] == 4
    assert [r["round"] for r in dp["manifest"]] == [0] * 4 + [1, 1, 2, 2, 3, 3, 4, 4]
    assert {r["omega"] for r in dp["manifest"] if r["round"]} == {0.05}
    assert [s for r in dp["manifest"] for s in r["seeds"]] == list(range(120))
    assert len(dp["guides"]) == 4 and len(snap["static"]["shards"]) == 12
    assert snap["summary"]["held_out_reads"] == ["final held-out evaluation"]
    assert not leftovers(run_dir)


def test_kills_at_every_point_then_resume_equals_uninterrupted(ref, tmp_path):
    """One run killed eight times (counts are per process): during the 3rd initial shard write; in the 2nd manifest
    append (torn line); after generating the 3rd shard, inside guided round 1; while writing the 2nd checkpoint;
    at the 12th training step (between checkpoints); inside round 4's shard writes; in the second method (static)
    after DP finished; then resumed to the end."""
    _, gen, expected = ref
    kills = ["shard:3", "manifest:2", "generate:3", "checkpoint:2", "iteration:12", "shard:4", "iteration:40"]
    run_dir = kill_and_resume(tmp_path, gen, kills)
    assert snapshot(run_dir) == expected
    assert not leftovers(run_dir)
    assert "dp: finished before the interruption, not rerun" in (tmp_path / "final.log").read_text()


# dynamic_unguided (the DP loop at ω = 0) and prune (a pool selected from k·M candidates), in one job
OTHERS = dict(run__methods=["dynamic_unguided", "prune"], practice__oversample=2, practice__prune_scorer_iterations=20)


def _progress(run_dir: Path) -> dict:
    """Per method: (shard files in its pool, finished)."""
    out = {}
    for m in ("dynamic_unguided", "prune"):
        d = run_dir / "methods" / m
        out[m] = (len(list((d / "pool").glob("*.safetensors"))), (d / "result.json").exists()) if d.exists() else None
    return out


def test_kills_in_dynamic_unguided_and_prune_then_resume_equals_uninterrupted(tmp_path_factory, tmp_path):
    """dynamic_unguided killed in its initial pool, inside its first (unguided) addition round and mid-training;
    prune killed in its 3rd kept-shard write, in its 2nd manifest append after that resume, mid-training and while
    writing a checkpoint; then resumed: pools, logs, weights and metrics equal those of an uninterrupted run."""
    ref_dir, gen = reference_run(tmp_path_factory, "reference-run-others", **OTHERS)
    expected = snapshot(ref_dir)
    du, pr = expected["dynamic_unguided"]["manifest"], expected["prune"]["manifest"]
    assert [r["round"] for r in du] == [0] * 4 + [1, 1, 2, 2, 3, 3, 4, 4] and {r["omega"] for r in du} == {0.0}
    assert {r["candidates"] for r in pr} == {240} and len(pr) == 12  # 120 kept of 2 × 120

    landed = [  # where each kill must land: (DU shards, DU finished), (prune shards, prune finished)
        {"dynamic_unguided": (2, False), "prune": None},  # generate:3, initial pool
        {"dynamic_unguided": (5, False), "prune": None},  # generate:4, one shard into round 1 (a pending round)
        {"dynamic_unguided": (12, False), "prune": None},  # iteration:20, mid-training after its last round (bf16)
        {"dynamic_unguided": (12, True), "prune": (2, False)},  # shard:3 (durable writes count): prune's 3rd shard
        {"dynamic_unguided": (12, True), "prune": (4, False)},  # manifest:2, its 2nd append of this process
        {"dynamic_unguided": (12, True), "prune": (12, False)},  # iteration:12
        {"dynamic_unguided": (12, True), "prune": (12, False)},  # checkpoint:2
    ]

    def check(i, run_dir):
        assert _progress(run_dir) == landed[i], (i, _progress(run_dir))

    kills = ["generate:3", "generate:4", "iteration:20", "shard:3", "manifest:2", "iteration:12", "checkpoint:2"]
    run_dir = kill_and_resume(tmp_path, gen, kills, check, **OTHERS)
    assert snapshot(run_dir) == expected
    assert not leftovers(run_dir)
    assert "dynamic_unguided: finished before the interruption, not rerun" in (tmp_path / "final.log").read_text()


def test_fresh_interpreter_killed_through_the_environment_variable(ref, tmp_path):
    """``DELIBERATE_KILL_AT`` read by a freshly started interpreter, killed mid-training, then resumed."""
    _, gen, expected = ref
    cfg = job_config(tmp_path, gen, "runs")
    code = "import sys, resume_support; from deliberate.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "DELIBERATE_KILL_AT": "iteration:33"}
    p = subprocess.run([sys.executable, "-c", code, "run", "-c", str(cfg)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == KILLED, p.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    assert not (run_dir / "summary.json").exists()
    code = run_cli(["run", "--resume", str(run_dir)], tmp_path / "resume.log")
    assert code == 0, (tmp_path / "resume.log").read_text()
    assert snapshot(run_dir) == expected


def test_randomized_kills(ref, tmp_path):
    """Seeded random kill points, up to eight in one run (a point not reached lets the run finish); at least six
    must really happen."""
    _, gen, expected = ref
    rng = random.Random(2025)
    limits = {"shard": 14, "manifest": 14, "generate": 14, "iteration": 70, "checkpoint": 12}
    cfg = job_config(tmp_path, gen, "runs")
    argv, kills, i = ["run", "-c", str(cfg)], [], 0
    while len(kills) < 8:
        point = rng.choice(sorted(limits))
        kill = f"{point}:{rng.randint(1, limits[point])}"
        code = run_cli(argv, tmp_path / f"{i}.log", kill_at=kill)
        i += 1
        assert code in (0, KILLED), (tmp_path / f"{i - 1}.log").read_text()
        if code == 0:
            break
        kills.append(kill)
        argv = ["run", "--resume", str(only_run_dir(tmp_path / "runs"))]
    if code == KILLED:
        assert run_cli(argv, tmp_path / "final.log") == 0, (tmp_path / "final.log").read_text()
    assert len(kills) >= 6, kills
    run_dir = only_run_dir(tmp_path / "runs")
    assert snapshot(run_dir) == expected, kills
    assert not leftovers(run_dir)


def test_resume_of_a_finished_run_changes_nothing(ref, tmp_path):
    import shutil

    run_dir, _, expected = ref
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    assert run_cli(["run", "--resume", str(copy)], tmp_path / "log") == 0, (tmp_path / "log").read_text()
    log = (tmp_path / "log").read_text()
    assert "dp: finished before the interruption, not rerun" in log
    assert "static: finished before the interruption, not rerun" in log
    assert snapshot(copy) == expected
    assert json.loads((copy / "summary.json").read_text())["held_out_reads"] == ["final held-out evaluation"]
