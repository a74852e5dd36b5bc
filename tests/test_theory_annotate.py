"""The per-row theory columns: names, RoPE vs non-RoPE, values against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gammalens.errors import TheoryError
from gammalens.theory.annotate import ANNOTATION_COLUMNS, ANNOTATION_UNITS, annotate

PADE_COLUMNS = ("gamma_pade", "gamma_pade_rel_error", "d_horizon", "theta_eff_obs", "eta", "regime")


def test_columns_are_stable_documented_and_ordered():
    row = annotate(0.7, 0.6, 0.8, context=1024, rope_theta=1e4, mass=None)
    assert tuple(row) == ANNOTATION_COLUMNS
    assert set(ANNOTATION_UNITS) == set(ANNOTATION_COLUMNS)
    assert ("phase", "chi", "D_f", "D_f_empirical", "levy_alpha", "fractional_s",
                                  "fractional_valid", "C_V", "fisher_gamma", *PADE_COLUMNS) == ANNOTATION_COLUMNS


def test_rope_row_against_independent_computation():
    gamma, theta, context = 0.62, 1e4, 4096
    rng = np.random.default_rng(1)
    mass = rng.exponential(size=context)
    row = annotate(gamma, 0.55, 0.70, context=context, rope_theta=theta, mass=mass, eps=0.1)
    n = context - 1  # distances 1..T−1 in a window of T tokens
    w = np.arange(1, n + 1, dtype=np.float64) ** -gamma
    cum = np.cumsum(w)
    assert row["D_f"] == int(np.searchsorted(cum, 0.9 * cum[-1])) + 1
    tail = np.cumsum(mass[1:])
    assert row["D_f_empirical"] == int(np.searchsorted(tail, 0.9 * tail[-1])) + 1
    p, logs = w / w.sum(), np.log(np.arange(1, n + 1))
    var = float(np.sum(p * logs**2) - np.sum(p * logs) ** 2)
    assert row["C_V"] == pytest.approx(gamma**2 * var, rel=1e-9)
    assert row["fisher_gamma"] == pytest.approx(var, rel=1e-9)
    predicted = (2 * theta - context * math.sqrt(2)) / (2 * theta + context * math.sqrt(2))
    assert row["gamma_pade"] == pytest.approx(predicted)
    assert row["gamma_pade_rel_error"] == pytest.approx((gamma - predicted) / abs(predicted))
    assert row["d_horizon"] == pytest.approx(theta * (1 - gamma) * math.sqrt(2) / (1 + gamma))
    assert row["theta_eff_obs"] == pytest.approx(math.sqrt(2) * context / (1 - gamma))
    assert row["eta"] == pytest.approx((1 - predicted) / (1 - gamma))
    assert (row["phase"], row["regime"], row["fractional_valid"]) == ("A", "Normal", False)
    assert row["chi"] == pytest.approx(1 / 0.38) and row["levy_alpha"] == pytest.approx(-0.38)


def test_non_rope_model_has_no_pade_columns():
    row = annotate(1.4, 1.3, 1.5, context=512, rope_theta=None, mass=None)
    assert all(row[c] is None for c in PADE_COLUMNS)
    assert row["phase"] == "B" and row["fractional_valid"] is True and row["D_f_empirical"] is None


def test_phase_b_rope_head_and_sliding_window():
    row = annotate(1.3, 1.2, 1.4, context=8192, rope_theta=1e4, mass=None)
    assert row["eta"] is None and row["theta_eff_obs"] is None and row["regime"] == "Fraud"
    row = annotate(1.3, 1.2, 1.4, context=8192, rope_theta=1e4, mass=None, sliding_window=4096)
    assert row["regime"] == "SWA"


def test_nan_gamma_gives_none_not_an_error():
    row = annotate(math.nan, None, None, context=256, rope_theta=1e4, mass=None)
    assert row["phase"] == "undetermined" and row["regime"] == "undetermined"
    assert row["gamma_pade"] is not None
    assert all(row[c] is None for c in ("chi", "D_f", "C_V", "eta", "levy_alpha"))


def test_bad_input():
    with pytest.raises(TheoryError, match="ε"):
        annotate(0.5, None, None, context=256, rope_theta=1e4, mass=None, eps=1.0)
    with pytest.raises(TheoryError, match="at least 2"):
        annotate(0.5, None, None, context=1, rope_theta=1e4, mass=None)
