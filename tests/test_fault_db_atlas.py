"""Any database failure is an atlas failure (issue 25, fault class A).

Whatever DuckDB raises on open, read, write or commit (``duckdb.Error`` and every subclass) and whatever the file
system raises (``OSError``) comes out of the atlas as one :class:`~gammalens.atlas.store.AtlasError` — one line that
names the atlas file and the failure; the CLI prints it as ``gammalens: error: …`` and exits 2 — and a failed
recording leaves no row of its run behind. The cases: a truncated atlas (a real one with a recorded run, cut to half
its size), a file of random bytes (with and without DuckDB's magic), a directory where the file should be, a
read-only file, a parent folder that is a file, a failed query inside ``connect``, and failures injected in the
middle of recording a run.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import duckdb
import pytest

import gammalens.atlas.record as record
from gammalens.atlas import AtlasError, connect, list_entries, record_run
from gammalens.atlas.store import atlas_errors, atlas_failure, scalar, transaction
from gammalens.errors import GammalensError
from tests.run_fixtures import write_run
from tests.test_cli import run_cli

pytestmark = pytest.mark.usefixtures("isolated_atlas")
RUN_TABLES = ("runs", "fits", "fit_extras", "profiles")


def assert_atlas_error(err: BaseException, atlas: Path, *needles: str) -> None:
    assert isinstance(err, AtlasError) and isinstance(err, GammalensError), type(err)
    message = str(err)
    assert "\n" not in message and message.strip() == message, message
    assert str(atlas) in message, message
    for needle in needles:
        assert needle.lower() in message.lower(), (needle, message)


def assert_cli_one_line(code: int, err: str, atlas: Path) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gammalens: error:"), (code, err)
    assert "Traceback" not in err and str(atlas) in lines[0], lines[0]


def rows_of(atlas: Path, run_id: str) -> dict[str, int]:
    with connect(atlas, read_only=True) as con:
        return {t: scalar(con, f"SELECT count(*) FROM {t} WHERE run_id = ?", [run_id]) for t in RUN_TABLES}


def counts(atlas: Path) -> dict[str, int]:
    with connect(atlas, read_only=True) as con:
        return {t: scalar(con, f"SELECT count(*) FROM {t}") for t in ("models", *RUN_TABLES)}


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, Path]:
    """A real atlas with one recorded run: (atlas, run directory)."""
    atlas, run = tmp_path / "atlas.duckdb", write_run(tmp_path / "runs")
    assert record_run(run, atlas) == run.name
    return atlas, run


@pytest.fixture
def truncated(recorded: tuple[Path, Path]) -> Path:
    atlas, _ = recorded
    data = atlas.read_bytes()
    atlas.write_bytes(data[: len(data) // 2])
    return atlas


# --- a truncated atlas ----------------------------------------------------------------------------------------

def test_a_truncated_atlas_is_one_atlas_error_on_read(truncated: Path) -> None:
    with pytest.raises(AtlasError) as err:
        list_entries(atlas=truncated)
    assert_atlas_error(err.value, truncated, "damaged")


def test_a_truncated_atlas_is_one_atlas_error_on_record(truncated: Path, tmp_path: Path) -> None:
    other = write_run(tmp_path / "more", model_id="fixture/other")
    with pytest.raises(AtlasError) as err:
        record_run(other, truncated)
    assert_atlas_error(err.value, truncated)
    assert "TransactionContext" not in str(err.value)  # the failure itself, not the aborted transaction after it


@pytest.mark.parametrize("command", ["list", "record", "show", "export"])
def test_a_truncated_atlas_through_the_cli(truncated: Path, tmp_path: Path, capsys, command: str) -> None:
    argv = {"list": ["atlas", "list"], "show": ["atlas", "show", "fixture/tiny-rope"],
            "record": ["atlas", "record", str(write_run(tmp_path / "more", model_id="fixture/other"))],
            "export": ["atlas", "export", str(tmp_path / "exported")]}[command]
    code, _, err = run_cli([*argv, "--atlas", str(truncated)], capsys)
    assert_cli_one_line(code, err, truncated)
    assert not (tmp_path / "exported").exists()


def test_measure_with_a_truncated_atlas_keeps_the_run_and_warns(truncated: Path, tmp_path: Path, capsys) -> None:
    """The run is written, the atlas failure is the one-line warning about recording: exit 0, not a crash."""
    out = tmp_path / "measured"
    code, stdout, err = run_cli(["measure", "gammalens-tiny", "--context", "32", "--windows", "2", "--bootstrap", "0",
                                 "--no-report", "--out", str(out), "--atlas", str(truncated), "--quiet"], capsys)
    assert code == 0, err
    run_dir = Path(stdout.strip())
    assert run_dir.is_dir() and (run_dir / "profile.npz").is_file()
    warnings = [ln for ln in err.splitlines() if ln.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("gammalens: warning:"), err
    assert "not recorded in the atlas" in warnings[0] and str(truncated) in warnings[0]


# --- files that are not an atlas ----------------------------------------------------------------------------------

@pytest.mark.parametrize("content", ["random", "magic-then-random", "magic-then-zeros"])
def test_a_file_of_random_bytes(tmp_path: Path, content: str) -> None:
    atlas = tmp_path / "noise.duckdb"
    data = {"random": os.urandom(1 << 16), "magic-then-random": os.urandom(8) + b"DUCK" + os.urandom(1 << 16),
            "magic-then-zeros": bytes(8) + b"DUCK" + bytes(1 << 16)}[content]
    atlas.write_bytes(data)
    for action in (lambda: list_entries(atlas=atlas), lambda: record_run(write_run(tmp_path / "runs"), atlas)):
        with pytest.raises(AtlasError) as err:
            action()
        assert_atlas_error(err.value, atlas, "not a gammalens atlas")
    assert atlas.read_bytes() == data  # reported, never written to


def test_a_directory_where_the_file_should_be(tmp_path: Path, capsys) -> None:
    atlas = tmp_path / "atlas.duckdb"
    atlas.mkdir()
    for action in (lambda: list_entries(atlas=atlas), lambda: record_run(write_run(tmp_path / "runs"), atlas)):
        with pytest.raises(AtlasError) as err:
            action()
        assert_atlas_error(err.value, atlas, "directory")
    code, _, err = run_cli(["atlas", "list", "--atlas", str(atlas)], capsys)
    assert_cli_one_line(code, err, atlas)


def test_a_file_where_the_atlas_folder_should_be(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file, not a folder")
    atlas = tmp_path / "data" / "atlas.duckdb"
    with pytest.raises(AtlasError) as err:
        record_run(write_run(tmp_path / "runs"), atlas)
    assert_atlas_error(err.value, atlas)


def test_a_read_only_atlas(recorded: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    atlas, _ = recorded
    atlas.chmod(0o444)
    try:
        if os.access(atlas, os.W_OK):
            pytest.skip("running as root: chmod does not make the file read-only")
        before = atlas.read_bytes()
        assert len(list_entries(atlas=atlas)) == 1  # reading still works
        with pytest.raises(AtlasError) as err:
            record_run(write_run(tmp_path / "more", model_id="fixture/other"), atlas)
        assert_atlas_error(err.value, atlas)
        code, _, err_text = run_cli(["atlas", "import-taf", "--atlas", str(atlas)], capsys)
        assert_cli_one_line(code, err_text, atlas)
        assert atlas.read_bytes() == before
    finally:
        atlas.chmod(0o644)


def test_an_unreadable_atlas(recorded: tuple[Path, Path]) -> None:
    atlas, _ = recorded
    atlas.chmod(0o000)
    try:
        if os.access(atlas, os.R_OK):
            pytest.skip("running as root: chmod does not make the file unreadable")
        with pytest.raises(AtlasError) as err:
            list_entries(atlas=atlas)
        assert_atlas_error(err.value, atlas)
    finally:
        atlas.chmod(0o644)


# --- failures inside connect(): reads and writes of the callers ---------------------------------------------------

def test_a_failed_query_inside_connect_names_the_atlas(recorded: tuple[Path, Path]) -> None:
    atlas, _ = recorded
    with pytest.raises(AtlasError) as err, connect(atlas, read_only=True) as con:
        con.execute("SELECT * FROM no_such_table")
    assert_atlas_error(err.value, atlas, "no_such_table")


def test_other_errors_pass_through_connect_unchanged(recorded: tuple[Path, Path]) -> None:
    atlas, _ = recorded
    with pytest.raises(ZeroDivisionError), connect(atlas, read_only=True):
        _ = 1 / 0
    with pytest.raises(GammalensError, match=r"^mine$"), connect(atlas, read_only=True):
        raise GammalensError("mine")


ERRORS = {
    "IOException": lambda: duckdb.IOException("IO Error: Could not write file: No space left on device"),
    "CatalogException": lambda: duckdb.CatalogException("Catalog Error: Table with name fits does not exist!"),
    "InvalidInputException": lambda: duckdb.InvalidInputException("Invalid Input Error: injected"),
    "SerializationException": lambda: duckdb.SerializationException("Serialization Error: injected"),
    "ConstraintException": lambda: duckdb.ConstraintException("Constraint Error: injected"),
    "InternalException": lambda: duckdb.InternalException("INTERNAL Error: injected"),
    "duckdb.Error": lambda: duckdb.Error("injected"),
    "OSError": lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
}


@pytest.mark.parametrize("error", list(ERRORS))
@pytest.mark.parametrize("after", ["models", "runs", "fits", "fit_extras"])
def test_a_failure_mid_insert_leaves_no_row_of_the_run(recorded: tuple[Path, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, error: str,
                                                       after: str) -> None:
    """The insert of the next table after ``after`` fails: the transaction is rolled back, nothing is kept."""
    atlas, _ = recorded
    before = counts(atlas)
    other = write_run(tmp_path / "more", model_id="fixture/other", n_layers=3)
    real, written = record.insert_rows, []

    def failing(con, table, rows, **kwargs):
        if written and written[-1] == after:
            raise ERRORS[error]()
        written.append(table)
        return real(con, table, rows, **kwargs)

    monkeypatch.setattr(record, "insert_rows", failing)
    with pytest.raises(AtlasError) as err:
        record_run(other, atlas)
    assert_atlas_error(err.value, atlas)
    assert written[-1] == after  # the tables up to `after` were written inside the transaction
    monkeypatch.undo()
    assert rows_of(atlas, other.name) == dict.fromkeys(RUN_TABLES, 0)
    assert counts(atlas) == before  # the new model's row went too
    assert record_run(other, atlas) == other.name  # and the atlas still works
    assert rows_of(atlas, other.name)["runs"] == 1


def test_a_failed_delete_of_a_changed_run_keeps_the_old_rows(recorded: tuple[Path, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-recording a changed run deletes its old rows first; a failure after that brings them back."""
    atlas, run = recorded
    before = rows_of(atlas, run.name)
    (run / "fits.csv").write_text((run / "fits.csv").read_text().replace(",wls-loglog,", ",wls-loglog-v2,"))

    def failing(con, table, rows, **kwargs):
        raise duckdb.IOException("IO Error: injected after the deletes")

    monkeypatch.setattr(record, "insert_rows", failing)
    with pytest.raises(AtlasError) as err:
        record_run(run, atlas)
    assert_atlas_error(err.value, atlas, "injected")
    assert rows_of(atlas, run.name) == before


def test_a_failed_commit_names_the_atlas(recorded: tuple[Path, Path]) -> None:
    atlas, _ = recorded

    class Failing:  # a connection whose COMMIT fails, as on a full disk
        def __init__(self, con) -> None:
            self.con, self.sql = con, []

        def execute(self, sql: str, *args):
            self.sql.append(sql)
            if sql == "COMMIT":
                raise duckdb.IOException("IO Error: No space left on device")
            return self.con.execute(sql, *args)

    import gammalens.atlas.store as store

    with connect(atlas) as con:
        failing = Failing(con)
        store._OPEN[id(failing)] = atlas
        try:
            with pytest.raises(AtlasError) as err, transaction(failing):
                failing.execute("DELETE FROM fits")
        finally:
            store._OPEN.pop(id(failing))
        assert failing.sql[-2:] == ["COMMIT", "ROLLBACK"]
    assert_atlas_error(err.value, atlas, "could not be committed", "No space left")
    assert counts(atlas)["fits"] > 0


def test_the_one_translation() -> None:
    atlas = Path("/data/atlas.duckdb")
    for make in ERRORS.values():
        err = atlas_failure(atlas, make())
        assert isinstance(err, AtlasError) and str(atlas) in str(err) and "\n" not in str(err)
    with pytest.raises(AtlasError, match=r"atlas\.duckdb failed .*multi"), atlas_errors(atlas):
        raise duckdb.IOException("IO Error: multi\nline\nmessage")
    with pytest.raises(KeyboardInterrupt), atlas_errors(atlas):
        raise KeyboardInterrupt


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 64 KiB tmpfs (a real full disk); skipped where this machine does not allow mounting one."""
    import shutil
    import subprocess

    mnt = tmp_path / "full"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_database_write_to_a_full_disk_names_the_atlas_and_the_file(tmp_path: Path, full_disk: Path,
                                                                      capsys) -> None:
    """DuckDB itself fails to write (COPY … TO Parquet in `atlas export`): the error names both files."""
    atlas = tmp_path / "atlas.duckdb"
    record_run(write_run(tmp_path / "runs", n_layers=12, n_heads=16, context=512), atlas)
    code, _, err = run_cli(["atlas", "export", str(full_disk / "shared"), "--atlas", str(atlas)], capsys)
    assert_cli_one_line(code, err, atlas)
    assert "No space left" in err and str(full_disk) in err
    assert list(full_disk.iterdir()) == []
