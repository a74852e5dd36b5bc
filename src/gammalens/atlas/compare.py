"""Comparing models in the atlas, as pandas DataFrames: list, per-layer view, side-by-side comparison.

A *selector* names what to compare: a run id, or a model id (``EleutherAI/pythia-70m``, or just
``pythia-70m``), which selects the latest measured run of that model per corpus and every published
reference row of it. Filters: ``family`` (the name's leading word or the architecture's model_type),
``theta`` (a value or a ``(low, high)`` range, inclusive) and ``corpus``.

Predicted quantities slot in without code changes: a fits.csv column named ``<quantity>_pade``,
``<quantity>_pred`` or ``<quantity>_predicted`` (or listed in :data:`PREDICTIONS`) is compared with the
measured column ``<quantity>``.

>>> c = compare(["minilm", "EleutherAI/pythia-70m"])      # doctest: +SKIP
>>> c.layers            # per-layer γ, one column per model     # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gammalens.atlas.quality import R2_LOW
from gammalens.atlas.store import connect
from gammalens.errors import GammalensError
from gammalens.theory.phases import phase

if TYPE_CHECKING:
    import pandas as pd

PREDICTION_SUFFIXES = ("_pade", "_pred", "_predicted")
# explicit {predicted column: measured column} for predictions that do not follow the suffix rule
PREDICTIONS: dict[str, str] = {}

Theta = float | tuple[float | None, float | None] | None

_RUNS_SQL = f"""
SELECT 'measured' AS kind, r.run_id, r.model_id, m.family, m.model_type, r.corpus, r.rope_theta AS theta,
       r.context, r.gamma, r.gamma_ci_low, r.gamma_ci_high, r.r2, r.phase, r.sink_mass, r.sink_tokens,
       count(*) FILTER (WHERE f.phase = 'A') AS heads_A,
       count(*) FILTER (WHERE f.phase = 'B') AS heads_B,
       count(*) FILTER (WHERE f.phase = 'boundary') AS heads_boundary,
       count(*) FILTER (WHERE f.r2 < {R2_LOW}) AS heads_low_r2,
       count(*) FILTER (WHERE f.preferred_model IS NOT NULL AND f.preferred_model <> 'power_law')
           AS heads_not_power_law,
       r.created, 'gammalens ' || coalesce(r.gammalens_version, '') AS source
FROM runs r JOIN models m USING (model_key) LEFT JOIN head_fits f USING (run_id)
GROUP BY ALL
"""
_REFS_SQL = """
SELECT 'reference' AS kind, ref_id AS run_id, model_id, family, NULL AS model_type, corpus, rope_theta AS theta,
       NULL AS context, gamma, gamma_ci_low, gamma_ci_high, r2, NULL AS phase, NULL AS sink_mass, NULL AS sink_tokens,
       NULL AS heads_A, NULL AS heads_B, NULL AS heads_boundary, NULL AS heads_low_r2,
       NULL AS heads_not_power_law, NULL AS created, dataset || ':' || source AS source
FROM reference_fits
"""


def parse_theta(text: str | None) -> Theta:
    """``'1e4'`` → 10000.0; ``'1e4:1e6'``, ``':1e5'``, ``'5e5:'`` → an inclusive range."""
    if text is None or text == "":
        return None
    try:
        if ":" not in text:
            return float(text)
        low, high = text.split(":", 1)
        return (float(low) if low else None, float(high) if high else None)
    except ValueError:
        raise GammalensError(f"--theta {text!r}: expected a number like 1e4 or a range like 1e4:1e6") from None


def _filter(frame: pd.DataFrame, family: str | None, theta: Theta, corpus: str | None) -> pd.DataFrame:
    keep = frame.index == frame.index
    if family is not None:
        f = family.lower()
        keep &= (frame["family"].fillna("").str.lower() == f) | (frame["model_type"].fillna("").str.lower() == f)
    if corpus is not None:
        keep &= frame["corpus"].fillna("").str.lower() == corpus.lower()
    if theta is not None:
        t = frame["theta"].astype(float)
        if isinstance(theta, tuple):
            low, high = theta
            keep &= t.notna()
            if low is not None:
                keep &= t >= low
            if high is not None:
                keep &= t <= high
        else:
            keep &= (t - float(theta)).abs() <= 1e-9 * abs(float(theta))
    return frame[keep].reset_index(drop=True)


def list_entries(atlas: Path | str | None = None, *, family: str | None = None, theta: Theta = None,
                 corpus: str | None = None, reference: bool = True) -> pd.DataFrame:
    """Every measured run (and reference row) with its model-level result, phase counts and quality flags.

    Returns
    -------
    DataFrame
        One row per entry: ``kind`` (measured / reference), ``run_id`` (the reference row's id for references),
        ``model_id``, ``family``, ``corpus``, ``theta``, ``context`` (tokens), ``gamma`` with its CI, ``r2``,
        ``phase``, ``sink_mass`` (probability), ``sink_tokens`` (the sink keys K kept out of the fit), head counts
        per phase and per quality flag, ``created``.
    """
    with connect(atlas, read_only=True) as con:
        measured = con.execute(_RUNS_SQL + " ORDER BY r.model_id, r.created").df()
        refs = con.execute(_REFS_SQL + " ORDER BY model_id, corpus, source").df() if reference else None
    if refs is not None and len(refs):
        refs["phase"] = [phase(g, lo, hi) for g, lo, hi in
                         zip(refs["gamma"], refs["gamma_ci_low"].astype(float), refs["gamma_ci_high"].astype(float),
                             strict=True)]
        frames = [f for f in (measured, refs) if len(f)]
        import pandas as pd

        measured = pd.concat([f.astype(object) for f in frames], ignore_index=True) if len(frames) > 1 else refs
    return _filter(measured, family, theta, corpus)


def _matches(model_id: str, selector: str) -> bool:
    s, m = selector.lower().rstrip("/"), str(model_id).lower().rstrip("/")
    return m == s or m.split("/")[-1] == s.split("/")[-1]


def select(selector: str, atlas: Path | str | None = None, *, family: str | None = None, theta: Theta = None,
           corpus: str | None = None) -> pd.DataFrame:
    """Entries a selector names: a run id, or a model's latest run per corpus plus its reference rows."""
    entries = list_entries(atlas, family=family, theta=theta, corpus=corpus)
    exact = entries[(entries["kind"] == "measured") & (entries["run_id"] == selector)]
    if len(exact):
        return exact.reset_index(drop=True)
    hits = entries[[_matches(m, selector) for m in entries["model_id"]]]
    measured = hits[hits["kind"] == "measured"].sort_values("created").groupby(["model_id", "corpus"]).tail(1)
    import pandas as pd

    out = pd.concat([measured, hits[hits["kind"] == "reference"]], ignore_index=True)
    if not len(out):
        raise GammalensError(f"no run or reference row in the atlas matches {selector!r}"
                             + (" with these filters" if family or theta or corpus else "")
                             + "; see `gammalens atlas list`")
    return out


def _labels(summary: pd.DataFrame) -> list[str]:
    """``model · corpus · <run id tail>`` or ``model · corpus · published <source>``, made unique."""
    labels: list[str] = []
    for _, row in summary.iterrows():
        tag = (f"published {str(row['source']).split(':')[-1]}" if row["kind"] == "reference"
               else str(row["run_id"])[-8:])
        label = f"{row['model_id']} · {row['corpus']} · {tag}"
        labels.append(label if label not in labels else f"{label} · {str(row['run_id'])[:6]}")
    return labels


def predicted_quantity(column: str) -> str | None:
    """The measured column a predicted column predicts (``gamma_pade`` → ``gamma``), or ``None``."""
    if column in PREDICTIONS:
        return PREDICTIONS[column]
    for suffix in PREDICTION_SUFFIXES:
        if column.endswith(suffix) and len(column) > len(suffix):
            return column[: -len(suffix)]
    return None


@dataclass(frozen=True)
class Comparison:
    """Side-by-side view of several atlas entries.

    Attributes
    ----------
    summary : DataFrame
        One row per entry (index: label): model-level γ, CI, R², phase, head counts, sink mass, flags.
    layers : DataFrame
        Per-layer γ (index: layer; one column per measured entry).
    layer_sink_mass : DataFrame
        Per-layer mean sink mass (probability), same shape as ``layers``.
    predictions : DataFrame
        Long table: ``label``, ``name``, ``scope``, ``quantity``, ``predicted_by`` (column), ``predicted``,
        ``measured``, ``error`` (predicted − measured), ``rel_error`` (error / |measured|).
    """

    summary: pd.DataFrame
    layers: pd.DataFrame
    layer_sink_mass: pd.DataFrame
    predictions: pd.DataFrame

    def __repr__(self) -> str:
        return f"Comparison({len(self.summary)} entries, {len(self.layers)} layers, {len(self.predictions)} predictions)"


def compare(selectors: list[str], atlas: Path | str | None = None, *, family: str | None = None,
            theta: Theta = None, corpus: str | None = None) -> Comparison:
    """Compare models side by side: per-layer γ, phase counts, sink mass, fit quality, predicted vs measured.

    Parameters
    ----------
    selectors : list of str
        Run ids or model ids (see the module docstring).
    atlas : Path, optional
        Atlas file; default ``$GAMMALENS_ATLAS`` or the user data directory.
    family, theta, corpus
        Filters applied to every selector.

    Returns
    -------
    Comparison
    """
    import pandas as pd

    parts = [select(s, atlas, family=family, theta=theta, corpus=corpus) for s in selectors]
    summary = pd.concat(parts, ignore_index=True).drop_duplicates("run_id")
    summary.insert(0, "label", _labels(summary))
    run_ids = [r for r, k in zip(summary["run_id"], summary["kind"], strict=True) if k == "measured"]
    labels = dict(zip(summary["run_id"], summary["label"], strict=True))
    with connect(atlas, read_only=True) as con:
        fits = con.execute("SELECT * FROM fits WHERE list_contains(?, run_id)", [run_ids]).df()
        extras = con.execute("SELECT * FROM fit_extras WHERE list_contains(?, run_id) AND value IS NOT NULL",
                             [run_ids]).df()
    fits["label"] = fits["run_id"].map(labels)
    layer_rows = fits[fits["scope"] == "layer"]
    layers = layer_rows.pivot(index="layer", columns="label", values="gamma")
    sinks = layer_rows.pivot(index="layer", columns="label", values="sink_mass")
    return Comparison(summary=summary.set_index("label"), layers=layers, layer_sink_mass=sinks,
                      predictions=_predictions(fits, extras, labels))


def _predictions(fits: pd.DataFrame, extras: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    rows = []
    keyed = fits.set_index(["run_id", "name"])
    extra_values = {(r.run_id, r.name, r.column_name): r.value for r in extras.itertuples()}
    for (run_id, name, column), value in extra_values.items():
        quantity = predicted_quantity(column)
        if quantity is None:
            continue
        if quantity in keyed.columns:
            measured = keyed.at[(run_id, name), quantity]
        else:
            measured = extra_values.get((run_id, name, quantity), math.nan)
        measured = float(measured) if measured is not None else math.nan
        error = value - measured
        rows.append({"label": labels[run_id], "name": name, "scope": keyed.at[(run_id, name), "scope"],
                     "quantity": quantity, "predicted_by": column, "predicted": value, "measured": measured,
                     "error": error, "rel_error": error / abs(measured) if measured else math.nan})
    columns = ["label", "name", "scope", "quantity", "predicted_by", "predicted", "measured", "error", "rel_error"]
    return pd.DataFrame(rows, columns=columns)


def layer_table(selector: str, atlas: Path | str | None = None, *, corpus: str | None = None) -> pd.DataFrame:
    """Per-layer fits of the runs a selector names (model-level reference rows have no layers).

    Returns
    -------
    DataFrame
        ``run_id``, ``layer``, ``gamma`` with its CI, ``r2``, ``phase``, ``sink_mass`` (probability) and the
        layer's head counts per phase and per quality flag.
    """
    entries = select(selector, atlas, corpus=corpus)
    run_ids = list(entries.loc[entries["kind"] == "measured", "run_id"])
    with connect(atlas, read_only=True) as con:
        return con.execute(f"""
            SELECT l.run_id, l.layer, l.gamma, l.gamma_ci_low, l.gamma_ci_high, l.r2, l.phase, l.sink_mass,
                   count(*) FILTER (WHERE h.phase = 'A') AS heads_A,
                   count(*) FILTER (WHERE h.phase = 'B') AS heads_B,
                   count(*) FILTER (WHERE h.phase = 'boundary') AS heads_boundary,
                   count(*) FILTER (WHERE h.r2 < {R2_LOW}) AS heads_low_r2,
                   count(*) FILTER (WHERE h.preferred_model <> 'power_law') AS heads_not_power_law
            FROM layer_fits l LEFT JOIN head_fits h ON h.run_id = l.run_id AND h.layer = l.layer
            WHERE list_contains(?, l.run_id)
            GROUP BY ALL ORDER BY l.run_id, l.layer""", [run_ids]).df()
