"""Decay profiles A(d) on log-log axes: one panel per layer, and the runs overlaid for comparison.

Each layer panel shows the heads' null-corrected profiles (thin, coloured by their γ), the layer mean, the
fitted power law over the fit range, and the null baseline: for the null-corrected profile uniform
attention over the visible keys is *flat*. The naive mean ``mass / pairs`` is drawn muted, with its own
uniform-attention null, which *decays* under causal masking — the pitfall the null correction removes.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from gammalens.atlas.quality import fit_flags
from gammalens.report.colors import MUTED, RUN_COLORS, gamma_line_color, gamma_span
from gammalens.report.svg import Plot, Scale, fmt, legend, nice_log_range, swatch
from gammalens.runs.reader import RunFiles

FIT_COLOR, NULL_COLOR, MEAN_COLOR = "#e69f00", "#555555", "#111111"


def log_bins(n: int, *, dense_to: int = 16, per_decade: int = 24) -> list[np.ndarray]:
    """Distance bins over 1..n−1: single distances up to ``dense_to``, then log-spaced bins."""
    if n <= 1:
        return []
    bins = [np.array([d]) for d in range(1, min(dense_to, n - 1) + 1)]
    if n - 1 > dense_to:
        edges = np.unique(np.round(np.geomspace(dense_to + 1, n, max(2, int(per_decade * math.log10(n / dense_to))))))
        edges = edges.astype(int)
        for lo, hi in itertools.pairwise(edges):
            bins.append(np.arange(lo, hi))
    return bins


def binned(profile: np.ndarray, bins: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Bin means of ``profile[..., d]`` plotted at each bin's geometric centre.  # (k,), (..., k)"""
    centres = np.array([math.sqrt(b[0] * b[-1]) for b in bins])
    values = np.stack([profile[..., b].mean(axis=-1) for b in bins], axis=-1)
    return centres, values


def null_levels(causal: bool, context: int, sink_tokens: int, horizon: int) -> tuple[float, np.ndarray]:
    """Mean attention per key under *uniform* attention over the visible keys (sinks included).

    Returns the flat level of the null-corrected profile (queries q ≥ sink_tokens + horizon) and the naive
    mean at each distance d (queries q ≥ d + sink_tokens), shape (context,). Bidirectional: both 1/context.
    """
    if not causal:
        return 1.0 / context, np.full(context, 1.0 / context)
    inv = 1.0 / np.arange(1, context + 1)          # 1/(q+1) for q = 0..context−1
    tail = np.cumsum(inv[::-1])[::-1]               # Σ_{q'≥q} 1/(q'+1)
    count = context - np.arange(context)            # number of q' ≥ q
    first = np.minimum(np.arange(context) + sink_tokens, context - 1)
    naive = tail[first] / count[first]
    q0 = min(sink_tokens + horizon, context - 1)
    return float(tail[q0] / count[q0]), naive


def _layer_title(row: dict) -> str:
    def two(v: float) -> str:
        return f"{v:.2f}" if v is not None and math.isfinite(v) else "–"

    ci = f" [{two(row['gamma_ci_low'])}, {two(row['gamma_ci_high'])}]" if row.get("gamma_ci_low") is not None else ""
    r2 = f", R² {row['r2']:.2f}" if row.get("r2") is not None else ""
    warn = " ⚠" if fit_flags(row) else ""
    return f"layer {row['layer']}: γ = {two(row['gamma'])}{ci}{r2}{warn}"


def _fit_line(d: np.ndarray, mean: np.ndarray, gamma: float, d_min: int, d_max: int) -> tuple[list, list]:
    """The fitted power law through the mean profile over the fit range (slope −γ; intercept by least squares)."""
    sel = (d >= d_min) & (d <= d_max) & (mean > 0)
    if not sel.any():
        return [], []
    log_c = float(np.mean(np.log(mean[sel]) + gamma * np.log(d[sel])))
    xs = np.geomspace(max(d_min, 1), d_max, 24)
    return list(xs), list(np.exp(log_c) * xs**-gamma)


def decay_panels(run: RunFiles, uid: str) -> str:
    """Small multiples of A(d), one per layer, with a shared legend and a shared y range."""
    mass_cs, q_cs = run.profile("mass_cs"), run.profile("queries_cs")   # (L, H, D), (L,)
    mass, pairs = run.profile("mass"), run.profile("pairs")             # (L, H, D), (L, D)
    n_layers, n_heads, n_dist = mass.shape
    horizon = min(int(run.profile("cs_horizon")), mass_cs.shape[2] - 1)
    a_cs = mass_cs[..., : horizon + 1] / np.maximum(q_cs, 1)[:, None, None]          # (L, H, H+1)
    with np.errstate(divide="ignore", invalid="ignore"):
        naive = np.where(pairs[:, None, :] > 0, mass / pairs[:, None, :], np.nan).mean(axis=1)  # (L, D)
    bins_cs, bins_naive = log_bins(horizon + 1), log_bins(n_dist)
    d_cs, heads_cs = binned(a_cs, bins_cs)                                             # (k,), (L, H, k)
    d_nv, naive_b = binned(naive, bins_naive)                                           # (k,), (L, k)
    mean_cs = heads_cs.mean(axis=1)                                                     # (L, k)
    settings = run.settings
    causal = bool(run.arch.get("causal", True))
    sink_tokens = int(settings.get("sink_tokens") or 0)
    null_cs, null_naive = null_levels(causal, n_dist, sink_tokens, horizon)
    null_naive_b = np.array([null_naive[b].mean() for b in bins_naive])

    head_rows = {(r["layer"], r["head"]): r for r in run.head_fits}
    layer_rows = {r["layer"]: r for r in run.layer_fits}
    span = gamma_span([r["gamma"] for r in head_rows.values()])
    top = float(np.nanmax([np.nanmax(heads_cs), np.nanmax(naive_b), null_cs]))
    values = [v for v in np.concatenate([heads_cs.ravel(), naive_b.ravel(), [null_cs], null_naive_b])
              if v > top * 1e-7]
    ylo, yhi = nice_log_range(values)
    xscale, yscale = Scale(1, max(n_dist - 1, 2), log=True), Scale(ylo, yhi, log=True)

    panels = []
    for layer in range(n_layers):
        row = layer_rows.get(layer, {"layer": layer, "gamma": math.nan})
        p = Plot(f"{uid}-l{layer}", 366, 260, x=xscale, y=yscale, xlabel="distance d (tokens)",
                 ylabel="A(d): attention per query", title=_layer_title(row), margin=(26, 12, 40, 62))
        d_min, d_max = int(row.get("fit_d_min") or 1), int(row.get("fit_d_max") or horizon)
        p.band_x(d_min, d_max, fill=FIT_COLOR, opacity=0.07)
        if causal:  # bidirectional: the naive null is flat too, the same line as the corrected one
            p.line(d_nv, null_naive_b, stroke=MUTED, dash="2 3", width=1.3)
        p.line(d_nv, naive_b[layer], stroke=MUTED, width=1.6, title="naive mean mass/pairs")
        p.hline(null_cs, stroke=NULL_COLOR, dash="2 3", width=1.4)
        for head in range(n_heads):
            hr = head_rows.get((layer, head))
            g = hr["gamma"] if hr else math.nan
            p.line(d_cs, heads_cs[layer, head], stroke=gamma_line_color(g, span), width=1.0, opacity=0.8,
                   title=f"layers.{layer}.heads.{head}: γ = {fmt(g)}")
        p.line(d_cs, mean_cs[layer], stroke=MEAN_COLOR, width=2.2, title=f"layer {layer} mean (null-corrected)")
        xs, ys = _fit_line(d_cs, mean_cs[layer], row["gamma"], d_min, d_max)
        p.line(xs, ys, stroke=FIT_COLOR, width=2.4, dash="7 3", title=f"fit: γ = {fmt(row['gamma'])}")
        panels.append(p.render())
    items = [
        (swatch("line", gamma_line_color(1 - span, span), width=1.2), "heads, null-corrected (colour = γ: blue "
                                                                      "Phase A, red Phase B)"),
        (swatch("line", MEAN_COLOR, width=2.2), "layer mean, null-corrected"),
        (swatch("line", FIT_COLOR, dash="7 3", width=2.4), "power-law fit A ∝ d^−γ"),
        (swatch("box", FIT_COLOR, opacity=0.15), "fit range"),
        (swatch("line", NULL_COLOR, dash="2 3"), "uniform attention (null): flat after the correction"),
        (swatch("line", MUTED, width=1.6), "naive mean mass/pairs over all queries (biased by causal masking)"),
    ]
    if causal:
        items.append((swatch("line", MUTED, dash="2 3"), "uniform attention, naive: decays by construction"))
    return legend(items) + f'<div class="panels">{"".join(panels)}</div>'


def model_profile(run: RunFiles) -> tuple[np.ndarray, np.ndarray]:
    """All heads pooled, null-corrected, binned and normalised to A(1) = 1.  # (k,), (k,)"""
    mass_cs, q_cs = run.profile("mass_cs"), run.profile("queries_cs")
    horizon = min(int(run.profile("cs_horizon")), mass_cs.shape[2] - 1)
    a = (mass_cs[..., : horizon + 1] / np.maximum(q_cs, 1)[:, None, None]).mean(axis=(0, 1))  # (H+1,)
    d, v = binned(a, log_bins(horizon + 1))
    return d, v / v[0] if v.size and v[0] > 0 else v


def decay_overlay(runs: list[RunFiles], labels: list[str], uid: str) -> str:
    """Model-level null-corrected profiles of several runs on one log-log chart, each with its fitted slope."""
    curves = [model_profile(r) for r in runs]
    xmax = max(float(d[-1]) for d, _ in curves if d.size)
    values = [x for _, v in curves for x in v if x > 0]
    lo, hi = nice_log_range(values)
    p = Plot(uid, 760, 340, x=Scale(1, max(xmax, 2), log=True), y=Scale(lo, hi, log=True),
             xlabel="distance d (tokens)", ylabel="A(d) / A(1), all heads pooled",
             title="Decay profiles, null-corrected and normalised at d = 1")
    items = []
    for k, (run, (d, v)) in enumerate(zip(runs, curves, strict=True)):
        color = RUN_COLORS[k % len(RUN_COLORS)]
        gamma = run.model_fit["gamma"]
        p.line(d, v, stroke=color, width=2.0, title=labels[k])
        xs, ys = _fit_line(d, v, gamma, int(run.model_fit.get("fit_d_min") or 1),
                           int(run.model_fit.get("fit_d_max") or d[-1]))
        p.line(xs, ys, stroke=color, width=1.5, dash="6 3")
        items.append((swatch("line", color), f"{labels[k]}: γ = {fmt(gamma)}"))
    items.append((swatch("line", "#666", dash="6 3", width=1.5), "power-law fit (same colour)"))
    return legend(items) + p.render()
