"""Head-to-head harness: one prefill per sample, every press applied to the same captured prefill.

kvpress presses compress in a forward hook *after* each attention layer has run on the full context, so
the prefill's computation is the same for every press. We therefore run the prefill once with a
DynamicCache, capture what each layer's hook would receive (hidden states, keys, values, kwargs), and call
``press.compress`` on it exactly as ``BasePress.forward_hook`` does — the cache each press leaves behind
is identical to the one kvpress's pipeline would leave — then evaluate the continuation / question on it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Captured:
    """The prefill as every attention hook saw it: per layer (hidden_states, keys, values, kwargs)."""

    layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]]
    n: int
    last_logits: torch.Tensor  # (B, V)


def capture_prefill(model: Any, ids: torch.Tensor) -> Captured:
    from transformers import DynamicCache

    seen: dict[int, tuple] = {}
    hooks = []

    def hook(module, args, kwargs, output):
        seen[module.layer_idx] = (kwargs["hidden_states"], dict(kwargs))

    for layer in model.model.layers:
        hooks.append(layer.self_attn.register_forward_hook(hook, with_kwargs=True))
    cache = DynamicCache()
    try:
        with torch.no_grad():
            out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    finally:
        for h in hooks:
            h.remove()
    layers = []
    for i in range(len(model.model.layers)):
        hs, kw = seen[i]
        kw = {k: v for k, v in kw.items() if k != "past_key_values"}
        layers.append((hs, cache.layers[i].keys, cache.layers[i].values, kw))
    return Captured(layers=layers, n=ids.shape[1], last_logits=out.logits[:, -1])


def apply_press(model: Any, press: Any, cap: Captured) -> Any:
    """The DynamicCache ``press`` leaves after the captured prefill (None: the full cache)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    modules = [layer.self_attn for layer in model.model.layers]
    for m in modules:
        m.masked_key_indices = None
    # press(model) runs post_init_from_model and attaches what presses read (rotary_emb); its hooks stay idle
    with torch.no_grad(), press(model) if press is not None else contextlib.nullcontext():
        for i, (hs, k, v, kw) in enumerate(cap.layers):
            if press is not None:
                k, v = press.compress(modules[i], hs, k, v, None, kw)
            cache.update(k.contiguous(), v.contiguous(), i)
    return cache


def window_cache(model: Any, plan: Any, cap: Captured) -> Any:
    """The :class:`~gammalens.kv.cache.GammaWindowCache` of ``plan`` after the captured prefill.

    Every layer's keys and values go in through ``update`` in one call, as a one-chunk prefill with full
    attention would put them (kvpress's setting: the prefill attends to everything, the cache is what is
    left); what it holds is real storage: sinks + each head's window, bytes on its tensors.
    """
    from gammalens.kv.cache import GammaWindowCache

    cache = GammaWindowCache.from_plan(plan, model, block=256)
    for i, (_hs, k, v, _kw) in enumerate(cap.layers):
        cache.layers[i].update(k, v)
    return cache


def uniform_counts(plan: Any, n: int) -> np.ndarray:
    """(L, Hkv) tokens per head of ``plan``'s budget at context n with the water-filling replaced by an equal split:
    retrieval heads keep all n, every other head an equal share of the rest (the remainder one token each to the
    first heads), so the total is the plan's. The ablation of the per-head allocation inside the hybrid."""
    tokens = np.minimum(plan.tokens, n)
    retrieval = plan.retrieval if plan.retrieval is not None else np.zeros(tokens.shape, bool)
    rest = int(tokens.sum()) - int(retrieval.sum()) * n
    m = int((~retrieval).sum())
    counts = np.full(tokens.shape, n, dtype=np.int64)
    if m:
        share = np.full(m, rest // m, dtype=np.int64)
        share[: rest - int(share.sum())] += 1
        counts[~retrieval] = share
    return counts


def selected_cache(model: Any, plan: Any, cap: Captured, scorer: Any, recent: int = 0, uniform: bool = False) -> Any:
    """The :class:`~gammalens.kv.selected.SelectedCache` of ``plan``'s per-head budgets after the captured prefill.

    Each KV head keeps min(n, sinks + W_h) prefill tokens (the plan's budget: the whole context for a retrieval
    head): the sinks, the last ``recent`` tokens, then the keys ``scorer`` (a kvpress ScorerPress, e.g.
    ExpectedAttention) scores highest, computed on the same captured prefill as the presses; later tokens go to a
    ring of W_h. Real storage: the kept keys and values are gathered, the rest is not held.
    """
    from gammalens.kv.selected import SelectedCache, select_keep

    modules = [layer.self_attn for layer in model.model.layers]
    with torch.no_grad(), scorer(model):  # scorer(model) attaches what kvpress scorers read (rotary_emb)
        scores = [scorer.score(modules[i], hs, k, v, None, kw) for i, (hs, k, v, kw) in enumerate(cap.layers)]
    kv = [(k, v) for _hs, k, v, _kw in cap.layers]
    if not uniform:
        return SelectedCache.from_plan(plan, kv, scores, recent=recent, model=model)
    counts = uniform_counts(plan, cap.n)
    keep = [select_keep(sc, c.tolist(), sinks=plan.sink_tokens, recent=recent) for sc, c in zip(scores, counts, strict=True)]
    windows = np.maximum(1, counts - plan.sink_tokens).tolist()
    return SelectedCache.from_prefill(kv, keep, windows, block=256, model=model, facts=plan.model)


def window_cache_stats(cache: Any, n: int) -> dict[str, float]:
    """Bytes held by a GammaWindowCache's or SelectedCache's tensors (keys and values) and its tokens."""
    held = int(cache.held_tokens().sum())
    full = n * int(cache.held_tokens().numel()) * cache.layers[0].keys.shape[0]
    return {"held_bytes": cache.nbytes(), "held_tokens": held, "kept_tokens": held, "full_tokens": full,
            "kept_fraction": held / full}


def _exact_masked_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """SDPA over [compressed context, new tokens] with each press's per-head masked keys removed exactly.

    kvpress replaces masked keys by a fake key whose logit should underflow; that needs a half-space that
    holds every query of the call, which does not exist for a 256-token continuation (kvpress raises), and
    is approximate for a few tokens (3e-2 in the logits on a 20-token chunk, tests/test_kv_press.py). Here
    the same decisions are applied as a boolean mask: exact for any number of queries.
    """
    b, hq, q, _ = query.shape
    n_kv, k_len = key.shape[1], key.shape[2]
    m = k_len - q  # compressed context length
    j = torch.arange(k_len)
    visible = ((j[None, :] < m) | (j[None, :] - m <= torch.arange(q)[:, None]))  # (q, K) causal over new tokens
    visible = visible[None, None].expand(b, n_kv, q, k_len).clone()
    idx = getattr(module, "masked_key_indices", None)
    if idx is not None:
        bi, hi, si = idx
        visible[bi, hi, :, si] = False
    group = hq // n_kv
    key, value = key.repeat_interleave(group, 1), value.repeat_interleave(group, 1)
    visible = visible.repeat_interleave(group, 1)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=visible, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def exact_masking(model):
    """Evaluate compressed caches with :func:`_exact_masked_attention` (registered, then removed)."""
    from transformers.modeling_utils import AttentionInterface

    previous = model.config._attn_implementation
    AttentionInterface.register("kv_bench_exact_mask", _exact_masked_attention)
    try:
        model.set_attn_implementation("kv_bench_exact_mask")
        yield
    finally:
        model.set_attn_implementation(previous)
        AttentionInterface._global_mapping.pop("kv_bench_exact_mask", None)


def cache_stats(model: Any, cache: Any, n: int) -> dict[str, float]:
    """Real bytes held by the cache tensors, and tokens attended (held minus per-head masked)."""
    held_bytes = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    held = sum(layer.keys.shape[0] * layer.keys.shape[1] * layer.keys.shape[2] for layer in cache.layers)
    masked = 0
    for layer in model.model.layers:
        idx = getattr(layer.self_attn, "masked_key_indices", None)
        if idx is not None:
            masked += len(idx[0])
    n_kv = cache.layers[0].keys.shape[1] * len(cache.layers) * cache.layers[0].keys.shape[0]
    return {"held_bytes": held_bytes, "held_tokens": held, "kept_tokens": held - masked,
            "full_tokens": n * n_kv, "kept_fraction": (held - masked) / (n * n_kv)}


def continuation_nll(model: Any, cache: Any, n: int, cont: torch.Tensor) -> float:
    """Mean NLL (nats/token) of ``cont`` (B, m) given the compressed context of n tokens (positions n..)."""
    pos = torch.arange(n, n + cont.shape[1]).unsqueeze(0)
    with torch.no_grad():
        logits = model(cont, past_key_values=cache, position_ids=pos, use_cache=True).logits  # (B, m, V)
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    return float(-logp.gather(-1, cont[:, 1:, None]).mean())


def generate(model: Any, cache: Any, n: int, question: torch.Tensor, max_new_tokens: int,
             eos: int | None = None, done: Any = None) -> tuple[list[int], float]:
    """Greedy answer after the question (kvpress pipeline's loop); returns (ids, seconds per output token).

    ``done(ids) -> bool`` stops early once the answer is complete (the score cannot change after it)."""
    pos = torch.arange(n, n + question.shape[1]).unsqueeze(0)
    out_ids: list[int] = []
    with torch.no_grad():
        logits = model(question, past_key_values=cache, position_ids=pos, logits_to_keep=1).logits
        nxt = int(logits[0, -1].argmax())
        out_ids.append(nxt)
        p = n + question.shape[1]
        t0 = time.perf_counter()
        for i in range(max_new_tokens - 1):
            logits = model(torch.tensor([[nxt]]), past_key_values=cache, position_ids=torch.tensor([[p + i]])).logits
            nxt = int(logits[0, -1].argmax())
            out_ids.append(nxt)
            if (eos is not None and nxt == eos) or (done is not None and done(out_ids)):
                break
        steps = max(1, len(out_ids) - 1)
    return out_ids, (time.perf_counter() - t0) / steps


def duo_scores(model: Any, texts_ids: list[torch.Tensor], q_len: int = 500) -> np.ndarray:
    """DuoAttention's on-the-fly head scores (kvpress ``duo_attention_on_the_fly``) on local text.

    kvpress samples BookSum from the Hub, unreachable here; this is the same computation on our token ids:
    mean query and key per head, repeated q_len times and rotated, area under the last query's cumulative
    attention curve, averaged over samples. Shape (layers, kv_heads).
    """
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    cfg = model.config
    groups = cfg.num_attention_heads // cfg.num_key_value_heads
    scores = torch.zeros(cfg.num_hidden_layers, cfg.num_key_value_heads)
    position_ids = torch.arange(q_len).unsqueeze(0)
    for ids in texts_ids:
        with torch.no_grad():
            hidden = list(model(ids, output_hidden_states=True).hidden_states[:-1])
            for li, h in enumerate(hidden):
                block = model.model.layers[li]
                d = block.self_attn.head_dim
                h = block.input_layernorm(h)
                q = block.self_attn.q_proj(h).view(1, h.shape[1], -1, d).mean(1, keepdim=True)
                k = block.self_attn.k_proj(h).view(1, h.shape[1], -1, d).mean(1, keepdim=True)
                q = q.repeat(1, q_len, 1, 1).transpose(1, 2)
                k = k.repeat(1, q_len, 1, 1).transpose(1, 2)
                cos, sin = model.model.rotary_emb(h, position_ids)
                q, k = apply_rotary_pos_emb(q, k, cos, sin)
                k = k.repeat_interleave(groups, dim=1)
                w = (torch.matmul(q[:, :, -1:], k.transpose(2, 3)) / d**0.5).softmax(-1, dtype=torch.float32).squeeze()
                s = torch.cumsum(w, dim=1).mean(1).view(-1, groups).mean(1)
                scores[li] += s / len(texts_ids)
    return scores.numpy()
