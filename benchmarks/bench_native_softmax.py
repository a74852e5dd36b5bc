"""The chunked probe's per-chunk work after QKᵀ, PyTorch path vs the C kernel, on one layer's shapes.

Both variants take the same chunks of fp32 scores (queries in chunks of ``--chunk`` over the causal keys, as the
probe's plain causal path sees them) and produce the probabilities plus the distance and sink sums:

- ``torch``   future-mask fill, ``aten._softmax.out`` into a second buffer, the sink sums and zeroing, the
              skew-view GEMM of the diagonal sums (what ``DistanceProbe._profile`` ran before the kernel);
- ``native``  :class:`gammalens.probe.native.CausalSums` (softmax in place, sums in the same sweep, fp64).

Variants interleaved, fresh random scores each repeat, minimum and median of ``--repeats``; the ratio is torch /
native. Defaults: SmolLM2-135M's attention (9 heads, 3 KV heads) at 8192 tokens.

    .venv/bin/python benchmarks/bench_native_softmax.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gammalens.probe import native


def torch_path(buf: torch.Tensor, pbuf: torch.Tensor, B: int, H: int, n: int, c: int, sinks: int) -> None:
    future = torch.ones(c, c, dtype=torch.bool).triu(1)
    w = torch.ones(B, 2, c)
    for q0 in range(0, n, c):
        k = q0 + c
        s = buf[:B * H * c * k].view(B, H, c, k)
        s[..., q0:k].masked_fill_(future, float("-inf"))
        p = pbuf[:B * H * c * k].view(B, H, c, k)
        torch.ops.aten._softmax.out(s, -1, False, out=p)
        p[..., :sinks].sum(-1)
        p[..., :sinks] = 0
        skew = p.as_strided((B, H, c - 1, k), (H * c * k, c * k, k + 1, 1), p.storage_offset() + k + 2 - c)
        torch.matmul(w[:, None, :, 1:], skew)


def native_path(buf: torch.Tensor, B: int, H: int, n: int, c: int, sinks: int) -> None:
    sums = native.CausalSums(B, H, n, sinks, sinks + 64)
    for q0 in range(0, n, c):
        k = q0 + c
        sums.add(buf[:B * H * c * k].view(B, H, c, k), q0)
    sums.result()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--context", type=int, default=8192)
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--sinks", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(native.status())
    if native.kernel() is None:
        return
    B, H, n, c = 1, args.heads, args.context, args.chunk
    n -= n % c
    buf = torch.empty(B * H * c * n)
    pbuf = torch.empty_like(buf)
    times: dict[str, list[float]] = {"torch": [], "native": []}
    for r in range(args.repeats + 1):
        for name in (("torch", "native") if r % 2 else ("native", "torch")):
            buf.normal_()
            t0 = time.perf_counter()
            if name == "torch":
                torch_path(buf, pbuf, B, H, n, c, args.sinks)
            else:
                native_path(buf, B, H, n, c, args.sinks)
            if r:  # the first round warms up
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{H} heads, {n} tokens, chunks of {c}, {args.threads} threads, {args.repeats} repeats")
    for k, v in times.items():
        print(f"  {k:7s} median {med[k]:.3f} s   min {min(v):.3f} s")
    print(f"  torch / native: {med['torch'] / med['native']:.2f}× (median), {min(times['torch']) / min(times['native']):.2f}× (min)")


if __name__ == "__main__":
    main()
