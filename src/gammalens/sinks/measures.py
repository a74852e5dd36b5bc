"""Sink measures per head, from the probe's exact fp32 attention probabilities, chunk by chunk.

:class:`SinkObserver` is an observer of :class:`~gammalens.probe.backend.DistanceProbe`: it sees every
query chunk's probabilities ``P`` (B, H, c, k) and keeps, per document, layer and head, exact sums from
which the sink measures follow (no n×n matrix of all heads is ever held):

- **sink mass on the first k tokens**: Σ_{j<k} P(q, j), averaged over the queries q ≥ k of the document
  (the queries that see all k keys and are not sinks themselves; the probe's ``sink_mass`` for k =
  ``sink_tokens`` uses the same queries).
- **key share** α_j: the mean attention key j receives from the queries that see it, itself included
  (Gu et al. 2024, "When attention sink emerges in language models", their α for the first token).
- **first-key share** α_0, from which the **sink rate** follows: the fraction of heads with α_0 > ε
  (Gu et al.: ε = 0.3).
- **peak key share**: max_j α_j over the keys seen by at least half as many queries as the most-seen key
  of the document (so the last keys of a causal window, seen by a handful of queries, cannot win by
  noise), and the position of that key, averaged over documents (each document has its own sink key:
  delimiters sit at different positions).

>>> obs = SinkObserver(n_layers=6, n_heads=12, n_docs=4, ks=(1, 4))     # doctest: +SKIP
>>> probe = DistanceProbe(accumulator, observers=[obs])                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gammalens.probe.accumulate import BatchLayout


@dataclass(frozen=True)
class SinkMeasures:
    """Exact per-document sink sums of one measurement pass (N documents, L layers, H heads, K values of k).

    Attributes
    ----------
    ks : tuple of int
        The k of "mass on the first k tokens", ascending.
    doc_mass : np.ndarray
        (N, L, H, K) Σ over the queries q ≥ k of Σ_{j<k} P(q, j) (probability × queries).
    doc_queries : np.ndarray
        (N, L, K) number of those queries.
    doc_first_sum : np.ndarray
        (N, L, H) attention the first key receives, summed over the queries that see it.
    doc_first_count : np.ndarray
        (N, L) number of those queries.
    doc_peak_share : np.ndarray
        (N, L, H) largest key share max_j α_j of each document (probability).
    doc_peak_position : np.ndarray
        (N, L, H) int64 position of that key from the document's start.
    """

    ks: tuple[int, ...]
    doc_mass: np.ndarray
    doc_queries: np.ndarray
    doc_first_sum: np.ndarray
    doc_first_count: np.ndarray
    doc_peak_share: np.ndarray
    doc_peak_position: np.ndarray

    @property
    def mass(self) -> np.ndarray:
        """(L, H, K) mean attention on the first k tokens per query (0–1), one column per k."""
        q = self.doc_queries.sum(0)[:, None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(q > 0, self.doc_mass.sum(0) / q, np.nan)

    @property
    def first_key_share(self) -> np.ndarray:
        """(L, H) α_0: mean attention the first token receives from the queries that see it (0–1)."""
        n = self.doc_first_count.sum(0)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, self.doc_first_sum.sum(0) / n, np.nan)

    @property
    def peak_key_share(self) -> np.ndarray:
        """(L, H) the largest key share of each document, averaged over documents (0–1)."""
        return np.nanmean(self.doc_peak_share, axis=0)

    def sink_rate(self, eps: float = 0.3) -> np.ndarray:
        """(L,) fraction of each layer's heads whose first-key share α_0 exceeds ``eps`` (Gu et al. 2024)."""
        return (self.first_key_share > eps).mean(-1)


class SinkObserver:
    """Probe observer that accumulates :class:`SinkMeasures` from every chunk of probabilities.

    Parameters
    ----------
    n_layers, n_heads : int
        Attention layers and query heads of the model.
    n_docs : int
        Documents (windows) of the run.
    ks : sequence of int
        The k of "mass on the first k tokens" (each ≥ 1).
    device : torch.device or str
        Where the sums live (the model's device).

    Notes
    -----
    The probe calls the observer layer by layer, each layer's chunks in query order starting at
    q0 = 0, so a call with q0 = 0 closes the previous layer's column sums; :meth:`result` closes the last.
    """

    def __init__(self, n_layers: int, n_heads: int, n_docs: int, ks: Sequence[int],
                 device: torch.device | str = "cpu") -> None:
        self.ks = tuple(sorted(set(int(k) for k in ks)))
        if not self.ks or self.ks[0] < 1:
            raise ValueError(f"every k must be ≥ 1 (got {ks})")
        f64, K = torch.float64, len(self.ks)
        self.doc_mass = torch.zeros(n_docs, n_layers, n_heads, K, dtype=f64, device=device)
        self.doc_queries = torch.zeros(n_docs, n_layers, K, dtype=f64, device=device)
        self.doc_first_sum = torch.zeros(n_docs, n_layers, n_heads, dtype=f64, device=device)
        self.doc_first_count = torch.zeros(n_docs, n_layers, dtype=f64, device=device)
        self.doc_peak_share = torch.full((n_docs, n_layers, n_heads), float("nan"), dtype=f64, device=device)
        self.doc_peak_position = torch.full((n_docs, n_layers, n_heads), -1, dtype=torch.long, device=device)
        self._open: tuple[int, BatchLayout, torch.Tensor, torch.Tensor] | None = None  # layer, layout, col, count

    def __call__(self, layer: int, probs: torch.Tensor, visible: torch.Tensor, q0: int, layout: BatchLayout) -> None:
        """Add one chunk: ``probs`` (B, H, c, k) fp32 for queries q0…q0+c−1, ``visible`` (B, 1, c, k) bool."""
        if q0 == 0:
            self._close()
        B, H, c, k = probs.shape
        dev = probs.device
        q_rel = torch.arange(q0, q0 + c, device=dev)[None, :] - layout.starts[:, None]  # (B, c)
        q_ok = (q_rel >= 0) & (q_rel < layout.lengths[:, None])
        # rows of padding queries are NaN (all −inf before the softmax); copy only when there are any
        p = probs if bool(q_ok.all()) else torch.nan_to_num(probs)
        k_rel = torch.arange(k, device=dev)[None, :] - layout.starts[:, None]  # (B, k)
        k_ok = (k_rel >= 0) & (k_rel < layout.lengths[:, None])
        seen = visible[:, 0] & q_ok[:, :, None] & k_ok[:, None, :]  # (B, c, k)
        self._add_columns(layer, layout, torch.einsum("bhck,bck->bhk", p, seen.to(p.dtype)), seen.sum(1))

        K = self.ks[-1]
        idx = (layout.starts[:, None] + torch.arange(K, device=dev)[None, :]).clamp(max=k - 1)  # (B, K)
        first = p.gather(-1, idx[:, None, None, :].expand(B, H, c, K)).cumsum(-1)  # (B, H, c, K)
        home = self.doc_mass.device  # under device_map='auto' the layer may sit on another GPU than the sums
        doc_index = layout.doc_index.to(home)
        for i, kk in enumerate(self.ks):
            w = (q_ok & (q_rel >= kk)).to(p.dtype)  # (B, c) queries that see all kk keys, sinks excluded
            self.doc_mass[:, layer, :, i].index_add_(
                0, doc_index, torch.einsum("bhc,bc->bh", first[..., kk - 1], w).to(home, torch.float64))
            self.doc_queries[:, layer, i].index_add_(0, doc_index, w.sum(-1).to(home, torch.float64))

    def _add_columns(self, layer: int, layout: BatchLayout, col: torch.Tensor, count: torch.Tensor) -> None:
        """Add a chunk's column sums (B, H, k) and query counts (B, k) to the open layer's buffers."""
        if self._open is None:
            n = max(col.shape[-1], int((layout.starts + layout.lengths).max()))
            B, H = col.shape[:2]
            self._open = (layer, layout, col.new_zeros(B, H, n, dtype=torch.float64),
                          count.new_zeros(B, n, dtype=torch.float64))
        _, _, col_sum, count_sum = self._open
        k = col.shape[-1]
        col_sum[..., :k] += col.double()
        count_sum[..., :k] += count.double()

    def _close(self) -> None:
        """Turn the open layer's column sums into per-document key shares, first-key sums and peaks."""
        if self._open is None:
            return
        layer, layout, col_sum, count_sum = self._open
        self._open = None
        home = self.doc_mass.device  # the layer's buffers may sit on another GPU than the sums
        layout, col_sum, count_sum = layout.to(home), col_sum.to(home), count_sum.to(home)
        idx = layout.doc_index
        rows = torch.arange(len(idx), device=col_sum.device)
        first_col = layout.starts  # (B,) the first key of each document
        self.doc_first_sum[:, layer].index_add_(0, idx, col_sum[rows, :, first_col])
        self.doc_first_count[:, layer].index_add_(0, idx, count_sum[rows, first_col])
        share = col_sum / count_sum.clamp(min=1.0)[:, None, :]  # (B, H, n) α_j
        eligible = (count_sum > 0) & (count_sum >= 0.5 * count_sum.amax(-1, keepdim=True))  # (B, n)
        share = share.masked_fill(~eligible[:, None, :], float("-inf"))
        peak, pos = share.max(-1)  # (B, H): ties go to the first key
        has = eligible.any(-1)[:, None]
        self.doc_peak_share[idx, layer] = torch.where(has, peak, torch.nan)
        self.doc_peak_position[idx, layer] = torch.where(has, pos - layout.starts[:, None], -1)

    def result(self) -> SinkMeasures:
        """The sums so far as :class:`SinkMeasures` (closes the last layer)."""
        self._close()
        return SinkMeasures(
            ks=self.ks, doc_mass=self.doc_mass.cpu().numpy(), doc_queries=self.doc_queries.cpu().numpy(),
            doc_first_sum=self.doc_first_sum.cpu().numpy(), doc_first_count=self.doc_first_count.cpu().numpy(),
            doc_peak_share=self.doc_peak_share.cpu().numpy(), doc_peak_position=self.doc_peak_position.cpu().numpy(),
        )
