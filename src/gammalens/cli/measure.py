"""``gammalens measure``, ``sinks`` and ``verify``: measure a model, measure its sinks, re-run a run's receipt."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from gammalens.cli import options as opt
from gammalens.cli.failure import ctrl_c_is_an_error, stage


def measure(
    model: opt.ModelArg = None,
    gguf_file: opt.GgufFile = None,
    corpus: opt.Corpus = "stdlib",
    context: opt.Context = None,
    windows: opt.Windows = 16,
    sink_tokens: opt.SinkTokens = 1,
    fit_range: opt.FitRange = None,
    dtype: opt.Dtype = "fp32",
    device: opt.Device = "cpu",
    batch_size: opt.BatchSize = 4,
    chunk_size: opt.ChunkSize = None,
    backend: Annotated[str, typer.Option(help="Probe: chunked (exact, any device), triton (fused kernel, CUDA; "
                                         "pip install 'gammalens[triton]') or auto (triton on CUDA when "
                                         "installed).")] = "auto",
    bootstrap: opt.Bootstrap = 200,
    out: opt.Out = Path("runs"),
    profile_layout: opt.ProfileLayout = "auto",
    seed: opt.Seed = 0,
    allow_extrapolation: opt.AllowExtrapolation = False,
    eps: opt.Eps = 0.05,
    estimator: Annotated[str, typer.Option(help="null: our null-corrected estimator; taf: also the book's estimator "
                                           "(tafagent diagnose_model.py: last query on key 49 in windows of d + 50, "
                                           "OLS of ln A on ln d), next to ours in the summary, manifest and atlas "
                                           "(docs/taf_estimator.md).")] = "null",
    taf_windows: Annotated[int, typer.Option(help="With --estimator taf: windows per distance d.")] = 30,
    taf_max_distance: Annotated[int | None, typer.Option(help="With --estimator taf: largest d of 10, 20, 30, 50, "
                                                         "100, 200, 500, 1000, 2000. Default: all that fit the "
                                                         "model's positions.")] = None,
    taf_fit_min_distance: Annotated[int | None, typer.Option(help="With --estimator taf: smallest d in its fit (the "
                                                             "book's atlas rows: 30). Default: all.")] = None,
    retrieval: Annotated[bool, typer.Option(help="Also measure each head's retrieval scores: echo and induction "
                                            "attention on random tokens repeated twice, and far mass from the "
                                            "profile; added to fits.csv (docs/retrieval.md).")] = False,
    retrieval_length: Annotated[int, typer.Option(help="With --retrieval: tokens of the random sequence (the input "
                                                  "holds it twice, after the BOS).")] = 256,
    retrieval_sequences: Annotated[int, typer.Option(help="With --retrieval: random sequences averaged over.")] = 8,
    retrieval_skip: Annotated[int, typer.Option(help="With --retrieval: second-copy queries left out at the copy's "
                                                "start.")] = 4,
    retrieval_far_distance: Annotated[int | None, typer.Option(help="With --retrieval: far mass is the share of "
                                                               "non-sink mass beyond this distance. Default: "
                                                               "context/2.")] = None,
    atlas: opt.AtlasFile = None,
    no_atlas: opt.NoAtlas = False,
    no_report: opt.NoReport = False,
    quiet: opt.Quiet = False,
    as_json: opt.AsJson = False,
) -> None:
    """Measure per-head γ, sink mass and phase of MODEL on a corpus; write a run directory."""

    from gammalens.claims.links import links_for_run
    from gammalens.cli.summary import print_summary
    from gammalens.measuring.pipeline import measure as run_measure
    from gammalens.publish import publish, run_writer
    from gammalens.retrieval import RetrievalConfig

    config = opt.measure_config(locals())  # every MeasureConfig field is a flag of the same name
    # checked whether or not --retrieval is given: a nonsense value is refused, never silently unused
    retrieval_config = RetrievalConfig(length=retrieval_length, sequences=retrieval_sequences, skip=retrieval_skip,
                                       far_distance=retrieval_far_distance)
    with ctrl_c_is_an_error(one_run=True):  # publish marks the run's stages (measured … recorded); "done" here
        writer = run_writer(out)  # checks writability before any work; the folder is made when the run is written
        progress = not (quiet or as_json)
        if retrieval:
            from gammalens.retrieval.run import measure_with_retrieval

            measured = measure_with_retrieval(config, retrieval_config, progress=progress)
        else:
            measured = run_measure(config=config, progress=progress)
        result = publish(measured, writer, report=not no_report, record=not no_atlas, atlas=atlas,
                         claim_links=links_for_run)
        if as_json:
            import json

            from gammalens.cli.summary import summary_dict

            print(json.dumps(summary_dict(result), indent=2, ensure_ascii=False))
        elif quiet:
            print(result.run_dir)
        else:
            print_summary(result)
        stage("done")


def sinks(
    model: opt.ModelArg = None,
    gguf_file: opt.GgufFile = None,
    corpus: opt.Corpus = "stdlib",
    context: opt.Context = None,
    windows: opt.Windows = 16,
    sink_tokens: opt.SinkTokens = 1,
    ablate_massive: Annotated[str, typer.Option(help="The causal test: ablate massive activations where they "
                                                "arise by setting them to zero or to their mean, and re-measure "
                                                "sinks and γ; 'none' skips it.")] = "zero",
    massive_abs: Annotated[float, typer.Option(help="A massive activation has |value| ≥ this (Sun et al. 2024: "
                                               "100).")] = 100.0,
    massive_ratio: Annotated[float, typer.Option(help="… and ≥ this multiple of the layer's median |value| "
                                                 "(Sun et al.: 1000).")] = 1000.0,
    sink_eps: Annotated[float, typer.Option(help="A head sinks when the first token's mean attention exceeds ε "
                                            "(Gu et al. 2024: 0.3); the sink rate is the fraction of such "
                                            "heads.")] = 0.3,
    bos_variant: Annotated[bool, typer.Option(help="Also measure the windows without the BOS (or with one, for a "
                                              "tokenizer that adds none).")] = True,
    heads: Annotated[int, typer.Option(help="Rows of the per-head table, strongest sinks first (0: all).")] = 12,
    fit_range: opt.FitRange = None,
    dtype: opt.Dtype = "fp32",
    device: opt.Device = "cpu",
    batch_size: opt.BatchSize = 4,
    chunk_size: opt.ChunkSize = None,
    bootstrap: opt.Bootstrap = 200,
    out: opt.Out = Path("runs"),
    profile_layout: opt.ProfileLayout = "auto",
    seed: opt.Seed = 0,
    allow_extrapolation: opt.AllowExtrapolation = False,
    eps: opt.Eps = 0.05,
    atlas: opt.AtlasFile = None,
    no_atlas: opt.NoAtlas = False,
    no_report: opt.NoReport = False,
    quiet: opt.Quiet = False,
    as_json: opt.AsJson = False,
) -> None:
    """Sinks per head (mass on the first tokens, sink rate, sink token, with and without BOS), massive
    activations, and the causal test: ablate them and re-measure sinks and γ."""
    from gammalens.claims.links import links_for_run
    from gammalens.publish import publish_sinks, run_writer
    from gammalens.sinks.run import SinkConfig, measure_sinks

    config = opt.measure_config(locals())  # the measurement's flags are measure's, defined once
    sink_config = SinkConfig(eps=sink_eps, massive_abs=massive_abs, massive_ratio=massive_ratio,
                             ablate=ablate_massive, bos_variant=bos_variant)
    with ctrl_c_is_an_error(one_run=True):  # publish marks the run's stages (measured … recorded); "done" here
        writer = run_writer(out)
        result = publish_sinks(measure_sinks(config=config, sinks=sink_config, progress=not (quiet or as_json)),
                               writer, report=not no_report, record=not no_atlas, atlas=atlas,
                               claim_links=links_for_run)
        _print_sinks(result, as_json=as_json, quiet=quiet, heads=heads, no_atlas=no_atlas, atlas=atlas,
                     sink_tokens=sink_tokens)
        stage("done")


def _print_sinks(result: Any, *, as_json: bool, quiet: bool, heads: int, no_atlas: bool, atlas: Path | None,
                 sink_tokens: int) -> None:
    if as_json:
        import json

        from gammalens.sinks.console import sinks_summary

        print(json.dumps(sinks_summary(result), indent=2, ensure_ascii=False))
        return
    if quiet:
        print(result.run_dir)
        return
    from gammalens.atlas.sink_gamma import across_models
    from gammalens.sinks.console import print_sinks

    models = None
    if not no_atlas:
        from gammalens.atlas import AtlasError

        with contextlib.suppress(AtlasError):
            models = across_models(atlas, sink_tokens=sink_tokens)[0]
    print_sinks(result, heads=heads, models=models)


def verify(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `gammalens measure`.")],
    tolerance: Annotated[float, typer.Option(help="Largest accepted |Δγ| per head and for the model.")] = 1e-3,
) -> None:
    """Re-run a measurement from its manifest and check that γ matches: the run's receipt."""
    from gammalens.measuring.verify import print_verdict, verify_run

    with ctrl_c_is_an_error():
        verdict = verify_run(run_dir, tolerance=tolerance)
    print_verdict(verdict)
    if not verdict.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``measure``, ``sinks`` and ``verify`` to APP."""
    app.command()(measure)
    app.command()(sinks)
    app.command()(verify)
