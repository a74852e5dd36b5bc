"""Layer × head grids: γ per head (diverging around γ = 1, with fit-quality marks), sink mass per head, and the
retrieval scores (echo, induction) of runs measured with ``--retrieval``."""

from __future__ import annotations

import math
from collections.abc import Callable

from gammalens.atlas.quality import R2_LOW, fit_flags
from gammalens.report.colors import (
    gamma_color,
    gamma_colorbar,
    gamma_span,
    score_color,
    score_colorbar,
    sink_color,
    sink_colorbar,
    text_color,
)
from gammalens.report.svg import FONT, esc, fmt, legend, marker, text
from gammalens.runs.reader import RunFiles


def _grid(uid: str, n_layers: int, n_heads: int, cell: Callable[[int, int], tuple[str, str, str, list[str]]],
          *, max_width: int = 1000) -> str:
    """SVG grid; ``cell(layer, head)`` returns (fill, label inside the cell, tooltip, flags)."""
    left, top, right, bottom = 64, 34, 8, 8
    cw = max(8, min(52, (max_width - left - right) // max(n_heads, 1)))
    ch = max(7, min(30, 640 // max(n_layers, 1)))
    width, height = left + cw * n_heads + right, top + ch * n_layers + bottom
    show_text = cw >= 36 and ch >= 17
    label_every = max(1, math.ceil(14 / ch))
    head_every = max(1, math.ceil(26 / cw))
    parts = [f'<svg class="heatmap" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="layer by head grid" {FONT}>',
             text(left + cw * n_heads / 2, 11, "head", anchor="middle", size=12)]
    for h in range(0, n_heads, head_every):
        parts.append(text(left + cw * (h + 0.5), top - 6, str(h), anchor="middle", size=10, fill="#444"))
    for layer in range(n_layers):
        y = top + ch * layer
        if layer % label_every == 0:
            parts.append(text(left - 6, y + ch / 2 + 4, f"layer {layer}", anchor="end", size=10, fill="#444"))
        for h in range(n_heads):
            x = left + cw * h
            fill, inside, tip, flags = cell(layer, h)
            parts.append(f'<rect x="{x}" y="{y}" width="{cw}" height="{ch}" fill="{fill}" stroke="#fff" '
                         f'stroke-width="{1 if cw > 10 else 0.3}"><title>{esc(tip)}</title></rect>')
            if show_text and inside:
                parts.append(text(x + cw / 2, y + ch / 2 + 4, inside, anchor="middle", size=10, fill=text_color(fill)))
            mark = max(2.0, min(cw, ch) / 7)
            if "r2" in flags:
                parts.append(marker("circle", x + mark + 1.5, y + mark + 1.5, mark, "#111", "#fff"))
            if "model" in flags:
                parts.append(marker("triangle", x + cw - mark - 2, y + mark + 2, mark, "#111", "#fff"))
    parts.append("</svg>")
    return "".join(parts)


def gamma_heatmap(run: RunFiles, uid: str) -> str:
    """γ per head, blue (Phase A) to red (Phase B), with marks on heads whose fit is flagged."""
    rows = {(r["layer"], r["head"]): r for r in run.head_fits}
    span = gamma_span([r["gamma"] for r in rows.values()])

    def cell(layer: int, head: int) -> tuple[str, str, str, list[str]]:
        r = rows.get((layer, head))
        if r is None:
            return "#eeeeee", "", f"layers.{layer}.heads.{head}: not fitted", []
        flags = fit_flags(r)
        marks = (["r2"] if r["r2"] is not None and r["r2"] < R2_LOW else []) + \
                (["model"] if r["preferred_model"] not in (None, "", "power_law") else [])
        ci = f" [{fmt(r['gamma_ci_low'])}, {fmt(r['gamma_ci_high'])}]" if r["gamma_ci_low"] is not None else ""
        tip = (f"{r['name']}: γ = {fmt(r['gamma'])}{ci}, phase {r['phase']}, R² = {fmt(r['r2'])}"
               + (f" — {', '.join(flags)}" if flags else ""))
        return gamma_color(r["gamma"], span), f"{r['gamma']:.2f}", tip, marks

    notes = legend([
        (marker_swatch("circle"), f"R² < {R2_LOW}: power law fits poorly"),
        (marker_swatch("triangle"), "another decay law preferred (exponential or cut-off power law, by AIC)"),
    ])
    return (f'<div class="figrow">{gamma_colorbar(uid, span)}</div>' + notes
            + _grid(uid, run.n_layers, run.n_heads, cell))


def sink_heatmap(run: RunFiles, uid: str) -> str:
    """Mean attention mass on the sink keys per query, per head."""
    sink = run.profile("sink_mass")                                   # (L, H)
    finite = [float(v) for v in sink.ravel() if math.isfinite(v)]
    vmax = max(finite) if finite else 1.0
    vmax = math.ceil(vmax * 20) / 20 if vmax > 0 else 1.0
    n_sink = run.settings.get("sink_tokens")

    def cell(layer: int, head: int) -> tuple[str, str, str, list[str]]:
        v = float(sink[layer, head])
        return (sink_color(v, vmax), f"{v:.2f}",
                f"layers.{layer}.heads.{head}: sink mass {fmt(v)} (first {n_sink} token(s))", [])

    return f'<div class="figrow">{sink_colorbar(uid, vmax)}</div>' + _grid(uid, run.n_layers, run.n_heads, cell)


RETRIEVAL_LABELS = {
    "induction": "induction score (attention on the token after the earlier copy, probability)",
    "echo": "echo score (attention on the same token in the earlier copy, probability)",
}


def has_retrieval(run: RunFiles) -> bool:
    """Whether the run's head rows carry retrieval scores (``gammalens measure --retrieval``)."""
    return any(r.get("induction") is not None for r in run.head_fits)


def retrieval_heatmap(run: RunFiles, uid: str, score: str = "induction") -> str:
    """``score`` (``'induction'`` or ``'echo'``) per head on [0, 1]; the tooltip gives both and the far mass."""
    rows = {(r["layer"], r["head"]): r for r in run.head_fits}

    def cell(layer: int, head: int) -> tuple[str, str, str, list[str]]:
        r = rows.get((layer, head))
        if r is None or r.get(score) is None:
            return "#eeeeee", "", f"layers.{layer}.heads.{head}: not measured", []
        v = r[score]
        tip = (f"{r['name']}: induction {fmt(r['induction'])}, echo {fmt(r['echo'])}, "
               f"far mass {fmt(r['far_mass'])}, γ = {fmt(r['gamma'])}")
        return score_color(v), f"{v:.2f}", tip, []

    return (f'<div class="figrow">{score_colorbar(uid, RETRIEVAL_LABELS[score])}</div>'
            + _grid(uid, run.n_layers, run.n_heads, cell))


def marker_swatch(shape: str) -> str:
    return (f'<svg class="swatch" width="28" height="14" viewBox="0 0 28 14" aria-hidden="true">'
            f'<rect x="6" y="0" width="16" height="14" fill="#d1e5f0"/>{marker(shape, 14, 7, 3.5, "#111", "#fff")}</svg>')
