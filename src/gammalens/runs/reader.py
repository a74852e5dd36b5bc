"""Reading a run directory (docs/run_format.md, format version 1) for the atlas and the report.

Only the three measured files are read — ``manifest.json``, ``fits.csv`` and ``profile.npz`` — so a run
directory can be read while ``measure`` is still writing its report into it. Every problem with the
files is a :class:`~gammalens.errors.GammalensError` that names the file, line and column.

>>> run = read_run(Path("runs/minilm-20260101-000000-0123abcd"))   # doctest: +SKIP
>>> run.run_id, run.n_layers, run.n_heads, run.model_fit["gamma"]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from gammalens.errors import GammalensError
from gammalens.probe.profile import read_array, stored_layout
from gammalens.runs.schema import FIT_COLUMNS, FORMAT, INT_COLUMNS, PROFILE_ARRAYS, REQUIRED_FIT_COLUMNS, SCOPES

# the format's version, column table and arrays are defined once, in gammalens.runs.schema
RUN_FORMAT = FORMAT


class RunFormatError(GammalensError):
    """A run directory is missing, incomplete or does not follow docs/run_format.md."""


@dataclass(frozen=True)
class RunFiles:
    """The measured content of one run directory.

    Attributes
    ----------
    path : Path
        The run directory.
    manifest : dict
        ``manifest.json`` as parsed JSON.
    fits : list of dict
        One dict per ``fits.csv`` row: the known columns typed (``None`` for empty cells) and, under
        ``"extras"``, every other column as ``{column: float | str}``.
    extra_columns : tuple of str
        The ``fits.csv`` columns that are not part of format version 1, in file order.
    """

    path: Path
    manifest: dict[str, Any]
    fits: list[dict[str, Any]]
    extra_columns: tuple[str, ...] = ()
    _npz: Any = field(default=None, repr=False, compare=False)

    @property
    def run_id(self) -> str:
        return str(self.manifest["run_id"])

    @property
    def model_id(self) -> str:
        return str(self.manifest.get("model", {}).get("id") or "unknown")

    @property
    def arch(self) -> dict[str, Any]:
        return dict(self.manifest.get("model", {}).get("arch") or {})

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.manifest.get("settings") or {})

    @property
    def rope_theta(self) -> float | None:
        """RoPE base θ, ``None`` when the model has no rotary positions."""
        theta = self.arch.get("rope_theta")
        if self.arch.get("position_encoding") not in (None, "rope") or theta is None:
            return None
        return float(theta)

    @property
    def head_fits(self) -> list[dict[str, Any]]:
        return [row for row in self.fits if row["scope"] == "head"]

    @property
    def layer_fits(self) -> list[dict[str, Any]]:
        return [row for row in self.fits if row["scope"] == "layer"]

    @property
    def model_fit(self) -> dict[str, Any]:
        rows = [row for row in self.fits if row["scope"] == "model"]
        if not rows:
            raise RunFormatError(f"{self.path / 'fits.csv'}: no row with scope 'model'")
        return rows[0]

    @cached_property
    def n_layers(self) -> int:
        return int(self.profile("mass_cs").shape[0])

    @cached_property
    def n_heads(self) -> int:
        return int(self.profile("mass_cs").shape[1])

    @cached_property
    def layout(self) -> str:
        """``'full'`` (every distance, exact float64 sums) or ``'compact'`` (docs/run_format.md)."""
        return stored_layout(self._npz)

    def profile(self, key: str) -> np.ndarray:
        """One array of ``profile.npz``, per distance in either layout (loaded on first use).

        A compact profile's binned arrays come back per distance, each distance holding its bin's mean
        (:func:`gammalens.probe.profile.read_array`); :attr:`layout` says which layout the file has.
        """
        try:
            return read_array(self._npz, key)
        except KeyError as err:  # the array asked for, or the bin edges a compact one needs
            raise RunFormatError(f"{self.path / 'profile.npz'}: array '{err.args[0]}' is missing") from None
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise RunFormatError(f"{self.path / 'profile.npz'}: array '{key}' cannot be read ({err})") from None


def read_run(run_dir: Path | str) -> RunFiles:
    """Read and check a run directory.

    Parameters
    ----------
    run_dir : Path
        A directory written by ``gammalens measure`` (complete or still ``.partial``).

    Returns
    -------
    RunFiles
        The manifest, the typed fits and lazy access to the profile arrays.

    Raises
    ------
    RunFormatError
        The directory is missing, lacks one of the three files, or a file is malformed.
    """
    path = Path(run_dir)
    if not path.exists():
        raise RunFormatError(f"run directory {path} does not exist")
    if not path.is_dir():
        raise RunFormatError(f"{path} is a file, not a run directory; pass a directory written by `gammalens measure`")
    if not (path / "manifest.json").is_file():
        raise RunFormatError(f"{path} is not a gammalens run directory (no manifest.json); "
                             "pass a directory written by `gammalens measure`")
    manifest = _read_manifest(path / "manifest.json")
    fits, extras = _read_fits(path / "fits.csv")
    npz = _open_profile(path / "profile.npz")
    run = RunFiles(path=path, manifest=manifest, fits=fits, extra_columns=extras, _npz=npz)
    _check_shapes(run)
    return run


def _read_manifest(file: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFormatError(f"{file}: not readable JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise RunFormatError(f"{file}: expected a JSON object")
    if manifest.get("format") != RUN_FORMAT:
        raise RunFormatError(f"{file}: format is {manifest.get('format')!r}, expected {RUN_FORMAT!r}")
    for key in ("run_id", "model", "settings"):
        if key not in manifest:
            raise RunFormatError(f"{file}: key '{key}' is missing")
    return manifest


def _parse_cell(kind: str, text: str, file: Path, line: int, column: str) -> Any:
    text = text.strip()
    if text == "":
        return None
    if kind == "str":
        return text
    try:
        value = float(text)
    except ValueError:
        raise RunFormatError(f"{file} line {line}, column '{column}': {text!r} is not a number") from None
    if kind == "int":
        if not math.isfinite(value) or value != int(value):
            raise RunFormatError(f"{file} line {line}, column '{column}': {text!r} is not an integer")
        return int(value)
    return value


def _read_fits(file: Path) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    if not file.is_file():
        raise RunFormatError(f"{file.parent} is not a complete run directory (no fits.csv)")
    try:
        with file.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise RunFormatError(f"{file}: empty file")
            header = [h.strip() for h in header]
            for column in REQUIRED_FIT_COLUMNS:
                if column not in header:
                    raise RunFormatError(f"{file} line 1: column '{column}' is missing")
            extras = tuple(h for h in header if h not in FIT_COLUMNS)
            rows = []
            for line, cells in enumerate(reader, start=2):
                if not cells:
                    continue
                if len(cells) != len(header):
                    raise RunFormatError(f"{file} line {line}: {len(cells)} cells, the header has {len(header)}")
                row: dict[str, Any] = {c: None for c in FIT_COLUMNS}
                row["extras"] = {}
                for column, text in zip(header, cells, strict=True):
                    if column in FIT_COLUMNS:
                        row[column] = _parse_cell(FIT_COLUMNS[column], text, file, line, column)
                    elif text.strip() != "":
                        try:
                            row["extras"][column] = float(text)
                        except ValueError:
                            row["extras"][column] = text.strip()
                _check_fit_row(row, file, line)
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise RunFormatError(f"{file}: not readable CSV ({err})") from None
    if not any(r["scope"] == "model" for r in rows):
        raise RunFormatError(f"{file}: no row with scope 'model'")
    return rows, extras


def _check_fit_row(row: dict[str, Any], file: Path, line: int) -> None:
    if row["name"] is None:
        raise RunFormatError(f"{file} line {line}, column 'name': empty")
    if row["scope"] not in SCOPES:
        raise RunFormatError(f"{file} line {line}, column 'scope': {row['scope']!r} is not one of {SCOPES}")
    if row["gamma"] is None:
        raise RunFormatError(f"{file} line {line}, column 'gamma': empty")
    needs_layer = row["scope"] in ("head", "layer")
    if needs_layer and row["layer"] is None:
        raise RunFormatError(f"{file} line {line}, column 'layer': empty for scope {row['scope']!r}")
    if row["scope"] == "head" and row["head"] is None:
        raise RunFormatError(f"{file} line {line}, column 'head': empty for scope 'head'")


def _open_profile(file: Path) -> Any:
    if not file.is_file():
        raise RunFormatError(f"{file.parent} is not a complete run directory (no profile.npz)")
    try:
        return np.load(file, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise RunFormatError(f"{file}: not a readable .npz file ({err})") from None


def _check_shapes(run: RunFiles) -> None:
    file = run.path / "profile.npz"
    names = set(run._npz.files)
    for key in PROFILE_ARRAYS:
        if key not in names:
            raise RunFormatError(f"{file}: array '{key}' is missing")
    mass, mass_cs, pairs = run.profile("mass"), run.profile("mass_cs"), run.profile("pairs")
    if mass.ndim != 3 or mass_cs.ndim != 3 or pairs.ndim != 2:
        raise RunFormatError(f"{file}: expected mass (L, H, D), mass_cs (L, H, D) and pairs (L, D); got "
                             f"{mass.shape}, {mass_cs.shape}, {pairs.shape}")
    n_layers, n_heads, _ = mass.shape
    if mass_cs.shape[:2] != (n_layers, n_heads) or pairs.shape != (n_layers, mass.shape[2]):
        raise RunFormatError(f"{file}: shapes disagree: mass {mass.shape}, mass_cs {mass_cs.shape}, "
                             f"pairs {pairs.shape}")
    if run.profile("queries_cs").shape != (n_layers,) or run.profile("sink_mass").shape != (n_layers, n_heads):
        raise RunFormatError(f"{file}: queries_cs must be (L,) and sink_mass (L, H) with L={n_layers}, H={n_heads}")


# the lenient row reader: numbers parsed, no checks (tools reading their own fresh runs)
def read_fits_csv(path: Path) -> list[dict]:
    """Read ``fits.csv`` back into dicts with numbers parsed (empty cells → None)."""
    out = []
    with Path(path).open(newline="") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in r.items():
                if v == "":
                    row[k] = None
                    continue
                try:
                    row[k] = int(v) if k in INT_COLUMNS else float(v)
                except ValueError:
                    row[k] = v
            out.append(row)
    return out


def read_manifest(run_dir: Path) -> dict:
    """Read ``manifest.json`` of a run directory; :class:`GammalensError` if it is not one."""
    run_dir = Path(run_dir)
    m = run_dir / "manifest.json"
    if not run_dir.is_dir():
        raise GammalensError(f"{run_dir} does not exist or is not a directory; pass a run directory from `gammalens measure`")
    if not m.is_file() or not (run_dir / "fits.csv").is_file():
        raise GammalensError(f"{run_dir} is not a gammalens run directory (no manifest.json / fits.csv)")
    try:
        return json.loads(m.read_text())
    except json.JSONDecodeError as err:
        raise GammalensError(f"{m} is not valid JSON ({err.msg} at line {err.lineno})") from None
