"""Phases, susceptibility and the fractional lens: hand values and the validity window."""

from __future__ import annotations

import math

import pytest

from gammalens.theory import fractional, phases


@pytest.mark.parametrize(("gamma", "ci", "label"), [
    (0.4, (0.3, 0.5), "A"), (1.6, (1.5, 1.7), "B"), (1.02, (0.95, 1.1), "boundary"),
    (0.97, (0.9, 1.0), "boundary"), (1.0, (None, None), "boundary"), (0.7, (None, None), "A"),
    (math.nan, (None, None), "undetermined"),
])
def test_phase_labels_let_the_ci_decide_the_boundary(gamma, ci, label):
    assert phases.phase(gamma, *ci) == label


def test_susceptibility():
    assert phases.susceptibility(0.75) == pytest.approx(4.0)
    assert phases.susceptibility(1.25) == pytest.approx(4.0)
    assert phases.susceptibility(1.0) == math.inf


@pytest.mark.parametrize(("gamma", "alpha", "s", "valid"), [
    (1.6, 0.6, 0.3, True), (2.9, 1.9, 0.95, True), (1.0, 0.0, 0.0, False), (3.0, 2.0, 1.0, False),
    (0.5, -0.5, -0.25, False), (math.nan, math.nan, math.nan, False),
])
def test_fractional_lens(gamma, alpha, s, valid):
    lens = fractional.fractional(gamma)
    assert lens.valid is valid
    if math.isfinite(gamma):
        assert lens.alpha == pytest.approx(alpha) and lens.s == pytest.approx(s)
    assert lens.to_dict()["valid"] is valid
