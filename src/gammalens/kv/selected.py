"""A ``transformers`` Cache that holds, per KV head, a chosen subset of the prefill and a window of what follows.

The γ-window cache keeps, per head, the sinks and the *last* W_h tokens: the right shape for a head whose mass
decays with distance, the wrong one for a head that reads content far back (what a continuation on code, or a
retrieval, needs). This cache keeps, per KV head h, any P_h tokens of a prefill of n tokens (chosen by a score,
e.g. the plan's per-head budget filled with the best-scored keys: :func:`select_keep`) and, for the tokens
that come after the prefill, a ring buffer of their last W_h (a :class:`~gammalens.kv.cache.GammaWindowLayer`
without sinks, on positions counted from n). What is held is real storage: the kept prefill keys and values are
gathered into one flat (batch, Σ_h P_h, head_dim) buffer per layer, nothing of the evicted prefill stays.

It is built once a prefill has run with full attention (:meth:`SelectedCache.from_prefill`): the kvpress setting
(compress after prefill, then decode on what is left), with the prefill's peak memory that of a full cache.
Served by :func:`gammalens.kv.attention.gamma_window_attention` like the γ-window cache: kept prefill keys are
visible to every later query (they are all in its past); later keys are visible causally within W_h.

Keys are stored after RoPE at their original positions, so attention over the kept keys is exactly the full
model's attention restricted to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from gammalens.kv.cache import GammaWindowLayer, check_model
from gammalens.kv.tails import KVError


def select_keep(scores: torch.Tensor, counts: Sequence[int], sinks: int = 0, recent: int = 0) -> list[torch.Tensor]:
    """Per KV head, the prefill positions to keep: the sinks, the last ``recent`` tokens, then the best scores.

    Parameters
    ----------
    scores : Tensor, shape (B, Hkv, n)
        A score per prefill key (higher is kept first), e.g. kvpress's ExpectedAttention score.
    counts : sequence of int, length Hkv
        Tokens P_h to keep per head; min(P_h, n) are kept (P_h ≥ n keeps the whole prefill).
    sinks, recent : int
        The first ``sinks`` and the last ``recent`` positions are kept before any scored one (as far as P_h allows).

    Returns
    -------
    list of Tensor, length Hkv, each (B, min(P_h, n)) int64, sorted ascending per row.
    """
    if scores.ndim != 3 or scores.shape[1] != len(counts):
        raise KVError(f"scores must be (batch, {len(counts)} KV heads, tokens); got {tuple(scores.shape)}")
    if sinks < 0 or recent < 0 or min(counts, default=0) < 0:
        raise KVError(f"counts, sinks and recent must be ≥ 0 (got {list(counts)}, {sinks}, {recent})")
    b, _, n = scores.shape
    pos = torch.arange(n, device=scores.device)
    forced = (pos < sinks) | (pos >= n - recent)  # (n,) ranked above every scored key, the sinks first
    rank = scores.float().clone()
    rank[..., forced] = torch.inf
    keep = []
    for h, count in enumerate(counts):
        p = min(int(count), n)
        if p == n:
            keep.append(pos.expand(b, n).clone())
            continue
        # among the forced keys (rank +inf) the sinks come first, then the most recent, as far as p allows
        tiebreak = torch.where(forced, torch.where(pos < sinks, 2.0 * n - pos, 1.0 * pos), 0.0)
        keep.append(_top_keys(rank[:, h], tiebreak, p).sort(dim=-1).values)
    return keep


def _top_keys(rank: torch.Tensor, tiebreak: torch.Tensor, p: int) -> torch.Tensor:
    """(B, p) indices of the p largest ``rank`` per row; among equal ranks (the forced keys) the larger tiebreak."""
    order = torch.argsort(tiebreak, descending=True, stable=True)  # (n,) forced keys by precedence
    ranked = torch.argsort(rank[:, order], dim=-1, descending=True, stable=True)[:, :p]
    return order[ranked]


class SelectedLayer(CacheLayerMixin):
    """One layer: per KV head, kept prefill tokens (flat storage) and a ring of the last W_h later tokens.

    Parameters
    ----------
    keys, values : Tensor, shape (B, Hkv, n, d)
        The layer's prefill keys (after RoPE) and values.
    keep : sequence of Tensor, length Hkv, each (B, P_h) or (P_h,)
        Prefill positions kept per head (distinct, < n; one set for every batch row if 1-D).
    window : sequence of int, length Hkv
        Later tokens kept per head (≥ 1).
    block : int
        Growth step of the ring buffers (tokens).
    """

    is_compileable = False
    is_sliding = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, keep: Sequence[torch.Tensor],
                 window: Sequence[int], block: int = 256) -> None:
        super().__init__()
        b, n_kv, n, d = keys.shape
        if len(keep) != n_kv or len(window) != n_kv:
            raise KVError(f"the layer has {n_kv} KV heads but keep / window give {len(keep)} / {len(window)}")
        idx = []
        for h, k in enumerate(keep):
            k = torch.as_tensor(k, dtype=torch.long, device=keys.device)
            k = k.expand(b, -1) if k.ndim == 1 else k
            if k.shape[0] != b or (k.numel() and (int(k.min()) < 0 or int(k.max()) >= n)):
                raise KVError(f"KV head {h}: kept positions must be (batch, P) in [0, {n}); got {tuple(k.shape)}")
            if k.shape[1] > 1 and bool((k.sort(-1).values.diff(dim=-1) == 0).any()):
                raise KVError(f"KV head {h}: a kept position is repeated")
            idx.append(k)
        self.n0 = n
        self.kept = torch.tensor([k.shape[1] for k in idx], dtype=torch.long, device=keys.device)  # (Hkv,) P_h
        flat = torch.cat([k + h * n for h, k in enumerate(idx)], dim=1)  # (B, ΣP) into the (Hkv·n) prefill
        rows = torch.arange(b, device=keys.device)[:, None]
        self.keys = keys.reshape(b, n_kv * n, d)[rows, flat].clone()  # (B, ΣP, d): only what is kept
        self.values = values.reshape(b, n_kv * n, values.shape[-1])[rows, flat].clone()
        self.tail = GammaWindowLayer(window, sinks=0, block=block)  # positions n0, n0+1, … as 0, 1, …
        self.dtype, self.device = keys.dtype, keys.device
        self._held: torch.Tensor | None = None  # (Hkv, Pmax) which padded kept slots are real, set by update
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new tokens; return (B, Hkv, Pmax + Cmax + q, d) keys and values for their attention."""
        b, n_kv, _, d = key_states.shape
        k_tail, v_tail = self.tail.update(key_states, value_states)
        pmax = int(self.kept.max())
        j = torch.arange(pmax, device=self.device)
        self._held = j[None, :] < self.kept[:, None]  # (Hkv, Pmax)
        idx = torch.where(self._held, (torch.cumsum(self.kept, 0) - self.kept)[:, None] + j[None, :], 0)
        k_pin = self.keys[:, idx.reshape(-1)].view(b, n_kv, pmax, d)
        v_pin = self.values[:, idx.reshape(-1)].view(b, n_kv, pmax, self.values.shape[-1])
        return torch.cat([k_pin, k_tail], dim=2), torch.cat([v_pin, v_tail], dim=2)

    def visible(self) -> torch.Tensor:
        """(Hkv, q, K) bool: kept prefill keys are visible to every new query; later keys causally within W_h."""
        if self._held is None:
            raise KVError("the selected-cache attention ran without its cache: pass the same cache to the model (gammalens.kv.cache.cache_kwargs)")
        tail = self.tail.visible()
        return torch.cat([self._held[:, None, :].expand(-1, tail.shape[1], -1), tail], dim=2)

    def get_mask_sizes(self, query: int | torch.Tensor) -> tuple[int, int]:
        kv, _ = self.tail.get_mask_sizes(query)
        return int(self.kept.max()) + kv, 0

    def get_seq_length(self) -> int:
        """Tokens seen (positions 0..seen−1), not tokens held."""
        return self.n0 + self.tail.seen

    def get_max_cache_shape(self) -> int:  # transformers ≤ 5.2
        return -1

    def get_max_length(self) -> int:  # transformers ≥ 5.3
        return -1

    def held_tokens(self) -> torch.Tensor:
        """(Hkv,) tokens each head holds now: kept prefill + ring."""
        return self.kept.cpu() + self.tail.held_tokens()

    def nbytes(self) -> int:
        """Bytes held by this layer's tensors (kept keys and values, ring keys and values)."""
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values)) + self.tail.nbytes()

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass  # built from a prefill; never lazily

    def reset(self) -> None:
        raise KVError("a selected cache cannot be reset (its prefill is gone); build a new one")

    def crop(self, max_length: int) -> None:
        raise KVError("a selected cache cannot be cropped (evicted tokens are gone); use a DynamicCache")


class SelectedCache(Cache):
    """Per-KV-head kept prefill tokens + a window of later tokens, for every layer of a causal RoPE decoder.

    Examples
    --------
    >>> dyn = transformers.DynamicCache(); model(ids, past_key_values=dyn)          # doctest: +SKIP
    >>> keep = [select_keep(score(layer), counts[i], sinks=4) for i, layer in ...]  # doctest: +SKIP
    >>> cache = SelectedCache.from_prefill([(l.keys, l.values) for l in dyn.layers], keep, windows)  # doctest: +SKIP
    >>> with gamma_window_attention(model, cache):                                  # doctest: +SKIP
    ...     out = model(next_ids, use_cache=True, **cache_kwargs(model, cache))
    """

    def __init__(self, layers: Sequence[SelectedLayer]) -> None:
        super().__init__(layers=list(layers))

    @classmethod
    def from_prefill(cls, kv: Sequence[tuple[torch.Tensor, torch.Tensor]], keep: Sequence[Sequence[torch.Tensor]],
                     windows: Sequence[Sequence[int]], *, block: int = 256, model: Any | None = None,
                     facts: dict | None = None) -> SelectedCache:
        """The cache of a prefill's per-layer (keys, values) (B, Hkv, n, d), kept positions and later windows (L, Hkv).

        ``model`` and ``facts`` (a plan's ``model``), when given, are checked to match.
        """
        if model is not None and facts is not None:
            check_model(model, facts)
        if not (len(kv) == len(keep) == len(windows)):
            raise KVError(f"the prefill has {len(kv)} layers but keep / windows give {len(keep)} / {len(windows)}")
        lengths = {int(k.shape[2]) for k, _ in kv}
        if len(lengths) != 1:
            raise KVError(f"every layer's prefill must have the same length (got {sorted(lengths)})")
        return cls([SelectedLayer(k, v, kp, w, block=block) for (k, v), kp, w in zip(kv, keep, windows, strict=True)])

    @classmethod
    def from_plan(cls, plan: Any, kv: Sequence[tuple[torch.Tensor, torch.Tensor]], scores: Sequence[torch.Tensor], *,
                  recent: int = 0, block: int = 256, model: Any | None = None) -> SelectedCache:
        """A :class:`~gammalens.kv.plan.KVPlan`'s per-head budgets filled with the best-scored prefill keys.

        KV head h of layer l keeps min(n, sinks + W_lh) prefill tokens (a hybrid plan's retrieval heads: all of
        them) chosen by :func:`select_keep` from ``scores[l]`` (B, Hkv, n), and a ring of W_lh later tokens.
        """
        if len(scores) != len(kv):
            raise KVError(f"the prefill has {len(kv)} layers but {len(scores)} score tensors were given")
        n = int(kv[0][0].shape[2]) if kv else 0
        counts = torch.as_tensor(plan.tokens).clamp(max=n).tolist()
        keep = [select_keep(sc, c, sinks=plan.sink_tokens, recent=recent) for sc, c in zip(scores, counts, strict=True)]
        return cls.from_prefill(kv, keep, plan.window.tolist(), block=block, model=model, facts=plan.model)

    def nbytes(self) -> int:
        """Bytes held by every layer's tensors."""
        return sum(layer.nbytes() for layer in self.layers)

    def held_tokens(self) -> torch.Tensor:
        """(L, Hkv) tokens held per KV head."""
        return torch.stack([layer.held_tokens() for layer in self.layers])
