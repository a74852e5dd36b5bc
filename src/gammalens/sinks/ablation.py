"""The causal test: ablate massive activations where they arise, then re-measure sinks and γ.

Activation patching (glossary, Ch. 37) applied to the glossary's claim that massive activations cause
sinks (Ch. 17). For every hidden dimension that holds a massive activation, at the layer where it first
arises (:meth:`MassiveActivations.arising`), a forward hook on that decoder layer replaces its massive
coordinates — the ones that meet the same criterion in the current pass, |h| ≥ ``abs_threshold`` and
≥ ``ratio`` × the document's median — by 0 (``'zero'``) or by their mean massive value in the unablated
run (``'mean'``, the control of Sun et al. 2024: a constant in place of the activation). Upstream of
that layer nothing changed, so the coordinates replaced there are exactly the ones found unablated;
downstream the change propagates through the residual stream, which is the point.

>>> with ablating(model, massive.arising(), mode="zero", abs_threshold=100, ratio=1000) as log:  # doctest: +SKIP
...     model(input_ids)
>>> log.count                                                                                    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from gammalens.errors import GammalensError
from gammalens.sinks.massive import decoder_layers, hidden_of, massive_mask

MODES = ("zero", "mean")


@dataclass
class AblationLog:
    """What an ablation replaced.

    Attributes
    ----------
    count : dict of int to int
        Layer → number of coordinates replaced, summed over documents.
    """

    count: dict[int, int] = field(default_factory=lambda: defaultdict(int))


@contextlib.contextmanager
def ablating(model: Any, targets: Mapping[int, Mapping[int, float]], *, mode: str = "zero",
             abs_threshold: float = 100.0, ratio: float = 1000.0,
             log: AblationLog | None = None) -> Iterator[AblationLog]:
    """Replace massive coordinates of chosen dimensions at chosen layers for the duration of the block.

    Parameters
    ----------
    model : PreTrainedModel
        The model; hooks go on its decoder layers and are removed on exit, error or not.
    targets : mapping
        ``{layer: {dim: mean value}}``, e.g. :meth:`MassiveActivations.arising`.
    mode : str
        ``'zero'`` or ``'mean'`` (the mean value of ``targets``).
    abs_threshold, ratio : float
        The massive-activation criterion (see :mod:`gammalens.sinks.massive`).
    log : AblationLog, optional
        Where to count the replacements (a fresh one by default).

    Yields
    ------
    AblationLog
        Filled as the forward passes run.
    """
    if mode not in MODES:
        raise GammalensError(f"--ablate-massive must be one of {', '.join(MODES)} (got {mode!r})")
    layers = decoder_layers(model)
    log = log if log is not None else AblationLog()
    handles = []
    try:
        for layer, dims in targets.items():
            if not 0 <= layer < len(layers):
                raise GammalensError(f"ablation target layer {layer} is outside the model's {len(layers)} layers")
            handles.append(layers[layer].register_forward_hook(
                _replace(layer, dict(dims), mode, abs_threshold, ratio, log)))
        yield log
    finally:
        for h in handles:
            h.remove()


def _replace(layer: int, dims: dict[int, float], mode: str, abs_threshold: float, ratio: float,
             log: AblationLog) -> Any:
    index = torch.tensor(sorted(dims), dtype=torch.long)
    means = torch.tensor([dims[d] for d in sorted(dims)], dtype=torch.float32)

    def hook(module: Any, args: Any, output: Any) -> Any:
        h = hidden_of(output)  # (B, n, D)
        mask, _ = massive_mask(h, abs_threshold, ratio)
        hit = mask[..., index.to(h.device)]  # (B, n, d) only the target dimensions
        n_hit = int(hit.sum())
        if not n_hit:
            return None
        log.count[layer] += n_hit
        cols = h[..., index.to(h.device)]
        fill = torch.zeros_like(cols) if mode == "zero" else means.to(h)[None, None, :].expand_as(cols)
        h = h.clone()
        h[..., index.to(h.device)] = torch.where(hit, fill, cols)
        if isinstance(output, tuple):
            return (h, *output[1:])
        if isinstance(output, list):
            return [h, *output[1:]]
        return h

    return hook
