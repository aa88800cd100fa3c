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
import os

# OpenMP threads that spin while waiting make CPU training collapse when cores are shared: measured on a loaded
# 2-core machine, a generator training step took 10 s with spinning threads and 0.6 s with passive ones.
# Only a default: set OMP_WAIT_POLICY yourself to override (it must be set before torch is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from . import generation, learning, practice  # noqa: E402,F401  (register the built-ins)
