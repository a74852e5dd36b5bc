"""Triton kernels of the fused probe: a flash forward that also returns each row's log-sum-exp, and a
profile pass that recomputes the scores block by block and sums p = exp(s − lse) along the diagonals.

Both kernels build their scores and visibility with the same two helpers (:func:`_scores`,
:func:`_visible`), so the probabilities of the second pass are normalised by exactly the log-sum-exp of
the first. Visibility is structural — a key is seen when it lies in the query's document
(``starts``/``lengths`` of :class:`~gammalens.probe.accumulate.BatchLayout`), not after it (causal
layers) and less than ``window`` tokens before it (sliding-window layers) — which is what transformers'
masks encode for the batches the probe is given; no (n × n) mask is ever read or built.

Diagonal sums of a (B × B) tile: ``tl.gather`` rotates row i left by i (``r[i, m] = p[i, (i − m) mod B]``),
so column m holds offset δ = i − j = m on and below the main diagonal (i ≥ m) and δ = m − B above it.
Each tile's sums are exact fp32 sums of ≤ B terms; they are added across tiles and query blocks with
fp64 atomics, so the per-distance totals keep fp64 accuracy at any context.

Under ``TRITON_INTERPRET=1`` (set before this module is imported) the same kernels run on CPU tensors:
that is how the tests check them without a GPU.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _scores(q, k, scale, softcap, HAS_CAP: tl.constexpr, IEEE: tl.constexpr):
    """(BM, BN) fp32 scores q·kᵀ·scale, soft-capped as softcap·tanh(s/softcap) when HAS_CAP.

    IEEE: multiply in full fp32 — for fp32 inputs (not TF32, whose 10-bit mantissa would cost 1e-3 in the
    scores), and for every input in the interpreter, whose bf16/fp16 ``tl.dot`` is wrong (Triton 3.9); bf16
    products are exact in fp32, so this is the GPU's bf16 dot up to the order of the sums.
    """
    if IEEE:
        s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee") * scale
    else:
        s = tl.dot(q, tl.trans(k)) * scale
    if HAS_CAP:
        x = s / softcap
        e = tl.exp(-2.0 * tl.abs(x))  # tanh from exp: portable to the interpreter, no overflow
        t = (1.0 - e) / (1.0 + e)
        s = softcap * tl.where(x < 0, -t, t)
    return s


@triton.jit
def _pv(p, v, IEEE: tl.constexpr):
    """(BM, dv) fp32 p·v, p cast to the value dtype (as flash kernels do)."""
    if IEEE:  # noqa: SIM108 (a constexpr branch: only one dot is compiled)
        o = tl.dot(p, v.to(tl.float32), input_precision="ieee")
    else:
        o = tl.dot(p.to(v.dtype), v)
    return o


@triton.jit
def _visible(qpos, kpos, start, length, n, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """(BM, BN) bool: query qpos sees key kpos (same document, causal, inside the window)."""
    qrel = qpos - start
    krel = kpos - start
    vis = ((qrel >= 0) & (qrel < length) & (qpos < n))[:, None] & ((krel >= 0) & (krel < length) & (kpos < n))[None, :]
    d = qpos[:, None] - kpos[None, :]
    if CAUSAL:
        vis = vis & (d >= 0)
    if HAS_WINDOW:
        vis = vis & (d < window)
    return vis


@triton.jit
def _key_range(q0, start, length, n, window, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """First (aligned to BLOCK_N) and past-the-last key a block of queries q0 … q0+BLOCK_M−1 can see."""
    lo = tl.maximum(start, 0)
    if HAS_WINDOW:
        lo = tl.maximum(lo, q0 - window + 1)
    lo = (lo // BLOCK_N) * BLOCK_N
    hi = tl.minimum(start + length, n)
    if CAUSAL:
        hi = tl.minimum(hi, q0 + BLOCK_M)
    return lo, hi


@triton.jit
def forward_kernel(Q, K, V, O, LSE, STARTS, LENGTHS,
                   sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
                   n, n_heads, group, dh, dv, scale, softcap, window,
                   CAUSAL: tl.constexpr, HAS_CAP: tl.constexpr, HAS_WINDOW: tl.constexpr, IEEE: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr):
    """Flash attention forward: O (B, n, H, dv) and LSE (B, H, n) fp32, natural log (−inf: no visible key)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // n_heads).to(tl.int64)  # 64-bit offsets: b · stride passes 2^31 for a few 128K-token rows
    h = (bh % n_heads).to(tl.int64)
    hk = h // group
    start = tl.load(STARTS + b)
    length = tl.load(LENGTHS + b)
    q0 = pid_m * BLOCK_M
    offs_m = q0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, DH)
    offs_v = tl.arange(0, DV)
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqn + offs_d[None, :],
                mask=(offs_m[:, None] < n) & (offs_d[None, :] < dh), other=0.0)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, DV), tl.float32)
    lo, hi = _key_range(q0, start, length, n, window, BLOCK_M, BLOCK_N, CAUSAL, HAS_WINDOW)
    for k0 in range(lo, hi, BLOCK_N):
        offs_n = k0 + tl.arange(0, BLOCK_N)
        k = tl.load(K + b * skb + hk * skh + offs_n[:, None] * skn + offs_d[None, :],
                    mask=(offs_n[:, None] < n) & (offs_d[None, :] < dh), other=0.0)
        s = _scores(q, k, scale, softcap, HAS_CAP, IEEE)
        s = tl.where(_visible(offs_m, offs_n, start, length, n, window, CAUSAL, HAS_WINDOW), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet stay at 0
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + b * svb + hk * svh + offs_n[:, None] * svn + offs_v[None, :],
                    mask=(offs_n[:, None] < n) & (offs_v[None, :] < dv), other=0.0)
        acc = acc * alpha[:, None] + _pv(p, v, IEEE)
        m_i = m_new
    seen = l_i > 0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    lse = tl.where(seen, m_i + tl.log(tl.where(seen, l_i, 1.0)), float("-inf"))
    tl.store(O + b * sob + h * soh + offs_m[:, None] * son + offs_v[None, :], out.to(O.dtype.element_ty),
             mask=(offs_m[:, None] < n) & (offs_v[None, :] < dv))
    tl.store(LSE + (b * n_heads + h) * n + offs_m, lse, mask=offs_m < n)


@triton.jit
def profile_kernel(Q, K, LSE, STARTS, LENGTHS, MASS, CS,
                   sqb, sqh, sqn, skb, skh, skn,
                   n, n_heads, group, dh, scale, softcap, window, sinks, horizon,
                   CAUSAL: tl.constexpr, HAS_CAP: tl.constexpr, HAS_WINDOW: tl.constexpr, IEEE: tl.constexpr,
                   BLOCK: tl.constexpr, DH: tl.constexpr):
    """Add p = exp(s − lse) by distance |q − k| into MASS (B, H, n) and the common support into CS (B, H, horizon+1).

    MASS sums every valid query over non-sink keys; CS sums, for |d| ≤ horizon, the query-sides that see
    every distance 0 … horizon: rows with q_rel − sinks ≥ horizon for keys at or before the query, and
    (bidirectional layers) rows with q_rel ≥ sinks and length − 1 − q_rel ≥ horizon for keys after it.
    Both fp64, zero-initialised by the caller.
    """
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // n_heads).to(tl.int64)  # 64-bit offsets: b · stride passes 2^31 for a few 128K-token rows
    h = (bh % n_heads).to(tl.int64)
    hk = h // group
    start = tl.load(STARTS + b)
    length = tl.load(LENGTHS + b)
    q0 = pid_m * BLOCK
    i = tl.arange(0, BLOCK)
    offs_m = q0 + i
    offs_d = tl.arange(0, DH)
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqn + offs_d[None, :],
                mask=(offs_m[:, None] < n) & (offs_d[None, :] < dh), other=0.0)
    qrel = offs_m - start
    valid = (qrel >= 0) & (qrel < length) & (offs_m < n)
    lse = tl.where(valid, tl.load(LSE + (b * n_heads + h) * n + offs_m, mask=offs_m < n, other=0.0), 0.0)
    w_left = valid & (qrel - sinks >= horizon)
    w_right = valid & (qrel >= sinks) & (length - 1 - qrel >= horizon)
    rot = (i[:, None] - i[None, :] + BLOCK) % BLOCK  # r[i, m] = p[i, (i − m) mod BLOCK]
    lower = i[:, None] >= i[None, :]  # δ = m here, δ = m − BLOCK above
    mass_row = MASS + (b * n_heads + h) * n
    cs_row = CS + (b * n_heads + h) * (horizon + 1)
    lo, hi = _key_range(q0, start, length, n, window, BLOCK, BLOCK, CAUSAL, HAS_WINDOW)
    # tile k0's upper part (δ < 0) covers the distances of tile k0 + BLOCK's lower part: carry it over, one
    # atomic per distance and tile instead of two
    carry = tl.zeros((BLOCK,), tl.float32)
    d_carry = tl.zeros((BLOCK,), tl.int64) - 1
    for k0 in range(lo, hi, BLOCK):
        offs_n = k0 + i
        k = tl.load(K + b * skb + hk * skh + offs_n[:, None] * skn + offs_d[None, :],
                    mask=(offs_n[:, None] < n) & (offs_d[None, :] < dh), other=0.0)
        s = _scores(q, k, scale, softcap, HAS_CAP, IEEE)
        keep = _visible(offs_m, offs_n, start, length, n, window, CAUSAL, HAS_WINDOW)
        keep = keep & ((offs_n - start) >= sinks)[None, :]
        p = tl.where(keep, tl.exp(s - lse[:, None]), 0.0)
        r = tl.gather(p, rot, axis=1)
        d_lo = q0 - k0 + i
        d_hi = d_lo - BLOCK
        a_lo = tl.abs(d_lo)
        a_hi = tl.abs(d_hi)
        if CAUSAL:  # keys after the query hold exactly 0: skip their atomics
            ok_lo = d_lo >= 0
            ok_hi = d_hi >= 0
        else:
            ok_lo = a_lo < n
            ok_hi = a_hi < n
        tl.atomic_add(mass_row + a_lo, (tl.sum(tl.where(lower, r, 0.0), 0) + carry).to(tl.float64), mask=ok_lo)
        carry = tl.sum(tl.where(lower, 0.0, r), 0)
        d_carry = d_hi
        if (q0 - k0 < horizon + BLOCK) & (k0 - q0 < horizon + BLOCK):  # the tile holds some |d| ≤ horizon
            rl = tl.where(w_left[:, None], r, 0.0)
            cs_lo = tl.sum(tl.where(lower, rl, 0.0), 0)
            cs_hi = tl.sum(tl.where(lower, 0.0, rl), 0)
            if not CAUSAL:
                rr = tl.where(w_right[:, None], r, 0.0)
                cs_lo = tl.where(d_lo >= 0, cs_lo, tl.sum(tl.where(lower, rr, 0.0), 0))
                cs_hi = tl.where(d_hi >= 0, cs_hi, tl.sum(tl.where(lower, 0.0, rr), 0))
            tl.atomic_add(cs_row + a_lo, cs_lo.to(tl.float64), mask=ok_lo & (a_lo <= horizon))
            tl.atomic_add(cs_row + a_hi, cs_hi.to(tl.float64), mask=ok_hi & (a_hi <= horizon))
    a_carry = tl.abs(d_carry)
    if CAUSAL:  # noqa: SIM108 (a constexpr branch)
        ok_carry = d_carry >= 0
    else:
        ok_carry = a_carry < n
    tl.atomic_add(mass_row + a_carry, carry.to(tl.float64), mask=ok_carry)
