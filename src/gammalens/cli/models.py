"""``gammalens models``: the model catalog — each short name, whether it is installed, its size, license and install command."""

from __future__ import annotations

from typing import Annotated

import typer


def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalog as JSON.")] = False,
) -> None:
    """List the model catalog: short names of real pretrained models, installed or not, and how to install each."""
    import json

    from gammalens.model.catalog import catalog

    rows = []
    for e in catalog():
        files = e.installed_parts() if e.kind != "embedded" else []
        size = e.size if e.size is not None else (sum(f.stat().st_size for f in files if f is not None and f.is_file())
                                                  or None)
        status = ("unavailable" if e.unavailable else "installed" if e.installed()
                  else f"{sum(f is not None for f in files)}/{len(files)} parts" if e.split and any(files)
                  else "not installed")
        rows.append({"name": e.name, "model": e.model, "arch": e.arch, "parameters": e.parameters, "status": status,
                     "size_bytes": size, "parts": len(e.parts), "license": e.license,
                     "install": e.unavailable or e.install})
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    from rich.table import Table

    from gammalens.terminal import console

    table = Table(title="model catalog (gammalens measure NAME)", title_justify="left")
    for col in ("name", "model", "arch", "params", "status", "size", "license"):
        table.add_column(col, justify="right" if col in ("params", "size") else "left")
    for r in rows:
        size = f"{r['size_bytes'] / 2**20:,.0f} MiB" if r["size_bytes"] else "—"
        table.add_row(r["name"], r["model"], r["arch"], r["parameters"], r["status"], size, r["license"])
    out = console()
    out.print(table)
    for r in rows:
        if r["status"] not in ("installed",):
            out.print(f"{r['name']}: {r['install']}", soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``models`` to APP."""
    app.command()(models)
