"""The sweep driver: plan the cells, skip what is done, run the rest, and be the atlas's only writer.

Workers write run directories (atomically) into the sweep's output folder and send back their paths;
the driver records each finished run in the atlas as it arrives, one transaction each, so DuckDB's
single-writer rule holds however many workers there are. After every cell it rewrites
``<out>/<spec>.sweep.json`` (atomically): each cell's status, run id and one-line error.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gammalens.atlas.record import record_run
from gammalens.errors import GammalensError
from gammalens.runs.writer import RunWriter
from gammalens.sweep.cell import CellOutcome, one_line
from gammalens.sweep.local import run_local
from gammalens.sweep.plan import PlannedCell, RunIndex, canonical, plan_cell, runs_in_atlas, runs_in_folder
from gammalens.sweep.ray_executor import run_ray
from gammalens.sweep.spec import SweepOptions, SweepSpec, load_spec

PAUSE_ENV = "_GAMMALENS_SWEEP_PAUSE_BEFORE_RECORD"  # test hook: seconds to sleep between a cell's run and its record


@dataclass(frozen=True)
class CellStatus:
    """The fate of one cell.

    Attributes
    ----------
    index : int
        1-based position in the spec.
    key : str
        Settings hash (the run directory's suffix).
    label : str
        ``model · corpus · T=context · seed``.
    status : str
        ``'done'`` (measured now), ``'skipped'`` (already measured), ``'failed'``, or in a dry run
        ``'pending'`` (would be measured).
    reason : str
        Why skipped or failed ('' for done).
    run_id : str or None
        The run directory's name.
    gamma : float or None
        Model-level γ of the run.
    seconds : float
        Wall time of the cell in its worker (s); 0 when not measured now.
    settings : dict
        The cell's settings, as its manifest records them.
    """

    index: int
    key: str
    label: str
    status: str
    reason: str = ""
    run_id: str | None = None
    gamma: float | None = None
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SweepResult:
    """Every cell's status, in spec order.

    Attributes
    ----------
    name : str
        The spec's stem.
    cells : list of CellStatus
    options : SweepOptions
    wall_s : float
        Wall time of the whole sweep (s).
    dry_run : bool
        Nothing was measured or recorded.
    """

    name: str
    cells: list[CellStatus]
    options: SweepOptions
    wall_s: float = 0.0
    dry_run: bool = False

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.cells)

    @property
    def failed(self) -> int:
        return self.count("failed")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "wall_s": round(self.wall_s, 3), "dry_run": self.dry_run,
                "counts": {s: self.count(s) for s in ("done", "skipped", "failed", "pending")},
                "cells": [c.to_dict() for c in self.cells]}

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in c.to_dict().items() if k != "settings"} for c in self.cells])


def _gamma(run_dir: Path) -> float | None:
    try:
        return (json.loads((run_dir / "manifest.json").read_text()).get("result") or {}).get("gamma")
    except (OSError, ValueError):
        return None


class _Driver:
    """Holds the statuses; records runs; writes the status file."""

    def __init__(self, spec: SweepSpec, cells: list[PlannedCell], dry_run: bool) -> None:
        self.spec, self.opts, self.dry_run = spec, spec.options, dry_run
        self.status: dict[int, CellStatus] = {}
        self.cells = cells
        self.bar: Any = None
        self.autosave = False  # off while planning (one save after it), on while cells finish

    def set(self, cell: PlannedCell, status: str, reason: str = "", run_dir: Path | None = None,
            run_id: str | None = None, gamma: float | None = None, seconds: float = 0.0) -> None:
        if run_dir is not None:
            run_id, gamma = run_dir.name, _gamma(run_dir)
        self.status[cell.index] = CellStatus(cell.index, cell.key, cell.label, status, reason, run_id, gamma,
                                             round(seconds, 3), cell.settings)
        if self.autosave and not self.dry_run:
            self.save()

    def record(self, run_dir: Path) -> None:
        if self.opts.record:

            record_run(run_dir, self.opts.atlas)

    def finished(self, cell: PlannedCell, outcome: CellOutcome) -> None:
        """A worker's outcome: record it (driver only) and update the status."""
        if not outcome.ok or outcome.run_dir is None:
            self.set(cell, "failed", outcome.error or "unknown error", seconds=outcome.seconds)
        else:
            run_dir = Path(outcome.run_dir)
            pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
            if pause > 0:
                print(f"gammalens-sweep: measured {run_dir.name}, recording in {pause} s", flush=True)
                time.sleep(pause)
            try:
                with _sigint_deferred():  # a Ctrl-C waits until the run is recorded and its status saved
                    self.record(run_dir)
                    self.set(cell, "done", run_dir=run_dir, seconds=outcome.seconds)
            except GammalensError as err:
                self.set(cell, "failed", f"measured as {run_dir.name} but not recorded: {one_line(err)}",
                         run_dir=run_dir, seconds=outcome.seconds)
        if self.bar is not None:
            s = self.status[cell.index]
            mark = {"done": "[green]done[/]", "failed": "[red]failed[/]"}[s.status]
            detail = f"γ={s.gamma:.3f}" if s.gamma is not None else s.reason
            self.bar[0].console.print(f"cell {cell.index} {mark} {cell.label} ({outcome.seconds:.1f} s) {detail}",
                                      highlight=False, markup=True)
            self.bar[0].update(self.bar[1], advance=1)

    def result(self, t0: float) -> SweepResult:
        return SweepResult(self.spec.name, [self.status[c.index] for c in self.cells if c.index in self.status],
                           self.opts, time.perf_counter() - t0, self.dry_run)

    def save(self) -> None:
        path = self.opts.out / f"{self.spec.name}.sweep.json"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.result(time.perf_counter()).to_dict() | {"wall_s": None}, indent=1,
                                  default=str) + "\n")
        os.replace(tmp, path)


def run_sweep(spec: SweepSpec | Path | str, *, dry_run: bool = False, progress: bool = False,
              claim_links: Callable[[Any], Sequence[Any]] | None = None, **overrides: Any) -> SweepResult:
    """Run a sweep: every cell of ``spec`` not yet measured, then record it; return every cell's status.

    Parameters
    ----------
    spec : SweepSpec or path to a TOML spec
    dry_run : bool
        Plan only: say which cells would run and which are done; write and record nothing.
    progress : bool
        Show cells done / total with an ETA, and one line per finished cell, on stderr.
    claim_links : callable, optional
        For cells' reports: a run → the claims it bears on (:func:`gammalens.claims.links.links_for_run`);
        a module-level function, so that it reaches worker processes.
    **overrides
        Fields of :class:`SweepOptions` (``executor``, ``address``, ``max_parallel`` …) replacing the spec's.

    Returns
    -------
    SweepResult
        ``result.failed`` counts the failed cells (the CLI exits 1 if any).

    Raises
    ------
    GammalensError
        A bad spec, an unusable atlas or output folder, or Ctrl-C (after the outstanding cells were
        cancelled; the finished ones stay recorded and a re-run resumes).

    Examples
    --------
    >>> r = run_sweep("examples/sweep-tiny.toml", executor="ray")     # doctest: +SKIP
    >>> r.count("done"), r.count("skipped"), r.failed                 # doctest: +SKIP
    (6, 0, 0)
    """
    t0 = time.perf_counter()
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec, **overrides)
    elif overrides:
        spec = SweepSpec(spec.name, spec.cells, SweepOptions(**(asdict(spec.options) | {
            k: v for k, v in overrides.items() if v is not None})))
    opts = spec.options
    cells = [plan_cell(i + 1, config) for i, config in enumerate(spec.cells)]
    driver = _Driver(spec, cells, dry_run)
    if not dry_run:

        RunWriter(opts.out)  # creates the folder and checks it is writable before any work
    in_folder = runs_in_folder(opts.out)
    in_atlas = runs_in_atlas(opts.atlas) if opts.record else RunIndex()

    todo: list[PlannedCell] = []
    first: dict[str, int] = {}
    for cell in cells:
        text = canonical(cell.settings)
        done_dir, recorded = in_folder.find(cell.settings), in_atlas.find(cell.settings)
        if cell.error is not None:
            driver.set(cell, "failed", cell.error)
        elif text in first:
            driver.set(cell, "skipped", f"same settings as cell {first[text]}")
        elif recorded is not None:
            driver.set(cell, "skipped", "in the atlas", run_id=recorded[0], gamma=recorded[1])
        elif done_dir is not None and (dry_run or not opts.record):
            driver.set(cell, "skipped", f"in {opts.out}" + (" (to record)" if opts.record else ""), run_dir=done_dir)
        elif done_dir is not None:
            try:
                with _sigint_deferred():
                    driver.record(done_dir)
                    driver.set(cell, "skipped", f"in {opts.out}; recorded now", run_dir=done_dir)
            except GammalensError as err:
                driver.set(cell, "failed", f"{done_dir.name} not recorded: {one_line(err)}", run_dir=done_dir)
        elif dry_run:
            driver.set(cell, "pending", "would be measured")
        else:
            todo.append(cell)
        first.setdefault(text, cell.index)
    if not dry_run:
        driver.save()
        driver.autosave = True
    if dry_run or not todo:
        return driver.result(t0)

    execute = run_ray if opts.executor == "ray" else run_local
    try:
        with _progress(progress, len(todo)) as driver.bar:
            execute(todo, opts, driver.finished, claim_links)
    except KeyboardInterrupt:
        n = sum(s.status == "done" for s in driver.status.values())
        raise GammalensError(f"interrupted: {n} cell(s) measured and recorded, {len(todo) - n} not; outstanding "
                             "cells were cancelled and left nothing half-written — run the same command to "
                             "resume") from None
    return driver.result(t0)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends: one atlas transaction (under a second) is not cut short.

    DuckDB turns a SIGINT inside a query into its own errors, which would mask the KeyboardInterrupt;
    the transaction would still roll back, but the user would see a traceback, not one line.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        caught.append(signum)
        if len(caught) > 1:  # a second Ctrl-C does not wait (the transaction still rolls back)
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


class _progress:
    """A rich progress bar (cells done / total, elapsed, ETA) on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self.p = enabled, total, None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.p = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("cells"),
                          TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                          console=Console(stderr=True, file=sys.stderr))
        self.p.start()
        return self.p, self.p.add_task("cells", total=self.total)

    def __exit__(self, *exc: Any) -> None:
        if self.p is not None:
            self.p.stop()
