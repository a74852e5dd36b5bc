"""The atlas file: where it lives, opening it safely, transactions and bulk inserts.

The atlas is one DuckDB file. DuckDB lets one process at a time open a file for writing (and readers
only while no process writes), so every open retries with backoff while another gammalens process
holds the file, and gives up after ``GAMMALENS_ATLAS_BUSY_TIMEOUT`` seconds (default 30) with
:class:`AtlasBusyError`. Every write happens inside one transaction: a crash or kill before ``COMMIT``
leaves the file as it was. A file that is not a gammalens atlas is reported and never written to.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from gammalens.atlas.schema import ATLAS_FORMAT, SCHEMA_VERSION, TABLES, create_schema, migrate
from gammalens.errors import GammalensError

ATLAS_ENV = "GAMMALENS_ATLAS"
BUSY_TIMEOUT_ENV = "GAMMALENS_ATLAS_BUSY_TIMEOUT"
DEFAULT_BUSY_TIMEOUT_S = 30.0
_DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of every DuckDB database file

log = logging.getLogger("gammalens.atlas")


class AtlasError(GammalensError):
    """The atlas file is missing, foreign, corrupt or too new."""


class AtlasBusyError(AtlasError):
    """Another process held the atlas for longer than the busy timeout."""


def default_atlas_path() -> Path:
    """``$GAMMALENS_ATLAS``, else ``$XDG_DATA_HOME/gammalens/atlas.duckdb`` (``~/.local/share`` by default)."""
    if os.environ.get(ATLAS_ENV):
        return Path(os.environ[ATLAS_ENV]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "gammalens" / "atlas.duckdb"


def resolve_atlas_path(atlas: Path | str | None) -> Path:
    """The atlas path to use: ``atlas`` when given, else :func:`default_atlas_path`."""
    return default_atlas_path() if atlas is None else Path(atlas).expanduser()


def _busy_timeout() -> float:
    try:
        return float(os.environ.get(BUSY_TIMEOUT_ENV, DEFAULT_BUSY_TIMEOUT_S))
    except ValueError:
        raise AtlasError(f"{BUSY_TIMEOUT_ENV}={os.environ[BUSY_TIMEOUT_ENV]!r} is not a number of seconds") from None


def _check_file(path: Path) -> None:
    """Refuse, before DuckDB touches it, a file at the atlas path that is not a DuckDB database."""
    if path.is_dir():
        raise AtlasError(f"atlas path {path} is a directory; pass a file path with --atlas or {ATLAS_ENV}")
    if not path.exists():
        return
    with path.open("rb") as fh:
        head = fh.read(12)
    if head[8:12] != _DUCKDB_MAGIC:
        raise AtlasError(f"{path} is not a gammalens atlas (not a DuckDB database); it was left untouched — "
                         f"choose another path with --atlas or {ATLAS_ENV}")


def _open(path: Path, read_only: bool) -> Any:
    """``duckdb.connect`` with retries while another process holds the file's lock."""
    import duckdb

    timeout = _busy_timeout()
    start, delay, warned = time.monotonic(), 0.05, False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as err:
            message = str(err)
            if "lock" not in message.lower():
                raise _open_error(path, err) from None
            waited = time.monotonic() - start
            if waited >= timeout:
                raise AtlasBusyError(f"atlas {path} is busy (another gammalens process is using it); "
                                     "try again in a moment") from None
            if waited > 1.0 and not warned:
                log.warning("atlas %s is busy; retrying for up to %.0f s", path, timeout)
                warned = True
            time.sleep(min(delay * (1.0 + random.random()), max(timeout - waited, 0.01)))
            delay = min(delay * 2.0, 1.0)
        except duckdb.Error as err:
            raise _open_error(path, err) from None


def _open_error(path: Path, err: Exception) -> AtlasError:
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    damaged = ("not a valid duckdb", "corrupt", "serializ", "checksum", "invalid")
    if any(word in message.lower() for word in damaged):
        return AtlasError(f"{path} is not a gammalens atlas or is damaged ({message}); it was left untouched")
    return AtlasError(f"cannot open the atlas {path}: {message}")


def _schema_version(con: Any, path: Path) -> int | None:
    """The atlas schema version; ``None`` for an empty database; raises for a foreign one."""
    tables = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
    if not tables:
        return None
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
    if meta.get("format") != ATLAS_FORMAT:
        raise AtlasError(f"{path} is a DuckDB database but not a gammalens atlas; it was left untouched — "
                         f"choose another path with --atlas or {ATLAS_ENV}")
    try:
        return int(meta["schema_version"])
    except (KeyError, ValueError):
        raise AtlasError(f"{path}: the atlas has no valid schema_version; it may be damaged") from None


@contextmanager
def connect(atlas: Path | str | None = None, *, read_only: bool = False) -> Iterator[Any]:
    """Open the atlas (creating or upgrading it when writable) and close it afterwards.

    Parameters
    ----------
    atlas : Path, optional
        Atlas file; default :func:`default_atlas_path`.
    read_only : bool
        Open for reading only. A missing atlas is then an error rather than created.

    Yields
    ------
    duckdb.DuckDBPyConnection
    """
    path = resolve_atlas_path(atlas)
    _check_file(path)
    if read_only and not path.exists():
        raise AtlasError(f"no atlas at {path} yet: record a run with `gammalens measure` or import one with "
                         "`gammalens atlas import` / `gammalens atlas import-taf`")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = _open(path, read_only)
    try:
        version = _schema_version(con, path)
        if version is not None and version > SCHEMA_VERSION:
            raise AtlasError(f"{path} has atlas schema v{version}, newer than this gammalens reads "
                             f"(v{SCHEMA_VERSION}); upgrade gammalens")
        if version != SCHEMA_VERSION and read_only:
            con.close()
            with connect(path):  # create or migrate, then reopen for reading
                pass
            con = _open(path, True)
        elif version is None:
            with transaction(con):
                create_schema(con)
        elif version < SCHEMA_VERSION:
            with transaction(con):
                migrate(con, version)
        yield con
    finally:
        con.close()


@contextmanager
def transaction(con: Any) -> Iterator[Any]:
    """``BEGIN`` … ``COMMIT``; ``ROLLBACK`` on any exception (Ctrl-C included)."""
    import duckdb

    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        with suppress(duckdb.Error):  # a connection already broken (e.g. by a full disk) has nothing to undo
            con.execute("ROLLBACK")
        raise
    try:
        con.execute("COMMIT")
    except duckdb.Error as err:  # e.g. the disk filled up while writing the change
        with suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise AtlasError(f"the atlas change could not be committed ({str(err).splitlines()[0]}); nothing was "
                         "changed — free some space or choose another atlas with --atlas") from None


def scalar(con: Any, sql: str, params: Sequence[Any] | None = None) -> Any:
    """The first cell of a query's result, ``None`` when it has no rows (the result is fully consumed)."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None


def insert_rows(con: Any, table: str, rows: Sequence[dict[str, Any]], *, skip_existing: bool = False) -> int:
    """Insert ``rows`` (dicts keyed by column; missing keys are NULL) into ``table`` in one statement.

    Returns the number of rows given. With ``skip_existing``, rows whose primary key is present are skipped.
    """
    if not rows:
        return 0
    import pandas as pd

    columns = TABLES[table]
    frame = pd.DataFrame({c: [row.get(c) for row in rows] for c in columns}, dtype=object)
    casts = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in columns.items())
    names = ", ".join(f'"{c}"' for c in columns)
    conflict = " ON CONFLICT DO NOTHING" if skip_existing else ""
    con.register("_incoming", frame)
    try:
        con.execute(f'INSERT INTO "{table}" ({names}) SELECT {casts} FROM _incoming{conflict}')
    finally:
        con.unregister("_incoming")
    return len(rows)
