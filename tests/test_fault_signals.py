"""A signal at any stage of a run's life ends with one true line (issue 25, fault class 1).

Every long command (measure, sinks, sweep, grok run, grok sweep) marks the stages of
:data:`gammalens.runs.atomic.STAGES`; the matrix below is generated from that list: each command × each stage
it passes, interrupted there deterministically (``GAMMALENS_FAULT_AT=<stage>`` raises KeyboardInterrupt at the
stage, in this process). Each case checks the exit code, that stderr is exactly one ``gammalens: error:`` (or
``notice:``) line, and that the line is true: what is on disk (run directories, atlas rows, grokking files, no
hidden leftovers) is what it says — and that what it tells the user to do works. One case per command sends a
real signal to a child process waiting at a stage (``<stage>:wait`` writes a marker file, then waits for the
signal; no sleeps decide anything).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gammalens.runs import atomic
from tests.test_cli import run_cli

TINY_GROK = ["--p", "11", "--d-model", "16", "--d-mlp", "32", "--lr", "1e-2", "--every", "10", "--steps", "20"]
TINY_MEASURE = ["gammalens-tiny", "--context", "64", "--windows", "2", "--bootstrap", "0"]


def write_spec(tmp: Path) -> Path:
    spec = tmp / "s.toml"
    spec.write_text('[sweep]\nout = "runs"\natlas = "atlas.duckdb"\nthreads = 1\n\n'
                    "[defaults]\nwindows = 2\nbootstrap = 0\nbatch_size = 2\n\n"
                    '[grid]\nmodels = ["gammalens-tiny"]\ncontexts = [32, 48]\n')
    return spec


@dataclass(frozen=True)
class Command:
    """A long command, the stages it passes (in STAGES order), and its argv in a temp folder."""

    name: str
    stages: tuple[str, ...]
    argv: Callable[[Path], list[str]]


def _measure(tmp: Path) -> list[str]:
    return ["measure", *TINY_MEASURE, "--out", str(tmp / "runs"), "--atlas", str(tmp / "atlas.duckdb"), "--quiet"]


def _sinks(tmp: Path) -> list[str]:
    return ["sinks", *TINY_MEASURE, "--ablate-massive", "none", "--no-bos-variant", "--out", str(tmp / "runs"),
            "--atlas", str(tmp / "atlas.duckdb"), "--quiet"]


def _sweep(tmp: Path) -> list[str]:
    return ["sweep", str(write_spec(tmp)), "--quiet"]


def _grok_run(tmp: Path) -> list[str]:
    return ["grok", "run", "--out", str(tmp / "grok"), "--name", "r", *TINY_GROK]


def _grok_sweep(tmp: Path) -> list[str]:
    (tmp / "grokking.md").write_text("# Grokking\n")
    return ["grok", "sweep", "--out", str(tmp / "runs"), "--doc", str(tmp / "grokking.md"), *TINY_GROK,
            "--grok-seeds", "2", "--control-seeds", "0", "--penalty-seeds", "0", "--parity-seeds", "0"]


def _passes(*names: str) -> tuple[str, ...]:
    return tuple(s for s in atomic.STAGES if s in names)


RUN_LIFE = _passes("measured", "staged", "written", "recording", "recorded", "done")
COMMANDS = {c.name: c for c in (
    Command("measure", RUN_LIFE, _measure),
    Command("sinks", RUN_LIFE, _sinks),
    Command("sweep", RUN_LIFE, _sweep),
    Command("grok run", _passes("measured", "staged", "written", "done"), _grok_run),
    Command("grok sweep", _passes("measured", "staged", "written", "reported", "done"), _grok_sweep),
)}
# the matrix: every command × every stage it passes (first occurrence), plus the second cell / run of the sweeps
MATRIX = [(c.name, s) for c in COMMANDS.values() for s in c.stages] + [("sweep", "written#2"),
                                                                        ("grok sweep", "written#2")]


# --- what is on disk ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Disk:
    run_dirs: list[Path]
    atlas_ids: list[str]
    grok_files: list[str]
    doc_rebuilt: bool
    leftovers: list[Path]


def atlas_ids(atlas: Path) -> list[str]:
    if not atlas.exists():
        return []
    import duckdb

    con = duckdb.connect(str(atlas), read_only=True)
    try:
        return sorted(r for (r,) in con.execute("SELECT run_id FROM runs").fetchall())
    finally:
        con.close()


def disk(tmp: Path) -> Disk:
    runs = tmp / "runs"
    dirs = sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) if runs.is_dir() else []
    grok = [p.name for folder in (tmp / "grok", runs) if folder.is_dir() for p in sorted(folder.iterdir())
            if p.suffix in (".csv", ".json") and not p.name.startswith(".")]
    doc = tmp / "grokking.md"
    hidden = [p for p in tmp.rglob(".*") if re.search(r"\.(partial|tmp)(-\d+)?$|\.lock$", p.name)]
    hidden += list(tmp.rglob("*.tmp"))
    return Disk(dirs, atlas_ids(tmp / "atlas.duckdb"), grok,
                doc.exists() and "<!-- results:begin -->" in doc.read_text(), hidden)


def the_line(code: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    kind = "notice" if code == 0 else "error"
    assert lines[0].startswith(f"gammalens: {kind}: "), (code, lines[0])
    return lines[0]


def check_true(command: str, line: str, tmp: Path, d: Disk) -> None:
    """What every line must get right, whatever the stage."""
    assert d.leftovers == [], d.leftovers  # no partial folder, temporary file or name lock, ever
    if command in ("measure", "sinks", "sweep"):
        for run_dir in d.run_dirs:  # a run directory the atlas lacks is named, as not recorded
            if run_dir.name not in d.atlas_ids:
                assert str(run_dir) in line and "not recorded" in line, (run_dir, line)
        assert set(d.atlas_ids) <= {p.name for p in d.run_dirs}
    if "no partial output" in line:
        assert d.run_dirs == [] and d.grok_files == [] and d.atlas_ids == []
        if command in ("measure", "sinks"):
            assert not (tmp / "runs").exists()  # not even the --out folder the run would have made
        if command == "grok run":
            assert not (tmp / "grok").exists()
    m = re.search(r"(\d+) cell\(s\) measured and recorded", line)
    if m:
        assert int(m.group(1)) == len(d.atlas_ids)
    m = re.search(r"(\d+) of (\d+) run\(s\) of the sweep are complete", line)
    if m:
        assert int(m.group(1)) == sum(n.endswith(".json") for n in d.grok_files)


def expected(command: str, at: str) -> tuple[int, int, int, list[str]]:
    """(exit code, run directories or grokking JSONs on disk, atlas rows, words of the line) for a stage."""
    where, _, nth = at.partition("#")
    if command in ("measure", "sinks"):
        if where in atomic.PRE_COMMIT:
            return 2, 0, 0, ["interrupted; no partial output was left behind"]
        if where in ("written", "recording"):
            return 2, 1, 0, ["is complete but not recorded in the atlas", "gammalens atlas record"]
        return 0, 1, 1, ["is complete and in the atlas", "all the work was committed"]
    if command == "sweep":
        if nth == "2":
            return 2, 2, 1, ["1 cell(s) measured and recorded, 1 not", "not recorded in the atlas yet"]
        if where in atomic.PRE_COMMIT:
            return 2, 0, 0, ["0 cell(s) measured and recorded, 2 not", "left nothing half-written"]
        if where in ("written", "recording"):
            return 2, 1, 0, ["0 cell(s) measured and recorded", "not recorded in the atlas yet"]
        if where == "recorded":
            return 2, 1, 1, ["1 cell(s) measured and recorded, 1 not"]
        return 0, 2, 2, ["after the sweep finished", "all its work was committed"]
    if command == "grok run":
        if where in atomic.PRE_COMMIT:
            return 2, 0, 0, ["no partial output was left behind"]
        return 0, 1, 0, ["r.csv and", "r.json were written", "all the work was committed"]
    if nth == "2":
        return 2, 2, 0, ["every run of the sweep was complete", "was not rebuilt", "gammalens grok report"]
    if where in atomic.PRE_COMMIT:
        return 2, 0, 0, ["0 of 2 run(s) of the sweep are complete"]
    if where == "written":
        return 2, 1, 0, ["1 of 2 run(s) of the sweep are complete"]
    return 0, 2, 0, ["rebuilt", "all the work was committed"]


def check_case(command: str, at: str, code: int, err: str, tmp: Path) -> tuple[str, Disk]:
    want_code, n, rows, needles = expected(command, at)
    line = the_line(code, err)
    assert code == want_code, (code, line)
    for needle in needles:
        assert needle in line, (needle, line)
    d = disk(tmp)
    check_true(command, line, tmp, d)
    if command.startswith("grok"):
        assert sum(f.endswith(".json") for f in d.grok_files) == n, (d.grok_files, line)
        assert sum(f.endswith(".csv") for f in d.grok_files) == n  # never a CSV without its JSON
        if command == "grok sweep":
            assert d.doc_rebuilt == (code == 0), line
    else:
        assert (len(d.run_dirs), len(d.atlas_ids)) == (n, rows), (d, line)
    return line, d


def check_resumes(command: str, line: str, tmp: Path, capsys) -> None:
    """What the line tells the user to do works: record the run, or run the same command again."""
    if command in ("measure", "sinks") and "gammalens atlas record" in line:
        argv = shlex.split(re.search(r"`([^`]+)`", line).group(1))
        assert argv[:3] == ["gammalens", "atlas", "record"]
        code, _, err = run_cli(argv[1:], capsys)
        assert code == 0, err
        d = disk(tmp)
        assert [p.name for p in d.run_dirs] == d.atlas_ids and len(d.atlas_ids) == 1
    elif command == "sweep":
        code, _, err = run_cli(COMMANDS[command].argv(tmp), capsys)
        assert code == 0, err
        d = disk(tmp)  # every cell exactly once: two runs, each recorded once
        assert len(d.run_dirs) == 2 and [p.name for p in d.run_dirs] == d.atlas_ids and d.leftovers == []
    elif command == "grok sweep":
        code, _, err = run_cli(COMMANDS[command].argv(tmp), capsys)
        assert code == 0, err
        d = disk(tmp)
        assert sorted(d.grok_files) == ["grok_seed0.csv", "grok_seed0.json", "grok_seed1.csv", "grok_seed1.json"]
        assert d.doc_rebuilt and d.leftovers == []


# --- the matrix, in this process ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_passes_its_stages(name: str, tmp_path: Path, capsys, monkeypatch) -> None:
    """The matrix is complete: a command passes exactly the stages it is tested at, and succeeds."""
    monkeypatch.delenv(atomic.FAULT_ENV, raising=False)
    monkeypatch.setenv("GAMMALENS_ATLAS", str(tmp_path / "atlas.duckdb"))
    code, _, err = run_cli(COMMANDS[name].argv(tmp_path), capsys)
    assert code == 0, err
    assert tuple(s for s in atomic.STAGES if s in atomic.seen()) == COMMANDS[name].stages
    assert disk(tmp_path).leftovers == []


@pytest.mark.parametrize(("name", "at"), MATRIX, ids=[f"{n.replace(' ', '-')}@{s}" for n, s in MATRIX])
def test_interrupt_at_each_stage_is_one_true_line(name: str, at: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("GAMMALENS_ATLAS", str(tmp_path / "atlas.duckdb"))
    monkeypatch.setenv(atomic.FAULT_ENV, at)
    code, _, err = run_cli(COMMANDS[name].argv(tmp_path), capsys)
    line, _ = check_case(name, at, code, err, tmp_path)
    monkeypatch.delenv(atomic.FAULT_ENV)
    check_resumes(name, line, tmp_path, capsys)


def test_no_atlas_run_is_complete_once_written(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv(atomic.FAULT_ENV, "written")
    code, _, err = run_cli(["measure", *TINY_MEASURE, "--out", str(tmp_path / "runs"), "--no-atlas", "--quiet"],
                           capsys)
    line = the_line(code, err)
    d = disk(tmp_path)
    assert code == 0 and len(d.run_dirs) == 1 and str(d.run_dirs[0]) in line and "not recorded" not in line


def test_sigterm_kind_is_named(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("GAMMALENS_ATLAS", str(tmp_path / "atlas.duckdb"))
    monkeypatch.setenv(atomic.FAULT_ENV, "written:term")
    code, _, err = run_cli(_measure(tmp_path), capsys)
    assert code == 2 and the_line(code, err).startswith("gammalens: error: terminated (SIGTERM) after the run")


# --- real signals, in a child process -----------------------------------------------------------------------

SIGNALLED = [  # (command, stage it waits at, signal)
    ("measure", "recording", signal.SIGTERM),  # held until the transaction ends: the run is recorded
    ("measure", "staged", signal.SIGINT),
    ("sinks", "written", signal.SIGTERM),
    ("sweep", "recording", signal.SIGTERM),
    ("grok run", "staged", signal.SIGTERM),
    ("grok sweep", "written", signal.SIGTERM),
]


def _expected_after_signal(command: str, at: str, sig: int) -> str:
    """The stage whose outcome a real signal at ``at`` has: a signal held by a transaction lands after it."""
    return "recorded" if at == "recording" else at


@pytest.mark.parametrize(("name", "at", "sig"), SIGNALLED,
                         ids=[f"{n.replace(' ', '-')}@{s}-{signal.Signals(g).name}" for n, s, g in SIGNALLED])
def test_real_signal_at_a_stage(name: str, at: str, sig: int, tmp_path: Path, capsys) -> None:
    from gammalens.atlas import import_taf

    # an atlas with the book's reference rows (no runs): a first report's map would otherwise log a warning
    import_taf(None, tmp_path / "atlas.duckdb")
    marker = tmp_path / "waiting"
    env = {**os.environ, atomic.FAULT_ENV: f"{at}:wait", atomic.FAULT_MARKER_ENV: str(marker),
           "GAMMALENS_ATLAS": str(tmp_path / "atlas.duckdb"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # a background test runner may pass Ctrl-C on ignored; a terminal's child has the default action
    proc = subprocess.Popen([sys.executable, "-m", "gammalens.cli", *COMMANDS[name].argv(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():  # the child writes it once it waits at the stage
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the child never reached the stage"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "\n".join(ln for ln in err.splitlines() if not ln.startswith("gammalens-"))
    line, _ = check_case(name, _expected_after_signal(name, at, sig), proc.returncode,
                         err.replace("terminated (SIGTERM)", "interrupted"), tmp_path)
    kind = "terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted"
    assert kind in err
    check_resumes(name, line, tmp_path, capsys)


def test_a_command_of_many_runs_is_not_told_complete(tmp_path: Path) -> None:
    """Where a command writes many runs (the zoo), the last run's stage is not the command's: no "all committed"."""
    from gammalens.cli.failure import interrupted

    atomic.begin()
    for k in range(2):
        atomic.stage("measured", record=False)
        atomic.stage("staged")
        atomic.stage("written", run_dir=tmp_path / f"run{k}")
    atomic.stage("measured", record=False)  # the third run is being written when Ctrl-C comes
    for one_run in (False, True):
        told = interrupted(KeyboardInterrupt(), one_run=one_run)
        assert told.exit_code == 2 and not told.notice
        assert "what was written so far is complete" in str(told) and str(tmp_path / "run1") in str(told)
    atomic.begin()
