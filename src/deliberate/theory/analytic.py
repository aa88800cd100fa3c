"""Analytic test error of ridge regression trained on hard- or easy-selected Gaussian data (paper Section 4).

Model (Askari-Hemmat et al., ICML 2025, Section 4 and App. A-C)
-------------------------------------------------------------------
* inputs ``x ~ N(0, I_d)``, labels ``y = sign(w0ᵀx)``;
* a unit *selector* ``w_s`` with overlap ``rho = w_sᵀw0/‖w0‖``; write ``t = xᵀw_s ~ N(0, 1)``,
  ``s = sqrt(1 - rho²)`` and ``tau = rho/s``;
* a pool of ``n`` samples; sample ``i`` is kept when ``q(t_i) = 1`` with
  ``keep-hard: |t| <= xi`` or ``keep-easy: |t| > xi``; ``xi`` is set from the Gaussian quantile so that the
  kept fraction is ``p = E[q(G)]``;
* ridge ``ŵ = (XᵀDX/n + lam·I)⁻¹ XᵀDY/n`` with ``D = diag(q)`` (normalised by the *pool* size ``n``);
* test error ``arccos(ŵᵀw0 / (‖ŵ‖‖w0‖))/π``, in the limit ``d, n → ∞`` with ``d/n → phi``.

Scalars (Theorem 1): ``gamma = E[q(G)G²]``, ``beta = 2E[q(G)φ(τG)]`` (= E[q y u], u the component of x along
the part of w0 orthogonal to w_s), ``beta_t = 2E[q(G)Φ(τG)G]`` (= E[q y t]), ``omega = s·beta``,
``omega_t = rho·beta_t``. They are available by 1-D quadrature (:func:`scalars_quadrature`) and by the closed
forms of Lemma 1 (keep-hard) and Lemma 2 (keep-easy) (:func:`scalars_closed_form`).

Theorem 1 (as implemented, ``variant="corrected"``), all functions of ``z = -lam``::

    m(z)  = (p - phi - z - sqrt((p - phi - z)² - 4 phi z)) / (2 phi z)      distorted Marchenko-Pastur
    s(z)  = gamma / (1 + phi m),        m̃(z) = 1 / (s(z) - z)                 spike (selector) direction
    m0    = omega m + omega_t m̃
    r     = beta² m + beta_t² m̃                                              (the proof's r, NOT omega² m + ...)
    nu0   = p phi m' + r' - 2 phi m' r / (1 + phi m)                         (' = d/dz)
    error = arccos(m0 / sqrt(nu0)) / π

``m0/(1+phi m)`` is the limit of ŵᵀw0 and ``nu0/(1+phi m)²`` the limit of ‖ŵ‖² (= d/dz of the deterministic
equivalent ``bᵀ(Σ̂ - z)⁻¹b ≈ p phi m/(1+phi m) + r/(1+phi m)²``, ``b = XᵀDY/n``), so only the ratio matters.

Corollary 1 (lam → 0), written for ``A = lim ŵᵀw0`` and ``B = lim ‖ŵ‖²``::

    phi < p:  A = s beta/p + rho beta_t/gamma
              B = beta²/p² + beta_t²/gamma² + phi (p - beta²/p - beta_t²/gamma) / (p (p - phi))
    phi > p:  A = s beta/phi + rho beta_t/(gamma + phi - p)
              B = (p - beta²/phi - beta_t²/(gamma + phi - p)) / (phi - p)
    phi = p:  error = 1/2 (the min-norm estimator's norm diverges at the interpolation threshold)

The printed-formula variants (``"printed_r"``, ``"printed_bracket"``, ``"isotropic"``) are kept only so that the
errata can be re-checked against simulation; see docs/theory.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import integrate, special

__all__ = [
    "RULES",
    "VARIANTS",
    "Scalars",
    "check_rule",
    "threshold",
    "keep",
    "scalars_closed_form",
    "scalars_quadrature",
    "scalars",
    "mp_stieltjes",
    "theorem1_terms",
    "theorem1_error",
    "corollary1_terms",
    "corollary1_error",
    "ridge_unselected_error",
    "predicted_error",
]

RULES = ("hard", "easy")
VARIANTS = ("corrected", "printed_r", "printed_bracket", "isotropic")

_SQRT2PI = math.sqrt(2.0 * math.pi)


# ----------------------------------------------------------------------------------------------- validation
def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    return rule


def _check_p(p: float) -> float:
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"p must be a number in (0, 1], got {p!r}") from None
    if not (0.0 < p <= 1.0):
        raise ValueError(f"p must be in (0, 1], got {p!r}")
    return p


def _check_rho(rho: float) -> float:
    try:
        rho = float(rho)
    except (TypeError, ValueError):
        raise ValueError(f"rho must be a number in [0, 1], got {rho!r}") from None
    if not (0.0 <= rho <= 1.0):
        raise ValueError(f"rho must be in [0, 1], got {rho!r}")
    return rho


def _check_lam(lam: float) -> float:
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"lam must be a number >= 0, got {lam!r}") from None
    if not (lam >= 0.0 and math.isfinite(lam)):
        raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
    return lam


def _check_positive(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (v > 0.0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return variant


# ------------------------------------------------------------------------------------------------ selection
def threshold(p: float, rule: str) -> float:
    """Threshold xi such that the kept fraction E[q(G)] equals p (population Gaussian quantile).

    keep-hard |t| <= xi: p = 2Φ(xi) - 1;  keep-easy |t| > xi: p = 2(1 - Φ(xi)).  For p = 1 the result is
    +inf (hard) or 0 (easy): both keep every sample.
    """
    p = _check_p(p)
    check_rule(rule)
    if rule == "hard":
        return float(special.ndtri((1.0 + p) / 2.0)) if p < 1.0 else math.inf
    return float(special.ndtri(1.0 - p / 2.0)) if p < 1.0 else 0.0


def keep(t: np.ndarray, xi: float, rule: str) -> np.ndarray:
    """Boolean keep mask q(t) for selector projections t."""
    check_rule(rule)
    a = np.abs(t)
    return a <= xi if rule == "hard" else a > xi


# -------------------------------------------------------------------------------------------------- scalars
@dataclass(frozen=True)
class Scalars:
    """The scalars of Theorem 1 for one (p, rho, rule)."""

    p: float
    rho: float
    rule: str
    xi: float
    gamma: float  # E[q G²]
    beta: float  # 2 E[q φ(τG)]
    beta_t: float  # 2 E[q Φ(τG) G]

    @property
    def s(self) -> float:
        return math.sqrt(max(0.0, 1.0 - self.rho * self.rho))

    @property
    def omega(self) -> float:
        return self.s * self.beta

    @property
    def omega_t(self) -> float:
        return self.rho * self.beta_t


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / _SQRT2PI if math.isfinite(x) else 0.0


def _Phi(x: float) -> float:
    return float(special.ndtr(x))


def scalars_closed_form(p: float, rho: float, rule: str) -> Scalars:
    """Lemma 1 (keep-hard) and Lemma 2 (keep-easy), with sigma = sqrt(1 - rho²), tau = rho/sigma.

    keep-hard (|G| <= xi)::
        gamma  = p - 2 xi φ(xi)
        beta   = sqrt(2/π) sigma (2Φ(xi/sigma) - 1)
        beta_t = 2 [rho (2Φ(xi/sigma) - 1)/sqrt(2π) - φ(xi)(2Φ(tau xi) - 1)]
    keep-easy (|G| > xi)::
        gamma  = p + 2 xi φ(xi)
        beta   = 2 sqrt(2/π) sigma (1 - Φ(xi/sigma))
        beta_t = 2 [2 rho (1 - Φ(xi/sigma))/sqrt(2π) + φ(xi)(2Φ(tau xi) - 1)]
    (beta_t by parts, using G φ(G) = -φ'(G); and φ(τG)φ(G) = φ(G/sigma)/sqrt(2π).)
    """
    p, rho = _check_p(p), _check_rho(rho)
    xi = threshold(p, rule)
    sigma = math.sqrt(max(0.0, 1.0 - rho * rho))
    # Φ(xi/sigma) and Φ(tau xi) with the sigma -> 0 (rho = 1) limits; xi > 0 except easy with p = 1.
    if sigma > 0.0:
        a = _Phi(xi / sigma)
        b = _Phi(rho * xi / sigma) if rho > 0.0 else 0.5  # avoid 0 * inf at p = 1 (hard)
    else:
        a = 1.0 if xi > 0 else 0.5
        b = 1.0 if xi > 0 else 0.5
    pxi = xi * _phi(xi) if math.isfinite(xi) else 0.0
    c = math.sqrt(2.0 / math.pi)
    if rule == "hard":
        gamma = p - 2.0 * pxi
        beta = c * sigma * (2.0 * a - 1.0)
        beta_t = 2.0 * (rho * (2.0 * a - 1.0) / _SQRT2PI - _phi(xi) * (2.0 * b - 1.0))
    else:
        gamma = p + 2.0 * pxi
        beta = 2.0 * c * sigma * (1.0 - a)
        beta_t = 2.0 * (2.0 * rho * (1.0 - a) / _SQRT2PI + _phi(xi) * (2.0 * b - 1.0))
    return Scalars(p=p, rho=rho, rule=rule, xi=xi, gamma=gamma, beta=beta, beta_t=beta_t)


def scalars_quadrature(p: float, rho: float, rule: str) -> Scalars:
    """The same scalars from their definitions, by 1-D adaptive quadrature over the kept set of G."""
    p, rho = _check_p(p), _check_rho(rho)
    xi = threshold(p, rule)
    sigma = math.sqrt(max(0.0, 1.0 - rho * rho))
    if sigma > 0.0:
        tau = rho / sigma
        f_beta = lambda g: 2.0 * _phi(tau * g) * _phi(g)  # noqa: E731
        f_beta_t = lambda g: 2.0 * _Phi(tau * g) * g * _phi(g)  # noqa: E731
    else:  # rho = 1: φ(τG) -> 0 a.e., Φ(τG) -> 1{G > 0}
        f_beta = lambda g: 0.0  # noqa: E731
        f_beta_t = lambda g: 2.0 * (g > 0) * g * _phi(g)  # noqa: E731
    f_gamma = lambda g: g * g * _phi(g)  # noqa: E731

    if rule == "hard":
        pieces = [(-xi, 0.0), (0.0, xi)]
    else:
        pieces = [(-math.inf, -xi), (xi, math.inf)]

    def e(f):
        tot = 0.0
        for lo, hi in pieces:
            if lo < hi:
                tot += integrate.quad(f, lo, hi, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
        return tot

    return Scalars(p=p, rho=rho, rule=rule, xi=xi, gamma=e(f_gamma), beta=e(f_beta), beta_t=e(f_beta_t))


def scalars(p: float, rho: float, rule: str, method: str = "closed") -> Scalars:
    if method == "closed":
        return scalars_closed_form(p, rho, rule)
    if method == "quadrature":
        return scalars_quadrature(p, rho, rule)
    raise ValueError(f"method must be 'closed' or 'quadrature', got {method!r}")


# ---------------------------------------------------------------------------------------------- Theorem 1
def mp_stieltjes(lam: float, p: float, phi: float) -> tuple[float, float]:
    """m(z) and m'(z) = dm/dz of the distorted Marchenko-Pastur law at z = -lam (lam > 0).

    m solves phi z m² - (p - phi - z) m + 1 = 0, i.e. m = 1/(p/(1 + phi m) + lam). Computed without
    cancellation: with b = p - phi + lam and D = b² + 4 phi lam, m = 2/(b + sqrt D) for b >= 0 and
    (sqrt D - b)/(2 phi lam) otherwise; m' = m (1 + phi m)/sqrt D.
    """
    b = p - phi + lam
    sd = math.sqrt(b * b + 4.0 * phi * lam)
    m = 2.0 / (b + sd) if b >= 0 else (sd - b) / (2.0 * phi * lam)
    dm = m * (1.0 + phi * m) / sd
    return m, dm


def theorem1_terms(phi: float, lam: float, sc: Scalars, variant: str = "corrected") -> tuple[float, float]:
    """(m0, nu0) of Theorem 1 at z = -lam; the error is arccos(m0/sqrt(nu0))/π.

    ``variant`` selects the corrected formula (default) or one of the printed/approximate forms kept for the
    errata check: ``printed_r`` (r = omega² m + omega_t² m̃), ``printed_bracket``
    (nu0 = p phi m' + (r' - 2 phi m' r)/(1 + phi m)), ``isotropic`` (spike ignored: m̃ -> m, a Gaussian
    approximation of the kept data by an isotropic cloud).
    """
    _check_variant(variant)
    p = sc.p
    m, dm = mp_stieltjes(lam, p, phi)
    a = 1.0 + phi * m
    if variant == "isotropic":
        mt, dmt = m, dm
    else:
        # m̃ = 1/(gamma/a + lam);  dm̃/dz = m̃² (1 + gamma phi m'/a²)
        mt = 1.0 / (sc.gamma / a + lam)
        dmt = mt * mt * (1.0 + sc.gamma * phi * dm / (a * a))
    m0 = sc.omega * m + sc.omega_t * mt
    if variant == "printed_r":
        c1, c2 = sc.omega**2, sc.omega_t**2
    else:
        c1, c2 = sc.beta**2, sc.beta_t**2
    r = c1 * m + c2 * mt
    dr = c1 * dm + c2 * dmt
    if variant == "printed_bracket":
        nu0 = p * phi * dm + (dr - 2.0 * phi * dm * r) / a
    else:
        nu0 = p * phi * dm + dr - 2.0 * phi * dm * r / a
    return m0, nu0


def _angle_error(a: float, b: float) -> float:
    """arccos(a/sqrt(b))/π; nan when the pair is not a valid (overlap, squared norm) pair, i.e. b <= 0,
    non-finite, or |a|/sqrt(b) > 1 beyond rounding (this flags the broken printed variants)."""
    if not (b > 0.0) or not math.isfinite(a) or not math.isfinite(b):
        return float("nan")
    c = a / math.sqrt(b)
    if abs(c) > 1.0 + 1e-9:
        return float("nan")
    return math.acos(max(-1.0, min(1.0, c))) / math.pi


def theorem1_error(phi: float, p: float, rho: float, lam: float, rule: str, variant: str = "corrected",
                   method: str = "closed") -> float:
    """Limit test error for lam > 0 (Theorem 1)."""
    phi = _check_positive("phi", phi)
    lam = _check_lam(lam)
    if lam == 0.0:
        raise ValueError("lam must be > 0 for Theorem 1; use corollary1_error for lam -> 0")
    sc = scalars(p, rho, check_rule(rule), method)
    m0, nu0 = theorem1_terms(phi, lam, sc, variant)
    return _angle_error(m0, nu0)


# -------------------------------------------------------------------------------------------- Corollary 1
def corollary1_terms(phi: float, sc: Scalars) -> tuple[float, float]:
    """(A, B) = limits of (ŵᵀw0, ‖ŵ‖²) as lam -> 0 (min-norm / least squares); (nan, inf) at phi = p."""
    p, g, be, bt, rho, s = sc.p, sc.gamma, sc.beta, sc.beta_t, sc.rho, sc.s
    if math.isclose(phi, p, rel_tol=1e-12, abs_tol=0.0):
        return float("nan"), math.inf
    if phi < p:
        a = s * be / p + rho * bt / g
        b = be**2 / p**2 + bt**2 / g**2 + phi * (p - be**2 / p - bt**2 / g) / (p * (p - phi))
    else:
        a = s * be / phi + rho * bt / (g + phi - p)
        b = (p - be**2 / phi - bt**2 / (g + phi - p)) / (phi - p)
    return a, b


def corollary1_error(phi: float, p: float, rho: float, rule: str, method: str = "closed") -> float:
    """Limit test error for lam -> 0 (Corollary 1); 1/2 at the interpolation threshold phi = p."""
    phi = _check_positive("phi", phi)
    sc = scalars(p, rho, check_rule(rule), method)
    a, b = corollary1_terms(phi, sc)
    if math.isinf(b):
        return 0.5
    return _angle_error(a, b)


# ---------------------------------------------------------------------------------- unselected reference
def ridge_unselected_error(phi: float, lam: float) -> float:
    """Classical limit for ridge on the *full* pool (no selection), independent of Theorem 1.

    Gaussian equivalence: y = sign(w0ᵀx) = mu w0ᵀx + e with mu = sqrt(2/π) and e uncorrelated noise of variance
    1 - mu². With the standard Marchenko-Pastur Stieltjes m = m_MP(-lam; phi) and m' = dm/dz::

        ŵᵀw0 -> mu (1 - lam m),   ‖ŵ‖² -> mu² (1 - 2 lam m + lam² m') + (1 - mu²) phi (m - lam m')

    and for lam = 0 the OLS (phi < 1) / min-norm (phi > 1) limits
    cos² = mu²(1-phi)/(mu²(1-phi) + (1-mu²)phi)  and  cos² = (mu²/phi²) / (mu²/phi + (1-mu²)/(phi-1)).
    """
    phi = _check_positive("phi", phi)
    lam = _check_lam(lam)
    mu2 = 2.0 / math.pi
    if lam == 0.0:
        if math.isclose(phi, 1.0, rel_tol=1e-12):
            return 0.5
        if phi < 1.0:
            cos2 = mu2 * (1 - phi) / (mu2 * (1 - phi) + (1 - mu2) * phi)
        else:
            cos2 = (mu2 / phi**2) / (mu2 / phi + (1 - mu2) / (phi - 1))
        return math.acos(math.sqrt(cos2)) / math.pi
    # standard MP (unit variance, ratio phi): phi z m² - (1 - phi - z) m + 1 = 0
    m, dm = mp_stieltjes(lam, 1.0, phi)
    mu = math.sqrt(mu2)
    a = mu * (1.0 - lam * m)
    b = mu2 * (1.0 - 2.0 * lam * m + lam * lam * dm) + (1.0 - mu2) * phi * (m - lam * dm)
    return _angle_error(a, b)


# ------------------------------------------------------------------------------------------------- public
def predicted_error(d: float, n: float, p: float, rho: float, lam: float, rule: str, *,
                    variant: str = "corrected", method: str = "closed") -> float:
    """Limit test error at phi = d/n for a pool of n samples of which the fraction p is kept by ``rule``.

    lam > 0: Theorem 1; lam == 0: Corollary 1 (min-norm interpolator when n p < d).
    Scalars from the closed forms of Lemma 1-2 (``method="closed"``) or by quadrature (``"quadrature"``).
    """
    d = _check_positive("d", d)
    n = _check_positive("n", n)
    p, rho, lam = _check_p(p), _check_rho(rho), _check_lam(lam)
    check_rule(rule)
    _check_variant(variant)
    phi = d / n
    if lam == 0.0:
        if variant != "corrected":
            raise ValueError("variant must be 'corrected' when lam == 0 (Corollary 1)")
        return corollary1_error(phi, p, rho, rule, method)
    return theorem1_error(phi, p, rho, lam, rule, variant, method)
