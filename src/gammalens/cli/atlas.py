"""``gammalens atlas``: list, show, compare, record, import-taf, export, import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

atlas_app = typer.Typer(name="atlas", help="The atlas: every recorded run, the published γ atlas, comparisons, "
                        "sharing.", no_args_is_help=True)

AtlasPath = Annotated[Path | None, typer.Option("--atlas", help="Atlas file. Default: $GAMMALENS_ATLAS, else "
                                                "~/.local/share/gammalens/atlas.duckdb.")]
Family = Annotated[str | None, typer.Option(help="Only this family (the name's leading word, e.g. pythia) or "
                                            "model_type (e.g. llama).")]
Theta = Annotated[str | None, typer.Option(help="Only this RoPE base θ (1e4) or range (1e4:1e6, :1e5, 5e5:).")]
Corpus = Annotated[str | None, typer.Option(help="Only this corpus (e.g. stdlib, mongo, random).")]


@atlas_app.command("list")
def atlas_list(
    atlas: AtlasPath = None, family: Family = None, theta: Theta = None, corpus: Corpus = None,
    reference: Annotated[bool, typer.Option(help="Include the published reference rows.")] = True,
) -> None:
    """List the measured runs (and reference rows) with their model-level γ, phase counts and flags."""
    from gammalens.atlas.compare import list_entries, parse_theta
    from gammalens.atlas.console import print_entries

    entries = list_entries(atlas, family=family, theta=parse_theta(theta), corpus=corpus, reference=reference)
    print_entries(entries, "Atlas")


@atlas_app.command("show")
def atlas_show(
    model: Annotated[str, typer.Argument(help="A model id (e.g. EleutherAI/pythia-70m or pythia-70m) or a run id.")],
    atlas: AtlasPath = None, corpus: Corpus = None,
) -> None:
    """Show one model: its runs and reference rows, and per-layer γ, phases, sink mass and fit quality."""
    from gammalens.atlas.compare import layer_table, select
    from gammalens.atlas.console import print_entries, print_layers

    print_entries(select(model, atlas, corpus=corpus), model)
    layers = layer_table(model, atlas, corpus=corpus)
    if len(layers):
        print_layers(layers, "Per layer")


@atlas_app.command("compare")
def atlas_compare(
    models: Annotated[list[str], typer.Argument(help="Two or more model ids or run ids.")],
    atlas: AtlasPath = None, family: Family = None, theta: Theta = None, corpus: Corpus = None,
) -> None:
    """Compare models side by side: per-layer γ, phase counts, sink mass, fit quality, predicted vs measured."""
    from gammalens.atlas.compare import compare, parse_theta
    from gammalens.atlas.console import print_comparison

    print_comparison(compare(models, atlas, family=family, theta=parse_theta(theta), corpus=corpus))


@atlas_app.command("record")
def atlas_record(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories written by `gammalens measure`.")],
    atlas: AtlasPath = None,
) -> None:
    """Record run directories (e.g. measured with --no-atlas) in the atlas; recording twice is harmless."""
    from gammalens.atlas.record import record_run

    for run_dir in run_dirs:
        print(f"recorded {record_run(run_dir, atlas)}")


@atlas_app.command("import-taf")
def atlas_import_taf(
    file: Annotated[Path | None, typer.Argument(help="The book's published γ atlas (taf_gamma_atlas.csv). "
                                                "Default: the copy shipped with gammalens.")] = None,
    atlas: AtlasPath = None,
) -> None:
    """Import the published γ atlas (How Transformers Attend) as reference rows with their provenance."""
    from gammalens.atlas.taf import TAF_FILE, import_taf

    added = import_taf(file, atlas)
    print(f"imported {added} new reference rows from {file or TAF_FILE.name + ' (shipped with gammalens)'}")


@atlas_app.command("export")
def atlas_export(
    target: Annotated[Path, typer.Argument(help="Directory to write: Parquet files plus a dataset card.")],
    atlas: AtlasPath = None,
    force: Annotated[bool, typer.Option(help="Replace an earlier export at TARGET.")] = False,
) -> None:
    """Export the atlas as Parquet files with a dataset card (loads with datasets.load_dataset)."""
    from gammalens.atlas.exchange import export_atlas

    counts = export_atlas(target, atlas, force=force)
    print(f"exported {counts['runs']} runs, {counts['reference_fits']} reference rows to {target}")


@atlas_app.command("import")
def atlas_import(
    source: Annotated[Path, typer.Argument(help="A directory written by `gammalens atlas export`.")],
    atlas: AtlasPath = None,
) -> None:
    """Merge an exported atlas into this one (runs already present are kept as they are)."""
    from gammalens.atlas.exchange import import_atlas

    added = import_atlas(source, atlas)
    print(f"added {added['runs']} runs, {added['models']} models, {added['reference_fits']} reference rows "
          f"from {source}")


def register(app: typer.Typer) -> None:
    """Add the ``atlas`` group to APP."""
    app.add_typer(atlas_app, name="atlas")
