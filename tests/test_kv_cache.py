"""γ-window cache: full windows = DynamicCache; small windows = an eager reference masking the evicted keys.

Random-init Llama and Qwen2 GQA models (4 query heads over 2 KV heads); prefill in one chunk, in several
chunks, and token-by-token decoding; bytes held by the cache tensors against the expected count.
"""

from __future__ import annotations

import contextlib

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gammalens.kv.attention import gamma_window_attention, prefill, registered  # noqa: E402
from gammalens.kv.cache import GammaWindowCache, cache_kwargs, check_model  # noqa: E402
from gammalens.kv.tails import KVError  # noqa: E402

# the cache goes in under the keyword the installed transformers takes: its deprecated name would warn
pytestmark = pytest.mark.filterwarnings("error:.*past_key_values.*:FutureWarning")

DIMS = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512)


def make_model(kind):
    torch.manual_seed(0)
    if kind == "llama":
        cfg = transformers.LlamaConfig(**DIMS, rope_theta=1000.0)
        model = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.Qwen2Config(**DIMS, rope_theta=1000.0, use_sliding_window=False)
        model = transformers.Qwen2ForCausalLM(cfg)
    return model.eval()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request):
    return make_model(request.param)


def eager_window_attention(windows, sinks):
    """Full n×n eager attention with exactly the evicted keys masked: j ≤ i and (j < sinks or i − j < W_h)."""

    def attn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        _b, hq, n, _d = query.shape
        group = hq // key.shape[1]
        k = key.repeat_interleave(group, 1).double()
        v = value.repeat_interleave(group, 1).double()
        w = torch.tensor(windows[module.layer_idx]).repeat_interleave(group)  # (Hq,)
        i = torch.arange(n)[:, None]
        j = torch.arange(key.shape[2])[None, :]
        visible = (j <= i)[None] & ((j < sinks)[None] | ((i - j)[None] < w[:, None, None]))  # (Hq, n, K)
        scores = query.double() @ k.transpose(-1, -2) * scaling
        scores = scores.masked_fill(~visible[None], float("-inf"))
        out = scores.softmax(-1) @ v  # (B, Hq, n, d)
        return out.to(query.dtype).transpose(1, 2).contiguous(), None

    return attn


@contextlib.contextmanager
def registered_attention(model, fn, name="test_kv_reference"):
    """Run ``model`` with the attention function ``fn`` (registered under ``name``, removed on exit)."""
    from transformers.modeling_utils import AttentionInterface

    previous = model.config._attn_implementation
    AttentionInterface.register(name, fn)
    try:
        model.set_attn_implementation(name)
        yield
    finally:
        model.set_attn_implementation(previous)
        AttentionInterface._global_mapping.pop(name, None)


def reference(model, windows, sinks):
    """The eager window-masking reference installed on ``model`` (a context manager)."""
    return registered_attention(model, eager_window_attention(windows, sinks))


def run_cache(model, ids, cache, split):
    """Logits (B, n, V): prefill ids[:, :split] in one call, then one token at a time."""
    outs = []
    with torch.no_grad(), gamma_window_attention(model, cache):
        outs.append(model(ids[:, :split], **cache_kwargs(model, cache), use_cache=True).logits)
        for t in range(split, ids.shape[1]):
            outs.append(model(ids[:, t:t + 1], **cache_kwargs(model, cache), use_cache=True).logits)
    return torch.cat(outs, 1)


def test_full_windows_equal_the_dynamic_cache(model):
    ids = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cache = transformers.DynamicCache()
        ref = [model(ids[:, :20], **cache_kwargs(model, cache), use_cache=True).logits]
        for t in range(20, 32):
            ref.append(model(ids[:, t:t + 1], **cache_kwargs(model, cache), use_cache=True).logits)
    got = run_cache(model, ids, GammaWindowCache([[10**6, 10**6]] * 2, sinks=1, block=8), split=20)
    assert torch.allclose(got, torch.cat(ref, 1), atol=1e-5, rtol=0)
    assert registered() == []


@pytest.mark.parametrize("windows, sinks, split", [
    ([[3, 9], [5, 1]], 1, 30),    # per-head windows, one prefill chunk longer than every window
    ([[7, 2], [4, 12]], 4, 1),   # all decoding, four sinks
    ([[6, 6], [11, 3]], 0, 17),  # no sinks
])
def test_small_windows_equal_the_eager_masking_reference(model, windows, sinks, split):
    ids = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), reference(model, windows, sinks):
        ref = model(ids).logits
    got = run_cache(model, ids, GammaWindowCache(windows, sinks=sinks, block=4), split=split)
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), float((got - ref).abs().max())


def test_chunked_prefill_matches_the_reference_and_bounds_memory(model):
    windows, sinks = [[5, 13], [8, 2]], 2
    ids = torch.randint(0, 97, (1, 90), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), reference(model, windows, sinks):
        ref = model(ids).logits[:, -1]
    cache = GammaWindowCache(windows, sinks=sinks, block=1)
    with gamma_window_attention(model, cache):
        last = prefill(model, ids, cache, chunk=16)
    assert torch.allclose(last, ref, atol=1e-5, rtol=0)
    # bytes: keys + values (B=1, head_dim 16, fp32) of sinks + W_h slots per head, and nothing else
    slots = sum(sinks + w for layer in windows for w in layer)
    assert cache.nbytes() == slots * 2 * 16 * 4
    assert cache.held_tokens().tolist() == [[sinks + w for w in layer] for layer in windows]


def test_bytes_grow_in_blocks_and_stay_bounded_during_generation(model):
    windows, sinks, block = [[20, 50], [3, 33]], 1, 16
    cache = GammaWindowCache(windows, sinks=sinks, block=block)
    ids = torch.randint(0, 97, (1, 10))
    per_slot = 2 * 16 * 4  # fp32 keys + values of head_dim 16: nothing else is stored
    with torch.no_grad(), gamma_window_attention(model, cache):
        model(ids, **cache_kwargs(model, cache), use_cache=True)
        expect = sum(min(sinks + w, 16) for layer in windows for w in layer)  # 10 tokens → one 16-token block
        assert cache.nbytes() == expect * per_slot
    cache = GammaWindowCache(windows, sinks=sinks, block=block)
    with torch.no_grad(), gamma_window_attention(model, cache):
        out = model.generate(ids, **cache_kwargs(model, cache), max_new_tokens=60, do_sample=False,
                             min_new_tokens=60, pad_token_id=0)
    assert out.shape[1] == 70 and cache.get_seq_length() == 69
    assert cache.nbytes() == sum(sinks + w for layer in windows for w in layer) * per_slot


def test_generate_with_full_windows_equals_dynamic_cache(model):
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=0)
        cache = GammaWindowCache([[1000, 1000]] * 2, sinks=1)
        with gamma_window_attention(model, cache):
            got = model.generate(ids, **cache_kwargs(model, cache), max_new_tokens=20, do_sample=False, pad_token_id=0)
    assert got.tolist() == ref.tolist()


def test_bad_input(model):
    with pytest.raises(KVError, match="at least 1 token"):
        GammaWindowCache([[0, 4]] * 2)
    cache = GammaWindowCache([[4, 4, 4]] * 2)
    with pytest.raises(KVError, match="KV heads"), torch.no_grad(), gamma_window_attention(model, cache):
        model(torch.zeros(1, 4, dtype=torch.long), **cache_kwargs(model, cache), use_cache=True)
    assert registered() == []
    with pytest.raises(KVError, match="n_kv_heads=3"):
        check_model(model, {"model_type": model.config.model_type, "n_layers": 2, "n_kv_heads": 3})
    with pytest.raises(KVError, match="model_type"):
        check_model(model, {"model_type": "gpt2"})

