"""A full disk anywhere leaves nothing half-written (issue 25, fault class 2).

Every state, JSON and CSV file the long commands write goes through one helper (:mod:`gammalens.runs.atomic`:
a temporary file in the same folder, fsync, ``os.replace``). Here its one write is replaced by a disk that
fills up at the N-th write — half the bytes reach the temporary file, then ENOSPC — for every N over all the
writes of a small run of each command (the count is checked, so a new write is covered or fails the test).
Each case asserts: no temporary file, partial folder or name lock is left, the failure is told in one line
(that names the full disk), what the line counts is what is on disk, and a re-run after "freeing space"
completes with every cell (run) done exactly once.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gammalens.runs import atomic
from tests.test_cli import run_cli
from tests.test_fault_signals import COMMANDS, atlas_ids, disk, write_spec

NO_SPACE = os.strerror(errno.ENOSPC)
# the atomic writes of one run of each command (a run directory: manifest.json, fits.csv; sinks adds sinks.json)
WRITES = {
    "measure": 2,
    "sinks": 3,
    "sweep": 1 + 3 * 2,  # the state after planning; per cell its manifest.json, fits.csv and the state again
    "grok run": 2,  # r.csv, r.json
    "grok sweep": 2 * 2 + 1,  # per run its .csv and .json; the document
}


class FullDisk:
    """``atomic._write_synced`` on a disk that fills up at the ``at``-th write (and stays full, or not)."""

    def __init__(self, real: Callable[[Path, bytes], None], at: int, stays_full: bool) -> None:
        self.real, self.at, self.stays_full, self.n = real, at, stays_full, 0

    def __call__(self, tmp: Path, data: bytes) -> None:
        self.n += 1
        if self.n == self.at or (self.stays_full and self.n > self.at):
            Path(tmp).write_bytes(data[: len(data) // 2])  # part of it reached the disk
            raise OSError(errno.ENOSPC, NO_SPACE, str(tmp))
        self.real(tmp, data)


def one_error_line(code: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gammalens: error:"), (code, err)
    assert NO_SPACE in lines[0] and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("name", list(WRITES))
def test_every_write_is_counted(name: str, tmp_path: Path, capsys, monkeypatch) -> None:
    """The N of the cases below runs over all the writes: a command's atomic writes are WRITES[name]."""
    monkeypatch.setenv("GAMMALENS_ATLAS", str(tmp_path / "atlas.duckdb"))
    counter = FullDisk(atomic._write_synced, at=0, stays_full=False)
    monkeypatch.setattr(atomic, "_write_synced", counter)
    code, _, err = run_cli(COMMANDS[name].argv(tmp_path), capsys)
    assert code == 0, err
    assert counter.n == WRITES[name]


# --- the sweep ---------------------------------------------------------------------------------------------

SWEEP_CASES = [(n, full) for full in (True, False) for n in range(1, WRITES["sweep"] + 1)]


@pytest.mark.parametrize(("at", "stays_full"), SWEEP_CASES,
                         ids=[f"write{n}-{'stays-full' if f else 'one-write'}" for n, f in SWEEP_CASES])
def test_full_disk_in_a_sweep(at: int, stays_full: bool, tmp_path: Path, capsys, monkeypatch) -> None:
    spec = write_spec(tmp_path)
    out, atlas = tmp_path / "runs", tmp_path / "atlas.duckdb"
    with monkeypatch.context() as m:
        m.setattr(atomic, "_write_synced", FullDisk(atomic._write_synced, at, stays_full))
        code, _, err = run_cli(["sweep", str(spec), "--quiet"], capsys)
    d = disk(tmp_path)
    assert d.leftovers == [], d.leftovers  # not the 0-byte .s.sweep.json.tmp-PID of issue 25, nor any other
    state = out / "s.sweep.json"
    status = json.loads(state.read_text()) if state.exists() else None  # never half-written
    assert set(atlas_ids(atlas)) == {p.name for p in d.run_dirs}  # every complete run directory is recorded
    if code == 2:
        line = one_error_line(code, err)
        assert "nothing was left half-written" in line and "run the same command to resume" in line
        assert f"{len(d.run_dirs)} cell(s) measured and recorded" in line, line  # it counts what is on disk
    else:  # one write failed, in a run directory: that cell failed (one line in the state), the sweep went on
        assert not stays_full and code == 1 and err.strip() == "", (code, err)
        failed = [c for c in status["cells"] if c["status"] == "failed"]
        assert len(failed) == 1 and NO_SPACE in failed[0]["reason"] and "\n" not in failed[0]["reason"]
        assert "nothing was kept" in failed[0]["reason"] and len(d.run_dirs) == 1

    code, _, err = run_cli(["sweep", str(spec), "--quiet"], capsys)  # space freed: the same command resumes
    assert code == 0, err
    d = disk(tmp_path)
    assert len(d.run_dirs) == 2 and d.leftovers == []
    assert atlas_ids(atlas) == [p.name for p in d.run_dirs]  # every cell exactly once: measured once, recorded once
    cells = json.loads(state.read_text())["cells"]
    assert [c["status"] in ("done", "skipped") for c in cells] == [True, True]
    assert sorted(c["run_id"] for c in cells) == [p.name for p in d.run_dirs]


# --- the other commands ------------------------------------------------------------------------------------

OTHER_CASES = [(name, n) for name in ("measure", "sinks", "grok run", "grok sweep") for n in range(1, WRITES[name] + 1)]


@pytest.mark.parametrize(("name", "at"), OTHER_CASES, ids=[f"{n.replace(' ', '-')}-write{k}" for n, k in OTHER_CASES])
def test_full_disk_in_a_command(name: str, at: int, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("GAMMALENS_ATLAS", str(tmp_path / "atlas.duckdb"))
    argv = COMMANDS[name].argv(tmp_path)
    doc = tmp_path / "grokking.md"
    before = doc.read_text() if doc.exists() else None
    with monkeypatch.context() as m:
        m.setattr(atomic, "_write_synced", FullDisk(atomic._write_synced, at, stays_full=True))
        code, _, err = run_cli(argv, capsys)
    line = one_error_line(code, err)
    d = disk(tmp_path)
    assert d.leftovers == [], d.leftovers
    if name in ("measure", "sinks"):
        assert "nothing was kept" in line and not (tmp_path / "runs").exists() and d.atlas_ids == []
    elif name == "grok run":
        assert d.grok_files == [] and not (tmp_path / "grok").exists()
    else:
        jsons = sorted(f for f in d.grok_files if f.endswith(".json"))
        assert sorted(f for f in d.grok_files if f.endswith(".csv")) == [j[:-5] + ".csv" for j in jsons]
        assert doc.read_text() == before  # the document is as it was
    code, _, err = run_cli(argv, capsys)  # space freed
    assert code == 0, err
    d = disk(tmp_path)
    assert d.leftovers == []
    if name in ("measure", "sinks"):
        assert len(d.run_dirs) == 1 and d.atlas_ids == [d.run_dirs[0].name]
    elif name == "grok sweep":
        assert len(d.grok_files) == 4 and d.doc_rebuilt
    else:
        assert d.grok_files == ["r.csv", "r.json"]


def test_full_disk_while_writing_the_grokking_plots(tmp_path: Path, capsys, monkeypatch) -> None:
    """The plots (grok/plots.py writes them itself): their temporary files go, the document stays as it was."""
    argv = COMMANDS["grok sweep"].argv(tmp_path)
    doc = tmp_path / "grokking.md"
    before = doc.read_text()
    write_text = Path.write_text

    def full(self: Path, data: str, *args, **kwargs) -> int:
        if self.name.endswith(".svg.tmp"):
            write_text(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, NO_SPACE, str(self))
        return write_text(self, data, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Path, "write_text", full)
        code, _, err = run_cli(argv, capsys)
    line = one_error_line(code, err)
    assert "curves.svg" in line or "leads.svg" in line
    d = disk(tmp_path)
    assert d.leftovers == [] and doc.read_text() == before and len(d.grok_files) == 4
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert disk(tmp_path).doc_rebuilt and (tmp_path / "grokking" / "curves.svg").read_text().startswith("<svg")
