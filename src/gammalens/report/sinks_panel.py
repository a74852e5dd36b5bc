"""The report's sink panel, for runs written by ``gammalens sinks`` (they carry ``sinks.json``).

Sink mass per layer (as measured, with/without BOS, with the massive activations ablated), the
magnitude of the largest hidden-state values per layer against the massive-activation criterion
(Sun et al. 2024), γ against sink mass per head, and the per-layer table with Δsink and Δγ.
"""

from __future__ import annotations

import math

import numpy as np

from gammalens.report.colors import RUN_COLORS
from gammalens.report.comparison import table
from gammalens.report.svg import Plot, Scale, esc, fmt, legend, nice_log_range, nice_range, swatch
from gammalens.runs.reader import RunFiles
from gammalens.sinks.result import SinkResult, read_sinks

BASE, BOS, ABLATED = RUN_COLORS[0], RUN_COLORS[2], RUN_COLORS[1]


def sinks_panel(run: RunFiles, uid: str) -> str:
    """HTML of the panel; empty when the run has no ``sinks.json`` (a plain ``gammalens measure`` run)."""
    result = read_sinks(run.path, run.sinks)  # read and checked once, by the run reader
    if result is None:
        return ""
    k, b = result.sink_k, result.baseline
    intro = (f"<p class=\"sub\">Sink mass: mean attention on the first k tokens per query (k = "
             f"{esc(', '.join(map(str, b.ks)))}), kept out of the γ fit. α₀: mean attention the first token receives "
             f"from the queries that see it; sink rate: fraction of heads with α₀ &gt; {fmt(result.eps)} (Gu et al. "
             f"2024). Massive activation: |h| ≥ {fmt(result.massive.abs_threshold)} and ≥ "
             f"{fmt(result.massive.ratio)}× the layer's median |h| (Sun et al. 2024).</p>")
    summary = (f"<p>Sink rate <b>{fmt(result.sink_rate)}</b> · sink mass (k = {k}) {fmt(float(b.mass_k(k).mean()))} · "
               f"{esc(_massive_words(result))}. BOS: {esc(result.bos_note)}.</p>")
    return "".join(["<h3>Sinks and massive activations</h3>", intro, summary,
                    '<div class="panels">', _sink_chart(result, uid + "-m"), _massive_chart(result, uid + "-a"),
                    "</div>", _gamma_scatter(result, uid + "-c"), _layer_table(result)])


def _massive_words(result: SinkResult) -> str:
    m = result.massive
    if not m.any:
        return "no massive activations"
    text = f"massive activations from layer {m.first_layer} in dims {m.dims(m.first_layer)}"
    if result.ablated is not None:
        mc = result.model_columns()
        text += (f"; ablating them ({result.settings['ablate']}) changes the sink mass by "
                 f"{mc['delta_sink_ablated']:+.3f} and γ by {mc['delta_gamma_ablated']:+.3f}")
    return text


def _sink_chart(result: SinkResult, uid: str) -> str:
    k, L = result.sink_k, result.baseline.n_layers
    passes = [(p, c, d) for p, c, d in ((result.baseline, BASE, None), (result.bos, BOS, "6 3"),
                                         (result.ablated, ABLATED, "2 2")) if p is not None]
    top = max(float(np.nanmax(p.mass_k(k).mean(-1))) for p, _, _ in passes)
    p = Plot(uid, 460, 260, x=Scale(-0.3, L - 0.7), y=Scale(0, max(top * 1.15, 0.05)), xlabel="layer",
             ylabel=f"sink mass, k = {k} (probability)", title="Sink mass per layer (heads averaged)")
    items = []
    for ps, color, dash in passes:
        y = ps.mass_k(k).mean(-1)
        name = {"baseline": "as measured", "no_bos": "BOS dropped", "with_bos": "BOS prepended",
                "ablated": f"massive activations ablated ({result.settings.get('ablate')})"}[ps.label]
        p.line(list(range(L)), list(y), stroke=color, dash=dash, width=2)
        p.markers(list(range(L)), list(y), fill=color, size=3,
                  titles=[f"layer {i}: {fmt(float(v))} ({name})" for i, v in enumerate(y)])
        items.append((swatch("line", color, dash=dash), name))
    return "<div>" + legend(items) + p.render() + "</div>"


def _massive_chart(result: SinkResult, uid: str) -> str:
    m = result.massive
    L = len(m.count)
    values = [*m.top_abs.ravel(), *m.median_abs, m.abs_threshold]
    lo, hi = nice_log_range([v for v in values if math.isfinite(v) and v > 0])
    p = Plot(uid, 460, 260, x=Scale(-0.3, L - 0.7), y=Scale(lo, hi, log=True), xlabel="layer",
             ylabel="|hidden state value|", title="Largest |h| per layer")
    p.hline(m.abs_threshold, stroke="#b00020", label=f"|h| = {fmt(m.abs_threshold)}")
    shades = ["#111111", "#555555", "#999999"]
    for j in range(m.top_abs.shape[1]):
        p.line(list(range(L)), list(m.top_abs[:, j]), stroke=shades[j], width=1.8 if j == 0 else 1.2)
    p.line(list(range(L)), list(m.median_abs), stroke=BASE, dash="5 3", width=1.5)
    hit = [i for i in range(L) if m.count[i] > 0]
    p.markers(hit, [m.top_abs[i, 0] for i in hit], fill="#b00020", shape="diamond", size=4.5,
              titles=[f"layer {i}: {int(m.count[i])} massive coordinates" for i in hit])
    items = [(swatch("line", "#111111"), "largest |h| (then 2nd, 3rd)"),
             (swatch("line", BASE, dash="5 3"), "median |h| (per window, averaged)"),
             (swatch("marker", "#b00020", shape="diamond"), "layer with massive activations")]
    return "<div>" + legend(items) + p.render() + "</div>"


def _gamma_scatter(result: SinkResult, uid: str) -> str:
    b, c = result.baseline, result.correlation
    x, y = b.mass_k(result.sink_k).ravel(), b.gamma.ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return ""
    xlo, xhi = nice_range(list(x[ok]), include=[0.0])
    ylo, yhi = nice_range(list(y[ok]), include=[1.0])
    p = Plot(uid, 760, 260, x=Scale(max(xlo, -0.02), xhi), y=Scale(ylo, yhi),
             xlabel=f"sink mass, k = {result.sink_k} (probability)", ylabel="γ (dimensionless)",
             title="γ ⟂ sink: one point per head")
    p.hline(1.0, stroke="#222", dash="6 4")
    names = [f"layers.{i}.heads.{h}" for i in range(b.n_layers) for h in range(b.n_heads)]
    p.markers(list(x), list(y), fill=BASE, size=3.2, opacity=0.8,
              titles=[f"{n}: sink {fmt(float(u))}, γ {fmt(float(v))}" for n, u, v in zip(names, x, y, strict=True)])
    return f"<p>{esc(str(c))}.</p>" + p.render()


def _layer_table(result: SinkResult) -> str:
    frame = result.layers()
    b, k = result.baseline, result.sink_k
    header = ["layer", "γ", *[f"sink k={kk}" for kk in b.ks], "α₀", "sink rate", "peak share", "massive n",
              "max |h|", "median |h|"]
    extra = []
    if result.bos is not None:
        extra += [(f"sink_mass_k{k}_{result.bos.label}", f"{result.bos.label.replace('_', ' ')}: sink k={k}"),
                  (f"gamma_{result.bos.label}", f"{result.bos.label.replace('_', ' ')}: γ")]
    if result.ablated is not None:
        extra += [("delta_sink_ablated", f"ablated: Δsink k={k}"), ("delta_gamma_ablated", "ablated: Δγ"),
                  ("ablated_count", "coordinates ablated")]
    rows = []
    for _, r in frame.iterrows():
        rows.append([str(int(r["layer"])), fmt(r["gamma"]), *[fmt(r[f"sink_mass_k{kk}"]) for kk in b.ks],
                     fmt(r["first_key_share"]), fmt(r["sink_rate"]), fmt(r["peak_key_share"]),
                     str(int(r["massive_count"])), fmt(r["massive_max_abs"]), fmt(r["hidden_median_abs"]),
                     *[fmt(r[c]) for c, _ in extra]])
    return table(header + [h for _, h in extra], rows)
