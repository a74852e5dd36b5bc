"""gammalens — how attention decays with query–key distance, measured exactly, with receipts.

``import gammalens`` stays light: torch and transformers load only when a measurement runs.

>>> import gammalens
>>> result = gammalens.measure("minilm", context=128, windows=4)   # doctest: +SKIP
>>> result.to_pandas().query("scope == 'model'")[["gamma", "gamma_ci_low", "gamma_ci_high"]]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gammalens.errors import GammalensError
from gammalens.version import __version__

if TYPE_CHECKING:
    from gammalens.measurement import MeasureResult
    from gammalens.taf import TafResult

__all__ = ["GammalensError", "__version__", "measure", "taf_gamma"]


def measure(model: Any = None, **settings: Any) -> MeasureResult:
    """Measure per-head γ of ``model``; see :func:`gammalens.measurement.measure` for every setting."""
    from gammalens.measurement import measure as _measure

    return _measure(model, **settings)


def taf_gamma(model: Any = None, **settings: Any) -> TafResult:
    """γ of ``model`` by the book's estimator (tafagent); see :func:`gammalens.taf.taf_gamma` for every setting.

    >>> gammalens.taf_gamma("minilm", windows=8, max_distance=200)   # doctest: +SKIP
    """
    from gammalens.taf import taf_gamma as _taf_gamma

    return _taf_gamma(model, **settings)
