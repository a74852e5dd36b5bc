"""Comparing models in the atlas: list / show / compare as DataFrames and on the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gammalens.atlas import compare, import_taf, layer_table, list_entries, record_run, select
from gammalens.atlas.compare import parse_theta, predicted_quantity
from gammalens.cli import main
from gammalens.errors import GammalensError
from tests.run_fixtures import taf_csv, write_run

pytestmark = pytest.mark.usefixtures("isolated_atlas")


@pytest.fixture
def atlas(tmp_path: Path) -> Path:
    path = tmp_path / "a.duckdb"
    record_run(write_run(tmp_path / "runs", model_id="fixture/tiny-rope"), path)
    record_run(write_run(tmp_path / "runs", model_id="EleutherAI/pythia-70m", n_layers=3, corpus="random",
                         created="2026-01-03T00:00:00Z", rope_theta=10000.0,
                         extra_columns={"gamma_pade": np.full((3, 4), 0.8)}), path)
    record_run(write_run(tmp_path / "runs", model_id="Qwen/Qwen2.5-0.5B", rope_theta=1e6), path)
    import_taf(taf_csv(), path)
    return path


def test_list_and_filters(atlas: Path) -> None:
    everything = list_entries(atlas)
    measured = everything[everything["kind"] == "measured"]
    n_published = len(taf_csv().read_text(encoding="utf-8").strip().splitlines()) - 1
    assert len(measured) == 3 and len(everything) == 3 + n_published
    tiny = measured[measured["model_id"] == "fixture/tiny-rope"].iloc[0]
    assert (tiny["heads_A"], tiny["heads_boundary"], tiny["heads_B"]) == (4, 1, 3)
    assert (tiny["heads_low_r2"], tiny["heads_not_power_law"]) == (1, 1)
    pythia = list_entries(atlas, family="pythia")
    assert set(pythia["family"]) == {"pythia"} and "EleutherAI/pythia-70m" in set(pythia["model_id"])
    assert set(list_entries(atlas, family="llama", reference=False)["model_id"]) == {
        "fixture/tiny-rope", "EleutherAI/pythia-70m", "Qwen/Qwen2.5-0.5B"}       # model_type llama
    big_theta = list_entries(atlas, theta=(5e5, None))
    assert (big_theta["theta"].astype(float) >= 5e5).all() and "Qwen/Qwen2.5-0.5B" in set(big_theta["model_id"])
    exact = list_entries(atlas, theta=1e6, corpus="random")
    assert set(exact["corpus"]) == {"random"} and (exact["theta"].astype(float) == 1e6).all()


def test_select_by_model_or_run(atlas: Path) -> None:
    by_name = select("pythia-70m", atlas)
    assert list(by_name["kind"]).count("measured") == 1 and list(by_name["kind"]).count("reference") == 3
    run_id = by_name.loc[by_name["kind"] == "measured", "run_id"].iloc[0]
    assert list(select(run_id, atlas)["run_id"]) == [run_id]
    with pytest.raises(GammalensError, match="no run or reference row in the atlas matches 'gpt-17'"):
        select("gpt-17", atlas)


def test_compare_side_by_side_with_predictions(atlas: Path) -> None:
    c = compare(["tiny-rope", "EleutherAI/pythia-70m"], atlas, corpus=None)
    assert c.summary.index.is_unique and len(c.summary) == 5
    assert c.layers.shape == (3, 2)
    tiny = next(k for k in c.layers.columns if k.startswith("fixture/tiny-rope"))
    assert np.isnan(c.layers.loc[2, tiny]) and c.layers.loc[1, tiny] == pytest.approx(np.mean([0.7, 0.95, 1.2, 1.45]))
    model_pred = c.predictions[(c.predictions["name"] == "model")].iloc[0]
    assert model_pred["quantity"] == "gamma" and model_pred["predicted"] == pytest.approx(0.8)
    assert model_pred["error"] == pytest.approx(0.8 - model_pred["measured"])
    assert len(c.predictions) == 3 * 4 + 3 + 1
    assert "Comparison(5 entries" in repr(c)


def test_layer_table(atlas: Path) -> None:
    layers = layer_table("pythia-70m", atlas)
    assert list(layers["layer"]) == [0, 1, 2]
    assert list(layers["heads_A"] + layers["heads_B"] + layers["heads_boundary"]) == [4, 4, 4]


def test_prediction_columns_slot_in() -> None:
    assert predicted_quantity("gamma_pade") == "gamma"
    assert predicted_quantity("d_horizon_pred") == "d_horizon"
    assert predicted_quantity("gamma_mle") is None and predicted_quantity("_pade") is None
    assert parse_theta("1e4:1e6") == (1e4, 1e6) and parse_theta(":5") == (None, 5.0) and parse_theta("2") == 2.0
    with pytest.raises(GammalensError, match="--theta"):
        parse_theta("big")


def test_cli_list_show_compare(atlas: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["atlas", "list", "--family", "pythia", "--theta", "1e3:1e5"],
                 ["atlas", "show", "pythia-70m"],
                 ["atlas", "compare", "tiny-rope", "pythia-70m", "--theta", "1e4"]):
        with pytest.raises(SystemExit) as done:
            main([*argv, "--atlas", str(atlas)])
        assert done.value.code == 0, argv
    out = capsys.readouterr().out
    assert "EleutherAI/pythia-70m" in out and "Per-layer γ" in out and "gamma_pade" in out
    with pytest.raises(SystemExit) as bad:
        main(["atlas", "show", "nothing-like-this", "--atlas", str(atlas)])
    err = capsys.readouterr().err.strip().splitlines()
    assert bad.value.code == 2 and len(err) == 1 and "no run or reference row" in err[0]


def test_cli_reports_a_missing_or_foreign_atlas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as missing:
        main(["atlas", "list", "--atlas", str(tmp_path / "none.duckdb")])
    assert missing.value.code == 2 and "no atlas at" in capsys.readouterr().err
    foreign = tmp_path / "foreign.duckdb"
    foreign.write_text("hello")
    with pytest.raises(SystemExit) as bad:
        main(["atlas", "list", "--atlas", str(foreign)])
    assert bad.value.code == 2 and "not a gammalens atlas" in capsys.readouterr().err
    assert foreign.read_text() == "hello"
