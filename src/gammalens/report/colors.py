"""Colour maps and colour bars of the report.

γ uses a diverging map centred on the Hagedorn boundary γ = 1: blue for Phase A (γ < 1, looks far),
red for Phase B (γ > 1, concentrates), near-white at the boundary (ColorBrewer RdBu, colour-blind safe).
Sink mass uses a sequential white → purple map, the retrieval scores (echo, induction) a white → green one on
the fixed range [0, 1] (probabilities, comparable across runs); runs get the Okabe–Ito categorical palette.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gammalens.report.svg import esc, fmt, nice_step, text

_RDBU = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"]
_LINES = ["#2166ac", "#4393c3", "#8c8c8c", "#d6604d", "#b2182b"]  # RdBu with grey at γ = 1, for thin lines
_GREENS = ["#f7fcf5", "#e5f5e0", "#c7e9c0", "#a1d99b", "#74c476", "#41ab5d", "#238b45", "#006d2c", "#00441b"]
_PURPLES = ["#fcfbfd", "#efedf5", "#dadaeb", "#bcbddc", "#9e9ac8", "#807dba", "#6a51a3", "#54278f", "#3f007d"]
RUN_COLORS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442"]
PHASE_A, PHASE_B, BOUNDARY = "#2166ac", "#b2182b", "#777777"
MUTED = "#c8a27a"   # the naive (biased) profile: visible but clearly secondary


def _hex(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def _interpolate(stops: Sequence[str], t: float) -> str:
    if t is None or not math.isfinite(t):
        return "#bbbbbb"
    t = min(max(t, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    f = t - i
    a, b = _hex(stops[i]), _hex(stops[i + 1])
    r, g, bl = (round(a[k] + (b[k] - a[k]) * f) for k in range(3))
    return f"#{r:02x}{g:02x}{bl:02x}"


def gamma_span(gammas: Sequence[float]) -> float:
    """Half-width r of the γ colour range [1 − r, 1 + r]: covers 98% of the heads, at least 0.5, in 0.25 steps."""
    dev = sorted(abs(g - 1.0) for g in gammas if g is not None and math.isfinite(g))
    if not dev:
        return 0.5
    r = dev[min(len(dev) - 1, int(0.98 * len(dev)))]
    return max(0.5, math.ceil(r / 0.25) * 0.25)


def gamma_color(gamma: float, span: float) -> str:
    """Diverging colour of γ on [1 − span, 1 + span] (clipped)."""
    if gamma is None or not math.isfinite(gamma):
        return "#bbbbbb"
    return _interpolate(_RDBU, (gamma - (1.0 - span)) / (2.0 * span))


def gamma_line_color(gamma: float, span: float) -> str:
    """γ colour for thin lines: like :func:`gamma_color` but grey (not white) at γ = 1, so it shows on white."""
    if gamma is None or not math.isfinite(gamma):
        return "#bbbbbb"
    return _interpolate(_LINES, (gamma - (1.0 - span)) / (2.0 * span))


def sink_color(value: float, vmax: float) -> str:
    if value is None or not math.isfinite(value):
        return "#bbbbbb"
    return _interpolate(_PURPLES, value / vmax if vmax > 0 else 0.0)


def score_color(value: float | None) -> str:
    """Sequential colour of a probability in [0, 1] (echo, induction); grey when not measured."""
    if value is None or not math.isfinite(value):
        return "#bbbbbb"
    return _interpolate(_GREENS, value)


def text_color(fill: str) -> str:
    """Black or white, whichever reads better on ``fill``."""
    r, g, b = _hex(fill)
    return "#111" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"


def colorbar(uid: str, stops: Sequence[str], lo: float, hi: float, ticks: Sequence[float], label: str,
             *, width: int = 360, left_note: str = "", right_note: str = "") -> str:
    """A horizontal colour bar with ticks, a label and optional notes under its two ends."""
    grad = "".join(f'<stop offset="{k / (len(stops) - 1):.3f}" stop-color="{c}"/>' for k, c in enumerate(stops))
    x0, bar_w, h = 12, width - 24, 58
    parts = [f'<svg class="colorbar" viewBox="0 0 {width} {h}" width="{width}" height="{h}" role="img" '
             f'aria-label="{esc(label)}"><defs><linearGradient id="cb-{uid}">{grad}</linearGradient></defs>',
             text(x0, 11, label, size=12, fill="#222"),
             f'<rect x="{x0}" y="16" width="{bar_w}" height="12" fill="url(#cb-{uid})" stroke="#888"/>']
    for v in ticks:
        X = x0 + (v - lo) / (hi - lo) * bar_w
        parts.append(f'<line x1="{X:.1f}" y1="28" x2="{X:.1f}" y2="32" stroke="#444"/>')
        parts.append(text(X, 43, fmt(v), anchor="middle", size=11, fill="#333"))
    if left_note:
        parts.append(text(x0, 55, left_note, size=10, fill=stops[0] if stops[0] != "#fcfbfd" else "#555"))
    if right_note:
        parts.append(text(x0 + bar_w, 55, right_note, anchor="end", size=10, fill=stops[-1]))
    parts.append("</svg>")
    return "".join(parts)


def gamma_colorbar(uid: str, span: float) -> str:
    lo, hi = 1.0 - span, 1.0 + span
    step = 0.25 if span <= 0.75 else 0.5
    n = round(span / step)
    ticks = [1.0 + k * step for k in range(-n, n + 1)]
    return colorbar(uid, _RDBU, lo, hi, ticks, "γ (decay exponent; colour clipped at the ends)", width=420,
                    left_note="◀ Phase A: looks far", right_note="Phase B: concentrates ▶")


def sink_colorbar(uid: str, vmax: float) -> str:
    vmax = vmax or 1.0
    step = nice_step(vmax / 4)
    ticks = [k * step for k in range(int(vmax / step + 1e-9) + 1)]
    return colorbar(uid, _PURPLES, 0.0, vmax, ticks,
                    "sink mass (attention probability per query)", width=420)


def score_colorbar(uid: str, label: str) -> str:
    """The colour bar of :func:`score_color`: 0 to 1 in steps of 0.25."""
    return colorbar(uid, _GREENS, 0.0, 1.0, [0.0, 0.25, 0.5, 0.75, 1.0], label, width=420)
