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

import torch


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

    def add(self, layer: int, probs: torch.Tensor, visible: torch.Tensor, q0: int, layout: BatchLayout,
            bidirectional: bool) -> None:
        """Add one chunk of queries.

        Parameters
        ----------
        layer : int
            Layer index.
        probs : torch.Tensor
            (batch, heads, c, k) fp32 attention probabilities of queries q0 … q0+c−1 over keys 0 … k−1
            (k may stop at q0+c for causal layers). Rows of invalid (padding) queries may hold anything
            finite; they are ignored.
        visible : torch.Tensor
            (batch, 1, c, k) bool: which (query, key) pairs the mask lets through.
        q0 : int
            Position of the chunk's first query.
        layout : BatchLayout
            Document starts, lengths and indices of the batch rows.
        bidirectional : bool
            Whether keys after the query are visible (encoders); adds the right-hand side.
        """
        B, H, c, k = probs.shape
        s, Hz = self.sink_tokens, self.cs_horizon
        dev = probs.device
        q_rel = torch.arange(q0, q0 + c, device=dev)[None, :] - layout.starts[:, None]  # (B, c)
        valid = (q_rel >= 0) & (q_rel < layout.lengths[:, None])
        k_rel = torch.arange(k, device=dev)[None, :] - layout.starts[:, None]  # (B, k)
        sink_key = (k_rel >= 0) & (k_rel < s)
        keep_key = (~sink_key).to(probs.dtype)[:, None, None, :]  # (B, 1, 1, k)

        w_all = valid
        w_left = valid & (q_rel - s >= Hz)
        w_right = valid & (q_rel >= s) & (layout.lengths[:, None] - 1 - q_rel >= Hz) if bidirectional \
            else torch.zeros_like(valid)
        w_sink = valid & (q_rel >= s)

        # sink mass per query, before the sink keys are zeroed
        sink_idx = (layout.starts[:, None] + torch.arange(s, device=dev)[None, :]).clamp_(max=k - 1)
        sink_p = probs.gather(-1, sink_idx[:, None, None, :].expand(B, H, c, s)).sum(-1)  # (B, H, c)
        sink_p = torch.where(sink_key.any(-1)[:, None, None], sink_p, 0.0)
        wsink = w_sink.to(probs.dtype)
        sink_sum = torch.einsum("bhc,bc->bh", torch.nan_to_num(sink_p), wsink)

        weights = torch.stack([w_all, w_left, w_right], dim=1).to(probs.dtype)  # (B, 3, c)
        clean_rows = bool(valid.all())
        by_dist = _diagonal_sums(probs, keep_key, None if clean_rows else valid, weights, q0, bidirectional)
        if not torch.isfinite(by_dist).all() or not torch.isfinite(sink_sum).all():
            bad = (~torch.isfinite(by_dist)).flatten(2).any(-1) | ~torch.isfinite(sink_sum)  # (B, H)
            raise _non_finite(layer, int(bad.any(0).nonzero()[0, 0]))
        vis = visible.to(probs.dtype)
        pairs = _diagonal_sums(vis, keep_key, None if clean_rows else valid, weights[:, :1], q0, bidirectional)

        left, right = _fold(by_dist, q0 + c)  # (B, H, 3, ≤q0+c), (B, H, 3, ·)
        pl, pr = _fold(pairs, q0 + c)
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
        idx = layout.doc_index
        self.doc_mass_cs[:, layer].index_add_(0, idx, cs)
        self.doc_queries_cs[:, layer].index_add_(0, idx, (w_left.sum(-1) + w_right.sum(-1)).double())
        self.doc_sink_sum[:, layer].index_add_(0, idx, sink_sum.double())
        self.doc_sink_queries[:, layer].index_add_(0, idx, w_sink.sum(-1).double())

    @staticmethod
    def _add_trunc(target: torch.Tensor, values: torch.Tensor, size: int, offset: int = 0) -> None:
        """``target[..., offset:offset+n] += values[..., :n]`` with n clipped to ``size``."""
        n = min(values.shape[-1], size - offset)
        if n > 0:
            target[..., offset:offset + n] += values[..., :n].double()


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
    from gammalens.errors import NonFiniteAttentionError

    return NonFiniteAttentionError(
        f"attention probabilities are NaN or inf at layer {layer}, head {head}; "
        "try --dtype fp32 or check the model's weights"
    )
