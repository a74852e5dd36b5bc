"""Discrete maximum-likelihood γ: the profile read as a distribution over distances.

Over the fit range a ≤ d ≤ b the sink-excluded mass, normalised, is a distribution p(d). The
truncated discrete power law q_γ(d) = d^−γ / Σ_{a..b} d'^−γ maximises Σ p(d) ln q_γ(d) where its
mean of ln d equals p's (the score equation of an exponential family in ln d), which is monotone in γ,
so the root is unique and found by bracketing. An exact power law returns its γ to solver precision;
a flat profile returns 0.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq


def _mean_log_d(gamma: float, logd: np.ndarray) -> float:
    a = -gamma * logd
    a -= a.max()
    w = np.exp(a)
    return float((w * logd).sum() / w.sum())


def fit_power_law_mle(d: np.ndarray, profile: np.ndarray, bracket: tuple[float, float] = (-10.0, 20.0)) -> float:
    """Maximum-likelihood γ of the truncated discrete power law on the distances ``d``.

    Parameters
    ----------
    d : np.ndarray
        (D,) integer distances ≥ 1 (tokens), the fit range.
    profile : np.ndarray
        (D,) non-negative mass at those distances (any scale).
    bracket : tuple of float
        Search interval for γ.

    Returns
    -------
    float
        γ̂ (dimensionless); NaN if the profile has no mass or the root is outside ``bracket``.

    Examples
    --------
    >>> d = np.arange(1, 200)
    >>> round(fit_power_law_mle(d, d ** -1.3), 8)
    1.3
    """
    p = np.clip(np.asarray(profile, dtype=np.float64), 0.0, None)
    total = p.sum()
    if not np.isfinite(total) or total <= 0:
        return float("nan")
    logd = np.log(np.asarray(d, dtype=np.float64))
    target = float((p * logd).sum() / total)
    f = lambda g: _mean_log_d(g, logd) - target  # noqa: E731 — decreasing in g
    lo, hi = bracket
    if f(lo) < 0 or f(hi) > 0:
        return float("nan")
    return float(brentq(f, lo, hi, xtol=1e-12, rtol=1e-12))
