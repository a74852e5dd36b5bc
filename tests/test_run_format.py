"""One run format: what the writer (gammalens.runs.writer) writes, the reader (gammalens.runs.reader) reads back,
value for value, and both take their columns from gammalens.runs.schema — as do the docs and the fixtures."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from gammalens.runs import schema as run_format
from gammalens.runs.reader import read_fits_csv, read_run
from tests.run_fixtures import FITS_HEADER, write_run

DOCS = Path(__file__).resolve().parents[1] / "docs" / "run_format.md"


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b


def test_the_writer_and_the_reader_agree_on_a_measured_run(minilm_run) -> None:
    run_dir = minilm_run.run_dir
    header = (run_dir / run_format.FITS).read_text().splitlines()[0].split(",")
    assert header[: len(run_format.FIT_COLUMNS)] == list(run_format.FIT_COLUMNS)
    run = read_run(run_dir)
    assert run.manifest["format"] == run_format.FORMAT and run.run_id == run_dir.name
    assert len(run.fits) == len(minilm_run.fits)
    for written, read in zip(minilm_run.fits, run.fits, strict=True):
        for column, kind in run_format.FIT_COLUMNS.items():
            value = written.get(column)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                assert read[column] is None, column                      # empty cell ↔ None
            else:
                assert _same(read[column], {"int": int, "float": float, "str": str}[kind](value)), column
        extras = {k for k in written if k not in run_format.FIT_COLUMNS}
        assert set(read["extras"]) <= extras                              # theory columns survive as extras
    flat = read_fits_csv(run_dir / run_format.FITS)                        # the writer's own reader agrees too
    assert [r["gamma"] for r in flat] == [r["gamma"] for r in run.fits]
    for key in run_format.PROFILE_ARRAYS:
        ours = np.asarray(getattr(minilm_run.profile, key))
        assert np.array_equal(run.profile(key), ours), key


def test_fixtures_and_docs_use_the_format_table(tmp_path: Path) -> None:
    assert list(run_format.FIT_COLUMNS) == FITS_HEADER
    assert read_run(write_run(tmp_path)).manifest["format"] == run_format.FORMAT
    documented = set(re.findall(r"`([a-z_0-9]+)`", DOCS.read_text(encoding="utf-8")))
    assert set(run_format.FIT_COLUMNS) <= documented
    assert run_format.FORMAT in DOCS.read_text(encoding="utf-8")


def test_version_lives_in_one_module_and_matches_pyproject() -> None:
    import tomllib

    import gammalens
    from gammalens.version import __version__

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert gammalens.__version__ is __version__ and pyproject["project"]["version"] == __version__
