"""Per-head distributions: the γ histogram with the Hagedorn boundary, and fit quality (R² against γ)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from gammalens.atlas.quality import R2_LOW, R2_RELIABLE
from gammalens.report.colors import PHASE_A, PHASE_B, RUN_COLORS, gamma_color, gamma_span
from gammalens.report.svg import Plot, Scale, fmt, legend, nice_range, swatch
from gammalens.runs.reader import RunFiles


def _heads(n: int) -> str:
    return f"{n} head" if n == 1 else f"{n} heads"


def _bins(gammas: list[float]) -> np.ndarray:
    lo, hi = min([*gammas, 0.9]), max([*gammas, 1.1])
    width = max(0.025, round((hi - lo) / max(8, min(40, int(math.sqrt(len(gammas)) * 2))) / 0.025) * 0.025)
    start = math.floor(lo / width) * width
    # align an edge with γ = 1 so no bar straddles the boundary
    start = 1.0 - math.ceil((1.0 - start) / width) * width
    return np.arange(start, hi + width, width)


def gamma_histogram(runs: list[RunFiles], labels: list[str], uid: str) -> str:
    """Histogram of per-head γ (bars coloured by γ for one run; step outlines per run for several)."""
    per_run = [[r["gamma"] for r in run.head_fits if r["gamma"] is not None and math.isfinite(r["gamma"])]
               for run in runs]
    every = [g for gs in per_run for g in gs]
    if not every:
        return "<p>No per-head γ to show.</p>"
    edges = _bins(every)
    counts = [np.histogram(gs, bins=edges)[0] for gs in per_run]
    top = max(int(c.max()) for c in counts)
    p = Plot(uid, 760, 300, x=Scale(float(edges[0]), float(edges[-1])), y=Scale(0, top * 1.25 + 0.5),
             xlabel="γ, decay exponent of A(d) ∝ d^−γ (dimensionless)", ylabel="heads (count)",
             title="Distribution of per-head γ")
    p.band_x(float(edges[0]), 1.0, fill=PHASE_A, opacity=0.05)
    p.band_x(1.0, float(edges[-1]), fill=PHASE_B, opacity=0.05)
    items = []
    if len(runs) == 1:
        span = gamma_span(every)
        for lo, hi, n in zip(edges[:-1], edges[1:], counts[0], strict=True):
            if n:
                p.rect(lo, 0, hi, n, fill=gamma_color((lo + hi) / 2, span), stroke="#666",
                       title=f"γ ∈ [{fmt(lo)}, {fmt(hi)}): {_heads(int(n))}")
        fit = runs[0].model_fit
        y = top * 1.12
        lo, hi = fit.get("gamma_ci_low"), fit.get("gamma_ci_high")
        if lo is not None and hi is not None:
            cap = top * 0.03
            p.line([lo, hi], [y, y], stroke="#111", width=1.5)
            p.line([lo, lo], [y - cap, y + cap], stroke="#111", width=1.5)
            p.line([hi, hi], [y - cap, y + cap], stroke="#111", width=1.5)
        p.markers([fit["gamma"]], [y], fill="#111", shape="diamond", size=4.5,
                  titles=[f"model γ = {fmt(fit['gamma'])}"])
        p.label(hi if hi is not None else fit["gamma"], y, f"model γ = {fmt(fit['gamma'])}", dx=8, dy=4)
        items.append((swatch("marker", "#111", shape="diamond"), "model γ (all heads pooled) with its 95% CI"))
    else:
        for k, c in enumerate(counts):
            color = RUN_COLORS[k % len(RUN_COLORS)]
            xs = [float(edges[0])] + [float(e) for e in edges[1:-1] for _ in (0, 1)] + [float(edges[-1])]
            ys = [float(n) for n in c for _ in (0, 1)]
            p.line(xs, ys, stroke=color, width=2.0, title=labels[k])
            items.append((swatch("line", color), labels[k]))
    p.vline(1.0, stroke="#222", dash="6 4", width=1.5, label="γ = 1 (Hagedorn boundary)")
    # the phase column of fits.csv, the terminal summary's rule: 'boundary' when a head's CI contains γ = 1
    phases = Counter(r.get("phase") for run in runs for r in run.head_fits)
    items += [(swatch("box", PHASE_A, opacity=0.15), f"Phase A (γ < 1, looks far): {_heads(phases['A'])}"),
              (swatch("line", "#222", dash="6 4", width=1.5),
               f"boundary (95% CI contains γ = 1): {_heads(phases['boundary'])}"),
              (swatch("box", PHASE_B, opacity=0.15), f"Phase B (γ > 1, concentrates): {_heads(phases['B'])}")]
    if phases["undetermined"]:
        items.append((swatch("box", "#bbbbbb", opacity=0.3), f"undetermined (no finite γ): "
                                                             f"{_heads(phases['undetermined'])}"))
    return legend(items) + p.render()


def quality_scatter(run: RunFiles, uid: str) -> str:
    """R² of each head's log-log fit against its γ, with the 0.85 flag and 0.95 'reliable' lines."""
    heads = [r for r in run.head_fits if r["gamma"] is not None and r["r2"] is not None]
    if not heads:
        return "<p>No per-head R² to show.</p>"
    gx = [r["gamma"] for r in heads]
    ry = [r["r2"] for r in heads]
    xlo, xhi = nice_range(gx, include=[1.0])
    ylo = min(min(ry) - 0.03, 0.8)
    p = Plot(uid, 760, 280, x=Scale(xlo, xhi), y=Scale(max(ylo, -0.05), 1.01), xlabel="γ (dimensionless)",
             ylabel="R² of the log-log fit", title="Fit quality per head")
    p.band_y(p.y.lo, R2_LOW, fill="#d55e00", opacity=0.07)
    p.hline(R2_RELIABLE, stroke="#009e73")
    p.hline(R2_LOW, stroke="#d55e00")
    p.vline(1.0, stroke="#222", dash="6 4")
    good = [r for r in heads if r["preferred_model"] in (None, "", "power_law")]
    other = [r for r in heads if r not in good]
    p.markers([r["gamma"] for r in good], [r["r2"] for r in good], fill="#0072b2", size=3.5,
              titles=[f"{r['name']}: γ = {fmt(r['gamma'])}, R² = {fmt(r['r2'])}" for r in good])
    p.markers([r["gamma"] for r in other], [r["r2"] for r in other], fill="#d55e00", shape="cross", size=4,
              titles=[f"{r['name']}: γ = {fmt(r['gamma'])}, R² = {fmt(r['r2'])}, {r['preferred_model']} preferred"
                      for r in other])
    items = [(swatch("marker", "#0072b2"), "power law preferred (lowest AIC)"),
             (swatch("marker", "#d55e00", shape="cross"), "exponential or cut-off power law preferred"),
             (swatch("line", "#009e73", dash="5 4"), f"R² = {R2_RELIABLE}: reliable"),
             (swatch("box", "#d55e00", opacity=0.12), f"R² < {R2_LOW}: flagged (≈ {R2_LOW} is coarse)")]
    return legend(items) + p.render()
