"""Import of the book's published γ atlas (*How Transformers Attend*, Marín 2026) as reference rows.

The table has one row per (model, corpus, source) with columns
``model,corpus,theta,gamma,R2,ci_lo,ci_hi,dR2_pow_exp,source``: RoPE base θ (empty for models without
RoPE), γ, R² of the log-log fit, the 95% CI of γ (may be empty), Δ(R²) power law − exponential (may be
empty) and the book's own source tag. Every row is checked before any is inserted; the first bad cell
is reported with its line and column and nothing is written.

The table ships inside the package (``gammalens/atlas/reference/``, with its source and date in
``SOURCE.md``), so ``import_taf()`` with no file imports it.

>>> import_taf()                              # doctest: +SKIP
96
"""

from __future__ import annotations

import csv
import hashlib
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gammalens.atlas.family import family_of
from gammalens.atlas.store import connect, insert_rows, scalar, transaction
from gammalens.errors import GammalensError

TAF_DATASET = "taf_gamma_atlas"
TAF_PROVENANCE = "How Transformers Attend (Marín 2026): published γ atlas"
# the shipped copy (reference data; source and date in reference/SOURCE.md)
TAF_FILE = Path(__file__).resolve().parent / "reference" / "taf_gamma_atlas.csv"
TAF_SHA256 = "747298f852f5a4e41bf842fb9fff603224ef3ee7d7d8bcf65ed2b7d413c47894"
# CSV column -> (atlas column, kind); kind: text (required), number (required), optional (number or empty)
TAF_COLUMNS: dict[str, tuple[str, str]] = {
    "model": ("model_id", "text"),
    "corpus": ("corpus", "text"),
    "theta": ("rope_theta", "optional"),
    "gamma": ("gamma", "number"),
    "R2": ("r2", "number"),
    "ci_lo": ("gamma_ci_low", "optional"),
    "ci_hi": ("gamma_ci_high", "optional"),
    "dR2_pow_exp": ("delta_r2_pow_exp", "optional"),
    "source": ("source", "text"),
}


class ImportFileError(GammalensError):
    """An import file has a missing column or a malformed cell (the message names line and column)."""


def _cell(kind: str, text: str, file: Path, line: int, column: str) -> Any:
    text = text.strip()
    if kind == "text":
        if not text:
            raise ImportFileError(f"{file} line {line}, column '{column}': empty")
        return text
    if text == "" and kind == "optional":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ImportFileError(f"{file} line {line}, column '{column}': {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ImportFileError(f"{file} line {line}, column '{column}': {text!r} is not a finite number")
    return value


def read_taf(file: Path | str | None = None) -> list[dict[str, Any]]:
    """Parse and check the published atlas CSV (default: the shipped copy); return ``reference_fits`` rows.

    Raises
    ------
    ImportFileError
        A column is missing, a row has the wrong number of cells, or a cell is malformed.
    """
    file = Path(file) if file is not None else TAF_FILE
    try:
        raw = file.read_bytes()
        text = raw.decode("utf-8-sig")
    except OSError as err:
        raise ImportFileError(f"cannot read {file}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ImportFileError(f"{file} is not UTF-8 text; expected the published atlas CSV") from None
    file_sha = hashlib.sha256(raw).hexdigest()
    parser, table = csv.reader(text.splitlines()), []
    try:
        table.extend(parser)
    except csv.Error as err:  # e.g. a field over the csv module's limit
        raise ImportFileError(f"{file} line {parser.line_num}: not a readable CSV row ({err})") from None
    reader = iter(table)
    header = [h.strip() for h in next(reader, [])]
    for column in TAF_COLUMNS:
        if column not in header:
            raise ImportFileError(f"{file} line 1: column '{column}' is missing (expected "
                                  f"{','.join(TAF_COLUMNS)})")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = []
    for line, cells in enumerate(reader, start=2):
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise ImportFileError(f"{file} line {line}: {len(cells)} cells, the header has {len(header)}")
        by_column = dict(zip(header, cells, strict=True))
        row: dict[str, Any] = {}
        for column, (target, kind) in TAF_COLUMNS.items():
            row[target] = _cell(kind, by_column[column], file, line, column)
        if row["rope_theta"] is not None and row["rope_theta"] <= 0:
            raise ImportFileError(f"{file} line {line}, column 'theta': {row['rope_theta']} is not > 0")
        identity = "|".join([TAF_DATASET] + [by_column[c].strip() for c in TAF_COLUMNS])
        row.update(ref_id=hashlib.sha256(identity.encode()).hexdigest()[:16], dataset=TAF_DATASET,
                   family=family_of(row["model_id"]), provenance=TAF_PROVENANCE, file_name=file.name,
                   file_sha256=file_sha, line=line, imported_at=now)
        rows.append(row)
    if not rows:
        raise ImportFileError(f"{file} has a header but no data rows")
    return rows


def import_taf(file: Path | str | None = None, atlas: Path | str | None = None) -> int:
    """Import the published γ atlas into the atlas as reference rows, in one transaction.

    Re-importing the same rows adds nothing (a row's id is a hash of its cells).

    Parameters
    ----------
    file : Path, optional
        The published atlas CSV (``taf_gamma_atlas.csv``); default: the copy shipped in the package.
    atlas : Path, optional
        Atlas file; default ``$GAMMALENS_ATLAS`` or the user data directory.

    Returns
    -------
    int
        Number of reference rows newly added.
    """
    rows = read_taf(file)
    with connect(atlas) as con, transaction(con):
        before = scalar(con, "SELECT count(*) FROM reference_fits")
        insert_rows(con, "reference_fits", rows, skip_existing=True)
        after = scalar(con, "SELECT count(*) FROM reference_fits")
    return int(after - before)
