"""Issue 25, the first hour: `measure --json` names the model, counts read in the singular, a negative γ_Padé
is explained by `card`, `atlas list` never cuts ids in a 100-column terminal, the license is an SPDX string and
the worked sweep's output is git-ignored."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

from tests.conftest import REPO, save_tiny
from tests.run_fixtures import taf_csv, write_run


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from gammalens.cli import main

    with pytest.raises(SystemExit) as done:
        main(args)
    cap = capsys.readouterr()
    return int(done.value.code or 0), cap.out, cap.err


# item 4: `gammalens measure --json` for the default model

def test_measure_json_reports_the_resolved_model_id(tmp_path: Path) -> None:
    from gammalens.cli.summary import summary_dict

    run = write_run(tmp_path / "runs", model_id="sentence-transformers/all-MiniLM-L6-v2")
    man = json.loads((run / "manifest.json").read_text())
    man["settings"]["model"] = None                           # what `gammalens measure` (no MODEL) records
    result = SimpleNamespace(manifest=man, run_dir=run, model_fit={"gamma": man["result"]["gamma"]}, fits=[])
    out = json.loads(json.dumps(summary_dict(result)))
    assert out["model"] == out["settings"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert '"model": null' not in json.dumps(out)
    man["settings"]["model"] = "minilm"                       # a name the user gave is kept as given
    assert summary_dict(result)["settings"]["model"] == "minilm"


# item 5: singular and plural in the sinks summary

def test_sinks_counts_read_in_the_singular() -> None:
    from gammalens.sinks.console import _massive_line, _n

    assert (_n(1, "head"), _n(2, "head"), _n(0, "window"), _n(np.int64(1), "coordinate")) == \
        ("1 head", "2 heads", "0 windows", "1 coordinate")
    massive = SimpleNamespace(abs_threshold=100.0, ratio=1000.0, any=True, first_layer=0, truncated=False,
                              count=np.array([1, 0]),
                              sites=[{"layer": 0, "dim": 7, "position": 0, "max_abs": 512.0, "n": 1}])
    line = _massive_line(SimpleNamespace(massive=massive))
    assert "1 coordinate," in line and "1 window)" in line, line
    assert not re.search(r"\b1 (heads|windows|coordinates)\b", line), line


def test_cli_sinks_with_one_head_row_says_the_strongest_sink(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    path = save_tiny("llama_gqa", tmp_path / "tiny")
    code, out, err = run_cli(["sinks", str(path), "--corpus", "random", "--context", "32", "--windows", "2",
                              "--bootstrap", "0", "--out", str(tmp_path / "runs"), "--no-atlas", "--heads", "1"],
                             capsys)
    assert code == 0, err
    assert "per head, the strongest sink" in out and "1 strongest sinks" not in out
    assert not re.search(r"\b1 (heads|windows|coordinates)\b", out), out


# item 6: `gammalens card` with γ_Padé < 0

MISTRAL_7B_V01 = {
    "architectures": ["MistralForCausalLM"], "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "vocab_size": 32000,
}


def card_text(tmp_path: Path, context: int) -> tuple[float, str]:
    from gammalens.card.config_card import build_card, render

    (tmp_path / "config.json").write_text(json.dumps(MISTRAL_7B_V01))
    card = build_card(tmp_path / "config.json", context=context)
    console = Console(file=io.StringIO(), width=400)
    render(card, console=console)
    return card.prediction["gamma_pade"], console.file.getvalue()


def test_card_explains_a_negative_gamma_pade(tmp_path: Path) -> None:
    gamma, text = card_text(tmp_path, 32768)                  # T√2 > 2θ: γ_Padé < 0
    assert gamma < 0
    row = next(ln for ln in text.splitlines() if "γ_Padé at T" in ln)
    assert "(phase A)" in row
    for words in ("γ_Padé < 0", "outside the power-law regime", "grows with distance", "beyond the RoPE horizon"):
        assert words in row, (words, row)


def test_card_says_nothing_more_for_a_positive_gamma_pade(tmp_path: Path) -> None:
    gamma, text = card_text(tmp_path, 4096)
    assert gamma > 0 and "power-law regime" not in text


# item 7: `atlas list` in a 100-column terminal

LONG_MODEL = "EleutherAI/pythia-70m-deduped-with-a-long-name"


def cell(lines: list[str], header: str, name: str, nxt: str | None, row: int) -> str:
    """Column NAME of the table row starting at lines[ROW], its folded pieces joined (by character offsets)."""
    start, end = header.index(name), header.index(nxt) if nxt else None
    kind_width = header.index("model")
    block = [lines[row]]
    for ln in lines[row + 1:]:
        if re.sub(r"[│┃]", " ", ln[:kind_width]).strip():      # the next row, or the bottom border
            break
        block.append(ln)
    return "".join(re.sub(r"[│┃]", "", ln[start:end]).strip() for ln in block)


@pytest.mark.parametrize("width", [100, 140, 250])
def test_atlas_list_never_cuts_ids(tmp_path: Path, capsys, monkeypatch, width: int) -> None:
    from gammalens import terminal
    from gammalens.atlas import record_run
    from gammalens.atlas.taf import import_taf

    atlas = tmp_path / "a.duckdb"
    import_taf(taf_csv(), atlas)
    runs = [write_run(tmp_path / "runs", model_id=LONG_MODEL), write_run(tmp_path / "runs", model_id="fixture/tiny")]
    for run in runs:
        record_run(run, atlas)
    console = Console(file=io.StringIO(), width=width)       # a terminal of WIDTH columns
    monkeypatch.setattr(terminal, "console", lambda stderr=False: console)
    code, _, err = run_cli(["atlas", "list", "--atlas", str(atlas)], capsys)
    assert code == 0, err
    lines = console.file.getvalue().splitlines()
    assert max(map(len, lines)) <= width
    assert "…" not in "\n".join(lines)                        # no cell of any column is cut
    header = next(ln for ln in lines if "model" in ln and "id / source" in ln)
    for run in runs:
        man = json.loads((run / "manifest.json").read_text())
        row = next(k for k, ln in enumerate(lines) if "measured" in ln and man["run_id"][:8] in ln)
        assert cell(lines, header, "model", "corpus", row) == man["model"]["id"]
        assert cell(lines, header, "id / source", None, row) == man["run_id"]


# item 8: the license is an SPDX expression

def test_license_is_an_spdx_string_without_the_deprecation_warning() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert not any(c.startswith("License ::") for c in project.get("classifiers", []))  # PEP 639: not both
    pytest.importorskip("setuptools.config.pyprojecttoml")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert not [w for w in caught if "license" in str(w.message).lower()]
    assert getattr(dist.metadata, "license_expression", "Apache-2.0") == "Apache-2.0"


# item 9: `gammalens sweep examples/sweep-tiny.toml` writes next to the spec: git-ignored

@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_the_worked_sweeps_output_is_git_ignored() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    spec = REPO / "examples" / "sweep-tiny.toml"
    sweep = tomllib.loads(spec.read_text())["sweep"]
    for rel in (sweep["out"], sweep["atlas"], f"{sweep['out']}/sweep-tiny.sweep.json",
                f"{sweep['out']}/gammalens-tiny-20260101-000000-0123abcd/manifest.json"):
        path = (spec.parent / rel).relative_to(REPO)      # relative to the spec's folder (docs/sweep.md)
        done = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO, capture_output=True)
        assert done.returncode == 0, f"{path} is not git-ignored"
    done = subprocess.run(["git", "check-ignore", "-q", str(spec.relative_to(REPO))], cwd=REPO)
    assert done.returncode == 1                           # the spec itself stays tracked


def test_identical_reruns_show_once_in_atlas_list(tmp_path, capsys) -> None:
    """Three identical measurements are one line with their count; a different one stays its own line."""
    from tests.test_cli import run_cli

    atlas = tmp_path / "atlas.duckdb"
    base = ["measure", "--context", "48", "--windows", "2", "--bootstrap", "0", "--out", str(tmp_path / "runs"),
            "--atlas", str(atlas), "--no-report", "--quiet"]
    for extra in ([], [], [], ["--seed", "1"]):
        code, _, err = run_cli([*base, *extra], capsys)
        assert code == 0, err
    code, out, err = run_cli(["atlas", "list", "--atlas", str(atlas)], capsys)
    assert code == 0, err
    assert "(×3: identical re-runs)" in out and "2 identical re-run(s) folded" in out
    assert out.count("gammalens-tiny-") == 2  # the three identical runs once, the other seed once
