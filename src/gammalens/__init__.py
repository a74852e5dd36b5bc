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
    from gammalens.measuring.config import MeasureResult
    from gammalens.taf import TafResult

__all__ = ["GammalensError", "__version__", "measure", "taf_gamma"]


def measure(model: Any = None, *, out: Any = None, report: bool = True, record: bool = False, atlas: Any = None,
            **settings: Any) -> MeasureResult:
    """Measure per-head γ of ``model``; with ``out``, also publish the run (run directory, report, atlas row).

    ``settings`` are those of :func:`gammalens.measuring.pipeline.measure` (``config=``, ``corpus=``, ``context=``
    …); ``out``, ``report``, ``record`` and ``atlas`` those of :func:`gammalens.publish.publish`.
    """
    from gammalens.measuring.config import MeasureConfig
    from gammalens.measuring.pipeline import measure as _measure

    if out is None:
        return _measure(model, **settings)
    from gammalens.claims.links import links_for_run
    from gammalens.publish import publish, run_writer

    if "config" not in settings:  # settings are checked before the output folder, as the CLI does
        settings = {"config": MeasureConfig(model=model, **{k: v for k, v in settings.items()
                                                             if k in MeasureConfig.__dataclass_fields__}),
                    **{k: v for k, v in settings.items() if k not in MeasureConfig.__dataclass_fields__}}
        model = None
    writer = run_writer(out)
    return publish(_measure(model, **settings), writer, report=report, record=record, atlas=atlas,
                   claim_links=links_for_run)


def taf_gamma(model: Any = None, **settings: Any) -> TafResult:
    """γ of ``model`` by the book's estimator (tafagent); see :func:`gammalens.taf.taf_gamma` for every setting.

    >>> gammalens.taf_gamma("minilm", windows=8, max_distance=200)   # doctest: +SKIP
    """
    from gammalens.taf import taf_gamma as _taf_gamma

    return _taf_gamma(model, **settings)
