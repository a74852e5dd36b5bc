"""The native content score (ExpectedAttention's formula) and the selected-subset prefill that uses it.

The score is checked in float64 against its definition written out independently (queries from the q_proj
weights by hand, NumPy mean and covariance, the averaged rotation built from transformers' own
``apply_rotary_pos_emb`` on the unit vectors, position by position): 1e-9 relative. Where kvpress is installed
(the transformers-5.2 venv) it is also checked against ``ExpectedAttentionPress.score`` in float32: 1e-5
relative. The prefill is checked to keep exactly ``select_keep`` of those scores, and decoding through its cache
against eager float64 attention with exactly the dropped keys masked (1e-5 on the logits).
"""

from __future__ import annotations

import copy
import importlib.util

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
np = pytest.importorskip("numpy")

from gammalens.kv.cache import cache_kwargs  # noqa: E402
from gammalens.kv.score import expected_attention_score, selected_prefill  # noqa: E402
from gammalens.kv.selected import select_keep  # noqa: E402
from gammalens.kv.tails import KVError  # noqa: E402
from tests.test_kv_cache import make_model  # noqa: E402
from tests.test_kv_selected import assert_decodes_as_eager  # noqa: E402


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request):
    return make_model(request.param)


def prefill(model, ids):
    """Per layer: (attention input hidden states, cached keys, cached values) of a full-attention prefill."""
    seen = {}

    def hook(module, args, kwargs, output):
        seen[module.layer_idx] = kwargs["hidden_states"]

    handles = [layer.self_attn.register_forward_hook(hook, with_kwargs=True) for layer in model.model.layers]
    dyn = transformers.DynamicCache()
    try:
        with torch.no_grad():
            model(ids, **cache_kwargs(model, dyn), use_cache=True)
    finally:
        for h in handles:
            h.remove()
    return [(seen[i], layer.keys, layer.values) for i, layer in enumerate(dyn.layers)]


def reference_score(module, rotary, hs, keys, values, future, sinks):
    """The module docstring's definition, in float64 NumPy, one query head at a time."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    d = module.head_dim
    h = hs[0, sinks:].double().numpy()
    w = module.q_proj.weight.detach().double().numpy()
    bias = module.q_proj.bias.detach().double().numpy() if module.q_proj.bias is not None else 0.0
    queries = h @ w.T + bias  # (s, Hq·d)
    n = keys.shape[2]
    eye = torch.eye(d, dtype=torch.float64)[None, None]  # (1, 1, d, d): the unit vectors as d "tokens"
    rot = np.zeros((d, d))
    for p in range(n, n + future):
        cos, sin = rotary(eye, torch.tensor([[p] * d]))
        rotated, _ = apply_rotary_pos_emb(eye, eye, cos.double(), sin.double())
        rot += rotated[0, 0].numpy().T / future  # column j: unit vector j rotated to position p
    hq, hkv = queries.shape[1] // d, keys.shape[1]
    k = keys[0].double().numpy()
    v = values[0].double().numpy()
    out = np.zeros((hkv, n))
    for head in range(hq):
        q = queries[:, head * d:(head + 1) * d]
        mu = rot @ q.mean(0)
        cov = rot @ np.cov(q.T, bias=True) @ rot.T
        kh = k[head // (hq // hkv), sinks:]
        z = kh @ mu / np.sqrt(d) + np.einsum("ni,ij,nj->n", kh, cov, kh) / (2 * d)
        e = np.exp(z - z.max())
        out[head // (hq // hkv), sinks:] += e / e.sum() / (hq // hkv)
    out[:, sinks:] *= np.linalg.norm(v[:, sinks:], axis=-1)
    out[:, :sinks] = out[:, sinks:].max() + 1
    return out


def test_the_score_is_its_definition_in_float64(model):
    m = copy.deepcopy(model).double()
    ids = torch.randint(0, 97, (1, 30), generator=torch.Generator().manual_seed(5))
    rotary = m.model.rotary_emb
    for li, (hs, k, v) in enumerate(prefill(m, ids)):
        module = m.model.layers[li].self_attn
        got = expected_attention_score(module, rotary, hs, k, v, future=16, sinks=4)
        ref = reference_score(module, rotary, hs, k, v, future=16, sinks=4)
        assert got.shape == (1, k.shape[1], 30)
        np.testing.assert_allclose(got[0].numpy(), ref, rtol=1e-9, atol=0)


@pytest.mark.skipif(importlib.util.find_spec("kvpress") is None, reason="kvpress (optional extra) not installed")
def test_the_score_is_kvpress_expected_attention(model):
    from kvpress import ExpectedAttentionPress

    ids = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(6))
    press = ExpectedAttentionPress(compression_ratio=0.5)
    layers = prefill(model, ids)  # outside the press: inside it, its hooks would compress the cache
    with torch.no_grad(), press(model):  # attaches rotary_emb to the attention modules, as kvpress's pipeline does
        for li, (hs, k, v) in enumerate(layers):
            module = model.model.layers[li].self_attn
            want = press.score(module, hs, k, v, None, {})
            got = expected_attention_score(module, model.model.rotary_emb, hs, k, v)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_the_selected_prefill_keeps_the_best_scored_keys_and_decodes_as_the_eager_reference(model):
    from gammalens.kv.plan import PlanConfig, plan_from_tails
    from tests.test_kv_hybrid import GAMMA, MODEL, RETRIEVAL
    from tests.test_kv_plan import synthetic_tails

    n, m, sinks = 40, 48, 2
    facts = dict(MODEL, model_type=model.config.model_type)  # the plan must be of the model served
    plan = plan_from_tails(facts, synthetic_tails(GAMMA, horizon=64, sink_tokens=sinks), PlanConfig(
        ratio=0.5, context=n, policy="hybrid", retrieval_share=0.5), retrieval=RETRIEVAL)
    ids = torch.randint(0, 97, (1, m), generator=torch.Generator().manual_seed(8))
    cache, last = selected_prefill(model, ids[:, :n], plan, future=32, sinks=4)
    with torch.no_grad():
        full = model(ids[:, :n]).logits[:, -1]
    torch.testing.assert_close(last, full, rtol=0, atol=1e-5)
    keep = []
    for li, (hs, k, v) in enumerate(prefill(model, ids[:, :n])):
        sc = expected_attention_score(model.model.layers[li].self_attn, model.model.rotary_emb, hs, k, v,
                                      future=32, sinks=4)
        keep.append(select_keep(sc, np.minimum(plan.tokens[li], n).tolist(), sinks=sinks))
        assert cache.layers[li].kept.tolist() == np.minimum(plan.tokens[li], n).tolist()
    assert_decodes_as_eager(model, cache, ids, n, keep, plan.window.tolist())


def test_bad_input(model):
    hs, k, v = prefill(model, torch.randint(0, 97, (1, 4)))[0]
    module, rotary = model.model.layers[0].self_attn, model.model.rotary_emb
    with pytest.raises(KVError, match="more than sinks = 4"):
        expected_attention_score(module, rotary, hs, k, v, sinks=4)
    with pytest.raises(KVError, match="future positions"):
        expected_attention_score(module, rotary, hs, k, v, sinks=1, future=0)
    with pytest.raises(KVError, match="not those of the 4 cached tokens"):
        expected_attention_score(module, rotary, hs[:, :3], k, v, sinks=1)
    with pytest.raises(KVError, match="q_proj"):
        expected_attention_score(object(), rotary, hs, k, v, sinks=1)
