"""``gammalens report``: one self-contained HTML report of one or several runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more run directories written by `gammalens measure`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path("report.html"),
    atlas: Annotated[Path | None, typer.Option("--atlas", help="Atlas whose reference rows go on the atlas map. "
                                               "Default: the default atlas, when there is one.")] = None,
) -> None:
    """Write one self-contained HTML report (opens offline) of one or several runs."""
    from gammalens.atlas.store import default_atlas_path
    from gammalens.claims.links import links_for_run
    from gammalens.report import write_report

    if atlas is None and default_atlas_path().is_file():
        path = write_report(run_dirs, output, atlas=default_atlas_path(), atlas_required=False,
                            claim_links=links_for_run)
    else:
        path = write_report(run_dirs, output, atlas=atlas, claim_links=links_for_run)
    print(path)


def register(app: typer.Typer) -> None:
    """Add ``report`` to APP."""
    app.command()(report)
