"""``gammalens verify``: re-run a measurement from its manifest and compare γ — the run's receipt."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gammalens import terminal
from gammalens.errors import GammalensError
from gammalens.measuring.pipeline import MeasureConfig, measure
from gammalens.runs.reader import read_run


@dataclass(frozen=True)
class Verdict:
    """Outcome of a re-run.

    Attributes
    ----------
    ok : bool
        Every compared γ within ``tolerance`` and the inputs identical.
    tolerance : float
        Largest accepted |Δγ| (dimensionless).
    max_abs_diff : float
        Largest |Δγ| over heads, layers and the model.
    worst : str
        Name of the row with the largest difference.
    model_gamma : tuple of float
        (recorded, re-measured) model γ.
    notes : list of str
        Input differences found (weights, corpus, versions).
    """

    ok: bool
    tolerance: float
    max_abs_diff: float
    worst: str
    model_gamma: tuple[float, float]
    notes: list[str] = field(default_factory=list)


# what a run reports beside γ, checked on every row: numbers within the tolerance, labels exactly
CHECKED_NUMBERS = ("gamma_ci_low", "gamma_ci_high", "r2", "sink_mass")
CHECKED_LABELS = ("phase", "preferred_model")


def verify_run(run_dir: Path, tolerance: float = 1e-3) -> Verdict:
    """Re-measure ``run_dir`` with its recorded settings (nothing written) and compare what it reports.

    The run is first read as the run format defines it (format version, files, columns, shapes), and its
    manifest's result must be its own ``fits.csv`` model row. Then every row's γ is compared (the verdict's
    number); its CI, R² and sink mass within the same tolerance, and its phase and preferred law exactly,
    are checked too: a mismatch is a note that fails the verdict. Weight and corpus hashes are compared
    as well, since the re-run otherwise measures something else.
    """

    if not (tolerance > 0 and math.isfinite(tolerance)):
        raise GammalensError(f"--tolerance must be a positive finite number (got {tolerance})")
    run = read_run(run_dir)  # RunFormatError (a GammalensError) for anything that is not a valid run
    man = run.manifest
    try:
        model, settings, recorded = man["model"], dict(man["settings"]), man.get("result") or {}
        s = settings | {"model": model["path"] if model["source"] in ("local", "gguf") else model["id"]}
        weights, corpus_sha, versions = model["weights_sha256"], man["corpus"]["sha256"], man["versions"]
    except (KeyError, TypeError) as err:
        raise GammalensError(f"{run_dir}/manifest.json lacks what a re-run needs ({err}); it is not a complete "
                             "gammalens manifest") from None
    old = {r["name"]: r for r in run.fits}
    notes = []
    for key, value in recorded.items():
        if key == "ci_note":  # a note on the CIs, not a number to reproduce; fits.csv keeps it among its extras
            continue
        mine = old.get("model", {}).get(key)
        if isinstance(value, float) and isinstance(mine, float):
            same = math.isclose(value, mine, rel_tol=1e-9, abs_tol=1e-12)
        else:
            same = value == mine
        if not same:
            notes.append(f"the manifest's result {key} = {value!r} differs from fits.csv's model row ({mine!r})")
    known = set(MeasureConfig.__dataclass_fields__)
    new = measure(config=MeasureConfig(**{k: v for k, v in s.items() if k in known}))
    if new.manifest["model"]["weights_sha256"] != weights:
        notes.append("weight files differ from the recorded hashes")
    if new.manifest["corpus"]["sha256"] != corpus_sha:
        notes.append("corpus windows differ from the recorded hash (another Python standard library?)")
    for k in ("torch", "transformers"):
        if new.manifest["versions"][k] != versions.get(k):
            notes.append(f"{k} {versions.get(k)} → {new.manifest['versions'][k]}")
    worst, diff = "model", 0.0
    for r in new.fits:
        o = old.get(r["name"], {}).get("gamma")
        a = r["gamma"]
        if o is None or not math.isfinite(a):
            if (o is None) != (not math.isfinite(a)):
                worst, diff = r["name"], math.inf
            continue
        if abs(a - o) > diff:
            worst, diff = r["name"], abs(a - o)
    notes += _reported_differences(old, new.fits, tolerance)
    hard = [n for n in notes if "differ" in n]
    return Verdict(ok=diff <= tolerance and not hard, tolerance=tolerance, max_abs_diff=diff, worst=worst,
                   model_gamma=(old["model"]["gamma"], new.model_fit["gamma"]), notes=notes)


def _reported_differences(old: dict[str, dict], new_fits: list[dict], tolerance: float) -> list[str]:
    """One note per reported column (beside γ) that differs, naming how many rows and the first one."""
    bad: dict[str, list[str]] = {}
    for r in new_fits:
        o = old.get(r["name"])
        if o is None:
            continue
        for c in CHECKED_NUMBERS:
            a, b = o.get(c), r.get(c)
            a_ok = isinstance(a, (int, float)) and math.isfinite(a)
            b_ok = isinstance(b, (int, float)) and math.isfinite(b)
            if a_ok != b_ok or (a_ok and abs(a - b) > tolerance):
                bad.setdefault(c, []).append(f"{r['name']}: {a} → {b}")
        for c in CHECKED_LABELS:
            if c in o and o.get(c) != r.get(c):
                bad.setdefault(c, []).append(f"{r['name']}: {o.get(c)} → {r.get(c)}")
    return [f"{c} differs on {len(rows)} row(s), e.g. {rows[0]}" for c, rows in bad.items()]


def print_verdict(v: Verdict, console: Any = None) -> None:
    """One-screen verdict: match or not, the largest difference and where."""

    console = console or terminal.console()
    mark = "[green]✅ verified[/]" if v.ok else "[red]❌ does not reproduce[/]"
    console.print(f"{mark}: max |Δγ| = {v.max_abs_diff:.2e} ({v.worst}) with tolerance {v.tolerance:g}; "
                  f"model γ recorded {v.model_gamma[0]:.4f}, re-measured {v.model_gamma[1]:.4f}")
    for n in v.notes:
        console.print(f"  note: {n}")
