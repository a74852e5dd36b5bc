"""The sweep's final table: one row per cell (done / skipped / failed with the reason) and the counts."""

from __future__ import annotations

from typing import Any

from gammalens.sweep.driver import SweepResult
from gammalens.terminal import PIPE_WIDTH
from gammalens.terminal import console as terminal_console

STYLES = {"done": "green", "skipped": "dim", "failed": "red", "pending": "yellow"}


def print_sweep(result: SweepResult, file: Any = None) -> None:
    """Print every cell and a closing line ``done N · skipped N · failed N``.

    Output that is not a terminal (a log file, CI) gets a wide table, so no column is cut.
    """
    from rich.console import Console
    from rich.table import Table


    console = terminal_console() if file is None else Console(file=file, width=PIPE_WIDTH)
    title = f"sweep {result.name}" + (" (dry run)" if result.dry_run else "")
    table = Table(title=title, title_justify="left")
    for col, just in (("#", "right"), ("cell", "left"), ("hash", "left"), ("status", "left"), ("γ", "right"),
                      ("s", "right"), ("run / reason", "left")):
        table.add_column(col, justify=just, overflow="fold")
    for c in result.cells:
        gamma = f"{c.gamma:.3f}" if c.gamma is not None else ""
        detail = " · ".join(x for x in (c.run_id or "", c.reason) if x)
        table.add_row(str(c.index), c.label, c.key, f"[{STYLES[c.status]}]{c.status}[/]", gamma,
                      f"{c.seconds:.1f}" if c.seconds else "", detail)
    console.print(table)
    counts = " · ".join(f"{s} {result.count(s)}" for s in ("done", "skipped", "failed", "pending")
                        if s != "pending" or result.dry_run)
    measured = result.count("done") + result.count("failed")
    if not result.dry_run and measured == 0 and result.failed == 0:
        console.print(f"{counts} — every cell was already measured; nothing to do")
    else:
        console.print(f"{counts} — {result.wall_s:.1f} s")
