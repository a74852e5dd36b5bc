"""Benchmark the book's estimator: gammalens's last-row probe against the tool's own eager loop.

Both compute the same A(d) (the last query's weight on key 49, mean over heads and layers, then
windows) on the same model, windows and seed, in one process, alternating:

- ``last_row``  :func:`gammalens.taf.taf_gamma`: sdpa forwards of the model body, batched, with
  :class:`~gammalens.probe.last_row.LastRowProbe` recomputing only the last query row per layer;
- ``tool``      tafagent ``diagnose_model.py``'s loop: one window per forward of the whole model with
  eager attention and ``output_attentions=True`` (every layer's n×n matrix per head), as published.

Prints the seconds of each (median over ``--repeats``), their ratio and the largest relative difference
of A(d) between them.

    .venv/bin/python benchmarks/bench_taf.py                              # gammalens-tiny, d ≤ 200
    .venv/bin/python benchmarks/bench_taf.py --model minilm --windows 10
    .venv/bin/python benchmarks/bench_taf.py --windows 4 --allow-extrapolation   # all nine d, up to 2050 tokens
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
import torch


def tool_loop(model, distances, windows: int, seed: int, vocab_size: int) -> list[float]:
    """``measure_attn_distance`` of diagnose_model.py, per distance (one window per forward)."""
    out = []
    for d in distances:
        rng, seq_len = random.Random(seed), d + 50
        values = []
        for _ in range(windows):
            tokens = [rng.randint(1000, min(vocab_size - 1, 49_000)) for _ in range(seq_len)]
            with torch.no_grad():
                res = model(torch.tensor([tokens]), output_attentions=True, return_dict=True)
            vals = [float(np.mean(w[np.isfinite(w)])) for w in
                    (a[0, :, seq_len - 1, seq_len - d - 1].float().numpy() for a in res.attentions)]
            values.append(float(np.mean(vals)))
        out.append(float(np.mean(values)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gammalens-tiny")
    ap.add_argument("--windows", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--allow-extrapolation", action="store_true", help="measure d + 50 beyond the model's positions")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from gammalens.model.load import load_model, resolve_model
    from gammalens.taf import taf_gamma

    src = resolve_model(args.model)
    net, tok = load_model(src)
    eager, _ = load_model(src)
    eager.set_attn_implementation("eager")
    times: dict[str, list[float]] = {"last_row": [], "tool": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        r = taf_gamma(loaded=(net, tok), windows=args.windows, batch_size=8,
                      allow_extrapolation=args.allow_extrapolation)
        times["last_row"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = tool_loop(eager, r.distances, args.windows, 42, tok.vocab_size)
        times["tool"].append(time.perf_counter() - t0)
    diff = float(np.max(np.abs(np.array(r.attention) - ref) / np.array(ref)))
    a, b = statistics.median(times["last_row"]), statistics.median(times["tool"])
    print(f"{args.model} · d ∈ {list(r.distances)} · {args.windows} windows per d · {args.threads} thread(s)")
    print(f"last_row (gammalens) {a:.2f} s · tool (eager output_attentions, batch 1) {b:.2f} s · "
          f"tool/last_row = {b / a:.1f}× · max |ΔA|/A = {diff:.1e} · γ_taf = {r.gamma:.4f}")


if __name__ == "__main__":
    main()
