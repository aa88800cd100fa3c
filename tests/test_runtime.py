"""Process-level settings the command line makes (deliberate.cli.setup_process: the allocator), checked by their
effect in a fresh process; importing the package alone makes none."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, resource, sys
if sys.argv[1:] == ["setup"]:
    from deliberate.cli import setup_process
    setup_process()
import torch
import deliberate.job  # the modules a run imports (how soon the heap settles depends on what it already holds)
def faults_of_64mb():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(64 << 20, dtype=torch.uint8)
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps([faults_of_64mb() for _ in range(6)]))
"""


def _faults(env: dict, setup: bool = True) -> list[int]:
    argv = [sys.executable, "-c", PROBE] + (["setup"] if setup else [])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator settings")
def test_large_buffers_are_kept_instead_of_faulted_in_again():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    kept = _faults(env)
    # a user's own glibc setting wins: with it, every 64 MB buffer is mapped and faulted in again (16,384 4-KiB pages)
    default = _faults({**env, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)})
    assert min(default[3:]) > 8000, default
    assert max(kept[3:]) < 1000, kept  # the heap settles within a few buffers, then reuses them
    # `import deliberate` alone leaves glibc's defaults: every buffer faulted in again
    bare = _faults(env, setup=False)
    assert min(bare[3:]) > 8000, bare
