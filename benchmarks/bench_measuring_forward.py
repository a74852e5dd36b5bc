"""The measuring forward against the plain sdpa forward and against its own floor, on real decoders.

Three variants of the decoder stack (no LM head) run in one process on the same random token ids (batch 1,
fp32), interleaved, after one warm-up each:

- ``sdpa``       the plain forward: what the model costs without measuring;
- ``limit``      the irreducible work of an exact probe: the plain sdpa forward plus, per layer, QKᵀ by query
                 chunks over the keys a causal chunk can see (one grouped GEMM per chunk) and one exp and one
                 reduction per score — no max/sum passes, no P·V, no bookkeeping. Its output is not a profile;
                 it is the floor the measuring forward is compared with;
- ``measuring``  the forward with :class:`~gammalens.probe.backend.DistanceProbe` installed (``--backend``);
- ``reuse``      (optional) the floor of the probe's own design, which computes the layer's output from the
                 probabilities it measures instead of calling sdpa: QKᵀ, one exp, P·V and one row sum and one
                 column sum per chunk, nothing else;
- ``sinks``      (optional) the measuring forward with the sink observer of ``gammalens sinks`` attached
                 (k = 1, 4, 16): what the sink measures cost on top;
- ``baseline``   (with ``--baseline-rev REV``) the probe modules as they were at git revision REV, in the same
                 process (before/after ratios from one run).

The table gives the median seconds, the ratios to sdpa, and the peak RSS growth of one forward of each (VmHWM
reset with /proc/self/clear_refs, the heap trimmed and large allocations sent to mmap, as in ``bench_probe.py``;
``--no-memory`` skips it, ``--memory-variants`` limits it, ``--memory-only`` skips the timings). Each finished row is
appended to ``--csv`` at once, so a long run that is stopped keeps its rows. Contexts at or above
``--single-above`` run once without warm-up (a 16384-token forward of Qwen2.5-Coder-0.5B takes minutes here).

    .venv/bin/python benchmarks/bench_measuring_forward.py --models smollm2 qwen2.5-coder-0.5b \
        --contexts 2048 8192 16384 --repeats 3 --csv docs/bench_measuring_forward.csv
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_probe import _peak_rss_growth, baseline_probe  # the same memory method; the probe at a git revision

VARIANTS = ("sdpa", "limit", "measuring")
BASELINE: tuple = ()  # (accumulate, backend) modules at --baseline-rev
FIELDS = ("date", "machine", "threads", "load1", "torch", "transformers", "model", "context", "variant", "repeats",
          "median_s", "ratio_to_sdpa", "peak_mib", "backend", "chunk")


def limit_attention(chunk: int) -> Callable:
    """An ``AttentionInterface`` function: sdpa's output plus the floor of an exact probe's extra work."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def attend(module, query, key, value, attention_mask, **kwargs):
        out = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
        B, H, n, dh = query.shape
        Hkv = key.shape[1]
        g = H // Hkv
        scale = kwargs.get("scaling") or dh**-0.5
        q = (query.float() * scale).view(B, Hkv, g, n, dh)
        kt = key.float().transpose(-1, -2)  # (B, Hkv, dh, n)
        col = torch.zeros(B, H, n)
        buf = torch.empty(B * H * chunk * n)
        for q0 in range(0, n, chunk):
            q1 = min(n, q0 + chunk)
            c = q1 - q0
            s = buf[: B * H * c * q1].view(B, Hkv, g * c, q1)
            torch.matmul(q[:, :, :, q0:q1].reshape(B, Hkv, g * c, dh), kt[..., :q1], out=s)
            s.exp_()  # one exp per score ...
            col[..., :q1] += s.view(B, H, c, q1).sum(-2)  # ... and one reduction
        return out

    return attend


def reuse_attention(chunk: int) -> Callable:
    """An ``AttentionInterface`` function: the floor of computing the output from the measured probabilities."""

    def attend(module, query, key, value, attention_mask, **kwargs):
        B, H, n, dh = query.shape
        Hkv, dv = key.shape[1], value.shape[-1]
        g = H // Hkv
        scale = kwargs.get("scaling") or dh**-0.5
        q = (query.float() * scale).view(B, Hkv, g, n, dh)
        kt, v = key.float().transpose(-1, -2), value.float()
        out = query.new_empty(B, Hkv, g * n, dv)
        col = torch.zeros(B, H, n)
        buf = torch.empty(B * H * chunk * n)
        for q0 in range(0, n, chunk):
            q1 = min(n, q0 + chunk)
            c = q1 - q0
            s = buf[: B * H * c * q1].view(B, Hkv, g * c, q1)
            torch.matmul(q[:, :, :, q0:q1].reshape(B, Hkv, g * c, dh), kt[..., :q1], out=s)
            s.exp_()
            o = torch.matmul(s, v[:, :, :q1]) / s.sum(-1, keepdim=True)  # (B, Hkv, g·c, dv), unmasked: timing only
            out.view(B, Hkv, g, n, dv)[:, :, :, q0:q1] = o.view(B, Hkv, g, c, dv)
            col[..., :q1] += s.view(B, H, c, q1).sum(-2)
        return out.view(B, H, n, dv).transpose(1, 2), None

    return attend


def forward(model, ids: torch.Tensor, variant: str, probe_backend: str, chunk: int) -> int | None:
    """One forward of the decoder stack; returns the probe's chunk size (measuring) or None."""
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import AttentionInterface

    from gammalens.probe import accumulate, backend

    if variant == "baseline":
        accumulate, backend = BASELINE  # the probe at --baseline-rev
    n = ids.shape[1]
    with torch.inference_mode():
        if variant == "sdpa":
            model.model(input_ids=ids)
            return None
        if variant in ("limit", "reuse"):
            name = f"bench_{variant}"
            AttentionInterface.register(name, (limit_attention if variant == "limit" else reuse_attention)(chunk))
            AttentionMaskInterface.register(name, sdpa_mask)
            model.set_attn_implementation(name)
            try:
                model.model(input_ids=ids)
            finally:
                model.set_attn_implementation("sdpa")
            return chunk
        cfg = model.config
        acc = accumulate.ProfileAccumulator(cfg.num_hidden_layers, cfg.num_attention_heads, 1, n - 1, n // 2, 1,
                                            ids.device)
        if variant == "sinks":
            from gammalens.sinks.measures import SinkObserver

            observers = [SinkObserver(cfg.num_hidden_layers, cfg.num_attention_heads, 1, (1, 4, 16))]
            probe = backend.DistanceProbe(acc, observers=observers)
        elif variant == "measuring":
            probe = backend.DistanceProbe(acc, backend=probe_backend)
        else:
            probe = backend.DistanceProbe(acc)
        with backend.probing(model, probe):
            probe.set_layout(accumulate.BatchLayout.full(1, n, first_doc=0, device=ids.device))
            model.model(input_ids=ids)
        return probe.chunk_


def bench_model(name: str, args: argparse.Namespace, writer: csv.DictWriter | None) -> None:
    import transformers

    from gammalens.model.load import load_model, resolve_model

    model, _ = load_model(resolve_model(name))
    model.set_attn_implementation("sdpa")
    cfg = model.config
    variants = VARIANTS + tuple(v for v, on in (("reuse", args.reuse), ("sinks", args.sinks),
                                                 ("baseline", args.baseline_rev)) if on)
    print(f"\n{name}: {cfg.num_hidden_layers} layers, {cfg.num_attention_heads} heads, "
          f"{cfg.num_key_value_heads} KV heads, fp32, {args.threads} threads, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print(f"{'context':>8} " + " ".join(f"{v + ' s':>11}" for v in variants) + " "
          + " ".join(f"{v + '/sdpa':>14}" for v in variants[1:]) + f" {'meas./limit':>12}  peak MiB ({'/'.join(variants)})")
    for n in args.contexts:
        ids = torch.randint(0, cfg.vocab_size, (1, n), generator=torch.Generator().manual_seed(n))
        single = n >= args.single_above
        repeats = 1 if single else args.repeats
        times: dict[str, list[float]] = {v: [] for v in variants}
        chunks: dict[str, int | None] = {}
        measured = [u for u in variants if not args.memory_variants or u in args.memory_variants]
        if not single or args.memory_only:
            for v in (measured if args.memory_only else variants):
                chunks[v] = forward(model, ids, v, args.backend, args.limit_chunk)
        for r in range(0 if args.memory_only else repeats):
            for v in (variants if r % 2 == 0 else variants[::-1]):
                t0 = time.perf_counter()
                chunks[v] = forward(model, ids, v, args.backend, args.limit_chunk)
                times[v].append(time.perf_counter() - t0)
        peak = {v: float("nan") for v in variants}
        if not args.no_memory:
            for v in measured:
                peak[v] = _peak_rss_growth(lambda v=v, ids=ids: forward(model, ids, v, args.backend, args.limit_chunk))[0]
        med = {v: statistics.median(times[v]) if times[v] else float("nan") for v in variants}
        print(f"{n:>8} " + " ".join(f"{med[v]:>11.2f}" for v in variants) + " "
              + " ".join(f"{med[v] / med['sdpa']:>13.2f}×" for v in variants[1:])
              + f" {med['measuring'] / med['limit']:>11.2f}×  " + "/".join(f"{peak[v]:.0f}" for v in variants), flush=True)
        if writer is not None:
            for v in (u for u in variants if times[u] or peak[u] == peak[u]):  # skip rows with nothing measured
                writer.writerow({
                    "date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
                    "threads": args.threads, "load1": round(os.getloadavg()[0], 2), "torch": torch.__version__,
                    "transformers": transformers.__version__, "model": name, "context": n,
                    "variant": f"baseline@{args.baseline_rev}" if v == "baseline" else v,
                    "repeats": len(times[v]), "median_s": _cell(med[v]), "ratio_to_sdpa": _cell(med[v] / med["sdpa"]),
                    "peak_mib": _cell(peak[v], 1), "backend": args.backend if v == "measuring" else "",
                    "chunk": chunks.get(v) or "",
                })
            args.csv_file.flush()


def _cell(x: float, digits: int = 4) -> float | str:
    return "" if x != x else round(x, digits)  # NaN (not measured) → empty cell


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["smollm2"], help="catalog short names or model paths")
    p.add_argument("--contexts", type=int, nargs="+", default=[2048, 8192])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--single-above", type=int, default=16384, help="contexts ≥ this run once, without warm-up")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="chunked", choices=["chunked", "auto", "triton"])
    p.add_argument("--limit-chunk", type=int, default=256, help="query chunk of the limit variant")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--memory-variants", nargs="+", default=None, help="measure peak RSS of these variants only")
    p.add_argument("--memory-only", action="store_true", help="one warm-up and the memory pass, no timings")
    p.add_argument("--reuse", action="store_true", help="also time the floor of the probe's own design")
    p.add_argument("--sinks", action="store_true", help="also time the measuring forward with the sink observer")
    p.add_argument("--baseline-rev", default=None, help="also time the probe as it was at this git revision")
    p.add_argument("--csv", type=Path, help="append one row per (model, context, variant)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.baseline_rev:
        global BASELINE
        BASELINE = baseline_probe(args.baseline_rev)
    print(f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    writer = None
    if args.csv:
        new = not args.csv.exists()
        args.csv_file = args.csv.open("a", newline="")
        writer = csv.DictWriter(args.csv_file, FIELDS)
        if new:
            writer.writeheader()
    for name in args.models:
        bench_model(name, args, writer)


if __name__ == "__main__":
    main()
