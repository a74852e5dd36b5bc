"""The fused probe: exact distance profiles from two Triton passes, with no (n × n) tensor.

Pass 1 (:func:`~gammalens.probe.triton_kernels.forward_kernel`) is a flash-attention forward that
returns the layer's output and each query row's log-sum-exp; pass 2
(:func:`~gammalens.probe.triton_kernels.profile_kernel`) recomputes the scores block by block, turns
them into probabilities p = exp(s − lse) and adds them by distance into fp64 sums. The sink mass
(the first ``sink_tokens`` keys of each document, a (B, H, n, sinks) slice) and the pair counts (closed
forms of the document lengths) are computed here with PyTorch. Extra memory is O(B · H · n).

The same contract as the chunked path (:mod:`gammalens.probe.backend`): causal and bidirectional
layers, padding through the :class:`BatchLayout`, sliding windows, logit soft-capping, a custom scale,
grouped-query attention. It does not materialise probabilities, so observers that need them run on the
chunked path (:func:`resolve_backend` says so).

Backends: ``'chunked'`` (any device), ``'triton'`` (CUDA, or CPU under ``TRITON_INTERPRET=1``),
``'auto'`` (triton on CUDA when it is installed and no observer needs the probabilities, else chunked).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from typing import Any

import torch

from gammalens.errors import GammalensError, ModelError
from gammalens.probe import triton_kernels as tk
from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator

BACKENDS = ("auto", "chunked", "triton")


@functools.lru_cache(maxsize=1)
def triton_installed() -> bool:
    """Whether the ``triton`` package can be imported (without importing it; looked up once per process)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(requested: str, device: torch.device | str, needs_probabilities: bool) -> tuple[str, str | None]:
    """The backend that will run, and a one-line note when it differs from the request.

    Parameters
    ----------
    requested : {'auto', 'chunked', 'triton'}
        The user's choice.
    device : torch.device or str
        Where the model's attention runs.
    needs_probabilities : bool
        Whether an observer needs every chunk's probabilities (only the chunked path has them).
    """
    if requested not in BACKENDS:
        raise GammalensError(f"--backend must be one of {', '.join(BACKENDS)} (got {requested!r})")
    dev = torch.device(device)
    if requested == "chunked":
        return "chunked", None
    usable = triton_installed() and (dev.type == "cuda" or interpreting())
    if needs_probabilities:
        wanted = requested == "triton" or (usable and dev.type == "cuda")
        return "chunked", ("the triton backend does not materialise attention probabilities, which this "
                           "measurement's observers (e.g. sink measures) need: using the chunked backend"
                           if wanted else None)
    if requested == "auto":
        return ("triton", None) if (usable and dev.type == "cuda") else ("chunked", None)
    if not triton_installed():
        raise GammalensError("--backend triton needs the triton package: pip install 'gammalens[triton]'")
    if not usable:
        raise GammalensError(f"--backend triton runs on CUDA devices (got {dev}); set TRITON_INTERPRET=1 to run "
                             "its kernels in Triton's (slow) CPU interpreter, or use --backend chunked")
    return "triton", None


def fused_profile(accumulator: ProfileAccumulator, layer: int, query: torch.Tensor, key: torch.Tensor,
                  value: torch.Tensor, layout: BatchLayout, scale: float, causal: bool, softcap: float | None,
                  window: int | None, block: int | None = None) -> torch.Tensor:
    """Add one layer's exact profile to ``accumulator`` and return the layer's output.

    Parameters
    ----------
    query : torch.Tensor
        (B, H, n, dh), any float dtype.
    key, value : torch.Tensor
        (B, H_kv, n, dh) and (B, H_kv, n, dv); H is a multiple of H_kv (grouped-query attention).
    layout : BatchLayout
        Where each row's document sits; visibility is built from it (the model's mask tensor is not read).
    scale, causal, softcap, window
        The layer's score scale, causal flag, logit soft-cap (None: none) and sliding window (None: none).
    block : int or None
        Tile size (power of two ≥ 16); None: 64 on CUDA, 16 in the interpreter.

    Returns
    -------
    torch.Tensor
        (B, n, H, dv) in the value's dtype; rows of padding queries are 0.
    """

    B, H, n, dh = query.shape
    Hkv, dv = key.shape[1], value.shape[-1]
    if key.shape[2] != n:
        raise ModelError("the probe measures full-sequence forward passes only (no KV cache)")
    if H % Hkv:
        raise ModelError(f"{H} query heads cannot share {Hkv} key/value heads")
    dev = query.device
    layout = layout.to(dev)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (query, key, value))
    starts, lengths = layout.starts.contiguous(), layout.lengths.contiguous()
    blk = block or (16 if dev.type == "cpu" else 64)
    DH, DV = (max(16, triton_pow2(x)) for x in (dh, dv))
    common = dict(CAUSAL=causal, HAS_CAP=softcap is not None, HAS_WINDOW=window is not None,
                  IEEE=q.dtype == torch.float32 or interpreting())  # fp32 dots: see triton_kernels._scores
    cap, win = float(softcap or 1.0), int(window or 0)

    out = torch.empty(B, n, H, dv, dtype=value.dtype, device=dev)
    lse = torch.empty(B, H, n, dtype=torch.float32, device=dev)
    grid = (triton_cdiv(n, blk), B * H)
    S, Hz = accumulator.sink_tokens, accumulator.cs_horizon
    mass = torch.zeros(B, H, n, dtype=torch.float64, device=dev)
    cs = torch.zeros(B, H, Hz + 1, dtype=torch.float64, device=dev)
    # Triton launches on the current CUDA device, not the tensors': under device_map='auto' a layer may sit on
    # another GPU than the current one
    with torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext():
        tk.forward_kernel[grid](
            q, k, v, out, lse, starts, lengths,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(2), out.stride(1),
            n, H, H // Hkv, dh, dv, float(scale), cap, win, BLOCK_M=blk, BLOCK_N=blk, DH=DH, DV=DV, **common)
        tk.profile_kernel[grid](
            q, k, lse, starts, lengths, mass, cs,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            n, H, H // Hkv, dh, float(scale), cap, win, S, Hz, BLOCK=blk, DH=DH, **common)

    sink_sum = _sink_sums(q, k, lse, layout, S, scale, causal, softcap, window)
    counts = _counts(layout.lengths.clamp(max=n), n, S, Hz, window, causal)
    if causal:
        check_conservation(layer, mass, sink_sum, counts["sink_queries"])
    accumulator.add_distance_sums(layer, mass, cs, sink_sum, layout.doc_index, **counts)
    return out


class FusedKernelError(RuntimeError):
    """The fused kernels' sums are inconsistent (a kernel bug or miscompilation, not bad input)."""


def check_conservation(layer: int, mass: torch.Tensor, sink_sum: torch.Tensor, rows: torch.Tensor,
                       rtol: float = 1e-4) -> None:
    """Every causal query past the sinks spreads probability 1 over sink and non-sink keys: check the sums.

    Parameters
    ----------
    mass : torch.Tensor
        (B, H, n) non-sink mass by distance.
    sink_sum : torch.Tensor
        (B, H) sink mass of the queries past the sinks.
    rows : torch.Tensor
        (B,) number of those queries (earlier queries see only sink keys, so they add to neither sum).

    A runtime self-check that costs one reduction per layer: a log-sum-exp inconsistent with the profile
    pass's scores, or a lost tile, breaks it. Non-finite sums are left to the accumulator's NaN error.
    """
    got = mass.sum(-1) + sink_sum  # (B, H)
    want = rows.to(got)[:, None]
    if not bool(torch.isfinite(got).all()):
        return
    bad = (got - want).abs() > rtol * want.clamp(min=1.0)
    if bool(bad.any()):
        b, h = (int(i) for i in bad.nonzero()[0])
        raise FusedKernelError(f"fused probe, layer {layer}, head {h}: row {b}'s probabilities sum to "
                               f"{float(got[b, h]):.6g} over its {float(want[b, 0]):.0f} queries")


def _sink_sums(q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, layout: BatchLayout, sinks: int, scale: float,
               causal: bool, softcap: float | None, window: int | None) -> torch.Tensor:
    """(B, H) fp64 attention on each document's first ``sinks`` keys, summed over its queries past them."""
    B, H, n, _ = q.shape
    if sinks == 0:
        return torch.zeros(B, H, dtype=torch.float64, device=q.device)
    pos = layout.starts[:, None] + torch.arange(sinks, device=q.device)  # (B, S) sink key positions
    ks = k.gather(2, pos.clamp(0, n - 1)[:, None, :, None].expand(B, k.shape[1], sinks, k.shape[-1]))
    ks = ks.repeat_interleave(H // k.shape[1], dim=1).float().transpose(-1, -2)  # (B, H, dh, S)
    step = max(1, 2**26 // max(1, B * H * q.shape[-1]))  # fp32 query rows per matmul: ≤ 256 MiB at a time
    s = torch.cat([torch.matmul(q[:, :, i:i + step].float(), ks) for i in range(0, n, step)], dim=2) * scale
    if softcap is not None:  # s: (B, H, n, S)
        s = softcap * torch.tanh(s / softcap)
    qpos = torch.arange(n, device=q.device)
    q_rel = qpos[None, :] - layout.starts[:, None]  # (B, n)
    rows = (q_rel >= sinks) & (q_rel < layout.lengths[:, None])  # (B, n)
    d = qpos[None, :, None] - pos[:, None, :]  # (B, n, S)
    vis = rows[:, :, None] & (pos < (layout.starts + layout.lengths)[:, None])[:, None, :] & (pos < n)[:, None, :]
    if causal:
        vis &= d >= 0
    if window is not None:
        vis &= d < window
    p = torch.exp(s - lse[..., None]).masked_fill(~vis[:, None], 0.0)
    return p.double().sum((-1, -2))


def _counts(lengths: torch.Tensor, n: int, sinks: int, horizon: int, window: int | None,
            causal: bool) -> dict[str, torch.Tensor]:
    """Pair and query counts in closed form from the document lengths (B,): what the chunked path sums from masks.

    A query at q_rel sees the non-sink key at distance d ≥ 0 when sinks + d ≤ q_rel < length (and d < window);
    a key after it (bidirectional) at e ≥ 1 when max(0, sinks − e) ≤ q_rel < length − e.
    """
    L = lengths.to(torch.float64)[:, None]  # (B, 1)
    d = torch.arange(n, dtype=torch.float64, device=lengths.device)[None, :]
    left = (L - sinks - d).clamp(min=0)
    if window is not None:
        left = torch.where(d < window, left, 0.0)
    pairs = left.sum(0)
    q_cs = (L[:, 0] - sinks - horizon).clamp(min=0)
    if not causal:
        e = d[:, 1:]
        pairs[1:] += (L - e - (sinks - e).clamp(min=0)).clamp(min=0).sum(0)
        q_cs = q_cs + (L[:, 0] - horizon - sinks).clamp(min=0)
    return {"pairs": pairs, "queries_cs": q_cs, "sink_queries": (L[:, 0] - sinks).clamp(min=0)}


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def triton_pow2(x: int) -> int:
    """The smallest power of two ≥ x."""
    return 1 << max(0, (int(x) - 1).bit_length())


def no_mask(*args: Any, **kwargs: Any) -> None:
    """Mask builder registered while the fused probe runs: it takes visibility from the layout, so
    transformers builds no (B, 1, n, n) mask (16 GiB of booleans at 128K with a sliding window)."""
    return None
