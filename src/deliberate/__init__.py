"""deliberate: Deliberate Practice for synthetic data generation.

Askari-Hemmat et al., "Improving the Scaling Laws of Synthetic Data with Deliberate Practice", ICML 2025.
The package is laid out as the system flows: ``data`` (real splits) → ``generation`` (diffusion generator,
entropy-guided DDIM) → ``learning`` (the classifier) → ``practice`` (the pool, the patience trigger and
Algorithm 1) → ``job`` (a run: every method, the held-out evaluation; ``repair``, ``evaluation``) → ``reports``
(plots and the markdown report) → ``cli``; ``theory`` holds Section 4 and stands alone. Each layer imports only
the layers before it, and the foundation below them all (``distributed``, ``registry``, ``fileio``, ``faults``,
``lock``; then ``config``, ``rundir``, ``checkpoint``): tests/test_layers.py checks it.

Importing the package changes nothing in the process and imports no backend (torch, diffusers, timm): the
subpackages that register the built-in generators, criteria, learners and practice methods (timm-style) are
imported at the first lookup of any registry (:attr:`deliberate.registry.Registry.loader`), so every registry is
complete whatever module a caller imports first. The command line sets the process up
(:func:`deliberate.cli.setup_process`).
"""
import importlib

from . import registry as _registry

__version__ = "0.1.0"


def _import_builtins() -> None:
    """Import the subpackages whose modules register the built-ins."""
    from . import generation, learning, practice  # noqa: F401


for _r in (_registry.GENERATORS, _registry.LEARNERS, _registry.CRITERIA, _registry.METHODS):
    _r.loader = _import_builtins


def __getattr__(name: str):
    """``deliberate.<subpackage>`` without importing it first (PEP 562)."""
    if name in {"data", "generation", "learning", "practice", "reports", "theory"}:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'deliberate' has no attribute '{name}'")
