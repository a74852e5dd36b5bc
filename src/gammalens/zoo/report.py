"""The zoo report: ``docs/zoo.csv``, ``docs/zoo_layers.csv``, ``docs/zoo_rescale.csv`` and the tables of ``docs/zoo.md``.

Generated tables live between marker comments in ``docs/zoo.md``::

    <!-- zoo:begin models -->
    ...generated...
    <!-- zoo:end models -->

so re-running ``gammalens zoo measure`` or ``gammalens zoo rescale`` replaces them and keeps the prose
around them. Sections: ``models`` (γ, CI, R², sink, Δγ, held-out loss), ``layers`` (γ per layer against θ
and T), ``predictors`` (γ_Padé and ours, per model, and their median errors), ``rescale`` (the θ-rescale control).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gammalens.zoo.measure import LAYER_COLUMNS, MODEL_COLUMNS, ZooTable, error_summary

SECTIONS = ("models", "layers", "predictors", "rescale")


def write_csv(rows: Sequence[dict[str, Any]], path: Path, columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as CSV (floats to 6 significant digits, None/NaN as empty)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in columns])
    return path


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _f(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{nd}f}"


def _theta(t: float) -> str:
    e = math.log10(t)
    return f"1e{round(e)}" if abs(e - round(e)) < 1e-9 else f"{t:g}"


def models_md(table: ZooTable) -> str:
    """Markdown: one row per model — θ, T, held-out loss, γ with CI and R², sink, γ_random, Δγ."""
    lines = ["| model | θ | T | held-out loss | γ (held-out text) | 95% CI | R² | heads R²>0.95 | sink mass | "
             "γ random | sink random | Δγ |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.models:
        lines.append(f"| {r['model']} | {_theta(r['theta'])} | {r['context']} | {_f(r['heldout_loss'])} | "
                     f"{_f(r['gamma'])} | [{_f(r['gamma_ci_low'])}, {_f(r['gamma_ci_high'])}] | {_f(r['r2'])} | "
                     f"{r['heads_r2_above_0.95']:.0%} | {_f(r['sink_mass'])} | {_f(r['gamma_random'])} | "
                     f"{_f(r['sink_mass_random'])} | {_f(r['delta_gamma'])} |")
    return "\n".join(lines)


def layers_md(table: ZooTable) -> str:
    """Markdown: γ per layer (rows) against θ (columns), one table per training context, pooled row last."""
    out = []
    for T in sorted({r["context"] for r in table.models}):
        models = [r for r in table.models if r["context"] == T]
        thetas = [r["theta"] for r in models]
        out.append(f"**T = {T}** (γ on held-out text; Δγ = γ_text − γ_random in parentheses)\n")
        out.append("| layer | " + " | ".join(f"θ = {_theta(t)}" for t in thetas) + " |")
        out.append("|---|" + "---|" * len(thetas))
        n_layers = max(r["layer"] for r in table.layers) + 1
        for layer in range(n_layers):
            cells = []
            for m in models:
                row = next(x for x in table.layers if x["model"] == m["model"] and x["layer"] == layer)
                cells.append(f"{_f(row['gamma'])} ({_f(row['delta_gamma'], 2)})")
            out.append(f"| {layer} | " + " | ".join(cells) + " |")
        out.append("| pooled | " + " | ".join(f"{_f(m['gamma'])} ({_f(m['delta_gamma'], 2)})" for m in models) + " |")
        out.append("")
    return "\n".join(out).rstrip()


def predictors_md(table: ZooTable) -> str:
    """Markdown: γ_Padé, γ_kernel (LOO) and γ_weights (LOO) against measured γ, per model, then the medians."""
    lines = ["| model | γ measured | γ_Padé | err | γ_kernel (LOO) | err | γ_weights (LOO) | err | S(θ, T) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table.models:
        lines.append(f"| {r['model']} | {_f(r['gamma'])} | {_f(r['gamma_pade'])} | {_f(r['pade_abs_error'])} | "
                     f"{_f(r['gamma_kernel_loo'])} | {_f(r['kernel_abs_error'])} | {_f(r['gamma_weights_loo'])} | "
                     f"{_f(r['weights_abs_error'])} | {_f(r['kernel_S'], 4)} |")
    s = error_summary(table.models)
    lines += ["", "| predictor | uses | constants fitted | median \\|γ_pred − γ\\| | median \\|γ_pred − γ\\|/\\|γ\\| |",
              "|---|---|---|---|---|",
              f"| γ_Padé | θ, T | 0 | {_f(s['pade']['median_abs'])} | {s['pade']['median_rel']:.0%} "
              f"(÷\\|γ_Padé\\|: {s['pade']['median_rel_to_prediction']:.0%}) |",
              f"| γ_kernel = β·S(θ, T) | real inv_freq, T | 1 (β, LOO; all models: "
              f"{_f(table.constants.get('beta_kernel'), 3)}) | {_f(s['kernel']['median_abs'])} | "
              f"{s['kernel']['median_rel']:.0%} |",
              f"| γ_weights | real inv_freq, W_q, W_k, input RMSNorm, T | 1 (c, LOO; all models: "
              f"{_f(table.constants.get('c_weights'), 3)}) | {_f(s['weights']['median_abs'])} | "
              f"{s['weights']['median_rel']:.0%} |",
              f"| baseline: mean γ of the other models | nothing | 1 (the mean, LOO) | "
              f"{_f(s['const']['median_abs'])} | {s['const']['median_rel']:.0%} |"]
    return "\n".join(lines)


def rescale_md(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: the θ-rescale control, one table per model, one row per factor."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        n_layers = sum(k.startswith("gamma_layer_") for k in mine[0])
        head = ["factor", "θ", "γ", "95% CI", "R²", "sink mass", "γ_Padé", "γ_kernel", "γ_weights"]
        head += [f"γ layer {i}" for i in range(n_layers)]
        out += [f"Model `{model}`, weights unchanged; θ multiplied at inference. γ_kernel and γ_weights use the "
                "constants calibrated on the whole zoo (no refit).\n",
                "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in mine:
            f = r["factor"]
            label = f"1/{round(1 / f)}" if f < 1 else f"{f:g}"
            cells = [f"× {label}", f"{r['theta']:g}", _f(r["gamma"]),
                     f"[{_f(r['gamma_ci_low'])}, {_f(r['gamma_ci_high'])}]", _f(r["r2"]), _f(r["sink_mass"]),
                     _f(r["gamma_pade"]), _f(r.get("gamma_kernel")), _f(r.get("gamma_weights"))]
            cells += [_f(r[f"gamma_layer_{i}"]) for i in range(n_layers)]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out).rstrip()


def update_markdown(path: Path, sections: dict[str, str]) -> Path:
    """Replace the generated ``sections`` of ``path`` between their markers (appending missing ones)."""
    text = path.read_text() if path.is_file() else "# The zoo\n"
    for name, body in sections.items():
        begin, end = f"<!-- zoo:begin {name} -->", f"<!-- zoo:end {name} -->"
        block = f"{begin}\n{body}\n{end}"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        text = pattern.sub(lambda _, block=block: block, text) if pattern.search(text) else f"{text.rstrip()}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_zoo_report(table: ZooTable, docs: Path) -> list[Path]:
    """Write ``zoo.csv``, ``zoo_layers.csv`` and the models/layers/predictors sections of ``zoo.md``."""
    docs = Path(docs)
    return [
        write_csv(table.models, docs / "zoo.csv", MODEL_COLUMNS),
        write_csv(table.layers, docs / "zoo_layers.csv", LAYER_COLUMNS),
        update_markdown(docs / "zoo.md", {"models": models_md(table), "layers": layers_md(table),
                                          "predictors": predictors_md(table)}),
    ]


def write_rescale_report(rows: Sequence[dict[str, Any]], docs: Path) -> list[Path]:
    """Write ``zoo_rescale.csv`` and the rescale section of ``zoo.md``."""
    docs = Path(docs)
    return [write_csv(rows, docs / "zoo_rescale.csv"),
            update_markdown(docs / "zoo.md", {"rescale": rescale_md(rows)})]
