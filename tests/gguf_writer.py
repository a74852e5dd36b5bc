"""Write small GGUF files for the tests: a random-init tiny Llama (GQA) with F32 tensors and a byte-level BPE
vocabulary, laid out as llama.cpp's ``convert_hf_to_gguf.py`` lays out Llama checkpoints (q/k rows permuted
into GGML's interleaved RoPE order). Independent of gammalens: only the ``gguf`` package writes the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TOKENIZER = Path(__file__).resolve().parents[1] / "src" / "gammalens" / "zoo" / "gammalens-tiny" / "tokenizer.json"
N_LAYERS, N_HEADS, N_KV, HIDDEN, FFN, HEAD_DIM = 2, 4, 2, 64, 128, 16
THETA, CONTEXT = 10_000.0, 256


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k permutation (HF rotate-half layout → GGML interleaved pairs); rows per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def build_llama(seed: int = 0):
    """A random-init tiny LlamaForCausalLM (fp32, eval) whose vocabulary is gammalens-tiny's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = len(json.loads(TOKENIZER.read_text())["model"]["vocab"])
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=N_LAYERS,
                      num_attention_heads=N_HEADS, num_key_value_heads=N_KV, head_dim=HEAD_DIM,
                      max_position_embeddings=CONTEXT, rms_norm_eps=1e-6, rope_theta=THETA,
                      tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norms, so a mix-up of norm tensors cannot pass unnoticed
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif "q_proj" in name:
                p.mul_(8.0)
    return model


def write_gguf(model, path: Path, *, architecture: str = "llama", truncate_to: int | None = None) -> Path:
    """Write ``model`` (from :func:`build_llama`) as an F32 GGUF at ``path``; optionally cut the file short."""
    import gguf

    tok = json.loads(TOKENIZER.read_text())
    vocab = tok["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {a["id"] for a in tok["added_tokens"]}
    merges = [" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]]

    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w = gguf.GGUFWriter(str(path), architecture)
    w.add_name("gammalens test llama")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(N_LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(N_HEADS)
    w.add_head_count_kv(N_KV)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(THETA)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))])
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_pad_token_id(2)
    w.add_add_bos_token(True)

    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(N_LAYERS):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], N_HEADS))
        w.add_tensor(f"blk.{i}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], N_KV))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if truncate_to is not None:
        with open(path, "r+b") as fh:
            fh.truncate(truncate_to)
    return path
