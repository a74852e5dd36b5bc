"""``gammalens measure --estimator taf``: the book's estimator next to ours, in the manifest and the summary.

The null-corrected estimator always runs (the run format rests on its per-head fits); ``taf`` adds the
book's estimate under the manifest's ``taf`` key, with its settings, and one summary line that puts the
two side by side with what uniform attention would give the book's estimator on the same distances.
"""

from __future__ import annotations

from typing import Any

from gammalens.taf.estimator import TafResult, TafSettings, taf_gamma
from gammalens.taf.synthetic import taf_synthetic, uniform_row

ESTIMATORS = ("null", "taf")  # null: gammalens's null-corrected estimator (always run); taf: the book's, added


def settings_for(config: Any) -> TafSettings:
    """The taf settings of a :class:`~gammalens.measuring.pipeline.MeasureConfig` (same corpus, seed and batch)."""
    return TafSettings(windows=config.taf_windows, corpus=config.corpus, seeds=(config.seed,),
                       max_distance=config.taf_max_distance, fit_min_distance=config.taf_fit_min_distance,
                       batch_size=config.batch_size)


def run_alongside(loaded: tuple[Any, Any], config: Any) -> dict[str, Any]:
    """Run the book's estimator on the loaded ``(model, tokenizer)``; the manifest's ``taf`` entry."""
    settings = settings_for(config)
    result = taf_gamma(loaded=loaded, settings=settings, allow_extrapolation=config.allow_extrapolation)
    uniform = taf_synthetic(uniform_row, result.distances, settings.fit_min_distance).gamma
    return result.to_dict() | {"method": "tafagent cli/diagnose_model.py: last query on key 49, windows of d + 50, "
                                         "mean over heads and layers, OLS of ln A on ln d",
                               "fit_min_distance": settings.fit_min_distance, "gamma_uniform": uniform}


def summary_line(taf: dict[str, Any], gamma_null: float) -> str:
    """One line for the terminal summary: γ_taf, its fit, ours, and the uniform-attention baseline."""
    r = TafResult.from_dict(taf)
    d = r.fit_distances
    return (f"book's estimator (taf): γ_taf = {r.gamma:.3f} (R² {r.r2:.3f}, OLS on d ∈ {{{', '.join(map(str, d))}}}, "
            f"{r.n_windows} {r.corpus} windows each) · ours γ = {gamma_null:.3f} · uniform attention would give "
            f"γ_taf = {taf['gamma_uniform']:.3f} here, ours 0")
