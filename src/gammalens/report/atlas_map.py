"""The atlas map: γ against the RoPE base θ (log axis), the report's runs among the reference atlas.

Models without RoPE (learned or ALiBi positions, θ undefined) sit in a separate strip on the right.
Where the theory module is available the γ_Padé(θ, T) prediction for each run's context T is drawn.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from gammalens.atlas.store import connect
from gammalens.report.colors import PHASE_A, PHASE_B, RUN_COLORS
from gammalens.report.svg import Plot, Scale, fmt, legend, nice_range, swatch
from gammalens.runs.reader import RunFiles
from gammalens.theory.pade import gamma_pade

REF_STYLE = {"mongo": ("#8c8c8c", "circle"), "random": ("#a58bb8", "triangle")}
OTHER_REF = ("#b0a080", "square")
ATLAS_RUN = ("#5a5a5a", "diamond")


def atlas_points(atlas: Path | str, exclude: set[str]) -> list[dict[str, Any]]:
    """Reference rows and other measured runs of an atlas, as plain dicts."""

    with connect(atlas, read_only=True) as con:
        refs = con.execute("SELECT 'reference' AS kind, model_id, corpus, rope_theta AS theta, gamma, gamma_ci_low,"
                           " gamma_ci_high, r2, source FROM reference_fits").fetchall()
        runs = con.execute("SELECT 'measured' AS kind, model_id, corpus, rope_theta, gamma, gamma_ci_low, "
                           "gamma_ci_high, r2, run_id FROM runs").fetchall()
    keys = ("kind", "model_id", "corpus", "theta", "gamma", "lo", "hi", "r2", "source")
    return [dict(zip(keys, r, strict=True)) for r in refs] + \
           [dict(zip(keys, r, strict=True)) for r in runs if r[-1] not in exclude]


def _jitter(key: str) -> float:
    return int(hashlib.sha256(key.encode()).hexdigest()[:6], 16) / 0xFFFFFF * 0.7 + 0.15


def _tip(p: dict[str, Any]) -> str:
    ci = f" [{fmt(p['lo'])}, {fmt(p['hi'])}]" if p.get("lo") is not None else ""
    theta = f"θ = {fmt(p['theta'])}" if p.get("theta") else "no RoPE"
    return f"{p['model_id']} · {p['corpus']} · {theta} · γ = {fmt(p['gamma'])}{ci} · R² {fmt(p.get('r2'))} " \
           f"· {p.get('source') or ''}"


def atlas_map(runs: list[RunFiles], labels: list[str], points: list[dict[str, Any]] | None, uid: str) -> str:
    """γ vs θ: reference points (by corpus), other atlas runs, and this report's runs as stars with their CI."""
    mine = [{"kind": "this", "model_id": r.model_id, "corpus": (r.manifest.get("corpus") or {}).get("name"),
             "theta": r.rope_theta, "gamma": r.model_fit["gamma"], "lo": r.model_fit["gamma_ci_low"],
             "hi": r.model_fit["gamma_ci_high"], "r2": r.model_fit["r2"], "source": r.run_id,
             "context": r.settings.get("context"), "label": labels[k], "color": RUN_COLORS[k % len(RUN_COLORS)]}
            for k, r in enumerate(runs)]
    pts = (points or []) + mine
    thetas = [p["theta"] for p in pts if p.get("theta")]
    gammas = [v for p in pts for v in (p["gamma"], p.get("lo"), p.get("hi")) if v is not None]
    ylo, yhi = nice_range(gammas, include=[0.0, 1.2])
    lo_t, hi_t = (min(thetas) / 3, max(thetas) * 3) if thetas else (1e3, 1e7)
    if hi_t / lo_t < 100:
        lo_t, hi_t = lo_t / 10, hi_t * 10
    main = Plot(f"{uid}-rope", 640, 400, x=Scale(lo_t, hi_t, log=True, powers=True), y=Scale(ylo, yhi),
                xlabel="RoPE base θ (log scale)", ylabel="γ (decay exponent)", title="The atlas map: γ against θ")
    strip = Plot(f"{uid}-none", 170, 400, x=Scale(0, 1), y=Scale(ylo, yhi), xlabel="no RoPE", xticks=False, yticks=False,
                 margin=(28, 10, 46, 10))
    for plot in (main, strip):
        plot.band_y(ylo, 1.0, fill=PHASE_A, opacity=0.05)
        plot.band_y(1.0, yhi, fill=PHASE_B, opacity=0.05)
        plot.hline(1.0, stroke="#222", dash="6 4", width=1.3)
    main.label(hi_t, 1.0, "γ = 1 (Hagedorn boundary)", anchor="end", dx=-6, dy=-6, fill="#222")
    main.label(lo_t, ylo, "Phase A: looks far", dx=6, dy=-8, fill=PHASE_A)
    main.label(lo_t, yhi, "Phase B: concentrates", dx=6, dy=16, fill=PHASE_B)
    items = []
    for k, run in enumerate(mine):
        if run["context"] and run["theta"]:
            xs = [lo_t * (hi_t / lo_t) ** (i / 80) for i in range(81)]
            main.line(xs, [gamma_pade(x, run["context"]) for x in xs], stroke=run["color"], width=1.3, dash="3 3",
                      opacity=0.8, title=f"γ_Padé(θ, T = {run['context']})")
            if k == 0:
                items.append((swatch("line", "#444", dash="3 3", width=1.3),
                              "γ_Padé(θ, T) prediction at each run's context T (same colour)"))
    seen: set[str] = set()
    for p in pts:
        if p["kind"] == "this":
            continue
        if p["kind"] == "reference":
            color, shape = REF_STYLE.get(str(p["corpus"]).lower(), OTHER_REF)
            key = f"published atlas, corpus {p['corpus']}"
        else:
            color, shape = ATLAS_RUN
            key = "other runs in the atlas"
        # mongo points a little left of their θ, random ones a little right, so the two corpora stay apart
        shift = {"mongo": 0.94, "random": 1.06}.get(str(p["corpus"]).lower(), 1.0)
        plot, x = (main, p["theta"] * shift) if p.get("theta") else (strip, _jitter(_tip(p)))
        if p.get("lo") is not None and p.get("hi") is not None:
            plot.errorbars([x], [p["lo"]], [p["hi"]], stroke=color, width=0.8, opacity=0.5, cap=0)
        plot.markers([x], [p["gamma"]], fill=color, shape=shape, size=3.6, titles=[_tip(p)], opacity=0.85)
        if key not in seen:
            seen.add(key)
            items.append((swatch("marker", color, shape=shape), key + " (bar: 95% CI)"))
    placed: list[tuple[Plot, float, float]] = []   # labels already drawn, in px, to keep them apart
    for k, p in enumerate(mine):
        plot, x = (main, p["theta"]) if p.get("theta") else (strip, 0.15 + 0.08 * (k % 3))
        if p.get("lo") is not None:
            plot.errorbars([x], [p["lo"]], [p["hi"]], stroke=p["color"], width=1.8, opacity=1.0, cap=4)
        plot.markers([x], [p["gamma"]], fill=p["color"], shape="star", size=9, stroke="#111", titles=[_tip(p)])
        dy = 4.0
        while any(q is plot and abs(plot.px(x) - X) < 90 and abs(plot.py(p["gamma"]) + dy - Y) < 13
                  for q, X, Y in placed):
            dy += 13
        placed.append((plot, plot.px(x), plot.py(p["gamma"]) + dy))
        plot.label(x, p["gamma"], p["model_id"].split("/")[-1], dx=11, dy=dy, weight="600", fill=p["color"])
        items.append((swatch("marker", p["color"], shape="star"), f"{p['label']} (this report)"))
    return legend(items) + f'<div class="figrow">{main.render()}{strip.render()}</div>' + _note(points)


def _note(points: list[dict[str, Any]] | None) -> str:
    """What the map lacks and the commands that fill it in (``import-taf`` takes no file: it ships with gammalens)."""
    redraw = ("<code>gammalens atlas import-taf</code> (no argument: it imports the book's published rows shipped "
              "with gammalens into the default atlas), then redraw with <code>gammalens report RUN_DIR</code>, "
              "which reads the default atlas (<code>--atlas FILE</code> for another).")
    if points is None:
        return ('<p class="note">No reference points on this map: this report was drawn without an atlas '
                "(<code>gammalens measure</code> writes a run's report before it records the run in the atlas). To compare with the book, run "
                f"{redraw}</p>")
    if not any(p["kind"] == "reference" for p in points):
        return f'<p class="note">The atlas holds no reference rows yet. To compare with the book, run {redraw}</p>'
    return ""

