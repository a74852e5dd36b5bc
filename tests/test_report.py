"""The HTML report: one and several runs, self-contained, the atlas map, and bad input."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from gammalens.atlas import AtlasError, import_taf, record_run
from gammalens.cli import main
from gammalens.report import write_report
from gammalens.report.decay import null_levels
from gammalens.runs.reader import RunFormatError
from tests.run_fixtures import taf_csv, write_run

pytestmark = pytest.mark.usefixtures("isolated_atlas")


def assert_self_contained(html: str) -> None:
    """No external URL is referenced: no src/href outside the page, no @import or url() to the network."""
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", html)
    assert not re.search(r"https?://", html)
    assert "@import" not in html and "url(http" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_report_of_one_run(tmp_path: Path) -> None:
    run = write_run(tmp_path / "runs", extra_columns={"gamma_pade": np.full((2, 4), 0.8)})
    out = write_report([run], tmp_path / "report.html")
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert html.count('class="plot"') == 2 + 1 + 1 + 2          # 2 layer panels, histogram, quality, map (2 parts)
    assert html.count('class="heatmap"') == 2                     # γ and sink mass
    for text in ("Decay profiles A(d), per layer", "γ per head", "γ = 1 (Hagedorn boundary)", "Sink mass per head",
                 "Fit quality", "2 of 8 heads flagged", "exponential preferred", "R² &lt; 0.85",
                 "Predicted against measured", "gamma_pade", "On the atlas map", "No reference points on this map",
                 "uniform attention (null)", "naive mean mass/pairs", "distance d (tokens)", "gammalens verify"):
        assert text in html, text
    assert "Comparison" not in html
    assert not list(tmp_path.glob(".report.html.partial-*"))


def test_report_of_several_runs_with_the_atlas(tmp_path: Path) -> None:
    atlas = tmp_path / "a.duckdb"
    import_taf(taf_csv(), atlas)
    runs = [write_run(tmp_path / "runs"),
            write_run(tmp_path / "runs", model_id="EleutherAI/pythia-70m", n_layers=3, corpus="random"),
            write_run(tmp_path / "runs", model_id="learned/no-rope", rope_theta=None)]
    record_run(runs[1], atlas)
    other = write_run(tmp_path / "other", model_id="fixture/elsewhere")
    record_run(other, atlas)
    (tmp_path / "cmp").mkdir()
    out = write_report(runs, tmp_path / "cmp", atlas=atlas)     # an existing directory: cmp/report.html
    html = out.read_text(encoding="utf-8")
    assert out == tmp_path / "cmp" / "report.html"
    assert_self_contained(html)
    assert html.count('<section id="run-') == 3 and 'id="comparison"' in html
    for text in ("Per-layer γ", "relative depth", "Decay profiles, null-corrected and normalised",
                 "published atlas, corpus mongo", "published atlas, corpus random", "other runs in the atlas",
                 "no RoPE", "γ_Padé(θ, T)", "heads A / boundary / B"):
        assert text in html, text
    assert "No reference points on this map" not in html
    # every published row is a point on the map (its tooltip names its source)
    published = len(taf_csv().read_text().strip().splitlines()) - 1
    assert len(re.findall(r"<title>[^<]*· (e4_gamma|master)</title>", html)) == published
    assert "fixture/elsewhere" in html


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "runs")
    record_run(run)                                  # the default atlas exists now: the report uses it
    with pytest.raises(SystemExit) as done:
        main(["report", str(run), "-o", str(tmp_path / "r.html")])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == str(tmp_path / "r.html")
    assert "No reference points on this map" not in (tmp_path / "r.html").read_text()


def test_an_unusable_atlas_costs_only_the_reference_points(tmp_path: Path) -> None:
    run = write_run(tmp_path / "runs")
    foreign = tmp_path / "foreign.duckdb"
    foreign.write_text("not an atlas")
    with pytest.raises(AtlasError, match="not a gammalens atlas"):
        write_report([run], tmp_path / "r.html", atlas=foreign)
    html = write_report([run], tmp_path / "r.html", atlas=foreign, atlas_required=False).read_text()
    assert "On the atlas map" in html and foreign.read_text() == "not an atlas"


@pytest.mark.parametrize("case", ["missing", "empty", "file", "no-fits", "bad-fits", "bad-npz", "bad-format"])
def test_bad_run_dirs_are_one_line_errors(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "runs")
    target = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "file": run / "fits.csv"}.get(case, run)
    (tmp_path / "empty").mkdir()
    if case == "no-fits":
        (run / "fits.csv").unlink()
    elif case == "bad-fits":
        text = (run / "fits.csv").read_text().splitlines()
        text[3] = text[3].replace(",0.9,", ",zero point nine,", 1)
        (run / "fits.csv").write_text("\n".join(text) + "\n")
    elif case == "bad-npz":
        (run / "profile.npz").write_bytes(b"not a zip")
    elif case == "bad-format":
        (run / "manifest.json").write_text((run / "manifest.json").read_text().replace("gammalens.run/1", "x/9"))
    out = tmp_path / "r.html"
    with pytest.raises(RunFormatError):
        write_report([target], out)
    with pytest.raises(SystemExit) as failed:
        main(["report", str(target), "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert failed.value.code == 2 and len(err) == 1 and err[0].startswith("gammalens: error: ")
    if case == "bad-fits":
        assert "line 4, column 'gamma'" in err[0]
    assert not out.exists() and not list(tmp_path.glob(".r.html.partial-*"))


def test_report_reads_a_partial_run_dir(tmp_path: Path) -> None:
    """``measure`` writes the report into its run directory before renaming it into place."""
    run = write_run(tmp_path / "runs")
    partial = run.parent / f".{run.name}.partial-12345"
    shutil.move(run, partial)
    out = write_report([partial], partial / "report.html")
    assert out.is_file() and sorted(p.name for p in partial.iterdir()) == [
        "fits.csv", "manifest.json", "profile.npz", "report.html"]


def test_null_levels() -> None:
    """Uniform attention over the visible keys: flat for the null-corrected profile, decaying for the naive mean."""
    flat, naive = null_levels(causal=True, context=64, sink_tokens=1, horizon=32)
    assert flat == pytest.approx(np.mean(1.0 / np.arange(34, 65)))            # queries q = 33..63 see q+1 keys
    assert naive[1] == pytest.approx(np.mean(1.0 / np.arange(3, 65)))         # queries q ≥ d + 1
    assert np.all(np.diff(naive[:63]) < 0)                                  # decays: the pitfall
    assert null_levels(causal=False, context=64, sink_tokens=1, horizon=32)[0] == 1 / 64


@pytest.mark.parametrize("module", ["gammalens.atlas.family", "gammalens.atlas.quality", "gammalens.report.svg"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(module)).failed == 0
