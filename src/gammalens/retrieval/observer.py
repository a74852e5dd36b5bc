"""Echo and induction attention per head, from the probe's exact fp32 probabilities, chunk by chunk.

:class:`RetrievalObserver` is an observer of :class:`~gammalens.probe.backend.DistanceProbe` (like
:class:`~gammalens.sinks.measures.SinkObserver`): it sees every query chunk's probabilities ``P`` (B, H, c, k) and
adds, for each sequence of P prefix tokens and L random tokens repeated twice, and each second-copy query at
position s = P + L + i (``skip`` ≤ i < L):

- **echo**: P(s, P + i), the attention on the query's counterpart in the first copy (the same token);
- **induction**: P(s, P + i + 1), the attention on the token after the counterpart (the token that followed it
  last time, which an induction head copies).

Two gathers per chunk, no n×n matrix of all heads; the sums are float64 (Tang et al. 2024, "RazorAttention",
for the two scores).

>>> obs = RetrievalObserver(n_layers=30, n_heads=9, n_docs=8, length=256, prefix_len=0)   # doctest: +SKIP
>>> probe = DistanceProbe(accumulator, observers=[obs])                                  # doctest: +SKIP
"""

from __future__ import annotations

import torch

from gammalens.probe.accumulate import BatchLayout


class RetrievalObserver:
    """Probe observer that sums echo and induction probabilities per sequence, layer and head.

    Parameters
    ----------
    n_layers, n_heads : int
        Attention layers and query heads of the model.
    n_docs : int
        Sequences of the pass.
    length : int
        L, tokens of one copy.
    prefix_len : int
        P, tokens before the first copy.
    skip : int
        Second-copy queries i < ``skip`` are left out.
    device : torch.device or str
        Where the sums live.

    Attributes
    ----------
    echo_sum, induction_sum : torch.Tensor
        (N, L, H) float64 probability summed over the counted queries of each sequence.
    queries : torch.Tensor
        (N, L) float64 counted queries per sequence and layer.
    """

    def __init__(self, n_layers: int, n_heads: int, n_docs: int, length: int, prefix_len: int, skip: int = 4,
                 device: torch.device | str = "cpu") -> None:
        if not 0 <= skip < length:
            raise ValueError(f"skip must be in [0, length) (got skip={skip}, length={length})")
        self.length, self.prefix_len, self.skip = length, prefix_len, skip
        f64 = torch.float64
        self.echo_sum = torch.zeros(n_docs, n_layers, n_heads, dtype=f64, device=device)
        self.induction_sum = torch.zeros(n_docs, n_layers, n_heads, dtype=f64, device=device)
        self.queries = torch.zeros(n_docs, n_layers, dtype=f64, device=device)

    def __call__(self, layer: int, probs: torch.Tensor, visible: torch.Tensor, q0: int, layout: BatchLayout) -> None:
        """Add one chunk: ``probs`` (B, H, c, k) fp32 for queries q0…q0+c−1 (``visible`` is not needed: a key the
        query cannot see has probability 0)."""
        B, H, c, k = probs.shape
        dev = probs.device
        q_rel = torch.arange(q0, q0 + c, device=dev)[None, :] - layout.starts[:, None]  # (B, c) from doc start
        i = q_rel - (self.prefix_len + self.length)  # (B, c) index in the second copy
        counted = (i >= self.skip) & (i < self.length) & (q_rel < layout.lengths[:, None])  # (B, c)
        if not bool(counted.any()):
            return
        echo_key = (layout.starts[:, None] + self.prefix_len + i).clamp(0, k - 1)  # (B, c) absolute key index
        keys = torch.stack([echo_key, (echo_key + 1).clamp(max=k - 1)], dim=-1)  # (B, c, 2): echo, induction
        picked = probs.gather(-1, keys[:, None].expand(B, H, c, 2))  # (B, H, c, 2)
        w = counted.to(torch.float64)  # (B, c)
        sums = torch.einsum("bhcs,bc->bhs", picked.double(), w)  # (B, H, 2)
        home = self.echo_sum.device  # under device_map='auto' the layer may sit on another GPU than the sums
        doc_index = layout.doc_index.to(home)
        sums = sums.to(home)
        self.echo_sum[:, layer].index_add_(0, doc_index, sums[..., 0])
        self.induction_sum[:, layer].index_add_(0, doc_index, sums[..., 1])
        self.queries[:, layer].index_add_(0, doc_index, w.sum(-1).to(home))
