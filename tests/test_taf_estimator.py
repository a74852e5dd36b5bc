"""The book's estimator (tafagent ``diagnose_model.py``): against brute force, high precision and eager attention.

References are independent of the code under test: explicit Python loops that follow the tool's source
line by line, mpmath at 40 digits for the closed forms, and eager ``output_attentions`` for the weights.
Tolerances: 1e-12 on pure arithmetic, 1e-10 where float64 sums of 2050 terms enter, 1e-5 on attention
weights from a model (float32 matmuls).
"""

from __future__ import annotations

import json
import math
import random

import duckdb
import mpmath
import numpy as np
import pytest
import torch

from gammalens.errors import GammalensError
from gammalens.probe.backend import probing, registered_probes
from gammalens.probe.last_row import LastRowProbe
from gammalens.taf import TAF_DISTANCES, TafError, TafResult, TafSettings, estimate, taf_gamma
from gammalens.taf.estimator import fit_loglog, random_windows
from gammalens.taf.synthetic import null_corrected_gamma, power_law_row, taf_synthetic, uniform_row
from tests.conftest import build_tiny, minilm_dir
from tests.test_cli import assert_clean_failure, run_cli


def brute_fit(ds: list[int], a: list[float], d_min: int = 1) -> tuple[float, float, float]:
    """OLS of ln a on ln d by the textbook sums: (γ, intercept, R²)."""
    pts = [(math.log(d), math.log(v)) for d, v in zip(ds, a, strict=True)
           if math.isfinite(v) and v > 0 and d >= d_min]
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    res = sum((y - (my + slope * (x - mx))) ** 2 for x, y in pts)
    tot = sum((y - my) ** 2 for _, y in pts)
    return -slope, my - slope * mx, 1 - res / tot


def brute_window(w: np.ndarray) -> float | None:
    """The tool's per-window value: mean over layers of the mean of each layer's finite head weights."""
    vals = []
    for layer in w:
        finite = [float(x) for x in layer if math.isfinite(x)]
        if finite:
            vals.append(sum(finite) / len(finite))
    return sum(vals) / len(vals) if vals else None


def test_estimate_matches_brute_force_loops() -> None:
    rng = np.random.default_rng(0)
    weights = {}
    for d in (10, 30, 100, 500):
        seeds = []
        for _ in range(2):
            w = rng.uniform(1e-4, 1e-2, size=(5, 3, 4)) / d  # (windows, layers, heads)
            w[rng.random(w.shape) < 0.1] = np.nan  # non-finite heads are dropped, as in the tool
            w[0, 1, :] = np.inf                     # a layer with no finite head is skipped
            seeds.append(w)
        weights[d] = seeds
    r = estimate(weights)
    expected = []
    for seeds in weights.values():
        per_seed = []
        for w in seeds:
            vals = [v for v in (brute_window(x) for x in w) if v is not None]
            per_seed.append(sum(vals) / len(vals))
        expected.append(sum(per_seed) / len(per_seed))
    assert r.distances == (10, 30, 100, 500)
    np.testing.assert_allclose(r.attention, expected, rtol=1e-12)
    g, la, r2 = brute_fit(list(weights), expected)
    assert r.gamma == pytest.approx(g, abs=1e-12) and r.log_a == pytest.approx(la, abs=1e-12)
    assert r.r2 == pytest.approx(r2, abs=1e-12)
    assert r.n_nonfinite == sum(int((~np.isfinite(w)).sum()) for s in weights.values() for w in s)
    assert TafResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_fit_minimum_distance_and_too_few_points() -> None:
    ds, a = [10, 20, 30, 50, 100], [0.1, 0.06, 0.03, 0.02, 0.011]
    g, _, r2, used = fit_loglog(ds, a, min_distance=30)
    assert used == (30, 50, 100)
    assert (g, r2) == pytest.approx(brute_fit(ds, a, d_min=30)[::2], abs=1e-12)
    assert math.isnan(fit_loglog([10, 20], [0.1, float("nan")])[0])


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.5])
def test_synthetic_matches_brute_force(gamma: float) -> None:
    r = taf_synthetic(uniform_row if gamma == 0 else power_law_row(gamma))
    expected = []
    for d in TAF_DISTANCES:
        n = d + 50
        w = [max(n - 1 - k, 1) ** -gamma for k in range(n)]  # key k is n−1−k tokens before the last query
        expected.append(w[49] / math.fsum(w))
    np.testing.assert_allclose(r.attention, expected, rtol=1e-12)
    assert r.gamma == pytest.approx(brute_fit(list(TAF_DISTANCES), expected)[0], abs=1e-10)


def _mp_gamma(a_of_d, ds) -> mpmath.mpf:
    x = [mpmath.log(d) for d in ds]
    y = [mpmath.log(a_of_d(d)) for d in ds]
    mx, my = mpmath.fsum(x) / len(x), mpmath.fsum(y) / len(y)
    return -mpmath.fsum((u - mx) * (v - my) for u, v in zip(x, y, strict=True)) / mpmath.fsum((u - mx) ** 2 for u in x)


def test_uniform_attention_against_high_precision_reference() -> None:
    """A(d) = 1/(d + 50) exactly; the book's estimator turns that into γ ≈ 0.69 (ours: 0)."""
    with mpmath.workdps(40):
        ref = _mp_gamma(lambda d: 1 / mpmath.mpf(d + 50), TAF_DISTANCES)
        ref30 = _mp_gamma(lambda d: 1 / mpmath.mpf(d + 50), [d for d in TAF_DISTANCES if d >= 30])
    assert 0.68 < ref < 0.70  # the DESIGN note's "γ ≈ 0.69 over d ∈ {10 … 2000}"
    assert taf_synthetic(uniform_row).gamma == pytest.approx(float(ref), abs=1e-12)
    assert taf_synthetic(uniform_row, fit_min_distance=30).gamma == pytest.approx(float(ref30), abs=1e-12)
    assert abs(null_corrected_gamma(0.0, context=256)) < 1e-9


def test_power_law_against_high_precision_reference() -> None:
    g = mpmath.mpf("0.7")
    with mpmath.workdps(30):
        def a(d):
            n = d + 50
            return mpmath.mpf(d) ** -g / (1 + mpmath.fsum(mpmath.mpf(j) ** -g for j in range(1, n)))
        ref = _mp_gamma(a, TAF_DISTANCES)
    assert taf_synthetic(power_law_row(0.7)).gamma == pytest.approx(float(ref), abs=1e-10)
    assert float(ref) - 0.7 > 0.2  # the book's estimator reads 0.7 as ≈ 0.93
    assert null_corrected_gamma(0.7, context=256) == pytest.approx(0.7, abs=1e-6)


@pytest.mark.parametrize("arch", ["llama_gqa", "mistral_swa", "gemma2_softcap", "bert"])
def test_last_row_equals_eager_output_attentions(arch: str) -> None:
    """GQA, a sliding window shorter than the sequence, soft-cap with alternating windows, bidirectional."""
    model = build_tiny(arch)
    eager = build_tiny(arch, attn="eager")
    eager.load_state_dict(model.state_dict())
    ids = torch.randint(1000, 30000, (3, 60), generator=torch.Generator().manual_seed(1))
    probe = LastRowProbe()
    with torch.no_grad():
        ref = eager(input_ids=ids, output_attentions=True, output_hidden_states=True)
        with probing(model, probe):
            out = model(input_ids=ids, output_hidden_states=True)
    assert registered_probes() == []
    assert sorted(probe.rows) == list(range(len(ref.attentions)))
    for layer, attn in enumerate(ref.attentions):
        torch.testing.assert_close(probe.rows[layer], attn[:, :, -1].float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.hidden_states[-1], ref.hidden_states[-1], atol=1e-4, rtol=1e-4)


def test_taf_gamma_matches_the_tools_loop_on_eager_attention() -> None:
    """The tool's own procedure (random.Random(42) ids, eager output_attentions, per-layer finite means)."""
    from transformers import AutoTokenizer

    model = build_tiny("llama_gqa")
    eager = build_tiny("llama_gqa", attn="eager")
    eager.load_state_dict(model.state_dict())
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    r = taf_gamma(loaded=(model, tok), windows=3, batch_size=2)
    assert r.distances == (10, 20, 30, 50)  # d + 50 ≤ 128 positions
    expected = []
    for d in r.distances:
        rng, seq_len = random.Random(42), d + 50
        target, last = seq_len - d - 1, seq_len - 1
        values = []
        for _ in range(3):
            tokens = [rng.randint(1000, min(tok.vocab_size - 1, 49_000)) for _ in range(seq_len)]
            with torch.no_grad():
                out = eager(torch.tensor([tokens]), output_attentions=True, return_dict=True)
            values.append(brute_window(np.stack([a[0, :, last, target].numpy() for a in out.attentions])))
        expected.append(sum(values) / len(values))
    np.testing.assert_allclose(r.attention, expected, rtol=1e-5)
    assert r.gamma == pytest.approx(brute_fit(list(r.distances), expected)[0], abs=1e-4)
    assert r.token_range == (1000, tok.vocab_size - 1) and r.seeds == (42,)
    assert registered_probes() == []


def test_random_windows_follow_the_tool_and_small_vocabularies() -> None:
    ids, rng_range = random_windows(10, 2, seed=7, vocab_size=60_000)
    ref = random.Random(7)
    assert ids.tolist() == [[ref.randint(1000, 49_000) for _ in range(60)] for _ in range(2)]
    assert rng_range == (1000, 49_000)
    assert random_windows(10, 1, seed=0, vocab_size=500)[1] == (0, 499)


def test_bad_settings_are_taf_errors() -> None:
    with pytest.raises(TafError, match="--taf-windows"):
        TafSettings(windows=0)
    with pytest.raises(TafError, match="increasing"):
        TafSettings(distances=(20, 10))
    with pytest.raises(TafError, match="at least two distances"):
        TafSettings().usable(max_positions=65)  # only d = 10 fits: 10 + 50 ≤ 65 < 20 + 50
    assert TafSettings().usable(max_positions=70) == (10, 20)
    assert TafSettings().usable(max_positions=65, allow_extrapolation=True) == TAF_DISTANCES
    with pytest.raises(TafError, match="at least two distances"):
        TafSettings(fit_min_distance=50).usable(max_positions=128)
    from gammalens.measuring.config import MeasureConfig

    with pytest.raises(GammalensError, match="--estimator"):
        MeasureConfig(estimator="book")


def test_cli_estimator_taf_end_to_end(tmp_path, capsys) -> None:
    atlas = tmp_path / "atlas.duckdb"
    args = ["measure", "gammalens-tiny", "--estimator", "taf", "--taf-max-distance", "100", "--taf-windows", "2",
            "--corpus", "random", "--context", "128", "--windows", "2", "--bootstrap", "10", "--no-report",
            "--out", str(tmp_path / "runs"), "--atlas", str(atlas)]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "book's estimator (taf): γ_taf =" in out
    run = next((tmp_path / "runs").iterdir())
    man = json.loads((run / "manifest.json").read_text())
    taf = man["taf"]
    assert taf["distances"] == [10, 20, 30, 50, 100] and taf["n_windows"] == 2 and taf["seeds"] == [0]
    assert man["settings"]["estimator"] == "taf" and "taf_s" in man["timings"]
    import gammalens

    api = gammalens.taf_gamma("gammalens-tiny", windows=2, seeds=(0,), max_distance=100)
    assert taf["gamma"] == pytest.approx(api.gamma, abs=1e-6)
    assert taf["gamma_uniform"] == pytest.approx(taf_synthetic(uniform_row, api.distances).gamma, abs=1e-12)
    with duckdb.connect(str(atlas), read_only=True) as con:
        rows = con.execute("SELECT name, estimator, gamma, r2, fit_d_min, fit_d_max, n_docs FROM taf_fits").fetchall()
        ours = con.execute("SELECT name, estimator, gamma FROM model_fits").fetchall()
    assert rows == [("taf", "taf", pytest.approx(taf["gamma"]), pytest.approx(taf["r2"]), 10, 100, 2)]
    assert ours == [("model", "null", pytest.approx(man["result"]["gamma"]))]
    from types import SimpleNamespace

    from gammalens.cli.summary import summary_dict

    fake = SimpleNamespace(manifest=man, run_dir=None, model_fit={"gamma": man["result"]["gamma"]}, fits=[])
    assert summary_dict(fake)["taf"]["gamma"] == pytest.approx(taf["gamma"])  # `measure --json` carries it


@pytest.mark.parametrize("extra, needle", [
    (["--estimator", "book"], "--estimator"),
    (["--estimator", "taf", "--taf-windows", "0"], "--taf-windows"),
    (["--estimator", "taf", "--taf-max-distance", "15"], "at least two distances"),
    (["--estimator", "taf", "--taf-fit-min-distance", "0"], "--taf-fit-min-distance"),
])
def test_cli_bad_taf_values_exit_2(extra: list[str], needle: str, tmp_path, capsys) -> None:
    out_dir = tmp_path / "runs"
    code, _, err = run_cli(["measure", "gammalens-tiny", "--context", "64", "--windows", "1", "--no-atlas",
                            "--out", str(out_dir), *extra], capsys)
    assert_clean_failure(code, err, out_dir, needle)


def test_atlas_v1_is_migrated_and_v1_exports_import(tmp_path) -> None:
    from gammalens.atlas import connect, export_atlas, import_atlas
    from gammalens.atlas.schema import FITS_V1, SCHEMA_VERSION, TABLES, create_table_sql

    v1 = tmp_path / "v1.duckdb"
    with duckdb.connect(str(v1)) as con:
        for table, columns in TABLES.items():
            con.execute(create_table_sql(table, FITS_V1 if table == "fits" else columns))
        con.execute("INSERT INTO meta VALUES ('format', 'gammalens.atlas'), ('schema_version', '1')")
        con.execute("INSERT INTO runs (run_id, model_id) VALUES ('r1', 'm')")
        con.execute("INSERT INTO fits (run_id, name, scope, gamma) VALUES ('r1', 'model', 'model', 0.8)")
    with connect(v1) as con:
        assert con.execute("SELECT name, estimator, gamma FROM model_fits").fetchall() == [("model", "null", 0.8)]
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    export = tmp_path / "export"
    export_atlas(export, v1)
    fits = export / "data" / "fits.parquet"
    with duckdb.connect() as con:  # turn the export into a v1 export: no estimator column
        con.execute(f"COPY (SELECT * EXCLUDE (estimator) FROM read_parquet('{fits}')) TO '{fits}.v1' (FORMAT PARQUET)")
    (export / "data" / "fits.parquet.v1").replace(fits)
    info = json.loads((export / "atlas.json").read_text())
    (export / "atlas.json").write_text(json.dumps(info | {"schema_version": 1}))
    target = tmp_path / "target.duckdb"
    import_atlas(export, target)
    with connect(target, read_only=True) as con:
        assert con.execute("SELECT run_id, estimator FROM fits").fetchall() == [("r1", "null")]
