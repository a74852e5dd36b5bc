"""The measuring attention backend: an ``AttentionInterface`` function that profiles as it attends.

It has the shared signature of transformers' attention functions. For every call it returns the
layer's normal output (delegating to ``sdpa``) and, query chunk by query chunk, recomputes the exact
fp32 attention probabilities of every head to add them to a :class:`ProfileAccumulator`. Peak extra
memory is O(batch × heads × chunk × n), never the n×n matrix of every head at once.

It is installed by :func:`probing` (a context manager) and removed in ``finally``: nothing is left
registered and the model's previous attention implementation is restored.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from gammalens.errors import ModelError
from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator

_PROBE_IDS = itertools.count()


class DistanceProbe:
    """Attention function that accumulates exact distance profiles of every layer and head.

    Parameters
    ----------
    accumulator : ProfileAccumulator
        Receives the probabilities.
    chunk_size : int or None
        Queries per chunk. None: chosen so one chunk's fp32 probabilities take ≤ ``budget_bytes``.
    budget_bytes : int
        Memory budget of one chunk's probabilities when ``chunk_size`` is None.
    observers : sequence of callables, optional
        Further measurements on the same probabilities, each called for every chunk as
        ``observer(layer, probs, visible, q0, layout)`` with ``probs`` (B, H, c, k) fp32 and ``visible``
        (B, 1, c, k) bool, after the accumulator (e.g. the sink measures of :mod:`gammalens.sinks`).
    """

    def __init__(self, accumulator: ProfileAccumulator, chunk_size: int | None = None,
                 budget_bytes: int = 256 * 2**20, observers: Sequence[Callable[..., None]] = ()) -> None:
        self.accumulator = accumulator
        self.observers = list(observers)
        self.chunk_size = chunk_size
        self.budget_bytes = budget_bytes
        self.layout: BatchLayout | None = None
        self.layer_of: dict[int, int] = {}  # id(attention module) → layer index, in call order
        self.layer_windows: dict[int, int | None] = {}  # layer → sliding window (None: full attention)
        self.calls = 0

    def set_layout(self, layout: BatchLayout) -> None:
        """Declare where the documents of the next forward pass sit (starts, lengths, indices)."""
        self.layout = layout

    def __call__(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
        """Shapes: query (B, H, n, dh), key/value (B, H_kv, n, dh), mask (B, 1, n, n) or None."""
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        if kwargs.get("s_aux") is not None:
            raise ModelError("learned attention-sink logits (s_aux, e.g. gpt-oss) are not supported by the probe yet")
        layer = self.layer_of.setdefault(id(module), len(self.layer_of))
        self.calls += 1
        causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
        softcap = kwargs.get("softcap")
        window = kwargs.get("sliding_window")
        self.layer_windows[layer] = window
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        out = self._profile(layer, query, key, value, attention_mask, scale, causal, softcap, window)
        if out is None:
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                          scaling=scaling, is_causal=is_causal, **kwargs)
        return out, None

    def _profile(self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 mask: torch.Tensor | None, scale: float, causal: bool, softcap: float | None,
                 window: int | None) -> torch.Tensor | None:
        """Accumulate the layer's profile; return its output only when sdpa would get it wrong (soft-cap)."""
        B, H, n, dh = query.shape
        Hkv = key.shape[1]
        if key.shape[2] != n:
            raise ModelError("the probe measures full-sequence forward passes only (no KV cache)")
        g = H // Hkv
        layout = self.layout or BatchLayout.full(B, n, device=query.device)
        c = self.chunk_size or max(1, min(n, self.budget_bytes // max(1, B * H * n * 4)))
        q = (query.float() * scale).view(B, Hkv, g, n, dh)  # (B, Hkv, g, n, dh)
        k = key.float()[:, :, None]  # (B, Hkv, 1, n, dh)
        v = value.float() if softcap is not None else None
        out = query.new_empty(B, n, H, value.shape[-1]) if softcap is not None else None
        for q0 in range(0, n, c):
            q1 = min(n, q0 + c)
            kend = q1 if causal else n
            scores = torch.matmul(q[:, :, :, q0:q1], k[:, :, :, :kend].transpose(-1, -2))
            scores = scores.view(B, H, q1 - q0, kend)  # (B, H, c, k)
            if softcap is not None:
                scores = torch.tanh(scores / softcap) * softcap
            visible = _visible(mask, q0, q1, kend, causal, window, query.device)  # (B|1, 1, c, k)
            visible = visible.expand(B, 1, q1 - q0, kend)
            scores.masked_fill_(~visible, float("-inf"))
            probs = torch.softmax(scores, dim=-1)
            self.accumulator.add(layer, probs, visible, q0, layout, bidirectional=not causal)
            for observe in self.observers:
                observe(layer, probs, visible, q0, layout)
            if out is not None:
                probs = torch.nan_to_num(probs, nan=0.0)
                o = torch.matmul(probs.view(B, Hkv, g, q1 - q0, kend), v[:, :, None, :kend])
                out[:, q0:q1] = o.view(B, H, q1 - q0, -1).transpose(1, 2).to(out.dtype)
        return out


def _visible(mask: torch.Tensor | None, q0: int, q1: int, kend: int, causal: bool, window: int | None,
             device: torch.device) -> torch.Tensor:
    """Boolean (B|1, 1, c, k) visibility of keys to queries, from the model's mask or its absence.

    transformers passes ``None`` when sdpa's own ``is_causal`` suffices (no padding, no window cut), a
    boolean mask from ``sdpa_mask`` (True = attend), or an additive float mask from ``eager_mask``.
    """
    if mask is not None:
        m = mask[:, :, q0:q1, :kend]
        return m if m.dtype == torch.bool else m > torch.finfo(m.dtype).min / 2
    d = torch.arange(q0, q1, device=device)[:, None] - torch.arange(kend, device=device)[None, :]
    vis = torch.ones_like(d, dtype=torch.bool)
    if causal:
        vis &= d >= 0
    if window is not None:
        vis &= d < window
    return vis[None, None]


_PROBE_NAME_PREFIX = "gammalens_probe"


@contextlib.contextmanager
def probing(model: Any, probe: DistanceProbe) -> Iterator[DistanceProbe]:
    """Install ``probe`` as ``model``'s attention implementation for the duration of the block.

    The function is registered under a fresh name in transformers' ``AttentionInterface`` (and the
    sdpa mask builder under the same name in ``AttentionMaskInterface``, so the model builds the masks
    the probe expects); on exit both are removed and the previous implementation is restored.

    >>> with probing(model, probe):       # doctest: +SKIP
    ...     model(input_ids)
    """
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import AttentionInterface

    if not getattr(model, "_supports_attention_backend", False):
        raise ModelError(
            f"{type(model).__name__} ({getattr(model.config, 'model_type', '?')}) does not route attention through "
            "transformers' AttentionInterface, so it cannot be measured exactly; no softmax-attention hook exists"
        )
    name = f"{_PROBE_NAME_PREFIX}_{next(_PROBE_IDS)}"
    previous = model.config._attn_implementation
    AttentionInterface.register(name, probe)
    AttentionMaskInterface.register(name, sdpa_mask)
    try:
        model.set_attn_implementation(name)
        yield probe
    finally:
        with contextlib.suppress(Exception):
            model.set_attn_implementation(previous)
        AttentionInterface._global_mapping.pop(name, None)
        AttentionMaskInterface._global_mapping.pop(name, None)


def registered_probes() -> list[str]:
    """Names of probe functions currently registered with transformers (empty outside :func:`probing`)."""
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    names = set(AttentionInterface._global_mapping) | set(AttentionMaskInterface._global_mapping)
    return sorted(n for n in names if n.startswith(_PROBE_NAME_PREFIX))
