"""The fused Triton probe against an fp64 brute-force reference, at the kernel level, on many tiles.

The contract matrix (tests/test_probe_contract.py) runs the fused backend inside real models on 40 tokens;
here ``fused_profile`` gets raw queries/keys with 64 tokens and 16-token tiles (4 × 4 tiles), non-power-of-two
head size, grouped-query heads, left and right padding, sliding window, soft-cap and bidirectional attention,
bf16 inputs, and is compared with explicit fp64 sums. On CPU the kernels run in Triton's interpreter.
Tolerance: 2e-6 absolute + 1e-6 relative on sums of probabilities (each ≤ ~64; fp32 scores and exp).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import TEST_DEVICE

pytest.importorskip("triton")

N, H, HKV, DH, SINKS, HORIZON = 64, 2, 1, 24, 3, 20
CASES = {  # name: (causal, window, softcap, starts, lengths, dtype)
    "causal_right_pad": (True, None, None, [0, 0], [64, 45], torch.float32),
    "window_softcap_left_pad": (True, 20, 5.0, [0, 13], [64, 51], torch.float32),
    "bidirectional_padded": (False, None, None, [5, 0], [59, 40], torch.float32),
    "bf16_window": (True, 23, None, [0, 0], [64, 64], torch.bfloat16),
}


def reference(q, k, starts, lengths, scale, causal, window, softcap) -> dict:
    """fp64 sums by explicit loops over queries, from the same (rounded) inputs."""
    q, k = q.double().cpu().numpy(), np.repeat(k.double().cpu().numpy(), H // HKV, axis=1)
    B = q.shape[0]
    out = {"mass": np.zeros((H, N)), "pairs": np.zeros(N), "cs": np.zeros((B, H, HORIZON + 1)), "q_cs": np.zeros(B),
           "sink": np.zeros((B, H)), "sink_q": np.zeros(B)}
    pos = np.arange(N)
    for b, (st, ln) in enumerate(zip(starts, lengths, strict=True)):
        for qi in range(st, st + ln):
            vis = (pos >= st) & (pos < st + ln)
            if causal:
                vis &= pos <= qi
            if window is not None:
                vis &= qi - pos < window
            s = np.einsum("hd,hkd->hk", q[b, :, qi], k[b]) * scale
            if softcap is not None:
                s = softcap * np.tanh(s / softcap)
            s = np.where(vis, s, -np.inf)
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            qr = qi - st
            for kj in np.nonzero(vis)[0]:
                d, kr = abs(qi - kj), kj - st
                if kr < SINKS:
                    if qr >= SINKS:
                        out["sink"][b] += p[:, kj]
                    continue
                out["mass"][:, d] += p[:, kj]
                out["pairs"][d] += 1
                left = kj <= qi and qr - SINKS >= HORIZON
                right = kj > qi and qr >= SINKS and ln - 1 - qr >= HORIZON
                if d <= HORIZON and (left or right):
                    out["cs"][b, :, d] += p[:, kj]
            out["q_cs"][b] += (qr - SINKS >= HORIZON) + ((not causal) and qr >= SINKS and ln - 1 - qr >= HORIZON)
            out["sink_q"][b] += qr >= SINKS
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_fused_profile_matches_fp64_reference(case: str) -> None:
    from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator
    from gammalens.probe.fused import fused_profile

    causal, window, softcap, starts, lengths, dtype = CASES[case]
    g = torch.Generator().manual_seed(3)
    q = (2.0 * torch.randn(2, H, N, DH, generator=g)).to(dtype).to(TEST_DEVICE)
    k = torch.randn(2, HKV, N, DH, generator=g).to(dtype).to(TEST_DEVICE)
    v = torch.randn(2, HKV, N, DH, generator=g).to(dtype).to(TEST_DEVICE)
    layout = BatchLayout(torch.tensor(starts), torch.tensor(lengths), torch.arange(2)).to(TEST_DEVICE)
    scale = 0.3
    acc = ProfileAccumulator(1, H, 2, N - 1, HORIZON, SINKS, device=TEST_DEVICE)
    out = fused_profile(acc, 0, q, k, v, layout, scale, causal, softcap, window, block=16)
    r = reference(q, k, starts, lengths, scale, causal, window, softcap)

    got = {"mass": acc.mass[0], "pairs": acc.pairs[0], "cs": acc.doc_mass_cs[:, 0], "q_cs": acc.doc_queries_cs[:, 0],
           "sink": acc.doc_sink_sum[:, 0], "sink_q": acc.doc_sink_queries[:, 0]}
    for name, want in r.items():
        exact = name in ("pairs", "q_cs", "sink_q")
        np.testing.assert_allclose(got[name].cpu().numpy(), want, atol=0 if exact else 2e-6, rtol=0 if exact else 1e-6,
                                   err_msg=name)

    # the layer output: eager attention in fp32 from the same inputs; padding queries give 0
    kk, vv = (t.float().repeat_interleave(H // HKV, dim=1) for t in (k, v))
    s = q.float() @ kk.transpose(-1, -2) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    p_, kpos = torch.arange(N, device=TEST_DEVICE), torch.arange(N, device=TEST_DEVICE)
    st, ln = layout.starts[:, None, None, None], layout.lengths[:, None, None, None]
    vis = (kpos >= st) & (kpos < st + ln) & (p_[:, None] >= st) & (p_[:, None] < st + ln)
    if causal:
        vis = vis & (kpos <= p_[:, None])
    if window is not None:
        vis = vis & (p_[:, None] - kpos < window)
    want = torch.nan_to_num(torch.softmax(s.masked_fill(~vis, float("-inf")), -1)) @ vv  # (B, H, n, dh)
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bf16: the output is rounded to bf16
    torch.testing.assert_close(out.float().transpose(1, 2), want, atol=tol, rtol=tol)


def test_a_lost_term_breaks_conservation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime self-check: dropping the sink mass (as a kernel bug would lose a tile) raises, naming layer/head."""
    import gammalens.probe.fused as fused
    from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 20, 16, generator=g).to(TEST_DEVICE) for _ in range(3))
    acc = ProfileAccumulator(2, 2, 1, 19, 4, 2, device=TEST_DEVICE)
    layout = BatchLayout.full(1, 20, device=TEST_DEVICE)
    fused.fused_profile(acc, 0, q, k, v, layout, 0.25, True, None, None, block=16)  # consistent: no error
    monkeypatch.setattr(fused, "_sink_sums", lambda q, *a: torch.zeros(1, 2, dtype=torch.float64, device=q.device))
    with pytest.raises(fused.FusedKernelError, match=r"layer 1, head 0"):
        fused.fused_profile(acc, 1, q, k, v, layout, 0.25, True, None, None, block=16)
    assert float(acc.mass[0].sum() + acc.doc_sink_sum[:, 0].sum()) == pytest.approx(2 * 18)  # 2 heads × 18 rows
    assert float(acc.mass[1].abs().sum() + acc.doc_sink_sum[:, 1].abs().sum()) == 0.0  # nothing half-added
