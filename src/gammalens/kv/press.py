"""``GammaWindowPress``: the γ-window plan as an NVIDIA kvpress press (optional extra ``gammalens[kvpress]``).

Based on the measured per-head windows of :mod:`gammalens.kv.plan` (DuoAttention's local/retrieval split,
Xiao et al. 2024, made continuous and calibrated from measured profiles). After the prefill, every KV head
keeps its sink tokens and its last W_h context tokens. The windows are nested, so every layer physically
keeps sinks + max W tokens, the plan's largest window (real bytes freed, like kvpress's ScorerPresses; one
length for all layers, because transformers builds one attention mask for every layer), and masks, per
head, the older ones it does not need (kvpress's ``masked_key_indices``, as AdaKV and DuoAttention do).
For bytes that follow every head's own window use :class:`gammalens.kv.cache.GammaWindowCache`.

>>> from kvpress import KVPressTextGenerationPipeline                              # doctest: +SKIP
>>> press = GammaWindowPress.from_plan(plan_run(run_dir, PlanConfig(ratio=0.5, context=4096)))
>>> pipe(context, question=question, press=press)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

try:
    from kvpress.presses.base_press import BasePress
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("GammaWindowPress needs kvpress: pip install 'gammalens[kvpress]'") from err

from gammalens.kv.cache import check_model
from gammalens.kv.tails import KVError


@dataclass
class GammaWindowPress(BasePress):
    """Keep, per (layer, KV head), the first ``sinks`` and the last ``windows[layer][head]`` context tokens.

    Parameters
    ----------
    windows : list of list of int, shape (L, Hkv)
        Recent context tokens kept per KV head.
    sinks : int
        First tokens every head keeps.
    model_facts : dict, optional
        The plan's model facts (``model_type``, ``n_layers``, ``n_kv_heads``…), checked against the model.
    """

    windows: list = field(default_factory=list)
    sinks: int = 1
    model_facts: dict | None = None
    compression_ratio_: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not self.windows or min(min(w) for w in self.windows) < 1 or self.sinks < 0:
            raise KVError("GammaWindowPress needs windows ≥ 1 for every (layer, KV head) and sinks ≥ 0")

    @classmethod
    def from_plan(cls, plan: Any) -> GammaWindowPress:
        """The press of a :class:`~gammalens.kv.plan.KVPlan`."""
        return cls(windows=plan.window.tolist(), sinks=plan.sink_tokens, model_facts=dict(plan.model))

    @property
    def compression_ratio(self) -> float:
        """Fraction of context tokens dropped or masked in the last prefill."""
        if self.compression_ratio_ is None:
            raise KVError("run a prefill with the press first: the ratio depends on the context length")
        return self.compression_ratio_

    @compression_ratio.setter
    def compression_ratio(self, value: float) -> None:
        raise AttributeError("GammaWindowPress's ratio follows from its windows; build another plan to change it")

    def post_init_from_model(self, model: Any) -> None:

        facts = self.model_facts or {}
        check_model(model, {**facts, "n_layers": len(self.windows), "n_kv_heads": len(self.windows[0])})
        self._kept = 0
        self._total = 0

    def compress(self, module: Any, hidden_states: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                 attentions: Any, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Drop context tokens outside every head's window; mask the rest per head.

        keys, values: (B, Hkv, n, d) → (B, Hkv, sinks + max W, d), max W over the whole plan.
        """
        b, n_kv, n, _ = keys.shape
        s = min(self.sinks, n)
        w = torch.as_tensor(self.windows[module.layer_idx], device=keys.device).clamp(max=n - s)  # (Hkv,)
        if len(w) != n_kv:
            raise KVError(f"layer {module.layer_idx} has {n_kv} KV heads but the plan has {len(w)}")
        w_max = min(max(max(layer) for layer in self.windows), n - s)
        if s + w_max < n:
            keys = torch.cat([keys[:, :, :s], keys[:, :, n - w_max:]], dim=2)
            values = torch.cat([values[:, :, :s], values[:, :, n - w_max:]], dim=2)
        j = torch.arange(keys.shape[2], device=keys.device)  # slot j ≥ s holds context token n − w_max + (j − s)
        masked = (j[None, :] >= s) & (j[None, :] < s + w_max - w[:, None])  # (Hkv, s + w_max)
        if bool(masked.any()):
            module.masked_key_indices = torch.nonzero(masked[None].expand(b, -1, -1), as_tuple=True)
        else:
            module.masked_key_indices = None
        self._kept += int((s + w).sum()) * b
        self._total += n * n_kv * b
        self.compression_ratio_ = 1.0 - self._kept / self._total
        return keys, values
