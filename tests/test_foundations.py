"""Fresh-clone promises: piped tables stay whole, `--json` summaries, the report's receipt names the run
folder, and a failed run leaves no `--out` folder behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gammalens.runs.reader import read_fits_csv
from tests.test_cli import run_cli


def test_report_receipt_names_the_run_folder_not_the_partial_one(minilm_run) -> None:
    html = (minilm_run.run_dir / "report.html").read_text(encoding="utf-8")
    assert f"gammalens verify {minilm_run.run_dir.name}</code>" in html
    assert ".partial" not in html


def test_piped_summary_keeps_every_number(minilm_run, capsys) -> None:
    from gammalens.cli.summary import print_summary

    print_summary(minilm_run)           # pytest's captured stdout is not a terminal, like a pipe or a log
    out = capsys.readouterr().out
    assert "…" not in out
    for row in (r for r in minilm_run.fits if r["scope"] == "layer"):
        assert f"{row['gamma']:.3f}" in out and f"[{row['gamma_ci_low']:.3f}, {row['gamma_ci_high']:.3f}]" in out
        assert row["preferred_model"] in out


def test_measure_json_summary_matches_the_run_directory(tiny_llama_dir: Path, tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(["measure", str(tiny_llama_dir), "--context", "32", "--windows", "2", "--bootstrap", "0",
                              "--no-atlas", "--no-report", "--out", str(tmp_path / "runs"), "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    run_dir = Path(summary["run_dir"])
    fits = read_fits_csv(run_dir / "fits.csv")
    layers = [r for r in fits if r["scope"] == "layer"]
    assert [r["gamma"] for r in summary["layers"]] == pytest.approx([r["gamma"] for r in layers], rel=1e-12)
    model = next(r for r in fits if r["scope"] == "model")
    assert summary["result"]["gamma"] == pytest.approx(model["gamma"], rel=1e-12)
    assert summary["settings"]["context"] == 32 and summary["model"] == str(tiny_llama_dir)


def test_sinks_json_summary(tiny_llama_dir: Path, tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(["sinks", str(tiny_llama_dir), "--context", "32", "--windows", "2", "--bootstrap", "0",
                              "--ablate-massive", "none", "--no-bos-variant", "--no-atlas", "--no-report",
                              "--out", str(tmp_path / "runs"), "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    fits = read_fits_csv(Path(summary["run_dir"]) / "fits.csv")
    layers = [r for r in fits if r["scope"] == "layer"]
    assert len(summary["layers"]) == len(layers) == 2
    assert [r["sink_mass_k1"] for r in summary["layers"]] == pytest.approx([r["sink_mass_k1"] for r in layers])
    assert 0.0 <= summary["model_columns"]["sink_rate"] <= 1.0


def test_failed_run_creates_no_out_folder(tiny_llama_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "not" / "yet"
    code, _, err = run_cli(["measure", str(tiny_llama_dir), "--context", "9999", "--out", str(out)], capsys)
    assert code == 2 and "exceeds the model's maximum positions" in err
    assert not (tmp_path / "not").exists()
