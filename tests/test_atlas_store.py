"""The atlas file: recording runs idempotently and atomically, locking, foreign files, schema migration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from gammalens.atlas import AtlasBusyError, AtlasError, connect, default_atlas_path, record_run
from gammalens.atlas.record import _PAUSE_ENV
from gammalens.atlas.schema import SCHEMA_VERSION, create_schema_v0
from gammalens.atlas.store import BUSY_TIMEOUT_ENV, scalar
from gammalens.cli import main
from gammalens.runs.reader import RunFormatError
from tests.run_fixtures import write_run

pytestmark = pytest.mark.usefixtures("isolated_atlas")
RECORD = "import sys; from gammalens.atlas import record_run; print(record_run(sys.argv[1], sys.argv[2]), flush=True)"


def counts(atlas: Path) -> dict[str, int]:
    with connect(atlas, read_only=True) as con:
        return {t: scalar(con, f"SELECT count(*) FROM {t}")
                for t in ("models", "runs", "fits", "fit_extras", "profiles")}


def recorder(run_dir: Path, atlas: Path, pause: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, _PAUSE_ENV: str(pause)}
    return subprocess.Popen([sys.executable, "-c", RECORD, str(run_dir), str(atlas)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_inside(proc: subprocess.Popen) -> None:
    """Block until the recording subprocess reports that it is inside its transaction."""
    line = proc.stdout.readline()
    assert "in transaction" in line, proc.stderr.read()


def test_record_is_idempotent(tmp_path: Path) -> None:
    run = write_run(tmp_path / "runs")
    atlas = tmp_path / "a.duckdb"
    assert record_run(run, atlas) == run.name
    assert record_run(run, atlas) == run.name
    assert counts(atlas) == {"models": 1, "runs": 1, "fits": 2 * 4 + 2 + 1, "fit_extras": 0, "profiles": 2 * 4 * 2}
    with connect(atlas, read_only=True) as con:
        rows = con.execute("SELECT layer, head, gamma FROM head_fits ORDER BY layer, head").fetchall()
        d, a = con.execute("SELECT distance, value FROM profiles WHERE layer = 1 AND head = 2 "
                           "AND kind = 'null_corrected'").fetchall()[0]
    assert rows[5] == (1, 1, pytest.approx(0.95))
    # the stored null-corrected profile is the fixture's exact power law: A(1)/A(2) = 2^γ with γ = 1.2
    assert d[:3] == [0, 1, 2] and a[1] / a[2] == pytest.approx(2**1.2, rel=1e-12)


def test_record_replaces_a_changed_run(tmp_path: Path) -> None:
    run = write_run(tmp_path / "runs")
    atlas = tmp_path / "a.duckdb"
    record_run(run, atlas)
    fits = (run / "fits.csv").read_text().replace(",wls-loglog,", ",wls-loglog-v2,")
    (run / "fits.csv").write_text(fits)
    record_run(run, atlas)
    with connect(atlas, read_only=True) as con:
        assert con.execute("SELECT DISTINCT method FROM fits").fetchall() == [("wls-loglog-v2",)]
    assert counts(atlas)["runs"] == 1 and counts(atlas)["fits"] == 11


def test_cli_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [write_run(tmp_path / "runs", model_id=f"fixture/m{k}") for k in range(2)]
    with pytest.raises(SystemExit) as done:
        main(["atlas", "record", *map(str, runs)])
    assert done.value.code == 0 and capsys.readouterr().out.count("recorded ") == 2
    assert counts(default_atlas_path())["runs"] == 2
    with pytest.raises(SystemExit) as bad:
        main(["atlas", "record", str(tmp_path)])
    assert bad.value.code == 2 and "no manifest.json" in capsys.readouterr().err


def test_default_atlas_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GAMMALENS_ATLAS", str(tmp_path / "x.duckdb"))
    assert default_atlas_path() == tmp_path / "x.duckdb"
    monkeypatch.delenv("GAMMALENS_ATLAS")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_atlas_path() == tmp_path / "data" / "gammalens" / "atlas.duckdb"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_atlas_path() == Path.home() / ".local" / "share" / "gammalens" / "atlas.duckdb"


def test_default_atlas_is_used(tmp_path: Path) -> None:
    record_run(write_run(tmp_path / "runs"))
    assert default_atlas_path().is_file() and counts(default_atlas_path())["runs"] == 1


@pytest.mark.parametrize("content", [b"", b"model,corpus\nx,y\n", b"\x00" * 4096])
def test_foreign_file_is_refused_and_kept(tmp_path: Path, content: bytes) -> None:
    atlas = tmp_path / "notes.duckdb"
    atlas.write_bytes(content)
    with pytest.raises(AtlasError, match="not a gammalens atlas"):
        record_run(write_run(tmp_path / "runs"), atlas)
    assert atlas.read_bytes() == content


def test_foreign_duckdb_database_is_refused_and_kept(tmp_path: Path) -> None:
    atlas = tmp_path / "other.duckdb"
    con = duckdb.connect(str(atlas))
    con.execute("CREATE TABLE sales (x INTEGER)")
    con.close()
    before = atlas.read_bytes()
    with pytest.raises(AtlasError, match="DuckDB database but not a gammalens atlas"):
        record_run(write_run(tmp_path / "runs"), atlas)
    assert atlas.read_bytes() == before


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    atlas = tmp_path / "a.duckdb"
    record_run(write_run(tmp_path / "runs"), atlas)
    con = duckdb.connect(str(atlas))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(AtlasError, match="schema v99, newer"):
        counts(atlas)


def test_migration_from_v0(tmp_path: Path) -> None:
    atlas = tmp_path / "old.duckdb"
    con = duckdb.connect(str(atlas))
    create_schema_v0(con)
    con.execute("INSERT INTO fits (run_id, name, scope, gamma, extras) VALUES ('r1', 'model', 'model', 0.7, ?)",
                [json.dumps({"gamma_pade": 0.81, "note": "x"})])
    con.close()
    with connect(atlas) as con:
        assert scalar(con, "SELECT value FROM meta WHERE key = 'schema_version'") == str(SCHEMA_VERSION)
        assert con.execute("SELECT column_name, value, text FROM fit_extras ORDER BY column_name").fetchall() == [
            ("gamma_pade", 0.81, None), ("note", None, "x")]
        assert con.execute("SELECT name, gamma FROM model_fits").fetchall() == [("model", 0.7)]
        assert scalar(con, "SELECT count(*) FROM profiles") == 0
        columns = {r[0] for r in con.execute("DESCRIBE fits").fetchall()}
    assert "extras" not in columns


def test_bad_run_dir_leaves_no_atlas(tmp_path: Path) -> None:
    atlas = tmp_path / "a.duckdb"
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFormatError, match=r"no manifest\.json"):
        record_run(tmp_path / "empty", atlas)
    assert not atlas.exists()


def test_kill_inside_the_transaction_leaves_the_atlas_as_it_was(tmp_path: Path) -> None:
    atlas = tmp_path / "a.duckdb"
    first = write_run(tmp_path / "runs")
    second = write_run(tmp_path / "runs", model_id="fixture/second", n_layers=3)
    record_run(first, atlas)
    before = counts(atlas)
    proc = recorder(second, atlas, pause=60)
    try:
        wait_inside(proc)      # models, runs and fits rows of `second` are inserted, not committed
    finally:
        proc.kill()            # SIGKILL: no cleanup, no rollback
        proc.wait()
    assert counts(atlas) == before
    with connect(atlas, read_only=True) as con:
        assert con.execute("SELECT run_id FROM runs").fetchall() == [(first.name,)]
    assert record_run(second, atlas) == second.name
    assert counts(atlas)["runs"] == 2


def test_two_processes_recording_at_once_both_succeed(tmp_path: Path) -> None:
    atlas = tmp_path / "a.duckdb"
    runs = [write_run(tmp_path / "runs", model_id=f"fixture/m{k}") for k in range(2)]
    slow = recorder(runs[0], atlas, pause=1.0)
    wait_inside(slow)                       # it holds the lock now
    fast = recorder(runs[1], atlas)         # must wait and retry, then succeed
    out_fast, err_fast = fast.communicate(timeout=60)
    out_slow, err_slow = slow.communicate(timeout=60)
    assert slow.returncode == 0 and fast.returncode == 0, err_slow + err_fast
    assert out_fast.strip() == runs[1].name and runs[0].name in out_slow
    assert counts(atlas)["runs"] == 2


def test_busy_atlas_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    atlas = tmp_path / "a.duckdb"
    holder = recorder(write_run(tmp_path / "runs"), atlas, pause=60)
    try:
        wait_inside(holder)
        monkeypatch.setenv(BUSY_TIMEOUT_ENV, "0.3")
        with pytest.raises(AtlasBusyError, match=r"busy .* try again"):
            record_run(write_run(tmp_path / "runs", model_id="fixture/other"), atlas)
        with pytest.raises(SystemExit) as exit_info:
            main(["atlas", "list", "--atlas", str(atlas)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("gammalens: error: atlas") and "busy" in err and "\n" not in err
    finally:
        holder.kill()
        holder.wait()
