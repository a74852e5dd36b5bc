"""``gammalens sinks`` end to end: MiniLM on real weights, the run directory, atlas and report, the CLI and
its error paths, and γ ⟂ sink across the atlas's models."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas.testing as pd_testing
import pytest

import gammalens
from gammalens.atlas import connect
from gammalens.atlas.sink_gamma import across_models
from gammalens.probe.backend import registered_probes
from gammalens.publish import publish_sinks
from gammalens.runs.reader import read_fits_csv
from gammalens.sinks import correlate, measure_sinks, read_sinks
from tests.conftest import save_tiny
from tests.test_cli import assert_clean_failure, run_cli

MINILM = {"context": 64, "windows": 4, "bootstrap": 20}


@pytest.fixture(scope="module")
def minilm_sinks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("minilm_sinks")
    return publish_sinks(measure_sinks("minilm", **MINILM), tmp / "runs", record=True, atlas=tmp / "atlas.duckdb"), tmp


def test_minilm_sinks_on_real_weights(minilm_sinks) -> None:
    r, _ = minilm_sinks
    b = r.baseline
    assert registered_probes() == []
    # [CLS] is the sink: the peak key of almost every head, in every window; no massive activations
    assert (b.sink_kind == "bos").sum() >= 60 and (b.sink_token == "[CLS]").sum() >= 60
    assert not r.massive.any and r.ablated is None and np.nanmax(r.massive.top_abs) < 100
    assert 0.4 <= r.sink_rate <= 0.8 and b.mass_k(1)[1:].mean() > 0.2 > b.mass_k(1)[0].mean()
    # without [CLS] the sink moves to the first content token, at about the same mass (learned positions)
    assert r.bos.label == "no_bos" and (r.bos.sink_kind == "first_content").sum() >= 60
    assert abs(r.bos.mass_k(1).mean() - b.mass_k(1).mean()) < 0.05
    assert r.correlation.n == 72 and r.correlation.pearson_ci_low <= r.correlation.pearson <= r.correlation.pearson_ci_high


def test_observers_and_hooks_leave_gamma_alone(minilm_sinks) -> None:
    """The baseline pass is a plain measurement: same γ, CIs and sink mass, and `gammalens verify` accepts it."""
    from gammalens.measuring.verify import verify_run

    r, _ = minilm_sinks
    plain = gammalens.measure("minilm", **MINILM)
    for a, b in zip(plain.fits, r.measurement.fits, strict=True):
        assert a["name"] == b["name"] and a["gamma"] == b["gamma"] and a["gamma_ci_low"] == b["gamma_ci_low"]
        assert a["sink_mass"] == b["sink_mass"]
    verdict = verify_run(r.run_dir)
    assert verdict.ok and verdict.max_abs_diff == 0.0


def test_run_directory_atlas_and_report(minilm_sinks) -> None:
    r, tmp = minilm_sinks
    files = sorted(p.name for p in r.run_dir.iterdir())
    assert files == ["fits.csv", "manifest.json", "profile.npz", "report.html", "sinks.json"]
    manifest = json.loads((r.run_dir / "manifest.json").read_text())
    assert manifest["sinks"]["ks"] == [1, 4] and manifest["sinks"]["massive_abs"] == 100
    rows = read_fits_csv(r.run_dir / "fits.csv")
    head = next(row for row in rows if row["name"] == "layers.2.heads.4")
    assert head["sink_kind"] == "bos" and head["sink_position"] == 0 and head["sink_token"] == "[CLS]"
    assert math.isclose(head["sink_mass_k4"], float(r.baseline.mass_k(4)[2, 4]), rel_tol=1e-12)
    assert rows[-1]["name"] == "model" and math.isclose(rows[-1]["sink_rate"], r.sink_rate)
    with connect(tmp / "atlas.duckdb", read_only=True) as con:
        got = dict(con.execute("SELECT column_name, count(*) FROM fit_extras WHERE column_name IN "
                               "('sink_mass_k4', 'peak_key_share', 'sink_kind', 'sink_rate') GROUP BY 1").fetchall())
        kind = con.execute("SELECT text FROM fit_extras WHERE name = 'layers.2.heads.4' AND column_name = 'sink_kind'"
                           ).fetchone()[0]
    assert got == {"sink_mass_k4": 72 + 6 + 1, "peak_key_share": 72 + 6 + 1, "sink_kind": 72, "sink_rate": 6 + 1}
    assert kind == "bos"
    html = (r.run_dir / "report.html").read_text()
    assert "Sinks and massive activations" in html and "γ ⟂ sink" in html and "no massive activations" in html
    back = read_sinks(r.run_dir)
    assert json.dumps(back.to_dict(), sort_keys=True) == json.dumps(r.to_dict(), sort_keys=True)
    pd_testing.assert_frame_equal(back.to_pandas(), r.to_pandas())
    assert "sink_rate=" in repr(r) and read_sinks(tmp) is None


def test_gamma_sink_correlation_across_atlas_models(tmp_path) -> None:
    atlas = tmp_path / "atlas.duckdb"
    for i, arch in enumerate(["llama_gqa", "qwen2", "gpt2", "gpt_neox_partial"]):
        path = save_tiny(arch, tmp_path / f"m{i}", seed=i)
        gammalens.measure(str(path), corpus="random", context=24, windows=2, bootstrap=0, out=tmp_path / "runs",
                          record=True, atlas=atlas, report=False)
    gammalens.measure(str(tmp_path / "m0"), corpus="random", context=24, windows=2, bootstrap=0, sink_tokens=2,
                      out=tmp_path / "runs", record=True, atlas=atlas, report=False)  # another K: not comparable
    c, points = across_models(atlas, sink_tokens=1)
    assert c.n == 4 and c.over == "models" and len(points) == 4
    ref = correlate(points["sink_mass"].astype(float), points["gamma"].astype(float))
    assert c.pearson == ref.pearson and c.spearman == ref.spearman
    assert across_models(atlas, sink_tokens=2)[0].n == 1


def test_cli_sinks_summary(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    path = save_tiny("llama_gqa", tmp_path / "tiny")
    code, out, err = run_cli(["sinks", str(path), "--corpus", "random", "--context", "32", "--windows", "2",
                              "--bootstrap", "0", "--out", str(tmp_path / "runs"), "--no-atlas", "--heads", "3"],
                             capsys)
    assert code == 0, err
    for needle in ("per layer", "sink rate", "massive activations: none", "BOS: the tokenizer starts every window "
                   "with [CLS]", "γ ⟂ sink", "3 strongest sinks", "sinks.json"):
        assert needle in out, needle
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert read_sinks(run_dir).baseline.context == 32


def test_cli_sinks_help(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(["sinks", "--help"], capsys)
    assert code == 0
    for flag in ("--sink-tokens", "--ablate-massive", "--massive-abs", "--massive-ratio", "--sink-eps",
                 "--bos-variant", "--corpus", "--context", "--windows", "--out"):
        assert flag in out


@pytest.mark.parametrize(("args", "needle"), [
    (["--context", "32", "--sink-tokens", "40"], "not smaller than the context"),
    (["--sink-tokens", "200"], "not smaller than the context"),  # against the default context (128) after loading
    (["--massive-abs", "0"], "--massive-abs must be > 0"),
    (["--massive-ratio", "-3"], "--massive-ratio must be > 0"),
    (["--sink-eps", "0"], "--sink-eps"),
    (["--ablate-massive", "half"], "--ablate-massive"),
])
def test_cli_sinks_bad_input(args, needle, tmp_path, capsys, tiny_llama_dir) -> None:
    out_dir = tmp_path / "runs"
    code, _, err = run_cli(["sinks", str(tiny_llama_dir), "--corpus", "random", "--windows", "2", "--bootstrap", "0",
                            "--out", str(out_dir), "--no-atlas", *args], capsys)
    assert_clean_failure(code, err, out_dir, needle)


def test_api_bad_input() -> None:
    from gammalens.errors import GammalensError

    with pytest.raises(GammalensError, match="unknown setting"):
        measure_sinks("minilm", context=64, sink_token=3)
    with pytest.raises(GammalensError, match="not smaller than the context"):
        measure_sinks("minilm", context=16, ks=(1, 16))


def test_bos_variant_for_tokenizers_without_a_bos_prefix() -> None:
    """GPT-2-like tokenizers add nothing: the variant prepends their BOS token; without one there is no variant."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from gammalens.corpus import load_windows
    from gammalens.sinks.run import _bos_note, _bos_windows
    from tests.conftest import minilm_dir

    tw = load_windows("random", AutoTokenizer.from_pretrained(minilm_dir()), 16, 2, seed=0)
    windows, prefix_len, label = _bos_windows(tw, [], SimpleNamespace(bos_token_id=7))
    assert (label, prefix_len, windows.input_ids.shape) == ("with_bos", 1, (2, 16))
    assert (windows.input_ids[:, 0] == 7).all() and (windows.input_ids[:, 1:] == tw.input_ids[:, :-1]).all()
    assert windows.sha256 != tw.sha256 and "prepended" in windows.name
    assert _bos_windows(tw, [], SimpleNamespace(bos_token_id=None)) is None
    assert "no BOS token" in _bos_note([], SimpleNamespace(bos_token=None), True)
    assert "prepends" in _bos_note([], SimpleNamespace(bos_token="<|endoftext|>"), True)
    dropped, prefix_len, label = _bos_windows(tw, [101], None)
    assert (label, prefix_len) == ("no_bos", 0) and (dropped.input_ids == tw.input_ids[:, 1:]).all()
