"""The local executor: cells one after another in this process, or in a pool of processes.

Needs nothing beyond gammalens. With ``max_parallel > 1`` each cell runs in a fresh process of a
``spawn`` pool (CUDA-safe); a worker that dies takes the pool with it, so the remaining cells are
reported as failed — use the Ray executor when workers may be lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gammalens.sweep.cell import CellOutcome, forget_model, one_line, run_cell
from gammalens.sweep.plan import PlannedCell
from gammalens.sweep.spec import SweepOptions

OnDone = Callable[[PlannedCell, CellOutcome], None]


def run_local(cells: Sequence[PlannedCell], options: SweepOptions, on_done: OnDone,
              claim_links: Any = None) -> None:
    """Measure ``cells``; call ``on_done(cell, outcome)`` in this thread as each one finishes.

    Ctrl-C stops the sweep: the cell in progress removes its partial run folder; cells not started are
    not started; a pooled cell already running finishes its (atomic) run directory, which a resumed
    sweep records without measuring again.
    """
    workers = options.max_parallel or 1
    args = (str(options.out), options.report, options.threads, claim_links)
    if workers == 1 or len(cells) == 1:
        try:
            for cell in cells:
                on_done(cell, CellOutcome.from_dict(run_cell(cell.settings, *args)))
        finally:
            forget_model()  # the caller (a notebook) does not keep the sweep's last model
        return

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(max_workers=min(workers, len(cells)), mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(run_cell, cell.settings, *args): cell for cell in cells}
        for future in as_completed(futures):
            try:
                outcome = CellOutcome.from_dict(future.result())
            except Exception as err:  # BrokenProcessPool: a worker died
                outcome = CellOutcome(ok=False, error=f"worker process lost ({one_line(err)})")
            on_done(futures[future], outcome)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
