"""The sweep spec: a TOML file that names many measurements (cells) and where they go.

A spec has up to four tables; every setting is a field of :class:`~gammalens.measuring.pipeline.MeasureConfig`
(``model``, ``corpus``, ``context``, ``windows``, ``seed``, ``dtype``, ``device``, ``bootstrap`` …)::

    [sweep]                      # where runs go and how they are recorded (all optional)
    out = "runs/tiny-contexts"   # parent of the run directories, relative to the spec's folder
    atlas = "tiny.duckdb"        # atlas to record into; default $GAMMALENS_ATLAS / the user's atlas
    record = true                # false: write run directories only
    report = false               # write report.html into every run directory

    [defaults]                   # scalar settings shared by every cell
    windows = 8
    bootstrap = 100

    [grid]                       # the cartesian product of these lists (a scalar is a list of one)
    models = ["gammalens-tiny"]
    contexts = [64, 128, 256]
    seeds = [0, 1]

    [[cells]]                    # explicit rows, each one cell (over the defaults)
    model = "minilm"
    context = 128

The plural names ``models``, ``corpora``, ``contexts``, ``seeds`` are accepted beside the field names.
A model or corpus written as a path (starting with ``.``, ``~`` or ``/``) is taken relative to the spec's
folder and recorded as an absolute path, so every worker finds it wherever it runs.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gammalens.errors import GammalensError
from gammalens.measuring.config import MeasureConfig

PLURALS = {"models": "model", "corpora": "corpus", "contexts": "context", "seeds": "seed", "dtypes": "dtype",
           "devices": "device", "fit_ranges": "fit_range"}
SWEEP_KEYS = {"out", "atlas", "record", "report", "executor", "address", "max_parallel", "cpus_per_cell",
              "gpus_per_cell", "retries", "threads"}
EXECUTORS = ("local", "ray")


class SweepError(GammalensError):
    """The sweep spec is missing, malformed, or names an unknown setting."""


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs; the ``[sweep]`` table, overridden by command-line flags.

    Attributes
    ----------
    out : Path
        Parent directory of the run directories (every worker must be able to write there).
    atlas : Path or None
        The atlas file; None: ``$GAMMALENS_ATLAS`` or the user's default atlas.
    record : bool
        Record every finished run in the atlas (the driver is the only writer).
    report : bool
        Write ``report.html`` into every run directory.
    executor : str
        ``'local'`` (this machine; one process, or a process pool with ``max_parallel > 1``) or ``'ray'``.
    address : str or None
        Ray cluster address (``'auto'``, ``'ray://host:10001'``); None: start a local Ray instance.
    max_parallel : int or None
        Cells measured at once; None: 1 for ``local``, as many as Ray's resources allow for ``ray``.
    cpus_per_cell : float
        CPUs a Ray task declares.
    gpus_per_cell : float or None
        GPUs a Ray task declares; None: 1 for cells on a CUDA device, 0 otherwise.
    retries : int
        Ray retries of a cell whose worker process died (not of a cell that raised an error).
    threads : int or None
        torch CPU threads inside a cell; None: torch's default (Ray sets it from ``cpus_per_cell``).
    """

    out: Path = Path("runs")
    atlas: Path | None = None
    record: bool = True
    report: bool = False
    executor: str = "local"
    address: str | None = None
    max_parallel: int | None = None
    cpus_per_cell: float = 1.0
    gpus_per_cell: float | None = None
    retries: int = 3
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise SweepError(f"--executor must be one of {', '.join(EXECUTORS)} (got {self.executor!r})")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise SweepError(f"--max-parallel must be at least 1 (got {self.max_parallel})")
        if self.cpus_per_cell <= 0 or (self.gpus_per_cell is not None and self.gpus_per_cell < 0):
            raise SweepError("cpus_per_cell must be > 0 and gpus_per_cell ≥ 0")
        if self.retries < 0 or (self.threads is not None and self.threads < 1):
            raise SweepError("retries must be ≥ 0 and threads ≥ 1")


@dataclass(frozen=True)
class SweepSpec:
    """A parsed spec: its cells (one :class:`MeasureConfig` each, duplicates removed) and its options.

    Attributes
    ----------
    name : str
        The spec's file stem; names the sweep's status file ``<out>/<name>.sweep.json``.
    cells : list of MeasureConfig
        The measurements, in spec order (grid first, then the explicit rows).
    options : SweepOptions
    """

    name: str
    cells: list[MeasureConfig] = field(default_factory=list)
    options: SweepOptions = field(default_factory=SweepOptions)


def _toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"sweep spec {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SweepError(f"sweep spec {path} cannot be read ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise SweepError(f"sweep spec {path} is not valid TOML ({err})") from None


def _settings(table: dict[str, Any], where: str) -> dict[str, Any]:
    """Map plural names onto MeasureConfig fields and refuse unknown keys."""
    known = {f.name for f in fields(MeasureConfig)}
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = PLURALS.get(key, key)
        if name not in known:
            raise SweepError(f"{where}: unknown setting {key!r}; settings are the fields of `gammalens measure` "
                             f"({', '.join(sorted(known))})")
        if name in out:
            raise SweepError(f"{where}: {name!r} is given twice")
        out[name] = value
    return out


def _config(settings: dict[str, Any], where: str, folder: Path) -> MeasureConfig:
    if not settings.get("model"):
        raise SweepError(f"{where}: no model; give `models = [...]` in [grid] or `model` in [defaults]")
    for key in ("model", "corpus"):  # local paths are relative to the spec's folder, and absolute for workers
        value = settings.get(key)
        if isinstance(value, str) and value.startswith((".", "~", "/")):
            path = Path(value).expanduser()
            settings[key] = str(path if path.is_absolute() else (folder / path).resolve())
    try:
        return MeasureConfig(**settings)
    except GammalensError as err:
        raise SweepError(f"{where}: {err}") from None
    except TypeError as err:
        raise SweepError(f"{where}: {err}") from None


def load_spec(path: Path | str, **overrides: Any) -> SweepSpec:
    """Read a sweep spec; ``overrides`` (non-None) replace fields of its ``[sweep]`` table.

    Relative ``out`` and ``atlas`` paths are taken relative to the spec's folder, so a spec runs the
    same from anywhere.

    Raises
    ------
    SweepError
        Malformed TOML, an unknown table or setting, an invalid setting in some cell, or no cells.

    Examples
    --------
    >>> spec = load_spec("examples/sweep-tiny.toml")          # doctest: +SKIP
    >>> len(spec.cells), spec.options.out                     # doctest: +SKIP
    (6, PosixPath('examples/runs/sweep-tiny'))
    """
    path = Path(path)
    doc = _toml(path)
    unknown = set(doc) - {"sweep", "defaults", "grid", "cells"}
    if unknown:
        raise SweepError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}; use [sweep], [defaults], [grid], "
                         "[[cells]]")
    opts = dict(doc.get("sweep") or {})
    bad = set(opts) - SWEEP_KEYS
    if bad:
        raise SweepError(f"{path}: unknown [sweep] key(s) {', '.join(sorted(bad))}; known: {', '.join(sorted(SWEEP_KEYS))}")
    opts.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("out", "atlas"):
        if isinstance(opts.get(key), str):
            p = Path(opts[key]).expanduser()
            opts[key] = p if p.is_absolute() else path.parent / p
    if opts.get("atlas") is False:  # `atlas = false` means: do not record
        opts["atlas"], opts["record"] = None, False
    try:
        options = SweepOptions(**opts)
    except TypeError as err:
        raise SweepError(f"{path}: [sweep]: {err}") from None

    defaults = _settings(dict(doc.get("defaults") or {}), f"{path} [defaults]")
    for key, value in defaults.items():
        if isinstance(value, list):
            raise SweepError(f"{path} [defaults]: {key} is a list; lists belong in [grid]")
    cells: list[MeasureConfig] = []
    grid = _settings(dict(doc.get("grid") or {}), f"{path} [grid]")
    if grid:
        keys = list(grid)
        axes = [v if isinstance(v, list) else [v] for v in grid.values()]
        if any(len(a) == 0 for a in axes):
            raise SweepError(f"{path} [grid]: an empty list makes an empty sweep")
        for n, combo in enumerate(itertools.product(*axes)):
            cells.append(_config({**defaults, **dict(zip(keys, combo, strict=True))}, f"{path} [grid] cell {n + 1}",
                                 path.parent))
    rows = doc.get("cells") or []
    if not isinstance(rows, list):
        raise SweepError(f"{path}: `cells` must be an array of tables ([[cells]])")
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            raise SweepError(f"{path}: [[cells]] row {n + 1} is not a table")
        cells.append(_config({**defaults, **_settings(row, f"{path} [[cells]] row {n + 1}")},
                             f"{path} [[cells]] row {n + 1}", path.parent))
    if not cells:
        raise SweepError(f"{path}: no cells; give a [grid] table or [[cells]] rows")
    return SweepSpec(name=path.stem, cells=cells, options=options)
