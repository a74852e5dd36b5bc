"""Fit every head, every layer (heads pooled) and the model (all heads pooled) of a profile.

The fitted quantity is the null-corrected common-support profile (``DistanceProfile.mass_cs``) over
the fit range a ≤ d ≤ b (b capped at window − 1 on sliding-window layers). Pooling sums mass, so a
pooled γ is that of the mean attention of the pooled heads, not a mean of γs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gammalens.fit.bootstrap import bootstrap_gamma, few_windows_note, percentile_ci, resample_counts
from gammalens.fit.compare import compare_laws
from gammalens.fit.mle import fit_power_law_mle
from gammalens.fit.power_law import fit_power_law
from gammalens.probe.profile import DistanceProfile


@dataclass(frozen=True)
class FitSettings:
    """How profiles are fitted.

    Attributes
    ----------
    d_min, d_max : int
        Fit range in tokens, inclusive, 1 ≤ d_min < d_max ≤ profile.cs_horizon.
    bootstrap : int
        Resamples over documents for the 95% CI (0: no CI).
    seed : int
        Seed of the bootstrap.
    """

    d_min: int
    d_max: int
    bootstrap: int = 200
    seed: int = 0


def _row(name: str, scope: str, layer: int | None, head: int | None, d: np.ndarray, prof: np.ndarray,
         boot: np.ndarray | None, sink: float, n_docs: int) -> dict:
    pl = fit_power_law(d, prof)
    gamma = float(-pl.slope)
    lo, hi = (float("nan"), float("nan"))
    if boot is not None:
        lo_a, hi_a = percentile_ci(boot[:, None])
        lo, hi = float(lo_a[0]), float(hi_a[0])
    cmp = compare_laws(d, prof)
    return {
        "name": name, "scope": scope, "layer": layer, "head": head,
        "gamma": gamma, "gamma_ci_low": lo, "gamma_ci_high": hi, "r2": float(pl.r2),
        "gamma_mle": fit_power_law_mle(d, prof), "method": "wls-loglog",
        "fit_d_min": int(d[0]), "fit_d_max": int(d[-1]),
        "sink_mass": sink, "preferred_model": cmp.preferred,
        "delta_aic_exponential": cmp.delta_aic_exponential, "delta_aic_cutoff": cmp.delta_aic_cutoff,
        "r2_exponential": cmp.r2_exponential, "cutoff_lambda": cmp.cutoff_lambda, "n_docs": n_docs,
    } | {f"delta_aic_{name}": v for name, v in cmp.delta_aic.items()  # laws beyond the format's three
         if name not in ("exponential", "power_law_cutoff")}


def layer_range(profile: DistanceProfile, settings: FitSettings, layer: int) -> np.ndarray:
    """Integer distances (D,) fitted for ``layer``: the fit range, capped below a sliding window."""
    hi = settings.d_max
    w = int(profile.layer_window[layer])
    if w > 0:
        hi = min(hi, w - 1)
    return np.arange(settings.d_min, hi + 1)


def fit_profile(profile: DistanceProfile, settings: FitSettings) -> list[dict]:
    """Rows of ``fits.csv``: every head, every layer, then the model (see docs/run_format.md).

    Parameters
    ----------
    profile : DistanceProfile
        The measured profiles.
    settings : FitSettings
        Fit range, bootstrap size and seed.

    Returns
    -------
    list of dict
        One dict per row, keys as the columns of ``fits.csv``; with a bootstrap over fewer than
        ``MIN_RELIABLE_WINDOWS`` documents every row also carries ``ci_note`` (:func:`few_windows_note`).
    """
    L, H = profile.n_layers, profile.n_heads
    N = profile.doc_mass_cs.shape[0]
    sink = profile.sink_mass
    counts = resample_counts(N, settings.bootstrap, settings.seed) if settings.bootstrap > 0 and N > 1 else None
    heads, layers = [], []
    for layer in range(L):
        d = layer_range(profile, settings, layer)
        docs = profile.doc_mass_cs[:, layer][..., d]  # (N, H, D)
        prof = docs.sum(0)  # (H, D)
        boot_h = bootstrap_gamma(d, docs, counts) if counts is not None else None  # (R, H)
        boot_l = bootstrap_gamma(d, docs.sum(1), counts) if counts is not None else None  # (R,)
        for h in range(H):
            heads.append(_row(f"layers.{layer}.heads.{h}", "head", layer, h, d, prof[h],
                              None if boot_h is None else boot_h[:, h], float(sink[layer, h]), N))
        layers.append(_row(f"layers.{layer}", "layer", layer, None, d, prof.sum(0), boot_l,
                           float(np.nanmean(sink[layer])), N))
    d = np.arange(settings.d_min, min(layer_range(profile, settings, i)[-1] for i in range(L)) + 1)
    # (N, L, D), one layer at a time: a copy of every per-document array would be 4 GB for an 8B model at 128K
    docs = np.stack([profile.doc_mass_cs[:, layer][..., d].sum(1) for layer in range(L)], 1)
    docs = docs.sum(1)  # (N, D)
    boot_m = bootstrap_gamma(d, docs, counts) if counts is not None else None
    model = _row("model", "model", None, None, d, docs.sum(0), boot_m, float(np.nanmean(sink)), N)
    rows = [*heads, *layers, model]
    note = few_windows_note(N, settings.bootstrap)
    if note is not None:  # an extra fits.csv column, only in runs whose CIs it qualifies
        for row in rows:
            row["ci_note"] = note
    return rows
