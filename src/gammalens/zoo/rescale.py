"""The within-model θ-rescale control — ``gammalens zoo rescale``.

One trained zoo model, its weights untouched, is measured with its RoPE base θ multiplied by a factor at
inference (×1/16 … ×256): a copy of the model directory whose ``config.json`` carries the new
``rope_parameters.rope_theta`` (transformers rebuilds the rotary embedding's ``inv_freq`` from it when it
loads the copy). Only the geometry changes, so the γ it moves is the geometric part of γ
(glossary: γ_obs = γ_geom + γ_train + γ_arch + ε), while the sink, set by what the weights learned, may stay
put. The book reports γ 0.75 → 1.0 with the sink flat at ~0.38 for a 256× rescale; this measures ours.

>>> rows = rescale_sweep(Path("zoo/theta1e4-T512"), "zoo/heldout", factors=(1/16, 1, 256))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gammalens.errors import GammalensError
from gammalens.measuring.pipeline import measure
from gammalens.model.load import ModelSource, load_model
from gammalens.zoo.predictor import kernel_slope, pooled_gamma, weight_kernels

FACTORS = (1 / 16, 1 / 4, 1.0, 4.0, 16.0, 64.0, 256.0)  # θ multipliers of the sweep


@dataclass
class RescaleConfig:
    """Settings of ``gammalens zoo rescale``; CLI flags map one-to-one onto these fields.

    Attributes
    ----------
    model : Path
        A trained zoo model directory.
    corpus : str
        Corpus spec to measure on (the zoo's held-out folder).
    factors : tuple of float
        Multipliers of θ (1.0 is the model as trained).
    context : int or None
        Tokens per window; None: the model's ``max_position_embeddings`` (its training context).
    windows, bootstrap, seed : int
        As in ``gammalens measure``.
    device : str
        ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
    beta : float or None
        β of ``gamma_kernel = β·S(θ, T)`` (calibrated on the zoo); None: no kernel prediction column.
    c_weights : float or None
        c of ``gamma_weights`` (calibrated on the zoo); None: no weight prediction column.
    """

    model: Path
    corpus: str
    factors: tuple[float, ...] = FACTORS
    context: int | None = None
    windows: int = 16
    bootstrap: int = 200
    seed: int = 0
    device: str = "cpu"
    beta: float | None = None
    c_weights: float | None = None

    def __post_init__(self) -> None:
        if not self.factors or any(not f > 0 for f in self.factors):
            raise GammalensError(f"θ factors must be positive numbers (got {self.factors})")


def rescaled_copy(model_dir: Path, factor: float, dest: Path) -> float:
    """Copy ``model_dir`` to ``dest`` with RoPE θ multiplied by ``factor``; returns the new θ.

    Both config layouts are handled: ``rope_parameters.rope_theta`` (transformers ≥ 5) and a top-level
    ``rope_theta`` (older configs).
    """
    model_dir, dest = Path(model_dir), Path(dest)
    shutil.copytree(model_dir, dest, dirs_exist_ok=True)
    cfg_path = dest / "config.json"
    cfg = json.loads(cfg_path.read_text())
    params = cfg.get("rope_parameters") or {}
    theta = params.get("rope_theta", cfg.get("rope_theta"))
    if theta is None:
        raise GammalensError(f"{model_dir} has no RoPE θ in config.json; the rescale control needs a RoPE model")
    new = float(theta) * factor
    if params:
        params["rope_theta"] = new
        cfg["rope_parameters"] = params
    if "rope_theta" in cfg or not params:
        cfg["rope_theta"] = new
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    return new


def rescale_sweep(cfg: RescaleConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Measure the model at each θ factor; one row per factor.

    Returns
    -------
    list of dict
        ``model`` (directory name), ``factor``, ``theta``, model-level ``gamma`` (CI, R²), ``sink_mass``,
        ``gamma_pade`` at the new θ, ``kernel_S`` and the predictions ``gamma_kernel`` / ``gamma_weights`` (with
        the zoo's constants, when given), the per-layer γ as ``gamma_layer_0`` … and sink as ``sink_layer_0`` … .
    """

    rows = []
    with tempfile.TemporaryDirectory(prefix="gammalens-rescale-") as tmp:
        for factor in cfg.factors:
            dest = Path(tmp) / f"x{factor:g}"
            theta = rescaled_copy(Path(cfg.model), factor, dest)
            r = measure(str(dest), corpus=cfg.corpus, context=cfg.context, windows=cfg.windows,
                        bootstrap=cfg.bootstrap, seed=cfg.seed, device=cfg.device)
            m = r.model_fit
            if abs(r.manifest["model"]["arch"]["rope_theta"] - theta) > 1e-6 * theta:
                raise GammalensError(f"the rescaled copy loaded with θ = {r.manifest['model']['arch']['rope_theta']}, "
                                     f"not {theta}")
            row = {"model": Path(cfg.model).name, "factor": factor, "theta": theta,
                   **{k: m[k] for k in ("gamma", "gamma_ci_low", "gamma_ci_high", "r2", "sink_mass", "gamma_pade")}}
            context = int(r.manifest["settings"]["context"])
            kernels = weight_kernels(load_model(ModelSource(dest.name, "local", dest))[0])  # the new inv_freq
            row["kernel_S"] = kernel_slope(kernels.freqs, context)
            row["gamma_kernel"] = None if cfg.beta is None else cfg.beta * row["kernel_S"]
            row["gamma_weights"] = None if cfg.c_weights is None else pooled_gamma(kernels, cfg.c_weights, context)
            row |= {f"gamma_layer_{f['layer']}": f["gamma"] for f in r.fits if f["scope"] == "layer"}
            row |= {f"sink_layer_{f['layer']}": f["sink_mass"] for f in r.fits if f["scope"] == "layer"}
            rows.append(row)
            log(f"θ × {factor:g} = {theta:g}: γ {m['gamma']:.3f} [{m['gamma_ci_low']:.3f}, {m['gamma_ci_high']:.3f}]"
                f", sink {m['sink_mass']:.3f}")
    return rows
