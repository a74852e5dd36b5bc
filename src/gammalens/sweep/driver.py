"""The sweep driver: plan the cells, skip what is done, run the rest, and be the atlas's only writer.

Workers write run directories (atomically) into the sweep's output folder and send back their paths;
the driver records each finished run in the atlas as it arrives, one transaction each, so DuckDB's
single-writer rule holds however many workers there are. After every cell it rewrites
``<out>/<spec>.sweep.json`` (atomically, :mod:`gammalens.runs.atomic`): each cell's status, run id and one-line
error. The state file is a report, not the ledger: a re-run finds finished cells by their run directories and
the atlas, so a cell whose run directory is complete counts as done even where the state file could not be
written (a full disk).

Ctrl-C and SIGTERM are told in one true line (:class:`~gammalens.runs.atomic.Interrupted`): how many cells were
measured and recorded, and a run directory that is complete but not recorded yet; the cell in progress leaves
nothing half-written. Each cell passes the stages of :data:`gammalens.runs.atomic.STAGES` (``measured``,
``staged``, ``written`` in the cell; ``recording``, ``recorded`` here).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gammalens.atlas.record import record_run
from gammalens.errors import GammalensError
from gammalens.runs import atomic
from gammalens.runs.writer import RunWriter
from gammalens.sweep.cell import CellOutcome, one_line
from gammalens.sweep.local import run_local
from gammalens.sweep.plan import PlannedCell, RunIndex, canonical, plan_cell, runs_in_atlas, runs_in_folder
from gammalens.sweep.ray_executor import run_ray
from gammalens.sweep.spec import SweepError, SweepOptions, SweepSpec, load_spec

PAUSE_ENV = "_GAMMALENS_SWEEP_PAUSE_BEFORE_RECORD"  # test hook: seconds to sleep between a cell's run and its record
_sigint_deferred = atomic.deferred_signals  # Ctrl-C (and SIGTERM) wait for the end of an atlas transaction


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
        self.todo: list[PlannedCell] = []
        self.planning = True
        self.written: set[Path] = set()  # run directories the cells of this sweep committed
        self.recorded: set[Path] = set()  # … and those recorded in the atlas

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
            self.recorded.add(Path(run_dir))

    def finished(self, cell: PlannedCell, outcome: CellOutcome) -> None:
        """A worker's outcome: record it (driver only) and update the status."""
        if not outcome.ok or outcome.run_dir is None:
            self.set(cell, "failed", outcome.error or "unknown error", seconds=outcome.seconds)
        else:
            run_dir = Path(outcome.run_dir)
            self.written.add(run_dir)
            pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
            if pause > 0:
                print(f"gammalens-sweep: measured {run_dir.name}, recording in {pause} s", flush=True)
                time.sleep(pause)
            try:
                with atomic.deferred_signals():  # Ctrl-C or SIGTERM waits until the run is recorded, its status saved
                    atomic.stage("recording", run_dir=run_dir, record=self.opts.record)
                    self.record(run_dir)
                    self.set(cell, "done", run_dir=run_dir, seconds=outcome.seconds)
                    atomic.stage("recorded", recorded=self.opts.record)
            except atomic.AtomicWriteError:
                raise  # the state file: the sweep stops (run_sweep says what was kept)
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

    @property
    def state_path(self) -> Path:
        return self.opts.out / f"{self.spec.name}.sweep.json"

    def save(self) -> None:
        """Rewrite the state file atomically (:class:`~gammalens.runs.atomic.AtomicWriteError` if it cannot be)."""
        atomic.write_text(self.state_path, json.dumps(self.result(time.perf_counter()).to_dict() | {"wall_s": None},
                                                      indent=1, default=str) + "\n")

    def kept(self) -> tuple[int, list[Path]]:
        """(cells measured and recorded now, run directories complete but not recorded), on disk right now."""
        done = sum(s.status == "done" for s in self.status.values())
        loose = set(self.written) - self.recorded if self.opts.record else set()
        now = atomic.life()  # a cell interrupted after its commit, before its outcome reached us
        if now.get("stage") in ("written", "recording") and now.get("run_dir") is not None:
            if self.opts.record and Path(now["run_dir"]) not in self.recorded:
                loose.add(Path(now["run_dir"]))
            elif not self.opts.record and Path(now["run_dir"]) not in self.written:
                done += 1
        return done, sorted(p for p in loose if p.is_dir())

    def _kept_text(self, done: int, loose: list[Path]) -> str:
        verb = "measured and recorded" if self.opts.record else "measured"
        text = f"{done} cell(s) {verb}, {max(len(self.todo) - done, 0)} not"
        if loose:
            names = ", ".join(str(p) for p in loose)
            text += (f"; {names} {'is' if len(loose) == 1 else 'are'} complete but not recorded in the atlas yet — "
                     "the same command records it without measuring again")
        return text

    def interrupted(self, err: KeyboardInterrupt) -> atomic.Interrupted:
        """The one true line for Ctrl-C or SIGTERM during the sweep."""
        kind = "terminated (SIGTERM)" if isinstance(err, atomic.Terminated) else "interrupted"
        done, loose = self.kept()
        if self.planning:
            return atomic.Interrupted(f"{kind} while planning the sweep: no cell was measured, nothing was left "
                                      "half-written — run the same command to resume")
        if done == len(self.todo) and not loose and self.todo:
            return atomic.Interrupted(f"{kind} after every cell was measured{' and recorded' if self.opts.record else ''}"
                                      f" ({done}); the sweep's work was all committed, its state is in "
                                      f"{self.state_path}", exit_code=0, notice=True)
        return atomic.Interrupted(f"{kind}: {self._kept_text(done, loose)}; outstanding cells were cancelled and "
                                  "left nothing half-written — run the same command to resume")

    def state_failed(self, err: atomic.AtomicWriteError) -> SweepError:
        """The one line for a state file that cannot be written (a full disk)."""
        done, loose = self.kept()
        return SweepError(f"cannot update the sweep state {err.path} ({err.strerror}); {self._kept_text(done, loose)}"
                          " — the state file is out of date, but a re-run finds the finished cells by their run "
                          "directories; nothing was left half-written — free some space and run the same command to "
                          "resume")


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
        atomic.remove_stale_temps(opts.out)  # state files of sweeps killed by SIGKILL mid-write
    try:
        return _run(driver, cells, t0, progress, claim_links)
    except KeyboardInterrupt as err:
        raise driver.interrupted(err) from None
    except atomic.AtomicWriteError as err:
        if err.path != driver.state_path:
            raise
        raise driver.state_failed(err) from None


def _run(driver: _Driver, cells: list[PlannedCell], t0: float, progress: bool,
         claim_links: Callable[[Any], Sequence[Any]] | None) -> SweepResult:
    opts, dry_run = driver.opts, driver.dry_run
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
                with atomic.deferred_signals():
                    driver.record(done_dir)
                    driver.set(cell, "skipped", f"in {opts.out}; recorded now", run_dir=done_dir)
            except GammalensError as err:
                driver.set(cell, "failed", f"{done_dir.name} not recorded: {one_line(err)}", run_dir=done_dir)
        elif dry_run:
            driver.set(cell, "pending", "would be measured")
        else:
            todo.append(cell)
        first.setdefault(text, cell.index)
    driver.todo, driver.planning = todo, False
    if not dry_run:
        driver.save()
        driver.autosave = True
    if dry_run or not todo:
        return driver.result(t0)

    execute = run_ray if opts.executor == "ray" else run_local
    with _progress(progress, len(todo)) as driver.bar:
        execute(todo, opts, driver.finished, claim_links)
    return driver.result(t0)


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
