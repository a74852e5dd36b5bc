"""``gammalens verify``: re-run a measurement from its manifest and compare γ — the run's receipt."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gammalens.errors import GammalensError
from gammalens.rundir import read_fits_csv, read_manifest


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


def verify_run(run_dir: Path, tolerance: float = 1e-3) -> Verdict:
    """Re-measure ``run_dir`` with its recorded settings (nothing written) and compare every γ.

    Weight hashes and the corpus hash are compared too: a mismatch is reported as a note and fails
    the verdict, since the re-run then measures something else.
    """
    from gammalens.measurement import MeasureConfig, measure

    if not tolerance > 0:
        raise GammalensError(f"--tolerance must be > 0 (got {tolerance})")
    man = read_manifest(run_dir)
    old = {r["name"]: r for r in read_fits_csv(Path(run_dir) / "fits.csv")}
    s = dict(man["settings"])
    s["model"] = man["model"]["path"] if man["model"]["source"] in ("local", "gguf") else man["model"]["id"]
    known = set(MeasureConfig.__dataclass_fields__)
    new = measure(config=MeasureConfig(**{k: v for k, v in s.items() if k in known}))
    notes = []
    if new.manifest["model"]["weights_sha256"] != man["model"]["weights_sha256"]:
        notes.append("weight files differ from the recorded hashes")
    if new.manifest["corpus"]["sha256"] != man["corpus"]["sha256"]:
        notes.append("corpus windows differ from the recorded hash (another Python standard library?)")
    for k in ("torch", "transformers"):
        if new.manifest["versions"][k] != man["versions"][k]:
            notes.append(f"{k} {man['versions'][k]} → {new.manifest['versions'][k]}")
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
    hard = [n for n in notes if "differ" in n]
    return Verdict(ok=diff <= tolerance and not hard, tolerance=tolerance, max_abs_diff=diff, worst=worst,
                   model_gamma=(old["model"]["gamma"], new.model_fit["gamma"]), notes=notes)


def print_verdict(v: Verdict, console: Any = None) -> None:
    """One-screen verdict: match or not, the largest difference and where."""
    from gammalens import terminal

    console = console or terminal.console()
    mark = "[green]✅ verified[/]" if v.ok else "[red]❌ does not reproduce[/]"
    console.print(f"{mark}: max |Δγ| = {v.max_abs_diff:.2e} ({v.worst}) with tolerance {v.tolerance:g}; "
                  f"model γ recorded {v.model_gamma[0]:.4f}, re-measured {v.model_gamma[1]:.4f}")
    for n in v.notes:
        console.print(f"  note: {n}")
