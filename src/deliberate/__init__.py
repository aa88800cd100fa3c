"""deliberate: Deliberate Practice for synthetic data generation.

Askari-Hemmat et al., "Improving the Scaling Laws of Synthetic Data with Deliberate Practice", ICML 2025.
The package is laid out as the system flows: ``data`` (real splits) → ``generation`` (diffusion generator,
entropy-guided DDIM) → ``learning`` (the classifier) → ``practice`` (the pool, the patience trigger and
Algorithm 1) → ``job`` (a run: every method, the held-out evaluation; ``repair``, ``evaluation``) → ``reports``
(plots and the markdown report) → ``cli``; ``theory`` holds Section 4 and stands alone. Each layer imports only
the layers before it, and the foundation below them all (``distributed``, ``registry``, ``fileio``, ``faults``,
``lock``; then ``config``, ``rundir``, ``checkpoint``): tests/test_layers.py checks it.

Importing the package imports the subpackages that register the built-in generators, criteria, learners and
practice methods (timm-style), so every registry is complete whatever module a caller imports first.
"""
import ctypes
import os
import sys

# OpenMP threads that spin while waiting make CPU training collapse when cores are shared: measured on a loaded
# 2-core machine, a generator training step took 10 s with spinning threads and 0.6 s with passive ones.
# Only a default: set OMP_WAIT_POLICY yourself to override (it must be set before torch is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _keep_large_buffers() -> None:
    """glibc returns every buffer above its mmap threshold (dynamic, at most 32 MB) to the kernel when it is freed, so
    the next one of that size is mapped again and page-faulted in, page by page. Sampling at the default chunk (250
    samples, 500 with classifier-free guidance) allocates such activations at every UNet call: measured on this
    project's 2-core CPU, 250 plain samples took 12.5 s with glibc's defaults and 7.3 s with buffers up to 128 MB
    kept in the heap (a generator training step 0.65 → 0.63 s). Only where the process uses glibc and the user set
    neither MALLOC_MMAP_THRESHOLD_ nor MALLOC_TRIM_THRESHOLD_ (glibc's own variables, which then decide)."""
    if not sys.platform.startswith("linux") or {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): leave the allocator alone
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    mallopt(m_mmap_threshold, 128 << 20)  # buffers up to 128 MB come from the heap ...
    mallopt(m_trim_threshold, 512 << 20)  # ... and up to 512 MB of freed heap is kept for the next ones


_keep_large_buffers()

__version__ = "0.1.0"

from . import generation, learning, practice  # noqa: E402,F401  (register the built-ins)
