"""The determinism checks under two CPU kernel capabilities: this machine's own and AVX2.

On AVX-512/AMX CPUs, kernels (and so the last bits of a result) can depend on how many samples share a call; the
index-aligned sampling calls (generation/base.py) make samples independent of that. So that a change breaking
either kind of machine is seen on any machine, the tests marked ``determinism`` run here as usual and once more in
a subprocess with ``ATEN_CPU_CAPABILITY=avx2`` (skipped where the CPU's own capability already is AVX2).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import torch

INNER = "DELIBERATE_CAPABILITY_INNER"


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags (x86 Linux), or None where /proc/cpuinfo does not list them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((x for x in text.splitlines() if x.startswith("flags")), None)
    return set(line.split(":", 1)[1].split()) if line else None


def _best_capability(flags: set[str]) -> str:
    """What ATen picks on an x86 CPU with these flags when nothing is asked for (aten/src/ATen/native/DispatchStub)."""
    if {"avx512vl", "avx512bw", "avx512dq", "fma"} <= flags:
        return "AVX512"
    if {"avx2", "fma"} <= flags:
        return "AVX2"
    return "DEFAULT"


@pytest.mark.determinism
def test_capability_is_the_one_asked_for():
    """Inner run: the AVX2 that the matrix asked for. Main run: the CPU's own best capability, so that an
    ATEN_CPU_CAPABILITY leaking into the suite (which would leave AVX-512 kernels untested) fails here."""
    have = torch.backends.cpu.get_cpu_capability()
    want = os.environ.get("ATEN_CPU_CAPABILITY")
    if os.environ.get(INNER):
        assert want == "avx2"
    if want:
        assert have.lower() == want.lower()
        return
    flags = _cpu_flags()
    if flags is None or not {"sse2"} <= flags:
        pytest.skip("not an x86 CPU with /proc/cpuinfo: its best capability is not derived here")
    assert have == _best_capability(flags), (have, sorted(flags & {"avx2", "fma", "avx512vl", "avx512bw", "avx512dq"}))


def _avx2_rerun(out: Path) -> dict | None:
    """The determinism tests in a fresh interpreter under AVX2, started when the session starts (conftest.py);
    nothing where this test skips."""
    if os.environ.get(INNER) or torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT", "NO AVX"):
        return None
    root = Path(__file__).resolve().parents[1]
    # only the modules that mark tests (collecting all of tests/ imports every backend: ~6 s of CPU)
    files = sorted(str(p.relative_to(root)) for p in (root / "tests").glob("test_*.py")
                   if "pytest.mark.determinism" in p.read_text())
    return {"args": [sys.executable, "-m", "pytest", "-q", "-m", "determinism", *files], "cwd": root,
            "env": {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", INNER: "1"}, "timeout": 900}


@pytest.mark.skipif(bool(os.environ.get(INNER)), reason="inner run of the capability matrix")
@pytest.mark.background(spec=_avx2_rerun)
def test_determinism_tests_pass_under_avx2(background, request):
    own = torch.backends.cpu.get_cpu_capability()
    if own in ("AVX2", "DEFAULT", "NO AVX"):
        pytest.skip(f"this CPU's own capability is {own}: the main run already covers AVX2")
    res, _ = background.result(request.node.nodeid)
    tail = res.stdout[-4000:] + res.stderr[-2000:]
    assert res.returncode == 0, tail
    final = res.stdout.strip().splitlines()[-1]  # pytest's summary line: "N passed, M deselected … in T s"
    assert re.search(r"\d+ passed", final) and not re.search(r"\d+ (failed|errors?)\b", final), tail
