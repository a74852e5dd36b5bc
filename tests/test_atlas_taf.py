"""Import of the book's published γ atlas: every row, exact values, provenance, and bad files rejected whole."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from gammalens.atlas import connect, import_taf
from gammalens.atlas.store import scalar
from gammalens.atlas.taf import TAF_DATASET, TAF_FILE, TAF_SHA256, ImportFileError
from gammalens.cli import main
from tests.run_fixtures import taf_csv

pytestmark = pytest.mark.usefixtures("isolated_atlas")


def data_rows(file: Path) -> int:
    """Count the CSV's data rows independently of the importer: non-blank lines after the header."""
    lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return len(lines) - 1


def test_import_counts_every_row_and_keeps_values(tmp_path: Path) -> None:
    atlas, file = tmp_path / "a.duckdb", taf_csv()
    n = data_rows(file)
    assert n > 50
    assert import_taf(file, atlas) == n
    assert import_taf(file, atlas) == 0            # re-import adds nothing
    with connect(atlas, read_only=True) as con:
        assert scalar(con, "SELECT count(*) FROM reference_fits") == n
        llama = con.execute("SELECT rope_theta, gamma, r2, gamma_ci_low, gamma_ci_high, delta_r2_pow_exp, line "
                            "FROM reference_fits WHERE model_id = 'meta-llama/Llama-2-7b-hf' AND corpus = 'mongo' "
                            "AND source = 'e4_gamma'").fetchall()
        master = con.execute("SELECT gamma_ci_low, gamma_ci_high, delta_r2_pow_exp FROM reference_fits "
                             "WHERE model_id = 'meta-llama/Llama-2-7b-hf' AND corpus = 'mongo' "
                             "AND source = 'master'").fetchall()
        gpt2 = con.execute("SELECT rope_theta, gamma FROM reference_fits WHERE model_id = 'gpt2' "
                           "AND corpus = 'random'").fetchall()
        nemo = scalar(con, "SELECT max(rope_theta) FROM reference_fits WHERE model_id LIKE '%Mistral-Nemo%'")
        provenance = con.execute("SELECT DISTINCT dataset, provenance, file_name FROM reference_fits").fetchall()
        families = {r[0] for r in con.execute("SELECT DISTINCT family FROM reference_fits").fetchall()}
    assert llama == [(10000.0, 0.2871, 0.8149, 0.1288, 0.5473, 0.4284, 3)]
    assert master == [(None, None, None)]
    assert gpt2 == [(None, 1.0515)]                 # no RoPE: θ is empty, not 0
    assert nemo == 1e6
    assert provenance == [(TAF_DATASET, provenance[0][1], file.name)] and "Marín 2026" in provenance[0][1]
    assert {"pythia", "llama", "qwen", "gpt"} <= families
    with file.open(newline="") as fh:
        first = next(csv.DictReader(fh))
    with connect(atlas, read_only=True) as con:
        assert scalar(con, "SELECT gamma FROM reference_fits WHERE line = 2") == float(first["gamma"])


def _bad_copy(tmp_path: Path, edit: tuple[int, str, str] | None = None, drop: str | None = None) -> Path:
    """A copy of the published table with one cell replaced (line, column, text) or one column dropped."""
    with taf_csv().open(newline="") as fh:
        rows = list(csv.reader(fh))
    header = rows[0]
    if edit is not None:
        line, column, text = edit
        rows[line - 1][header.index(column)] = text
    if drop is not None:
        k = header.index(drop)
        rows = [r[:k] + r[k + 1:] for r in rows]
    out = tmp_path / "taf_bad.csv"
    with out.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return out


@pytest.mark.parametrize(("edit", "drop", "message"), [
    ((17, "gamma", "0.6x"), None, r"line 17, column 'gamma': '0.6x' is not a number"),
    ((40, "theta", "-5"), None, r"line 40, column 'theta': -5.0 is not > 0"),
    ((9, "model", ""), None, r"line 9, column 'model': empty"),
    ((60, "R2", "nan"), None, r"line 60, column 'R2': 'nan' is not a finite number"),
    (None, "ci_hi", r"line 1: column 'ci_hi' is missing"),
])
def test_bad_file_names_line_and_column_and_inserts_nothing(tmp_path: Path, edit: tuple | None, drop: str | None,
                                                          message: str) -> None:
    atlas = tmp_path / "a.duckdb"
    import_taf(taf_csv(), atlas)
    with connect(atlas, read_only=True) as con:
        before = con.execute("SELECT * FROM reference_fits ORDER BY ref_id").fetchall()
    bad = _bad_copy(tmp_path, edit, drop)
    with pytest.raises(ImportFileError, match=message):
        import_taf(bad, atlas)
    with connect(atlas, read_only=True) as con:
        assert con.execute("SELECT * FROM reference_fits ORDER BY ref_id").fetchall() == before


def test_cli_import_taf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    atlas = tmp_path / "a.duckdb"
    with pytest.raises(SystemExit) as ok:
        main(["atlas", "import-taf", str(taf_csv()), "--atlas", str(atlas)])
    assert ok.value.code == 0 and f"imported {data_rows(taf_csv())} new reference rows" in capsys.readouterr().out
    bad = _bad_copy(tmp_path, edit=(5, "ci_lo", "low"))
    with pytest.raises(SystemExit) as err:
        main(["atlas", "import-taf", str(bad), "--atlas", str(atlas)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert err.value.code == 2 and len(lines) == 1 and "line 5, column 'ci_lo'" in lines[0]
    with pytest.raises(SystemExit) as missing:
        main(["atlas", "import-taf", str(tmp_path / "nope.csv"), "--atlas", str(atlas)])
    assert missing.value.code == 2 and "cannot read" in capsys.readouterr().err


def test_shipped_copy_is_the_published_file_unchanged() -> None:
    import hashlib

    assert hashlib.sha256(TAF_FILE.read_bytes()).hexdigest() == TAF_SHA256
    assert TAF_SHA256 in (TAF_FILE.parent / "SOURCE.md").read_text(encoding="utf-8")


def test_cli_import_taf_without_argument_imports_the_shipped_copy(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    atlas = tmp_path / "a.duckdb"
    with pytest.raises(SystemExit) as ok:
        main(["atlas", "import-taf", "--atlas", str(atlas)])
    assert ok.value.code == 0 and f"imported {data_rows(TAF_FILE)} new reference rows" in capsys.readouterr().out


def test_field_over_the_csv_limit_is_one_clean_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "huge.csv"
    bad.write_text(TAF_FILE.read_text(encoding="utf-8") + "m,c,1e4,0.5,0.9,,,," + "x" * 200_000 + "\n",
                   encoding="utf-8")
    with pytest.raises(SystemExit) as err:
        main(["atlas", "import-taf", str(bad), "--atlas", str(tmp_path / "a.duckdb")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert err.value.code == 2 and len(lines) == 1 and f"line {data_rows(TAF_FILE) + 2}" in lines[0]
