"""Benchmark a sweep: the local executor (one cell after another, in this process) against Ray with N workers.

The same small cells (gammalens-tiny at several contexts × seeds on stdlib text) are measured four
ways into fresh output folders and atlases, in one run:

- ``local cold``  ``run_sweep(executor="local")``: sequential, in this process, one torch thread; the
                  first cell imports torch and transformers;
- ``ray cold``    ``run_sweep(executor="ray")`` on a Ray instance just started with ``num_cpus=N``: its
                  worker processes still have to start and import torch/transformers;
- ``local warm``  the local sweep again in the same process, into a new folder;
- ``ray warm``    the Ray sweep again on the same instance (workers reused), into a new folder;
                  the warm passes alternate ``--repeats`` times and the median by wall time is reported.

Cold compares first sweeps of fresh processes; warm compares steady state (the ratio that matters
for long sweeps).

Reported: wall times, the local/Ray wall-time ratio, and Ray's overhead per cell,
``(N · wall − Σ cell seconds) / cells`` — the worker-seconds per cell not spent inside a cell (task
dispatch, worker start-up and imports, result transfer, idle workers at the end). Ray's own start-up
(``ray.init``) is timed apart. Every cell records into its own atlas through the driver, as in use.

    .venv/bin/python benchmarks/bench_sweep.py                     # 8 cells, 2 workers
    .venv/bin/python benchmarks/bench_sweep.py --contexts 64 128 256 512 1024 --seeds 0 1 --workers 2
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def spec_text(contexts: list[int], seeds: list[int], windows: int, bootstrap: int, out: str) -> str:
    return (f'[sweep]\nout = "{out}"\natlas = "{out}.duckdb"\nthreads = 1\n\n'
            f"[defaults]\nwindows = {windows}\nbootstrap = {bootstrap}\n\n"
            f'[grid]\nmodels = ["gammalens-tiny"]\ncontexts = {contexts}\nseeds = {seeds}\n')


def timed_sweep(folder: Path, name: str, args: argparse.Namespace, **kw: object) -> tuple[float, float, int]:
    """(wall s, Σ in-cell s, cells done) of one sweep into ``folder/name``."""
    from gammalens.sweep import run_sweep

    spec = folder / f"{name}.toml"
    spec.write_text(spec_text(args.contexts, args.seeds, args.windows, args.bootstrap, name))
    t0 = time.perf_counter()
    result = run_sweep(spec, **kw)
    wall = time.perf_counter() - t0
    assert result.failed == 0, [c.reason for c in result.cells if c.status == "failed"]
    return wall, sum(c.seconds for c in result.cells), result.count("done")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="Ray CPUs = workers (one CPU and one thread per cell).")
    parser.add_argument("--repeats", type=int, default=3, help="Warm passes of each executor (median reported).")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ray
    import torch

    n = len(args.contexts) * len(args.seeds)
    print(f"# {n} cells: gammalens-tiny × contexts {args.contexts} × seeds {args.seeds}, {args.windows} windows, "
          f"bootstrap {args.bootstrap}; {os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}, "
          f"Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        local = timed_sweep(folder, "local-cold", args, executor="local")
        t0 = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        init_s = time.perf_counter() - t0
        try:
            cold = timed_sweep(folder, "ray-cold", args, executor="ray")
            # warm passes interleaved, so that the machine's load falls on both alike; medians by wall time
            local_runs, ray_runs = [], []
            for r in range(args.repeats):
                local_runs.append(timed_sweep(folder, f"local-warm-{r}", args, executor="local"))
                ray_runs.append(timed_sweep(folder, f"ray-warm-{r}", args, executor="ray"))
        finally:
            ray.shutdown()
    local_warm = sorted(local_runs)[len(local_runs) // 2]
    warm = sorted(ray_runs)[len(ray_runs) // 2]
    print(f"warm wall s, local: {[round(x[0], 2) for x in local_runs]}; ray: {[round(x[0], 2) for x in ray_runs]}")

    def overhead(run: tuple[float, float, int], workers: int) -> float:
        return (workers * run[0] - run[1]) / run[2]

    print("| executor | wall s | Σ cell s | local/ray (same temperature) | overhead s/cell |")
    print("|---|---:|---:|---:|---:|")
    rows = (("local cold", local, 1, local), ("local warm", local_warm, 1, local_warm),
            (f"ray cold ({args.workers} workers)", cold, args.workers, local),
            (f"ray warm ({args.workers} workers)", warm, args.workers, local_warm))
    for name, run, workers, ref in rows:
        print(f"| {name} | {run[0]:.2f} | {run[1]:.2f} | {ref[0] / run[0]:.2f} | {overhead(run, workers):.3f} |")
    print(f"ray.init (local instance, {args.workers} CPUs): {init_s:.2f} s, not included above; "
          f"local/(ray.init + ray cold) = {local[0] / (init_s + cold[0]):.2f}")


if __name__ == "__main__":
    main()
