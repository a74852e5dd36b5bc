"""Thermodynamic lens against mpmath sums, polylog and derivatives; the C_V erratum with a sympy receipt."""

from __future__ import annotations

import math

import mpmath
import pytest
import sympy as sp

from gammalens.errors import TheoryError
from gammalens.theory import thermo


def _mp_moments(gamma: float, n: int, lam: float) -> tuple[mpmath.mpf, ...]:
    """Z, ⟨ln d⟩, Var(ln d), entropy by explicit high-precision sums over d = 1..n."""
    mpmath.mp.dps = 30
    w = [mpmath.mpf(d) ** -gamma * mpmath.exp(-lam * d) for d in range(1, n + 1)]
    z = mpmath.fsum(w)
    p = [x / z for x in w]
    logs = [mpmath.log(d) for d in range(1, n + 1)]
    mean = mpmath.fsum(pi * li for pi, li in zip(p, logs, strict=True))
    var = mpmath.fsum(pi * (li - mean) ** 2 for pi, li in zip(p, logs, strict=True))
    entropy = -mpmath.fsum(pi * mpmath.log(pi) for pi in p)
    return z, mean, var, entropy


@pytest.mark.parametrize("gamma", [0.5, 1.0, 1.7])
@pytest.mark.parametrize("lam", [0.0, 0.01])
def test_finite_n_against_explicit_mpmath_sums(gamma, lam):
    z, mean, var, entropy = _mp_moments(gamma, 1000, lam)
    s = thermo.thermo(gamma, 1000, lam)
    assert s.z == pytest.approx(float(z), rel=1e-12)
    assert s.mean_log_d == pytest.approx(float(mean), rel=1e-12)
    assert s.var_log_d == pytest.approx(float(var), rel=1e-10)
    assert s.entropy == pytest.approx(float(entropy), rel=1e-12)
    assert s.heat_capacity == pytest.approx(gamma**2 * float(var), rel=1e-10)
    assert s.fisher_gamma == pytest.approx(s.heat_capacity / gamma**2)


@pytest.mark.parametrize("gamma", [0.4, 1.5, 2.5])
def test_large_n_against_zeta_derivatives(gamma):
    mpmath.mp.dps = 30
    n = 10**9

    def sum_k(k):  # Σ_{d≤n} (ln d)^k d^−s = (−1)^k [ζ^(k)(s) − ζ^(k)(s, n+1)]
        return (-1) ** k * (mpmath.zeta(gamma, 1, k) - mpmath.zeta(gamma, n + 1, k))

    z, s1, s2 = sum_k(0), sum_k(1), sum_k(2)
    s = thermo.thermo(gamma, n)
    assert s.z == pytest.approx(float(z), rel=1e-12)
    assert s.mean_log_d == pytest.approx(float(s1 / z), rel=1e-11)
    assert s.var_log_d == pytest.approx(float(s2 / z - (s1 / z) ** 2), rel=1e-9)


def test_gamma_one_large_n_against_stieltjes_constants():
    mpmath.mp.dps = 30
    n = 10**12
    big_l = mpmath.log(n)

    def sum_k(k):  # Σ_{d≤n} (ln d)^k/d = L^{k+1}/(k+1) + γ_k + (ln n)^k/(2n) + O(n^−2 ln^k n)
        return big_l ** (k + 1) / (k + 1) + mpmath.stieltjes(k) + big_l**k / (2 * n)

    z, s1, s2 = sum_k(0), sum_k(1), sum_k(2)
    s = thermo.thermo(1.0, n)
    assert s.z == pytest.approx(float(z), rel=1e-12)
    assert s.mean_log_d == pytest.approx(float(s1 / z), rel=1e-12)
    assert s.var_log_d == pytest.approx(float(s2 / z - (s1 / z) ** 2), rel=1e-9)


@pytest.mark.parametrize(("gamma", "lam"), [(0.5, 1e-3), (1.0, 1e-6), (1.5, 1e-2), (2.0, 0.5)])
def test_cutoff_partition_function_is_polylog_and_moments_are_its_derivatives(gamma, lam):
    mpmath.mp.dps = 30
    x = mpmath.exp(-lam)

    def log_z(s):
        return mpmath.log(mpmath.polylog(s, x))

    s = thermo.thermo(gamma, None, lam)
    assert s.z == pytest.approx(float(mpmath.polylog(gamma, x)), rel=1e-12)
    assert s.mean_log_d == pytest.approx(float(-mpmath.diff(log_z, gamma)), rel=1e-9)  # ⟨ln d⟩ = −∂γ ln Z
    assert s.var_log_d == pytest.approx(float(mpmath.diff(log_z, gamma, 2)), rel=1e-7)  # I(γ) = ∂²γ ln Z
    mean_d = mpmath.polylog(gamma - 1, x) / mpmath.polylog(gamma, x)
    assert s.entropy == pytest.approx(float(gamma * -mpmath.diff(log_z, gamma) + lam * mean_d
                                            + log_z(gamma)), rel=1e-9)


def test_infinite_n_without_cutoff_is_zeta():
    mpmath.mp.dps = 30
    s = thermo.thermo(2.5)
    assert s.z == pytest.approx(float(mpmath.zeta(2.5)), rel=1e-13)
    assert s.mean_log_d == pytest.approx(float(-mpmath.zeta(2.5, 1, 1) / mpmath.zeta(2.5)), rel=1e-12)


def test_erratum_receipt_cv_at_hagedorn_is_ln_squared_over_12():
    # Symbolic receipt: at γ = 1, p(x) ∝ 1/x on [1, N], so u = ln x is uniform on [0, ln N].
    x, big_n = sp.symbols("x N", positive=True)
    z = sp.integrate(1 / x, (x, 1, big_n))
    mean = sp.integrate(sp.log(x) / x, (x, 1, big_n)) / z
    second = sp.integrate(sp.log(x) ** 2 / x, (x, 1, big_n)) / z
    cv = sp.simplify(second - mean**2)  # γ² = 1
    assert sp.simplify(cv - sp.log(big_n) ** 2 / 12) == 0
    assert sp.simplify(cv - sp.log(big_n) ** 2 / 4) != 0  # the published /4 is wrong
    assert thermo.cv_hagedorn_limit(math.e**6) == pytest.approx(3.0)
    # The exact discrete C_V(1, N) follows (ln N + γ_E)²/12 − γ_E²/2 − γ_1 + O(1/ln N): ratio → 1/12, not 1/4
    offset = float(-mpmath.euler**2 / 2 - mpmath.stieltjes(1))
    gaps = []
    for n in (10**6, 10**9, 10**12, 10**15):
        cv_n = thermo.heat_capacity(1.0, n)
        gaps.append(abs(cv_n - (math.log(n) + float(mpmath.euler)) ** 2 / 12 - offset))
        assert 1.0 < cv_n / thermo.cv_hagedorn_limit(n) < 1.1
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 2e-3


def test_edges_and_errors():
    one = thermo.thermo(3.0, 1)
    assert (one.z, one.var_log_d, one.entropy) == (1.0, 0.0, 0.0)
    with pytest.raises(TheoryError, match="diverges"):
        thermo.thermo(1.0)
    with pytest.raises(TheoryError, match="at least 1"):
        thermo.thermo(1.5, 0)
    with pytest.raises(TheoryError, match="λ"):
        thermo.thermo(1.5, 10, -1.0)
    assert set(one.to_dict()) >= {"z", "heat_capacity", "fisher_gamma"}
