"""The attention function that serves a :class:`~gammalens.kv.cache.GammaWindowCache` (or a SelectedCache).

Per-head windows give every KV head its own set of visible keys, which transformers' (batch, 1, q, k)
masks cannot express. The cache records, on each update, a (KV head, query, key) visibility mask; this
function reads it and runs SDPA with that mask (GQA: each KV head's mask serves its query heads). It is
registered in transformers' ``AttentionInterface`` under a fresh name by :func:`gamma_window_attention`
and removed on exit ("register, don't patch"); no mask is built for it by the model, which saves the
(q, k) mask transformers would otherwise make.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Iterator
from typing import Any

import torch

from gammalens.kv.cache import cache_kwargs
from gammalens.kv.tails import KVError

_PREFIX = "gammalens_kv"
_SDPA_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)  # sdpa's enable_gqa
_IDS = itertools.count()


def _attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, *, cache: Any, scaling: float | None = None,
               dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """SDPA over the keys the cache returned, masked per KV head; output (B, q, Hq, d)."""
    layer = cache.layers[module.layer_idx]
    visible = layer.visible()  # (Hkv, q, K)
    if visible.shape[-1] != key.shape[-2] or visible.shape[1] != query.shape[-2]:
        raise KVError("the γ-window attention ran without its cache: pass the same cache to the model (gammalens.kv.cache.cache_kwargs)")
    if kwargs.get("softcap") or kwargs.get("s_aux") is not None:
        raise KVError("attention soft-capping and learned sinks are not supported by the γ-window cache")
    group = query.shape[1] // key.shape[1]
    gqa = {}
    if group > 1:  # each KV head's mask serves its query heads
        visible = visible.repeat_interleave(group, dim=0)  # (Hq, q, K)
        if _SDPA_GQA:  # keys and values shared, not copied
            gqa = {"enable_gqa": True}
        else:
            key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=visible[None], scale=scaling,
        dropout_p=dropout if module.training else 0.0, **gqa)  # (B, Hq, q, d)
    return out.transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def gamma_window_attention(model: Any, cache: Any) -> Iterator[Any]:
    """Serve ``model`` with ``cache`` (a GammaWindowCache) for the duration of the block.

    >>> with gamma_window_attention(model, cache):                             # doctest: +SKIP
    ...     logits = model(ids, use_cache=True, **cache_kwargs(model, cache)).logits
    """
    from transformers.modeling_utils import AttentionInterface

    if not getattr(model, "_supports_attention_backend", False):
        raise KVError(f"{type(model).__name__} does not route attention through transformers' AttentionInterface")
    name = f"{_PREFIX}_{next(_IDS)}"
    previous = model.config._attn_implementation
    AttentionInterface.register(name, functools.partial(_attention, cache=cache))
    try:
        model.set_attn_implementation(name)
        yield cache
    finally:
        with contextlib.suppress(Exception):
            model.set_attn_implementation(previous)
        AttentionInterface._global_mapping.pop(name, None)


def registered() -> list[str]:
    """Names of γ-window attention functions still registered (empty outside the context manager)."""
    from transformers.modeling_utils import AttentionInterface

    return sorted(n for n in AttentionInterface._global_mapping if n.startswith(_PREFIX))


def prefill(model: Any, input_ids: torch.Tensor, cache: Any, chunk: int = 512) -> torch.Tensor:
    """Run ``input_ids`` (B, n) through ``model`` into ``cache`` in chunks; return the last logits (B, V).

    Chunking bounds the temporaries of a long prefill to (window + chunk) keys per head.
    """
    logits = None
    with torch.no_grad():
        for start in range(0, input_ids.shape[1], chunk):
            out = model(input_ids[:, start:start + chunk], use_cache=True, logits_to_keep=1,
                        **cache_kwargs(model, cache))
            logits = out.logits[:, -1]
    return logits
