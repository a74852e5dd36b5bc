"""Sharing an atlas: Parquet export with a dataset card, import, and the round trip to identical rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gammalens.atlas import AtlasError, connect, export_atlas, import_atlas, import_taf, record_run
from gammalens.atlas.schema import DATA_TABLES, PRIMARY_KEYS
from gammalens.atlas.taf import ImportFileError
from gammalens.cli import main
from tests.run_fixtures import taf_csv, write_run

pytestmark = pytest.mark.usefixtures("isolated_atlas")


def all_rows(atlas: Path) -> dict[str, list[tuple]]:
    with connect(atlas, read_only=True) as con:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY {', '.join(PRIMARY_KEYS[t])}").fetchall()
                for t in DATA_TABLES}


@pytest.fixture
def filled_atlas(tmp_path: Path) -> Path:
    atlas = tmp_path / "source.duckdb"
    record_run(write_run(tmp_path / "runs"), atlas)
    record_run(write_run(tmp_path / "runs", model_id="EleutherAI/pythia-70m", n_layers=3, corpus="random",
                         extra_columns={"gamma_pade": np.full((3, 4), 0.8), "note_pred": np.zeros((3, 4))}), atlas)
    import_taf(taf_csv(), atlas)
    return atlas


def test_round_trip_gives_identical_rows(filled_atlas: Path, tmp_path: Path) -> None:
    export = tmp_path / "shared-atlas"
    counts = export_atlas(export, filled_atlas)
    assert counts["runs"] == 2 and counts["fit_extras"] == 2 * (3 * 4 + 3 + 1)
    target = tmp_path / "target.duckdb"
    added = import_atlas(export, target)
    assert added == counts
    original, copied = all_rows(filled_atlas), all_rows(target)
    for table in DATA_TABLES:
        assert copied[table] == original[table], table
    assert import_atlas(export, target) == dict.fromkeys(DATA_TABLES, 0)     # merging twice adds nothing
    assert all_rows(target) == original


def test_import_merges_without_touching_existing_runs(filled_atlas: Path, tmp_path: Path) -> None:
    export = tmp_path / "x"
    export_atlas(export, filled_atlas)
    mine = tmp_path / "mine.duckdb"
    record_run(write_run(tmp_path / "mine-runs", model_id="fixture/mine"), mine)
    added = import_atlas(export, mine)
    assert added["runs"] == 2
    with connect(mine, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchall() == [(3,)]


def test_dataset_card_loads_with_datasets(filled_atlas: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    datasets = pytest.importorskip("datasets")
    export = tmp_path / "shared-atlas"
    counts = export_atlas(export, filled_atlas)
    card = (export / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "config_name: fits" in card and "## Provenance" in card
    assert f"### reference_fits ({counts['reference_fits']} rows)" in card and "`gammalens verify`" in card
    info = json.loads((export / "atlas.json").read_text())
    assert info["rows"] == counts
    fits = datasets.load_dataset("parquet", data_files=str(export / "data" / "fits.parquet"),
                                 cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert fits.num_rows == counts["fits"] and "gamma" in fits.column_names
    profiles = datasets.load_dataset("parquet", data_files=str(export / "data" / "profiles.parquet"),
                                     cache_dir=str(tmp_path / "hf-cache"))["train"]
    runs = datasets.load_dataset(str(export), "runs", cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert runs.num_rows == 2 and json.loads(runs[0]["manifest"])["format"] == "gammalens.run/1"
    row = profiles[0]
    assert len(row["distance"]) == len(row["value"]) > 10


def test_export_refuses_an_existing_target_unless_forced(filled_atlas: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "out"
    export_atlas(export, filled_atlas)
    stamp = (export / "atlas.json").read_text()
    with pytest.raises(AtlasError, match="exists; pass --force"):
        export_atlas(export, filled_atlas)
    assert (export / "atlas.json").read_text() == stamp
    with pytest.raises(SystemExit) as refused:
        main(["atlas", "export", str(export), "--atlas", str(filled_atlas)])
    assert refused.value.code == 2 and "--force" in capsys.readouterr().err
    with pytest.raises(SystemExit) as forced:
        main(["atlas", "export", str(export), "--atlas", str(filled_atlas), "--force"])
    assert forced.value.code == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []   # no partial left
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(AtlasError, match="not a gammalens atlas export"):
        export_atlas(precious, filled_atlas, force=True)
    assert (precious / "thesis.tex").read_text() == "do not delete"


def test_import_rejects_bad_exports(filled_atlas: Path, tmp_path: Path) -> None:
    export = tmp_path / "x"
    export_atlas(export, filled_atlas)
    target = tmp_path / "t.duckdb"
    with pytest.raises(ImportFileError, match="not a gammalens atlas export"):
        import_atlas(tmp_path / "runs", target)
    import duckdb

    fits = export / "data" / "fits.parquet"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * EXCLUDE (r2) FROM read_parquet('{fits}')) TO '{tmp_path / 'f.parquet'}' "
                "(FORMAT PARQUET)")
    con.close()
    (tmp_path / "f.parquet").replace(fits)
    with pytest.raises(ImportFileError, match=r"fits.parquet: column 'r2' is missing"):
        import_atlas(export, target)
    (export / "data" / "runs.parquet").unlink()
    with pytest.raises(ImportFileError, match=r"runs\.parquet is missing"):
        import_atlas(export, target)
    with connect(target, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchall() == [(0,)]
