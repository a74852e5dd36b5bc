"""The zoo: tokenizer, a few-step training run, checkpoint reload and measurement, determinism, the θ-rescale
copy, the report's markers, and the shipped gammalens-tiny model (all offline, CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gammalens.zoo.data import segment_order, segment_rows, split_stdlib
from gammalens.zoo.grid import GridConfig, prepare_data, train_grid
from gammalens.zoo.train import TrainConfig, train_model

TINY = {"vocab_size": 512, "hidden_size": 32, "n_layers": 2, "n_heads": 2, "intermediate_size": 64,
        "tokens_per_step": 512, "segment": 256, "eval_tokens": 512, "eval_every": 1, "warmup": 2}


@pytest.fixture(scope="module")
def smoke_zoo(tmp_path_factory) -> Path:
    """A 3-step zoo of one model on a few stdlib files (tokenizer, stream, held-out folder, checkpoint)."""
    out = tmp_path_factory.mktemp("zoo")
    cfg = GridConfig(out=out, thetas=(1e3,), contexts=(128,), base=TrainConfig(steps=3, context=128, **TINY), limit_files=6)
    summaries = train_grid(cfg, log=lambda _: None)
    assert [s["name"] for s in summaries] == ["theta1e3-T128"]
    return out


def test_split_is_by_file_disjoint_and_deterministic():
    a, b = split_stdlib(), split_stdlib()
    assert a.train == b.train and a.heldout == b.heldout
    assert not set(a.train) & set(a.heldout)
    assert 0.05 < len(a.heldout) / (len(a.train) + len(a.heldout)) < 0.2


def test_segments_give_every_context_the_same_text():
    stream = np.arange(4 * 512, dtype=np.uint16)
    order = segment_order(stream, 512, seed=0)
    r128 = segment_rows(stream, order[:2], 512, 128, bos_id=7)  # (8, 128)
    r512 = segment_rows(stream, order[:2], 512, 512, bos_id=7)  # (2, 512)
    assert r128.shape == (8, 128) and r512.shape == (2, 512)
    assert (r128[:, 0] == 7).all() and (r512[:, 0] == 7).all()
    assert set(r128[:, 1:].ravel()) <= set(r512[:, 1:].ravel()) | set(stream[order[:2, None] * 512 + 511].ravel())
    assert r512[0, 1] == order[0] * 512


def test_smoke_checkpoint_reloads_and_measures(smoke_zoo):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import gammalens

    model_dir = smoke_zoo / "theta1e3-T128"
    curve = (model_dir / "training.csv").read_text().splitlines()
    assert curve[0] == "step,tokens,lr,train_loss,heldout_loss,elapsed_s" and len(curve) == 4
    info = json.loads((model_dir / "zoo.json").read_text())
    assert info["train_config"]["theta"] == 1e3 and math.isfinite(info["final_heldout_loss"])
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok("def f(): pass")["input_ids"][0] == tok.bos_token_id
    assert tok.eos_token_id is not None and tok.decode(tok("x = 1")["input_ids"], skip_special_tokens=True) == "x = 1"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.max_position_embeddings == 128
    with torch.no_grad():
        assert torch.isfinite(model(**tok("import os", return_tensors="pt")).logits).all()
    r = gammalens.measure(str(model_dir), corpus=str(smoke_zoo / "heldout"), windows=2, bootstrap=0)
    assert r.manifest["settings"]["context"] == 128
    assert r.manifest["model"]["arch"]["rope_theta"] == 1e3
    assert all(math.isfinite(f["gamma"]) for f in r.fits)


def test_a_finished_model_is_kept_on_rerun(smoke_zoo):
    before = (smoke_zoo / "theta1e3-T128" / "model.safetensors").stat().st_mtime_ns
    cfg = GridConfig(out=smoke_zoo, thetas=(1e3,), contexts=(128,), base=TrainConfig(steps=3, context=128, **TINY), limit_files=6)
    train_grid(cfg, log=lambda _: None)
    assert (smoke_zoo / "theta1e3-T128" / "model.safetensors").stat().st_mtime_ns == before


def test_two_step_training_is_deterministic(tmp_path):
    from safetensors.numpy import load_file

    cfg = GridConfig(out=tmp_path / "data", base=TrainConfig(steps=2, context=128, **TINY), limit_files=6)
    data = prepare_data(cfg, log=lambda _: None)
    point = TrainConfig(theta=1e4, context=64, steps=2, **TINY)
    weights = []
    for run in ("a", "b"):
        train_model(point, data.tokenizer, data.stream, data.heldout, tmp_path / run)
        weights.append(load_file(str(tmp_path / run / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
    curves = [(tmp_path / run / "training.csv").read_text().splitlines() for run in ("a", "b")]
    assert [line.rsplit(",", 1)[0] for line in curves[0]] == [line.rsplit(",", 1)[0] for line in curves[1]]


def test_rescaled_copy_changes_only_theta(smoke_zoo, tmp_path):
    from transformers import AutoModelForCausalLM

    from gammalens.theory.rope import inv_freq_default, inv_freqs_from_model
    from gammalens.zoo.rescale import rescaled_copy

    new = rescaled_copy(smoke_zoo / "theta1e3-T128", 16.0, tmp_path / "x16")
    assert new == 16e3
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "x16")
    (freqs,) = inv_freqs_from_model(model).values()
    np.testing.assert_allclose(freqs, inv_freq_default(16e3, 16), rtol=1e-6)
    assert (tmp_path / "x16" / "model.safetensors").read_bytes() == \
        (smoke_zoo / "theta1e3-T128" / "model.safetensors").read_bytes()


def test_report_markers_keep_the_prose(tmp_path):
    from gammalens.zoo.report import update_markdown

    path = tmp_path / "zoo.md"
    path.write_text("# Zoo\n\nprose before\n")
    update_markdown(path, {"models": "table 1"})
    update_markdown(path, {"models": "table 2", "rescale": "r"})
    text = path.read_text()
    assert "prose before" in text and "table 2" in text and "table 1" not in text
    assert text.count("<!-- zoo:begin models -->") == 1 and "<!-- zoo:begin rescale -->\nr\n" in text


def test_shipped_model_loads_offline_and_measures():
    import gammalens
    from gammalens.model.load import DEFAULT_MODEL, embedded_models

    path = embedded_models().get("gammalens-tiny")
    assert path is not None, "gammalens-tiny must ship inside the package (src/gammalens/zoo/gammalens-tiny)"
    assert DEFAULT_MODEL == "gammalens-tiny"
    assert (path / "model.safetensors").stat().st_size <= 10 * 2**20
    r = gammalens.measure("gammalens-tiny", context=128, windows=2, bootstrap=0)
    arch = r.manifest["model"]["arch"]
    assert r.manifest["model"]["source"] == "embedded" and arch["model_type"] == "llama"
    assert arch["rope_theta"] is not None and arch["max_positions"] >= 512
    heads = [f for f in r.fits if f["scope"] == "head"]
    assert len(heads) == arch["n_layers"] * arch["n_heads"]
    assert all(math.isfinite(f["gamma"]) for f in heads)
    assert all(f["gamma_pade"] is not None and "gamma_pade_rel_error" in f for f in r.fits)
