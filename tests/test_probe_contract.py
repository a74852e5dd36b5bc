"""Contract matrix: the chunked probe equals a brute-force reference built from eager ``output_attentions``.

Every architecture runs through the same checks on a tiny random-init model, with a padded batch of
unequal documents: the exact distance profile, the pair counts, the common-support profile, the sink
sums, mass conservation, the layer outputs, and that nothing stays registered afterwards.
Tolerance: 1e-5 absolute on sums of probabilities (each sum ≤ the number of queries, ~100).

Both backends join the matrix: the chunked path (two chunk sizes) and the fused Triton kernel, which
runs in Triton's CPU interpreter here (``TRITON_INTERPRET=1``, set in conftest before triton is
imported) with 32-token tiles, so a 40-token context spans two query and key blocks (diagonal and
off-diagonal tiles, partial tiles). The interpreter is slow, so the fused kernel runs the padded batch
only: it takes visibility from the layout, so whole documents are no separate code path for it. With
``GAMMALENS_TEST_DEVICE=cuda`` the same matrix runs on the GPU (compiled kernels).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator
from gammalens.probe.backend import DistanceProbe, probing, registered_probes
from tests.conftest import TEST_DEVICE, arch_specs, build_tiny

N_CTX = 40
LENGTHS = [40, 29]  # the second document is right-padded
SINKS = 2
HORIZON = 15
ATOL = 1e-5
# probe settings of the matrix: the chunked path with 7-query chunks and with the default budget, the fused kernel
VARIANTS = {"chunk7": {"chunk_size": 7, "backend": "chunked"}, "chunk_auto": {"backend": "chunked"},
            "chunk7_torch": {"chunk_size": 7, "backend": "chunked"}, "triton": {"backend": "triton", "block": 32}}
# whole documents on the CPU take the C kernel of gammalens.probe.native where it builds; chunk7_torch switches it
# off, so that the PyTorch softmax path keeps its own place in the matrix
NATIVE_OFF = ("chunk7_torch",)
PLAIN_CAUSAL = ("llama_gqa", "qwen2", "gpt_neox_partial", "gpt2")  # no window: no mask tensor for whole documents
# the interpreter is slow (~1 s per layer here): on CPU the fused kernel runs the architectures that exercise its
# masks (GQA, sliding window, soft-cap + window, partial rotary, bidirectional); on CUDA it runs them all
INTERPRETED = ("llama_gqa", "mistral_swa", "gemma2_softcap", "gemma3_hybrid", "gpt_neox_partial", "bert")
CASES = [(v, lengths) for v in VARIANTS for lengths in ("padded", "whole")
         if (v, lengths) not in (("triton", "whole"), ("chunk7_torch", "padded"))]


def _window(model, arch: str, layer: int) -> int | None:
    cfg = model.config
    if arch == "mistral_swa":
        return cfg.sliding_window
    if arch in ("gemma2_softcap", "gemma3_hybrid"):
        return cfg.sliding_window if cfg.layer_types[layer] == "sliding_attention" else None
    return None


def brute_force(attn: np.ndarray, lengths: list[int], causal: bool, window: int | None) -> dict:
    """Reference sums from full attention matrices ``attn`` (B, H, n, n) by explicit loops over queries."""
    B, H, n, _ = attn.shape
    mass = np.zeros((H, n))
    pairs = np.zeros(n)
    cs = np.zeros((B, H, HORIZON + 1))
    q_cs = np.zeros(B)
    sink = np.zeros((B, H))
    sink_q = np.zeros(B)
    for b, length in enumerate(lengths):
        for q in range(length):
            for k in range(length):
                d = abs(q - k)
                if (causal and k > q) or (window is not None and d >= window):
                    continue
                a = attn[b, :, q, k]
                if k < SINKS:
                    if q >= SINKS:
                        sink[b] += a
                    continue
                mass[:, d] += a
                pairs[d] += 1
                left_cs = k <= q and q - SINKS >= HORIZON
                right_cs = (not causal) and k > q and q >= SINKS and length - 1 - q >= HORIZON
                if d <= HORIZON and (left_cs or right_cs):
                    cs[b, :, d] += a
            if q - SINKS >= HORIZON:
                q_cs[b] += 1
            if not causal and q >= SINKS and length - 1 - q >= HORIZON:
                q_cs[b] += 1
            if q >= SINKS:
                sink_q[b] += 1
    return {"mass": mass, "pairs": pairs, "cs": cs, "q_cs": q_cs, "sink": sink, "sink_q": sink_q}


@pytest.mark.parametrize("arch", list(arch_specs()))
@pytest.mark.parametrize(("variant", "case"), CASES)
def test_probe_matches_eager_reference(arch: str, variant: str, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Padded batches exercise the model's explicit masks; whole documents the mask-free causal fast path."""
    from gammalens.probe import native

    if variant in NATIVE_OFF:
        monkeypatch.setattr(native, "kernel", lambda: None)
    lengths = LENGTHS if case == "padded" else [N_CTX, N_CTX]
    if VARIANTS[variant]["backend"] == "triton":
        pytest.importorskip("triton")
        if TEST_DEVICE == "cpu" and arch not in INTERPRETED:
            pytest.skip("Triton interpreter: a subset of the matrix on CPU (all of it on CUDA)")
    model = build_tiny(arch).to(TEST_DEVICE)
    eager = build_tiny(arch, attn="eager").to(TEST_DEVICE)
    eager.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    ids = torch.randint(1000, 30000, (2, N_CTX))
    mask = torch.zeros(2, N_CTX, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    ids, mask = ids.to(TEST_DEVICE), mask.to(TEST_DEVICE)
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    acc = ProfileAccumulator(L, H, 2, N_CTX - 1, HORIZON, SINKS, device=TEST_DEVICE)
    probe = DistanceProbe(acc, **VARIANTS[variant])
    layout = BatchLayout(torch.zeros(2, dtype=torch.long), torch.tensor(lengths), torch.arange(2)).to(TEST_DEVICE)
    own = model.config._attn_implementation  # sdpa, or eager where transformers refuses sdpa (Gemma-2 from 5.3)
    with torch.no_grad():
        with probing(model, probe):
            probe.set_layout(layout)
            out = model(input_ids=ids, attention_mask=mask)
        ref = eager(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert registered_probes() == []
    assert model.config._attn_implementation == own
    assert len(probe.layer_of) == L
    assert probe.backend_ == VARIANTS[variant]["backend"]
    if variant in NATIVE_OFF:
        assert probe.kernel_ == "torch"
    elif case == "whole" and arch in PLAIN_CAUSAL and TEST_DEVICE == "cpu" and native.kernel() is not None:
        assert probe.kernel_.startswith("native")

    # the layer outputs are the model's own (soft-capped layers computed by the probe itself)
    h_probe = out.logits if hasattr(out, "logits") else out.last_hidden_state
    h_ref = ref.logits if hasattr(ref, "logits") else ref.last_hidden_state
    valid = mask.bool()
    assert torch.allclose(h_probe[valid], h_ref[valid], atol=1e-4, rtol=1e-4)
    acc = _on_cpu(acc)

    causal = arch != "bert"
    for layer, attn in enumerate(ref.attentions):
        r = brute_force(attn.double().cpu().numpy(), lengths, causal, _window(model, arch, layer))
        np.testing.assert_allclose(acc.mass[layer].numpy(), r["mass"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(acc.pairs[layer].numpy(), r["pairs"], atol=0, rtol=0)
        np.testing.assert_allclose(acc.doc_mass_cs[:, layer].numpy(), r["cs"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(acc.doc_queries_cs[:, layer].numpy(), r["q_cs"], atol=0, rtol=0)
        np.testing.assert_allclose(acc.doc_sink_sum[:, layer].numpy(), r["sink"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(acc.doc_sink_queries[:, layer].numpy(), r["sink_q"], atol=0, rtol=0)
        if causal:
            # each query past the sinks spreads mass 1 over sink and non-sink keys: the two sums conserve it
            total = acc.mass[layer].numpy().sum(-1) + acc.doc_sink_sum[:, layer].numpy().sum(0)
            np.testing.assert_allclose(total, sum(n - SINKS for n in lengths), atol=1e-4)


def _on_cpu(acc: ProfileAccumulator) -> ProfileAccumulator:
    for name in ("mass", "pairs", "doc_mass_cs", "doc_queries_cs", "doc_sink_sum", "doc_sink_queries"):
        setattr(acc, name, getattr(acc, name).cpu())
    return acc


def test_nothing_left_registered_after_an_error() -> None:
    model = build_tiny("llama_gqa")
    acc = ProfileAccumulator(2, 4, 1, 9, 4, 1)
    probe = DistanceProbe(acc)
    with pytest.raises(RuntimeError, match="boom"), probing(model, probe):
        raise RuntimeError("boom")
    assert registered_probes() == []
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("backend", ["chunked", "triton"])
def test_nan_attention_names_layer_and_head(backend: str) -> None:
    from gammalens.errors import NonFiniteAttentionError

    if backend == "triton":
        pytest.importorskip("triton")
    model = build_tiny("llama_gqa").to(TEST_DEVICE)
    with torch.no_grad():
        model.model.layers[1].self_attn.q_proj.weight[16:24] = float("nan")  # head_dim 8: query head 2 of layer 1
    acc = ProfileAccumulator(2, 4, 1, 15, 6, 1, device=TEST_DEVICE)
    probe = DistanceProbe(acc, backend=backend)
    with pytest.raises(NonFiniteAttentionError, match=r"layer 1, head 2"), torch.no_grad(), probing(model, probe):
        model(input_ids=torch.randint(0, 1000, (1, 16), device=TEST_DEVICE))
    assert registered_probes() == []
