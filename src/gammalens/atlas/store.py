"""The atlas file: where it lives, opening it safely, transactions and bulk inserts.

The atlas is one DuckDB file. DuckDB lets one process at a time open a file for writing (and readers
only while no process writes), so every open retries with backoff while another gammalens process
holds the file, and gives up after ``GAMMALENS_ATLAS_BUSY_TIMEOUT`` seconds (default 30) with
:class:`AtlasBusyError`. Every write happens inside one transaction: a crash or kill before ``COMMIT``
leaves the file as it was. A file that is not a gammalens atlas is reported and never written to.

Every failure of the database or of its file — whatever DuckDB raises on open, read, write or commit
(``duckdb.Error`` and its subclasses: ``IOException``, ``CatalogException``, ``InvalidInputException``,
``SerializationException`` …) and every ``OSError`` of the file system — is handled one way: it passes through
:func:`atlas_errors` and comes out as one :class:`AtlasError` that names the atlas file and the failure (the CLI
prints it on one line and exits with code 2). :func:`connect` wraps opening the atlas *and* the body of its
``with`` block in it, so the modules that query the atlas (``compare``, ``exchange``, ``taf``, ``record``, the
report's map) need no handling of their own; :func:`transaction` rolls back before the error leaves it, so a
failed change leaves no half-inserted rows.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import platformdirs

from gammalens.atlas.schema import ATLAS_FORMAT, SCHEMA_VERSION, TABLES, create_schema, migrate
from gammalens.errors import GammalensError, first_line

ATLAS_ENV = "GAMMALENS_ATLAS"
BUSY_TIMEOUT_ENV = "GAMMALENS_ATLAS_BUSY_TIMEOUT"
DEFAULT_BUSY_TIMEOUT_S = 30.0
_DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of every DuckDB database file
# words of DuckDB's messages for a file that is damaged or no database at all (rather than unwritable or full)
_DAMAGED = ("not a valid duckdb", "corrupt", "serializ", "checksum", "could not read enough bytes", "truncat",
            "unexpected end")
_OPEN: dict[int, Path] = {}  # id(connection) → its atlas file while connect() holds it open: what errors name

log = logging.getLogger("gammalens.atlas")


class AtlasError(GammalensError):
    """The atlas file is missing, foreign, corrupt or too new."""


class AtlasBusyError(AtlasError):
    """Another process held the atlas for longer than the busy timeout."""


def default_atlas_path() -> Path:
    """``$GAMMALENS_ATLAS``, else ``atlas.duckdb`` in the platform's user data folder for gammalens
    (``platformdirs``: ``$XDG_DATA_HOME/gammalens`` or ``~/.local/share/gammalens`` on Linux, ``~/Library/Application
    Support/gammalens`` on macOS, ``%LOCALAPPDATA%\\gammalens`` on Windows)."""
    if os.environ.get(ATLAS_ENV):
        return Path(os.environ[ATLAS_ENV]).expanduser()
    return Path(platformdirs.user_data_dir("gammalens", appauthor=False)) / "atlas.duckdb"


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
                raise atlas_failure(path, err, "open") from None
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
            raise atlas_failure(path, err, "open") from None


def atlas_failure(path: Path | None, err: BaseException, doing: str = "use") -> AtlasError:
    """The one :class:`AtlasError` for a failure of DuckDB or of the file system on the atlas ``path``.

    ``doing`` says what failed: ``'open'``, ``'commit'`` or ``'use'`` (a read or write inside ``connect``).
    The message is one line and names the file and the failure.

    >>> import duckdb
    >>> err = duckdb.IOException("IO Error: No space left on device")
    >>> str(atlas_failure(Path("a.duckdb"), err, "commit")).split(";")[0]
    'the change to the atlas a.duckdb could not be committed (IO Error: No space left on device)'
    """
    if isinstance(err, OSError):
        what = err.strerror or first_line(err)
        if err.filename is not None and Path(str(err.filename)) != path:
            what += f": {err.filename}"
    else:
        what = _duckdb_text(err)
    where = f"the atlas {path}" if path is not None else "the atlas"
    other = _other_file(what, path)
    if other is not None and doing == "use":  # e.g. COPY … TO a Parquet file on a full disk (atlas export)
        return AtlasError(f"{where} could not write or read {other} ({what}); the atlas was not changed — free some "
                          "space or choose another place")
    damaged = _DAMAGED + (("invalid",) if doing == "open" else ())  # on open, "invalid" means no valid database
    if any(word in what.lower() for word in damaged):
        return AtlasError(f"{where} is not a gammalens atlas or is damaged ({what}); it was left untouched — "
                          f"restore it from a backup or an export, or choose another path with --atlas or {ATLAS_ENV}")
    if doing == "commit":
        return AtlasError(f"the change to {where} could not be committed ({what}); nothing was changed — free some "
                          "space or choose another atlas with --atlas")
    if doing == "open":
        return AtlasError(f"cannot open {where} ({what}); check the file and its permissions, or choose another "
                          f"path with --atlas or {ATLAS_ENV}")
    return AtlasError(f"{where} failed ({what}); nothing was changed — check the file, its permissions and free disk "
                      "space, or choose another atlas with --atlas")


def _duckdb_text(err: BaseException) -> str:
    """DuckDB's message on one line; the inner message of an error that wraps another as JSON."""
    text = str(err)
    inner = re.search(r'"exception_message":\s*"((?:[^"\\]|\\.)*)"', text)
    if inner:
        with suppress(ValueError):
            text = f"{text.split(':', 1)[0]}: {json.loads(chr(34) + inner.group(1) + chr(34))}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(err).__name__


def _other_file(message: str, atlas: Path | None) -> str | None:
    """A file DuckDB's message names that is not the atlas (nor its write-ahead log): what failed, then."""
    mine = () if atlas is None else (str(atlas), str(atlas.resolve()))
    for name in re.findall(r'"(/[^"]+)"', message):
        if not name.startswith(mine):
            return name
    return None


@contextmanager
def atlas_errors(path: Path | None, doing: str = "use") -> Iterator[None]:
    """Turn whatever DuckDB (``duckdb.Error`` and subclasses) or the file system (``OSError``) raises inside the
    block into :func:`atlas_failure`'s :class:`AtlasError`; every other exception (an ``AtlasError`` already, a
    :class:`~gammalens.errors.GammalensError`, Ctrl-C) passes unchanged."""
    import duckdb

    try:
        yield
    except (duckdb.Error, OSError) as err:
        raise atlas_failure(path, err, doing) from err


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

    Raises
    ------
    AtlasError
        The file is not an atlas, is damaged, too new, busy (:class:`AtlasBusyError`) or cannot be opened; or a
        read or write inside the ``with`` block failed (:func:`atlas_errors`): one line naming the file.
    """
    import duckdb

    path = resolve_atlas_path(atlas)
    with atlas_errors(path, "open"):
        _check_file(path)
        if read_only and not path.exists():
            raise AtlasError(f"no atlas at {path} yet: record a run with `gammalens measure` or import one with "
                             "`gammalens atlas import` / `gammalens atlas import-taf`")
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        con = _open(path, read_only)
    try:
        with atlas_errors(path, "open"):
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
        _OPEN[id(con)] = path
        with atlas_errors(path):  # the caller's reads and writes
            yield con
    finally:
        _OPEN.pop(id(con), None)
        with suppress(duckdb.Error):  # a connection broken by a damaged file has nothing left to close
            con.close()


@contextmanager
def transaction(con: Any) -> Iterator[Any]:
    """``BEGIN`` … ``COMMIT``; ``ROLLBACK`` on any exception (Ctrl-C included), then the exception goes on.

    A failed ``COMMIT`` (e.g. the disk filled up while writing the change) is rolled back and raised as
    :func:`atlas_failure`'s :class:`AtlasError` naming the atlas file.
    """
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
    except (duckdb.Error, OSError) as err:
        with suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise atlas_failure(_OPEN.get(id(con)), err, "commit") from err


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
    import duckdb

    con.register("_incoming", frame)
    try:
        con.execute(f'INSERT INTO "{table}" ({names}) SELECT {casts} FROM _incoming{conflict}')
    except BaseException:
        with suppress(duckdb.Error):  # an aborted transaction refuses this too; the insert's error is the one
            con.unregister("_incoming")
        raise
    con.unregister("_incoming")
    return len(rows)
