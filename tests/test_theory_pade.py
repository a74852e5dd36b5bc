"""γ_Padé and its inversions against sympy and hand values."""

from __future__ import annotations

import math

import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from gammalens.errors import TheoryError
from gammalens.theory import pade

theta_s, T_s, g_s = sp.symbols("theta T gamma", positive=True)
PADE = (2 * theta_s - T_s * sp.sqrt(2)) / (2 * theta_s + T_s * sp.sqrt(2))


def test_hand_values():
    assert pade.gamma_pade(1000 / math.sqrt(2), 1000) == pytest.approx(0.0, abs=1e-15)  # θ = T/√2
    assert pade.gamma_pade(3 * 1000 / math.sqrt(2), 1000) == pytest.approx(0.5)  # (3√2−√2)/(3√2+√2)
    assert pade.gamma_pade(1e12, 10) == pytest.approx(1.0, abs=1e-10)


def test_sympy_inversion_for_theta_and_for_T():
    theta_sol = sp.solve(sp.Eq(g_s, PADE), theta_s)
    horizon_sol = sp.solve(sp.Eq(g_s, PADE), T_s)
    assert len(theta_sol) == 1 and len(horizon_sol) == 1
    theta_expr = sp.lambdify((g_s, T_s), theta_sol[0])
    horizon_expr = sp.lambdify((theta_s, g_s), horizon_sol[0])
    for gamma, context, theta in [(0.3, 4096, 1e4), (-0.5, 100, 7.0), (0.95, 131072, 5e5)]:
        assert pade.theta_from_gamma(gamma, context) == pytest.approx(float(theta_expr(gamma, context)))
        assert pade.d_horizon(theta, gamma) == pytest.approx(float(horizon_expr(theta, gamma)))


def test_sympy_identities():
    horizon = theta_s * (1 - PADE) * sp.sqrt(2) / (1 + PADE)
    assert sp.simplify(horizon - T_s) == 0  # d_horizon(θ, γ_Padé(θ, T)) = T
    theta_eff = theta_s + T_s / sp.sqrt(2)
    assert sp.simplify(1 - sp.sqrt(2) * T_s / theta_eff - PADE) == 0  # γ_Padé = 1 − √2·T/θ_eff^Padé
    theta_obs = sp.solve(sp.Eq(g_s, PADE), theta_s)[0]
    assert sp.simplify(theta_obs + T_s / sp.sqrt(2) - sp.sqrt(2) * T_s / (1 - g_s)) == 0  # θ_eff^obs


@settings(max_examples=50, deadline=None)
@given(st.floats(10.0, 1e8), st.floats(1.0, 1e6))
def test_eta_is_one_on_the_prediction(theta, context):
    gamma = pade.gamma_pade(theta, context)
    if gamma > 1 - 1e-9:  # γ indistinguishable from 1 in float64
        return
    assert pade.eta(gamma, theta, context) == pytest.approx(1.0, rel=1e-6)
    assert pade.regime(pade.eta(gamma, theta, context), gamma) == "Normal"


def test_eta_and_regimes():
    theta, context = 1e4, 4096
    predicted = pade.gamma_pade(theta, context)
    for eta_target, label in [(0.3, "Compressed"), (1.5, "Normal"), (5.0, "Over-Padé"), (20.0, "Fraud")]:
        gamma = 1 - (1 - predicted) / eta_target  # η = (1 − γ_Padé)/(1 − γ_obs)
        value = pade.eta(gamma, theta, context)
        assert value == pytest.approx(eta_target)
        assert pade.regime(value, gamma) == label
    assert pade.eta(1.2, theta, context) is None
    assert pade.regime(None, 1.2) == "Fraud"
    assert pade.regime(None, 1.2, context=context, sliding_window=1024) == "SWA"
    assert pade.regime(1.0, 0.5, context=context, sliding_window=8192) == "Normal"  # window ≥ T: no effect
    assert pade.regime(None, math.nan) == "undetermined"


def test_relative_error_and_niah():
    assert pade.relative_error(0.6, 0.5) == pytest.approx(0.2)
    assert pade.relative_error(-0.6, -0.5) == pytest.approx(-0.2)
    assert pade.relative_error(0.3, 0.0) is None
    assert pade.l_niah(1e4, pade.gamma_pade(1e4, 1000), ntk_alpha=4) == pytest.approx(8000)
    assert pade.d_horizon(1e4, 1.0) is None and pade.theta_eff_obs(1.0, 100) is None


def test_errors_say_what_to_do():
    with pytest.raises(TheoryError, match="does not apply"):
        pade.gamma_pade(None, 1024)
    with pytest.raises(TheoryError, match="at least 1 token"):
        pade.gamma_pade(1e4, 0)
    with pytest.raises(TheoryError, match="positive"):
        pade.gamma_pade(-5.0, 100)
    with pytest.raises(TheoryError, match="NTK"):
        pade.l_niah(1e4, 0.5, ntk_alpha=0)
