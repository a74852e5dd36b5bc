"""``gammalens sweep``: measure many models × corpora × contexts as one resumable job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gammalens.cli.failure import Interrupted, ctrl_c_is_an_error, stage


def sweep(
    spec: Annotated[Path, typer.Argument(help="A sweep spec (TOML): models × corpora × contexts × seeds … "
                                         "(docs/sweep.md, examples/sweep-tiny.toml).")],
    executor: Annotated[str | None, typer.Option(help="local (this process, or a process pool) or ray. "
                                                 "Default: the spec's, else local.")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address ('auto' after `ray start --head`). "
                                                "Default: a new local Ray instance.")] = None,
    max_parallel: Annotated[int | None, typer.Option(help="Cells measured at once. Default: 1 locally; as many "
                                                     "as Ray's resources allow.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show which cells would run and which are done; "
                                          "measure and record nothing.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Measure many models × corpora × contexts as one resumable job; the driver records every run."""
    from gammalens.claims.links import links_for_run
    from gammalens.sweep import run_sweep
    from gammalens.sweep.console import print_sweep

    finished: list[Any] = []

    def describe(kind: str) -> Interrupted | None:
        """After the sweep returned (its own interrupts are told by the driver): what it had finished."""
        if not finished:
            return None
        r = finished[0]
        if r.dry_run:
            return Interrupted(f"{kind} after the dry run; nothing was measured or recorded", exit_code=0, notice=True)
        counts = ", ".join(f"{r.count(s)} {s}" for s in ("done", "skipped", "failed"))
        if r.failed:
            return Interrupted(f"{kind} after the sweep finished ({counts}); the failed cells' reasons are in "
                               f"{r.options.out / (r.name + '.sweep.json')}")
        return Interrupted(f"{kind} after the sweep finished ({counts}); all its work was committed",
                           exit_code=0, notice=True)

    with ctrl_c_is_an_error(describe):  # the cells' stages are marked by publish and the driver; "done" here
        result = run_sweep(spec, dry_run=dry_run, progress=not quiet, executor=executor, address=address,
                           max_parallel=max_parallel, claim_links=links_for_run)
        finished.append(result)
        print_sweep(result)
        stage("done")
    if result.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to APP."""
    app.command()(sweep)
