"""Section 4 theory: test error of ridge regression trained on hard- or easy-selected Gaussian data.

``predicted_error`` is the d, n -> ∞ limit (Theorem 1 / Corollary 1 with the scalars of Lemma 1-2) and
``simulated_error`` a Monte Carlo estimate (mean, standard error) of the same finite-size model.
``python -m deliberate.theory.figures`` reproduces Figures 3, 7 and the Figure 5c analogue.
This subpackage imports nothing else from ``deliberate``.
"""
from .analytic import (
    RULES,
    Scalars,
    corollary1_error,
    predicted_error,
    ridge_unselected_error,
    scalars_closed_form,
    scalars_quadrature,
    theorem1_error,
    threshold,
)
from .simulate import SimResult, simulate, simulated_error

__all__ = [
    "RULES",
    "Scalars",
    "SimResult",
    "corollary1_error",
    "predicted_error",
    "ridge_unselected_error",
    "scalars_closed_form",
    "scalars_quadrature",
    "simulate",
    "simulated_error",
    "theorem1_error",
    "threshold",
]
