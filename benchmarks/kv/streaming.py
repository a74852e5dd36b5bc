"""The hybrid and γ caches served end to end: chunked prefill *through* the cache, then greedy decoding (docs/kv.md).

The head-to-head (head_to_head.py) fills every cache from one full-attention prefill, as kvpress does. A deployed
GammaWindowCache also bounds the prefill: ``gammalens.kv.attention.prefill`` feeds the context in chunks, and each
chunk attends only to what the cache holds (sinks + each head's window; a retrieval head's whole context). This
script scores passkey retrieval that way, with the same needles as the head-to-head, and records the bytes held
and the process's peak RSS growth during each policy's prefill + decode (each policy in its own subprocess).

    OMP_NUM_THREADS=1 .venv-tf52/bin/python benchmarks/kv/streaming.py --run RUN_DIR --out docs/kv_streaming_smollm2.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

FIELDS = ["model", "context", "sample", "depth", "policy", "ratio", "score", "held_bytes", "full_bytes",
          "peak_rss_growth_mib", "prefill_s", "decode_s_per_token", "answer"]  # peak RSS: above the loaded model, so far


def child(spec: dict) -> list[dict]:
    import torch
    from head_to_head import needle_sample

    from gammalens.kv.attention import gamma_window_attention, prefill
    from gammalens.kv.cache import GammaWindowCache, cache_kwargs
    from gammalens.kv.plan import PlanConfig, load_retrieval, load_run, plan_from_tails
    from gammalens.model.load import load_model, resolve_model

    torch.set_num_threads(1)
    model, tok = load_model(resolve_model(spec["model"]))
    facts, tails, _manifest = load_run(spec["run"])
    retrieval = load_retrieval(spec["run"], facts)
    rows = []
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after the model: growth is the caches' and temporaries'
    for n, sample, depth in spec["jobs"]:
        rng = random.Random(f"passkey-{n}-{sample}")
        answer = str(rng.randrange(10000, 99999))
        needle = f"The pass key is {answer}. Remember it. {answer} is the pass key."
        ids = torch.tensor([needle_sample(tok, n, [needle], [depth], sample)])
        question = torch.tensor([tok.encode(" What is the pass key? The pass key is", add_special_tokens=False)])
        policy = spec["policy"]
        ratio = 0.0 if policy == "full" else spec["ratio"]
        if policy == "full":
            plan_windows, sinks = [[n + 64] * facts["n_kv_heads"]] * facts["n_layers"], 1
        else:
            cfg = PlanConfig(ratio=ratio, context=n, policy="hybrid" if policy.startswith("hybrid") else "gamma",
                             retrieval_share=0.5)
            plan = plan_from_tails(facts, tails, cfg, retrieval=retrieval)
            plan_windows, sinks = plan.window.tolist(), plan.sink_tokens
        cache = GammaWindowCache(plan_windows, sinks=sinks, block=512)
        with torch.no_grad(), gamma_window_attention(model, cache):
            t0 = time.perf_counter()
            prefill(model, ids, cache, chunk=512)
            prefill_s = time.perf_counter() - t0
            held = cache.nbytes()
            logits = model(question, use_cache=True, **cache_kwargs(model, cache)).logits[:, -1]
            out = [int(logits.argmax())]
            t0 = time.perf_counter()
            for _ in range(7):
                logits = model(torch.tensor([[out[-1]]]), use_cache=True, **cache_kwargs(model, cache)).logits[:, -1]
                out.append(int(logits.argmax()))
                if answer in tok.decode(out, skip_special_tokens=True).replace(" ", ""):
                    break
            dt = (time.perf_counter() - t0) / max(1, len(out) - 1)
        text = tok.decode(out, skip_special_tokens=True)
        full_bytes = 2 * facts["n_layers"] * facts["n_kv_heads"] * n * facts["head_dim"] * 4
        growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        rows.append({"model": spec["model"], "context": n, "sample": sample, "depth": depth, "policy": policy,
                     "ratio": ratio, "score": float(answer in text.replace(" ", "")), "held_bytes": held,
                     "full_bytes": full_bytes, "peak_rss_growth_mib": round(growth, 1),
                     "prefill_s": round(prefill_s, 2), "decode_s_per_token": round(dt, 4), "answer": text.strip()[:30]})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--run", help="run directory of this model, measured with --retrieval (required)")
    ap.add_argument("--out", type=Path, default=Path("docs/kv_streaming_smollm2.csv"))
    ap.add_argument("--contexts", default="2048,4096")
    ap.add_argument("--depths", default="0.1,0.3,0.5,0.7,0.9")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--policies", default="full,gamma_budget,hybrid_s0.5")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.run is None:
        ap.error("--run RUN_DIR is required")
    depths = [float(x) for x in args.depths.split(",")]
    jobs = [(int(n), s * len(depths) + i, d) for s in range(args.seeds) for n in args.contexts.split(",")
            for i, d in enumerate(depths)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for policy in args.policies.split(","):
            spec = {"model": args.model, "run": str(args.run), "policy": policy, "ratio": args.ratio, "jobs": jobs}
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                 text=True, check=True)
            rows = json.loads(out.stdout.strip().splitlines()[-1])
            writer.writerows(rows)
            fh.flush()
            acc = sum(r["score"] for r in rows) / len(rows)
            print(f"{policy}: passkey {acc:.3f} over {len(rows)} · held {rows[-1]['held_bytes'] / 2**20:.1f} MiB of "
                  f"{rows[-1]['full_bytes'] / 2**20:.1f} at n={rows[-1]['context']}", flush=True)
    print(args.out)


if __name__ == "__main__":
    main()
