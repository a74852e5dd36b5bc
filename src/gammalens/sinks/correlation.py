"""γ ⟂ sink: how strongly sink mass and the decay exponent γ go together, across heads and across models.

The book treats sink mass and γ as separate axes of a head's attention (a γ-tail plus a sink plus
recency); gammalens keeps the sink keys out of the γ fit. This module measures how independent the two
actually are: Pearson's r and Spearman's ρ with 95% confidence intervals from Fisher's z transform —
se = 1/√(n−3) for r, and √((1 + ρ²/2)/(n−3)) for ρ (Bonett & Wright 2000). Heads of one model are
treated as independent samples, which they are not quite (heads of a layer share their input), so
the intervals are optimistic; across models each model counts once. r and ρ are scipy.stats' ``pearsonr`` and
``spearmanr`` (ties get mean ranks), the interval's quantile ``scipy.stats.norm.ppf``
(``tests/test_correlation_scipy.py`` checks all three against a 50-digit mpmath computation).

>>> c = correlate([0.1, 0.4, 0.2, 0.8, 0.5], [0.7, 1.1, 0.6, 1.3, 0.9])
>>> round(c.pearson, 3), c.n
(0.893, 5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95% normal quantile, scipy.stats.norm.ppf(0.975) (kept for callers)


@dataclass(frozen=True)
class Correlation:
    """Correlation between two per-item quantities (dimensionless, in [−1, 1]).

    Attributes
    ----------
    x, y : str
        What was correlated (e.g. ``'sink_mass'``, ``'gamma'``).
    n : int
        Items with both values finite.
    pearson, pearson_ci_low, pearson_ci_high : float
        Pearson's r and its 95% Fisher-z interval (NaN when n < 4 or a variable is constant).
    spearman, spearman_ci_low, spearman_ci_high : float
        Spearman's ρ (ties get mean ranks) and its 95% Fisher-z interval (Bonett–Wright variance).
    over : str
        What the items are: ``'heads'`` or ``'models'``.
    """

    x: str
    y: str
    n: int
    pearson: float
    pearson_ci_low: float
    pearson_ci_high: float
    spearman: float
    spearman_ci_low: float
    spearman_ci_high: float
    over: str = "heads"

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Correlation:
        return cls(**{k: (math.nan if v is None else v) for k, v in d.items()})

    def __str__(self) -> str:
        if not math.isfinite(self.pearson):
            return f"{self.x} vs {self.y} over {self.n} {self.over}: not enough varied data for a correlation"
        return (f"{self.x} vs {self.y} over {self.n} {self.over}: Pearson r = {self.pearson:.3f} "
                f"[{self.pearson_ci_low:.3f}, {self.pearson_ci_high:.3f}], Spearman ρ = {self.spearman:.3f} "
                f"[{self.spearman_ci_low:.3f}, {self.spearman_ci_high:.3f}] (95% CI, Fisher z)")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r (scipy.stats.pearsonr); NaN when a variable is constant."""
    import warnings

    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConstantInputWarning: r is undefined, NaN below
        r = float(stats.pearsonr(a, b).statistic)
    return r if math.isfinite(r) else math.nan


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ with ties given their mean rank (scipy.stats.spearmanr); NaN when a variable is constant."""
    import warnings

    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = float(stats.spearmanr(a, b).statistic)
    return rho if math.isfinite(rho) else math.nan


def _fisher(r: float, n: int, se: float, level: float = 0.95) -> tuple[float, float]:
    """The Fisher-z interval tanh(atanh(r) ± z_(1+level)/2 · se); NaN when r is undefined or n < 4."""
    from scipy import stats

    if not math.isfinite(r) or n < 4:
        return math.nan, math.nan
    z = float(np.arctanh(np.clip(r, -1 + 1e-15, 1 - 1e-15)))  # r = ±1 exactly stays finite
    half = float(stats.norm.ppf((1 + level) / 2)) * se
    return math.tanh(z - half), math.tanh(z + half)


def correlate(x: Sequence[float], y: Sequence[float], *, names: tuple[str, str] = ("sink_mass", "gamma"),
              over: str = "heads") -> Correlation:
    """Pearson and Spearman correlation of ``x`` and ``y`` (equal length; non-finite pairs dropped).

    Parameters
    ----------
    x, y : sequence of float
        One value per item, e.g. each head's sink mass and γ.
    names : (str, str)
        Names of ``x`` and ``y`` for the result.
    over : str
        What the items are (``'heads'``, ``'models'``).

    Returns
    -------
    Correlation
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = len(a)
    r = _pearson(a, b) if n >= 3 else math.nan
    rho = _spearman(a, b) if n >= 3 else math.nan
    se_r = 1 / math.sqrt(n - 3) if n > 3 else math.nan
    se_rho = math.sqrt((1 + rho * rho / 2) / (n - 3)) if n > 3 and math.isfinite(rho) else math.nan
    return Correlation(names[0], names[1], n, r, *_fisher(r, n, se_r), rho, *_fisher(rho, n, se_rho), over=over)


def across_heads(fits: Sequence[dict[str, Any]]) -> Correlation:
    """Sink mass (the fit's excluded first-K mass, ``sink_mass``) against γ over the head rows of ``fits``."""
    heads = [r for r in fits if r["scope"] == "head"]
    return correlate([r["sink_mass"] for r in heads], [r["gamma"] for r in heads], over="heads")
