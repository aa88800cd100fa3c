"""Monte Carlo simulator of the Section 4 model (finite d, n), vectorised over trials.

Without loss of generality (x is isotropic and ridge is rotation-equivariant) the selector is w_s = e_0 and the
teacher w0 = rho e_0 + sqrt(1 - rho²) e_1, so the test error of an estimate ŵ is exactly
``arccos((rho ŵ_0 + s ŵ_1)/‖ŵ‖)/π`` (probability that sign(ŵᵀx) ≠ sign(w0ᵀx) for x ~ N(0, I_d)).

Random stream (documented so that results can be reproduced independently): trial ``i`` uses
``np.random.default_rng(np.random.SeedSequence(seed).spawn(trials)[i])`` and draws, in this order,
``t = rng.standard_normal(n)`` (the selector coordinate of the whole pool), then, for the ``N`` kept rows only,
``z = rng.standard_normal((N, d - 1))`` (the other coordinates; the discarded rows' other coordinates are never
used, so they need not be drawn: the kept sample has exactly the law of "draw the pool, then select").
The kept rows are ``x = [t_kept, z]`` in their pool order and ``y = sign(xᵀw0)``. The threshold is the
population quantile (:func:`deliberate.theory.analytic.threshold`), so the kept count is Binomial(n, p).

Ridge ``ŵ = (XᵀDX/n + lam I)⁻¹ XᵀDY/n`` is solved in the primal (d x d) when more than d rows are kept and in
the dual (N x N: ŵ = Xᵀ(XXᵀ/n + lam I)⁻¹ Y/n) otherwise, which is the stable form for small lam when N < d.
lam = 0 gives the least-squares / minimum-norm interpolator (``np.linalg.lstsq``). Trials with different kept
counts are stacked by padding with zero rows, which changes neither XᵀX, XᵀY nor the dual solution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._blas import single_thread_blas
from .analytic import _check_lam, _check_p, _check_rho, check_rule, keep, threshold

__all__ = ["SimResult", "simulate", "simulated_error", "angle_error", "ridge_solve"]

_MAX_BYTES = 96 * 2**20  # memory budget for one stacked chunk of design matrices


@dataclass(frozen=True)
class SimResult:
    errors: np.ndarray  # per-trial test error
    kept: np.ndarray  # per-trial kept count

    @property
    def mean(self) -> float:
        return float(np.mean(self.errors))

    @property
    def se(self) -> float:
        k = self.errors.size
        return float(np.std(self.errors, ddof=1) / math.sqrt(k)) if k > 1 else float("nan")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def angle_error(w: np.ndarray, w0: np.ndarray) -> np.ndarray:
    """arccos(ŵᵀw0/(‖ŵ‖‖w0‖))/π along the last axis; 1/2 where ŵ = 0 (no information)."""
    w = np.asarray(w, dtype=float)
    w0 = np.asarray(w0, dtype=float)
    num = w @ w0
    den = np.linalg.norm(w, axis=-1) * np.linalg.norm(w0)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.arccos(np.clip(c, -1.0, 1.0)) / np.pi


def ridge_solve(X: np.ndarray, y: np.ndarray, n: int, lam: float) -> np.ndarray:
    """Batched ridge ŵ = (XᵀX/n + lam I)⁻¹Xᵀy/n for X (k, N, d), y (k, N); lam > 0. Zero rows are inert."""
    k, N, d = X.shape
    if N == 0:
        return np.zeros((k, d))
    if N < d:  # dual
        K = X @ X.transpose(0, 2, 1)
        K /= n
        K[:, np.arange(N), np.arange(N)] += lam
        alpha = np.linalg.solve(K, (y / n)[..., None])
        return (X.transpose(0, 2, 1) @ alpha)[..., 0]
    A = X.transpose(0, 2, 1) @ X
    A /= n
    A[:, np.arange(d), np.arange(d)] += lam
    b = (X.transpose(0, 2, 1) @ (y / n)[..., None])
    return np.linalg.solve(A, b)[..., 0]


def simulate(d: int, n: int, p: float, rho: float, lam: float, rule: str, trials: int = 20,
             seed: int = 0) -> SimResult:
    """Simulate ``trials`` independent pools; returns the per-trial exact test errors and kept counts."""
    d = _check_int("d", d, 2)
    n = _check_int("n", n, 1)
    p, rho, lam = _check_p(p), _check_rho(rho), _check_lam(lam)
    check_rule(rule)
    trials = _check_int("trials", trials, 1)
    seed = _check_int("seed", seed, 0)
    xi = threshold(p, rule)
    s = math.sqrt(max(0.0, 1.0 - rho * rho))
    w0 = np.zeros(d)
    w0[0], w0[1] = rho, s
    children = np.random.SeedSequence(seed).spawn(trials)

    # chunk size from the expected kept count (a chunk is a stack of padded design matrices)
    n_exp = p * n + 4.0 * math.sqrt(n * p * (1 - p)) + 1
    chunk = max(1, min(trials, int(_MAX_BYTES // (8 * n_exp * d))))

    errors = np.empty(trials)
    kept = np.empty(trials, dtype=int)
    with single_thread_blas():
        for start in range(0, trials, chunk):
            _run_chunk(range(start, min(trials, start + chunk)), children, n, d, xi, rule, rho, s, lam, w0,
                       errors, kept)
    return SimResult(errors=errors, kept=kept)


def _run_chunk(idx: range, children, n: int, d: int, xi: float, rule: str, rho: float, s: float, lam: float,
               w0: np.ndarray, errors: np.ndarray, kept: np.ndarray) -> None:
    """Draw the trials in ``idx`` (documented stream), fit, and write their errors and kept counts."""
    rows = []
    for i in idx:
        rng = np.random.default_rng(children[i])
        t = rng.standard_normal(n)
        tk = t[keep(t, xi, rule)]
        z = rng.standard_normal((tk.size, d - 1))
        rows.append((tk, z))
        kept[i] = tk.size
    if lam == 0.0:  # least squares / minimum-norm interpolator, one trial at a time
        for (tk, z), i in zip(rows, idx):
            X = np.column_stack([tk, z])
            y = np.sign(X[:, :2] @ w0[:2])
            w = np.linalg.lstsq(X, y, rcond=None)[0] if tk.size else np.zeros(d)
            errors[i] = angle_error(w, w0)
        return
    nmax = max(r[0].size for r in rows)
    X = np.zeros((len(rows), nmax, d))
    for j, (tk, z) in enumerate(rows):
        X[j, : tk.size, 0] = tk
        X[j, : tk.size, 1:] = z
    y = np.sign(X[:, :, 0] * rho + X[:, :, 1] * s)  # padded rows give 0
    w = ridge_solve(X, y, n, lam)
    errors[idx.start : idx.stop] = angle_error(w, w0)


def simulated_error(d: int, n: int, p: float, rho: float, lam: float, rule: str, trials: int = 20,
                    seed: int = 0) -> tuple[float, float]:
    """Mean simulated test error over ``trials`` pools and its standard error (nan for a single trial)."""
    res = simulate(d, n, p, rho, lam, rule, trials, seed)
    return res.mean, res.se
