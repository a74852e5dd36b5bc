"""A ``transformers`` Cache that holds, per layer and KV head, only the sink tokens and the last W tokens.

Storage is one flat buffer per layer, ``keys`` / ``values`` of shape (batch, Σ_h C_h, head_dim) with
C_h = sinks + W_h slots for KV head h: real bytes, not a mask over a full cache. The first ``sinks`` slots
of a head hold positions 0..sinks−1; the other W_h slots are a ring buffer (position p lives in slot
sinks + (p − sinks) mod W_h), so a slot's position follows from the tokens seen and is not stored: the cache
holds keys and values only, as a DynamicCache does. Buffers grow in blocks up to C_h, so a short sequence never
reserves a long window, and then stay fixed: memory is bounded over unbounded generation.

``update`` returns, for the attention of the new tokens, every head's held slots followed by the new
tokens, padded to the longest head (a per-layer temporary), and records which (head, query, key) pairs are
visible: key position ≤ query position, and the key is a sink or within the query's last W_h tokens.
So a prefill of many tokens in one call is exact too: a query early in the chunk still sees keys that
the ring buffer is about to overwrite. Only :func:`gammalens.kv.attention.gamma_window_attention` reads
that record; it must be installed while the cache is used.

Keys are stored after RoPE, at their original positions (as every transformers cache): a kept token
keeps the rotation of its true distance to the query, so attention over the kept keys is exactly the
full model's attention restricted to them. (Re-rotating kept keys to contiguous positions, as
StreamingLLM does to stay inside a model's trained range, is not done: within the model's maximum
positions it would change the distances the model was trained on.)

Batches hold sequences of equal length without padding (every sequence has the same positions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from gammalens.kv.tails import KVError


class GammaWindowLayer(CacheLayerMixin):
    """One layer: per-KV-head sink + ring-buffer storage.

    Parameters
    ----------
    window : sequence of int, length Hkv
        Recent tokens W_h kept per KV head (≥ 1: the current token).
    sinks : int
        First tokens every head keeps (≥ 0).
    block : int
        Growth step of the buffers (tokens); 1 holds exactly min(C_h, tokens seen) slots.
    """

    is_compileable = False
    is_sliding = False

    def __init__(self, window: Sequence[int], sinks: int, block: int = 256) -> None:
        super().__init__()
        self.window = torch.as_tensor(list(window), dtype=torch.long)  # (Hkv,)
        if self.window.ndim != 1 or len(self.window) == 0 or int(self.window.min()) < 1:
            raise KVError(f"every KV head's window must be at least 1 token (got {list(window)})")
        if sinks < 0 or block < 1:
            raise KVError(f"sinks must be ≥ 0 and block ≥ 1 (got {sinks}, {block})")
        self.sinks, self.block = int(sinks), int(block)
        self.limit = self.window + self.sinks  # (Hkv,) C_h
        self.seen = 0
        self._kpos: torch.Tensor | None = None  # (Hkv, K) positions of the keys the last update returned
        self._qpos: torch.Tensor | None = None  # (q,) positions of its new tokens

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, n_kv, _, d = key_states.shape
        if n_kv != len(self.window):
            raise KVError(f"the model has {n_kv} KV heads in this layer but the plan has {len(self.window)}")
        self.dtype, self.device = key_states.dtype, key_states.device
        self.window, self.limit = self.window.to(self.device), self.limit.to(self.device)
        self.cap = torch.zeros(n_kv, dtype=torch.long, device=self.device)  # (Hkv,) slots allocated
        self.keys = key_states.new_zeros(b, 0, d)  # (B, Σ cap, d)
        self.values = value_states.new_zeros(b, 0, value_states.shape[-1])
        self.is_initialized = True

    @property
    def offsets(self) -> torch.Tensor:
        """(Hkv,) first slot of each head in the flat buffers."""
        return torch.cumsum(self.cap, 0) - self.cap

    def _grow(self, seen: int) -> None:
        need = torch.clamp(self.limit, max=seen)
        if bool((need <= self.cap).all()):
            return
        rounded = torch.clamp(self.limit, max=-(-seen // self.block) * self.block)
        new_cap = torch.where(need > self.cap, rounded, self.cap)
        old_off, new_off = self.offsets, torch.cumsum(new_cap, 0) - new_cap
        total = int(new_cap.sum())
        b, d, dv = self.keys.shape[0], self.keys.shape[-1], self.values.shape[-1]
        keys = self.keys.new_zeros(b, total, d)
        values = self.values.new_zeros(b, total, dv)
        for h in range(len(self.cap)):  # copy each head's slots to its new region (same slot indices)
            c, o, n = int(self.cap[h]), int(old_off[h]), int(new_off[h])
            keys[:, n:n + c] = self.keys[:, o:o + c]
            values[:, n:n + c] = self.values[:, o:o + c]
        self.keys, self.values, self.cap = keys, values, new_cap

    def slot_positions(self, cmax: int) -> torch.Tensor:
        """(Hkv, cmax) position held in each head's slot j after ``seen`` tokens; −1 where empty.

        Sink slot j < sinks holds position j; ring slot sinks + r holds the one position p among the last W_h
        non-sink tokens with (p − sinks) mod W_h = r: p = seen − 1 − ((seen − 1 − sinks − r) mod W_h), held
        if r < min(W_h, seen − sinks).
        """
        j = torch.arange(cmax, device=self.device)[None, :]
        w, s, seen = self.window[:, None], self.sinks, self.seen
        r = j - s
        ring = seen - 1 - torch.remainder(seen - 1 - s - r, w)
        pos = torch.where(j < s, j, ring)
        held = torch.where(j < s, j < seen, (r < w) & (r < seen - s)) & (j < self.cap[:, None])
        return torch.where(held, pos, -1)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new tokens; return (B, Hkv, Cmax + q, d) keys and values for their attention."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        b, n_kv, q, d = key_states.shape
        p0 = self.seen
        dev = self.device
        # 1. what each head holds, padded to the longest head: (Hkv, Cmax)
        cmax = int(self.cap.max())
        j = torch.arange(cmax, device=dev)
        held = j[None, :] < self.cap[:, None]  # (Hkv, Cmax)
        idx = torch.where(held, self.offsets[:, None] + j[None, :], 0)
        kpos_old = self.slot_positions(cmax)  # (Hkv, Cmax)
        k_old = self.keys[:, idx.reshape(-1)].view(b, n_kv, cmax, d)
        v_old = self.values[:, idx.reshape(-1)].view(b, n_kv, cmax, self.values.shape[-1])
        k_all = torch.cat([k_old, key_states], dim=2)  # (B, Hkv, Cmax + q, d)
        v_all = torch.cat([v_old, value_states], dim=2)
        qpos = torch.arange(p0, p0 + q, device=dev)  # (q,)
        self._kpos = torch.cat([kpos_old, qpos.expand(n_kv, q)], dim=1)  # (Hkv, K) positions of the returned keys
        self._qpos = qpos
        # 2. write the new tokens that stay: sinks and each head's last W_h tokens
        self.seen = p0 + q
        self._grow(self.seen)
        pos = qpos[None, :].expand(n_kv, q)  # (Hkv, q)
        ring = self.sinks + torch.remainder(pos - self.sinks, self.window[:, None])
        slot = torch.where(pos < self.sinks, pos, ring)
        keep = (pos < self.sinks) | (pos >= self.seen - self.window[:, None])  # (Hkv, q)
        dest = (self.offsets[:, None] + slot)[keep]
        self.keys[:, dest] = key_states.reshape(b, n_kv * q, d)[:, keep.reshape(-1)]
        self.values[:, dest] = value_states.reshape(b, n_kv * q, -1)[:, keep.reshape(-1)]
        return k_all, v_all

    def visible(self) -> torch.Tensor:
        """(Hkv, q, K) bool: which returned keys each new query of the last update may attend to.

        A key is visible if it is held, not in the query's future, and a sink or within the query's last W_h
        tokens. Built on demand by broadcasting (Hkv, 1, K) against (·, q, 1): only booleans are (Hkv, q, K),
        and nothing of that size stays alive between layers.
        """
        if self._kpos is None:
            raise KVError("the γ-window attention ran without its cache: pass the same cache to the model (gammalens.kv.cache.cache_kwargs)")
        kpos, qpos = self._kpos[:, None, :], self._qpos
        oldest = (qpos[None, :] - self.window[:, None])[:, :, None]  # (Hkv, q, 1): positions ≤ this are out
        return (kpos >= 0) & (kpos <= qpos[None, :, None]) & ((kpos < self.sinks) | (kpos > oldest))

    def get_mask_sizes(self, query: int | torch.Tensor) -> tuple[int, int]:
        """(kv_length, kv_offset); transformers 5.2 passes cache_position (a tensor), later versions its length."""
        q = int(query) if isinstance(query, int) else int(query.shape[0])
        cmax = int(self.cap.max()) if self.is_initialized else 0
        return cmax + q, 0

    def get_seq_length(self) -> int:
        """Tokens seen (positions are 0..seen−1), not tokens held."""
        return self.seen

    def get_max_cache_shape(self) -> int:  # transformers ≤ 5.2
        return -1

    def get_max_length(self) -> int:  # transformers ≥ 5.3: no fixed maximum (buffers grow up to sinks + W_h)
        return -1

    def held_tokens(self) -> torch.Tensor:
        """(Hkv,) tokens each head holds now."""
        if not self.is_initialized:
            return torch.zeros(len(self.window), dtype=torch.long)
        return torch.minimum(self.limit, torch.tensor(self.seen, device=self.device)).cpu()

    def nbytes(self) -> int:
        """Bytes held by this layer's tensors (keys and values; slot positions are computed, not stored)."""
        if not self.is_initialized:
            return 0
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values))

    def reset(self) -> None:
        if self.is_initialized:
            self.lazy_initialization(self.keys.new_zeros(self.keys.shape[0], len(self.window), 0, self.keys.shape[-1]),
                                     self.values.new_zeros(self.keys.shape[0], len(self.window), 0,
                                                           self.values.shape[-1]))
        self.seen = 0
        self._kpos = self._qpos = None

    def crop(self, max_length: int) -> None:
        raise KVError("a γ-window cache cannot be cropped (evicted tokens are gone); use a DynamicCache")


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``{keyword: cache}`` for ``model(...)`` and ``model.generate(...)``: the keyword its transformers takes.

    transformers renamed ``past_key_values`` to ``cache`` after 5.2 (the old name warns, and goes in 5.40);
    the model's own ``forward`` signature says which one it takes.

    >>> out = model(ids, use_cache=True, **cache_kwargs(model, cache))      # doctest: +SKIP
    """
    import inspect

    params = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


class GammaWindowCache(Cache):
    """Sink + per-KV-head window cache for every layer of a causal RoPE decoder.

    Parameters
    ----------
    windows : sequence of sequences of int, shape (L, Hkv)
        Recent tokens kept per (layer, KV head).
    sinks : int
        First tokens every head keeps.
    block : int
        Buffer growth step (tokens).

    Examples
    --------
    >>> cache = GammaWindowCache([[64, 512]] * 2, sinks=4)          # doctest: +SKIP
    >>> with gamma_window_attention(model, cache):                 # doctest: +SKIP
    ...     out = model.generate(ids, max_new_tokens=100, **cache_kwargs(model, cache))
    """

    def __init__(self, windows: Sequence[Sequence[int]], sinks: int = 1, block: int = 256) -> None:
        super().__init__(layers=[GammaWindowLayer(w, sinks, block) for w in windows])

    @classmethod
    def from_plan(cls, plan: Any, model: Any | None = None, block: int = 256) -> GammaWindowCache:
        """The cache of a :class:`~gammalens.kv.plan.KVPlan`, checked against ``model``'s architecture."""
        if model is not None:
            check_model(model, plan.model)
        return cls(plan.window.tolist(), sinks=plan.sink_tokens, block=block)

    def nbytes(self) -> int:
        """Bytes held by every layer's tensors."""
        return sum(layer.nbytes() for layer in self.layers)

    def held_tokens(self) -> torch.Tensor:
        """(L, Hkv) tokens held per KV head."""
        return torch.stack([layer.held_tokens() for layer in self.layers])


def check_model(model: Any, facts: dict) -> None:
    """Raise :class:`KVError` unless ``model`` has the plan's architecture (type, layers, heads)."""
    cfg = getattr(model, "config", model)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    have = {"model_type": getattr(cfg, "model_type", None), "n_layers": getattr(cfg, "num_hidden_layers", None),
            "n_heads": getattr(cfg, "num_attention_heads", None),
            "n_kv_heads": getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", None)}
    for key, value in have.items():
        want = facts.get(key)
        if want is not None and value != want:
            raise KVError(f"the plan was measured on a {facts.get('model_type')} model with {key}={want}, "
                          f"but the model served has {key}={value}; measure this model and plan again")
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True) and \
            any(t == "sliding_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        raise KVError("models with sliding-window layers are not supported by the γ-window cache yet")
