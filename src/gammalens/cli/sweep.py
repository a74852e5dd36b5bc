"""``gammalens sweep``: measure many models × corpora × contexts as one resumable job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gammalens.cli.failure import ctrl_c_is_an_error


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

    with ctrl_c_is_an_error():
        result = run_sweep(spec, dry_run=dry_run, progress=not quiet, executor=executor, address=address,
                           max_parallel=max_parallel, claim_links=links_for_run)
    print_sweep(result)
    if result.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to APP."""
    app.command()(sweep)
