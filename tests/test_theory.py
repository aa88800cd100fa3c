"""Section 4 theory: analytic limit (Theorem 1 / Corollary 1 / Lemma 1-2) against Monte Carlo simulation."""
from __future__ import annotations

import csv
import functools
import math

import numpy as np
import pytest

from deliberate.theory import predicted_error, simulated_error
from deliberate.theory.analytic import (
    VARIANTS,
    corollary1_error,
    mp_stieltjes,
    ridge_unselected_error,
    scalars_closed_form,
    scalars_quadrature,
    theorem1_error,
    threshold,
)
from deliberate.theory.simulate import simulate

TRIALS = 400
# ----------------------------------------------------------------------------------------- Lemma 1 and 2
@pytest.mark.parametrize("rule", ["hard", "easy"])
@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("rho", [0.0, 0.35, 0.9, 1.0])
def test_lemma_closed_forms_equal_quadrature(rule, p, rho):
    a = scalars_closed_form(p, rho, rule)
    b = scalars_quadrature(p, rho, rule)
    assert a.xi == b.xi
    assert a.gamma == pytest.approx(b.gamma, abs=1e-10)
    assert a.beta == pytest.approx(b.beta, abs=1e-10)
    assert a.beta_t == pytest.approx(b.beta_t, abs=1e-10)


@pytest.mark.parametrize("rule", ["hard", "easy"])
def test_threshold_and_scalars_limits(rule):
    for p in (0.1, 0.5, 0.8):
        xi = threshold(p, rule)
        kept = math.erf(xi / math.sqrt(2)) if rule == "hard" else 1 - math.erf(xi / math.sqrt(2))
        assert kept == pytest.approx(p, abs=1e-12)
    # p = 1 keeps everything: gamma = E[G²] = 1, beta = E[y u] = sqrt(2/π) s, beta_t = E[y t] = sqrt(2/π) rho
    sc = scalars_closed_form(1.0, 0.6, rule)
    assert (sc.gamma, sc.beta, sc.beta_t) == pytest.approx((1.0, math.sqrt(2 / math.pi) * 0.8,
                                                            math.sqrt(2 / math.pi) * 0.6), abs=1e-12)
    # hard + easy partition the Gaussian: their scalars add up to the p = 1 ones at complementary p
    h, e = scalars_closed_form(0.3, 0.6, "hard"), scalars_closed_form(0.7, 0.6, "easy")
    assert h.xi == pytest.approx(e.xi, abs=1e-12)
    assert (h.gamma + e.gamma, h.beta + e.beta, h.beta_t + e.beta_t) == pytest.approx(
        (sc.gamma, sc.beta, sc.beta_t), abs=1e-12)


def test_distorted_marchenko_pastur_matches_empirical_spectrum():
    """m(-lam) = (1/d) tr (XᵀDX/n + lam I)⁻¹ for a pool of n, kept fraction p (bulk law, one spike)."""
    rng = np.random.default_rng(0)
    d, n, p, lam = 300, 1000, 0.4, 0.2
    xi = threshold(p, "hard")
    X = rng.standard_normal((n, d))
    Xk = X[np.abs(X[:, 0]) <= xi]
    ev = np.linalg.eigvalsh(Xk.T @ Xk / n)
    # compare at the realised kept fraction: m is steep in p near the edge, and the Binomial kept count is the
    # dominant finite-size effect at this size
    m_th, dm_th = mp_stieltjes(lam, Xk.shape[0] / n, d / n)
    assert np.mean(1.0 / (ev + lam)) == pytest.approx(m_th, rel=0.01)
    assert np.mean(1.0 / (ev + lam) ** 2) == pytest.approx(dm_th, rel=0.02)
    # the undistorted law of N = p n samples (ratio d/N, unit scale) is a different function: the pool
    # normalisation 1/n, not 1/N, is what the theorem uses
    m_plain = mp_stieltjes(lam / p, 1.0, d / (p * n))[0] / p
    assert m_plain == pytest.approx(mp_stieltjes(lam, p, d / n)[0], rel=1e-12)


# ------------------------------------------------------------------------- Theorem 1 <-> Corollary 1
@pytest.mark.parametrize("rule", ["hard", "easy"])
@pytest.mark.parametrize("phi,p", [(0.2, 0.5), (0.4, 0.9), (0.8, 0.3), (1.5, 0.6), (3.0, 1.0)])
@pytest.mark.parametrize("rho", [0.0, 0.7, 1.0])
def test_theorem1_small_lambda_tends_to_corollary1(rule, phi, p, rho):
    c = corollary1_error(phi, p, rho, rule)
    assert theorem1_error(phi, p, rho, 1e-9, rule) == pytest.approx(c, abs=1e-6)
    assert theorem1_error(phi, p, rho, 1e-6, rule) == pytest.approx(c, abs=2e-3)
    # lam -> 0 through predicted_error picks Corollary 1
    assert predicted_error(phi * 100, 100, p, rho, 0.0, rule) == pytest.approx(c, abs=1e-12)


def test_interpolation_threshold_is_a_peak():
    assert corollary1_error(0.5, 0.5, 0.9, "hard") == 0.5
    e_at = predicted_error(350, 700, 0.5, 0.9, 1e-6, "easy")
    assert e_at > predicted_error(350, 700, 0.4, 0.9, 1e-6, "easy")
    assert e_at > predicted_error(350, 700, 0.6, 0.9, 1e-6, "easy")


# ---------------------------------------------------------------------------------- p = 1 (no selection)
@pytest.mark.parametrize("rule", ["hard", "easy"])
@pytest.mark.parametrize("phi", [0.2, 0.6, 1.6, 4.0])
@pytest.mark.parametrize("lam", [0.0, 1e-6, 1e-2, 1.0])
def test_analytic_p1_is_unselected_ridge(rule, phi, lam):
    ref = ridge_unselected_error(phi, lam)
    for rho in (0.0, 0.5, 1.0):  # with p = 1 the selector is irrelevant
        assert predicted_error(phi * 500, 500, 1.0, rho, lam, rule) == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("d,n,lam", [(40, 25, 1e-2), (40, 25, 1e-6), (30, 90, 1e-2), (30, 90, 0.0)])
def test_simulated_p1_equals_direct_ridge_fit(d, n, lam):
    """simulated_error(p=1) reproduces an independent primal ridge fit on the documented random stream."""
    rho, trials, seed = 0.6, 5, 123
    s = math.sqrt(1 - rho**2)
    errs = []
    for child in np.random.SeedSequence(seed).spawn(trials):
        rng = np.random.default_rng(child)
        t = rng.standard_normal(n)
        z = rng.standard_normal((n, d - 1))
        X = np.column_stack([t, z])
        w0 = np.zeros(d)
        w0[0], w0[1] = rho, s
        y = np.sign(X @ w0)
        if lam > 0:
            w = np.linalg.solve(X.T @ X / n + lam * np.eye(d), X.T @ y / n)
        else:
            w = np.linalg.solve(X.T @ X, X.T @ y)
        errs.append(np.arccos(w @ w0 / np.linalg.norm(w)) / np.pi)
    errs = np.array(errs)
    for rule in ("hard", "easy"):
        res = simulate(d, n, 1.0, rho, lam, rule, trials=trials, seed=seed)
        assert np.all(res.kept == n)
        np.testing.assert_allclose(res.errors, errs, rtol=0, atol=1e-7)
        m, se = simulated_error(d, n, 1.0, rho, lam, rule, trials=trials, seed=seed)
        assert m == pytest.approx(errs.mean(), abs=1e-7)
        assert se == pytest.approx(errs.std(ddof=1) / math.sqrt(trials), abs=1e-7)


# --------------------------------------------------------------------------- theory against simulation
# (d, n, p, rho, lam, rule): phi = d/n against p covers both regimes (phi < p: more kept samples than d;
# phi > p: fewer, the min-norm / ridge-interpolation side), both rules, lam in {1e-2, 1e-6, 0}.
POINTS = [
    (120, 600, 0.5, 0.6, 1e-2, "hard"),  # phi 0.2 < p
    (120, 600, 0.5, 0.6, 1e-2, "easy"),
    (120, 600, 0.3, 0.9, 1e-6, "hard"),  # n p = 1.5 d: the largest finite-size bias (see ALLOWANCE)
    (120, 600, 0.3, 0.9, 1e-6, "easy"),
    (120, 500, 0.6, 0.8, 0.0, "hard"),
    (120, 480, 0.5, 1.0, 1e-6, "hard"),  # perfect selector
    (120, 200, 0.3, 0.6, 1e-6, "hard"),  # phi 0.6 > p
    (120, 200, 0.3, 0.6, 1e-6, "easy"),
    (120, 160, 0.4, 0.8, 1e-2, "hard"),
    (120, 160, 0.4, 0.8, 1e-2, "easy"),
    (120, 300, 0.2, 0.8, 0.0, "easy"),
    (120, 90, 0.5, 0.0, 1e-2, "easy"),  # phi > 1, uninformative selector
    (150, 430, 0.8, 0.9, 1e-6, "hard"),  # the errata point: every printed variant far off or invalid
]
# the points must cover both regimes and both rules (a check of this table, not of the project)
assert any(d / n < p for d, n, p, *_ in POINTS) and any(d / n > p for d, n, p, *_ in POINTS)
assert {r for *_, r in POINTS} == {"hard", "easy"}

# Allowance for the simulator's finite-size bias (the prediction is the d, n -> ∞ limit), added to 4 SE.
# Measured with 2000 trials (seed 99; docs/theory.md): |pred - sim| <= 0.0012 (SE 0.0002-0.0005) at every point
# but one, hence 0.002. The exception sits near the interpolation threshold at lam = 1e-6: the simulation is
# 0.0058 ± 0.0008 above the limit at d = 120 (0.0037 ± 0.0005 at d = 240), so it is allowed 0.008, and there
# the printed-r variant (0.0009 from the corrected one) cannot be told apart.
BIAS = 0.002
ALLOWANCE = {(120, 600, 0.3, 0.9, 1e-6, "hard"): 0.008}


@functools.lru_cache(maxsize=None)
def simulation(pt: tuple) -> tuple[float, float]:
    """(mean, SE) of TRIALS simulated pools at ``pt``, computed once for the tests below."""
    return simulated_error(*pt, trials=TRIALS, seed=2024)


def matches_simulation(pt: tuple, e: float) -> bool:
    m, se = simulation(pt)
    return abs(e - m) < 4 * se + ALLOWANCE.get(pt, BIAS)  # False for nan (an invalid variant)


@pytest.mark.parametrize("pt", POINTS, ids=str)
def test_prediction_matches_simulation(pt):
    pred = predicted_error(*pt)
    m, se = simulation(pt)
    assert 0.0 < se < 0.002  # 4 SE < 0.008: below the gaps (0.01-0.3) where REJECTED expects a variant to fail
    assert matches_simulation(pt, pred), (pred, m, se)


# The POINTS indices (lam > 0) where each printed variant is off by more than the tolerance or invalid (measured
# offsets: docs/theory.md). printed_r coincides with the corrected form at rho = 1 and rho = 0 (points 5, 11) and is
# within the allowance at 1 and 2; isotropic coincides at rho = 0 and is 0.004 off at 6.
REJECTED = {"printed_r": {0, 3, 6, 7, 8, 9, 12},
            "printed_bracket": {0, 1, 2, 3, 5, 6, 7, 8, 9, 11, 12},
            "isotropic": {0, 1, 2, 3, 5, 7, 8, 9, 12}}


@pytest.mark.parametrize("variant", VARIANTS[1:])
def test_printed_variants_are_rejected_by_simulation(variant):
    """The errata: the corrected r and nu0 match simulation (test above), the printed/approximate forms do not."""
    rejected = {i for i, pt in enumerate(POINTS)
                if pt[4] > 0 and not matches_simulation(pt, predicted_error(*pt, variant=variant))}
    assert rejected >= REJECTED[variant], sorted(REJECTED[variant] - rejected)


def test_selected_count_uses_population_quantile():
    res = simulate(50, 2000, 0.25, 0.5, 1e-2, "easy", trials=20, seed=1)
    assert res.kept.mean() / 2000 == pytest.approx(0.25, abs=0.01)
    assert res.kept.std() > 0  # Binomial(n, p), not a fixed empirical quantile


def test_paper_claim_hard_wins_with_plenty_easy_wins_when_scarce():
    # d = 350 (Fig. 7): plentiful (n = 1000, p = 0.7) -> keep-hard better; scarce (n = 250) -> keep-easy better
    assert predicted_error(350, 1000, 0.7, 0.9, 1e-2, "hard") < predicted_error(350, 1000, 0.7, 0.9, 1e-2, "easy")
    assert predicted_error(350, 250, 0.3, 0.9, 1e-2, "easy") < predicted_error(350, 250, 0.3, 0.9, 1e-2, "hard")


# ----------------------------------------------------------------------------------------- validation
GOOD = dict(d=50, n=100, p=0.5, rho=0.5, lam=1e-2, rule="hard")


@pytest.mark.parametrize("name,value", [
    ("p", 0.0), ("p", 1.5), ("p", -0.1), ("p", "x"), ("rho", -0.1), ("rho", 1.01), ("lam", -1.0),
    ("lam", float("nan")), ("rule", "medium"), ("d", 0), ("n", -5),
])
def test_bad_arguments_raise(name, value):
    kw = dict(GOOD, **{name: value})
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        predicted_error(**kw)
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        simulated_error(**kw, trials=2, seed=0)


@pytest.mark.parametrize("kw", [dict(trials=0), dict(seed=-1), dict(d=10.5), dict(trials=2.5)])
def test_bad_simulation_arguments_raise(kw):
    args = dict(GOOD, trials=3, seed=0)
    args.update(kw)
    name = next(iter(kw))
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        simulated_error(**args)


# ---------------------------------------------------------------------------------------------- figures
def test_figures_quick_smoke(tmp_path, monkeypatch):
    from deliberate.theory import figures

    pl = figures.plan(True, 0.9)
    # shrink the sweep to keep the smoke test fast: small d, a few points
    pl["fig3"].update(d=64, sim_N=[32, 256], grid_N=[32, 64, 128, 256])
    pl["fig7"].update(d=60, ns=[50, 150], sim_p=[0.3, 1.0], grid_p=[0.1, 0.5, 1.0])
    pl["fig5c"].update(d=64, Ns=[128], sim_r=[1, 4], grid_r=[1, 2, 4])
    pl["errata"] = [(60, 200, 0.8, 1e-6, "hard")]
    monkeypatch.setattr(figures, "plan", lambda quick, rho: pl)
    assert figures.main(["--out", str(tmp_path), "--quick", "--trials", "2", "--no-progress"]) == 0
    for name in ("fig3", "fig7", "fig5c"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
        rows = list(csv.DictReader(open(tmp_path / f"{name}.csv")))
        assert {r["kind"] for r in rows} == {"analytic", "sim"}
        sims = [r for r in rows if r["kind"] == "sim"]
        assert sims and all(int(r["trials"]) == 2 for r in sims)
        # every row is what the model gives at the row's own parameters: the analytic ones recomputed here, the
        # figure's first simulated point rerun with its seed (job k of the plan gets seed k); catches a row written
        # with another point's parameters, accuracy not 1 - error, and a seed that is not the documented one
        for r in rows:
            assert float(r["accuracy"]) == pytest.approx(1 - float(r["error"]), abs=2e-6)
            if r["kind"] == "analytic":
                want = predicted_error(int(r["d"]), float(r["n"]), float(r["p"]), float(r["rho"]), float(r["lam"]),
                                       r["rule"])
                assert float(r["error"]) == pytest.approx(want, rel=1e-4, abs=1e-6), r
        k, (_, _, rule, d, n, p, lam) = next((k, j) for k, j in enumerate(figures.sim_jobs(pl)) if j[0] == name)
        m, se = simulated_error(d, max(1, int(round(n))), p, 0.9, lam, rule, trials=2, seed=k)
        assert (float(sims[0]["error"]), float(sims[0]["se"])) == (pytest.approx(m, rel=1e-5, abs=1e-7),
                                                                   pytest.approx(se, rel=1e-5, abs=1e-7))
    assert (tmp_path / "errata.csv").exists()
    assert figures.main(["--out", str(tmp_path), "--trials", "1"]) == 2
