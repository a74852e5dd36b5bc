"""Printing atlas DataFrames as terminal tables for ``gammalens atlas list | show | compare``.

The tables are compact views (γ with its CI in one cell, head counts as A/boundary/B); the Python API
returns the full DataFrames.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from gammalens import terminal
from gammalens.atlas.compare import Comparison

if TYPE_CHECKING:
    import pandas as pd


def _num(value: Any, digits: int = 3) -> str:
    if value is None or isinstance(value, str):
        return "–" if value in (None, "") else value
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(value):
        return "–"
    text = f"{value:.{digits}g}"
    return text.replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def _gamma(row: Any) -> str:
    lo, hi = row.get("gamma_ci_low"), row.get("gamma_ci_high")
    ci = f" [{_num(lo)}, {_num(hi)}]" if _num(lo) != "–" and _num(hi) != "–" else ""
    return _num(row.get("gamma")) + ci


def _counts(row: Any, *names: str) -> str:
    values = [row.get(n) for n in names]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return "–"
    return "/".join(str(int(v)) for v in values)


def _console() -> Any:

    return terminal.console()


# columns of ids (model id, run id, source), which are never cut: in a narrow terminal they fold onto more lines
IDS = {"model", "id / source", "entry"}
ID_MIN = 12  # columns an id keeps before the other columns give up theirs


def _table(rows: list[dict[str, str]], title: str, right: set[str], ids: set[str], compact: bool,
           widths: list[int] | None) -> Any:
    from rich import box
    from rich.table import Table

    # compact: no frame, and one space between columns (rich's default spends 3 columns of borders per column)
    style: dict[str, Any] = dict(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=0) if compact else {}
    table = Table(title=title, title_justify="left", header_style="bold", **style)
    for k, column in enumerate(rows[0]):
        table.add_column(column, justify="right" if column in right else "left", width=widths[k] if widths else None,
                         overflow="fold" if column in ids else "ellipsis")
    for row in rows:
        table.add_row(*row.values())
    return table


def _layout(console: Any, rows: list[dict[str, str]], title: str, ids: set[str]) -> tuple[bool, list[int] | None]:
    """(compact, widths) for a table of ``rows`` on ``console``: rich's borders and widths where the whole table
    fits, else compact borders and widths that keep every word of the other columns whole and give the
    ids (folded, never cut) what is left, at least :data:`ID_MIN`; (True, None): rich's widths, compact."""
    from rich.cells import cell_len

    columns = list(rows[0])
    texts = [[column, *(row[column] for row in rows)] for column in columns]
    full = [max(cell_len(line) for t in ts for line in t.splitlines() or [""]) for ts in texts]
    word = [max((cell_len(w) for t in ts for w in t.split()), default=1) for ts in texts]
    low = [min(f, ID_MIN) if c in ids else min(f, w) for c, f, w in zip(columns, full, word, strict=True)]
    for compact in (False, True):
        probe = _table([dict.fromkeys(columns, "")], title, set(), set(), compact, [1] * len(columns))
        room = console.width - (console.measure(probe).maximum - len(columns))  # the width less borders, padding
        if sum(full) <= room:
            return compact, None
    if sum(low) > room:
        return True, None
    widths, spare = list(low), room - sum(low)
    for wanted in ([c in ids for c in columns], [True] * len(columns)):  # the ids first, then the rest
        while spare > 0:
            short = [k for k, want in enumerate(wanted) if want and widths[k] < full[k]]
            if not short:
                break
            for k in short[:spare]:
                widths[k] += 1
            spare -= min(spare, len(short))
    return compact, widths


def _print(rows: list[dict[str, str]], title: str, right: set[str], ids: set[str] = IDS) -> None:
    console = _console()
    if not rows:
        console.print(f"{title}: nothing matches.")
        return
    console.print(_table(rows, title, right, ids, *_layout(console, rows, title, ids)))


def print_entries(frame: pd.DataFrame, title: str) -> None:
    """Runs and reference rows, one line each; identical re-runs (same model, settings and γ) once, counted."""
    repeats: dict[tuple, int] = {}
    first: dict[tuple, int] = {}
    keys = [_repeat_key(r, i) for i, (_, r) in enumerate(frame.iterrows())]
    for i, key in enumerate(keys):
        repeats[key] = repeats.get(key, 0) + 1
        first.setdefault(key, i)
    rows = []
    for i, (_, r) in enumerate(frame.iterrows()):
        key = keys[i]
        if first[key] != i:
            continue
        ident = str(r["run_id"] if r["kind"] == "measured" else r["source"])
        if repeats[key] > 1:
            ident += f" (×{repeats[key]}: identical re-runs)"
        rows.append({"kind": str(r["kind"]), "model": str(r["model_id"]), "corpus": str(r["corpus"]),
                     "θ": _num(r["theta"]), "T": _num(r["context"]), "γ [95% CI]": _gamma(r), "R²": _num(r["r2"]),
                     "phase": str(r["phase"]), "heads A/b/B": _counts(r, "heads_A", "heads_boundary", "heads_B"),
                     "sink": _num(r["sink_mass"]), "flagged": _num(_flagged(r)), "id / source": ident})
    folded = len(frame) - len(rows)
    note = f"; {folded} identical re-run(s) folded" if folded else ""
    _print(rows, f"{title} ({len(rows)}{note})", {"θ", "T", "R²", "heads A/b/B", "sink", "flagged"})


def _repeat_key(row: Any, i: int) -> tuple:
    """Measured runs with the same model, settings hash (the run id's last part) and γ are one measurement."""
    if row["kind"] != "measured":
        return ("ref", i)
    gamma = row.get("gamma")
    # <model>-<date>-<time>-<settings hash>[-<n> for runs that started in the same second]
    digest = re.search(r"-\d{8}-\d{6}-([0-9a-f]{8})(?:-\d+)?$", str(row["run_id"]))
    return ("measured", str(row["model_id"]), digest.group(1) if digest else str(row["run_id"]),
            None if gamma is None or (isinstance(gamma, float) and math.isnan(gamma)) else round(float(gamma), 9))


def _flagged(row: Any) -> Any:
    low, other = row.get("heads_low_r2"), row.get("heads_not_power_law")
    if low is None or other is None or (isinstance(low, float) and math.isnan(low)):
        return None
    return f"{int(low)} R², {int(other)} law"


def print_layers(frame: pd.DataFrame, title: str) -> None:
    """Per-layer fits, one table per run."""
    for run_id, part in frame.groupby("run_id", sort=False):
        rows = [{"layer": str(int(r["layer"])), "γ [95% CI]": _gamma(r), "R²": _num(r["r2"]), "phase": str(r["phase"]),
                 "sink": _num(r["sink_mass"]), "heads A/b/B": _counts(r, "heads_A", "heads_boundary", "heads_B"),
                 "R² < 0.85": _num(r["heads_low_r2"]), "other law": _num(r["heads_not_power_law"])}
                for _, r in part.iterrows()]
        _print(rows, f"{title}: {run_id}", {"layer", "R²", "sink", "heads A/b/B", "R² < 0.85", "other law"})


def print_comparison(c: Comparison) -> None:
    """Summary, per-layer γ and sink mass side by side, and predicted vs measured."""
    summary = c.summary.reset_index()
    print_entries(summary.assign(model_id=summary["label"]), "Models")
    if len(c.layers):
        for frame, title in ((c.layers, "Per-layer γ (heads pooled)"), (c.layer_sink_mass, "Per-layer sink mass")):
            rows = [{"layer": str(int(layer)), **{str(k): _num(v) for k, v in row.items()}}
                    for layer, row in frame.iterrows()]
            _print(rows, title, set(rows[0]) if rows else set(), ids=set(rows[0]) - {"layer"} if rows else set())
    model_rows = c.predictions[c.predictions["scope"] != "head"]
    if len(model_rows):
        rows = [{"entry": str(r["label"]), "row": str(r["name"]), "quantity": str(r["quantity"]),
                 "predicted by": str(r["predicted_by"]), "predicted": _num(r["predicted"]),
                 "measured": _num(r["measured"]), "error": _num(r["error"]),
                 "relative": f"{100 * r['rel_error']:+.1f}%" if math.isfinite(r["rel_error"]) else "–"}
                for _, r in model_rows.iterrows()]
        _print(rows, "Predicted vs measured (model and layers)", {"predicted", "measured", "error", "relative"})
