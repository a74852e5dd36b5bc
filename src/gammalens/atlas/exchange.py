"""Sharing an atlas: export to Parquet files plus a dataset card, and import (merge) such an export.

An export directory holds ``README.md`` (the dataset card), ``atlas.json`` (format, schema version,
row counts) and ``data/<table>.parquet`` for every data table. It is written into a hidden sibling and
renamed into place, so it exists whole or not at all. Import merges in one transaction: runs already in
the atlas are kept as they are (with all their rows), models and reference rows already present are
skipped.

>>> export_atlas("shared-atlas")          # doctest: +SKIP
>>> import_atlas("shared-atlas", atlas="team.duckdb")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from gammalens.atlas.card import dataset_card
from gammalens.atlas.schema import ADDED_COLUMNS, DATA_TABLES, OLDEST_IMPORTABLE, PRIMARY_KEYS, SCHEMA_VERSION, TABLES
from gammalens.atlas.store import AtlasError, connect, scalar, transaction
from gammalens.atlas.taf import ImportFileError
from gammalens.version import __version__

EXPORT_FORMAT = "gammalens.atlas-export"
_RUN_TABLES = ("runs", "fits", "fit_extras", "profiles")  # rows that belong to a run, merged run by run


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _is_export(path: Path) -> bool:
    try:
        return json.loads((path / "atlas.json").read_text())["format"] == EXPORT_FORMAT
    except (OSError, ValueError, KeyError, TypeError):
        return False


def export_atlas(target: Path | str, atlas: Path | str | None = None, *, force: bool = False) -> dict[str, int]:
    """Write the atlas as Parquet files and a dataset card into the directory ``target``.

    Parameters
    ----------
    target : Path
        Export directory; must not exist unless ``force`` (then it must be an earlier export or empty).
    atlas : Path, optional
        Atlas file; default ``$GAMMALENS_ATLAS`` or the user data directory.
    force : bool
        Replace an existing export at ``target``.

    Returns
    -------
    dict
        Rows written per table.
    """

    target = Path(target)
    if target.exists() or target.is_symlink():
        if not force:
            raise AtlasError(f"export target {target} exists; pass --force to replace it")
        if not target.is_dir() or not (_is_export(target) or not any(target.iterdir())):
            raise AtlasError(f"{target} exists and is not a gammalens atlas export; refusing to replace it "
                             "even with --force — choose another directory")
    partial = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    counts: dict[str, int] = {}
    try:
        (partial / "data").mkdir(parents=True)
        with connect(atlas, read_only=True) as con:
            for table in DATA_TABLES:
                order = ", ".join(f'"{c}"' for c in PRIMARY_KEYS[table])
                file = _sql_path(partial / "data" / f"{table}.parquet")
                con.execute(f"COPY (SELECT * FROM \"{table}\" ORDER BY {order}) TO '{file}' "
                            "(FORMAT PARQUET, COMPRESSION ZSTD)")
                counts[table] = int(scalar(con, f'SELECT count(*) FROM "{table}"'))
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        info = {"format": EXPORT_FORMAT, "schema_version": SCHEMA_VERSION, "exported_at": stamp,
                "gammalens": __version__, "rows": counts}
        (partial / "atlas.json").write_text(json.dumps(info, indent=2) + "\n")
        (partial / "README.md").write_text(dataset_card(counts, stamp, __version__), encoding="utf-8")
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            target.rename(old)
            partial.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            partial.rename(target)
    except OSError as err:  # disk full, no permission, a missing parent folder
        raise AtlasError(f"cannot write the export {target} ({err.strerror or err}); nothing was written") from None
    except Exception as err:
        import duckdb

        if isinstance(err, duckdb.Error):  # e.g. the Parquet writer on a full disk
            raise AtlasError(f"cannot write the export {target} ({str(err).splitlines()[0]}); nothing was "
                             "written") from None
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return counts


def _check_export(source: Path) -> None:
    if not source.is_dir():
        raise ImportFileError(f"{source} is not a directory; pass a directory written by `gammalens atlas export`")
    try:
        info = json.loads((source / "atlas.json").read_text())
    except (OSError, ValueError):
        raise ImportFileError(f"{source} is not a gammalens atlas export (no readable atlas.json)") from None
    if not isinstance(info, dict) or info.get("format") != EXPORT_FORMAT:
        raise ImportFileError(f"{source / 'atlas.json'}: format is not {EXPORT_FORMAT!r}")
    if info.get("schema_version") not in range(OLDEST_IMPORTABLE, SCHEMA_VERSION + 1):
        raise ImportFileError(f"{source} holds atlas schema v{info.get('schema_version')}; this gammalens "
                              f"imports v{OLDEST_IMPORTABLE}–v{SCHEMA_VERSION} — export it again with a matching gammalens")
    for table in DATA_TABLES:
        if not (source / "data" / f"{table}.parquet").is_file():
            raise ImportFileError(f"{source}: data/{table}.parquet is missing")


def import_atlas(source: Path | str, atlas: Path | str | None = None) -> dict[str, int]:
    """Merge an export directory into the atlas, in one transaction.

    Parameters
    ----------
    source : Path
        A directory written by :func:`export_atlas`.
    atlas : Path, optional
        Atlas file; default ``$GAMMALENS_ATLAS`` or the user data directory.

    Returns
    -------
    dict
        Rows added per table (0 everywhere when importing the same export twice).
    """
    import duckdb

    source = Path(source)
    _check_export(source)
    added: dict[str, int] = {}
    with connect(atlas) as con:
        files = {t: _sql_path(source / "data" / f"{t}.parquet") for t in DATA_TABLES}
        source_of: dict[tuple[str, str], str] = {}  # (table, column) → SQL expression read from the export
        for table, file in files.items():
            try:
                present = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{file}')").fetchall()}
            except duckdb.Error as err:
                raise ImportFileError(f"{source}/data/{table}.parquet is not readable Parquet "
                                      f"({str(err).splitlines()[0]})") from None
            for column in TABLES[table]:
                if column in present:
                    source_of[table, column] = f'"{column}"'
                elif (table, column) in ADDED_COLUMNS:  # an export of an older schema
                    source_of[table, column] = ADDED_COLUMNS[table, column]
                else:
                    raise ImportFileError(f"{source}/data/{table}.parquet: column '{column}' is missing")
        with transaction(con):
            con.execute("CREATE TEMP TABLE _new_runs AS SELECT DISTINCT run_id FROM read_parquet("
                        f"'{files['runs']}') WHERE run_id NOT IN (SELECT run_id FROM runs)")
            for table in DATA_TABLES:
                before = scalar(con, f'SELECT count(*) FROM "{table}"')
                columns = TABLES[table]
                names = ", ".join(f'"{c}"' for c in columns)
                casts = ", ".join(f'CAST({source_of[table, c]} AS {t})' for c, t in columns.items())
                where = " WHERE run_id IN (SELECT run_id FROM _new_runs)" if table in _RUN_TABLES else ""
                conflict = "" if table in _RUN_TABLES else " ON CONFLICT DO NOTHING"
                try:
                    con.execute(f'INSERT INTO "{table}" ({names}) SELECT {casts} FROM '
                                f"read_parquet('{files[table]}'){where}{conflict}")
                except duckdb.Error as err:
                    raise ImportFileError(f"{source}/data/{table}.parquet: {str(err).splitlines()[0]}") from None
                added[table] = int(scalar(con, f'SELECT count(*) FROM "{table}"') - before)
            con.execute("DROP TABLE _new_runs")
    return added
