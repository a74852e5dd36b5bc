"""Issue 25, item 3: CIs bootstrapped from too few windows say so.

Two windows give 3 distinct bootstrap resamples, and a "95%" interval that collapses onto the point (0.975 [0.975,
0.976]); below ``MIN_RELIABLE_WINDOWS`` (8, see fit/bootstrap.py for the coverage it rests on) the terminal summary
says in one line that the CIs are not reliable and the phase call rests on the point estimate, and every fits row
(fits.csv's extra column ``ci_note``, ``measure --json``'s model_fit) carries the note. Measured with gammalens-tiny,
context 64, at 2 and at 8 windows.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from gammalens.fit.bootstrap import MIN_RELIABLE_WINDOWS, few_windows_note, resample_counts

NOTE = "are not reliable"


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from gammalens.cli import main

    with pytest.raises(SystemExit) as done:
        main(args)
    cap = capsys.readouterr()
    return int(done.value.code or 0), cap.out, cap.err


def _measure(tmp_path: Path, capsys, windows: int, *extra: str) -> tuple[str, Path | None]:
    out = tmp_path / f"runs{windows}{''.join(extra)}"
    code, stdout, err = run_cli(["measure", "gammalens-tiny", "--context", "64", "--windows", str(windows),
                                 "--bootstrap", "100", "--out", str(out), "--no-atlas", "--no-report", *extra], capsys)
    assert code == 0, err
    runs = list(out.iterdir()) if out.is_dir() else []
    return stdout, (runs[0] if runs else None)


def _fits(run: Path) -> list[dict[str, str]]:
    with (run / "fits.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_two_windows_say_so_in_the_summary_and_the_fits(tmp_path, capsys):
    out, run = _measure(tmp_path, capsys, 2)
    lines = [ln for ln in out.splitlines() if NOTE in ln]
    assert len(lines) == 1, out  # one line, never wrapped
    line = lines[0]
    assert "CIs from 2 windows are not reliable" in line and "point estimate" in line, line
    assert f"fewer than {MIN_RELIABLE_WINDOWS} windows" in line
    rows = _fits(run)
    assert rows and all(NOTE in r["ci_note"] for r in rows)  # head, layer and model rows alike
    model = rows[-1]
    assert model["scope"] == "model" and float(model["gamma_ci_low"]) <= float(model["gamma_ci_high"])
    from gammalens.runs.reader import read_run

    assert NOTE in read_run(run).model_fit["extras"]["ci_note"]  # the reader keeps it as a text extra


def test_eight_windows_have_no_note(tmp_path, capsys):
    out, run = _measure(tmp_path, capsys, MIN_RELIABLE_WINDOWS)
    assert NOTE not in out
    assert "ci_note" not in _fits(run)[0]  # fits.csv's columns are those of any run


def test_json_summary_carries_the_note(tmp_path, capsys):
    out, _ = _measure(tmp_path, capsys, 2, "--json")
    summary = json.loads(out)
    assert NOTE in summary["model_fit"]["ci_note"]


def test_the_threshold_and_when_there_is_no_ci():
    assert MIN_RELIABLE_WINDOWS == 8
    assert all(NOTE in few_windows_note(n, 200) for n in range(1, MIN_RELIABLE_WINDOWS))
    assert few_windows_note(MIN_RELIABLE_WINDOWS, 200) is None and few_windows_note(100, 200) is None
    assert few_windows_note(2, 0) is None  # --bootstrap 0: no CI to qualify
    assert "from 1 window are" in few_windows_note(1, 200)


def test_two_windows_have_three_distinct_resamples():
    """Why the CI collapses: resampling 2 documents can only give {1,1}, {1,2}, {2,2}."""
    counts = resample_counts(2, 200, seed=0)
    assert len({tuple(c) for c in counts}) == 3
    assert len({tuple(c) for c in resample_counts(8, 200, seed=0)}) > 150  # of 6435 possible
    assert np.all(counts.sum(1) == 2)
