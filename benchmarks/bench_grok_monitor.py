"""Overhead of one CKAMonitor evaluation relative to one full-batch training step (issue 10).

For each setup (the CPU sweep's p = 31, d 32 model and the published p = 97, d 128 one) the script
times, interleaved in one process so machine noise hits both alike, the median of ``--repeats``:

- ``step``     one full-batch AdamW step (forward, backward, optimizer);
- ``monitor``  one ``CKAMonitor.evaluate``: probe forward with hooks (256 inputs), the four Gram-matrix
  HSICs per pair (debiased and biased) in float64.

and prints the ratio monitor/step and the amortised overhead at an evaluation every N steps.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_grok_monitor.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from gammalens.grok.monitor import CKAMonitor
from gammalens.grok.task import ToyTransformer, last_position, modular_addition

SETUPS = {"sweep (p=31, d=32, MLP 128)": (31, 0.5, 32, 128), "published (p=97, d=128, MLP 512)": (97, 0.5, 128, 512)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--every", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}")
    print("| setup | step (ms) | monitor eval (ms) | monitor/step | " +
          " | ".join(f"overhead every {n}" for n in args.every) + " |")
    print("|---|---|---|---|" + "---|" * len(args.every))
    for name, (p, frac, d, mlp) in SETUPS.items():
        split = modular_addition(p, frac, seed=0)
        torch.manual_seed(0)
        model = ToyTransformer(split.vocab, split.classes, 3, d_model=d, d_mlp=mlp)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=1.0)
        mon = CKAMonitor(model, split.x_train[:256], every=1, select=last_position)

        def step() -> None:
            loss = F.cross_entropy(model(split.x_train), split.y_train)  # noqa: B023
            opt.zero_grad()  # noqa: B023
            loss.backward()
            opt.step()  # noqa: B023

        step()
        mon.evaluate(0)  # warm-up
        ts, tm = [], []
        for i in range(args.repeats):
            t = time.perf_counter()
            step()
            ts.append(time.perf_counter() - t)
            t = time.perf_counter()
            mon.evaluate(i)
            tm.append(time.perf_counter() - t)
        s, m = statistics.median(ts), statistics.median(tm)
        over = " | ".join(f"{m / (n * s):.1%}" for n in args.every)
        print(f"| {name} | {1e3 * s:.1f} | {1e3 * m:.1f} | {m / s:.3f} | {over} |")


if __name__ == "__main__":
    main()
