"""Which law describes a head's decay: power law, exponential, or power law with exponential cutoff.

All three are linear in log space over the same weighted points (weights 1/d, see ``power_law``):

- power law          ln A = c − γ ln d              (2 parameters)
- exponential        ln A = c − λ d                 (2 parameters)
- cutoff power law   ln A = c − γ ln d − λ d, λ ≥ 0 (3 parameters)

They are compared by AIC with Gaussian log residuals, AIC = n_eff·ln(WRSS/Σw) + 2k, where
n_eff = (Σw)²/Σw² is Kish's effective number of points under the weights. ΔAIC > 0 favours the power
law; by convention |ΔAIC| < 2 is "indistinguishable", > 10 "decisive". The book's Δ(R²) (power law
minus exponential) is reported too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gammalens.fit.power_law import loglog_weights, weighted_line


@dataclass(frozen=True)
class ModelComparison:
    """Power law vs exponential vs cutoff power law for one profile.

    Attributes
    ----------
    preferred : str
        ``'power_law'``, ``'exponential'`` or ``'power_law_cutoff'`` (lowest AIC).
    delta_aic_exponential : float
        AIC(exponential) − AIC(power law), nats; > 0 favours the power law.
    delta_aic_cutoff : float
        AIC(cutoff) − AIC(power law), nats; < 0 means the cutoff earns its extra parameter.
    r2_power_law, r2_exponential : float
        Weighted R² of the two 2-parameter fits.
    cutoff_gamma : float
        γ of the cutoff fit.
    cutoff_lambda : float
        λ of the cutoff fit (1/token), ≥ 0.
    """

    preferred: str
    delta_aic_exponential: float
    delta_aic_cutoff: float
    r2_power_law: float
    r2_exponential: float
    cutoff_gamma: float
    cutoff_lambda: float


def _aic(wrss: float, sw: float, n_eff: float, k: int) -> float:
    return n_eff * np.log(max(wrss, 1e-300) / sw) + 2 * k


def compare_laws(d: np.ndarray, profile: np.ndarray) -> ModelComparison:
    """Fit the three laws to ``profile`` (D,) at distances ``d`` (D,) ≥ 1 and rank them by AIC.

    Examples
    --------
    >>> d = np.arange(1, 300)
    >>> compare_laws(d, d ** -1.2 * (1 + 0.01 * np.cos(d))).preferred in ('power_law', 'power_law_cutoff')
    True
    """
    d = np.asarray(d, dtype=np.float64)
    with np.errstate(divide="ignore"):
        y = np.log(np.asarray(profile, dtype=np.float64))
    ok = np.isfinite(y)
    nan = float("nan")
    if ok.sum() < 4:
        return ModelComparison("undetermined", nan, nan, nan, nan, nan, nan)
    d, y = d[ok], y[ok]
    w = loglog_weights(d)
    sw, n_eff = w.sum(), w.sum() ** 2 / (w * w).sum()
    x = np.log(d)
    pl = weighted_line(x, y, w)
    ex = weighted_line(d, y, w)
    # cutoff: weighted normal equations for [1, −ln d, −d]
    X = np.stack([np.ones_like(d), -x, -d], axis=1)
    sq = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(X * sq[:, None], y * sq, rcond=None)
    if coef[2] < 0:  # a cutoff that grows the tail is no cutoff: fall back to the power law, λ = 0
        coef = np.array([float(pl.intercept), -float(pl.slope), 0.0])
    wrss_cut = float((w * (y - X @ coef) ** 2).sum())
    aic_pl = _aic(float(pl.wrss), sw, n_eff, 2)
    aic_ex = _aic(float(ex.wrss), sw, n_eff, 2)
    aic_cut = _aic(wrss_cut, sw, n_eff, 3)
    names = ("power_law", "exponential", "power_law_cutoff")
    preferred = names[int(np.argmin([aic_pl, aic_ex, aic_cut]))]
    return ModelComparison(preferred, float(aic_ex - aic_pl), float(aic_cut - aic_pl), float(pl.r2), float(ex.r2),
                           float(coef[1]), float(coef[2]))
