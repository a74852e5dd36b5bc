"""An attention function that records the last query's attention probabilities, layer by layer.

Estimators that read one query row — the book's tafagent estimator reads the last query's weight on one
key (:mod:`gammalens.taf`) — need neither the n×n matrix of ``output_attentions`` (which forces eager
attention) nor the full distance profile of :class:`~gammalens.probe.backend.DistanceProbe`. This function
recomputes only the last row in fp32 from the layer's own query, key, mask, scaling and soft-cap: O(heads ×
n) extra work per layer. The layer's output is ``sdpa``'s (the model's default); soft-capped layers, which
``sdpa`` cannot express, get an explicit fp32 softmax instead.

Install it with :func:`~gammalens.probe.backend.probing`, like the distance probe:

>>> probe = LastRowProbe()                                  # doctest: +SKIP
>>> with probing(model, probe):                             # doctest: +SKIP
...     model(input_ids)
>>> probe.rows[0].shape                                     # doctest: +SKIP
torch.Size([2, 4, 60])
"""

from __future__ import annotations

from typing import Any

import torch

from gammalens.errors import ModelError
from gammalens.probe.backend import visible_keys


class LastRowProbe:
    """Attention function that keeps, per layer, the last query's probabilities over every key.

    Attributes
    ----------
    rows : dict of int to torch.Tensor
        Layer index → fp32 probabilities of the last query of the latest forward pass, shape
        (batch, heads, n), on the model's device; keys the query cannot see are 0.
    layer_of : dict of int to int
        ``id(attention module)`` → layer index, in call order.
    calls : int
        Attention calls seen.
    """

    def __init__(self) -> None:
        self.rows: dict[int, torch.Tensor] = {}
        self.layer_of: dict[int, int] = {}
        self.calls = 0

    def __call__(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
        """Shapes: query (B, H, n, dh), key/value (B, H_kv, n, dh), mask (B|1, 1, n, n) bool or None."""
        if kwargs.get("s_aux") is not None:
            raise ModelError("learned attention-sink logits (s_aux, e.g. gpt-oss) are not supported by the probe yet")
        if key.shape[2] != query.shape[2]:
            raise ModelError("the probe measures full-sequence forward passes only (no KV cache)")
        layer = self.layer_of.setdefault(id(module), len(self.layer_of))
        self.calls += 1
        causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
        softcap, window = kwargs.get("softcap"), kwargs.get("sliding_window")
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        B, H, n, dh = query.shape
        g = H // key.shape[1]
        q = query[:, :, n - 1:].float().view(B, key.shape[1], g, 1, dh) * scale  # (B, Hkv, g, 1, dh)
        scores = (q @ key.float()[:, :, None].transpose(-1, -2)).view(B, H, n)  # (B, H, n)
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        visible = visible_keys(attention_mask, n - 1, n, n, causal, window, query.device)[:, :, 0]  # (B|1, 1, n)
        self.rows[layer] = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
        if softcap is not None:
            return _softcapped_output(query, key, value, attention_mask, scale, causal, softcap, window), None
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=scaling,
                                      is_causal=is_causal, **kwargs)

    def resolve(self, device: torch.device | str) -> str:
        """The backend, for :func:`probing`: always this row computation, which reads the model's sdpa masks."""
        return "last_row"

    def release(self) -> None:
        """Nothing to free between passes (rows are replaced by each forward); here for :func:`probing`."""


def _softcapped_output(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                       scale: float, causal: bool, softcap: float, window: int | None) -> torch.Tensor:
    """Output of a soft-capped layer, (B, n, H, dv) in the value's dtype, from explicit fp32 probabilities.

    ``sdpa`` has no logit soft-cap; the whole (B, H, n, n) score matrix is formed here, which is fine at
    the window lengths the single-row estimators use (a few thousand tokens).
    """
    B, H, n, dh = query.shape
    g = H // key.shape[1]
    q = query.float().view(B, key.shape[1], g, n, dh) * scale  # (B, Hkv, g, n, dh)
    scores = (q @ key.float()[:, :, None].transpose(-1, -2)).view(B, H, n, n)  # (B, H, n, n)
    scores = torch.tanh(scores / softcap) * softcap
    visible = visible_keys(mask, 0, n, n, causal, window, query.device)  # (B|1, 1, n, n)
    probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    v = value.float()[:, :, None].expand(B, key.shape[1], g, n, value.shape[-1]).reshape(B, H, n, -1)
    return (probs @ v).transpose(1, 2).to(value.dtype).contiguous()  # (B, n, H, dv)
