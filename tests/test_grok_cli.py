"""`gammalens grok`: a short run end to end, a tiny resumable sweep with its report, and clean failures."""

from __future__ import annotations

import csv
import json

import pytest

from tests.test_cli import assert_clean_failure, run_cli

TINY = ["--p", "11", "--d-model", "16", "--d-mlp", "32", "--lr", "1e-2", "--every", "10"]


def test_short_run_end_to_end(tmp_path, capsys) -> None:
    code, out, err = run_cli(["grok", "run", "--out", str(tmp_path), "--name", "r", "--steps", "300", *TINY], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    result = json.loads((tmp_path / "r.json").read_text())
    assert [int(r["step"]) for r in rows] == list(range(0, 301, 10))
    # What the run promises, not one CPU's trajectory: the 60 training pairs get memorised and the loss falls.
    # Measured over three instruction sets (experiments/cross_isa.py, docs/determinism.md): every run reaches
    # train accuracy 1.0 by step 40 of 300 and its loss falls from 2.55 to ≤ 0.02 at the median of the last 10
    # evaluations; the final evaluation alone is not robust (Adam spikes: 0.933 on one setting, 1.0 on others).
    acc = [float(r["train_acc"]) for r in rows]
    loss = [float(r["train_loss"]) for r in rows]
    assert max(acc) == 1.0 and acc.index(1.0) <= 15  # memorised within the first half of the run
    assert sorted(loss[-10:])[5] < 0.1 * loss[0]  # median of the last 10 evaluations: 100× margin observed
    # the grokking step and the detector's step follow from the curves as documented
    grok = next((int(r["step"]) for r in rows if float(r["test_acc"]) >= 0.95), None)
    assert result["grok_step"] == grok
    assert all(-1.0 <= float(r["cka"]) <= 1.0 for r in rows)
    if result["fire_step"] is not None and grok is not None:
        assert result["lead"] == grok - result["fire_step"]
    assert "grokking step" in out


def test_sweep_is_resumable_and_writes_the_report(tmp_path, capsys) -> None:
    doc = tmp_path / "grokking.md"
    doc.write_text("# Grokking\n\nintro\n")
    args = ["grok", "sweep", "--out", str(tmp_path / "runs"), "--doc", str(doc), "--steps", "40", *TINY,
            "--grok-seeds", "1", "--control-seeds", "1", "--penalty-seeds", "1", "--parity-seeds", "0"]
    code, out, err = run_cli(args, capsys)
    assert "false alarms" in out
    assert code == 0, err
    names = sorted(p.stem for p in (tmp_path / "runs").glob("*.json"))
    assert names == ["grok_seed0", "penalty_seed0", "smallfrac_seed0", "wd0_seed0"]
    text = doc.read_text()
    assert text.startswith("# Grokking\n\nintro\n") and "| condition | runs |" in text and "--grok-seeds 1" in text
    assert (tmp_path / "grokking" / "curves.svg").read_text().startswith("<svg")
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    code, _, err = run_cli(args, capsys)  # nothing left to run: no file is rewritten
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()} == mtimes
    assert doc.read_text().count("| condition | runs |") == 1  # the block is replaced, not appended


@pytest.mark.parametrize(("args", "needle"), [
    (["--every", "0"], "every"),
    (["--p", "2"], "p must be"),
    (["--train-fraction", "1.5"], "train_fraction"),
    (["--d-model", "30"], "divisible"),
])
def test_bad_input_is_one_line_and_writes_nothing(args: list[str], needle: str, tmp_path, capsys) -> None:
    out_dir = tmp_path / "out"
    code, _, err = run_cli(["grok", "run", "--out", str(out_dir), "--steps", "5", *args], capsys)
    assert_clean_failure(code, err, out_dir, needle)


def test_sparse_parity_run(tmp_path, capsys) -> None:
    code, _, err = run_cli(["grok", "run", "--out", str(tmp_path), "--name", "par", "--task", "parity", "--steps", "20",
                            "--d-model", "16", "--d-mlp", "32", "--every", "10"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "par.json").read_text())
    assert result["config"]["task"] == "parity" and result["steps_run"] == 20
    assert len(list(csv.DictReader((tmp_path / "par.csv").open()))) == 3


def test_runs_are_deterministic_on_cpu(tmp_path) -> None:
    from gammalens.grok.experiment import RunConfig, train_run

    cfg = RunConfig(p=11, d_model=16, d_mlp=32, lr=1e-2, steps=30, every=10, cka_penalty=0.5)
    for name in ("a", "b"):
        train_run(cfg, tmp_path, name)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
