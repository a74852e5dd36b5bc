"""The Law extension point: the three laws reproduce an independent least-squares AIC ranking, and a new law
is one class — compared, preferred when it fits best, and reported in the fit rows."""

from __future__ import annotations

import numpy as np
import pytest

from gammalens.fit import law
from gammalens.fit.compare import compare_laws
from gammalens.fit.heads import _row


def independent_aic(X: np.ndarray, y: np.ndarray, w: np.ndarray, nonneg_last: bool = False) -> float:
    sq = np.sqrt(w)
    coef = np.linalg.lstsq(X * sq[:, None], y * sq, rcond=None)[0]
    if nonneg_last and coef[-1] < 0:
        X = X[:, :-1]
        coef = np.linalg.lstsq(X * sq[:, None], y * sq, rcond=None)[0]
    wrss = float((w * (y - X @ coef) ** 2).sum())
    n_eff = w.sum() ** 2 / (w * w).sum()
    return n_eff * np.log(wrss / w.sum()) + 2 * (3 if nonneg_last else X.shape[1])


@pytest.mark.parametrize("shape", ["power", "exponential", "cutoff"])
def test_three_laws_match_an_independent_fit(shape: str) -> None:
    rng = np.random.default_rng(0)
    d = np.arange(1.0, 257.0)
    truth = {"power": d ** -0.8, "exponential": np.exp(-0.02 * d), "cutoff": d ** -0.5 * np.exp(-0.01 * d)}[shape]
    prof = truth * np.exp(rng.normal(0, 0.05, d.size))
    y, w = np.log(prof), 1 / d
    one = np.ones_like(d)
    aic_pl = independent_aic(np.stack([one, -np.log(d)], 1), y, w)
    aic_ex = independent_aic(np.stack([one, -d], 1), y, w)
    aic_cut = independent_aic(np.stack([one, -np.log(d), -d], 1), y, w, nonneg_last=True)
    cmp = compare_laws(d, prof)
    assert cmp.delta_aic_exponential == pytest.approx(aic_ex - aic_pl, rel=1e-9, abs=1e-9)
    assert cmp.delta_aic_cutoff == pytest.approx(aic_cut - aic_pl, rel=1e-9, abs=1e-9)
    names = ["power_law", "exponential", "power_law_cutoff"]
    assert cmp.preferred == names[int(np.argmin([aic_pl, aic_ex, aic_cut]))]


class Stretched(law.Law):
    """A(d) ∝ exp(−b·√d): a law the package does not ship, added as one class."""

    name = "stretched"

    def design(self, d: np.ndarray) -> np.ndarray:
        return np.stack([np.ones_like(d), -np.sqrt(d)], axis=1)


def test_a_new_law_is_one_class(monkeypatch: pytest.MonkeyPatch) -> None:
    d = np.arange(1.0, 200.0)
    prof = np.exp(-0.3 * np.sqrt(d)) * (1 + 0.001 * np.cos(d))
    assert compare_laws(d, prof).preferred != "stretched"
    monkeypatch.setattr(law, "LAWS", (*law.LAWS, Stretched()))
    cmp = compare_laws(d, prof)
    assert cmp.preferred == "stretched" and cmp.delta_aic["stretched"] < -10
    row = _row("model", "model", None, None, d, prof, None, 0.0, 1)
    assert row["preferred_model"] == "stretched" and row["delta_aic_stretched"] == cmp.delta_aic["stretched"]
    assert Stretched().fit(d, np.log(prof), 1 / d).coef[1] == pytest.approx(0.3, rel=1e-3)
