"""Decay laws behind one interface: a :class:`Law` is linear in log space, ``ln A(d) = X(d) · β``, fitted by
weighted least squares with the log-log weights 1/d, and compared with the others by AIC
(:func:`gammalens.fit.compare.compare_laws`).

Adding a law is one class: subclass :class:`Law` (a name, its design matrix, optionally a constrained fit)
and add an instance to :data:`LAWS`. ``compare_laws`` then fits and ranks it; it can be preferred
(``preferred_model``), and its ΔAIC against the power law reaches ``fits.csv`` as ``delta_aic_<name>``.

>>> d = np.arange(1.0, 200.0)
>>> round(float(PowerLaw().fit(d, np.log(3 * d ** -1.5), 1 / d).coef[1]), 12)      # γ
1.5
>>> [law.name for law in LAWS]
['power_law', 'exponential', 'power_law_cutoff']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from gammalens.fit.power_law import weighted_line


@dataclass(frozen=True)
class LawFit:
    """One law fitted to one profile.

    Attributes
    ----------
    name : str
        The law's name (``preferred_model`` when it wins).
    coef : np.ndarray
        (k,) coefficients of the law's design columns (intercept first).
    wrss : float
        Weighted residual sum of squares of ln A.
    r2 : float
        Weighted R² in log space.
    """

    name: str
    coef: np.ndarray
    wrss: float
    r2: float

    def aic(self, sw: float, n_eff: float) -> float:
        """AIC with Gaussian log residuals, n_eff·ln(WRSS/Σw) + 2k (nats)."""
        return float(n_eff * np.log(max(self.wrss, 1e-300) / sw) + 2 * len(self.coef))


class Law(ABC):
    """A decay law linear in log space. Subclasses set ``name`` and implement :meth:`design`."""

    name = ""

    @abstractmethod
    def design(self, d: np.ndarray) -> np.ndarray:
        """Design matrix (D, k) at distances ``d`` (D,) ≥ 1, intercept column first."""

    def fit(self, d: np.ndarray, y: np.ndarray, w: np.ndarray) -> LawFit:
        """Weighted least squares of ``y`` = ln A (D,, finite) on :meth:`design` with weights ``w`` (D,)."""
        X = self.design(d)
        sq = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(X * sq[:, None], y * sq, rcond=None)
        return self._result(coef, X, y, w)

    def _result(self, coef: np.ndarray, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> LawFit:
        wrss = float((w * (y - X @ coef) ** 2).sum())
        mean = (w * y).sum() / w.sum()
        tss = float((w * (y - mean) ** 2).sum())
        return LawFit(self.name, np.asarray(coef, dtype=np.float64), wrss, 1.0 - wrss / tss if tss > 0 else 1.0)


class _Line(Law):
    """A two-parameter law ln A = c − b·x(d), fitted in closed form (:func:`weighted_line`)."""

    @abstractmethod
    def x(self, d: np.ndarray) -> np.ndarray:
        """The law's regressor x(d) (D,): ln d for the power law, d for the exponential."""

    def design(self, d: np.ndarray) -> np.ndarray:
        return np.stack([np.ones_like(d), -self.x(d)], axis=1)  # (D, 2)

    def fit(self, d: np.ndarray, y: np.ndarray, w: np.ndarray) -> LawFit:
        line = weighted_line(self.x(d), y, w)
        return LawFit(self.name, np.array([float(line.intercept), -float(line.slope)]), float(line.wrss),
                      float(line.r2))


class PowerLaw(_Line):
    """A(d) ∝ d^−γ: coef = (c, γ)."""

    name = "power_law"

    def x(self, d: np.ndarray) -> np.ndarray:
        return np.log(d)


class Exponential(_Line):
    """A(d) ∝ e^−λd: coef = (c, λ)."""

    name = "exponential"

    def x(self, d: np.ndarray) -> np.ndarray:
        return np.asarray(d, dtype=np.float64)


class PowerLawCutoff(Law):
    """A(d) ∝ d^−γ e^−λd with λ ≥ 0: coef = (c, γ, λ); a fit with λ < 0 falls back to the power law, λ = 0."""

    name = "power_law_cutoff"

    def design(self, d: np.ndarray) -> np.ndarray:
        return np.stack([np.ones_like(d), -np.log(d), -d], axis=1)  # (D, 3)

    def fit(self, d: np.ndarray, y: np.ndarray, w: np.ndarray) -> LawFit:
        free = super().fit(d, y, w)
        if free.coef[2] >= 0:
            return free
        pl = PowerLaw().fit(d, y, w)  # a cutoff that grows the tail is no cutoff
        return self._result(np.array([pl.coef[0], pl.coef[1], 0.0]), self.design(d), y, w)


LAWS: tuple[Law, ...] = (PowerLaw(), Exponential(), PowerLawCutoff())
