"""Issue 25, the first hour: the report's atlas hint says what happened and what to run, and the report counts
phases by the same rule as the terminal summary (A, boundary, B from fits.csv's ``phase`` column)."""

from __future__ import annotations

import html as htmllib
import re
from collections import Counter
from pathlib import Path

import pytest

from gammalens.atlas import record_run
from gammalens.report import write_report
from gammalens.runs.reader import read_run
from tests.run_fixtures import write_run

pytestmark = pytest.mark.usefixtures("isolated_atlas")


def text_of(path: Path) -> str:
    return htmllib.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


def test_report_without_an_atlas_says_what_to_run(tmp_path: Path) -> None:
    """A plain `gammalens measure` writes its report before recording the run: the hint must be true."""
    run = write_run(tmp_path / "runs")
    text = text_of(write_report([run], tmp_path / "report.html"))
    assert "No atlas given" not in text
    assert "import-taf FILE" not in text                      # import-taf takes no FILE: the book's rows ship
    assert "No reference points on this map" in text
    assert "gammalens atlas import-taf (no argument: it imports the book's published rows shipped with gammalens " \
           "into the default atlas)" in text
    assert "gammalens report RUN_DIR" in text


def test_report_with_an_atlas_without_reference_rows_says_so(tmp_path: Path) -> None:
    run = write_run(tmp_path / "runs")
    atlas = tmp_path / "a.duckdb"
    record_run(run, atlas)                                    # the run is there, the book's rows are not
    text = text_of(write_report([run], tmp_path / "report.html", atlas=atlas))
    assert "The atlas holds no reference rows yet" in text and "gammalens atlas import-taf (no argument" in text


def test_report_counts_phases_like_the_terminal(tmp_path: Path) -> None:
    run = write_run(tmp_path / "runs")
    phases = Counter(r["phase"] for r in read_run(run).head_fits)
    assert phases["boundary"] > 0                             # the fixture has heads whose CI contains γ = 1
    naive_a = sum(r["gamma"] < 1 for r in read_run(run).head_fits)
    assert naive_a != phases["A"]                             # so counting γ < 1 would not agree with fits.csv

    text = text_of(write_report([run], tmp_path / "report.html"))

    def heads(n: int) -> str:
        return f"{n} head" if n == 1 else f"{n} heads"

    assert f"Phase A (γ < 1, looks far): {heads(phases['A'])}" in text
    assert f"boundary (95% CI contains γ = 1): {heads(phases['boundary'])}" in text
    assert f"Phase B (γ > 1, concentrates): {heads(phases['B'])}" in text
    assert f"Phase A (γ < 1, looks far): {heads(naive_a)}" not in text


def test_comparison_report_counts_phases_over_every_run(tmp_path: Path) -> None:
    runs = [write_run(tmp_path / "runs"), write_run(tmp_path / "runs", model_id="fixture/other", n_layers=3)]
    phases = Counter(r["phase"] for run in runs for r in read_run(run).head_fits)
    text = text_of(write_report(runs, tmp_path / "report.html"))
    assert f"boundary (95% CI contains γ = 1): {phases['boundary']} heads" in text
    assert f"Phase A (γ < 1, looks far): {phases['A']} heads" in text
