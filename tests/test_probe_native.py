"""The chunked probe's C kernel (gammalens.probe.native) against fp64 brute force, and its fallbacks.

The kernel softmaxes a causal chunk in place and returns the distance and sink sums; the reference is
``torch.softmax`` in fp64 over the visible keys and explicit loops over (query, key) pairs. Tolerances: 1e-6
absolute on probabilities (fp32 rounding of values ≤ 1, exp within a few ulp) and 2e-6 relative to the number of
queries on the sums (each sum adds ≤ c probabilities). The end-to-end check against eager attention is the contract
matrix (tests/test_probe_contract.py), whose whole-document cases run on this kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gammalens.probe import native
from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator
from gammalens.probe.backend import DistanceProbe, probing
from tests.conftest import build_tiny

pytestmark = pytest.mark.skipif(native.kernel() is None, reason=f"no native kernel here: {native.status()}")


def reference(scores: torch.Tensor, q0: int, sinks: int, cs_from: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fp64 probabilities (B, H, c, kend), distance sums (B, H, 2, kend) by column t ↔ d = kend − 1 − t, sink sums."""
    B, H, c, kend = scores.shape
    s = scores.double().clone()
    future = torch.arange(kend)[None, :] > torch.arange(q0, kend)[:, None]  # (c, kend)
    p = torch.softmax(s.masked_fill(future, float("-inf")), -1).numpy()
    by_dist = np.zeros((B, H, 2, kend))
    sink = np.zeros((B, H))
    for i in range(c):
        q = q0 + i
        for j in range(q + 1):
            if j < sinks:
                if q >= sinks:
                    sink += p[:, :, i, j]
                continue
            t = kend - 1 - (q - j)
            by_dist[:, :, 0, t] += p[:, :, i, j]
            if q >= cs_from:
                by_dist[:, :, 1, t] += p[:, :, i, j]
    return p, by_dist, sink


@pytest.mark.parametrize(("B", "H", "c", "q0", "sinks", "horizon", "threads"), [
    (1, 3, 7, 0, 2, 3, 1),     # first chunk: rows shorter than the sinks, row lengths 1 … 7 (no full 8-lane block)
    (2, 2, 5, 37, 4, 10, 2),   # tails after 8-lane blocks, two batch rows, rows split over threads mid-head
    (1, 4, 16, 50, 0, 0, 3),   # no sinks, every query on the common-support side, 3 spans
    (1, 1, 1, 9, 1, 20, 1),    # one query, none on the common-support side
])
def test_kernel_matches_fp64_brute_force(B: int, H: int, c: int, q0: int, sinks: int, horizon: int,
                                         threads: int) -> None:
    torch.manual_seed(c + q0)
    kend = q0 + c
    scores = torch.randn(B, H, c, kend) * 4  # spread of real score rows: probabilities from ~1 down to ~1e-10
    scores[..., q0:] += 1e4 * torch.ones(c, c).triu(1)  # garbage in the future keys must not count
    p, by_dist, sink = reference(scores, q0, sinks, sinks + horizon)
    work = scores.clone()
    got, got_sink = native.causal_softmax_sums(work, q0, sinks, sinks + horizon, threads=threads)
    np.testing.assert_allclose(work.numpy(), p, atol=1e-6, rtol=0)
    assert (work[..., q0:].numpy()[..., np.triu_indices(c, 1)[0], np.triu_indices(c, 1)[1]] == 0).all()
    np.testing.assert_allclose(got.numpy(), by_dist, atol=2e-6 * c, rtol=0)
    np.testing.assert_allclose(got_sink.numpy(), sink, atol=2e-6 * c, rtol=0)


def test_exp_accuracy_over_the_range_softmax_uses() -> None:
    """A row with one 0 score and the rest from −100 to 0: p_j = exp(s_j) / Σ exp, the kernel's exp is checked directly."""
    x = torch.linspace(-100.0, 0.0, 4001)
    scores = torch.cat([x, torch.zeros(1)]).view(1, 1, 1, -1)
    q0 = scores.shape[-1] - 1
    work = scores.clone()
    native.causal_softmax_sums(work, q0, 0, 0)
    want = torch.softmax(scores.double(), -1)
    normal = want > 1e-37  # fp32 probabilities below FLT_MIN (1.2e-38) are subnormal: fewer bits, whoever rounds
    rel = (work.double() - want).abs()[normal] / want[normal]
    assert float(rel.max()) < 1e-6  # measured 1.6e-7 (torch's fp32 softmax: 1.3e-7)
    assert float((work.double() - want).abs()[~normal].max()) < 1e-37  # below: an absolute error under FLT_MIN


def test_nan_scores_make_their_head_nan_only() -> None:
    scores = torch.randn(1, 3, 4, 12)
    scores[0, 1, 2, 3] = float("nan")
    by_dist, sink = native.causal_softmax_sums(scores, 8, 1, 2)
    assert torch.isnan(by_dist[0, 1]).any() and torch.isfinite(by_dist[0, [0, 2]]).all()
    acc = ProfileAccumulator(1, 3, 1, 11, 2, 1)
    from gammalens.errors import NonFiniteAttentionError

    with pytest.raises(NonFiniteAttentionError, match="layer 0, head 1"):
        acc.add_causal_sums(0, by_dist, sink, 8, BatchLayout.full(1, 12))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="contiguous fp32"):
        native.causal_softmax_sums(torch.randn(1, 1, 4, 9), 4, 0, 0)  # kend ≠ q0 + c
    with pytest.raises(ValueError, match="contiguous fp32"):
        native.causal_softmax_sums(torch.randn(1, 1, 4, 8).double(), 4, 0, 0)
    acc = ProfileAccumulator(1, 1, 1, 7, 2, 1)
    padded = BatchLayout(torch.zeros(1, dtype=torch.long), torch.tensor([6]), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="unpadded"):
        acc.add_causal_sums(0, torch.zeros(1, 1, 2, 8), torch.zeros(1, 1), 6, padded)


def _measure(model, n: int, chunk: int) -> tuple[ProfileAccumulator, DistanceProbe, torch.Tensor]:
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    acc = ProfileAccumulator(L, H, 2, n - 1, 9, 3)
    probe = DistanceProbe(acc, chunk_size=chunk, backend="chunked")
    torch.manual_seed(3)
    with torch.no_grad(), probing(model, probe):
        out = model(input_ids=torch.randint(0, 30000, (2, n))).logits
    return acc, probe, out


def test_probe_native_equals_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The two chunked paths give the same sums and outputs to fp32 rounding (1e-5 on sums of ≤ 70 probabilities)."""
    model = build_tiny("llama_gqa")
    fast, probe_fast, out_fast = _measure(model, 70, 16)
    assert probe_fast.kernel_.startswith("native")
    monkeypatch.setattr(native, "kernel", lambda: None)
    slow, probe_slow, out_slow = _measure(model, 70, 16)
    assert probe_slow.kernel_ == "torch"
    for name in ("mass", "pairs", "doc_mass_cs", "doc_queries_cs", "doc_sink_sum", "doc_sink_queries"):
        np.testing.assert_allclose(getattr(fast, name).numpy(), getattr(slow, name).numpy(), atol=1e-5, rtol=0,
                                   err_msg=name)
    torch.testing.assert_close(out_fast, out_slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("env", "reason"), [
    ({"GAMMALENS_NATIVE": "0"}, "GAMMALENS_NATIVE=0"),
    ({"CC": "false"}, "false failed"),                        # a compiler that fails: the probe keeps the torch path
    ({"CC": "/nonexistent/cc", "PATH": "/nonexistent"}, "no C compiler"),
])
def test_no_kernel_falls_back_with_a_reason(env: dict, reason: str, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path) -> None:
    monkeypatch.setenv("GAMMALENS_CACHE", str(tmp_path))  # nothing cached: the build is attempted
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    native.kernel.cache_clear()
    try:
        assert native.kernel() is None
        assert reason in native.status()
        assert not list((tmp_path / "native").glob("*.so")) if (tmp_path / "native").exists() else True
        model = build_tiny("llama_gqa")
        _, probe, _ = _measure(model, 20, 8)
        assert probe.kernel_ == "torch"
    finally:
        native.kernel.cache_clear()
    monkeypatch.undo()
    assert native.kernel() is not None  # rebuilt or reloaded from the real cache


def test_build_is_cached_and_atomic(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("GAMMALENS_CACHE", str(tmp_path))
    native.kernel.cache_clear()
    try:
        assert native.kernel() is not None
        built = sorted(p.name for p in (tmp_path / "native").iterdir())
        assert len(built) == 1 and built[0].startswith("gammalens_native_") and built[0].endswith(".so")  # no temps
        native.kernel.cache_clear()
        assert native.kernel() is not None  # loaded, not rebuilt
        assert sorted(p.name for p in (tmp_path / "native").iterdir()) == built
    finally:
        native.kernel.cache_clear()


@pytest.mark.parametrize(("arch", "want"), [("llama_gqa", "native kernel"), ("mistral_swa", "torch"),
                                            ("gemma3_hybrid", "on 1 of 2 layers, torch on the others")])
def test_kernel_summary_names_what_each_layer_ran(arch: str, want: str) -> None:
    """Sliding-window layers keep the torch path; a hybrid model (Gemma-3: window, then global) says so."""
    _, probe, _ = _measure(build_tiny(arch), 24, 8)
    assert want in probe.kernel_summary()


def test_chunks_dealt_to_threads_equal_one_thread() -> None:
    """With 3 intra-op threads the layer's chunks run on 3 workers (each its own sums); with 1, in order on one.
    Same sums to fp64 rounding of the added partial sums, same outputs, and the thread setting is restored."""
    model = build_tiny("qwen2")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _, out_one = _measure(model, 67, 8)
        torch.set_num_threads(3)
        many, _, out_many = _measure(model, 67, 8)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    for name in ("mass", "doc_mass_cs", "doc_sink_sum"):
        np.testing.assert_allclose(getattr(many, name).numpy(), getattr(one, name).numpy(), atol=1e-12, rtol=0)
    torch.testing.assert_close(out_many, out_one, atol=1e-6, rtol=1e-6)
