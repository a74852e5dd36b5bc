"""RoPE geometry against the real frequency buffers of transformers modules and hand formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gammalens.errors import TheoryError
from gammalens.theory import rope

TINY = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1,
        "num_hidden_layers": 1, "intermediate_size": 32, "vocab_size": 16, "max_position_embeddings": 2048,
        "rope_theta": 10000.0}
SCALINGS = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 512},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 512},
    "longrope": {"rope_type": "longrope", "short_factor": [1.0 + 0.1 * i for i in range(16)],
                 "long_factor": [2.0 + 0.5 * i for i in range(16)], "original_max_position_embeddings": 512},
}


def _model_buffer(config: dict) -> np.ndarray:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    return LlamaRotaryEmbedding(LlamaConfig(**config)).inv_freq.double().numpy()


@pytest.mark.parametrize("rope_type", list(SCALINGS))
def test_inv_freq_matches_the_real_rotary_buffer(rope_type):
    config = TINY | ({"rope_scaling": SCALINGS[rope_type]} if SCALINGS[rope_type] else {})
    spec = rope.rope_specs(config)["all"]
    assert spec.rope_type == rope_type and spec.rotary_dim == 32
    np.testing.assert_allclose(rope.inv_freq(spec), _model_buffer(config), rtol=1e-6)


def test_linear_and_llama3_against_hand_formulas():
    base = 10000.0 ** (-np.arange(0, 32, 2) / 32)  # θ^(−2i/d)
    linear = rope.rope_specs(TINY | {"rope_scaling": SCALINGS["linear"]})["all"]
    np.testing.assert_allclose(rope.inv_freq(linear), base / 4.0, rtol=1e-6)
    # Meta's reference llama3 rule, written out: keep λ < L/4, divide λ > L by 8, blend in between
    lam, old = 2 * np.pi / base, 512
    smooth = (old / lam - 1.0) / (4.0 - 1.0)
    expected = np.where(lam < old / 4, base, np.where(lam > old, base / 8, (1 - smooth) * base / 8 + smooth * base))
    llama3 = rope.rope_specs(TINY | {"rope_scaling": SCALINGS["llama3"]})["all"]
    np.testing.assert_allclose(rope.inv_freq(llama3), expected, rtol=1e-6)


def test_dynamic_ntk_rescales_theta_beyond_max_positions():
    spec = rope.rope_specs(TINY | {"rope_scaling": SCALINGS["dynamic"]})["all"]
    seq, d = 8192, 32
    theta = 10000.0 * (2.0 * seq / 2048 - 1.0) ** (d / (d - 2))  # NTK-aware base at seq_len
    np.testing.assert_allclose(rope.inv_freq(spec, seq_len=seq), theta ** (-np.arange(0, d, 2) / d), rtol=1e-5)


def test_partial_rotary_matches_gpt_neox_buffer():
    from transformers import GPTNeoXConfig
    from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding

    raw = {"model_type": "gpt_neox", "hidden_size": 256, "num_attention_heads": 4, "rotary_pct": 0.25,
           "rotary_emb_base": 10000, "max_position_embeddings": 2048}
    spec = rope.rope_specs(raw)["all"]
    assert (spec.head_dim, spec.rotary_dim, spec.n_pairs) == (64, 16, 8)
    buffer = GPTNeoXRotaryEmbedding(GPTNeoXConfig(**raw)).inv_freq.double().numpy()
    np.testing.assert_allclose(rope.inv_freq(spec), buffer, rtol=1e-6)


def test_inv_freqs_from_a_loaded_model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY))
    buffers = rope.inv_freqs_from_model(model)
    assert list(buffers) == ["model.rotary_emb.inv_freq"]
    np.testing.assert_allclose(buffers["model.rotary_emb.inv_freq"], rope.inv_freq_default(10000.0, 32), rtol=1e-6)


def test_rope_specs_layouts():
    new = rope.rope_specs({"hidden_size": 64, "num_attention_heads": 2,
                           "rope_parameters": {"rope_type": "default", "rope_theta": 5e5}})["all"]
    assert new.theta == 5e5
    per_type = rope.rope_specs({"head_dim": 16, "num_attention_heads": 2, "rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}})
    assert {k: s.theta for k, s in per_type.items()} == {"full_attention": 1e6, "sliding_attention": 1e4}
    assert rope.rope_specs({"hidden_size": 64, "num_attention_heads": 2}) == {}  # no RoPE fields
    with pytest.raises(TheoryError, match="rope_type"):
        rope.rope_specs(TINY | {"rope_scaling": {"rope_type": "magic", "factor": 2}})
    with pytest.raises(TheoryError, match="head_dim"):
        rope.rope_specs({"rope_theta": 1e4})


def test_wavelengths_and_scales():
    freqs = rope.inv_freq_default(10000.0, 128)
    lam = rope.wavelengths(freqs)
    np.testing.assert_allclose(lam, 2 * np.pi * 10000.0 ** (np.arange(64) * 2 / 128))  # λ_i = 2πθ^(2i/d)
    assert rope.t_cross(10000.0) == pytest.approx(2 * np.pi * 100)
    assert rope.t_max(1e6) == pytest.approx(2 * np.pi * 1e6)
    # the closed form counts half of the pairs at T_cross and none at T_max
    assert rope.n_active_closed_form(rope.t_cross(1e4), 1e4, 128) == pytest.approx(32)
    assert rope.n_active_closed_form(rope.t_max(1e4), 1e4, 128) == pytest.approx(0, abs=1e-12)
    assert rope.n_active_closed_form(1.0, 1e4, 128) == 64  # clipped at d/2


@pytest.mark.parametrize("theta", [1e4, 5e5, 1e6])
def test_exact_count_brute_force_and_closed_form(theta):
    freqs = rope.inv_freq_default(theta, 128)
    for d in np.geomspace(1, 1e8, 200):
        brute = sum(1 for w in freqs if 2 * math.pi / w > d)  # pairs still short of one turn at d
        assert rope.n_active(d, freqs) == brute
        assert abs(brute - rope.n_active_closed_form(d, theta, 128)) <= 1.0


@settings(max_examples=60, deadline=None)
@given(st.floats(0.5, 1e9), st.floats(0.5, 1e9), st.sampled_from([1e4, 5e5, 1e7]), st.sampled_from([32, 64, 128]))
def test_n_active_non_increasing_in_distance(d1, d2, theta, dim):
    lo, hi = min(d1, d2), max(d1, d2)
    freqs = rope.inv_freq_default(theta, dim)
    assert rope.n_active(hi, freqs) <= rope.n_active(lo, freqs)
    assert rope.n_active_closed_form(hi, theta, dim) <= rope.n_active_closed_form(lo, theta, dim)


@pytest.mark.parametrize("context", [100, 4096, 32768, 131072, 1_000_003])
def test_critical_dim_counts_aliased_pairs(context):
    theta, dim = 10000.0, 128
    lam = [2 * math.pi * theta ** (2 * i / dim) for i in range(dim // 2)]
    aliased = sum(1 for w in lam if w <= context)  # pairs that completed a turn within T
    assert rope.critical_dim(context, theta, dim) == 2 * aliased
    with pytest.raises(TheoryError):
        rope.critical_dim(0, theta, dim)
