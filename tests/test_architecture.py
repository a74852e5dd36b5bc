"""One Architecture: the facts a measurement records (from the loaded model) and the facts the card reads (from
config.json) come from one reader, and they are right for every architecture of the contract matrix."""

from __future__ import annotations

from pathlib import Path

import pytest

from gammalens.model.architecture import architecture, from_model, model_facts
from gammalens.model.load import arch_facts
from tests.conftest import arch_specs, build_tiny

# what each tiny model of the contract matrix is, from its constructor arguments (tests/conftest.py)
EXPECTED = {
    "llama_gqa": {"position_encoding": "rope", "n_kv_heads": 2, "head_dim": 8, "sliding_window": None, "causal": True},
    "mistral_swa": {"position_encoding": "rope", "n_kv_heads": 1, "head_dim": 8, "sliding_window": 12, "causal": True},
    "qwen2": {"position_encoding": "rope", "n_kv_heads": 2, "head_dim": 8, "sliding_window": None, "causal": True},
    "gemma2_softcap": {"position_encoding": "rope", "n_kv_heads": 2, "head_dim": 8, "sliding_window": 10,
                       "causal": True},
    # Gemma-3's default θ pair: 10⁴ on sliding layers, 10⁶ on global ones; rope_theta is the global layers'
    "gemma3_hybrid": {"position_encoding": "rope", "n_kv_heads": 1, "head_dim": 8, "sliding_window": 10, "causal": True,
                      "layer_types": ["sliding_attention", "full_attention"], "rope_theta": 1e6,
                      "layer_rope_theta": [1e4, 1e6]},
    "gpt_neox_partial": {"position_encoding": "rope", "n_kv_heads": 4, "head_dim": 8, "partial_rotary_factor": 0.25,
                         "causal": True},
    "gpt2": {"position_encoding": "learned", "n_kv_heads": 4, "head_dim": 8, "rope_theta": None, "causal": True},
    "bert": {"position_encoding": "learned", "n_kv_heads": 4, "head_dim": 8, "rope_theta": None, "causal": False},
}


@pytest.mark.parametrize("arch", list(arch_specs()))
def test_model_facts_are_right_and_agree_with_the_config_reader(arch: str, tmp_path: Path) -> None:
    model = build_tiny(arch)
    facts = model_facts(model)
    assert arch_facts(model) == facts                              # models.arch_facts is this one reader
    assert (facts["n_layers"], facts["n_heads"], facts["hidden_size"], facts["max_positions"]) == (2, 4, 32, 128)
    for key, value in EXPECTED[arch].items():
        assert facts[key] == value, (key, facts[key])
    assert facts["n_params"] == sum(p.numel() for p in model.parameters())
    model.config.save_pretrained(tmp_path)                         # the card's path: config.json alone
    import json

    card = architecture(json.loads((tmp_path / "config.json").read_text()))
    live = from_model(model)
    assert (card.n_layers, card.n_heads, card.n_kv_heads, card.head_dim, card.positions, card.sliding_window,
            card.rope_theta) == (live.n_layers, live.n_heads, live.n_kv_heads, live.head_dim, live.positions,
                                 live.sliding_window, live.rope_theta)


def test_multi_query_and_learned_positions_of_gpt_bigcode() -> None:
    a = architecture({"model_type": "gpt_bigcode", "n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 100,
                      "multi_query": True, "n_positions": 256})
    assert (a.positions, a.n_kv_heads, a.max_positions) == ("learned", 1, 256)
