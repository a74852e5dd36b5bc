"""Real memory and decode speed of the γ-window cache against transformers' DynamicCache (docs/kv.md).

For each context n and policy, in a fresh subprocess (so ``ru_maxrss`` is that configuration's peak):

1. **memory** — fill every layer of a cache with n tokens of keys/values (SmolLM2-135M's geometry: 30 layers,
   3 KV heads, head_dim 64, bf16) in 512-token chunks through ``cache.update``, the calls a chunked prefill
   makes; report the bytes held by the cache tensors and the process's peak RSS above its baseline;
2. **decode** — a random-init model with SmolLM2-135M's attention geometry (30 layers, 9 query / 3 KV heads,
   hidden 576; MLP narrowed to 64 and vocabulary to 1024 so CPU time goes to attention and cache) decodes
   16 tokens after the cache holds n tokens; report the median milliseconds per token.

The γ windows are the budget plan (compression ratio 0.75 at n) of a measured SmolLM2 run; ``hybrid`` is the
hybrid plan at the same ratio (retrieval share 0.5: the measured retrieval heads hold all n tokens; the run must
be measured with ``--retrieval``). Ratios (DynamicCache / policy) are printed for the same run. Results:
``docs/kv_cache_bench.csv``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kv/bench_cache.py --run RUN_DIR --out docs/kv_cache_bench.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHUNK = 512


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(policy: str, n: int, windows: list | None, sinks: int, decode: int) -> dict:
    import torch
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    from gammalens.kv.attention import gamma_window_attention
    from gammalens.kv.cache import GammaWindowCache, cache_kwargs

    torch.set_num_threads(1)
    torch.manual_seed(0)
    n_layers, n_kv, d = 30, 3, 64

    def new_cache():
        return DynamicCache() if policy == "dynamic" else GammaWindowCache(windows, sinks=sinks, block=CHUNK)  # γ, hybrid

    def fill(cache, dtype):
        for start in range(0, n, CHUNK):
            q = min(CHUNK, n - start)
            for layer in range(n_layers):
                k = torch.randn(1, n_kv, q, d, dtype=dtype)
                cache.update(k, torch.randn_like(k), layer)

    def nbytes(cache):
        if policy == "dynamic":
            return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
        return cache.nbytes()

    # 1. memory
    base = _rss_mib()
    cache = new_cache()
    t0 = time.perf_counter()
    fill(cache, torch.bfloat16)
    fill_s = time.perf_counter() - t0
    held = nbytes(cache)
    peak = _rss_mib() - base
    del cache
    # 2. decode speed
    cfg = LlamaConfig(vocab_size=1024, hidden_size=576, intermediate_size=64, num_hidden_layers=n_layers,
                      num_attention_heads=9, num_key_value_heads=n_kv, max_position_embeddings=max(n + decode, 2048),
                      rope_theta=100000.0)
    model = LlamaForCausalLM(cfg).eval()
    cache = new_cache()
    fill(cache, torch.float32)
    times = []
    ids = torch.tensor([[1]])
    ctx = gamma_window_attention(model, cache) if policy != "dynamic" else None
    with torch.no_grad():
        if ctx is not None:
            ctx.__enter__()
        try:
            for i in range(decode):
                t = time.perf_counter()
                model(ids, use_cache=True, position_ids=torch.tensor([[n + i]]), **cache_kwargs(model, cache))
                times.append(time.perf_counter() - t)
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
    return {"policy": policy, "context": n, "held_bytes": held, "peak_rss_mib": round(peak, 1),
            "fill_s": round(fill_s, 3), "decode_ms_per_token": round(1000 * statistics.median(times[2:]), 2)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="measured SmolLM2 run directory (its budget plan gives the windows)")
    ap.add_argument("--contexts", default="2048,8192,32768")
    ap.add_argument("--ratio", type=float, default=0.75)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--policies", default="dynamic,gamma,hybrid")
    ap.add_argument("--out", type=Path, default=Path("docs/kv_cache_bench.csv"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child(**spec)))
        return
    from gammalens.kv.plan import PlanConfig, plan_run

    rows = []
    policies = args.policies.split(",")
    for n in [int(x) for x in args.contexts.split(",")]:
        first = len(rows)
        for policy in policies:
            plan = None if policy == "dynamic" else plan_run(args.run, PlanConfig(
                ratio=args.ratio, context=n, policy="hybrid" if policy == "hybrid" else "gamma", retrieval_share=0.5))
            spec = {"policy": policy, "n": n, "windows": plan.window.tolist() if plan is not None else None,
                    "sinks": plan.sink_tokens if plan is not None else 1, "decode": args.decode}
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                 text=True, check=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["plan_tokens"] = int(plan.totals()["tokens"]) if plan is not None else 30 * 3 * n
            rows.append(row)
            print(row, flush=True)
        dyn = next((r for r in rows[first:] if r["policy"] == "dynamic"), None)
        for other in (r for r in rows[first:] if dyn is not None and r["policy"] != "dynamic"):
            print(f"n={n}: bytes dynamic/{other['policy']} = {dyn['held_bytes'] / other['held_bytes']:.2f}x, peak RSS "
                  f"= {dyn['peak_rss_mib'] / max(other['peak_rss_mib'], 0.1):.2f}x, decode ms/token = "
                  f"{dyn['decode_ms_per_token'] / other['decode_ms_per_token']:.2f}x", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(args.out)


if __name__ == "__main__":
    main()
