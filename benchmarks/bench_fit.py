"""Benchmark the bootstrap refits at long context: the old one-block full fit against the blocked slope path.

A 128K-token run fits distances 1..65 536 per head and refits 200 document resamples per head and layer
(``gammalens.fit.bootstrap.bootstrap_gamma``). Until issue 14 part 4 every resample of a layer was one
``fit_power_law`` call over (R, H, D) arrays (~10 float64 temporaries of that size: 34 GB for an 8B layer);
now resamples go in blocks of ``BLOCK_ELEMENTS`` values through ``power_law_slope`` (one matrix–vector product
per block when every value is positive). Both run here on the same synthetic per-document profiles, alternating;
the script prints the median seconds, their ratio, the peak extra memory of each (tracemalloc) and the
largest |Δγ| between them.

    .venv/bin/python benchmarks/bench_fit.py                     # 8 heads × 16 384 distances, 200 resamples
    .venv/bin/python benchmarks/bench_fit.py --heads 32 --distances 65536 --skip-old   # an 8B layer at 128K
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np

from gammalens.fit.bootstrap import bootstrap_gamma, resample_counts
from gammalens.fit.power_law import fit_power_law


def old_bootstrap(d: np.ndarray, docs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The pre-block implementation, verbatim: every resample at once through the full fit."""
    N = docs.shape[0]
    boot = (counts.astype(np.float64) @ docs.reshape(N, -1)).reshape((counts.shape[0], *docs.shape[1:]))
    return -fit_power_law(d, boot).slope


def timed(fn, *args) -> tuple[float, int, np.ndarray]:
    tracemalloc.start()
    t = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--distances", type=int, default=16384)
    ap.add_argument("--docs", type=int, default=8)
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-old", action="store_true", help="time only the blocked path (the old one would not fit)")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    d = np.arange(1, a.distances + 1)
    docs = d ** -rng.uniform(0.3, 1.5, size=(1, a.heads, 1)) * rng.uniform(0.8, 1.2, size=(a.docs, a.heads, d.size))
    counts = resample_counts(a.docs, a.resamples, seed=0)
    paths = {"blocked slope": bootstrap_gamma} | ({} if a.skip_old else {"one-block full fit": old_bootstrap})
    seconds: dict[str, list[float]] = {k: [] for k in paths}
    peaks, outs = {}, {}
    for _ in range(a.repeats):
        for name, fn in paths.items():
            s, peak, outs[name] = timed(fn, d, docs, counts)
            seconds[name].append(s)
            peaks[name] = max(peaks.get(name, 0), peak)
    print(f"{a.resamples} resamples × {a.heads} heads × {a.distances} distances, {a.docs} documents")
    for name in paths:
        print(f"  {name:<20} {statistics.median(seconds[name]):8.2f} s   peak extra memory {peaks[name] / 2**20:8.0f} MiB")
    if not a.skip_old:
        ratio = statistics.median(seconds["one-block full fit"]) / statistics.median(seconds["blocked slope"])
        diff = float(np.nanmax(np.abs(outs["one-block full fit"] - outs["blocked slope"])))
        mem = peaks["one-block full fit"] / peaks["blocked slope"]
        print(f"  speed-up {ratio:.1f}×, memory {mem:.0f}× less, max |Δγ| = {diff:.1e}")


if __name__ == "__main__":
    main()
