"""SVG figures for docs/grokking.md: CKA and test accuracy vs step (seeds overlaid), lead-time histogram.

Drawn with the report's own SVG kit (no plotting dependency). Each run's CKA curve is drawn with a
dot at the detector's firing step; the grokking step is marked on the accuracy curve.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from gammalens.grok.experiment import RunResult
from gammalens.report.svg import Plot, Scale, nice_range

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
PANEL_W, PANEL_H = 420, 230


def _curve(runs_dir: Path, name: str) -> dict[str, list[float]]:
    with (runs_dir / f"{name}.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in rows[0]} if rows else {}


def _place(svg: str, x: int, y: int) -> str:
    return svg.replace("<svg ", f'<svg x="{x}" y="{y}" ', 1)


def _write(path: Path, panels: list[str], width: int, height: int) -> None:
    body = "".join(panels)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
                   f'width="{width}" height="{height}">{body}</svg>\n')
    os.replace(tmp, path)


def write_plots(runs_dir: str | Path, results: dict[str, RunResult], out_dir: str | Path) -> list[Path]:
    """Write ``curves.svg`` and ``leads.svg`` into ``out_dir``; return their paths."""
    runs_dir, out = Path(runs_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    conds = list(dict.fromkeys(n.split("_seed")[0] for n in results))
    panels = []
    for row, cond in enumerate(conds):
        names = [n for n in results if n.split("_seed")[0] == cond]
        curves = {n: _curve(runs_dir, n) for n in names}
        xmax = max((max(c["step"]) for c in curves.values() if c), default=1.0) or 1.0
        ckas = [v for c in curves.values() for v in c.get("cka", [])]
        lo, hi = nice_range(ckas or [0.0, 1.0], include=[1.0])
        p_cka = Plot(f"cka-{cond}", PANEL_W, PANEL_H, x=Scale(0, xmax), y=Scale(lo, hi), xlabel="step",
                     ylabel="CKA(block 0, block 1)", title=f"{cond}: debiased CKA (dot: detector fired)")
        p_acc = Plot(f"acc-{cond}", PANEL_W, PANEL_H, x=Scale(0, xmax), y=Scale(0, 1), xlabel="step",
                     ylabel="test accuracy", title=f"{cond}: test accuracy (dot: grokking step)")
        for i, n in enumerate(names):
            c, r, color = curves[n], results[n], COLORS[i % len(COLORS)]
            if not c:
                continue
            p_cka.line(c["step"], c["cka"], stroke=color, width=1.2, opacity=0.8)
            p_acc.line(c["step"], c["test_acc"], stroke=color, width=1.2, opacity=0.8)
            if r.fire_step is not None and r.fire_step in c["step"]:
                p_cka.markers([r.fire_step], [c["cka"][c["step"].index(r.fire_step)]], fill=color, size=4)
            if r.grok_step is not None:
                p_acc.markers([r.grok_step], [c["test_acc"][c["step"].index(r.grok_step)]], fill=color, size=4)
        panels += [_place(p_cka.render(), 0, row * PANEL_H), _place(p_acc.render(), PANEL_W, row * PANEL_H)]
    curves_path = out / "curves.svg"
    _write(curves_path, panels, 2 * PANEL_W, max(1, len(conds)) * PANEL_H)

    leads = [r.lead for n, r in results.items() if n.split("_seed")[0] in ("grok", "wd0", "smallfrac")
             and r.lead is not None]
    lo, hi = (min([*leads, 0]), max([*leads, 1]))
    width = max(1, (hi - lo) / 12)
    p = Plot("leads", PANEL_W, PANEL_H, x=Scale(lo - width, hi + width), y=Scale(0, max(1, len(leads))),
             xlabel="lead = grokking step − firing step (steps; < 0: fired after)", ylabel="runs",
             title="lead times of the re-rise detector")
    bins: dict[int, int] = {}
    for v in leads:
        b = int((v - lo) // width)
        bins[b] = bins.get(b, 0) + 1
    for b, count in bins.items():
        x0 = lo + b * width
        p.rect(x0, 0, x0 + width * 0.9, count, fill="#1f77b4", opacity=0.8)
    p.vline(0.0)
    leads_path = out / "leads.svg"
    _write(leads_path, [p.render()], PANEL_W, PANEL_H)
    return [curves_path, leads_path]
