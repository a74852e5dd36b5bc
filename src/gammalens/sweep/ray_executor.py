"""The Ray executor: every cell a Ray task with declared resources, on this machine or a cluster.

Ray (``pip install 'gammalens[ray]'``) is imported only here. A cell on a CUDA device declares one GPU
(``gpus_per_cell`` overrides), so Ray places one cell per GPU on a multi-GPU workstation or cluster and
sets ``CUDA_VISIBLE_DEVICES`` for it. A task whose worker process dies (OOM killer, lost node) is
retried ``retries`` times; a cell that raises is not retried — its error comes back as a failed outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from gammalens.sweep.cell import CellOutcome, one_line, run_cell
from gammalens.sweep.plan import PlannedCell
from gammalens.sweep.spec import SweepError, SweepOptions

OnDone = Callable[[PlannedCell, CellOutcome], None]
CANCEL_GRACE_S = 30.0  # how long Ctrl-C waits for cancelled tasks to remove their partial folders


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SweepError("the ray executor needs Ray: pip install 'gammalens[ray]' (or use --executor local)") from None
    return ray


def gpus_for(cell: PlannedCell, options: SweepOptions) -> float:
    """GPUs a cell's task declares: ``gpus_per_cell`` if set, else 1 on a CUDA device (or ``auto``), else 0."""
    if options.gpus_per_cell is not None:
        return options.gpus_per_cell
    device = cell.config.device
    return 1.0 if device.startswith("cuda") or device == "auto" else 0.0


def run_ray(cells: Sequence[PlannedCell], options: SweepOptions, on_done: OnDone,
              claim_links: Any = None) -> None:
    """Run ``cells`` as Ray tasks; call ``on_done(cell, outcome)`` in this thread as each one finishes.

    Joins the running Ray instance if this process already called ``ray.init``; otherwise connects to
    ``options.address`` (``'auto'``: the cluster started with ``ray start``), or starts a local instance
    that is shut down afterwards. At most ``max_parallel`` tasks are in flight (default: all; Ray's
    resources decide how many run at once). Ctrl-C cancels the outstanding tasks — a running one gets a
    KeyboardInterrupt, so its run writer removes its partial folder — and waits for them to end.
    """
    ray = _ray()
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=options.address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise SweepError(f"cannot start or reach Ray at {options.address or 'a new local instance'}: "
                             f"{one_line(err)}") from None
        started = True
    task = ray.remote(run_cell)
    args = (str(options.out), options.report, options.threads, claim_links)
    total = ray.cluster_resources()
    waiting, inflight = [], {}
    for cell in cells:  # a task no node can ever hold would wait forever: fail it now
        gpus = gpus_for(cell, options)
        if gpus > total.get("GPU", 0) or options.cpus_per_cell > total.get("CPU", 0):
            on_done(cell, CellOutcome(ok=False, error=f"the Ray cluster has {total.get('CPU', 0):g} CPUs and "
                                      f"{total.get('GPU', 0):g} GPUs; the cell needs {options.cpus_per_cell:g} and "
                                      f"{gpus:g}"))
        else:
            waiting.append(cell)
    limit = options.max_parallel or max(len(waiting), 1)
    try:
        while waiting or inflight:
            while waiting and len(inflight) < limit:
                cell = waiting.pop(0)
                ref = task.options(num_cpus=options.cpus_per_cell, num_gpus=gpus_for(cell, options),
                                   max_retries=options.retries, retry_exceptions=False,
                                   name=f"gammalens-cell-{cell.index}-{cell.key}").remote(cell.settings, *args)
                inflight[ref] = cell
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                cell = inflight.pop(ref)
                try:
                    outcome = CellOutcome.from_dict(ray.get(ref))
                except ray.exceptions.RayError as err:  # worker lost beyond its retries, task cancelled, …
                    outcome = CellOutcome(ok=False, error=f"ray: {one_line(err)}")
                on_done(cell, outcome)
    except KeyboardInterrupt:
        for ref in inflight:
            ray.cancel(ref, force=False)
        if inflight:
            ray.wait(list(inflight), num_returns=len(inflight), timeout=CANCEL_GRACE_S)
        raise
    finally:
        if started:
            ray.shutdown()
