"""GammaWindowPress inside kvpress (optional extra): against an eager reference, in the pipeline, and a
miniature head-to-head run end to end. Skipped where kvpress is not installed (the CI's kvpress venv runs it)."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

kvpress = pytest.importorskip("kvpress")
torch = pytest.importorskip("torch")

from gammalens.kv.press import GammaWindowPress  # noqa: E402
from gammalens.kv.tails import KVError  # noqa: E402

TINY = Path(__file__).parents[1] / "src" / "gammalens" / "zoo" / "gammalens-tiny"
WINDOWS, SINKS = [[3, 17, 40, 9], [1, 64, 5, 12], [30, 2, 8, 50], [6, 6, 6, 6]], 2


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(TINY, attn_implementation="sdpa").eval()
    return model, AutoTokenizer.from_pretrained(TINY)


def reference_logits(model, ids, n_ctx):
    """Eager attention over context + question: queries after the context see, of the context, only each
    head's sinks and last W_h tokens; everything else is causal."""
    from transformers.modeling_utils import AttentionInterface

    def attn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        n = query.shape[2]
        w = torch.tensor(WINDOWS[module.layer_idx])[:, None, None]  # (H, 1, 1)
        i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
        ctx_ok = (j < SINKS) | (j >= n_ctx - w)  # (H, n, n)
        visible = (j <= i) & ((i < n_ctx) | (j >= n_ctx) | ctx_ok)
        s = (query.double() @ key.double().transpose(-1, -2)) * scaling
        p = s.masked_fill(~visible[None], float("-inf")).softmax(-1)
        return (p @ value.double()).to(query.dtype).transpose(1, 2).contiguous(), None

    AttentionInterface.register("test_press_reference", attn)
    previous = model.config._attn_implementation
    try:
        model.set_attn_implementation("test_press_reference")
        with torch.no_grad():
            return model(ids).logits
    finally:
        model.set_attn_implementation(previous)
        AttentionInterface._global_mapping.pop("test_press_reference", None)


def test_press_keeps_each_heads_sinks_and_window(tiny):
    from transformers import DynamicCache

    model, _ = tiny
    ids = torch.randint(5, 500, (1, 90), generator=torch.Generator().manual_seed(0))
    n_ctx = 70
    press = GammaWindowPress(windows=WINDOWS, sinks=SINKS)
    cache = DynamicCache()
    with torch.no_grad():
        with press(model):
            model.model(ids[:, :n_ctx], past_key_values=cache)
        # every layer keeps sinks + the plan's largest window physically (here capped by the context)
        assert [layer.keys.shape[2] for layer in cache.layers] == [SINKS + 64] * 4
        # token by token: kvpress masks with a fake key found per call, exact for one query at a time
        # (a 20-token chunk at once deviated by up to 3e-2 in the logits: kvpress's approximation, not the press)
        got = torch.cat([model(ids[:, t:t + 1], past_key_values=cache, position_ids=torch.tensor([[t]])).logits
                         for t in range(n_ctx, 90)], 1)
    ref = reference_logits(model, ids, n_ctx)[:, n_ctx:]
    assert torch.allclose(got, ref, atol=1e-4, rtol=0), float((got - ref).abs().max())
    kept = sum(min(SINKS + min(w, n_ctx - SINKS), n_ctx) for layer in WINDOWS for w in layer)
    assert press.compression_ratio == pytest.approx(1 - kept / (n_ctx * 16))


def test_press_in_the_kvpress_pipeline(tiny):
    from transformers import pipeline

    model, tok = tiny
    pipe = pipeline("kv-press-text-generation", model=model, tokenizer=tok)
    context = "def add(a, b):\n    return a + b\n\n" * 12
    question = "def sub(a, b):"
    answer = pipe(context, question=question, press=GammaWindowPress(windows=WINDOWS, sinks=SINKS),
                  max_new_tokens=6)["answer"]
    # the same greedy tokens from the eager reference, token by token
    ctx_ids = tok.encode(tok.bos_token + context if tok.bos_token else context, add_special_tokens=False,
                         return_tensors="pt")
    ids = torch.cat([ctx_ids, tok.encode(question + "\n", add_special_tokens=False, return_tensors="pt")], 1)
    out = []
    for _ in range(6):
        nxt = reference_logits(model, ids, ctx_ids.shape[1])[0, -1].argmax()
        out.append(int(nxt))
        ids = torch.cat([ids, nxt.view(1, 1)], 1)
        if nxt == model.generation_config.eos_token_id:
            break
    assert answer == tok.decode(out, skip_special_tokens=True)


def test_press_refuses_a_different_model(tiny):
    model, _ = tiny
    press = GammaWindowPress(windows=[[4, 4]] * 4, sinks=1)
    with pytest.raises(KVError, match="n_kv_heads"), press(model):
        pass
    with pytest.raises(KVError, match="windows"):
        GammaWindowPress(windows=[[0, 4]], sinks=1)


def test_miniature_head_to_head(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    import numpy as np

    from run_fixtures import write_run

    rng = np.random.default_rng(0)  # retrieval columns, so that the hybrid policies run too
    scores = {c: rng.uniform(0, 0.3, (4, 4)) for c in ("echo", "induction", "far_mass")}
    run = write_run(tmp_path, model_id="gammalens-tiny", n_layers=4, n_heads=4, context=128, extra_columns=scores)
    path = Path(__file__).parents[1] / "benchmarks" / "kv" / "head_to_head.py"
    spec = importlib.util.spec_from_file_location("kv_head_to_head", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "h2h.csv"
    argv = ["--model", "gammalens-tiny", "--run", str(run), "--out", str(out), "--contexts", "160",
            "--nll-context", "160", "--ratios", "0.5", "--nll-samples", "1", "--passkey-seeds", "1",
            "--multikey-samples", "0", "--qa-seeds", "0", "--tasks", "passkey,nll", "--duo-len", "64",
            "--passkey-depths", "0.5"]
    mod.main(argv)
    rows = list(csv.DictReader(out.open()))
    policies = {r["policy"] for r in rows}
    assert {"full", "gamma_budget", "hybrid_s0.5", "hybrid_far_s0.5", "hybrid_random_s0.5", "streaming_llm",
            "snapkv", "expected_attention", "knorm", "tova"} <= policies
    full_bytes = {r["task"]: int(r["held_bytes"]) for r in rows if r["policy"] == "full"}
    for r in rows:
        if r["policy"].startswith(("gamma_budget", "hybrid")):
            # the budget counts sinks and windows: ≤ (1 − r) of the full cache, in tokens held and in bytes
            # read off the GammaWindowCache's tensors (keys + values, as the full DynamicCache)
            assert int(r["held_tokens"]) <= 0.5 * int(r["full_tokens"])
            assert int(r["held_bytes"]) <= 0.5 * full_bytes[r["task"]]
        if r["policy"] == "full":
            assert int(r["kept_tokens"]) == int(r["full_tokens"])
    n_rows = len(rows)
    mod.main(argv)  # resumable: nothing is redone
    assert len(list(csv.DictReader(out.open()))) == n_rows


@pytest.mark.parametrize("name", ["snapkv", "expected_attention", "knorm", "tova", "adakv", "gamma"])
def test_harness_leaves_the_cache_kvpress_leaves(tiny, name):
    """One captured prefill + press.compress per layer == kvpress's own hooks during the prefill."""
    from transformers import DynamicCache

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks" / "kv"))
    from harness import apply_press, capture_prefill

    presses = {"snapkv": lambda: kvpress.SnapKVPress(compression_ratio=0.5, window_size=16),
               "expected_attention": lambda: kvpress.ExpectedAttentionPress(compression_ratio=0.5),
               "knorm": lambda: kvpress.KnormPress(compression_ratio=0.5),
               "tova": lambda: kvpress.TOVAPress(compression_ratio=0.5),
               "adakv": lambda: kvpress.AdaKVPress(kvpress.ExpectedAttentionPress(compression_ratio=0.5)),
               "gamma": lambda: GammaWindowPress(windows=WINDOWS, sinks=SINKS)}
    model, _ = tiny
    ids = torch.randint(5, 500, (1, 80), generator=torch.Generator().manual_seed(5))
    cache = DynamicCache()
    press = presses[name]()
    with torch.no_grad(), press(model):
        model.model(ids, past_key_values=cache)
    masked = [getattr(layer.self_attn, "masked_key_indices", None) for layer in model.model.layers]
    ours = apply_press(model, presses[name](), capture_prefill(model, ids))
    for i, layer in enumerate(model.model.layers):
        assert torch.equal(cache.layers[i].keys, ours.layers[i].keys)
        assert torch.equal(cache.layers[i].values, ours.layers[i].values)
        mine = getattr(layer.self_attn, "masked_key_indices", None)
        assert (masked[i] is None) == (mine is None)
        if mine is not None:
            assert all(torch.equal(a, b) for a, b in zip(masked[i], mine, strict=True))
