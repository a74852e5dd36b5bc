"""The claims ledger: every fast receipt reproduces, receipts agree with independent computations, a broken
receipt fails `verify` (exit 1), unknown ids and malformed ledgers exit 2, docs/claims.md is up to date."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from gammalens.claims import ClaimsError, Expectation, load_ledger
from gammalens.claims.docs import render_markdown
from gammalens.claims.verify import resolve, run_receipt
from gammalens.cli import main

ROOT = Path(__file__).resolve().parents[1]
LEDGER = load_ledger()
FAST = [pytest.param(c.id, i, id=f"{c.id}#{i + 1}") for c in LEDGER.claims for i, r in enumerate(c.receipts)
        if not r.slow]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


# --- the ledger itself --------------------------------------------------------------------------------------

def test_ledger_has_at_least_12_claims_with_figures_verdicts_and_receipts():
    assert len(LEDGER.claims) >= 12
    tested = [c for c in LEDGER.claims if c.verdict not in ("not tested yet", "not testable here")]
    assert len([c for c in tested if c.receipts]) >= 12
    assert all(c.receipts or "gammalens" in c.command or "benchmarks/" in c.command for c in tested)
    for c in LEDGER.claims:
        assert c.book_figure and c.ours and c.why


def test_every_receipt_resolves_including_slow_ones():
    for c in LEDGER.claims:
        for r in c.receipts:
            assert callable(resolve(r.call)), r.call


@pytest.mark.parametrize(("claim_id", "index"), FAST)
def test_fast_receipt_reproduces(claim_id: str, index: int):
    receipt = LEDGER.get(claim_id).receipts[index]
    result = run_receipt(claim_id, receipt)
    assert result.status == "pass", (result.error, result.failed, result.figures)


def test_docs_claims_md_is_generated_from_the_ledger():
    assert (ROOT / "docs" / "claims.md").read_text(encoding="utf-8") == render_markdown(LEDGER), \
        "docs/claims.md is stale: run `gammalens claims docs`"


def test_expectation_checks():
    assert Expectation("x", value=1.0, tol=0.1).check(1.1)
    assert not Expectation("x", value=1.0, tol=0.1).check(1.2)
    assert not Expectation("x", value=1.0, tol=0.1).check(math.nan)
    assert Expectation("x", min=0.0).check(5.0) and not Expectation("x", max=0.0).check(1e-9)
    assert not Expectation("x", min=0.0, max=1.0).check(math.inf)


# --- receipts against independent computations --------------------------------------------------------------

def test_fixed_key_null_matches_a_float_polyfit_of_one_over_d_plus_50():
    from gammalens.claims.receipts.estimator import BOOK_DISTANCES, fixed_key_uniform

    d = np.array(BOOK_DISTANCES, dtype=float)
    slope = np.polyfit(np.log(d), np.log(1.0 / (d + 50.0)), 1)[0]
    got = fixed_key_uniform()
    assert got["gamma"] == pytest.approx(-slope, abs=1e-12)
    assert 0.68 < got["gamma"] < 0.70  # the "γ ≈ 0.69" of the claim


def test_naive_causal_null_matches_the_closed_form_mean():
    """Uniform causal attention gives each non-sink key 0.7/q; the naive mean at d averages it over q ≥ d + 1."""
    from gammalens.claims.receipts.estimator import uniform_causal

    n, horizon = 256, 127
    q = np.arange(n)
    d = np.arange(1, horizon + 1)
    naive = np.array([np.mean(0.7 / q[q - k >= 1]) for k in d])
    w = np.sqrt(1.0 / d)  # polyfit weights multiply residuals: √(1/d) gives the 1/d least squares
    slope = np.polyfit(np.log(d), np.log(naive), 1, w=w)[0]
    got = uniform_causal(context=n, horizon=horizon)
    assert got["naive_gamma"] == pytest.approx(-slope, abs=1e-6)
    assert abs(got["corrected_gamma"]) < 1e-9


def test_atlas_receipts_match_pandas_and_scipy_on_the_shipped_table():
    import pandas as pd
    from scipy import stats

    from gammalens.atlas.taf import TAF_FILE
    from gammalens.claims.receipts.atlas import delta_gamma_text_random, r2_count

    df = pd.read_csv(TAF_FILE).drop_duplicates(["model", "corpus", "gamma", "R2"])
    r2 = r2_count()
    assert (r2["above"], r2["measurements"]) == ((df.R2 > 0.95).sum(), len(df)) == (64, 79)
    p = stats.ttest_ind(df[df.corpus == "mongo"].gamma, df[df.corpus == "random"].gamma).pvalue
    assert delta_gamma_text_random()["p_student"] == pytest.approx(p, rel=1e-12)


def test_cv_erratum_direct_sum_is_nowhere_near_the_published_quarter():
    from gammalens.claims.receipts.theory import cv_erratum

    got = cv_erratum(n_direct=10**5, n_large=10**12)
    assert got["continuum_coefficient"] == pytest.approx(1 / 12, rel=1e-15)
    d = np.arange(1, 10**5 + 1, dtype=float)
    p = (1 / d) / (1 / d).sum()
    var = p @ np.log(d) ** 2 - (p @ np.log(d)) ** 2
    assert got["ratio_direct"] == pytest.approx(12 * var / np.log(1e5) ** 2, rel=1e-12)
    assert abs(got["ratio_direct"] - 1) < 0.15 and abs(got["ratio_direct"] - 3) > 1.5


# --- the command ----------------------------------------------------------------------------------------------

BROKEN = '''
[[claim]]
id = "broken.fixed-key"
claim = "A deliberately wrong expectation."
source = "tests"
book_receipt = "none"
book_figure = "—"
ours = "γ = 0.5 (wrong on purpose)"
verdict = "confirmed"
why = "The receipt computes 0.6865; the expectation says 0.5."

[[claim.receipt]]
call = "gammalens.claims.receipts.estimator:fixed_key_uniform"
scale = "exact"
expect = { gamma = { value = 0.5, tol = 0.01 } }

[[claim]]
id = "broken.raises"
claim = "A receipt that raises."
source = "tests"
book_receipt = "none"
book_figure = "—"
ours = "—"
verdict = "confirmed"
why = "It cannot run."

[[claim.receipt]]
call = "gammalens.claims.receipts.theory:aliasing"
args = { theta = -1.0 }
scale = "nonsense"
expect = { active_at_t_max = { value = 0, tol = 0 } }

[[claim]]
id = "fine.atlas"
claim = "Correct."
source = "tests"
book_receipt = "data"
book_figure = "64/79"
ours = "64/79"
verdict = "confirmed"
why = "Right."

[[claim.receipt]]
call = "gammalens.claims.receipts.atlas:r2_count"
scale = "the table"
expect = { above = { value = 64, tol = 0 } }
'''


@pytest.fixture
def broken_ledger(tmp_path) -> Path:
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN, encoding="utf-8")
    return path


def test_verify_exits_1_when_a_receipt_no_longer_reproduces(broken_ledger, capsys):
    rc, out, _ = run_cli(["claims", "verify", "broken.fixed-key", "--ledger", str(broken_ledger)], capsys)
    assert rc == 1
    assert "fail" in out and "broken.fixed-key" in out and "0.6864" in out  # the figure obtained is shown


def test_verify_exits_1_when_a_receipt_raises_and_still_runs_the_others(broken_ledger, capsys):
    rc, out, _ = run_cli(["claims", "verify", "--ledger", str(broken_ledger)], capsys)
    assert rc == 1
    assert "broken.raises" in out and "Error" in out
    assert "1 passed, 2 failed" in out


def test_verify_passes_on_a_correct_ledger_and_runs_slow_receipts_only_when_asked(tmp_path, capsys):
    slow = BROKEN[BROKEN.index('[[claim]]\nid = "fine.atlas"'):]
    slow += '\n[[claim.receipt]]\ncall = "gammalens.claims.receipts.atlas:coverage"\nscale = "the table"\nslow = true\n' \
            'expect = { models = { value = 42, tol = 0 } }\n'
    path = tmp_path / "slow.toml"
    path.write_text(slow, encoding="utf-8")
    rc, out, _ = run_cli(["claims", "verify", "--ledger", str(path)], capsys)
    assert rc == 0 and "1 passed, 0 failed, 1 skipped" in out
    rc, out, _ = run_cli(["claims", "verify", "--slow", "--ledger", str(path)], capsys)
    assert rc == 0 and "2 passed, 0 failed, 0 skipped" in out
    rc, out, _ = run_cli(["claims", "verify", "fractional.levy-reading"], capsys)  # nothing to run: says why
    assert rc == 0 and "no receipt" in out and "0 passed, 0 failed" in out


@pytest.mark.parametrize("args", [["claims", "verify", "no.such-claim"], ["claims", "show", "no.such-claim"],
                                  ["claims", "verify", "atlas.coverage", "no.such-claim"]])
def test_unknown_ids_exit_2_with_one_line(args, capsys):
    rc, out, err = run_cli(args, capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "unknown claim id 'no.such-claim'" in err


@pytest.mark.parametrize(("text", "message"), [
    ("not toml [[", "not a valid TOML"),
    ("[[claim]]\nid = 'x'\n", "must be one of"),
    (BROKEN.replace('verdict = "confirmed"', 'verdict = "sure"', 1), "verdict must be one of"),
    (BROKEN.replace('call = "gammalens.claims.receipts.estimator:fixed_key_uniform"', 'call = "nope"'), "'call'"),
    (BROKEN.replace('{ value = 0.5, tol = 0.01 }', '{ value = 0.5 }'), "tolerance"),
    (BROKEN + BROKEN[BROKEN.index("[[claim]]"):BROKEN.index("[[claim]]", 10)], "appears twice"),
    (BROKEN[:BROKEN.index("[[claim.receipt]]")], "needs a receipt, or a command"),
])
def test_malformed_ledgers_exit_2(tmp_path, text, message, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ClaimsError, match=message):
        load_ledger(path)
    rc, _, err = run_cli(["claims", "list", "--ledger", str(path)], capsys)
    assert rc == 2 and err.startswith("gammalens: error:")


def test_list_show_and_docs_check(tmp_path, capsys):
    rc, out, _ = run_cli(["claims"], capsys)
    assert rc == 0 and "thermo.cv-erratum" in out and "not reproduced" in out
    rc, out, _ = run_cli(["claims", "show", "estimator.fixed-key-null"], capsys)
    assert rc == 0 and "fixed_key_uniform" in out and "gammalens claims verify estimator.fixed-key-null" in out
    target = tmp_path / "claims.md"
    rc, _, _ = run_cli(["claims", "docs", "--check", "--out", str(target)], capsys)
    assert rc == 1
    rc, _, _ = run_cli(["claims", "docs", "--out", str(target)], capsys)
    assert rc == 0 and target.read_text(encoding="utf-8") == render_markdown(LEDGER)
    rc, _, _ = run_cli(["claims", "docs", "--check", "--out", str(target)], capsys)
    assert rc == 0


@pytest.mark.slow
def test_slow_zoo_receipt_runs_end_to_end_on_a_smoke_zoo(tmp_path):
    """The zoo receipt's code path (train, measure, errors) on 2 models × 2 steps; the real one takes ~30 min."""
    from gammalens.claims.receipts.slow import zoo_pade_error

    got = zoo_pade_error(str(tmp_path / "zoo"), windows=2, bootstrap=10, steps=2, thetas=(1e3, 1e4),
                         contexts=(128,), limit_files=6)
    assert got["models"] == 2
    assert all(math.isfinite(v) and v >= 0 for v in got.values())


# --- runs link the claims their numbers bear on ---------------------------------------------------------------

def test_related_claims_follow_the_runs_numbers():
    from gammalens.claims.links import claims_line, related_claims

    rope = related_claims({"gamma": 0.7, "gamma_pade": 0.99, "gamma_pade_rel_error": -0.29, "sink_mass": 0.01})
    assert [c.claim_id for c in rope] == ["estimator.null-corrected", "pade.median-error",
                                          "sinks.massive-activations-cause"]
    assert "-0.29" in rope[1].figure and rope[1].verdict == LEDGER.get("pade.median-error").verdict
    no_rope = related_claims({"gamma": 0.7, "gamma_pade": None, "sink_mass": float("nan")}, corpus="random",
                             taf={"gamma": 0.9})
    assert [c.claim_id for c in no_rope] == ["estimator.fixed-key-null", "estimator.null-corrected",
                                             "atlas.delta-gamma-text-random"]
    assert "pade.median-error" in claims_line(rope) and claims_line([]) == ""


def test_the_report_links_the_claims(tmp_path, monkeypatch):
    from gammalens.claims.links import links_for_run
    from gammalens.report import write_report
    from tests.run_fixtures import write_run

    monkeypatch.setenv("GAMMALENS_ATLAS", str(tmp_path / "atlas.duckdb"))
    run = write_run(tmp_path / "runs", extra_columns={"gamma_pade": np.full((2, 4), 0.95),
                                                      "gamma_pade_rel_error": np.full((2, 4), -0.2)})
    # the report takes claim links as data: without them it has no claims section
    assert "Claims this run bears on" not in write_report([run], tmp_path / "bare.html").read_text(encoding="utf-8")
    html = write_report([run], tmp_path / "report.html", claim_links=links_for_run).read_text(encoding="utf-8")
    assert "Claims this run bears on" in html
    for cid in ("estimator.null-corrected", "pade.median-error", "sinks.massive-activations-cause"):
        assert f"<code>{cid}</code>" in html


def test_fixed_key_null_agrees_with_the_taf_estimators_own_synthetic_run():
    """gammalens.taf (the book's estimator, written separately) on uniform rows gives the receipt's figures."""
    from gammalens.claims.receipts.estimator import fixed_key_uniform
    from gammalens.taf.synthetic import taf_synthetic, uniform_row

    assert taf_synthetic(uniform_row).gamma == pytest.approx(fixed_key_uniform()["gamma"], abs=1e-12)
    from30 = fixed_key_uniform(distances=(30, 50, 100, 200, 500, 1000, 2000))["gamma"]
    assert taf_synthetic(uniform_row, fit_min_distance=30).gamma == pytest.approx(from30, abs=1e-12)


def test_grok_receipt_replays_the_rule_on_stored_curves(tmp_path):
    """Two grokking runs (CKA drops, re-rises, then test accuracy jumps), one control without a re-rise, one
    control with one, and a penalty run that must be ignored: 2/2 detected, 1/2 false alarms."""
    import csv as csv_module

    from gammalens.claims.receipts.grok import cka_rerise_from_curves

    def write(name, cka, acc):
        with (tmp_path / f"{name}.csv").open("w", newline="") as f:
            w = csv_module.writer(f)
            w.writerow(["step", "train_acc", "test_acc", "cka"])
            for i, (c, a) in enumerate(zip(cka, acc, strict=True)):
                w.writerow([10 * i, 1.0, a, c])

    rerise = [0.9] * 5 + [0.6] * 10 + [0.8] * 15          # fires at the 5th smoothed point above 0.65
    flat_fall = [0.9] * 5 + [0.6] * 25                    # drops, never re-rises
    write("grok_seed0", rerise, [0.1] * 27 + [0.99] * 3)
    write("grok_seed1", rerise, [0.1] * 29 + [0.96])
    write("wd0_seed0", flat_fall, [0.1] * 30)
    write("smallfrac_seed0", rerise, [0.1] * 30)
    write("penalty_seed0", flat_fall, [0.1] * 29 + [0.99])
    got = cka_rerise_from_curves(str(tmp_path))
    assert (got["runs"], got["grokked"], got["detected"], got["controls"], got["false_alarms"]) == (4, 2, 2, 2, 1)
    assert got["median_lead"] > 0


def test_a_receipt_shared_by_two_claims_runs_once(tmp_path, monkeypatch):
    import gammalens.claims.receipts.atlas as atlas_receipts
    from gammalens.claims.verify import verify_claims

    calls = []
    original = atlas_receipts.r2_count

    def counted(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(atlas_receipts, "r2_count", counted)
    fine = BROKEN[BROKEN.index('[[claim]]\nid = "fine.atlas"'):]
    path = tmp_path / "twice.toml"
    path.write_text(fine + fine.replace('id = "fine.atlas"', 'id = "fine.again"'), encoding="utf-8")
    results = verify_claims(load_ledger(path))
    assert [r.status for r in results] == ["pass", "pass"] and len(calls) == 1
