"""Retrieval scores (echo, induction, far mass) against brute-force references built from eager attention.

The reference: a tiny random-init model run with ``attn_implementation='eager'`` and ``output_attentions=True``;
echo and induction are read off the full (B, H, n, n) matrices by explicit loops over the second-copy queries,
the far mass is an explicit sum over (query, key) pairs. The observer under test sees only the probe's chunks.
Tolerance: 1e-5 absolute on mean probabilities (fp32 probabilities, float64 sums; the probe's layer outputs equal
eager's to float rounding, so later layers see the same inputs to ~1e-6).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

from gammalens.errors import GammalensError
from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator
from gammalens.probe.backend import DistanceProbe, probing, registered_probes
from gammalens.retrieval import RetrievalConfig, RetrievalScores, far_mass
from gammalens.retrieval.run import measure_retrieval
from gammalens.retrieval.sequences import RepeatedTokens
from gammalens.runs.reader import read_run
from tests.conftest import build_tiny
from tests.run_fixtures import write_run
from tests.test_cli import assert_clean_failure, run_cli

ATOL = 1e-5
LENGTH, SKIP, BOS = 12, 2, 5  # 1 + 2·12 = 25 tokens: a 7-query chunk cuts the second copy in three


def _tokens(n_seq: int, seed: int = 0) -> RepeatedTokens:
    content = np.random.default_rng(seed).integers(10, 30000, size=(n_seq, LENGTH))  # (N, L)
    return RepeatedTokens.from_content(content, prefix=[BOS], seed=seed)


def eager_scores(net, tokens: RepeatedTokens, skip: int, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(L, H) echo and induction from eager attention matrices, by loops; ``shift`` moves both keys (for the
    test that the comparison can fail)."""
    with torch.no_grad():
        out = net(input_ids=torch.tensor(tokens.input_ids), output_attentions=True)
    attn = np.stack([a.float().numpy() for a in out.attentions])  # (layers, B, H, n, n)
    P, L = tokens.prefix_len, tokens.length
    echo = np.zeros(attn.shape[0:1] + attn.shape[2:3])
    induction = np.zeros_like(echo)
    count = 0
    for b in range(attn.shape[1]):
        for i in range(skip, L):
            q = P + L + i
            echo += attn[:, b, :, q, P + i + shift]
            induction += attn[:, b, :, q, P + i + 1 + shift]
            count += 1
    return echo / count, induction / count


@pytest.mark.parametrize(("arch", "chunk_size", "batch_size"),
                         [("llama_gqa", None, 3), ("llama_gqa", 7, 2), ("llama_gqa", 1, 1), ("mistral_swa", 5, 2)])
def test_observer_equals_eager_attention(arch: str, chunk_size: int | None, batch_size: int) -> None:
    net = build_tiny(arch, attn="eager")
    tokens = _tokens(3)
    ref_echo, ref_induction = eager_scores(net, tokens, SKIP)
    scores = measure_retrieval(net, tokens=tokens, skip=SKIP, batch_size=batch_size, chunk_size=chunk_size)
    assert registered_probes() == [] and net.config._attn_implementation == "eager"
    assert scores.echo.shape == (2, 4) and scores.n_sequences == 3
    np.testing.assert_allclose(scores.echo, ref_echo, atol=ATOL, rtol=0)
    np.testing.assert_allclose(scores.induction, ref_induction, atol=ATOL, rtol=0)
    off_by_one = eager_scores(net, tokens, SKIP, shift=-1)
    assert np.abs(off_by_one[1] - scores.induction).max() > 100 * ATOL  # the comparison has teeth
    if arch == "mistral_swa":  # window 12 < L + 1: no query of the second copy sees its counterpart
        assert np.abs(scores.echo).max() == 0.0


def test_per_sequence_scores_average_to_the_pooled_score() -> None:
    net = build_tiny("llama_gqa", attn="eager")
    tokens = _tokens(4, seed=3)
    scores = measure_retrieval(net, tokens=tokens, skip=SKIP, batch_size=3, chunk_size=6)
    for b in range(4):
        one = RepeatedTokens(tokens.input_ids[b:b + 1], tokens.prefix_len, tokens.length)
        ref = eager_scores(net, one, SKIP)
        np.testing.assert_allclose(scores.doc_echo[b], ref[0], atol=ATOL, rtol=0)
        np.testing.assert_allclose(scores.doc_induction[b], ref[1], atol=ATOL, rtol=0)


def test_far_mass_equals_a_direct_sum_over_eager_attention() -> None:
    net = build_tiny("llama_gqa", attn="eager")
    ids = torch.as_tensor(np.random.default_rng(1).integers(10, 30000, size=(2, 30)))  # (B, n)
    sinks, far = 1, 9
    with torch.no_grad():
        attn = np.stack([a.numpy() for a in net(input_ids=ids, output_attentions=True).attentions])  # (L, B, H, n, n)
    beyond = np.zeros(attn.shape[0:1] + attn.shape[2:3])
    total = np.zeros_like(beyond)
    for q in range(ids.shape[1]):
        for k in range(sinks, q + 1):
            a = attn[:, :, :, q, k].sum(1)  # (L, H) over the batch
            total += a
            if q - k > far:
                beyond += a
    acc = ProfileAccumulator(2, 4, 2, ids.shape[1] - 1, 8, sinks)
    probe = DistanceProbe(acc, chunk_size=8, backend="chunked")
    with torch.inference_mode(), probing(net, probe):
        probe.set_layout(BatchLayout.full(2, ids.shape[1]))
        net(input_ids=ids)
    ours = far_mass(acc.to_profile(np.zeros(2, dtype=np.int64)).mass, far)
    np.testing.assert_allclose(ours, beyond / total, atol=ATOL, rtol=0)
    assert ours.min() > 0 and ours.max() < 1


def test_far_mass_edges() -> None:
    mass = np.array([[[1.0, 2.0, 3.0, 4.0]]])  # (1, 1, 4): d = 0..3
    assert far_mass(mass, 0)[0, 0] == pytest.approx(9 / 10)
    assert far_mass(mass, 2)[0, 0] == pytest.approx(4 / 10)
    assert far_mass(mass, 3)[0, 0] == 0.0
    assert np.isnan(far_mass(np.zeros((1, 1, 4)), 1)[0, 0])
    with pytest.raises(ValueError):
        far_mass(mass, -1)


def test_scores_round_trip_through_json() -> None:
    rng = np.random.default_rng(0)
    s = RetrievalScores(length=256, prefix_len=1, skip=4, seed=7, doc_echo=rng.random((3, 2, 4)),
                        doc_induction=rng.random((3, 2, 4)))
    back = RetrievalScores.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    assert s.top("induction", 2)[0][1] == s.induction.max()
    assert list(s.to_pandas().columns) == ["name", "layer", "head", "echo", "induction"]
    assert "max induction" in repr(s)


def test_sequences_follow_the_tokenizer_prefix() -> None:
    t = RepeatedTokens.from_content(np.array([[4, 5, 6], [7, 8, 9]]), prefix=[0])
    assert t.input_ids.tolist() == [[0, 4, 5, 6, 4, 5, 6], [0, 7, 8, 9, 7, 8, 9]]
    assert (t.first_query, t.n_tokens) == (4, 7)


@pytest.mark.parametrize(("settings", "needle"), [
    ({"length": 1}, "--retrieval-length"), ({"sequences": 0}, "--retrieval-sequences"),
    ({"skip": -1}, "--retrieval-skip"), ({"length": 4, "skip": 4}, "leaves no query"),
    ({"far_distance": -2}, "--retrieval-far-distance"),
])
def test_bad_settings_are_one_line_errors(settings: dict, needle: str) -> None:
    with pytest.raises(GammalensError, match=needle):
        RetrievalConfig(**settings)


def test_far_distance_defaults_to_half_the_context() -> None:
    assert RetrievalConfig().resolve_far_distance(512) == 256
    with pytest.raises(GammalensError, match="beyond it"):
        RetrievalConfig(far_distance=63).resolve_far_distance(64)


# --- the run: CLI end to end, old runs, the atlas -----------------------------------------------------------

def _measure(tmp_path: Path, capsys, *extra: str) -> tuple[int, str, str]:
    return run_cli(["measure", "gammalens-tiny", "--context", "64", "--windows", "2", "--bootstrap", "0",
                    "--out", str(tmp_path / "runs"), "--atlas", str(tmp_path / "atlas.duckdb"), "--quiet", *extra],
                   capsys)


def test_cli_retrieval_run_is_stored_reported_and_recorded(tmp_path: Path, capsys) -> None:
    code, out, err = _measure(tmp_path, capsys, "--retrieval", "--retrieval-length", "24", "--retrieval-sequences",
                              "3", "--seed", "2")
    assert code == 0, err
    run = read_run(Path(out.strip()))
    r = run.manifest["retrieval"]
    assert (r["length"], r["sequences"], r["skip"], r["seed"], r["prefix_len"], r["far_distance"]) == (
        24, 3, 4, 2, 1, 32)  # gammalens-tiny's tokenizer adds a BOS; far distance context/2
    assert run.manifest["timings"]["retrieval_s"] > 0
    heads = run.head_fits
    assert len(heads) == 16
    for row in heads:
        assert 0 <= row["echo"] <= 1 and 0 <= row["induction"] <= 1 and 0 <= row["far_mass"] <= 1
    assert all(row["echo"] is None for row in run.fits if row["scope"] != "head")
    # the stored scores are the pass's, and reproducible from the seed
    from gammalens.model.load import load_model, resolve_model
    from gammalens.retrieval.sequences import repeated_random

    net, tok = load_model(resolve_model("gammalens-tiny"), "fp32", "cpu")
    again = measure_retrieval(net, tokens=repeated_random(tok, 24, 3, seed=2))
    stored = np.array([[row["induction"] for row in heads if row["layer"] == li] for li in range(4)])  # (L, H)
    np.testing.assert_allclose(stored, again.induction, atol=1e-12, rtol=0)
    assert r["sha256"] == repeated_random(tok, 24, 3, seed=2).sha256()
    html = (run.path / "report.html").read_text()
    assert "Retrieval heads" in html and "induction score" in html
    with duckdb.connect(str(tmp_path / "atlas.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT name, echo, induction, far_mass FROM head_fits ORDER BY layer, head").fetchall()
    assert len(rows) == 16 and rows[0][2] == pytest.approx(heads[0]["induction"])


def test_cli_run_without_retrieval_leaves_the_columns_empty(tmp_path: Path, capsys) -> None:
    code, out, err = _measure(tmp_path, capsys)
    assert code == 0, err
    run = read_run(Path(out.strip()))
    assert "retrieval" not in run.manifest and all(row["induction"] is None for row in run.fits)
    assert "Retrieval heads" not in (run.path / "report.html").read_text()


@pytest.mark.parametrize(("flags", "needle"), [
    (["--retrieval-length", "1"], "--retrieval-length"), (["--retrieval-sequences", "0"], "--retrieval-sequences"),
    (["--retrieval", "--retrieval-length", "300"], "512 positions"),
    (["--retrieval", "--retrieval-far-distance", "63"], "--retrieval-far-distance"),
])
def test_cli_bad_retrieval_input(flags: list[str], needle: str, tmp_path: Path, capsys) -> None:
    code, _, err = _measure(tmp_path, capsys, *flags)
    assert_clean_failure(code, err, tmp_path / "runs", needle)


def _strip_retrieval_columns(run_dir: Path) -> None:
    """Rewrite fits.csv as a run of an earlier gammalens wrote it: without the three columns."""
    with (run_dir / "fits.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    keep = [i for i, c in enumerate(rows[0]) if c not in ("echo", "induction", "far_mass")]
    with (run_dir / "fits.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([[row[i] for i in keep] for row in rows])


def test_old_run_without_the_fields_still_reads_reports_and_records(tmp_path: Path) -> None:
    from gammalens.atlas import record_run
    from gammalens.report import write_report

    run_dir = write_run(tmp_path / "runs")
    _strip_retrieval_columns(run_dir)
    run = read_run(run_dir)
    assert all(row["echo"] is None and row["far_mass"] is None for row in run.fits)
    write_report([run_dir], tmp_path / "report.html")
    assert "Retrieval heads" not in (tmp_path / "report.html").read_text()
    record_run(run_dir, tmp_path / "atlas.duckdb")


def test_out_of_range_scores_are_refused(tmp_path: Path) -> None:
    from gammalens.runs.reader import RunFormatError

    run_dir = write_run(tmp_path / "runs")
    text = (run_dir / "fits.csv").read_text().splitlines()
    header = text[0].split(",")
    cells = text[1].split(",")
    cells[header.index("induction")] = "1.5"
    (run_dir / "fits.csv").write_text("\n".join([text[0], ",".join(cells), *text[2:]]) + "\n")
    with pytest.raises(RunFormatError, match="induction"):
        read_run(run_dir)


def test_v2_atlas_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    from gammalens.atlas import connect
    from gammalens.atlas.schema import FITS_V2, SCHEMA_VERSION, TABLES, create_table_sql

    v2 = tmp_path / "v2.duckdb"
    with duckdb.connect(str(v2)) as con:
        for table, columns in TABLES.items():
            con.execute(create_table_sql(table, FITS_V2 if table == "fits" else columns))
        con.execute("INSERT INTO meta VALUES ('format', 'gammalens.atlas'), ('schema_version', '2')")
        con.execute("INSERT INTO runs (run_id, model_id) VALUES ('r1', 'm')")
        con.execute("INSERT INTO fits (run_id, name, scope, layer, head, gamma, estimator) "
                    "VALUES ('r1', 'layers.0.heads.0', 'head', 0, 0, 0.8, 'null')")
    with connect(v2, read_only=True) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        assert con.execute("SELECT gamma, echo, induction, far_mass FROM head_fits").fetchall() == [
            (0.8, None, None, None)]
