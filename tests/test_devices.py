"""The suite tests the CPU path on any machine (issue 27): every job the tests run pins ``run.device=cpu``, so that
on a GPU machine ``make test`` neither fails on a CPU-only assertion nor silently tests CUDA instead."""
from __future__ import annotations

from pathlib import Path

from deliberate.config import load_config

import resume_support
from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_job_of_the_suite_pins_the_cpu(tmp_path):
    assert load_config(ROOT / "configs/smoke.yaml").run.device == "cpu"  # test_cli.py's end-to-end run
    assert resume_support.tiny_config(tmp_path)["run"]["device"] == "cpu"  # test_resume.py, test_faults.py
    assert tiny_config(tmp_path).run.device == "cpu"  # conftest's TINY: test_loop.py and most job-level tests
