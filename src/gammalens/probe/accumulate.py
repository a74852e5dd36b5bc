"""Exact distance profiles from chunks of attention probabilities.

The accumulator receives the attention probabilities of a block of consecutive queries,
``P`` of shape ``(batch, heads, c, k)``, and adds, for every head, the mass at each query–key
distance d = |q − k|: a sum along the diagonals of the attention matrix. The diagonals are read with
a *skew view* (each row of a zero-padded copy shifted by one more element than the last), so the sum
over queries becomes one strided batched matmul with no index tensors and no n×n allocation beyond
the chunk itself.

Three profiles are kept, all exact sums (see ``docs/run_format.md``):

- ``mass`` / ``pairs`` — every valid query; ``mass / pairs`` is the naive mean, biased by masking.
- ``mass_cs`` — the null-corrected *common-support* profile: only query-sides that see every
  distance 0..H (H = ``cs_horizon``) contribute. For attention separable as f(d)·g(q), which includes
  uniform attention over the visible keys (f = 1) and an exact power law normalised per query
  (f = d^−γ), the sum over such queries is C·f(d) with C independent of d, so the fitted exponent is
  exactly that of f — the causal-mask bias is removed by construction.
- sink sums — mass on the first ``sink_tokens`` keys of each document, kept out of the profiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gammalens.errors import NonFiniteAttentionError
from gammalens.probe.profile import DistanceProfile


@dataclass
class BatchLayout:
    """Where the documents of a batch sit in the padded sequence.

    Parameters
    ----------
    starts : torch.Tensor
        (batch,) int64: index of each document's first token (0 with right padding).
    lengths : torch.Tensor
        (batch,) int64: number of real tokens of each document.
    doc_index : torch.Tensor
        (batch,) int64: each row's index into the run's list of documents.
    """

    starts: torch.Tensor
    lengths: torch.Tensor
    doc_index: torch.Tensor

    def to(self, device: torch.device | str) -> BatchLayout:
        """The same layout on ``device`` (layers may sit on different GPUs under ``device_map='auto'``)."""
        if self.starts.device == torch.device(device):
            return self
        return BatchLayout(self.starts.to(device), self.lengths.to(device), self.doc_index.to(device))

    @classmethod
    def full(cls, batch: int, seq_len: int, first_doc: int = 0, device: torch.device | str = "cpu") -> BatchLayout:
        """A batch of unpadded documents of length ``seq_len``."""
        return cls(
            starts=torch.zeros(batch, dtype=torch.long, device=device),
            lengths=torch.full((batch,), seq_len, dtype=torch.long, device=device),
            doc_index=torch.arange(first_doc, first_doc + batch, dtype=torch.long, device=device),
        )


class ProfileAccumulator:
    """Running exact sums of attention mass per (layer, head, distance).

    Parameters
    ----------
    n_layers, n_heads : int
        Number of attention layers and query heads.
    n_docs : int
        Number of documents in the run (rows of the per-document arrays).
    max_distance : int
        Largest distance recorded; arrays have ``max_distance + 1`` entries (d = 0 … max_distance).
    cs_horizon : int
        H: the common-support profile uses query-sides that see every distance 0..H.
    sink_tokens : int
        The first ``sink_tokens`` keys of each document are sinks.
    device : torch.device or str
        Where the accumulators live (the model's device).
    """

    def __init__(self, n_layers: int, n_heads: int, n_docs: int, max_distance: int, cs_horizon: int,
                 sink_tokens: int, device: torch.device | str = "cpu") -> None:
        self.n_layers, self.n_heads, self.n_docs = n_layers, n_heads, n_docs
        self.max_distance, self.cs_horizon, self.sink_tokens = max_distance, cs_horizon, sink_tokens
        D, Hc, f64 = max_distance + 1, cs_horizon + 1, torch.float64
        self.mass = torch.zeros(n_layers, n_heads, D, dtype=f64, device=device)
        self.pairs = torch.zeros(n_layers, D, dtype=f64, device=device)
        self.doc_mass_cs = torch.zeros(n_docs, n_layers, n_heads, Hc, dtype=f64, device=device)
        self.doc_queries_cs = torch.zeros(n_docs, n_layers, dtype=f64, device=device)
        self.doc_sink_sum = torch.zeros(n_docs, n_layers, n_heads, dtype=f64, device=device)
        self.doc_sink_queries = torch.zeros(n_docs, n_layers, dtype=f64, device=device)

    def to_profile(self, layer_window: Any = None) -> DistanceProfile:
        """The sums so far as a :class:`~gammalens.probe.profile.DistanceProfile` (arrays copied to the cpu).

        Parameters
        ----------
        layer_window : array of int, shape (n_layers,), optional
            Each layer's sliding window in tokens (0: global); None: every layer global.
        """
        import numpy as np

        window = np.zeros(self.n_layers, dtype=np.int64) if layer_window is None else np.asarray(layer_window, np.int64)
        host = [t.cpu().numpy() for t in (self.mass, self.pairs, self.doc_mass_cs, self.doc_queries_cs,
                                          self.doc_sink_sum, self.doc_sink_queries)]
        return DistanceProfile(*host, layer_window=window, cs_horizon=self.cs_horizon, sink_tokens=self.sink_tokens)

    def add(self, layer: int, probs: torch.Tensor, visible: torch.Tensor, q0: int, layout: BatchLayout,
            bidirectional: bool) -> None:
        """Add one chunk of queries (general path: any mask, causal or bidirectional).

        Parameters
        ----------
        layer : int
            Layer index.
        probs : torch.Tensor
            (batch, heads, c, k) fp32 attention probabilities of queries q0 … q0+c−1 over keys 0 … k−1
            (k may stop at q0+c for causal layers). Rows of invalid (padding) queries may hold anything;
            they are ignored. Not modified.
        visible : torch.Tensor
            (batch, 1, c, k) bool: which (query, key) pairs the mask lets through.
        q0 : int
            Position of the chunk's first query.
        layout : BatchLayout
            Document starts, lengths and indices of the batch rows.
        bidirectional : bool
            Whether keys after the query are visible (encoders); adds the right-hand side.
        """
        c, k = probs.shape[-2:]
        w = _ChunkWeights(layout, q0, c, k, self.sink_tokens, self.cs_horizon, bidirectional, probs.device)
        sink_sum = self._sink_sum(probs, w)
        rows = None if w.clean else w.valid
        by_dist = _diagonal_sums(probs, w.keep_key, rows, w.weights, q0, bidirectional)
        pairs = _diagonal_sums(visible.to(probs.dtype), w.keep_key, rows, w.weights[:, :1], q0, bidirectional)
        self._commit(layer, by_dist, pairs, sink_sum, w, q0 + c, bidirectional)

    def add_causal_block(self, layer: int, probs: torch.Tensor, q0: int, layout: BatchLayout,
                         visible: torch.Tensor | None) -> None:
        """Add one chunk of a causal layer (fast path: diagonal sums read through a skew view).

        Parameters
        ----------
        layer : int
            Layer index.
        probs : torch.Tensor
            (batch, heads, c, kend) contiguous fp32 probabilities of queries q0 … q0+c−1 over keys
            0 … kend−1, kend = q0 + c, future keys exactly 0. Modified in place (sink keys and invalid
            rows are zeroed).
        q0 : int
            First query position.
        layout : BatchLayout
            Document starts, lengths and indices of the batch rows.
        visible : torch.Tensor or None
            (batch, 1, c, kend) bool visibility; None means plain causal attention over whole documents
            (no padding, no window), whose pair counts are computed in closed form.

        Notes
        -----
        Reading rows 1 … c−1 with row stride kend + 1 shifts each row one further than the last, so
        column t holds distance kend − 1 − t. Reads left of key 0 land on the previous row's last keys,
        which are future keys of that row and exactly 0 after the causal softmax, so no padded copy is
        needed; row 0 (whose reads would leave its (batch, head) slab) is added on its own.
        """
        B, H, c, kend = probs.shape
        w = _ChunkWeights(layout, q0, c, kend, self.sink_tokens, self.cs_horizon, False, probs.device)
        sink_sum = self._sink_sum(probs, w)
        if w.starts_zero:
            probs[..., : self.sink_tokens] = 0.0
        else:
            probs.mul_(w.keep_key)
        if not w.clean:
            probs.masked_fill_(~w.valid[:, None, :, None], 0.0)
        skew = probs.as_strided((B, H, c - 1, kend), (H * c * kend, c * kend, kend + 1, 1),
                                probs.storage_offset() + kend + 2 - c)  # rows 1 … c−1
        weights = w.weights[:, :2]  # (B, 2, c): every valid query, the common-support side (no right side)
        by_dist = torch.matmul(weights[:, None, :, 1:], skew)  # (B, H, 2, kend)
        # row 0 (query q0): key j sits at column c − 1 + j
        by_dist[..., c - 1:].add_(weights[:, None, :, :1] * probs[:, :, None, 0, : q0 + 1])
        if visible is None:
            pairs = self._causal_pairs(B, q0, kend, probs.device, probs.dtype)
        else:
            pairs = _diagonal_sums(visible.to(probs.dtype), w.keep_key, None if w.clean else w.valid,
                                   w.weights[:, :1], q0, False)
        self._commit(layer, by_dist, pairs, sink_sum, w, kend, False)

    def add_causal_sums(self, layer: int, by_dist: torch.Tensor, sink_sum: torch.Tensor, q0: int,
                        layout: BatchLayout) -> None:
        """Add plain causal chunks whose sums were taken elsewhere (:mod:`gammalens.probe.native`): one chunk, or a
        whole layer (q0 = 0, kend = n).

        Parameters
        ----------
        by_dist : torch.Tensor
            (B, H, 2, kend) non-sink mass by column t ↔ d = kend − 1 − t: every query, the common-support
            queries (q − sink_tokens ≥ cs_horizon).
        sink_sum : torch.Tensor
            (B, H) mass on the sink keys of the queries past the sinks.
        q0 : int
            First query position; the sums cover queries q0 … kend − 1, all valid, every document starting at 0.
        """
        B, _, _, kend = by_dist.shape
        w = _ChunkWeights(layout, q0, kend - q0, kend, self.sink_tokens, self.cs_horizon, False, by_dist.device)
        if not (w.starts_zero and w.clean):
            raise ValueError("add_causal_sums takes chunks of whole, unpadded documents only")
        pairs = self._causal_pairs(B, q0, kend, by_dist.device, by_dist.dtype)
        self._commit(layer, by_dist, pairs, sink_sum, w, kend, False)

    def _causal_pairs(self, batch: int, q0: int, kend: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(B, 1, 1, kend) visible non-sink pairs of a plain causal chunk by column t ↔ d = kend − 1 − t."""
        d = torch.arange(kend, device=device)
        lo = torch.clamp(d + self.sink_tokens, min=q0)
        pairs = (kend - lo).clamp(min=0).to(dtype).flip(-1)
        return pairs.expand(batch, 1, 1, kend)

    def add_distance_sums(self, layer: int, mass: torch.Tensor, mass_cs: torch.Tensor, sink_sum: torch.Tensor,
                          doc_index: torch.Tensor, pairs: torch.Tensor, queries_cs: torch.Tensor,
                          sink_queries: torch.Tensor) -> None:
        """Add one layer's sums computed elsewhere (the fused kernel), indexed by distance |q − k|.

        Parameters
        ----------
        mass : torch.Tensor
            (B, H, n) non-sink mass at distance d = 0 … n−1, summed over each row's valid queries.
        mass_cs : torch.Tensor
            (B, H, cs_horizon+1) common-support mass.
        sink_sum : torch.Tensor
            (B, H) mass on the sink keys.
        doc_index : torch.Tensor
            (B,) each row's document.
        pairs : torch.Tensor
            (n,) visible non-sink pairs at each distance, summed over rows.
        queries_cs, sink_queries : torch.Tensor
            (B,) query-sides behind ``mass_cs`` and ``sink_sum``.
        """
        if not torch.isfinite(mass).all() or not torch.isfinite(sink_sum).all():
            bad = (~torch.isfinite(mass)).any(-1) | ~torch.isfinite(sink_sum)  # (B, H)
            raise _non_finite(layer, int(bad.any(0).nonzero()[0, 0]))
        dev, f64 = self.mass.device, torch.float64
        D = self.max_distance + 1
        self._add_trunc(self.mass[layer], mass.to(dev, f64).sum(0), D)
        self._add_trunc(self.pairs[layer], pairs.to(dev, f64), D)
        self._add_docs(doc_index.to(dev), layer, mass_cs.to(dev, f64), queries_cs.to(dev, f64),
                       sink_sum.to(dev, f64), sink_queries.to(dev, f64))

    def _sink_sum(self, probs: torch.Tensor, w: _ChunkWeights) -> torch.Tensor:
        """(B, H) summed attention on the sink keys over the queries past the sinks."""
        B, H, c, k = probs.shape
        s = self.sink_tokens
        if s == 0:
            return probs.new_zeros(B, H)
        if w.starts_zero:
            sink_p = probs[..., : min(s, k)].sum(-1)  # (B, H, c)
        else:
            idx = (w.starts[:, None] + torch.arange(s, device=probs.device)[None, :]).clamp_(max=k - 1)
            sink_p = probs.gather(-1, idx[:, None, None, :].expand(B, H, c, s)).sum(-1)
            sink_p = torch.where(w.sink_key.any(-1)[:, None, None], sink_p, 0.0)
        return torch.einsum("bhc,bc->bh", torch.nan_to_num(sink_p), w.w_sink.to(probs.dtype))

    def _commit(self, layer: int, by_dist: torch.Tensor, pairs: torch.Tensor, sink_sum: torch.Tensor,
                w: _ChunkWeights, q_end: int, bidirectional: bool) -> None:
        """Fold signed-distance sums into the running arrays; raise on NaN/inf naming the head."""
        if not torch.isfinite(by_dist).all() or not torch.isfinite(sink_sum).all():
            bad = (~torch.isfinite(by_dist)).flatten(2).any(-1) | ~torch.isfinite(sink_sum)  # (B, H)
            raise _non_finite(layer, int(bad.any(0).nonzero()[0, 0]))
        dev = self.mass.device  # with device_map='auto' the layers live on several GPUs; the sums on one
        by_dist, pairs, sink_sum = by_dist.to(dev), pairs.to(dev), sink_sum.to(dev)
        B, H = by_dist.shape[:2]
        Hz = self.cs_horizon
        left, right = _fold(by_dist, q_end)  # (B, H, 3, ≤q_end), (B, H, 3, ·)
        pl, pr = _fold(pairs, q_end)
        D = self.max_distance + 1
        self._add_trunc(self.mass[layer], left[:, :, 0].sum(0), D)
        self._add_trunc(self.pairs[layer], pl[:, 0, 0].sum(0), D)
        if bidirectional:
            self._add_trunc(self.mass[layer], right[:, :, 0].sum(0), D, offset=1)
            self._add_trunc(self.pairs[layer], pr[:, 0, 0].sum(0), D, offset=1)
        cs = torch.zeros(B, H, Hz + 1, dtype=torch.float64, device=dev)
        self._add_trunc(cs, left[:, :, 1], Hz + 1)
        if bidirectional:
            self._add_trunc(cs, right[:, :, 2], Hz + 1, offset=1)
        queries_cs = (w.w_left.sum(-1) + w.w_right.sum(-1)).double().to(dev)
        sink_queries = w.w_sink.sum(-1).double().to(dev)
        self._add_docs(w.doc_index.to(dev), layer, cs, queries_cs, sink_sum.double(), sink_queries)

    def _add_docs(self, docs: torch.Tensor, layer: int, mass_cs: torch.Tensor, queries_cs: torch.Tensor,
                  sink_sum: torch.Tensor, sink_queries: torch.Tensor) -> None:
        """Add per-row sums to the per-document arrays: docs (B,), mass_cs (B, H, Hz+1), the rest (B[, H])."""
        at = (docs, torch.full_like(docs, layer))  # one batched scatter per array, repeated documents add up
        self.doc_mass_cs.index_put_(at, mass_cs, accumulate=True)
        self.doc_queries_cs.index_put_(at, queries_cs, accumulate=True)
        self.doc_sink_sum.index_put_(at, sink_sum, accumulate=True)
        self.doc_sink_queries.index_put_(at, sink_queries, accumulate=True)

    @staticmethod
    def _add_trunc(target: torch.Tensor, values: torch.Tensor, size: int, offset: int = 0) -> None:
        """``target[..., offset:offset+n] += values[..., :n]`` with n clipped to ``size``."""
        n = min(values.shape[-1], size - offset)
        if n > 0:
            target[..., offset:offset + n] += values[..., :n].double()


class _ChunkWeights:
    """Which queries of a chunk count where: every valid query, the common-support sides, the sink sums."""

    def __init__(self, layout: BatchLayout, q0: int, c: int, k: int, s: int, horizon: int, bidirectional: bool,
                 device: torch.device) -> None:
        self.starts, self.doc_index = layout.starts, layout.doc_index
        self.starts_zero = bool((layout.starts == 0).all())
        q_rel = torch.arange(q0, q0 + c, device=device)[None, :] - layout.starts[:, None]  # (B, c)
        self.valid = (q_rel >= 0) & (q_rel < layout.lengths[:, None])
        self.clean = bool(self.valid.all())
        k_rel = torch.arange(k, device=device)[None, :] - layout.starts[:, None]  # (B, k)
        self.sink_key = (k_rel >= 0) & (k_rel < s)
        self.keep_key = (~self.sink_key).float()[:, None, None, :]  # (B, 1, 1, k)
        self.w_left = self.valid & (q_rel - s >= horizon)
        self.w_right = (self.valid & (q_rel >= s) & (layout.lengths[:, None] - 1 - q_rel >= horizon)
                        if bidirectional else torch.zeros_like(self.valid))
        self.w_sink = self.valid & (q_rel >= s)
        self.weights = torch.stack([self.valid, self.w_left, self.w_right], dim=1).float()  # (B, 3, c)


def _diagonal_sums(x: torch.Tensor, keep_key: torch.Tensor, valid_rows: torch.Tensor | None,
                   weights: torch.Tensor, q0: int, bidirectional: bool) -> torch.Tensor:
    """Weighted sums of ``x`` along its diagonals.

    Parameters
    ----------
    x : torch.Tensor
        (B, h, c, k) values for queries q0 … q0+c−1 and keys 0 … k−1.
    keep_key : torch.Tensor
        (B, 1, 1, k) multiplier per key (0 for sink keys).
    valid_rows : torch.Tensor or None
        (B, c) bool; rows outside it are zeroed (None: all rows valid).
    weights : torch.Tensor
        (B, w, c) weight of each query row in each of w sums.
    q0 : int
        Position of the first query.
    bidirectional : bool
        Whether keys after the query are included (otherwise only d ≥ 0 is read).

    Returns
    -------
    torch.Tensor
        (B, h, w, T): column t holds the weighted sum over rows of x at signed distance
        d = q0 + c − 1 − t (query minus key); T = q0 + c for causal, k + c − 1 otherwise.
    """
    B, h, c, k = x.shape
    front = c - 1
    back = c - 1 if bidirectional else 0
    L = front + k + back
    buf = x.new_zeros(B, h, c, L)
    torch.mul(x, keep_key, out=buf[..., front:front + k])
    if valid_rows is not None:
        buf.masked_fill_(~valid_rows[:, None, :, None], 0.0)
    T = k + c - 1 if bidirectional else q0 + c
    # row i shifted left by i: element (i, t) sits at i*(L+1) + t, i.e. key j = i + t − (c − 1)
    skew = buf.as_strided((B, h, c, T), (h * c * L, c * L, L + 1, 1))
    return torch.matmul(weights[:, None], skew)  # (B, h, w, T)


def _fold(by_dist: torch.Tensor, q_end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split signed-distance columns into d ≥ 0 (index d) and d < 0 (index |d| − 1)."""
    left = by_dist[..., :q_end].flip(-1)  # column q_end−1−d → d
    right = by_dist[..., q_end:]  # column q_end−1+|d| → |d|−1
    return left, right


def _non_finite(layer: int, head: int) -> Exception:

    return NonFiniteAttentionError(
        f"attention probabilities are NaN or inf at layer {layer}, head {head}; "
        "try --dtype fp32 or check the model's weights"
    )
