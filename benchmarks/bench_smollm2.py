"""The measuring forward against the plain sdpa forward on the real SmolLM2-135M (30 layers, 9 heads, 3 KV heads).

Both variants run in one process on the same token ids (random, batch 1), interleaved, after one warm-up each;
the table gives the median seconds, their ratio, and the peak RSS growth of one forward of each (VmHWM reset
with /proc/self/clear_refs, as in ``bench_probe.py``). CPU, fp32.

    .venv/bin/python benchmarks/bench_smollm2.py --contexts 2048 8192 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_probe import _peak_rss_growth  # the same memory method as the probe benchmark


def forward(model, ids: torch.Tensor, measuring: bool) -> None:
    from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator
    from gammalens.probe.backend import DistanceProbe, probing

    n = ids.shape[1]
    with torch.inference_mode():
        if not measuring:
            model.model(input_ids=ids)  # the decoder stack: the probe never computes the LM head either
            return
        cfg = model.config
        acc = ProfileAccumulator(cfg.num_hidden_layers, cfg.num_attention_heads, 1, n - 1, n // 2, 1, ids.device)
        probe = DistanceProbe(acc)
        with probing(model, probe):
            probe.set_layout(BatchLayout.full(1, n, first_doc=0, device=ids.device))
            model.model(input_ids=ids)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contexts", type=int, nargs="+", default=[2048, 8192])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from gammalens.model.load import load_model, resolve_model

    model, _ = load_model(resolve_model("smollm2"))
    print(f"SmolLM2-135M-Instruct (Q4_1 dequantised to fp32), torch {torch.__version__}, {args.threads} threads")
    print(f"{'context':>8} {'sdpa s':>9} {'measuring s':>12} {'ratio':>7} {'sdpa peak MiB':>14} {'measuring peak MiB':>19}")
    for n in args.contexts:
        ids = torch.randint(0, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(n))
        times: dict[bool, list[float]] = {False: [], True: []}
        for m in (False, True):
            forward(model, ids, m)
        for r in range(args.repeats):
            for m in ((False, True) if r % 2 == 0 else (True, False)):
                t0 = time.perf_counter()
                forward(model, ids, m)
                times[m].append(time.perf_counter() - t0)
        peak = {m: _peak_rss_growth(lambda m=m, ids=ids: forward(model, ids, m))[0] for m in (False, True)}
        a, b = statistics.median(times[False]), statistics.median(times[True])
        print(f"{n:>8} {a:>9.2f} {b:>12.2f} {b / a:>7.2f} {peak[False]:>14.0f} {peak[True]:>19.0f}", flush=True)


if __name__ == "__main__":
    main()
