"""Slow receipts (``gammalens claims verify --slow``): re-training the zoo and the full θ-rescale sweep.

Minutes to hours on a CPU; each is resumable where it trains (the zoo's models are kept in ``zoo_dir``
and skipped when already trained with the same settings).
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

from gammalens.zoo.grid import GridConfig, train_grid
from gammalens.zoo.measure import ZooMeasureConfig, measure_zoo
from gammalens.zoo.train import TrainConfig

DEFAULT_ZOO = Path.home() / ".cache" / "gammalens" / "claims-zoo"


def zoo_pade_error(zoo_dir: str | None = None, windows: int = 16, bootstrap: int = 200, device: str = "cpu",
                   steps: int = 400, thetas: tuple[float, ...] | None = None, contexts: tuple[int, ...] | None = None,
                   limit_files: int | None = None) -> dict[str, float]:
    """Train the zoo (10 Llama models, θ ∈ 10²…10⁶ × T ∈ {128, 512}, 400 steps) and measure γ_Padé's error.

    Exactly ``gammalens zoo train`` then ``gammalens zoo measure`` with their defaults (~30 min of
    training on one free CPU core; bit-identical on the same Python/torch, see docs/zoo.md). ``steps``,
    ``thetas``, ``contexts`` and ``limit_files`` shrink it for a smoke test (defaults: the zoo's).

    Returns
    -------
    dict
        ``median_rel_error`` (median over models of |γ − γ_Padé|/γ), ``median_abs_error``,
        ``constant_median_rel_error`` (the leave-one-out mean γ of the other models as the prediction)
        and ``models``.
    """

    zoo = Path(zoo_dir).expanduser() if zoo_dir else DEFAULT_ZOO
    grid = GridConfig(out=zoo, base=TrainConfig(steps=steps, device=device), limit_files=limit_files)
    if thetas is not None:
        grid = replace(grid, thetas=tuple(thetas))
    if contexts is not None:
        grid = replace(grid, contexts=tuple(int(t) for t in contexts))
    train_grid(grid)
    rows = measure_zoo(ZooMeasureConfig(zoo=zoo, windows=windows, bootstrap=bootstrap, device=device)).models
    g = [float(r["gamma"]) for r in rows]
    gp = [float(r["gamma_pade"]) for r in rows]
    loo = [(sum(g) - gi) / (len(g) - 1) for gi in g]
    return {"median_rel_error": statistics.median(abs(a - b) / abs(a) for a, b in zip(g, gp, strict=True)),
            "median_abs_error": statistics.median(abs(a - b) for a, b in zip(g, gp, strict=True)),
            "constant_median_rel_error": statistics.median(abs(a - b) / abs(a) for a, b in zip(g, loo, strict=True)),
            "models": float(len(rows))}
