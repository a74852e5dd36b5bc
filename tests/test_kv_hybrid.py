"""The hybrid KV policy: measured retrieval heads keep every key, the others get γ windows from the rest.

The plan is checked against its definition (top-k KV heads by the max over their query heads of echo + induction,
k = ⌊share · budget / T⌋; the remaining heads water-filled, which is optimal on convex power-law tails, so it
must equal the exact dynamic program); the cache it builds is checked against eager attention with exactly the
evicted keys masked (1e-5) and, at full budget, against a DynamicCache; bytes are read off the cache tensors.
"""

from __future__ import annotations

import numpy as np
import pytest

from gammalens.kv.allocate import allocate_exact
from gammalens.kv.plan import KVPlan, PlanConfig, plan_from_tails, plan_run, rank_retrieval
from gammalens.kv.tails import KVError
from tests.test_kv_plan import MODEL, run_cli, synthetic_tails

GAMMA = [[0.6, 1.3, 1.8, 0.9], [1.1, 2.2, 0.4, 1.5]]
ECHO = np.array([[0.02, 0.01, 0.30, 0.00], [0.05, 0.00, 0.01, 0.02]])
INDUCTION = np.array([[0.10, 0.00, 0.40, 0.05], [0.01, 0.02, 0.00, 0.70]])
FAR = np.array([[0.50, 0.10, 0.01, 0.02], [0.03, 0.04, 0.02, 0.01]])
RETRIEVAL = {"echo": ECHO, "induction": INDUCTION, "far_mass": FAR}


def hybrid(context=2000, **kw):
    kw = {"ratio": 0.5, "policy": "hybrid", "retrieval_share": 0.5, "context": context, **kw}
    return plan_from_tails(MODEL, synthetic_tails(GAMMA), PlanConfig(**kw), retrieval=RETRIEVAL)


def test_retrieval_heads_are_the_top_scores_and_hold_the_whole_context():
    context = 2000
    plan = hybrid(context)
    budget = int(0.5 * 2 * 2 * context)
    # KV head (layer, kv) scores max over query heads 2kv, 2kv+1 of echo + induction
    score = (ECHO + INDUCTION).reshape(2, 2, 2).max(-1)  # [[0.12, 0.70], [0.06, 0.72]]
    k = int(0.5 * budget // context)  # 1
    top = np.argsort(-score, axis=None)[:k]
    want = np.zeros(4, bool)
    want[top] = True
    assert plan.retrieval.reshape(-1).tolist() == want.tolist() == [False, False, False, True]
    assert plan.window[1, 1] == context - plan.sink_tokens and plan.tokens[1, 1] == context
    assert plan.tail[1, 2:].max() == 0.0 and plan.totals()["retrieval_heads"] == 1
    assert plan.totals()["tokens"] <= budget
    assert plan.totals()["retrieval_tokens_share"] == pytest.approx(context / plan.totals()["tokens"])


def test_the_streaming_heads_get_the_optimal_split_of_what_is_left():
    context = 300
    plan = hybrid(context, retrieval_share=0.4)
    budget = int(0.5 * 2 * 2 * context)
    tails = synthetic_tails(GAMMA)
    lost = tails.lost(context).reshape(2, 2, 2, -1).sum(2).reshape(4, -1)
    rest = np.flatnonzero(~plan.retrieval.reshape(-1))
    left = budget - int(plan.retrieval.sum()) * context - len(rest) * plan.sink_tokens
    exact = allocate_exact([lost[i] for i in rest], left)
    got = plan.window.reshape(-1)[rest]
    assert got.sum() <= left
    # power-law tails are convex: the greedy water-filling is exactly optimal
    assert sum(lost[i][w] for i, w in zip(rest, got, strict=True)) == pytest.approx(
        sum(lost[i][w] for i, w in zip(rest, exact, strict=True)), abs=1e-12)


def test_share_zero_is_the_gamma_plan_and_share_one_fills_the_budget_with_retrieval_heads():
    context = 1000
    gamma = plan_from_tails(MODEL, synthetic_tails(GAMMA), PlanConfig(ratio=0.5, context=context))
    none = hybrid(context, retrieval_share=0.0)
    assert none.window.tolist() == gamma.window.tolist() and none.retrieval.sum() == 0
    full = hybrid(context, retrieval_share=1.0, ratio=0.25)  # budget 3000: two heads of 1000 fit with the floor
    assert full.retrieval.sum() == 2 and full.totals()["tokens"] <= 3000


def test_the_ablation_rankings():
    far = hybrid(retrieval_by="far_mass")
    assert far.retrieval.reshape(-1).tolist() == [True, False, False, False]  # far mass 0.50 at (0, kv 0)
    a, b = hybrid(retrieval_by="random", seed=3), hybrid(retrieval_by="random", seed=3)
    assert a.retrieval.tolist() == b.retrieval.tolist() and a.retrieval.sum() == 1
    draws = {tuple(hybrid(retrieval_by="random", seed=s).retrieval.reshape(-1)) for s in range(12)}
    assert len(draws) > 1
    with pytest.raises(KVError, match="retrieval columns miss"):
        rank_retrieval({**RETRIEVAL, "echo": np.where(ECHO > 0.2, np.nan, ECHO)}, "score", (2, 2))


def test_json_round_trip_keeps_the_retrieval_heads(tmp_path):
    plan = hybrid()
    back = KVPlan.load(plan.save(tmp_path / "plan.json"))
    assert back.policy == "hybrid" and back.retrieval_by == "score"
    assert back.retrieval.tolist() == plan.retrieval.tolist() and back.totals() == plan.totals()


@pytest.mark.parametrize("kwargs, match", [
    ({"policy": "hybrid", "retrieval_share": 1.5, "ratio": 0.5}, r"--retrieval-share must lie in \[0, 1\]"),
    ({"policy": "hybrid", "retrieval_share": -0.1, "ratio": 0.5}, "--retrieval-share"),
    ({"policy": "hybrid"}, "--policy hybrid splits a budget"),
    ({"policy": "duo", "ratio": 0.5}, "--policy must be one of"),
    ({"policy": "hybrid", "ratio": 0.5, "retrieval_by": "gut"}, "--retrieval-by must be one of"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(KVError, match=match):
        PlanConfig(**kwargs)


def test_hybrid_without_the_measurement_is_refused(tmp_path, capsys):
    from tests.run_fixtures import write_run

    run = write_run(tmp_path, context=64)
    with pytest.raises(KVError, match="no retrieval measurement"):
        plan_run(run, PlanConfig(ratio=0.5, policy="hybrid", context=200))
    code, _, err = run_cli(["kv", "plan", str(run), "--policy", "hybrid", "--ratio", "0.5"], capsys)
    assert code == 2 and "gammalens measure MODEL --retrieval" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["kv", "plan", str(run), "--policy", "hybrid", "--ratio", "0.5",
                            "--retrieval-share", "2"], capsys)
    assert code == 2 and "--retrieval-share" in err and len(err.strip().splitlines()) == 1


def test_cli_hybrid_plan_of_a_measured_run(tmp_path, capsys):
    from tests.run_fixtures import write_run

    run = write_run(tmp_path, context=64, extra_columns=RETRIEVAL)
    code, out, err = run_cli(["kv", "plan", str(run), "--policy", "hybrid", "--ratio", "0.5", "--context", "400",
                              "--retrieval-share", "0.5", "--json", str(tmp_path / "plan.json")], capsys)
    assert code == 0, err
    plan = KVPlan.load(tmp_path / "plan.json")
    # one KV head per query head here; budget 1600 → ⌊0.5 · 1600 / 400⌋ = 2 retrieval heads: echo + induction
    # 0.70 at (0, 2) and 0.72 at (1, 3)
    assert "retrieval heads 2 of 8 KV heads" in out
    assert np.argwhere(plan.retrieval).tolist() == [[0, 2], [1, 3]]
    assert plan.window[plan.retrieval].tolist() == [400 - plan.sink_tokens] * 2


# --- the cache the plan builds ---------------------------------------------------------------------------------

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request):
    from tests.test_kv_cache import make_model

    return make_model(request.param)


@pytest.mark.parametrize("share, ratio", [(0.5, 0.5), (1.0, 0.25), (0.0, 0.6)])
def test_the_hybrid_cache_is_the_eager_masking_reference(model, share, ratio):
    from gammalens.kv.cache import GammaWindowCache
    from tests.test_kv_cache import reference, run_cache

    context, sinks = 40, 2
    tails = synthetic_tails(GAMMA, horizon=64, sink_tokens=sinks)
    plan = plan_from_tails(MODEL, tails, PlanConfig(ratio=ratio, context=context, policy="hybrid",
                                                    retrieval_share=share), retrieval=RETRIEVAL)
    windows = plan.window.tolist()
    ids = torch.randint(0, 97, (2, 48), generator=torch.Generator().manual_seed(5))  # decodes past T
    with torch.no_grad(), reference(model, windows, sinks):
        ref = model(ids).logits
    cache = GammaWindowCache.from_plan(plan, block=4)
    got = run_cache(model, ids, cache, split=context)
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), float((got - ref).abs().max())
    # the bytes the cache holds are its tensors: every head's sinks + window (the whole T for retrieval heads)
    held = cache.held_tokens()
    assert held.tolist() == np.minimum(plan.tokens, 48).tolist()
    per_slot = 2 * ids.shape[0] * 16 * 4  # fp32 keys + values (batch 2, head_dim 16): nothing else
    assert cache.nbytes() == int(held.sum()) * per_slot


def test_full_budget_hybrid_is_the_dynamic_cache(model):
    import transformers

    from gammalens.kv.cache import GammaWindowCache, cache_kwargs
    from tests.test_kv_cache import run_cache

    context = 32
    plan = plan_from_tails(MODEL, synthetic_tails(GAMMA, horizon=64), PlanConfig(
        budget=4 * context, context=context, policy="hybrid", retrieval_share=1.0), retrieval=RETRIEVAL)
    assert plan.retrieval.all()
    ids = torch.randint(0, 97, (1, context), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        cache = transformers.DynamicCache()
        ref = [model(ids[:, :20], **cache_kwargs(model, cache), use_cache=True).logits]
        for t in range(20, context):
            ref.append(model(ids[:, t:t + 1], **cache_kwargs(model, cache), use_cache=True).logits)
    got = run_cache(model, ids, GammaWindowCache.from_plan(plan, block=8), split=20)
    assert torch.allclose(got, torch.cat(ref, 1), atol=1e-5, rtol=0)


def test_the_kvpress_press_of_a_hybrid_plan_masks_no_key_of_a_retrieval_head():
    """kvpress's harness: the press keeps sinks + the plan's largest window per layer and masks per head the
    keys outside each head's window; a retrieval head's window is the whole context, so none of its keys."""
    pytest.importorskip("kvpress")
    from types import SimpleNamespace

    from gammalens.kv.press import GammaWindowPress

    context, sinks = 40, 2
    plan = plan_from_tails(MODEL, synthetic_tails(GAMMA, horizon=64, sink_tokens=sinks), PlanConfig(
        ratio=0.5, context=context, policy="hybrid", retrieval_share=0.5), retrieval=RETRIEVAL)
    press = GammaWindowPress.from_plan(plan)
    press._kept = press._total = 0  # what post_init_from_model sets (it needs a model)
    keys = torch.randn(1, 2, context, 8)
    for layer in range(2):
        module = SimpleNamespace(layer_idx=layer)
        k, _ = press.compress(module, None, keys, keys.clone(), None, {})
        masked = torch.zeros(2, k.shape[2], dtype=torch.bool)
        if module.masked_key_indices is not None:
            masked[module.masked_key_indices[1], module.masked_key_indices[2]] = True
        visible = (~masked).sum(-1)  # (Hkv,) context keys each head still attends to
        want = np.minimum(plan.tokens[layer], context)
        assert visible.tolist() == want.tolist()
        for kv in np.flatnonzero(plan.retrieval[layer]):
            assert not masked[kv].any() and k.shape[2] == context  # nothing dropped in a layer with one
