"""`gammalens card` on the published configs of real models, checked against hand computation."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from gammalens.card.config_card import build_card
from gammalens.cli import main
from gammalens.errors import TheoryError
from gammalens.model.architecture import architecture

GIB = 2**30

# config.json as published on the Hugging Face hub (fields that matter here kept verbatim)
LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "hidden_act": "silu", "hidden_size": 4096,
    "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "vocab_size": 128256,
}
MISTRAL_7B_V01 = {
    "architectures": ["MistralForCausalLM"], "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "vocab_size": 32000,
}
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu", "hidden_size": 3584, "intermediate_size": 18944,
    "max_position_embeddings": 131072, "max_window_layers": 28, "model_type": "qwen2", "num_attention_heads": 28,
    "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_sliding_window": False,
    "vocab_size": 152064,
}
GEMMA2_9B = {
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attn_logit_softcapping": 50.0,
    "cache_implementation": "hybrid", "final_logit_softcapping": 30.0, "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 3584, "intermediate_size": 14336,
    "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 16, "num_hidden_layers": 42,
    "num_key_value_heads": 8, "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0, "sliding_window": 4096, "torch_dtype": "float32", "vocab_size": 256000,
}
PYTHIA_1B = {
    "architectures": ["GPTNeoXForCausalLM"], "hidden_act": "gelu", "hidden_size": 2048, "intermediate_size": 8192,
    "layer_norm_eps": 1e-05, "max_position_embeddings": 2048, "model_type": "gpt_neox", "num_attention_heads": 8,
    "num_hidden_layers": 16, "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False,
    "torch_dtype": "float16", "use_parallel_residual": True, "vocab_size": 50304,
}
GPT2 = {
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_ctx": 1024,
    "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024, "vocab_size": 50257,
}


def _write(tmp_path: Path, config: dict, name: str = "model") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _cli(argv: list[str]) -> int:
    """Run the console entry point in-process and return its exit code."""
    try:
        main(argv)
    except SystemExit as ex:
        return 0 if ex.code is None else ex.code
    return 0


def _verdict(card, name: str) -> str:
    return next(v.status for v in card.verdicts if v.name == name)


def test_llama_31_8b(tmp_path):
    card = build_card(_write(tmp_path, LLAMA_31_8B), gpu_mem_gib=80)
    # per layer: q,o 4096² each; k,v 4096×1024 each; MLP 3×4096×14336; 2 RMSNorms of 4096
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    assert card.memory["params"] == 32 * layer + 4096 + 2 * 128256 * 4096 == 8_030_261_248
    assert card.memory["weight_bytes"] == 2 * 8_030_261_248
    assert card.memory["kv_bytes"] == 2 * 32 * 8 * 128 * 131072 * 2  # 2 × layers × kv × head_dim × T × bytes
    assert card.rope["rope_type"] == "llama3" and card.rope["factor"] == 8.0
    assert card.rope["t_cross"] == pytest.approx(2 * math.pi * math.sqrt(5e5))
    assert card.prediction["gamma_pade"] == pytest.approx((1e6 - 131072 * math.sqrt(2)) / (1e6 + 131072 * math.sqrt(2)))
    assert card.prediction["d_horizon"] == pytest.approx(131072)  # d_horizon(γ_Padé(θ, T)) = T
    assert card.prediction["phase"] == "A" and card.prediction["regime"] == "Normal"
    assert [_verdict(card, n) for n in ("attention", "positions", "context", "scaling", "aliasing", "memory")] == \
        ["ok", "ok", "ok", "warn", "warn", "ok"]


def test_llama_largest_context_on_a_24_gib_gpu(tmp_path):
    card = build_card(_write(tmp_path, LLAMA_31_8B), context=32768, gpu_mem_gib=24)
    per_token = 2 * 32 * 8 * 128 * 2  # KV bytes per token, bf16
    budget = 24 * GIB - 0.1 * 24 * GIB - 2 * 8_030_261_248  # minus the 10% allowance and the weights
    assert card.memory["largest_context"] == math.floor(budget / per_token) == 54_415
    assert card.memory["largest_context_limit"] == "GPU memory" and card.memory["fits"] is True
    small = build_card(_write(tmp_path, LLAMA_31_8B, "again"), context=131072, gpu_mem_gib=24)
    assert _verdict(small, "memory") == "fail" and small.memory["fits"] is False


def test_mistral_7b_sliding_window(tmp_path):
    card = build_card(_write(tmp_path, MISTRAL_7B_V01))
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    assert card.memory["params"] == 32 * layer + 4096 + 2 * 32000 * 4096 == 7_241_732_096
    assert card.memory["kv_bytes"] == 2 * 32 * 8 * 128 * 4096 * 2  # every layer caps at the 4096 window
    assert card.architecture["attention"] == "sliding window"
    assert card.prediction["regime"] == "SWA" and _verdict(card, "sliding window") == "warn"
    short = build_card(_write(tmp_path, MISTRAL_7B_V01, "short"), context=2048)
    assert short.memory["kv_bytes"] == 2 * 32 * 8 * 128 * 2048 * 2
    assert short.prediction["regime"] == "Normal" and _verdict(short, "sliding window") == "ok"


def test_qwen25_7b(tmp_path):
    card = build_card(_write(tmp_path, QWEN25_7B))
    # q,k,v carry biases, o does not
    layer = 2 * 3584 * 3584 + 2 * 3584 * 512 + (3584 + 2 * 512) + 3 * 3584 * 18944 + 2 * 3584
    assert card.memory["params"] == 28 * layer + 3584 + 2 * 152064 * 3584 == 7_615_616_512
    assert card.architecture["attention"] == "full"  # use_sliding_window: false
    assert card.memory["kv_bytes"] == 2 * 28 * 4 * 128 * 131072 * 2


def test_gemma2_9b_hybrid(tmp_path):
    card = build_card(_write(tmp_path, GEMMA2_9B), dtype="bf16")
    # head_dim 256 ≠ 3584/16; 4 RMSNorms per layer; tied embeddings
    layer = 3584 * 4096 + 2 * 3584 * 2048 + 4096 * 3584 + 3 * 3584 * 14336 + 4 * 3584
    assert card.memory["params"] == 42 * layer + 3584 + 256000 * 3584 == 9_241_705_984
    assert card.architecture["layer_kinds"] == {"sliding": 21, "full": 21}
    assert card.memory["kv_bytes"] == 2 * 8 * 256 * 2 * (21 * 8192 + 21 * 4096)
    assert card.prediction["regime"] == "Normal (full layers), SWA (sliding layers)"
    assert card.memory["weight_dtype"] == "bf16"
    assert build_card(_write(tmp_path, GEMMA2_9B, "f32")).memory["weight_dtype"] == "float32"


def test_pythia_1b_partial_rotary(tmp_path):
    card = build_card(_write(tmp_path, PYTHIA_1B))
    # fused qkv 2048×6144 + bias, dense + bias, MLP 2048↔8192 + biases, 2 LayerNorms (w+b)
    layer = (2048 * 6144 + 6144) + (2048 * 2048 + 2048) + (2048 * 8192 + 8192) + (8192 * 2048 + 2048) + 4 * 2048
    assert card.memory["params"] == 16 * layer + 2 * 2048 + 2 * 50304 * 2048 == 1_011_781_632
    assert (card.rope["rotary_dim"], card.rope["n_pairs"]) == (64, 32)  # 0.25 × 256
    assert card.memory["kv_bytes"] == 2 * 16 * 8 * 256 * 2048 * 2  # fp16 from torch_dtype


def test_gpt2_learned_positions(tmp_path):
    card = build_card(_write(tmp_path, GPT2), dtype="fp32", context=2048)
    layer = (768 * 2304 + 2304) + (768 * 768 + 768) + (768 * 3072 + 3072) + (3072 * 768 + 768) + 4 * 768
    assert card.memory["params"] == 12 * layer + 2 * 768 + 50257 * 768 + 1024 * 768 == 124_439_808
    assert card.memory["kv_bytes"] == 2 * 12 * 12 * 64 * 2048 * 4
    assert card.rope is None and card.prediction is None
    assert _verdict(card, "positions") == "warn" and _verdict(card, "context") == "fail"
    with pytest.raises(TheoryError, match="γ_Padé does not apply"):
        architecture(GPT2).main_rope()


def test_phi3_mini_128k_longrope_without_factor(tmp_path):
    phi3 = {  # Phi-3-mini-128k-instruct; its 48 short/long factors replaced by made-up ones
        "architectures": ["Phi3ForCausalLM"], "hidden_size": 3072, "intermediate_size": 8192,
        "max_position_embeddings": 131072, "model_type": "phi3", "num_attention_heads": 32, "num_hidden_layers": 32,
        "num_key_value_heads": 32, "original_max_position_embeddings": 4096, "pad_token_id": 32000,
        "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 48, "long_factor": [1.0 + i for i in range(48)]},
        "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": False, "vocab_size": 32064,
    }
    card = build_card(_write(tmp_path, phi3), context=65536)
    layer = 4 * 3072 * 3072 + 3 * 3072 * 8192 + 2 * 3072  # fused qkv + o, fused gate_up + down, 2 norms
    assert card.memory["params"] == 32 * layer + 3072 + 2 * 32064 * 3072 == 3_821_079_552
    assert card.rope["factor"] == 131072 / 4096 and _verdict(card, "scaling") == "warn"
    assert card.memory["kv_bytes"] == 2 * 32 * 32 * 96 * 65536 * 2


def test_gemma3_rope_per_layer_type(tmp_path):
    gemma3 = {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
              "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208,
              "max_position_embeddings": 131072, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
              "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024,
              "sliding_window_pattern": 6, "query_pre_attn_scalar": 256}
    card = build_card(_write(tmp_path, gemma3), context=32768)
    assert card.rope["theta_by_layer_type"] == {"sliding_attention": 1e4, "full_attention": 1e6}
    assert (card.rope["theta"], card.rope["rope_type"]) == (1e6, "linear")  # the global layers' RoPE
    assert card.architecture["layer_kinds"] == {"sliding": 29, "full": 5}
    assert card.memory["kv_bytes"] == 2 * 4 * 256 * 2 * (5 * 32768 + 29 * 1024)


def test_no_softmax_attention(tmp_path):
    mamba = {"model_type": "mamba", "num_hidden_layers": 24, "hidden_size": 768, "vocab_size": 50280,
             "state_size": 16}
    card = build_card(_write(tmp_path, mamba), context=4096)
    assert card.architecture["attention"] == "none" and card.memory["kv_bytes"] == 0
    assert _verdict(card, "attention") == "fail" and card.prediction is None


def test_cli_json_and_table(tmp_path, capsys):
    folder = _write(tmp_path, MISTRAL_7B_V01)
    assert _cli(["card", str(folder / "config.json"), "--context", "8192", "--batch", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["memory"]["kv_bytes"] == 2 * 32 * 8 * 128 * 4096 * 2 * 4
    assert {v["symbol"] for v in data["verdicts"]} <= {"✅", "⚠", "❌"}
    assert _cli(["card", str(folder), "--gpu-mem", "16", "--kv-dtype", "fp8"]) == 0
    out = capsys.readouterr().out
    assert "γ_Padé" in out and "✅" in out and "largest context" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--eps", "1.5"], "ε must lie strictly between 0 and 1"),
    (["--context", "0"], "at least 1 token"),
    (["--dtype", "fp7"], "unknown dtype"),
    (["--gpu-mem", "0"], "--gpu-mem"),
])
def test_cli_bad_options_exit_2_with_one_line(tmp_path, capsys, args, message):
    folder = _write(tmp_path, LLAMA_31_8B)
    code = _cli(["card", str(folder), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err


def test_cli_bad_configs(tmp_path, capsys):
    incomplete = {k: v for k, v in LLAMA_31_8B.items() if k != "num_hidden_layers"}
    for source, message in [(_write(tmp_path, incomplete), "lacks num_hidden_layers"),
                            (tmp_path / "nothing-here", "hub lookup failed"),
                            (_write(tmp_path, {}, "empty"), "lacks")]:
        code = _cli(["card", str(source)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and "\n" not in err


def test_console_script_end_to_end(tmp_path):
    script = Path(sys.executable).parent / "gammalens"
    bad = _write(tmp_path, {"model_type": "llama", "hidden_size": 64})
    done = subprocess.run([str(script), "card", str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("gammalens: error: config.json lacks") and done.stderr.count("\n") == 1
