"""Reading a run directory (docs/run_format.md, format version 1) for the atlas and the report.

Only the measured files are read — ``manifest.json``, ``fits.csv``, ``profile.npz`` and, in ``gammalens sinks``
runs, ``sinks.json`` — so a run directory can be read while ``measure`` is still writing its report into it.

Run files come from outside (another machine, another version, a hand edit), so they are validated here, once,
by type and range, against the tables of :mod:`gammalens.runs.schema`: ``MANIFEST_FIELDS`` and ``SINKS_FIELDS``
(every JSON field a command reads), ``FIT_COLUMNS`` / ``FIT_CHECKS`` (the typed ``fits.csv`` columns) and
``PROFILE_FIELDS`` (the arrays of ``profile.npz``: shapes that agree, dtypes, bounds). Every problem is a
:class:`RunFormatError` (a :class:`~gammalens.errors.GammalensError`: one line, CLI exit code 2) that names the file
and the field, line or array — e.g. ``…/manifest.json: settings.context must be an integer ≥ 2, got 'sixty-four'``.
Fields the tables do not list are kept unchecked; optional fields may be missing (runs of earlier versions).

>>> run = read_run(Path("runs/minilm-20260101-000000-0123abcd"))   # doctest: +SKIP
>>> run.run_id, run.n_layers, run.n_heads, run.model_fit["gamma"]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
import re
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from gammalens.errors import GammalensError
from gammalens.probe.profile import read_array, stored_layout
from gammalens.runs.schema import (
    FIT_CHECKS,
    FIT_COLUMNS,
    FORMAT,
    INT_COLUMNS,
    MANIFEST_FIELDS,
    PROFILE_ARRAYS,
    PROFILE_FIELDS,
    REQUIRED_FIT_COLUMNS,
    SCOPES,
    SINKS_FIELDS,
    SINKS_FILE,
    Array,
    Field,
)

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
    sinks : dict or None
        ``sinks.json`` as parsed (and checked) JSON in ``gammalens sinks`` runs; None in other runs.
    """

    path: Path
    manifest: dict[str, Any]
    fits: list[dict[str, Any]]
    extra_columns: tuple[str, ...] = ()
    _npz: Any = field(default=None, repr=False, compare=False)
    sinks: dict[str, Any] | None = field(default=None, repr=False, compare=False)

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
        The directory is missing, lacks one of the three files, or a file is malformed: not parseable, or a
        field of the wrong type or out of range (:mod:`gammalens.runs.schema`). The message names the file and
        the field.
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
    n_layers, n_heads = _check_profile(run)
    _check_fit_indices(run, n_layers, n_heads)
    if (path / SINKS_FILE).exists():
        sinks = _read_json(path / SINKS_FILE)
        check_fields(sinks, SINKS_FIELDS, path / SINKS_FILE, dims={"L": n_layers, "H": n_heads})
        run = RunFiles(path=path, manifest=manifest, fits=fits, extra_columns=extras, _npz=npz, sinks=sinks)
    return run


def _read_json(file: Path) -> dict[str, Any]:
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFormatError(f"{file}: not readable JSON ({err})") from None
    if not isinstance(doc, dict):
        raise RunFormatError(f"{file}: expected a JSON object, got {_shown(doc)}")
    return doc


def _read_manifest(file: Path, *, complete: bool = True) -> dict[str, Any]:
    manifest = _read_json(file)
    check_fields(manifest, MANIFEST_FIELDS, file, complete=complete)
    return manifest


# --- the one check of the JSON run files against the schema's tables -----------------------------------------

_KIND_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "object": "a JSON object", "list": "a list", "list[int]": "a list of integers",
               "list[float]": "a list of numbers", "list[str]": "a list of strings",
               "list[object]": "a list of JSON objects", "array": "an array{shape} of numbers or null",
               "array[str]": "an array{shape} of strings or null"}


def _g(x: float) -> str:
    return f"{x:g}"


def _bounds(f: Field | Array) -> str:
    """``'≥ 2'``, ``'> 0'``, ``'in (0, 1]'`` … (empty without bounds)."""
    lo = (f"[{_g(f.ge)}", f"≥ {_g(f.ge)}") if f.ge is not None else \
        (f"({_g(f.gt)}", f"> {_g(f.gt)}") if getattr(f, "gt", None) is not None else None
    hi = (f"{_g(f.le)}]", f"≤ {_g(f.le)}") if getattr(f, "le", None) is not None else \
        (f"{_g(f.lt)})", f"< {_g(f.lt)}") if getattr(f, "lt", None) is not None else None
    if lo and hi:
        return f"in {lo[0]}, {hi[0]}"
    return (lo or hi or ("", ""))[1]


def describe(f: Field) -> str:
    """What a field must hold, in words: ``'an integer ≥ 2'``, ``'one of 'fp32', 'bf16', 'fp16''`` …"""
    if f.choices is not None:
        text = "one of " + ", ".join(repr(c) for c in f.choices)
    elif f.form is not None:
        text = f.form
    else:
        text, bounds = _KIND_WORDS[f.kind], _bounds(f)
        if bounds:
            text += f", each {bounds}" if f.kind.startswith("list") else f" {bounds}"
    if f.kind.startswith("array"):
        text = text.format(shape=f" of shape {_shape_text(f.shape or '*')}")
    return text + (" or null" if f.null else "")


def _shape_text(spec: str, dims: Mapping[str, int] | None = None) -> str:
    """``'L,H'`` → ``'(L, H)'`` (``'(L=2, H=4)'`` with sizes), ``'L'`` → ``'(L,)'``."""
    names = [f"{d}={dims[d]}" if dims and d in dims else d for d in spec.split(",")]
    return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"


def _shown(value: Any, limit: int = 60) -> str:
    """A value as an error message quotes it: JSON's null/true/false, Python's repr otherwise, cut to ``limit``."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind.startswith("list["):
        return isinstance(value, list) and all(_is(kind[5:-1], v) for v in value)
    return isinstance(value, {"str": str, "bool": bool, "object": dict, "list": list}[kind])


def _within(f: Field | Array, x: float) -> bool:
    """``x`` satisfies every bound of ``f`` (NaN satisfies none)."""
    return ((f.ge is None or x >= f.ge) and (getattr(f, "gt", None) is None or x > f.gt)
            and (getattr(f, "le", None) is None or x <= f.le) and (getattr(f, "lt", None) is None or x < f.lt))


def _array_fits(value: Any, dims: list[str], leaf: str, bound: dict[str, int]) -> bool:
    """Nested lists of ``dims`` (binding unbound letters in ``bound``) with leaves of ``leaf`` or null."""
    if not dims:
        return value is None or (isinstance(value, str) if leaf == "str" else _is("float", value))
    if not isinstance(value, list):
        return False
    if dims[0] != "*" and bound.setdefault(dims[0], len(value)) != len(value):
        return False
    return all(_array_fits(v, dims[1:], leaf, bound) for v in value)


def check_value(f: Field, value: Any) -> bool:
    """Whether ``value`` is what ``f`` allows (arrays: see :func:`check_fields`)."""
    if value is None:
        return f.null
    if not _is(f.kind, value):
        return False
    numbers = value if f.kind in ("list[int]", "list[float]") else [value] if f.kind in ("int", "float") else []
    if not all(_within(f, x) for x in numbers):
        return False
    if f.choices is not None and value not in f.choices:
        return False
    return f.pattern is None or re.fullmatch(f.pattern, value) is not None


def _find(node: Mapping[str, Any], parts: list[str], prefix: str = "") -> Iterator[tuple[str, bool, Any]]:
    """``(path, present, value)`` of every field a dotted path (``*``: every key) names below ``node``."""
    head, rest = parts[0], parts[1:]
    keys = list(node) if head == "*" else [head]
    for key in keys:
        if not rest:
            yield prefix + key, key in node, node.get(key)
        elif isinstance(node.get(key), dict):  # a parent of another type is reported by its own entry
            yield from _find(node[key], rest, f"{prefix}{key}.")


def check_fields(doc: Mapping[str, Any], fields: Mapping[str, Field], file: Path, *, complete: bool = True,
                 dims: Mapping[str, int] | None = None) -> None:
    """Check a parsed JSON run file against a table of :mod:`gammalens.runs.schema`; raise at the first problem.

    Parameters
    ----------
    doc : dict
        The parsed file.
    fields : dict of str to Field
        ``MANIFEST_FIELDS`` or ``SINKS_FIELDS``: dotted path → what it must hold.
    file : Path
        The file, for the message.
    complete : bool
        Insist on the required top-level keys (a complete run directory); nested required fields are always
        required where their parent is present.
    dims : dict, optional
        Sizes of the letters in array shapes (``{'L': layers, 'H': heads}``); unknown letters bind on first use.

    Raises
    ------
    RunFormatError
        ``"<file>: <field> must be <what it must hold>, got <value>"`` or ``"<file>: <field> is missing"``.
    """
    bound = dict(dims or {})
    for path, f in fields.items():
        for where, present, value in _find(doc, path.split(".")):
            if not present:
                if f.required and (complete or "." in where):
                    raise RunFormatError(f"{file}: {where} is missing ({describe(f)})")
                continue
            if f.kind in ("array", "array[str]") and value is not None:
                letters = (f.shape or "*").split(",")
                if not _array_fits(value, letters, "str" if f.kind == "array[str]" else "number", bound):
                    sizes = ", ".join(f"{k} = {bound[k]}" for k in letters if k in bound)
                    raise RunFormatError(f"{file}: {where} must be {describe(f)}"
                                         f"{f' with {sizes}' if sizes else ''}, got {_shown(value)}")
            elif not check_value(f, value):
                raise RunFormatError(f"{file}: {where} must be {describe(f)}, got {_shown(value)}")


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


def _typed_cell(column: str, text: str, file: Path, line: int) -> Any:
    """A cell of a format-1 column, typed by ``FIT_COLUMNS`` and checked by ``FIT_CHECKS`` (bounds, labels)."""
    value = _parse_cell(FIT_COLUMNS[column], text, file, line, column)
    check = FIT_CHECKS.get(column)
    finite = not (isinstance(value, float) and not math.isfinite(value))  # 'nan' reads as NaN, as an empty cell would
    if value is not None and check is not None and finite and not check_value(check, value):
        raise RunFormatError(f"{file} line {line}, column '{column}': must be {describe(check)}, got {_shown(value)}")
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
                        row[column] = _typed_cell(column, text, file, line)
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


def _check_profile(run: RunFiles) -> tuple[int, int]:
    """Check ``profile.npz``: the required arrays, every stored array of ``PROFILE_FIELDS`` (shape, dtype, bounds),
    then the per-distance arrays either layout reads back; returns ``(L, H)``."""
    file, npz = run.path / "profile.npz", run._npz
    names = set(npz.files)
    for key in PROFILE_ARRAYS:
        if key not in names:
            raise RunFormatError(f"{file}: array '{key}' is missing")
    dims: dict[str, int] = {}
    for key, spec in PROFILE_FIELDS.items():
        if key in names:
            _check_array(npz, key, spec, file, dims)
    _check_shapes(run)
    return dims["L"], dims["H"]


_SMALL = 1 << 16  # arrays up to this many values have their values checked too (scalars, edges, per layer)


def _stored(npz: Any, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an array as stored, read from its .npy header without loading the data."""
    with npz.zip.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            a = npz[key]
            shape, dtype = a.shape, a.dtype
    return tuple(shape), np.dtype(dtype)


def _check_array(npz: Any, key: str, spec: Array, file: Path, dims: dict[str, int]) -> None:
    try:
        shape, dtype = _stored(npz, key)
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise RunFormatError(f"{file}: array '{key}' cannot be read ({err})") from None
    letters = [d for d in spec.shape.split(",") if d] if spec.shape else []
    ok = len(shape) == len(letters) and all(
        d == "*" or dims.setdefault(d, n) == n for d, n in zip(letters, shape, strict=False))
    if not ok:
        want = "be a scalar" if not letters else f"have shape {_shape_text(spec.shape, dims)}"
        raise RunFormatError(f"{file}: array '{key}' must {want}, got shape {shape}")
    kinds = {"number": "iuf", "int": "iuf", "str": "US"}[spec.dtype]
    if dtype.kind not in kinds or (spec.dtype == "int" and dtype.kind == "f" and math.prod(shape) > _SMALL):
        words = {"number": "numbers", "int": "integers", "str": "text"}[spec.dtype]
        raise RunFormatError(f"{file}: array '{key}' must hold {words}, got dtype {dtype}")
    if (spec.ge is None and not (spec.dtype == "int" and dtype.kind == "f")) or math.prod(shape) > _SMALL:
        return
    try:
        stored = np.asarray(npz[key])
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise RunFormatError(f"{file}: array '{key}' cannot be read ({err})") from None
    values = stored.astype(np.float64)
    if spec.dtype == "int" and not np.all(np.isfinite(values) & (values == np.round(values))):
        raise RunFormatError(f"{file}: array '{key}' must hold integers, got {_shown(stored.tolist())}")
    if spec.ge is not None and not np.all(values >= spec.ge):
        raise RunFormatError(f"{file}: array '{key}' must be ≥ {_g(spec.ge)}, got {_shown(stored.tolist())}")


def _check_fit_indices(run: RunFiles, n_layers: int, n_heads: int) -> None:
    """Every fits.csv row's layer and head exist in profile.npz."""
    file = run.path / "fits.csv"
    for row in run.fits:
        if row["layer"] is not None and row["layer"] >= n_layers:
            raise RunFormatError(f"{file}: row '{row['name']}' has layer {row['layer']}; profile.npz has {n_layers} "
                                 "layers")
        if row["head"] is not None and row["head"] >= n_heads:
            raise RunFormatError(f"{file}: row '{row['name']}' has head {row['head']}; profile.npz has {n_heads} "
                                 "heads")


def _check_shapes(run: RunFiles) -> None:
    """The per-distance arrays (a compact profile's bins expanded) agree: mass (L, H, D), pairs (L, D) …"""
    file = run.path / "profile.npz"
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


# the light row reader: flat dicts, the other columns as found; the format's columns typed and checked as above
def read_fits_csv(path: Path) -> list[dict]:
    """Read ``fits.csv`` back into flat dicts with numbers parsed (empty cells → None).

    The format's numeric columns (``FIT_COLUMNS``) are typed and checked (``FIT_CHECKS``) as :func:`read_run` does
    them — a non-numeric γ is a :class:`RunFormatError` naming the line and column; every other cell is a number
    where it reads as one, else its text.
    """
    path = Path(path)
    out = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for line, r in enumerate(csv.DictReader(fh), start=2):
                row: dict[str, Any] = {}
                for k, v in r.items():
                    if k is None or v is None:
                        raise RunFormatError(f"{path} line {line}: the row's cells do not match the header")
                    if k in FIT_COLUMNS and FIT_COLUMNS[k] != "str":
                        row[k] = _typed_cell(k, v, path, line)
                        continue
                    if k in FIT_CHECKS:  # the labels: phase, preferred model
                        _typed_cell(k, v, path, line)
                    if v == "":
                        row[k] = None
                        continue
                    try:
                        row[k] = int(v) if k in INT_COLUMNS else float(v)
                    except ValueError:
                        row[k] = v
                scope = row.get("scope")
                if (scope in ("head", "layer") and row.get("layer") is None) or (scope == "head" and row.get("head") is None):
                    raise RunFormatError(f"{path} line {line}: a {scope} row needs its layer and head")
                out.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise RunFormatError(f"{path}: not readable CSV ({err})") from None
    return out


def read_manifest(run_dir: Path) -> dict:
    """Read and check ``manifest.json`` of a run directory (the light reader ``kv plan`` uses).

    Every field present is checked against ``MANIFEST_FIELDS`` as :func:`read_run` does; only the keys of a
    complete run directory (``format``, ``run_id``, ``settings`` …) are not insisted on.

    Raises
    ------
    RunFormatError
        Not a run directory, not readable JSON, or a field of the wrong type or out of range.
    """
    run_dir = Path(run_dir)
    m = run_dir / "manifest.json"
    if not run_dir.is_dir():
        raise RunFormatError(f"{run_dir} does not exist or is not a directory; pass a run directory from `gammalens measure`")
    if not m.is_file() or not (run_dir / "fits.csv").is_file():
        raise RunFormatError(f"{run_dir} is not a gammalens run directory (no manifest.json / fits.csv)")
    return _read_manifest(m, complete=False)
