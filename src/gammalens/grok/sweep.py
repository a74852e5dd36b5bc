"""The multi-seed test: grokking runs, non-grokking controls, sparse parity and the CKA-penalty intervention.

Each run is one ``<condition>_seed<k>.{csv,json}`` pair in the output folder, written atomically (the JSON
last); a run whose JSON exists is skipped, so the sweep can be interrupted (Ctrl-C, SIGTERM, a full disk) and
resumed. Runs are spread over worker processes (one thread each; Ctrl-C reaches the parent only, which
stops them). The conditions are :func:`conditions`; their sizes are stated in docs/grokking.md.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from gammalens.grok.experiment import GrokConfigError, RunConfig, RunResult, train_run
from gammalens.runs import atomic


@dataclass(frozen=True)
class SweepConfig:
    """Sizes of the sweep; defaults are the CPU-sized sweep committed in docs/grokking.md."""

    base: RunConfig = field(default_factory=RunConfig)  # the grokking condition
    grok_seeds: int = 16
    control_seeds: int = 4  # per control condition (weight decay 0; small training fraction)
    control_fraction: float = 0.15  # training fraction of the small-fraction control
    parity_seeds: int = 2
    parity_steps: int | None = None  # step budget of the sparse-parity runs (None: the base budget)
    penalty_seeds: int = 3
    penalty: float = 1.0  # λ of the CKA penalty
    workers: int = 1

    def __post_init__(self) -> None:
        counts = (self.grok_seeds, self.control_seeds, self.parity_seeds, self.penalty_seeds)
        if min(counts) < 0 or self.workers < 1 or (self.parity_steps is not None and self.parity_steps < 1):
            raise GrokConfigError("seed counts must be ≥ 0, workers and parity_steps ≥ 1")


def conditions(cfg: SweepConfig) -> list[tuple[str, RunConfig]]:
    """(run name, config) for every run, ordered so that each condition gets results early."""
    b = cfg.base
    make = {
        "grok": lambda s: replace(b, seed=s),
        "wd0": lambda s: replace(b, seed=s, weight_decay=0.0, stop_after_grok=None),
        "smallfrac": lambda s: replace(b, seed=s, train_fraction=cfg.control_fraction, stop_after_grok=None),
        "penalty": lambda s: replace(b, seed=s, cka_penalty=cfg.penalty),
        "parity": lambda s: replace(b, seed=s, task="parity", steps=cfg.parity_steps or b.steps),
    }
    counts = {"grok": cfg.grok_seeds, "wd0": cfg.control_seeds, "smallfrac": cfg.control_seeds,
              "penalty": cfg.penalty_seeds}
    runs: list[tuple[str, RunConfig]] = []
    rounds = max(counts.values(), default=0)
    for r in range(rounds):  # round-robin: grokking seeds interleaved with controls
        for cond, n in counts.items():
            per_round = 2 if cond == "grok" else 1
            for s in range(r * per_round, min(n, (r + 1) * per_round)):
                runs.append((f"{cond}_seed{s}", make[cond](s)))
    runs += [(f"parity_seed{s}", make["parity"](s)) for s in range(cfg.parity_seeds)]  # the costliest, last
    return runs


def planned(cfg: SweepConfig, only: Iterable[str] | None = None) -> list[tuple[str, RunConfig]]:
    """(run name, config) of every run of the sweep, or of the conditions in ``only``."""
    wanted = set(only) if only is not None else None
    return [(n, c) for n, c in conditions(cfg) if wanted is None or n.split("_seed")[0] in wanted]


def complete(out_dir: str | Path, names: Iterable[str]) -> list[str]:
    """The runs among ``names`` that are finished in ``out_dir`` (their JSON exists)."""
    return [n for n in names if (Path(out_dir) / f"{n}.json").is_file()]


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the whole process group; the parent decides


def _run_one(args: tuple[str, RunConfig, str]) -> str:
    import torch

    torch.set_num_threads(1)

    name, cfg, out = args
    r = train_run(cfg, out, name)
    return (f"{name}: grok_step={r.grok_step} fire_step={r.fire_step} lead={r.lead} "
            f"test_acc={r.final_test_acc:.3f} ({r.seconds:.0f} s)")


def run_sweep(cfg: SweepConfig, out_dir: str | Path, only: Iterable[str] | None = None) -> list[str]:
    """Run every missing run of the sweep into ``out_dir``; return one log line per run done now."""
    out = Path(out_dir)
    atomic.remove_stale_temps(out)  # what workers killed mid-write left (the folder is made by the first run)
    todo = [(n, c, str(out)) for n, c in planned(cfg, only) if not (out / f"{n}.json").exists()]
    lines: list[str] = []
    if cfg.workers == 1:
        for t in todo:
            lines.append(_run_one(t))
            print(lines[-1], flush=True)
        return lines
    import multiprocessing as mp

    try:
        with mp.get_context("spawn").Pool(cfg.workers, initializer=_worker_init) as pool:
            for line in pool.imap_unordered(_run_one, todo):
                lines.append(line)
                print(line, flush=True)
    finally:  # on an interrupt the pool was terminated (its workers are gone): their temporary files go too
        atomic.remove_stale_temps(out)
    return lines


def load_results(out_dir: str | Path) -> dict[str, RunResult]:
    """Every finished run in ``out_dir``, keyed by run name."""
    def order(path: Path) -> tuple[str, int]:  # grok_seed2 before grok_seed10
        cond, _, seed = path.stem.partition("_seed")
        return (cond, int(seed) if seed.isdigit() else -1)

    paths = sorted(Path(out_dir).glob("*.json"), key=order)
    return {p.stem: RunResult.from_dict(json.loads(p.read_text())) for p in paths}
