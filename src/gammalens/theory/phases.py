"""Phases of attention decay (glossary: γ, Hagedorn boundary, Phase A/B; Ch. 15, 21).

Phase A (γ < 1) looks far, Phase B (γ > 1) concentrates, γ = 1 is the Hagedorn boundary. A measured γ
is called 'boundary' when its confidence interval contains 1, so the label never claims more than the
data supports. Susceptibility χ = 1/|γ − 1| diverges at the boundary.
"""

from __future__ import annotations

import math


def phase(gamma: float, ci_low: float | None = None, ci_high: float | None = None) -> str:
    """Phase label of a decay exponent: ``'A'`` (γ<1), ``'B'`` (γ>1) or ``'boundary'``.

    Parameters
    ----------
    gamma : float
        Decay exponent γ (dimensionless).
    ci_low, ci_high : float, optional
        Confidence interval of γ. When both are given and ``ci_low <= 1 <= ci_high`` the phase is
        ``'boundary'``; without a CI only ``gamma == 1`` exactly is the boundary.

    Examples
    --------
    >>> phase(0.4, 0.3, 0.5), phase(1.02, 0.95, 1.1), phase(1.6)
    ('A', 'boundary', 'B')
    """
    if not math.isfinite(gamma):
        return "undetermined"
    has_ci = ci_low is not None and ci_high is not None and math.isfinite(ci_low) and math.isfinite(ci_high)
    if has_ci and (ci_low <= 1.0 <= ci_high):
        return "boundary"
    if gamma < 1.0:
        return "A"
    if gamma > 1.0:
        return "B"
    return "boundary"


def susceptibility(gamma: float) -> float:
    """χ = 1/|γ − 1| (dimensionless); ``inf`` at the Hagedorn boundary γ = 1.

    >>> susceptibility(0.5)
    2.0
    """
    return math.inf if gamma == 1.0 else 1.0 / abs(gamma - 1.0)
