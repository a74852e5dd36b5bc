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

from dataclasses import dataclass, field

import numpy as np

from gammalens.fit import law
from gammalens.fit.law import Law
from gammalens.fit.power_law import loglog_weights


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
    delta_aic : dict of str to float
        AIC(law) − AIC(power law) for every law compared but the power law (nats).
    """

    preferred: str
    delta_aic_exponential: float
    delta_aic_cutoff: float
    r2_power_law: float
    r2_exponential: float
    cutoff_gamma: float
    cutoff_lambda: float
    delta_aic: dict[str, float] = field(default_factory=dict)


def compare_laws(d: np.ndarray, profile: np.ndarray, laws: tuple[Law, ...] | None = None) -> ModelComparison:
    """Fit every law of ``laws`` (default :data:`gammalens.fit.law.LAWS`: power law, exponential, cutoff power
    law) to ``profile`` (D,) at distances ``d`` (D,) ≥ 1 and rank them by AIC.

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
    fits = {one.name: one.fit(d, y, w) for one in (law.LAWS if laws is None else laws)}
    aic = {name: f.aic(sw, n_eff) for name, f in fits.items()}
    preferred = min(aic, key=aic.__getitem__)  # ties: the first law listed
    pl, ex, cut = fits["power_law"], fits["exponential"], fits["power_law_cutoff"]
    return ModelComparison(preferred, aic["exponential"] - aic["power_law"], aic["power_law_cutoff"] - aic["power_law"],
                           pl.r2, ex.r2, float(cut.coef[1]), float(cut.coef[2]),
                           delta_aic={name: a - aic["power_law"] for name, a in aic.items() if name != "power_law"})
