"""KV-cache size at a context T: GQA, sliding-window, hybrid and dtype aware (glossary: KV cache, GQA).

Per layer and sequence, a softmax-attention layer caches keys and values of every KV head:

    bytes = 2 × n_kv_heads × head_dim × tokens × bytes_per_element,

with tokens = T for full attention, min(T, W) for a sliding window W, and 0 for layers without softmax
attention (their recurrent state does not grow with T and is not counted). Multi-head latent attention
(DeepSeek-V2/V3) caches one latent of kv_lora_rank + qk_rope_head_dim values per token and layer, as
vLLM and SGLang store it (transformers' eager cache expands it to full K and V and is far larger).
"""

from __future__ import annotations

import numpy as np

from gammalens.errors import TheoryError
from gammalens.model.architecture import Architecture

DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0, "float32": 4.0, "bf16": 2.0, "bfloat16": 2.0, "fp16": 2.0, "float16": 2.0,
    "fp8": 1.0, "float8": 1.0, "int8": 1.0, "int4": 0.5, "nf4": 0.5,
}


def dtype_bytes(name: str) -> float:
    """Bytes per element of a dtype name (``'bf16'``, ``'float16'``, ``'fp8'``, ``'int4'``, ...).

    >>> dtype_bytes("bfloat16"), dtype_bytes("int4")
    (2.0, 0.5)
    """
    key = str(name).lower().removeprefix("torch.")
    if key not in DTYPE_BYTES:
        raise TheoryError(f"unknown dtype {name!r}; use one of {', '.join(sorted(set(DTYPE_BYTES)))}")
    return DTYPE_BYTES[key]


def cached_tokens(arch: Architecture, context: int) -> np.ndarray:
    """Tokens each layer caches at context T, shape (n_layers,).

    >>> from gammalens.model.architecture import architecture
    >>> a = architecture({"model_type": "mistral", "num_hidden_layers": 2, "hidden_size": 64,
    ...                   "num_attention_heads": 4, "vocab_size": 10, "sliding_window": 100})
    >>> cached_tokens(a, 1000)
    array([100, 100])
    """
    if not context >= 1:
        raise TheoryError(f"the context T must be at least 1 token (got {context})")
    window = arch.sliding_window if arch.sliding_window is not None else context
    per_kind = {"full": int(context), "sliding": int(min(context, window)), "none": 0}
    return np.array([per_kind[kind] for kind in arch.layer_kinds], dtype=np.int64)  # (n_layers,)


def bytes_per_token(arch: Architecture, element_bytes: float) -> float:
    """KV bytes one cached token costs in one softmax-attention layer (keys and values, all KV heads)."""
    if arch.mla is not None:
        kv_lora_rank, rope_dim = arch.mla
        return (kv_lora_rank + rope_dim) * element_bytes
    if arch.n_kv_heads is None or arch.head_dim is None:
        return 0.0
    return 2 * arch.n_kv_heads * arch.head_dim * element_bytes


def kv_cache_bytes(arch: Architecture, context: int, *, batch: int = 1, element_bytes: float = 2.0) -> int:
    """Bytes of the KV cache holding ``batch`` sequences of T tokens.

    Examples
    --------
    >>> from gammalens.model.architecture import architecture
    >>> a = architecture({"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096,
    ...                   "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256})
    >>> kv_cache_bytes(a, 8192) / 2**30  # 2 × 32 × 8 × 128 × 8192 × 2 bytes
    1.0
    """
    if not batch >= 1:
        raise TheoryError(f"the batch must be at least 1 sequence (got {batch})")
    return round(bytes_per_token(arch, element_bytes) * int(cached_tokens(arch, context).sum()) * batch)
