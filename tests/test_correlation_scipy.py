"""γ–sink correlation (sinks/correlation.py, on scipy.stats) against an independent brute-force computation.

The reference is written from the definitions with 50-digit mpmath arithmetic: Pearson's r from centred sums,
Spearman's ρ as Pearson's r of mean ranks (each value's rank is 1 + the number of smaller values + half the number
of other equal values), and the Fisher-z interval tanh(atanh(r) ± z·se) with z = √2·erfinv(0.95),
se = 1/√(n−3) for r and √((1 + ρ²/2)/(n−3)) for ρ (Bonett & Wright 2000).
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from gammalens.sinks import correlate

mpmath.mp.dps = 50
FIELDS = ("pearson", "pearson_ci_low", "pearson_ci_high", "spearman", "spearman_ci_low", "spearman_ci_high")


def _pearson(x: list, y: list):
    n = len(x)
    mx, my = mpmath.fsum(x) / n, mpmath.fsum(y) / n
    sxy = mpmath.fsum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = mpmath.fsum((a - mx) ** 2 for a in x)
    syy = mpmath.fsum((b - my) ** 2 for b in y)
    return sxy / mpmath.sqrt(sxx * syy)


def _mean_ranks(v: list) -> list:
    return [1 + sum(1 for w in v if w < u) + mpmath.mpf(sum(1 for w in v if w == u) - 1) / 2 for u in v]


def _fisher(r, n: int, se):
    z, q = mpmath.atanh(r), mpmath.sqrt(2) * mpmath.erfinv(mpmath.mpf("0.95"))
    return mpmath.tanh(z - q * se), mpmath.tanh(z + q * se)


def reference(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Every field of :class:`Correlation` for finite, non-constant x and y with n ≥ 4, in 50 digits."""
    xs, ys = [mpmath.mpf(float(v)) for v in x], [mpmath.mpf(float(v)) for v in y]
    n = len(xs)
    r = _pearson(xs, ys)
    rho = _pearson(_mean_ranks(xs), _mean_ranks(ys))
    r_lo, r_hi = _fisher(r, n, 1 / mpmath.sqrt(n - 3))
    rho_lo, rho_hi = _fisher(rho, n, mpmath.sqrt((1 + rho**2 / 2) / (n - 3)))
    return dict(zip(FIELDS, (float(v) for v in (r, r_lo, r_hi, rho, rho_lo, rho_hi)), strict=True))


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random pairs with many ties: values drawn from a few levels, half of them correlated."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 60))
    levels = int(rng.integers(2, 9))
    x = rng.integers(0, levels, n) / levels
    y = rng.normal(size=n) * float(rng.random()) + float(rng.normal()) * x
    if seed % 2:
        y = np.round(y, 1)  # ties in y too
    return x, y


@pytest.mark.parametrize("seed", range(40))
def test_matches_brute_force_on_random_data_with_ties(seed: int) -> None:
    x, y = _data(seed)
    assert np.ptp(x) > 0 and np.ptp(y) > 0  # the generator never makes a constant (test_degenerate_inputs does)
    assert len(np.unique(x)) < len(x)  # ties in x, so the mean-rank rule matters
    c = correlate(x, y)
    ref = reference(x, y)
    assert c.n == len(x)
    for field in FIELDS:
        assert math.isclose(getattr(c, field), ref[field], rel_tol=0, abs_tol=1e-12), (field, getattr(c, field),
                                                                                         ref[field])


def test_non_finite_pairs_are_dropped_before_computing() -> None:
    x, y = _data(7)
    c = correlate([*x, math.nan, 0.3, math.inf], [*y, 0.1, math.nan, 2.0])
    ref = reference(x, y)
    assert c.n == len(x)
    for field in FIELDS:
        assert math.isclose(getattr(c, field), ref[field], rel_tol=0, abs_tol=1e-12), field


def test_degenerate_inputs() -> None:
    few = correlate([0.1, 0.5, 0.2], [1.0, 0.2, 0.7])  # n = 3: r and ρ, but no Fisher interval (se needs n > 3)
    ref_r = float(_pearson([mpmath.mpf(v) for v in (0.1, 0.5, 0.2)], [mpmath.mpf(v) for v in (1.0, 0.2, 0.7)]))
    assert math.isclose(few.pearson, ref_r, abs_tol=1e-12) and few.spearman == pytest.approx(-1.0, abs=1e-12)
    assert all(math.isnan(getattr(few, f)) for f in FIELDS if f.endswith(("_low", "_high")))
    flat = correlate([0.5] * 10, list(range(10)))  # a constant variable: no correlation at all
    assert all(math.isnan(getattr(flat, f)) for f in FIELDS) and "not enough" in str(flat)
    two = correlate([1.0, 2.0], [2.0, 1.0])
    assert two.n == 2 and all(math.isnan(getattr(two, f)) for f in FIELDS)


def test_perfect_correlation_has_a_finite_interval_at_one() -> None:
    x = np.arange(10.0)
    c = correlate(x, 3 * x + 1)
    assert c.pearson == pytest.approx(1.0, abs=1e-12) and c.spearman == pytest.approx(1.0, abs=1e-12)
    assert 0.99 < c.pearson_ci_low <= c.pearson_ci_high <= 1.0
