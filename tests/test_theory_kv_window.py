"""D_f against brute-force cumulative sums and mpmath; the KV budget against hand computation."""

from __future__ import annotations

import time

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gammalens.errors import TheoryError
from gammalens.theory import kv_window

# every evaluation path and its edges: Euler–Maclaurin (γ < 1.001), digamma (γ = 1), Hurwitz (γ ≥ 1.001)
GAMMAS = [-0.5, 0.0, 0.3, 0.5, 0.99, 0.9995, 1.0, 1.0005, 1.001, 1.0011, 1.5, 2.0, 3.5]


def _brute_d_f(gamma: float, n: int, eps: float) -> tuple[np.ndarray, int]:
    cum = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -gamma)  # cum[D−1] = Σ_{d≤D}
    return cum, int(np.searchsorted(cum, (1 - eps) * cum[-1], side="left")) + 1


@pytest.mark.parametrize("gamma", GAMMAS)
def test_power_sum_against_cumsum(gamma):
    n = np.array([0, 1, 2, 31, 32, 33, 34, 100, 1000, 99_999, 100_000])
    cum = np.concatenate([[0.0], np.cumsum(np.arange(1, 100_001, dtype=np.float64) ** -gamma)])
    np.testing.assert_allclose(kv_window.power_sum(gamma, n), cum[n], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("gamma", [0.3, 0.9995, 1.0, 1.0005, 1.7])
@pytest.mark.parametrize("n", [10**7, 10**12])
def test_power_sum_against_mpmath(gamma, n):
    mpmath.mp.dps = 40
    ref = mpmath.harmonic(n) if gamma == 1.0 else mpmath.zeta(gamma) - mpmath.zeta(gamma, n + 1)
    assert kv_window.power_sum(gamma, n) == pytest.approx(float(ref), rel=1e-12)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("n", [1, 2, 10, 1000, 100_000])
@pytest.mark.parametrize("eps", [0.01, 0.05, 0.3])
def test_d_f_against_brute_force(gamma, n, eps):
    cum, expected = _brute_d_f(gamma, n, eps)
    got = kv_window.d_f(gamma, n, eps)
    if got != expected:  # only a float tie at the threshold may differ, and then by one token
        target = (1 - eps) * cum[-1]
        assert abs(got - expected) == 1
        assert abs(cum[min(got, expected) - 1] - target) <= 1e-12 * target
    assert 1 <= got <= n


@pytest.mark.parametrize("gamma", [0.5, 1.0, 1.0005, 1.3, 2.5])
def test_d_f_at_ten_million_against_mpmath_and_fast(gamma):
    n, eps = 10**7, 0.05
    start = time.perf_counter()
    got = kv_window.d_f(gamma, n, eps)
    elapsed = time.perf_counter() - start
    mpmath.mp.dps = 40

    def partial(d):
        return mpmath.harmonic(d) if gamma == 1.0 else mpmath.zeta(gamma) - mpmath.zeta(gamma, d + 1)

    target = (1 - mpmath.mpf(eps)) * partial(n)
    assert partial(got) >= target and partial(got - 1) < target
    assert elapsed < 0.1  # closed form + bisection: ~1 ms here


@pytest.mark.parametrize("gamma", [1.1, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_d_f_infinite_context_against_mpmath(gamma, eps):
    got = kv_window.d_f(gamma, None, eps)
    mpmath.mp.dps = 40
    budget = eps * mpmath.zeta(gamma)
    assert mpmath.zeta(gamma, got + 1) <= budget < mpmath.zeta(gamma, got)
    assert kv_window.d_f(gamma, 10**12, eps) <= got  # finite T never needs more


def test_asymptotic_error_is_within_one_token():
    errors = []
    for gamma in np.linspace(1.15, 4.0, 20):
        for eps in (0.01, 0.05, 0.1, 0.2):
            errors.append(kv_window.d_f_asymptotic(gamma, eps) - kv_window.d_f(gamma, None, eps))
    assert min(errors) > -0.51 and max(errors) < 0.6  # documented: [−0.50, +0.57]
    # the ε^(−1/(γ−1)) law: halving ε multiplies D_f by 2^(1/(γ−1))
    assert kv_window.d_f_asymptotic(1.5, 0.01) / kv_window.d_f_asymptotic(1.5, 0.02) == pytest.approx(4.0)


@settings(max_examples=40, deadline=None)
@given(st.floats(1.01, 4.0), st.floats(1.01, 4.0), st.sampled_from([100, 4096, 10**6]),
       st.floats(0.005, 0.5))
def test_d_f_non_increasing_in_gamma(g1, g2, n, eps):
    lo, hi = min(g1, g2), max(g1, g2)
    assert kv_window.d_f(hi, n, eps) <= kv_window.d_f(lo, n, eps)


@settings(max_examples=40, deadline=None)
@given(st.floats(-0.5, 4.0), st.floats(0.001, 0.9), st.floats(0.001, 0.9), st.sampled_from([50, 4096, 10**6]))
def test_d_f_non_decreasing_as_eps_shrinks(gamma, e1, e2, n):
    small, large = min(e1, e2), max(e1, e2)
    assert kv_window.d_f(gamma, n, small) >= kv_window.d_f(gamma, n, large)


def test_empirical_d_f_against_a_loop_and_the_power_law():
    rng = np.random.default_rng(0)
    for _ in range(50):
        mass = rng.exponential(size=rng.integers(2, 300))
        eps = rng.uniform(0.01, 0.5)
        total, running, expected = mass[1:].sum(), 0.0, None
        for d in range(1, mass.size):
            running += mass[d]
            if running >= (1 - eps) * total:
                expected = d
                break
        assert kv_window.d_f_empirical(mass, eps) == expected
    # a measured profile that is exactly d^−γ gives the theoretical D_f; entry 0 never counts
    n = 5000
    for gamma in (0.6, 1.0, 1.8):
        profile = np.concatenate([[123.0], np.arange(1, n + 1, dtype=np.float64) ** -gamma])
        assert kv_window.d_f_empirical(profile, 0.05) == kv_window.d_f(gamma, n, 0.05)
    assert kv_window.d_f_empirical(np.array([1.0]), 0.05) == 0


def test_kv_budget_against_hand_computation():
    # 2 layers, 4 query heads in 2 KV groups; per-head windows (tokens)
    window = np.array([[10, 30, 5, 5], [100, 1, 1, 1]])
    budget = kv_window.kv_budget(window, sink=4, n_kv_heads=2, head_dim=64, context=64, dtype_bytes=2, batch=3)
    # group maxima +sink, capped at T=64: layer 0 → (34, 9); layer 1 → (64, 5)
    np.testing.assert_array_equal(budget.tokens, [[34, 9], [64, 5]])
    per_token = 2 * 64 * 2 * 3  # K and V, head_dim, bytes, batch
    assert budget.budget_bytes == per_token * (34 + 9 + 64 + 5)
    assert budget.full_bytes == 2 * 2 * 2 * 64 * 64 * 2 * 3  # 2 × layers × kv_heads × head_dim × T × bytes × B
    capped = kv_window.kv_budget(window, sink=4, n_kv_heads=2, head_dim=64, context=64, dtype_bytes=2,
                                 layer_limit=[64, 16])  # a 16-token sliding layer
    assert capped.full_bytes == 2 * 64 * 2 * 2 * (64 + 16)
    assert capped.tokens[1].tolist() == [16, 5]


def test_bad_input_raises_theory_error():
    for eps in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(TheoryError, match="ε must lie strictly between 0 and 1"):
            kv_window.d_f(1.5, 100, eps)
    with pytest.raises(TheoryError, match="at least 1 token"):
        kv_window.d_f(1.5, 0, 0.05)
    with pytest.raises(TheoryError, match="γ > 1"):
        kv_window.d_f(0.9, None, 0.05)
    with pytest.raises(TheoryError, match="negative"):
        kv_window.d_f_empirical(np.array([1.0, -1.0, 2.0]), 0.05)
    with pytest.raises(TheoryError, match="multiple"):
        kv_window.kv_budget(np.ones((2, 3)), sink=1, n_kv_heads=2, head_dim=4, context=8, dtype_bytes=2)
