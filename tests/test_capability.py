"""The determinism checks under two CPU kernel capabilities: this machine's own and AVX2.

On AVX-512/AMX CPUs, kernels (and so the last bits of a result) can depend on how many samples share a call; the
index-aligned sampling calls (generation/base.py) make samples independent of that. So that a change breaking
either kind of machine is seen on any machine, the tests marked ``determinism`` run here as usual and once more in
a subprocess with ``ATEN_CPU_CAPABILITY=avx2`` (skipped where the CPU's own capability already is AVX2).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

INNER = "DELIBERATE_CAPABILITY_INNER"


@pytest.mark.determinism
def test_capability_is_the_one_asked_for():
    want = os.environ.get("ATEN_CPU_CAPABILITY")
    if want:
        assert torch.backends.cpu.get_cpu_capability().lower() == want.lower()


@pytest.mark.skipif(bool(os.environ.get(INNER)), reason="inner run of the capability matrix")
def test_determinism_tests_pass_under_avx2():
    own = torch.backends.cpu.get_cpu_capability()
    if own in ("AVX2", "DEFAULT", "NO AVX"):
        pytest.skip(f"this CPU's own capability is {own}: the main run already covers AVX2")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", INNER: "1"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "determinism", "tests"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=900)
    tail = res.stdout[-4000:] + res.stderr[-2000:]
    assert res.returncode == 0, tail
    final = res.stdout.strip().splitlines()[-1]  # pytest's summary line: "N passed, M deselected … in T s"
    assert re.search(r"\d+ passed", final) and not re.search(r"\d+ (failed|errors?)\b", final), tail
