"""Weighted log-log least squares for A(d) ∝ d^−γ (glossary: γ, Ch. 15).

The fit regresses ln A(d) on ln d over integer distances a ≤ d ≤ b with weights w_d = 1/d: the
integer grid is denser at large d by a factor d per unit of ln d, so 1/d gives every octave of distance
the same say. Distances with zero mass (log undefined) are left out of the fit. Everything is
vectorised over leading axes so the bootstrap fits thousands of profiles in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def loglog_weights(d: np.ndarray) -> np.ndarray:
    """Weights 1/d (equal weight per unit of ln d) for integer distances ``d`` ≥ 1, shape like ``d``."""
    return 1.0 / np.asarray(d, dtype=np.float64)


@dataclass(frozen=True)
class LinearFit:
    """Result of a weighted least-squares line y = intercept + slope·x (leading axes broadcast).

    Attributes
    ----------
    slope, intercept : np.ndarray
        Fitted coefficients, shape (...,).
    r2 : np.ndarray
        Weighted coefficient of determination, shape (...,).
    wrss : np.ndarray
        Weighted residual sum of squares, shape (...,).
    n_points : np.ndarray
        Number of finite points used, shape (...,).
    """

    slope: np.ndarray
    intercept: np.ndarray
    r2: np.ndarray
    wrss: np.ndarray
    n_points: np.ndarray


def weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> LinearFit:
    """Weighted least squares of ``y`` on ``x``; points where ``y`` is not finite are dropped.

    Parameters
    ----------
    x : np.ndarray
        (D,) regressor.
    y : np.ndarray
        (..., D) responses; non-finite entries are excluded (per row).
    w : np.ndarray
        (D,) non-negative weights.

    Returns
    -------
    LinearFit
        Coefficients per row; NaN where fewer than 3 finite points remain.

    Examples
    --------
    >>> f = weighted_line(np.arange(5.0), 2 + 3 * np.arange(5.0), np.ones(5))
    >>> round(float(f.slope), 12), round(float(f.intercept), 12), round(float(f.r2), 12)
    (3.0, 2.0, 1.0)
    """
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y)
    we = np.where(ok, w, 0.0)
    ys = np.where(ok, y, 0.0)
    sw = we.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (we * x).sum(-1) / sw
        my = (we * ys).sum(-1) / sw
        dx = x - mx[..., None]
        dy = np.where(ok, ys - my[..., None], 0.0)
        sxx = (we * dx * dx).sum(-1)
        sxy = (we * dx * dy).sum(-1)
        syy = (we * dy * dy).sum(-1)
        slope = sxy / sxx
        intercept = my - slope * mx
        resid = np.where(ok, ys - (intercept[..., None] + slope[..., None] * x), 0.0)
        wrss = (we * resid * resid).sum(-1)
        r2 = np.where(syy > 0, 1.0 - wrss / syy, np.where(wrss <= 1e-30, 1.0, np.nan))
    n = ok.sum(-1)
    bad = n < 3
    nan = np.float64("nan")
    return LinearFit(np.where(bad, nan, slope), np.where(bad, nan, intercept), np.where(bad, nan, r2),
                     np.where(bad, nan, wrss), n)


def fit_power_law(d: np.ndarray, profile: np.ndarray) -> LinearFit:
    """Fit ln A(d) = c − γ ln d; γ is ``-result.slope``.

    Parameters
    ----------
    d : np.ndarray
        (D,) integer distances ≥ 1 (tokens).
    profile : np.ndarray
        (..., D) attention mass (or mean attention) at those distances; any positive scale.

    Returns
    -------
    LinearFit
        With ``slope = −γ``.

    Examples
    --------
    >>> d = np.arange(1, 100)
    >>> round(-float(fit_power_law(d, 3.0 * d ** -0.7).slope), 10)
    0.7
    """
    with np.errstate(divide="ignore"):
        y = np.log(np.asarray(profile, dtype=np.float64))
    y = np.where(np.isfinite(y), y, np.nan)
    return weighted_line(np.log(d.astype(np.float64)), y, loglog_weights(d))


def power_law_slope(d: np.ndarray, profile: np.ndarray) -> np.ndarray:
    """The slope −γ of :func:`fit_power_law` alone, for many profiles at once (the bootstrap's refits).  # (...,)

    A row whose values are all positive is one matrix–vector product: with x = ln d centred on its weighted
    mean, slope = Σ w·x·ln A / Σ w·x² (the same least squares, about 5× fewer passes over the data); rows
    with a zero or non-finite value go through :func:`fit_power_law`, which drops those points.

    >>> d = np.arange(1, 100)
    >>> round(-float(power_law_slope(d, 3.0 * d ** -0.7)), 10)
    0.7
    """
    profile = np.asarray(profile, dtype=np.float64)
    x = np.log(d.astype(np.float64))
    w = loglog_weights(d)
    xc = x - (w * x).sum() / w.sum()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        y = np.log(profile)
        slope = y @ (w * xc) / (w * xc * xc).sum()
    bad = ~np.isfinite(slope)
    if bad.any():
        slope[bad] = fit_power_law(d, profile[bad]).slope
    return slope
