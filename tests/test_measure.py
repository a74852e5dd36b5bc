"""End to end on real weights (the pretrained MiniLM), the run directory, the Python API and the receipt."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

import gammalens
from gammalens.cli import main
from gammalens.probe.backend import registered_probes
from gammalens.probe.profile import DistanceProfile
from gammalens.runs.reader import read_fits_csv
from gammalens.runs.writer import FIT_COLUMNS


def test_minilm_run_directory_is_complete(minilm_run) -> None:
    r = minilm_run
    assert registered_probes() == []
    assert sorted(p.name for p in r.run_dir.iterdir() if p.name != "report.html") == [
        "fits.csv", "manifest.json", "profile.npz"]
    man = json.loads((r.run_dir / "manifest.json").read_text())
    arch = man["model"]["arch"]
    assert (arch["n_layers"], arch["n_heads"], arch["n_kv_heads"], arch["head_dim"]) == (6, 12, 12, 32)
    assert arch["causal"] is False and arch["position_encoding"] == "learned" and arch["max_positions"] == 512
    assert man["model"]["source"] == "embedded" and len(man["model"]["weights_sha256"]["model.safetensors"]) == 64
    assert man["corpus"]["name"] == "stdlib" and man["corpus"]["n_windows"] == 6
    assert man["settings"]["context"] == 64 and man["settings"]["fit_range"] == "1:32"
    for k in ("gammalens", "torch", "transformers", "numpy", "python"):
        assert man["versions"][k]
    assert set(man["timings"]) >= {"load_s", "forward_s", "fit_s", "total_s", "tokens_per_s"}
    assert len(man["layer_modules"]) == 6 and man["layer_modules"][0].startswith("encoder.layer.0")


def test_minilm_fits(minilm_run) -> None:
    rows = read_fits_csv(minilm_run.run_dir / "fits.csv")
    with (minilm_run.run_dir / "fits.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header[: len(FIT_COLUMNS)] == FIT_COLUMNS
    heads = [r for r in rows if r["scope"] == "head"]
    assert len(heads) == 72 and len([r for r in rows if r["scope"] == "layer"]) == 6 and rows[-1]["name"] == "model"
    assert {(r["layer"], r["head"]) for r in heads} == {(layer, h) for layer in range(6) for h in range(12)}
    for r in rows:
        assert math.isfinite(r["gamma"]) and r["gamma_ci_low"] <= r["gamma_ci_high"]
        assert r["phase"] in {"A", "B", "boundary"}
        ci_has_one = r["gamma_ci_low"] <= 1 <= r["gamma_ci_high"]
        assert (r["phase"] == "boundary") == ci_has_one or (not ci_has_one and r["phase"] == ("A" if r["gamma"] < 1 else "B"))
        assert 0 <= r["sink_mass"] <= 1
        assert r["preferred_model"] in {"power_law", "exponential", "power_law_cutoff"}
    model = rows[-1]
    assert model["gamma_ci_low"] <= model["gamma"] <= model["gamma_ci_high"]
    # what the Python result holds is what the file holds
    df = minilm_run.to_pandas()
    assert np.allclose(df["gamma"].to_numpy(), [r["gamma"] for r in rows])


def test_minilm_profile_conserves_attention(minilm_run) -> None:
    prof = DistanceProfile.load(minilm_run.run_dir / "profile.npz")
    n, s, docs = 64, prof.sink_tokens, 6
    total = prof.mass.sum(-1) + prof.doc_sink_sum.sum(0)  # (L, H)
    # queries past the sink spread mass 1 over sink + non-sink keys; the sink query itself adds ≤ 1 more
    assert np.all(total >= docs * (n - s) - 1e-6) and np.all(total <= docs * n + 1e-6)
    for d in (1, 7, 40):
        expected = docs * sum(1 for k in range(s, n) for q in (k - d, k + d) if 0 <= q < n)
        assert np.all(prof.pairs[:, d] == expected)


def test_python_api_without_run_directory() -> None:
    r = gammalens.measure("minilm", corpus="random", context=48, windows=3, bootstrap=20, sink_tokens=2)
    assert r.run_dir is None
    assert r.manifest["settings"]["sink_tokens"] == 2
    assert "γ=" in repr(r)


def test_verify_round_trip(minilm_run, capsys) -> None:
    with pytest.raises(SystemExit) as ex:
        main(["verify", str(minilm_run.run_dir)])
    out = capsys.readouterr().out
    assert ex.value.code in (0, None), out
    assert "verified" in out


def test_verify_detects_a_tampered_run(minilm_run, tmp_path, capsys) -> None:
    import shutil

    d = tmp_path / "tampered"
    shutil.copytree(minilm_run.run_dir, d)
    rows = (d / "fits.csv").read_text().splitlines()
    cells = rows[-1].split(",")
    cells[4] = repr(float(cells[4]) + 0.05)  # the model's γ
    rows[-1] = ",".join(cells)
    (d / "fits.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(SystemExit) as ex:
        main(["verify", str(d)])
    assert ex.value.code == 1
    assert "does not reproduce" in capsys.readouterr().out


def test_verify_rejects_a_non_run_directory(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as ex:
        main(["verify", str(tmp_path)])
    assert ex.value.code == 2
    assert "not a gammalens run directory" in capsys.readouterr().err


def test_bf16_weights_measure_close_to_fp32(tiny_llama_dir) -> None:
    """The probe computes in fp32 whatever the weights; bf16 weights move γ only by their own rounding."""
    kw = {"corpus": "random", "context": 64, "windows": 4, "bootstrap": 0}
    g32 = gammalens.measure(str(tiny_llama_dir), dtype="fp32", **kw).to_pandas().set_index("name")["gamma"]
    g16 = gammalens.measure(str(tiny_llama_dir), dtype="bf16", **kw).to_pandas().set_index("name")["gamma"]
    assert np.all(np.isfinite(g16))
    assert float((g32 - g16).abs().max()) < 0.05


def test_rope_model_rows_carry_the_theory_columns(tiny_llama_dir) -> None:
    r = gammalens.measure(str(tiny_llama_dir), corpus="random", context=64, windows=3, bootstrap=20, eps=0.1)
    m = r.model_fit
    theta, T = 10000.0, 64  # LlamaConfig's default rope θ; the measured context
    assert m["gamma_pade"] == pytest.approx((2 * theta - T * 2**0.5) / (2 * theta + T * 2**0.5), rel=1e-12)
    assert m["gamma_pade_rel_error"] == pytest.approx((m["gamma"] - m["gamma_pade"]) / abs(m["gamma_pade"]))
    # empirical D_f from the model's own null-corrected profile, recomputed here by a plain cumulative sum
    mass = r.profile.mass_cs.sum((0, 1))[1:]
    expected = int(np.argmax(np.cumsum(mass) >= 0.9 * mass.sum())) + 1
    assert m["D_f_empirical"] == expected
    heads = [row for row in r.fits if row["scope"] == "head"]
    assert all(row["chi"] == pytest.approx(1 / abs(row["gamma"] - 1)) for row in heads)
