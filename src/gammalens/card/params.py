"""Parameter count from a config alone: closed forms per family, else transformers on the meta device.

The closed forms follow the module definitions in transformers (Linear weights and biases, norms,
embeddings, an untied output head) and are tested against instantiating the same configs, shrunk, with
transformers. Other architectures known to transformers are counted by building the model on the
``meta`` device (no memory, needs torch); unknown ones raise :class:`~gammalens.errors.TheoryError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gammalens.errors import TheoryError
from gammalens.model.architecture import Architecture, quiet_transformers

# model_type → (q/k/v bias, o bias, MLP bias, norms per layer, q/k norms): from transformers' modules.
# "cfg:NAME" reads the boolean config field NAME (default False).
_LLAMA_LIKE: dict[str, tuple[str | bool, str | bool, str | bool, int, bool]] = {
    "llama": ("cfg:attention_bias", "cfg:attention_bias", "cfg:mlp_bias", 2, False),
    "mistral": (False, False, False, 2, False),
    "qwen2": (True, False, False, 2, False),
    "qwen3": ("cfg:attention_bias", "cfg:attention_bias", False, 2, True),
    "gemma": ("cfg:attention_bias", "cfg:attention_bias", False, 2, False),
    "gemma2": ("cfg:attention_bias", "cfg:attention_bias", False, 4, False),
    "gemma3_text": ("cfg:attention_bias", "cfg:attention_bias", False, 4, True),
    "phi3": (False, False, False, 2, False),
}
FORMULA_TYPES = frozenset(_LLAMA_LIKE) | {"gpt_neox", "gpt2"}


@dataclass(frozen=True)
class ParameterCount:
    """Parameters of a model and how they were counted.

    Attributes
    ----------
    total : int
        Parameters (tied embeddings counted once).
    method : str
        ``'formula'`` (closed form for the family) or ``'meta-device'`` (transformers on torch's meta device).
    """

    total: int
    method: str


def _flag(arch: Architecture, rule: str | bool) -> bool:
    if isinstance(rule, bool):
        return rule
    return bool(arch.config.get(rule.removeprefix("cfg:"), False))


def _need(arch: Architecture, value: int | None, name: str) -> int:
    if value is None:
        raise TheoryError(f"config.json lacks {name}, needed to count parameters; add it")
    return value


def _llama_like(arch: Architecture) -> int:
    qkv_bias, o_bias, mlp_bias, n_norms, qk_norm = _LLAMA_LIKE[arch.model_type]
    h, v = arch.hidden_size, arch.vocab_size
    inter = _need(arch, arch.intermediate_size, "intermediate_size")
    q_out, kv_out = arch.n_heads * arch.head_dim, arch.n_kv_heads * arch.head_dim
    attn = h * q_out + 2 * h * kv_out + q_out * h
    attn += (q_out + 2 * kv_out) * _flag(arch, qkv_bias) + h * _flag(arch, o_bias)
    attn += 2 * arch.head_dim * qk_norm
    mlp = 3 * h * inter + (2 * inter + h) * _flag(arch, mlp_bias)
    layer = attn + mlp + n_norms * h
    return arch.n_layers * layer + h + v * h * (1 if arch.tie_embeddings else 2)


def _gpt_neox(arch: Architecture) -> int:
    h, v = arch.hidden_size, arch.vocab_size
    inter = _need(arch, arch.intermediate_size, "intermediate_size")
    bias = bool(arch.config.get("attention_bias", True))
    attn = 3 * h * h + h * h + 4 * h * bias
    mlp = 2 * h * inter + inter + h
    layer = attn + mlp + 2 * 2 * h  # two LayerNorms, weight + bias
    return arch.n_layers * layer + 2 * h + v * h * (1 if arch.tie_embeddings else 2)


def _gpt2(arch: Architecture) -> int:
    h, v = arch.hidden_size, arch.vocab_size
    inter = _need(arch, arch.intermediate_size, "n_inner")
    positions = _need(arch, arch.max_positions, "n_positions")
    layer = (3 * h * h + 3 * h) + (h * h + h) + (h * inter + inter) + (inter * h + h) + 2 * 2 * h
    return arch.n_layers * layer + 2 * h + v * h + positions * h


def _meta_device(arch: Architecture) -> int:
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        with quiet_transformers():
            config = AutoConfig.for_model(**arch.config)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config)
    except Exception as err:
        raise TheoryError(f"cannot count the parameters of model_type {arch.model_type!r} from its config "
                          f"({type(err).__name__}); weight memory is unknown") from None
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once


def parameter_count(arch: Architecture) -> ParameterCount:
    """Number of parameters implied by a config.

    Examples
    --------
    >>> from gammalens.model.architecture import architecture
    >>> gpt2 = architecture({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12,
    ...                      "vocab_size": 50257, "n_positions": 1024})
    >>> parameter_count(gpt2)
    ParameterCount(total=124439808, method='formula')
    """
    if arch.mla is None and arch.model_type in _LLAMA_LIKE:
        return ParameterCount(_llama_like(arch), "formula")
    if arch.model_type == "gpt_neox":
        return ParameterCount(_gpt_neox(arch), "formula")
    if arch.model_type == "gpt2":
        return ParameterCount(_gpt2(arch), "formula")
    return ParameterCount(_meta_device(arch), "meta-device")
