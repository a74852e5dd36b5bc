"""The selected-subset KV cache: per KV head, chosen prefill tokens + a window of the later ones.

Checked against eager float64 attention over the whole sequence with exactly the dropped keys masked (1e-5 on
the logits), against a DynamicCache when every key is kept (1e-5), and its bytes against its definition (kept
tokens × 2 × head_dim × 4 bytes, nothing else). ``select_keep`` is checked against a brute-force sort.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gammalens.kv.attention import gamma_window_attention  # noqa: E402
from gammalens.kv.cache import cache_kwargs  # noqa: E402
from gammalens.kv.selected import SelectedCache, select_keep  # noqa: E402
from gammalens.kv.tails import KVError  # noqa: E402
from tests.test_kv_cache import make_model, registered_attention  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error:.*past_key_values.*:FutureWarning")


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request):
    return make_model(request.param)


def eager_selected_attention(n, keep, windows):
    """Eager float64 attention: queries < n see every earlier key (the full prefill); a query i ≥ n sees the kept
    prefill keys of its KV head and the later keys j with n ≤ j ≤ i and i − j < W_h."""

    def attn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        b, hq, m, _ = query.shape
        n_kv = key.shape[1]
        group = hq // n_kv
        i = torch.arange(m)[:, None]
        j = torch.arange(key.shape[2])[None, :]
        visible = torch.zeros(b, n_kv, m, key.shape[2], dtype=torch.bool)
        for h in range(n_kv):
            pinned = torch.zeros(b, key.shape[2], dtype=torch.bool)
            pinned.scatter_(1, keep[module.layer_idx][h].expand(b, -1), True)
            later = (j >= n) & (j <= i) & (i - j < windows[module.layer_idx][h])
            visible[:, h] = torch.where(i < n, j <= i, pinned[:, None, :] | later)
        k = key.repeat_interleave(group, 1).double()
        v = value.repeat_interleave(group, 1).double()
        scores = (query.double() @ k.transpose(-1, -2)) * scaling
        scores = scores.masked_fill(~visible.repeat_interleave(group, 1), float("-inf"))
        out = scores.softmax(-1) @ v
        return out.to(query.dtype).transpose(1, 2).contiguous(), None

    return attn


def prefill_then_decode(model, ids, n, keep, windows, chunk=1):
    """Logits (B, m − n, V) of ids[:, n:] fed ``chunk`` tokens at a time into the selected cache of ids[:, :n]."""
    dyn = transformers.DynamicCache()
    with torch.no_grad():
        model(ids[:, :n], **cache_kwargs(model, dyn), use_cache=True)
    cache = SelectedCache.from_prefill([(layer.keys, layer.values) for layer in dyn.layers], keep, windows, block=3)
    outs = []
    with torch.no_grad(), gamma_window_attention(model, cache):
        for t in range(n, ids.shape[1], chunk):
            outs.append(model(ids[:, t:t + chunk], **cache_kwargs(model, cache), use_cache=True).logits)
    return torch.cat(outs, 1), cache


def assert_decodes_as_eager(model, cache, ids, n, keep, windows):
    """ids[:, n:] decoded one token at a time through ``cache`` equals the eager masking reference (1e-5)."""
    outs = []
    with torch.no_grad(), gamma_window_attention(model, cache):
        for t in range(n, ids.shape[1]):
            outs.append(model(ids[:, t:t + 1], **cache_kwargs(model, cache), use_cache=True).logits)
    with torch.no_grad(), registered_attention(model, eager_selected_attention(n, keep, windows)):
        ref = model(ids).logits[:, n:]
    got = torch.cat(outs, 1)
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), float((got - ref).abs().max())


@pytest.mark.parametrize("chunk", [1, 5])
def test_the_selected_cache_is_the_eager_masking_reference(model, chunk):
    b, n, m = 2, 24, 36
    ids = torch.randint(0, 97, (b, m), generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    counts = [[3, 24], [1, 10]]  # one head of layer 0 keeps everything, one of layer 1 a single token
    keep = [[torch.randperm(n, generator=g)[:c].sort().values.expand(b, -1) if c < n else torch.arange(n).expand(b, -1)
             for c in layer] for layer in counts]
    keep[1][1] = torch.stack([torch.randperm(n, generator=g)[:10].sort().values for _ in range(b)])  # per row
    windows = [[4, 100], [1, 7]]
    got, cache = prefill_then_decode(model, ids, n, keep, windows, chunk=chunk)
    with torch.no_grad(), registered_attention(model, eager_selected_attention(n, keep, windows)):
        ref = model(ids).logits[:, n:]
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), float((got - ref).abs().max())
    later = m - n
    want = [[c + min(w, later) for c, w in zip(cs, ws, strict=True)] for cs, ws in zip(counts, windows, strict=True)]
    assert cache.held_tokens().tolist() == want
    kept_bytes = sum(counts[0] + counts[1]) * b * 2 * 16 * 4  # fp32 keys + values, head_dim 16
    ring_bytes = sum(layer.tail.nbytes() for layer in cache.layers)
    assert cache.nbytes() == kept_bytes + ring_bytes
    assert cache.get_seq_length() == m


def test_keeping_every_key_is_the_dynamic_cache(model):
    n, m = 20, 30
    ids = torch.randint(0, 97, (1, m), generator=torch.Generator().manual_seed(7))
    keep = [[torch.arange(n)] * 2] * 2
    got, _ = prefill_then_decode(model, ids, n, keep, [[m, m]] * 2)
    with torch.no_grad():
        ref = model(ids).logits[:, n:]
    assert torch.allclose(got, ref, atol=1e-5, rtol=0)


def test_select_keep_is_sinks_then_recent_then_the_best_scores():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 2, 40, generator=g)
    keep = select_keep(scores, [12, 40], sinks=2, recent=3)
    assert keep[1].tolist() == [list(range(40))] * 3
    for row in range(3):
        forced = {0, 1, 37, 38, 39}
        rest = sorted((p for p in range(40) if p not in forced), key=lambda p: -float(scores[row, 0, p]))[:7]
        assert keep[0][row].tolist() == sorted(forced | set(rest))
    # fewer tokens than forced ones: sinks first, then the most recent
    assert select_keep(scores, [3, 1], sinks=2, recent=3)[0].tolist() == [[0, 1, 39]] * 3
    assert select_keep(scores, [3, 1], sinks=2, recent=3)[1].tolist() == [[0]] * 3


def test_bad_input():
    k = torch.zeros(1, 2, 8, 4)
    with pytest.raises(KVError, match="KV heads"):
        SelectedCache.from_prefill([(k, k)], [[torch.arange(3)]], [[2, 2]])
    with pytest.raises(KVError, match=r"in \[0, 8\)"):
        SelectedCache.from_prefill([(k, k)], [[torch.tensor([0, 8]), torch.arange(2)]], [[2, 2]])
    with pytest.raises(KVError, match="repeated"):
        SelectedCache.from_prefill([(k, k)], [[torch.tensor([1, 1]), torch.arange(2)]], [[2, 2]])
    with pytest.raises(KVError, match="at least 1"):
        SelectedCache.from_prefill([(k, k)], [[torch.arange(2), torch.arange(2)]], [[0, 2]])
    with pytest.raises(KVError, match="scores must be"):
        select_keep(torch.zeros(2, 8), [1, 1])
    with pytest.raises(KVError, match="≥ 0"):
        select_keep(torch.zeros(1, 2, 8), [1, -1])


def test_from_plan_fills_each_heads_budget_and_retrieval_heads_keep_everything(model):
    """A hybrid plan's budgets: a retrieval head keeps the whole prefill, a streaming head sinks + W_h tokens, the
    sinks among them; decoding through it is the eager reference with exactly those keys."""
    import numpy as np

    from gammalens.kv.plan import PlanConfig, plan_from_tails
    from tests.test_kv_hybrid import GAMMA, MODEL, RETRIEVAL
    from tests.test_kv_plan import synthetic_tails

    n, m, sinks = 40, 48, 2
    plan = plan_from_tails(MODEL, synthetic_tails(GAMMA, horizon=64, sink_tokens=sinks), PlanConfig(
        ratio=0.5, context=n, policy="hybrid", retrieval_share=0.5), retrieval=RETRIEVAL)
    assert plan.retrieval.any() and not plan.retrieval.all()
    ids = torch.randint(0, 97, (1, m), generator=torch.Generator().manual_seed(8))
    dyn = transformers.DynamicCache()
    with torch.no_grad():
        model(ids[:, :n], **cache_kwargs(model, dyn), use_cache=True)
    kv = [(layer.keys, layer.values) for layer in dyn.layers]
    scores = [torch.randn(1, 2, n, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    cache = SelectedCache.from_plan(plan, kv, scores)
    for li, layer in enumerate(cache.layers):
        assert layer.kept.tolist() == np.minimum(plan.tokens[li], n).tolist()
    keep = [select_keep(sc, np.minimum(plan.tokens[li], n).tolist(), sinks=sinks) for li, sc in enumerate(scores)]
    for li in range(2):
        for h in range(2):
            assert keep[li][h][0, :sinks].tolist() == list(range(sinks))
            if plan.retrieval[li, h]:
                assert keep[li][h].tolist() == [list(range(n))]
    assert_decodes_as_eager(model, cache, ids, n, keep, plan.window.tolist())
