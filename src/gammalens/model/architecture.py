"""Architecture facts, in one place: from a ``config.json`` alone (the card) or from a loaded model (every
run's manifest) — shapes, attention type per layer, positions.

The config is read as written; fields it omits take transformers' defaults for its ``model_type`` (what
the model would run with), except the shape-defining ones (layers, hidden size, heads, vocabulary,
MLP width), whose absence means the file is not a usable model config and raises
:class:`~gammalens.errors.TheoryError`. Per-layer attention kinds:

- ``'full'``: softmax attention over the whole context;
- ``'sliding'``: softmax attention over the last ``sliding_window`` tokens (also chunked attention);
- ``'none'``: no softmax attention and no KV cache growing with T (Mamba, RWKV, linear-attention or
  convolution layers of hybrids).

:func:`from_model` reads a loaded model's config the same way, and :func:`model_facts` gives the
manifest's ``model.arch`` from it, so a card and a measurement never disagree about a model.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gammalens.errors import TheoryError
from gammalens.model import hub
from gammalens.theory.rope import RopeSpec, rope_specs

NO_ATTENTION_TYPES = frozenset({"mamba", "mamba2", "falcon_mamba", "rwkv", "xlstm"})
# learned absolute position embeddings (decoders and encoders)
LEARNED_POSITION_TYPES = frozenset({"gpt2", "gpt_bigcode", "opt", "gpt_neo", "xglm", "biogpt", "codegen_learned",
                                    "bert", "roberta", "distilbert", "xlm-roberta", "electra", "camembert",
                                    "mpnet", "albert"})
ALIBI_TYPES = frozenset({"bloom", "mpt"})
_LAYER_KIND = {"full_attention": "full", "sliding_attention": "sliding", "chunked_attention": "sliding"}

# field → names it goes by across families (the first is the canonical one)
_ALIASES = {
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads"),
    "vocab_size": ("vocab_size",),
}


def load_config(source: str | Path) -> dict[str, Any]:
    """Read a model config: a ``config.json`` file, a directory holding one, or a hub id (online).

    Multimodal configs whose language model sits under ``text_config`` are reduced to it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "config.json").write_text('{"model_type": "gpt2"}')
    >>> load_config(d)["model_type"]
    'gpt2'
    """
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise TheoryError(f"{source} has no config.json; pass the file itself or the model directory")
    if path.is_file():
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise TheoryError(f"{path} is not a readable JSON config ({err}); pass a model's config.json") from None
    else:
        try:
            from transformers import AutoConfig


            with hub.quiet():  # offline: one line after a short connect, not a dozen retry lines
                hub.reachable_or_raise()
                raw = AutoConfig.from_pretrained(str(source)).to_dict()
        except Exception as err:
            reason = str(err).splitlines()[0][:160] if isinstance(err, ConnectionError) else type(err).__name__
            raise TheoryError(f"{source!r} is not a local config.json or directory, and the hub lookup failed "
                              f"({reason}); pass a path to config.json") from None
    if not isinstance(raw, dict):
        raise TheoryError(f"{source} does not hold a JSON object; pass a model's config.json")
    if isinstance(raw.get("text_config"), Mapping) and not any(k in raw for k in _ALIASES["num_hidden_layers"]):
        raw = dict(raw["text_config"]) | {"architectures": raw.get("architectures")}
    return raw


def _get(raw: Mapping[str, Any], name: str) -> Any:
    for alias in _ALIASES.get(name, (name,)):
        if raw.get(alias) is not None:
            return raw[alias]
    return None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' advice-level messages, per-tensor loading bars and load reports inside the
    block; restore the verbosity and the bars after."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _transformers_config(raw: Mapping[str, Any]) -> Any | None:
    """The config as transformers would load it (defaults filled), or None for an unknown model_type."""
    if "model_type" not in raw:
        return None
    try:
        from transformers import AutoConfig

        with quiet_transformers():
            return AutoConfig.for_model(**dict(raw))
    except Exception:  # unknown model_type or a config transformers refuses: read it as written
        return None


@dataclass(frozen=True)
class Architecture:
    """What a config says about a model's shape and attention.

    Attributes
    ----------
    model_type : str
        The config's ``model_type`` (``'unknown'`` when absent).
    n_layers, hidden_size, vocab_size : int
        Decoder layers, residual width, vocabulary.
    n_heads, n_kv_heads, head_dim : int or None
        Query heads, KV heads (GQA/MQA), dims per head; None for models without attention.
    intermediate_size : int or None
        MLP width.
    max_positions : int or None
        ``max_position_embeddings`` (tokens).
    tie_embeddings : bool
        Whether the output projection shares the input embedding.
    layer_kinds : tuple of str, length n_layers
        ``'full'``, ``'sliding'`` or ``'none'`` per layer.
    sliding_window : int or None
        Window of the sliding layers (tokens).
    positions : str
        ``'rope'``, ``'learned'``, ``'alibi'``, ``'none'`` or ``'unknown'``.
    rope : dict of str to RopeSpec
        RoPE per layer type (``'all'`` when shared); empty without RoPE.
    mla : tuple (kv_lora_rank, qk_rope_head_dim) or None
        Multi-head latent attention (DeepSeek-V2/V3): the cached latent per token and layer.
    known_to_transformers : bool
        Whether transformers knows the model_type (defaults filled from its config class).
    config : dict
        The config as written (the canonical source of the facts above).
    """

    model_type: str
    n_layers: int
    hidden_size: int
    vocab_size: int
    n_heads: int | None
    n_kv_heads: int | None
    head_dim: int | None
    intermediate_size: int | None
    max_positions: int | None
    tie_embeddings: bool
    layer_kinds: tuple[str, ...]
    sliding_window: int | None
    positions: str
    rope: dict[str, RopeSpec] = field(default_factory=dict)
    mla: tuple[int, int] | None = None
    known_to_transformers: bool = False
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def attention(self) -> str:
        """``'full'``, ``'sliding window'``, ``'hybrid'`` (kinds mixed) or ``'none'`` (no softmax attention)."""
        kinds = set(self.layer_kinds)
        if kinds == {"none"}:
            return "none"
        if len(kinds) > 1:
            return "hybrid"
        return "sliding window" if kinds == {"sliding"} else "full"

    @property
    def rope_theta(self) -> float | None:
        """θ of the layers that see the whole context (full attention), or the shared θ; None without RoPE."""
        spec = self.rope.get("full_attention") or self.rope.get("all") or next(iter(self.rope.values()), None)
        return None if spec is None else spec.theta

    def main_rope(self) -> RopeSpec:
        """The RoPE spec of the full-attention layers; TheoryError when the model has no RoPE."""
        spec = self.rope.get("full_attention") or self.rope.get("all") or next(iter(self.rope.values()), None)
        if spec is None:
            raise TheoryError(f"γ_Padé does not apply to {self.model_type}: its positions are {self.positions}, "
                              "not RoPE")
        return spec


def _layer_kinds(raw: Mapping[str, Any], cfg: Any, n_layers: int) -> tuple[tuple[str, ...], int | None]:
    model_type = raw.get("model_type", "")
    if model_type in NO_ATTENTION_TYPES:
        return ("none",) * n_layers, None
    source = cfg if cfg is not None else None
    layer_types = getattr(source, "layer_types", None) if source is not None else raw.get("layer_types")
    window = getattr(source, "sliding_window", None) if source is not None else raw.get("sliding_window")
    chunk = raw.get("attention_chunk_size")
    if layer_types:
        if len(layer_types) != n_layers:
            raise TheoryError(f"layer_types lists {len(layer_types)} layers but num_hidden_layers is {n_layers}; "
                              "fix config.json")
        kinds = tuple(_LAYER_KIND.get(t, "none") for t in layer_types)
        if "chunked_attention" in layer_types and window is None:
            window = chunk
        if "sliding" in kinds and window is None:
            raise TheoryError("layer_types has sliding layers but the config sets no sliding_window; add it")
        return kinds, (int(window) if window is not None and "sliding" in kinds else None)
    if window is not None and raw.get("use_sliding_window", True) is not False:
        return ("sliding",) * n_layers, int(window)
    return ("full",) * n_layers, None


_MAX_COUNT = 2**48  # beyond any real layer count, width, vocabulary or context


def _count(value: Any, name: str, minimum: int = 1) -> int:
    """A config's size field as an int ≥ ``minimum``; TheoryError for text, fractions, inf/NaN or absurd sizes."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if not ok or not (minimum <= value <= _MAX_COUNT):
        raise TheoryError(f"config.json: {name} = {value!r} is not a whole number in [{minimum}, 2^48]; "
                          "fix config.json")
    return int(value)


def architecture(raw: Mapping[str, Any]) -> Architecture:
    """Architecture facts from a config dict (see :func:`load_config`).

    Examples
    --------
    >>> a = architecture({"model_type": "mistral", "num_hidden_layers": 32, "hidden_size": 4096,
    ...                   "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000,
    ...                   "intermediate_size": 14336, "sliding_window": 4096, "rope_theta": 10000.0})
    >>> a.attention, a.n_kv_heads, a.head_dim, a.sliding_window, a.rope_theta
    ('sliding window', 8, 128, 4096, 10000.0)
    """
    raw = dict(raw)
    model_type = str(raw.get("model_type") or "unknown")
    no_attention = model_type in NO_ATTENTION_TYPES
    required = ["num_hidden_layers", "hidden_size", "vocab_size"] + ([] if no_attention else ["num_attention_heads"])
    missing = [name for name in required if _get(raw, name) is None]
    if missing:
        raise TheoryError(f"config.json lacks {', '.join(missing)} (needed for sizes and KV cache); "
                          "pass the model's complete config.json")
    cfg = _transformers_config(raw)
    n_layers = _count(_get(raw, "num_hidden_layers"), "num_hidden_layers")
    hidden = _count(_get(raw, "hidden_size"), "hidden_size")
    n_heads = None if no_attention else _count(_get(raw, "num_attention_heads"), "num_attention_heads")
    n_kv = head_dim = None
    if n_heads is not None:
        n_kv = raw.get("num_key_value_heads") or raw.get("num_kv_heads") or (1 if raw.get("multi_query") else n_heads)
        head_dim = raw.get("head_dim") or (getattr(cfg, "head_dim", None) if cfg is not None else None)
        n_kv = _count(n_kv, "num_key_value_heads")
        head_dim = _count(head_dim or hidden // n_heads, "head_dim")
        if n_heads % int(n_kv):
            raise TheoryError(f"num_attention_heads={n_heads} is not a multiple of num_key_value_heads={n_kv}; "
                              "fix config.json")
    intermediate = raw.get("intermediate_size") or raw.get("n_inner") or raw.get("ffn_dim")
    if intermediate is None and model_type == "gpt2":
        intermediate = 4 * hidden  # GPT-2's n_inner = None means 4 × n_embd
    max_pos = raw.get("max_position_embeddings") or raw.get("n_positions") or raw.get("max_sequence_length")
    tie = raw.get("tie_word_embeddings")
    if tie is None:
        tie = getattr(cfg, "tie_word_embeddings", True) if cfg is not None else True
    intermediate = None if intermediate is None else _count(intermediate, "intermediate_size")
    max_pos = None if max_pos is None else _count(max_pos, "max_position_embeddings")
    kinds, window = _layer_kinds(raw, cfg, n_layers)
    window = None if window is None else _count(window, "sliding_window")
    rope: dict[str, RopeSpec] = {}
    if no_attention:
        positions = "none"
    elif model_type in LEARNED_POSITION_TYPES:
        positions = "learned"
    elif model_type in ALIBI_TYPES or raw.get("alibi"):
        positions = "alibi"
    else:
        rope = rope_specs(cfg if cfg is not None and getattr(cfg, "rope_parameters", None) else raw)
        positions = "rope" if rope else "unknown"
        for kind, spec in rope.items():
            if not (isinstance(spec.theta, (int, float)) and math.isfinite(spec.theta) and spec.theta > 0):
                raise TheoryError(f"config.json: rope_theta ({kind}) = {spec.theta!r} is not a positive finite "
                                  "number; fix config.json")
    mla = None
    if raw.get("kv_lora_rank"):
        mla = (int(raw["kv_lora_rank"]), int(raw.get("qk_rope_head_dim") or 0))
    return Architecture(
        model_type=model_type, n_layers=n_layers, hidden_size=hidden,
        vocab_size=_count(_get(raw, "vocab_size"), "vocab_size"),
        n_heads=n_heads, n_kv_heads=None if n_kv is None else int(n_kv), head_dim=head_dim,
        intermediate_size=None if intermediate is None else int(intermediate),
        max_positions=None if max_pos is None else int(max_pos), tie_embeddings=bool(tie), layer_kinds=kinds,
        sliding_window=window, positions=positions, rope=rope, mla=mla, known_to_transformers=cfg is not None,
        config=raw,
    )


def from_model(model: Any) -> Architecture:
    """The :class:`Architecture` of a loaded transformers model, read from its (text) config like a config.json."""
    cfg = model.config
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    raw = text.to_dict()
    if not raw.get("model_type"):
        raw["model_type"] = getattr(text, "model_type", None) or cfg.model_type
    return architecture(raw)


def model_facts(model: Any) -> dict[str, Any]:
    """The facts every run's manifest records as ``model.arch`` (docs/run_format.md), from :func:`from_model`.

    Keys: ``model_type``, ``architectures``, ``n_layers``, ``n_heads``, ``n_kv_heads``, ``head_dim``,
    ``hidden_size``, ``causal``, ``position_encoding`` (``rope``, ``learned``, ``alibi``, ``none`` or
    ``unknown``), ``rope_theta``, ``rope_scaling`` (None for default RoPE), ``partial_rotary_factor`` (None
    when every dim rotates), ``max_positions``, ``sliding_window``, ``layer_types``, ``layer_rope_theta`` (θ of
    each layer when the layer kinds have their own, as Gemma-3's sliding 10⁴ and global 10⁶; None otherwise),
    ``n_params``.
    """
    a = from_model(model)
    spec = a.main_rope() if a.rope else None
    layer_types = getattr(model.config.get_text_config() if hasattr(model.config, "get_text_config")
                          else model.config, "layer_types", None)
    return {
        "model_type": model.config.model_type,
        "architectures": list(model.config.architectures or [type(model).__name__]),
        "n_layers": a.n_layers,
        "n_heads": a.n_heads,
        "n_kv_heads": a.n_kv_heads,
        "head_dim": a.head_dim,
        "hidden_size": a.hidden_size,
        "causal": _is_causal(model),
        "position_encoding": a.positions,
        "rope_theta": spec.theta if spec is not None else None,
        "rope_scaling": ({"rope_type": spec.rope_type, **spec.parameters}
                         if spec is not None and spec.rope_type != "default" else None),
        "partial_rotary_factor": (spec.rotary_dim / spec.head_dim
                                  if spec is not None and spec.rotary_dim != spec.head_dim else None),
        "max_positions": a.max_positions,
        "sliding_window": a.sliding_window,
        "layer_types": list(layer_types) if layer_types else None,
        "layer_rope_theta": ([(a.rope.get(t) or spec).theta for t in layer_types]
                             if spec is not None and layer_types and len({r.theta for r in a.rope.values()}) > 1
                             else None),
        "n_params": int(sum(p.numel() for p in model.parameters())),
    }


def _is_causal(model: Any) -> bool:
    for m in model.modules():
        if hasattr(m, "is_causal") and type(m).__name__.endswith("Attention"):
            return bool(m.is_causal)
    return bool(getattr(model.config, "is_decoder", False))
