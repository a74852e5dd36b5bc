"""The compact profile layout (issue 14, part 4), tested against the full arrays of the same measurement.

One tiny GQA Llama is measured twice, identically but for ``--profile-layout``: ``full`` (every distance,
float64) and ``compact:E`` (distances ≤ E exact, log-spaced bin sums beyond, per-document arrays in float32).
References are independent of the code under test: ``math.fsum`` over the full arrays, bin by bin.
Tolerances: bit-equal where the layout keeps values (d ≤ E, the small arrays, fits.csv); 1e-12 relative
for float64 bin sums; 1e-6 relative for the float32 per-document arrays.
"""

from __future__ import annotations

import doctest
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gammalens import measure
from gammalens.measuring.config import MeasureConfig
from gammalens.probe import grid, profile
from gammalens.probe.grid import bin_sums, expand, grid_edges
from gammalens.probe.profile import DistanceProfile, profile_nbytes
from gammalens.runs.reader import read_run

E = 16          # exact distances of the compact run: small, so that a 256-token run has bins to check
CONTEXT = 256


@pytest.fixture(scope="module")
def runs(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """(full, compact) MeasureResults of the same measurement; the compact one also writes its report."""
    out = tmp_path_factory.mktemp("layouts")
    base = dict(model=str(tiny_llama_dir), context=CONTEXT, windows=3, bootstrap=20, allow_extrapolation=True)
    full = measure(config=MeasureConfig(**base, profile_layout="full"), out=out / "full", report=False, record=False)
    compact = measure(config=MeasureConfig(**base, profile_layout=f"compact:{E}"), out=out / "compact",
                      report=True, record=False)
    return full, compact


def _fsum_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The reference: every bin summed with math.fsum (correctly rounded), element by element."""
    flat = values.reshape(-1, values.shape[-1])
    out = np.array([[math.fsum(row[a:b]) for a, b in itertools.pairwise(edges)] for row in flat])
    return out.reshape(*values.shape[:-1], len(edges) - 1)


def _rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "extras"} | r["extras"] for r in read_run(run_dir).fits]


def test_fits_and_d_f_do_not_depend_on_the_layout(runs) -> None:
    full, compact = runs
    assert read_run(full.run_dir).layout == "full" and read_run(compact.run_dir).layout == "compact"
    a, b = _rows(full.run_dir), _rows(compact.run_dir)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:  # γ, CI, R², D_f, D_f_empirical, γ_Padé …: bit-equal (fitted from the in-memory exact sums)
            same = x[k] == y[k] or (isinstance(x[k], float) and math.isnan(x[k]) and math.isnan(y[k]))
            assert same, (x["name"], k, x[k], y[k])
    assert full.manifest["profile_layout"] == full.manifest["settings"]["profile_layout"] == "full"
    assert compact.manifest["profile_layout"] == compact.manifest["settings"]["profile_layout"] == f"compact:{E}"


def test_compact_arrays_are_the_full_arrays_binned(runs) -> None:
    full, compact = runs
    with np.load(full.run_dir / "profile.npz") as f, np.load(compact.run_dir / "profile.npz") as c:
        assert str(c["layout"]) == "compact" and int(c["exact_to"]) == E and "layout" not in f.files
        edges, edges_cs = c["edges"], c["edges_cs"]
        assert edges[-1] == f["mass"].shape[-1] == CONTEXT and edges_cs[-1] == f["mass_cs"].shape[-1]
        assert np.array_equal(edges[: E + 2], np.arange(E + 2)) and edges.size < CONTEXT
        for key, e in (("mass", edges), ("pairs", edges), ("mass_cs", edges_cs)):
            assert np.array_equal(c[key][..., : E + 1], f[key][..., : E + 1]), key           # d ≤ E: bit-equal
            np.testing.assert_allclose(c[key], _fsum_bins(f[key], e), rtol=1e-12, atol=0, err_msg=key)
        assert c["doc_mass_cs"].dtype == np.float32
        np.testing.assert_allclose(c["doc_mass_cs"], _fsum_bins(f["doc_mass_cs"], edges_cs), rtol=1e-6, atol=1e-30)
        for key in ("queries_cs", "sink_mass", "doc_queries_cs", "doc_sink_sum", "doc_sink_queries", "layer_window",
                    "cs_horizon", "sink_tokens"):
            assert np.array_equal(c[key], f[key], equal_nan=True), key


def test_the_reader_gives_per_distance_arrays_with_exact_sums(runs) -> None:
    full, compact = map(read_run, (runs[0].run_dir, runs[1].run_dir))
    for key in ("mass", "pairs", "mass_cs"):
        a, b = full.profile(key), compact.profile(key)
        assert a.shape == b.shape, key
        assert np.array_equal(a[..., : E + 1], b[..., : E + 1]), key
        np.testing.assert_allclose(b.sum(-1), a.sum(-1), rtol=1e-12, err_msg=key)        # totals kept
        with np.load(compact.path / "profile.npz") as c:                                 # inside a bin: its mean
            e = c["edges_cs" if key == "mass_cs" else "edges"]
        lo, hi = int(e[-2]), int(e[-1])
        np.testing.assert_allclose(b[..., lo:hi], np.repeat(a[..., lo:hi].mean(-1, keepdims=True), hi - lo, -1),
                                   rtol=1e-12, err_msg=key)
    loaded = DistanceProfile.load(compact.path / "profile.npz")
    assert np.array_equal(loaded.mass, compact.profile("mass")) and loaded.cs_horizon == runs[0].profile.cs_horizon


def test_kv_tails_are_exact_on_the_bin_edges(runs) -> None:
    from gammalens.kv.tails import head_tails

    full, compact = runs
    gamma = np.array([[r["gamma"] for r in full.fits if r["scope"] == "head" and r["layer"] == i]
                      for i in range(full.profile.n_layers)])
    a = head_tails(full.run_dir / "profile.npz", gamma, 1)
    b = head_tails(compact.run_dir / "profile.npz", gamma, 1)
    with np.load(compact.run_dir / "profile.npz") as c:
        edges_cs = c["edges_cs"]
    ca, cb = a.cumulative(CONTEXT), b.cumulative(CONTEXT)                  # (L, Hq, n+1): Σ_{d<w} a(d)
    np.testing.assert_allclose(cb[..., edges_cs], ca[..., edges_cs], rtol=1e-12, atol=1e-15)
    # the power-law anchor averages the upper half [H/2, H], which a bin may straddle: within 1 %
    np.testing.assert_allclose(b.anchor, a.anchor, rtol=1e-2)


def test_atlas_rows_keep_exact_short_distances_and_bin_means_beyond(runs) -> None:
    from gammalens.atlas.record import profile_rows

    full, compact = map(read_run, (runs[0].run_dir, runs[1].run_dir))
    with np.load(compact.path / "profile.npz") as c:
        edges_cs = c["edges_cs"]
    q = full.profile("queries_cs")
    for a, b in zip(profile_rows(full), profile_rows(compact), strict=True):
        assert (a["layer"], a["head"], a["kind"], a["distance"]) == (b["layer"], b["head"], b["kind"], b["distance"])
        if a["kind"] != "null_corrected":
            continue
        d = np.array(b["distance"])
        exact = d <= E
        assert np.array_equal(np.array(a["value"])[exact], np.array(b["value"])[exact])
        g = np.searchsorted(edges_cs, d[~exact], side="right") - 1                     # the bin of each distance
        m = full.profile("mass_cs")[a["layer"], a["head"]]
        means = [math.fsum(m[edges_cs[i]:edges_cs[i + 1]]) / (edges_cs[i + 1] - edges_cs[i]) for i in g]
        np.testing.assert_allclose(np.array(b["value"])[~exact], np.array(means) / q[a["layer"]], rtol=1e-12)


def test_report_renders_from_a_compact_run(runs) -> None:
    html = (runs[1].run_dir / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html and "layer 0 mean (null-corrected)" in html


def test_verify_reproduces_a_compact_run(runs) -> None:
    from gammalens.measuring.verify import verify_run

    v = verify_run(runs[1].run_dir)
    assert v.ok and v.max_abs_diff == 0.0, v


def test_file_sizes_follow_the_estimate(runs) -> None:
    full, compact = runs
    shape = full.profile.shape
    sizes = {}
    for run, layout in ((full, "full"), (compact, f"compact:{E}")):
        file = run.run_dir / "profile.npz"
        with np.load(file) as z:
            n_arrays = len(z.files)
        sizes[layout] = file.stat().st_size
        estimate = profile_nbytes(*shape, layout=layout)
        assert estimate <= sizes[layout] <= estimate + 400 * n_arrays, (layout, sizes[layout], estimate)
    assert sizes[f"compact:{E}"] < 0.6 * sizes["full"]  # at 128K tokens: 35 MiB for 5.5 GiB (below)


def test_auto_keeps_small_runs_full_and_compacts_large_ones(runs, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    prof = runs[0].profile
    assert prof.save(tmp_path / "small.npz", layout="auto") == "full"
    monkeypatch.setattr(profile, "AUTO_FULL_LIMIT", profile_nbytes(*prof.shape, layout="full") - 1)
    assert prof.save(tmp_path / "large.npz", layout="auto") == "compact"
    with np.load(tmp_path / "large.npz") as z:
        assert str(z["layout"]) == "compact" and int(z["exact_to"]) == grid.EXACT_TO
    # the case: an 8B model (32 layers × 32 heads), 128K tokens, 8 windows, fit range 1:65536
    big = (32, 32, 8, 131072, 65536)
    assert profile_nbytes(*big, layout="full") > 5 * 2**30 and profile_nbytes(*big, layout="compact") < 40 * 2**20
    assert profile.resolve_layout("auto", big) == ("compact", grid.EXACT_TO)


@pytest.mark.parametrize("spec, needle", [("compact:x", "whole number"), ("binned", "auto, full, compact"),
                                          ("full:3", "auto, full, compact"), ("compact:0", "whole number")])
def test_a_bad_layout_is_one_line_and_exit_2(spec: str, needle: str, capsys: pytest.CaptureFixture) -> None:
    from gammalens.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["measure", "minilm", "--profile-layout", spec])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), exact_to=st.integers(0, 300), per_octave=st.integers(1, 64))
def test_grid_edges_cover_every_distance_once(n: int, exact_to: int, per_octave: int) -> None:
    e = grid_edges(n, exact_to, per_octave)
    w = np.diff(e)
    assert e[0] == 0 and e[-1] == n and (w >= 1).all()
    assert (w[: min(exact_to + 1, n)] == 1).all()                                  # d ≤ exact_to one by one
    wide = e[:-1] > exact_to
    assert (w[wide] <= np.ceil(e[:-1][wide] * (2 ** (1 / per_octave) - 1)) + 1).all()   # ≤ 2^(1/p) − 1 of the start
    assert e.size - 1 <= min(exact_to + 1, n) + math.ceil(per_octave * math.log2(max(n / (exact_to + 1), 1))) + 1


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 400), exact_to=st.integers(0, 40), seed=st.integers(0, 2**16))
def test_bin_sums_and_expand_against_fsum(n: int, exact_to: int, seed: int) -> None:
    x = np.random.default_rng(seed).exponential(size=(2, 3, n))
    e = grid_edges(n, exact_to, 8)
    b = bin_sums(x, e)
    np.testing.assert_allclose(b, _fsum_bins(x, e), rtol=1e-13)
    y = expand(b, e)
    assert y.shape == x.shape and np.array_equal(y[..., : min(exact_to + 1, n)], x[..., : min(exact_to + 1, n)])
    np.testing.assert_allclose(bin_sums(y, e), b, rtol=1e-13)


def test_docstring_examples() -> None:
    for module in (grid, profile):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.parametrize("damage, needle", [("drop edges_cs", "array 'edges_cs' is missing"),
                                            ("short edges", "cannot be read")])
def test_a_damaged_compact_profile_is_a_one_line_format_error(runs, tmp_path: Path, damage: str, needle: str) -> None:
    import shutil

    from gammalens.runs.reader import RunFormatError

    run_dir = shutil.copytree(runs[1].run_dir, tmp_path / runs[1].run_dir.name)
    with np.load(run_dir / "profile.npz") as z:
        arrays = {k: z[k] for k in z.files}
    if damage == "drop edges_cs":
        del arrays["edges_cs"]
    else:
        arrays["edges"] = arrays["edges"][:-3]
    np.savez(run_dir / "profile.npz", **arrays)
    with pytest.raises(RunFormatError, match=needle) as exc:
        read_run(run_dir).profile("mass_cs" if damage == "drop edges_cs" else "mass")
    assert "\n" not in str(exc.value)


def test_the_summary_names_a_compact_profile(runs) -> None:
    from rich.console import Console

    from gammalens.cli.summary import print_summary

    out = {}
    for name, result in zip(("full", "compact"), runs, strict=True):
        console = Console(record=True, width=200)
        print_summary(result, console=console)
        out[name] = console.export_text()
    assert f"profile.npz: compact:{E} layout" in out["compact"] and "profile.npz:" not in out["full"]
