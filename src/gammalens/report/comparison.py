"""Tables and the per-layer chart of the report: the runs side by side, flagged heads, predictions."""

from __future__ import annotations

import math
from typing import Any

from gammalens.atlas.compare import predicted_quantity
from gammalens.atlas.quality import fit_flags
from gammalens.report.colors import PHASE_A, PHASE_B, RUN_COLORS
from gammalens.report.svg import Plot, Scale, esc, fmt, legend, nice_range, swatch
from gammalens.runs.reader import RunFiles


def _ci(row: dict[str, Any]) -> str:
    if row.get("gamma_ci_low") is None or row.get("gamma_ci_high") is None:
        return fmt(row.get("gamma"))
    return f"{fmt(row['gamma'])} [{fmt(row['gamma_ci_low'])}, {fmt(row['gamma_ci_high'])}]"


def table(header: list[str], rows: list[list[str]], *, numeric_from: int = 1, raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw``; columns from ``numeric_from`` are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for cells in rows:
        tds = "".join(f'<td{" class=num" if k >= numeric_from else ""}>{c if raw else esc(c)}</td>'
                      for k, c in enumerate(cells))
        body.append(f"<tr>{tds}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def summary_table(runs: list[RunFiles], labels: list[str]) -> str:
    """One row per run: model-level γ, phase counts of the heads, sink mass and flagged heads."""
    rows = []
    for k, run in enumerate(runs):
        heads = run.head_fits
        phases = [h["phase"] for h in heads]
        sinks = [h["sink_mass"] for h in heads if h["sink_mass"] is not None]
        flagged = sum(bool(fit_flags(h)) for h in heads)
        color = RUN_COLORS[k % len(RUN_COLORS)]
        fit = run.model_fit
        rows.append([
            f'{swatch("line", color, width=4)} {esc(labels[k])}',
            esc(fmt(run.rope_theta) if run.rope_theta else "no RoPE"),
            esc(str(run.settings.get("context", "–"))),
            esc(_ci(fit)), esc(fmt(fit.get("r2"))), esc(str(fit.get("phase"))),
            f"{phases.count('A')} / {phases.count('boundary')} / {phases.count('B')}",
            esc(fmt(sum(sinks) / len(sinks)) if sinks else "–"),
            f"{flagged} of {len(heads)}",
        ])
    return table(["run", "θ", "context (tokens)", "model γ [95% CI]", "R²", "phase",
                  "heads A / boundary / B", "mean sink mass", "flagged heads"], rows, raw=True)


def layer_chart(runs: list[RunFiles], labels: list[str], uid: str) -> str:
    """Per-layer γ (heads pooled) with CIs, one line per run; relative depth when layer counts differ."""
    depths = {run.n_layers for run in runs}
    relative = len(depths) > 1
    gammas = [r["gamma"] for run in runs for r in run.layer_fits]
    lows = [r["gamma_ci_low"] for run in runs for r in run.layer_fits]
    highs = [r["gamma_ci_high"] for run in runs for r in run.layer_fits]
    ylo, yhi = nice_range(gammas + [v for v in lows + highs if v is not None], include=[1.0])
    xmax = 1.0 if relative else max(depths) - 1
    p = Plot(uid, 760, 320, x=Scale(-0.04 * max(xmax, 1), xmax + 0.04 * max(xmax, 1)), y=Scale(ylo, yhi),
             xlabel="relative depth: layer / (layers − 1)" if relative else "layer",
             ylabel="γ of the layer (heads pooled)", title="Per-layer γ")
    p.band_y(ylo, 1.0, fill=PHASE_A, opacity=0.05)
    p.band_y(1.0, yhi, fill=PHASE_B, opacity=0.05)
    p.hline(1.0, stroke="#222", label="γ = 1 (Hagedorn boundary)")
    items = []
    for k, run in enumerate(runs):
        color = RUN_COLORS[k % len(RUN_COLORS)]
        rows = sorted(run.layer_fits, key=lambda r: r["layer"])
        scale = (run.n_layers - 1) or 1
        xs = [r["layer"] / scale if relative else r["layer"] for r in rows]
        ys = [r["gamma"] for r in rows]
        if all(r["gamma_ci_low"] is not None for r in rows):
            p.errorbars(xs, [r["gamma_ci_low"] for r in rows], [r["gamma_ci_high"] for r in rows], stroke=color)
        p.line(xs, ys, stroke=color, width=2.0)
        p.markers(xs, ys, fill=color, size=3.8,
                  titles=[f"{labels[k]} · layer {r['layer']}: γ = {_ci(r)}, R² {fmt(r['r2'])}" for r in rows])
        items.append((swatch("marker", color), labels[k]))
    items.append((swatch("line", "#888", width=1), "bars: 95% bootstrap CI"))
    return legend(items) + p.render()


def flagged_table(run: RunFiles) -> str:
    """Heads whose fit is flagged (low R², another decay law preferred), worst R² first, in a fold-out."""
    flagged = [(h, fit_flags(h)) for h in run.head_fits if fit_flags(h)]
    if not flagged:
        return '<p class="ok">No flagged heads: every power-law fit has R² ≥ 0.85 and is preferred by AIC.</p>'
    flagged.sort(key=lambda t: (t[0]["r2"] if t[0]["r2"] is not None else -math.inf))
    rows = [[h["name"], _ci(h), fmt(h["r2"]), str(h["preferred_model"]), fmt(h["delta_aic_exponential"]),
             "; ".join(f)] for h, f in flagged]
    summary = (f"{len(flagged)} of {len(run.head_fits)} heads flagged: their γ summarises the profile but is not "
               "a reliable power law (list, worst R² first)")
    body = table(["head", "γ [95% CI]", "R²", "preferred law", "ΔAIC exp − pow (nats)", "flags"], rows)
    return f"<details{' open' if len(rows) <= 10 else ''}><summary>{esc(summary)}</summary>{body}</details>"


def prediction_table(run: RunFiles) -> str:
    """Predicted against measured for every prediction column of fits.csv (model and layer rows)."""
    rows = []
    for fit in run.fits:
        if fit["scope"] == "head":
            continue
        for column, predicted in fit["extras"].items():
            quantity = predicted_quantity(column)
            if quantity is None or not isinstance(predicted, float):
                continue
            measured = fit.get(quantity, fit["extras"].get(quantity))
            if not isinstance(measured, (int, float)):
                continue
            err = predicted - measured
            rel = f"{100 * err / abs(measured):+.1f}%" if measured else "–"
            rows.append([fit["name"], quantity, column, fmt(predicted), fmt(measured), f"{err:+.3g}", rel])
    if not rows:
        return ""
    return ("<h3>Predicted against measured</h3>"
            + table(["row", "quantity", "predicted by", "predicted", "measured", "error", "relative"], rows,
                    numeric_from=3))
