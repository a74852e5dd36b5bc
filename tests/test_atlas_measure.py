"""A real measurement (the embedded MiniLM) through the atlas and the report: the run format as written."""

from __future__ import annotations

from pathlib import Path

import pytest

import gammalens
from gammalens.atlas import compare, connect, export_atlas, import_atlas, record_run
from gammalens.atlas.store import scalar
from gammalens.report import write_report

pytestmark = pytest.mark.usefixtures("isolated_atlas")


@pytest.fixture
def run_dir(minilm_run: gammalens.measuring.pipeline.MeasureResult) -> Path:
    """The run directory of conftest's shared MiniLM measurement (no second measurement here)."""
    return Path(minilm_run.run_dir)


def test_measured_run_is_recorded_reported_and_shared(run_dir: Path, tmp_path: Path) -> None:
    atlas = tmp_path / "a.duckdb"
    run_id = record_run(run_dir, atlas)
    assert run_id == run_dir.name and record_run(run_dir, atlas) == run_id
    with connect(atlas, read_only=True) as con:
        assert con.execute("SELECT n_layers, n_heads, position_encoding, rope_theta, family FROM models").fetchall() \
            == [(6, 12, "learned", None, "minilm")]
        assert scalar(con, "SELECT count(*) FROM head_fits") == 6 * 12
        assert scalar(con, "SELECT count(*) FROM profiles") == 6 * 12 * 2
        gamma = scalar(con, "SELECT gamma FROM runs")
    c = compare(["minilm"], atlas)
    assert c.layers.shape == (6, 1) and c.summary["gamma"].iloc[0] == pytest.approx(gamma)

    page = write_report([run_dir], tmp_path / "report.html")
    html = page.read_text(encoding="utf-8")
    assert "minilm" in html and "no RoPE" in html and html.count('class="plot"') >= 6

    export_atlas(tmp_path / "export", atlas)
    assert import_atlas(tmp_path / "export", tmp_path / "b.duckdb")["profiles"] == 6 * 12 * 2
