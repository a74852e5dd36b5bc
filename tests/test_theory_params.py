"""Architecture facts and parameter counts from configs, against models transformers instantiates."""

from __future__ import annotations

import pytest

from gammalens.card import kv_cache
from gammalens.card.params import FORMULA_TYPES, parameter_count
from gammalens.errors import TheoryError
from gammalens.model.architecture import architecture, load_config

BASE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 96, "vocab_size": 100, "max_position_embeddings": 256, "pad_token_id": 0}
TINY = {
    "llama": BASE | {"model_type": "llama"},
    "llama_biases_tied": BASE | {"model_type": "llama", "attention_bias": True, "mlp_bias": True,
                                 "tie_word_embeddings": True},
    "mistral": BASE | {"model_type": "mistral", "sliding_window": 32},
    "qwen2": BASE | {"model_type": "qwen2"},
    "qwen3": BASE | {"model_type": "qwen3", "head_dim": 32},
    "gemma": BASE | {"model_type": "gemma", "head_dim": 24},
    "gemma2": BASE | {"model_type": "gemma2", "head_dim": 24, "sliding_window": 32},
    "gemma3_text": BASE | {"model_type": "gemma3_text", "head_dim": 24, "sliding_window": 32},
    "phi3": BASE | {"model_type": "phi3"},
    "gpt_neox": BASE | {"model_type": "gpt_neox", "num_key_value_heads": None, "rotary_pct": 0.25},
    "gpt2": {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 100, "n_positions": 256},
    "phi (meta device)": BASE | {"model_type": "phi", "num_key_value_heads": None, "partial_rotary_factor": 0.5},
}


def _instantiated_count(raw: dict) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**{k: v for k, v in raw.items() if v is not None}))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(TINY))
def test_parameter_count_matches_transformers(name):
    raw = {k: v for k, v in TINY[name].items() if v is not None}
    count = parameter_count(architecture(raw))
    assert count.total == _instantiated_count(raw)
    assert count.method == ("formula" if raw["model_type"] in FORMULA_TYPES else "meta-device")


def test_layer_kinds_follow_transformers():
    gemma2 = architecture(TINY["gemma2"] | {"num_hidden_layers": 4})
    assert gemma2.layer_kinds == ("sliding", "full", "sliding", "full") and gemma2.attention == "hybrid"
    gemma3 = architecture(TINY["gemma3_text"] | {"num_hidden_layers": 7})
    assert gemma3.layer_kinds.count("full") == 1 and gemma3.layer_kinds[5] == "full"  # 5 local : 1 global
    assert architecture(TINY["mistral"]).attention == "sliding window"
    qwen = architecture(TINY["qwen2"] | {"sliding_window": 32, "use_sliding_window": False})
    assert qwen.attention == "full" and qwen.sliding_window is None
    explicit = architecture(BASE | {"model_type": "llama", "layer_types": ["full_attention", "linear_attention"]})
    assert explicit.layer_kinds == ("full", "none") and explicit.attention == "hybrid"
    mamba = architecture({"model_type": "mamba", "num_hidden_layers": 2, "hidden_size": 64, "vocab_size": 100})
    assert (mamba.attention, mamba.positions, mamba.n_heads) == ("none", "none", None)


def test_unknown_model_type_is_read_as_written():
    arch = architecture(BASE | {"model_type": "my_new_lm", "rope_theta": 5e4, "sliding_window": 16})
    assert not arch.known_to_transformers
    assert (arch.attention, arch.rope_theta, arch.head_dim) == ("sliding window", 5e4, 16)
    with pytest.raises(TheoryError, match="cannot count the parameters"):
        parameter_count(arch)


def test_kv_cache_hand_computation():
    arch = architecture(TINY["gemma2"] | {"num_hidden_layers": 4})
    # 2 sliding layers cap at 32 tokens, 2 full layers hold T; 2 × kv_heads × head_dim × tokens × bytes × B
    assert kv_cache.kv_cache_bytes(arch, 100, batch=3, element_bytes=2) == 2 * 2 * 24 * (32 * 2 + 100 * 2) * 2 * 3
    mla = architecture(BASE | {"model_type": "deepseek_v3", "kv_lora_rank": 512, "qk_rope_head_dim": 64})
    assert kv_cache.kv_cache_bytes(mla, 1000, element_bytes=1) == (512 + 64) * 1000 * 2  # latent × T × layers
    assert kv_cache.dtype_bytes("torch.bfloat16") == 2 and kv_cache.dtype_bytes("INT4") == 0.5
    with pytest.raises(TheoryError, match="unknown dtype"):
        kv_cache.dtype_bytes("fp7")
    with pytest.raises(TheoryError, match="batch"):
        kv_cache.kv_cache_bytes(arch, 100, batch=0)


def test_missing_fields_and_bad_files(tmp_path):
    with pytest.raises(TheoryError, match="lacks hidden_size"):
        architecture({"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 10})
    with pytest.raises(TheoryError, match="not a multiple"):
        architecture(BASE | {"model_type": "llama", "num_key_value_heads": 3})
    with pytest.raises(TheoryError, match=r"has no config\.json"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(TheoryError, match="not a readable JSON config"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text('{"text_config": {"model_type": "gemma3_text", "num_hidden_layers": 2}}')
    assert load_config(tmp_path)["model_type"] == "gemma3_text"
