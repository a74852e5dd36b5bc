"""γ ⟂ sink across the atlas's models: model-level sink mass against model-level γ, one point per model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gammalens.atlas.compare import list_entries
from gammalens.sinks.correlation import Correlation, correlate

__all__ = ["across_models"]


def across_models(atlas: Path | str | None = None, *, sink_tokens: int | None = 1,
                  corpus: str | None = None) -> tuple[Correlation, Any]:
    """Model-level sink mass against model-level γ over the models measured in the atlas.

    Each model counts once, with its latest run (per ``corpus`` when given); only runs with the same
    number of sink tokens are comparable (``sink_tokens``; None: any).

    Returns
    -------
    (Correlation, DataFrame)
        The correlation, and the points: ``model_id``, ``run_id``, ``corpus``, ``gamma``, ``sink_mass``.
    """
    runs = list_entries(atlas, corpus=corpus, reference=False)
    if sink_tokens is not None and len(runs):
        runs = runs[runs["sink_tokens"] == sink_tokens]
    runs = runs[runs["sink_mass"].notna() & runs["gamma"].notna()]
    points = runs.sort_values("created").groupby("model_id").tail(1)
    points = points[["model_id", "run_id", "corpus", "gamma", "sink_mass"]].reset_index(drop=True)
    return correlate(points["sink_mass"].astype(float), points["gamma"].astype(float), over="models"), points
