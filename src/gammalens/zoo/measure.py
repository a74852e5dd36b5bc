"""Measuring the zoo — ``gammalens zoo measure``: γ on held-out text and on random tokens, and the predictions.

Every zoo model is measured at its training context T with :func:`gammalens.measure`, twice: on the
held-out stdlib files written by ``gammalens zoo train`` (``zoo/heldout``) and on random tokens; Δγ =
γ_text − γ_random is the glossary's induction probe. The rows gathered here (one per model and one per
model and layer) carry the measured γ, CI, R², sink mass, γ_Padé and the two predictions of
:mod:`gammalens.zoo.predictor`, calibrated leave-one-out over the zoo.

>>> table = measure_zoo(ZooMeasureConfig(zoo=Path("zoo")))   # doctest: +SKIP
>>> table.models[0]["gamma"]                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gammalens.atlas.record import record_run
from gammalens.errors import GammalensError
from gammalens.measuring.pipeline import measure
from gammalens.model.load import ModelSource, load_model
from gammalens.publish import publish
from gammalens.zoo.grid import zoo_models
from gammalens.zoo.predictor import HeadKernels, calibrate, kernel_slope, leave_one_out, pooled_gamma, weight_kernels

KERNEL_BOUNDS = (1e-2, 1e3)  # search range of β (gamma_kernel = β·S)
WEIGHT_BOUNDS = (1e-3, 1e2)  # search range of c (head profiles softmax(c·s_h(d)))


@dataclass
class ZooMeasureConfig:
    """Settings of ``gammalens zoo measure``; CLI flags map one-to-one onto these fields.

    Attributes
    ----------
    zoo : Path
        Folder written by ``gammalens zoo train`` (model directories and ``heldout/``).
    windows : int
        Windows per measurement.
    bootstrap : int
        Bootstrap resamples for the 95% CI.
    seed : int
        Seed of the window selection, random tokens and bootstrap.
    device : str
        ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
    runs : Path or None
        Write run directories here (needed to record them in the atlas); None: nothing written.
    atlas : Path or None
        Record every run in this atlas (``gammalens.atlas.record_run``); needs ``runs``.
    """

    zoo: Path = Path("zoo")
    windows: int = 16
    bootstrap: int = 200
    seed: int = 0
    device: str = "cpu"
    runs: Path | None = None
    atlas: Path | None = None

    def __post_init__(self) -> None:
        if self.atlas is not None and self.runs is None:
            raise GammalensError("recording in the atlas needs run directories: pass --runs DIR with --atlas")


@dataclass
class ZooTable:
    """What ``gammalens zoo measure`` found.

    Attributes
    ----------
    models : list of dict
        One row per model (columns: :data:`MODEL_COLUMNS`).
    layers : list of dict
        One row per model and layer (columns: :data:`LAYER_COLUMNS`).
    constants : dict
        The predictors' constants calibrated on the whole zoo (``beta_kernel``, ``c_weights``).
    settings : dict
        The measurement settings.
    """

    models: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    constants: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


MODEL_COLUMNS = (
    "model", "theta", "context", "heldout_loss", "gamma", "gamma_ci_low", "gamma_ci_high", "r2", "sink_mass",
    "heads_r2_above_0.95", "gamma_random", "sink_mass_random", "delta_gamma", "gamma_pade", "pade_abs_error",
    "pade_rel_error", "kernel_S", "gamma_kernel_loo", "kernel_abs_error", "kernel_rel_error",
    "gamma_weights_loo", "weights_abs_error", "weights_rel_error", "gamma_const_loo", "const_abs_error",
    "const_rel_error",
)
LAYER_COLUMNS = ("model", "theta", "context", "layer", "gamma", "gamma_ci_low", "gamma_ci_high", "r2",
                 "sink_mass", "gamma_random", "delta_gamma")


def measure_one(model_dir: Path, corpus: str, context: int, cfg: ZooMeasureConfig) -> Any:
    """One measurement of a zoo model at ``context``; published into ``cfg.runs`` and recorded if asked."""
    result = measure(str(model_dir), corpus=corpus, context=context, windows=cfg.windows, bootstrap=cfg.bootstrap,
                     seed=cfg.seed, device=cfg.device)
    if cfg.runs is None:
        return result
    result = publish(result, cfg.runs)
    if cfg.atlas is not None:  # unlike `measure`, a zoo measurement asked to record fails when it cannot
        record_run(result.run_dir, cfg.atlas)
    return result


def measure_zoo(cfg: ZooMeasureConfig, log: Callable[[str], None] = print) -> ZooTable:
    """Measure every model of ``cfg.zoo`` on held-out text and random tokens; add γ_Padé and our predictions."""

    heldout = Path(cfg.zoo) / "heldout"
    if not heldout.is_dir():
        raise GammalensError(f"{heldout} is missing; `gammalens zoo train --out {cfg.zoo}` writes it")
    models, layers, kernels = [], [], []
    for model_dir in zoo_models(cfg.zoo):
        info = json.loads((model_dir / "zoo.json").read_text())
        tc = info["train_config"]
        T = int(tc["context"])
        text = measure_one(model_dir, str(heldout), T, cfg)
        rand = measure_one(model_dir, "random", T, cfg)
        net, _ = load_model(ModelSource(model_dir.name, "local", model_dir))
        hk = weight_kernels(net)
        kernels.append(hk)
        m, mr = text.model_fit, rand.model_fit
        heads = [r for r in text.fits if r["scope"] == "head"]
        models.append({
            "model": model_dir.name, "theta": float(tc["theta"]), "context": T,
            "heldout_loss": info.get("final_heldout_loss"),
            **{k: m[k] for k in ("gamma", "gamma_ci_low", "gamma_ci_high", "r2", "sink_mass", "gamma_pade")},
            "heads_r2_above_0.95": sum(r["r2"] > 0.95 for r in heads) / len(heads),
            "gamma_random": mr["gamma"], "sink_mass_random": mr["sink_mass"], "delta_gamma": m["gamma"] - mr["gamma"],
            "kernel_S": kernel_slope(hk.freqs, T),
        })
        by_layer = {r["layer"]: r for r in rand.fits if r["scope"] == "layer"}
        for r in (r for r in text.fits if r["scope"] == "layer"):
            layers.append({"model": model_dir.name, "theta": float(tc["theta"]), "context": T, "layer": r["layer"],
                           **{k: r[k] for k in ("gamma", "gamma_ci_low", "gamma_ci_high", "r2", "sink_mass")},
                           "gamma_random": by_layer[r["layer"]]["gamma"],
                           "delta_gamma": r["gamma"] - by_layer[r["layer"]]["gamma"]})
        log(f"{model_dir.name}: γ {m['gamma']:.3f} (R² {m['r2']:.3f}), random {mr['gamma']:.3f}, "
            f"sink {m['sink_mass']:.3f}, γ_Padé {m['gamma_pade']:.3f}")
    constants = add_predictions(models, kernels)
    settings = {"windows": cfg.windows, "bootstrap": cfg.bootstrap, "seed": cfg.seed, "corpus": "zoo/heldout",
                "context": "training context T", "fit_range": "1:T/2", "sink_tokens": 1}
    return ZooTable(models, layers, constants, settings)


def add_predictions(models: list[dict[str, Any]], kernels: list[HeadKernels]) -> dict[str, float]:
    """Add γ_Padé errors and leave-one-out predictions of both predictors to ``models`` (in place).

    Errors: ``*_abs_error`` = |γ_pred − γ|, ``*_rel_error`` = |γ_pred − γ|/|γ| (relative to the measured γ).
    The baseline ``gamma_const_loo`` is the mean measured γ of the other models: a one-constant predictor that
    knows nothing of θ or T, the bar a geometric predictor has to clear.
    Returns the constants calibrated on every model (reported, not used for the LOO numbers).
    """

    obs = np.array([r["gamma"] for r in models])
    S = np.array([r["kernel_S"] for r in models])
    contexts = [r["context"] for r in models]

    def kernel(beta: float) -> np.ndarray:
        return beta * S

    def weights(c: float) -> np.ndarray:
        return np.array([pooled_gamma(k, c, T) for k, T in zip(kernels, contexts, strict=True)])

    constants: dict[str, float] = {}
    if len(models) >= 2:
        g_kernel, _ = leave_one_out(kernel, obs, KERNEL_BOUNDS)
        g_weights, _ = leave_one_out(weights, obs, WEIGHT_BOUNDS)
        constants = {"beta_kernel": calibrate(kernel, obs, KERNEL_BOUNDS),
                     "c_weights": calibrate(weights, obs, WEIGHT_BOUNDS)}
    else:
        g_kernel = g_weights = np.full(len(models), np.nan)
    n = len(obs)
    g_const = (obs.sum() - obs) / (n - 1) if n >= 2 else np.full(n, np.nan)
    for r, gk, gw, gc in zip(models, g_kernel, g_weights, g_const, strict=True):
        for prefix, pred in (("pade", r["gamma_pade"]), ("kernel", float(gk)), ("weights", float(gw)),
                             ("const", float(gc))):
            err = abs(pred - r["gamma"]) if pred is not None and math.isfinite(pred) else math.nan
            r[f"{prefix}_abs_error"] = err
            r[f"{prefix}_rel_error"] = err / abs(r["gamma"]) if r["gamma"] != 0 else math.nan
        r["gamma_kernel_loo"], r["gamma_weights_loo"], r["gamma_const_loo"] = float(gk), float(gw), float(gc)
    return constants


def error_summary(models: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median absolute and relative error of each predictor over ``models``: ``{'pade': {...}, ...}``.

    ``median_rel`` divides by the measured |γ|; for γ_Padé ``median_rel_to_prediction`` divides by |γ_Padé|
    (the convention of the ``gamma_pade_rel_error`` column of ``fits.csv``).
    """
    out = {}
    for prefix in ("pade", "kernel", "weights", "const"):
        a = np.array([r[f"{prefix}_abs_error"] for r in models], dtype=float)
        rel = np.array([r[f"{prefix}_rel_error"] for r in models], dtype=float)
        out[prefix] = {"median_abs": float(np.nanmedian(a)) if np.isfinite(a).any() else math.nan,
                       "median_rel": float(np.nanmedian(rel)) if np.isfinite(rel).any() else math.nan}
    # the convention of fits.csv's gamma_pade_rel_error: relative to |γ_Padé|
    to_pade = [abs(r["gamma"] - r["gamma_pade"]) / abs(r["gamma_pade"]) for r in models
               if r["gamma_pade"] is not None and r["gamma_pade"] != 0]
    out["pade"]["median_rel_to_prediction"] = float(np.median(to_pade)) if to_pade else math.nan
    return out
