"""CLI: bad input gets one line on stderr, exit code 2, and no run directory (complete or partial)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gammalens.cli import main
from gammalens.probe.backend import registered_probes
from tests.conftest import REPO, copy_tokenizer, save_tiny


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main(args)
    cap = capsys.readouterr()
    return int(ex.value.code or 0), cap.out, cap.err


def assert_clean_failure(code: int, err: str, out_dir: Path, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("gammalens: error:"), err
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])
    assert not out_dir.exists() or not any(out_dir.iterdir()), list(out_dir.iterdir())
    assert registered_probes() == []


def test_measure_help_lists_every_flag(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(["measure", "--help"], capsys)
    assert code == 0
    for flag in ("--corpus", "--context", "--windows", "--sink-tokens", "--fit-range", "--dtype", "--device",
                 "--out", "--seed", "--allow-extrapolation", "--chunk-size", "--bootstrap"):
        assert flag in out


def test_missing_model_path(tmp_path, capsys) -> None:
    code, _, err = run_cli(["measure", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "runs")], capsys)
    assert_clean_failure(code, err, tmp_path / "runs", "does not exist")


def test_hub_id_offline(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli(["measure", "nobody-here/no-model", "--out", str(tmp_path / "runs")], capsys)
    assert_clean_failure(code, err, tmp_path / "runs", "could not be fetched")


def test_model_without_softmax_attention(tmp_path, capsys) -> None:
    from transformers import MambaConfig

    d = tmp_path / "mamba"
    MambaConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1).save_pretrained(d)
    code, _, err = run_cli(["measure", str(d), "--out", str(tmp_path / "runs")], capsys)
    assert_clean_failure(code, err, tmp_path / "runs", "mamba", "no softmax attention")


def test_corpus_too_short(tmp_path, capsys) -> None:
    f = tmp_path / "short.txt"
    f.write_text("just a few words here\n")
    code, _, err = run_cli(["measure", "minilm", "--corpus", str(f), "--context", "64", "--out",
                            str(tmp_path / "runs")], capsys)
    assert_clean_failure(code, err, tmp_path / "runs", "tokens")


def test_context_beyond_max_positions(tmp_path, capsys) -> None:
    code, _, err = run_cli(["measure", "minilm", "--context", "1024", "--out", str(tmp_path / "runs")], capsys)
    assert_clean_failure(code, err, tmp_path / "runs", "maximum positions", "--allow-extrapolation")


@pytest.mark.parametrize("fit_range", ["0:10", "5:64", "10:5", "a:b"])
def test_fit_range_outside_context(fit_range: str, tmp_path, capsys) -> None:
    code, _, err = run_cli(["measure", "minilm", "--context", "64", "--fit-range", fit_range, "--out",
                            str(tmp_path / "runs")], capsys)
    assert_clean_failure(code, err, tmp_path / "runs", "fit-range")


def test_unwritable_output_directory(tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = run_cli(["measure", "minilm", "--context", "64", "--out", str(blocker / "runs")], capsys)
    assert_clean_failure(code, err, blocker.parent / "nothing", "not writable")


def test_nan_attention_names_layer_and_head(tmp_path, capsys) -> None:
    from transformers import AutoModelForCausalLM

    d = save_tiny("llama_gqa", tmp_path / "nan-llama")
    m = AutoModelForCausalLM.from_pretrained(d)
    with torch.no_grad():
        m.model.layers[1].self_attn.q_proj.weight[16:24] = float("nan")  # head_dim 8 → query head 2
    m.save_pretrained(d)
    code, _, err = run_cli(["measure", str(d), "--corpus", "random", "--context", "32", "--windows", "2",
                            "--out", str(tmp_path / "runs")], capsys)
    assert_clean_failure(code, err, tmp_path / "runs", "layer 1, head 2")


@pytest.mark.parametrize("args", [["--windows", "0"], ["--sink-tokens", "-1"], ["--dtype", "fp8"],
                                  ["--bootstrap", "-3"]])
def test_invalid_settings(args: list[str], tmp_path, capsys) -> None:
    code, _, err = run_cli(["measure", "minilm", *args, "--out", str(tmp_path / "runs")], capsys)
    assert_clean_failure(code, err, tmp_path / "runs")


def test_ctrl_c_leaves_nothing_behind(tmp_path) -> None:
    out = tmp_path / "runs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # a terminal delivers SIGINT to a process whose handler is Python's default; a background job may have
    # inherited SIG_IGN, so the child sets the default handler explicitly before running the CLI
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from gammalens.cli import main; main(sys.argv[1:])")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "measure", "minilm", "--corpus", "random", "--context", "512",
         "--windows", "2000", "--batch-size", "1", "--out", str(out)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not out.exists():  # the writability check creates --out before the forwards
        time.sleep(0.2)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "interrupted" in err.strip().splitlines()[-1]
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())  # --out is made only for a finished run


def test_model_outside_the_attention_interface(tmp_path, capsys) -> None:
    from transformers import BloomConfig, BloomForCausalLM

    d = tmp_path / "bloom"
    BloomForCausalLM(BloomConfig(vocab_size=30522, hidden_size=16, n_layer=1, n_head=2)).save_pretrained(d)
    copy_tokenizer(d)
    code, _, err = run_cli(["measure", str(d), "--corpus", "random", "--context", "32", "--out",
                            str(tmp_path / "runs")], capsys)
    assert_clean_failure(code, err, tmp_path / "runs", "bloom", "AttentionInterface")
