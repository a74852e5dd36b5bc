"""A content score per prefill key, and the selected-subset prefill that uses it — no kvpress needed.

The hybrid policy's streaming heads fill their budget with the prefill keys a content score ranks highest
(:class:`~gammalens.kv.selected.SelectedCache`). The score here is ExpectedAttention's (Devoto et al., NVIDIA
kvpress ``ExpectedAttentionPress``, defaults ``n_future_positions = 512``, ``n_sink = 4``), computed with the
same formula so that a gammalens user gets the head-to-head's winning policy from gammalens alone:

1. the pre-RoPE queries q_t of the prefill's tokens t ≥ n_sink (the first tokens carry outliers), per query
   head: mean μ (d,) and population covariance Σ (d, d);
2. the rotation R̄ = (1/F) Σ_{p=n}^{n+F−1} R_p, the RoPE rotation averaged over the next F positions, applied
   as μ̄ = R̄ μ and Σ̄ = R̄ Σ R̄ᵀ;
3. for a key k_j (after RoPE, as cached), the log of the expected unnormalised attention of a Gaussian query,
   z_j = μ̄ᵀk_j / √d + k_jᵀ Σ̄ k_j / (2d), softmaxed over the non-sink keys j ≥ n_sink of that query head;
4. averaged over the query heads of each KV head, times ‖v_j‖₂; the n_sink first keys get max + 1 (always
   kept first).

Shapes follow ``transformers``: hidden states (B, n, hidden), keys and values (B, Hkv, n, d). The score is
dimensionless and ranks keys within one (row, KV head); only its order matters to :func:`select_keep`.
Only Llama-like attention (``q_proj``, an optional ``q_norm`` on the head dimension, full-head RoPE in the
``rotate_half`` layout) is supported; anything else raises :class:`~gammalens.kv.tails.KVError`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gammalens.kv.tails import KVError


def prerope_queries(module: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    """(B, Hq, s, d) queries of ``module`` before RoPE: ``q_proj``, split into heads, ``q_norm`` where the model has one."""
    if not hasattr(module, "q_proj"):
        raise KVError(f"the content score needs a q_proj projection; {type(module).__name__} has none")
    b, s, _ = hidden_states.shape
    d = module.head_dim
    q = module.q_proj(hidden_states)
    heads = q.shape[-1] // d
    q = q.view(b, s, heads, d).transpose(1, 2)
    norm = getattr(module, "q_norm", None)
    return norm(q) if norm is not None else q


def mean_rotation(rotary_emb: Any, like: torch.Tensor, start: int, future: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(d,) mean cos and mean sin of the RoPE angles at positions start … start + future − 1.

    RoPE in the ``rotate_half`` layout rotates x to x·cos + rotate_half(x)·sin, so the rotation averaged over
    positions is x ↦ x·mean(cos) + rotate_half(x)·mean(sin).
    """
    pos = torch.arange(start, start + future, device=like.device)[None]
    cos, sin = rotary_emb(like, pos)
    if cos.shape[-1] != like.shape[-1]:
        raise KVError(f"the content score needs RoPE over the whole head ({like.shape[-1]} dims); "
                      f"this model rotates {cos.shape[-1]}")
    return cos[0].mean(0), sin[0].mean(0)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), -1)


@torch.no_grad()
def expected_attention_score(module: Any, rotary_emb: Any, hidden_states: torch.Tensor, keys: torch.Tensor,
                             values: torch.Tensor, *, future: int = 512, sinks: int = 4) -> torch.Tensor:
    """ExpectedAttention's score of every prefill key (module docstring), shape (B, Hkv, n).

    Parameters
    ----------
    module : the layer's attention module (``q_proj``, ``head_dim``; ``q_norm`` if present).
    rotary_emb : the model's rotary embedding, called as ``rotary_emb(x, position_ids) → (cos, sin)``.
    hidden_states : Tensor, shape (B, n, hidden)
        The layer's attention input over the prefill.
    keys, values : Tensor, shape (B, Hkv, n, d)
        The layer's cached keys (after RoPE) and values.
    future : int
        F, the number of future positions the query statistics are rotated over.
    sinks : int
        The first ``sinks`` tokens: left out of the statistics and the softmax, scored max + 1.
    """
    b, hkv, n, d = keys.shape
    if n <= sinks:
        raise KVError(f"the content score needs more than sinks = {sinks} prefill tokens (got {n})")
    if hidden_states.shape[:2] != (b, n):
        raise KVError(f"hidden states {tuple(hidden_states.shape)} are not those of the {n} cached tokens of "
                      f"{b} rows (a cache compressed during the prefill?)")
    if future < 1:
        raise KVError(f"future positions must be ≥ 1 (got {future})")
    q = prerope_queries(module, hidden_states[:, sinks:])  # (B, Hq, n − sinks, d)
    hq = q.shape[1]
    if hq % hkv:
        raise KVError(f"{hq} query heads do not group over {hkv} KV heads")
    mu = q.mean(2)
    centred = q - mu[:, :, None]
    cov = centred.transpose(-1, -2) @ centred / q.shape[2]  # (B, Hq, d, d)
    cos, sin = mean_rotation(rotary_emb, mu, n, future)
    rot = torch.diag(cos) + torch.diag(sin) @ _rotate_half(torch.eye(d, dtype=cos.dtype, device=cos.device)).T
    mu = mu @ rot.T
    cov = rot @ cov @ rot.T
    k = keys[:, :, sinks:].repeat_interleave(hq // hkv, 1)  # (B, Hq, n − sinks, d)
    z = (k @ mu[..., None]).squeeze(-1) / math.sqrt(d) + ((k @ cov) * k).sum(-1) / (2 * d)
    score = z.softmax(-1).view(b, hkv, hq // hkv, n - sinks).mean(2) * values[:, :, sinks:].norm(dim=-1)
    return torch.nn.functional.pad(score, (sinks, 0), value=float(score.max()) + 1)


def selected_prefill(model: Any, ids: torch.Tensor, plan: Any, *, future: int = 512, sinks: int = 4,
                     recent: int = 0, block: int = 256) -> tuple[Any, torch.Tensor]:
    """Prefill ``ids`` with full attention and keep, per KV head, the plan's budget of best-scored keys.

    Each layer's keys are scored by :func:`expected_attention_score` as the prefill passes it (the hidden states
    are not kept), and the full cache is dropped once :meth:`SelectedCache.from_plan` has gathered what it keeps:
    a hybrid plan's retrieval heads keep the whole prefill, the other heads sinks + W_h tokens. The prefill's peak
    memory is that of a full cache.

    Parameters
    ----------
    model : a causal RoPE decoder with ``model.model.rotary_emb`` (Llama, Qwen2, Mistral, …).
    ids : LongTensor, shape (B, n)
    plan : :class:`~gammalens.kv.plan.KVPlan` of this model.

    Returns
    -------
    (SelectedCache, Tensor of shape (B, V)): the cache, and the logits of the prefill's last token.
    """
    import transformers

    from gammalens.kv.cache import cache_kwargs, check_model
    from gammalens.kv.selected import SelectedCache

    check_model(model, plan.model)
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    if rotary is None:
        raise KVError(f"{type(model).__name__} has no model.rotary_emb: the content score needs a RoPE decoder")
    layers = model.model.layers
    scores: dict[int, torch.Tensor] = {}
    dyn = transformers.DynamicCache()

    def hook(module, args, kwargs, output):
        i = module.layer_idx
        layer = dyn.layers[i]
        scores[i] = expected_attention_score(module, rotary, kwargs["hidden_states"], layer.keys, layer.values,
                                             future=future, sinks=sinks)

    handles = [layer.self_attn.register_forward_hook(hook, with_kwargs=True) for layer in layers]
    try:
        with torch.no_grad():
            out = model(ids, **cache_kwargs(model, dyn), use_cache=True, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    kv = [(layer.keys, layer.values) for layer in dyn.layers]
    cache = SelectedCache.from_plan(plan, kv, [scores[i] for i in range(len(layers))], recent=recent, block=block,
                                    model=model)
    return cache, out.logits[:, -1]
