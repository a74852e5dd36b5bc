"""Massive activations: residual-stream coordinates with enormous values (glossary, Ch. 17: "the cause of sinks").

Based on Sun et al. 2024, "Massive activations in large language models": a coordinate h[t, i] of a
layer's output hidden states is *massive* when |h[t, i]| ≥ ``abs_threshold`` (100) and
|h[t, i]| ≥ ``ratio`` (1000) × the median |value| of that layer's hidden states. The median is taken
per document (over its tokens × hidden dimensions; the lower median for an even count), so one
document's outliers do not set another's scale.

:class:`MassiveDetector` records them with forward hooks on the decoder layers, installed by
:meth:`MassiveDetector.attached` (a context manager) and removed in ``finally``.

>>> det = MassiveDetector(abs_threshold=100, ratio=1000)                 # doctest: +SKIP
>>> with det.attached(model):                                            # doctest: +SKIP
...     model(input_ids)
>>> det.result().first_layer                                             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gammalens.errors import ModelError

if TYPE_CHECKING:
    import torch

MAX_SITES_PER_CALL = 4096   # occurrences kept per layer and forward pass (the largest |value| first)
TOP = 3                     # largest |values| per layer kept for the magnitude profile


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The model's transformer blocks, in order: the first ``ModuleList`` as long as ``num_hidden_layers``.

    Raises
    ------
    ModelError
        No such list (the hooks would have nowhere to go).
    """
    import torch

    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n = int(cfg.num_hidden_layers)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return list(module)
    raise ModelError(f"cannot find the {n} decoder layers of {type(model).__name__} to hook; "
                     "massive activations need the blocks in one ModuleList")


def hidden_of(output: Any) -> torch.Tensor:
    """The hidden states (B, n, D) in a block's output (a tensor, or a tuple whose first element it is)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def massive_mask(h: torch.Tensor, abs_threshold: float, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Which coordinates of ``h`` (B, n, D) are massive, and each document's median |value|.

    Returns
    -------
    mask : torch.Tensor
        (B, n, D) bool.
    median : torch.Tensor
        (B,) fp32 lower median of |h| over each document's tokens and dimensions.
    """
    a = h.detach().float().abs()
    median = a.flatten(1).median(dim=1).values  # (B,)
    mask = (a >= abs_threshold) & (a >= ratio * median[:, None, None])
    return mask, median


@dataclass(frozen=True)
class MassiveActivations:
    """Massive activations found in one measurement (L layers, hidden size D).

    Attributes
    ----------
    abs_threshold, ratio : float
        The criterion: |value| ≥ abs_threshold and ≥ ratio × the document's median |value|.
    count : np.ndarray
        (L,) int64 massive coordinates per layer, summed over documents.
    median_abs : np.ndarray
        (L,) median |value| of the layer's hidden states, averaged over documents.
    top_abs : np.ndarray
        (L, 3) the three largest |values| of the layer over all documents, largest first.
    sites : list of dict
        One per (layer, dim, position): ``layer``, ``dim``, ``position`` (from the window's start),
        ``n`` (documents where it is massive), ``mean_value`` (signed), ``max_abs``, ``token_ids``
        (the distinct tokens there, at most 5).
    truncated : bool
        More than :data:`MAX_SITES_PER_CALL` occurrences in one layer and pass: only the largest were kept
        in ``sites`` (``count`` stays exact); the thresholds are probably far too low.
    """

    abs_threshold: float
    ratio: float
    count: np.ndarray
    median_abs: np.ndarray
    top_abs: np.ndarray
    sites: list[dict[str, Any]]
    truncated: bool = False

    @property
    def any(self) -> bool:
        return bool(self.count.sum() > 0)

    @property
    def first_layer(self) -> int | None:
        """The first layer whose output holds a massive activation (None: none anywhere)."""
        hits = np.flatnonzero(self.count > 0)
        return int(hits[0]) if len(hits) else None

    def dims(self, layer: int | None = None) -> list[int]:
        """Hidden dimensions with a massive activation (in ``layer``, or anywhere), ascending."""
        return sorted({s["dim"] for s in self.sites if layer is None or s["layer"] == layer})

    def arising(self) -> dict[int, dict[int, float]]:
        """Where each massive dimension first arises: ``{layer: {dim: mean massive value there}}``.

        A dimension arises at the first layer where any of its coordinates is massive; the mean is over
        its massive occurrences in that layer (signed), the value :func:`~gammalens.sinks.ablation.ablating`
        sets in ``'mean'`` mode.
        """
        first: dict[int, int] = {}
        for s in sorted(self.sites, key=lambda s: s["layer"]):
            first.setdefault(s["dim"], s["layer"])
        out: dict[int, dict[int, float]] = defaultdict(dict)
        for dim, layer in first.items():
            here = [s for s in self.sites if s["dim"] == dim and s["layer"] == layer]
            n = sum(s["n"] for s in here)
            out[layer][dim] = sum(s["mean_value"] * s["n"] for s in here) / n
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        def finite(a: np.ndarray) -> Any:
            return np.where(np.isfinite(a), a, None).tolist()

        return {"abs_threshold": self.abs_threshold, "ratio": self.ratio, "count": self.count.tolist(),
                "median_abs": finite(self.median_abs), "top_abs": finite(self.top_abs),
                "first_layer": self.first_layer, "sites": self.sites, "truncated": self.truncated}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MassiveActivations:
        return cls(abs_threshold=float(d["abs_threshold"]), ratio=float(d["ratio"]),
                   count=np.asarray(d["count"], dtype=np.int64),
                   median_abs=np.array(d["median_abs"], dtype=object).astype(float),
                   top_abs=np.array(d["top_abs"], dtype=object).astype(float).reshape(-1, TOP), sites=list(d["sites"]),
                   truncated=bool(d["truncated"]))


class MassiveDetector:
    """Records massive activations of every decoder layer's output while attached.

    Parameters
    ----------
    abs_threshold : float
        Smallest |value| of a massive activation (Sun et al.: 100).
    ratio : float
        Smallest multiple of the document's median |value| (Sun et al.: 1000).

    Notes
    -----
    Batches must be unpadded (as :func:`gammalens.measuring.pipeline.measure` feeds them): every position of
    every row is a token of its document.
    """

    def __init__(self, abs_threshold: float = 100.0, ratio: float = 1000.0) -> None:
        self.abs_threshold, self.ratio = float(abs_threshold), float(ratio)
        self._count: dict[int, int] = defaultdict(int)
        self._median: dict[int, list[float]] = defaultdict(list)
        self._top: dict[int, list[float]] = defaultdict(list)
        self._sites: dict[tuple[int, int, int], dict[str, Any]] = {}
        self._ids: torch.Tensor | None = None
        self._truncated = False
        self.n_layers = 0

    @contextlib.contextmanager
    def attached(self, model: Any) -> Iterator[MassiveDetector]:
        """Hook every decoder layer of ``model`` (and its input, for the token ids) for the block."""
        layers = decoder_layers(model)
        self.n_layers = len(layers)
        handles = [model.register_forward_pre_hook(self._remember_ids, with_kwargs=True)]
        try:
            for i, block in enumerate(layers):
                handles.append(block.register_forward_hook(self._hook(i)))
            yield self
        finally:
            for h in handles:
                h.remove()
            self._ids = None

    def _remember_ids(self, module: Any, args: tuple, kwargs: dict) -> None:
        import torch

        ids = kwargs.get("input_ids", args[0] if args else None)
        self._ids = ids.detach().cpu() if isinstance(ids, torch.Tensor) else None

    def _hook(self, layer: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            self._observe(layer, hidden_of(output))

        return hook

    def _observe(self, layer: int, h: torch.Tensor) -> None:
        mask, median = massive_mask(h, self.abs_threshold, self.ratio)  # (B, n, D), (B,)
        self._median[layer] += median.cpu().tolist()
        a = h.detach().float().abs().flatten()
        self._top[layer] = sorted(self._top[layer] + a.topk(min(TOP, a.numel())).values.cpu().tolist(),
                                  reverse=True)[:TOP]
        n_hit = int(mask.sum())
        if not n_hit:
            return
        self._count[layer] += n_hit
        where = mask.nonzero()  # (m, 3): row, position, dim
        values = h.detach().float()[mask]  # (m,) same order as nonzero
        if len(values) > MAX_SITES_PER_CALL:
            self._truncated = True
            keep = values.abs().topk(MAX_SITES_PER_CALL).indices
            where, values = where[keep], values[keep]
        for (row, pos, dim), v in zip(where.cpu().tolist(), values.cpu().tolist(), strict=True):
            site = self._sites.setdefault((layer, dim, pos), {"layer": layer, "dim": dim, "position": pos, "n": 0,
                                                              "mean_value": 0.0, "max_abs": 0.0, "token_ids": []})
            site["n"] += 1
            site["mean_value"] += (v - site["mean_value"]) / site["n"]
            site["max_abs"] = max(site["max_abs"], abs(v))
            if self._ids is not None and len(site["token_ids"]) < 5:
                tok = int(self._ids[row, pos])
                if tok not in site["token_ids"]:
                    site["token_ids"].append(tok)

    def result(self) -> MassiveActivations:
        """What was recorded so far."""
        L = self.n_layers
        top = np.full((L, TOP), np.nan)
        for layer, vals in self._top.items():
            top[layer, : len(vals)] = vals
        return MassiveActivations(
            abs_threshold=self.abs_threshold, ratio=self.ratio,
            count=np.array([self._count.get(i, 0) for i in range(L)], dtype=np.int64),
            median_abs=np.array([float(np.mean(self._median[i])) if self._median.get(i) else np.nan
                                 for i in range(L)]),
            top_abs=top, sites=sorted(self._sites.values(), key=lambda s: (s["layer"], s["dim"], s["position"])),
            truncated=self._truncated,
        )
