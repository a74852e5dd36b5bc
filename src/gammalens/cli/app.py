"""The ``gammalens`` command: one entry point; each subcommand maps onto a module.

Every :class:`~gammalens.errors.GammalensError` (bad input) becomes one line on stderr and exit code 2;
Ctrl-C too, after the run in progress has removed its partial output.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from gammalens import cli_options as opt
from gammalens.errors import GammalensError

app = typer.Typer(
    name="gammalens",
    help="Measure how attention decays with query–key distance (A(d) ∝ d^-γ), exactly, with receipts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
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
    atlas: opt.AtlasFile = None,
    no_atlas: opt.NoAtlas = False,
    no_report: opt.NoReport = False,
    quiet: opt.Quiet = False,
    as_json: opt.AsJson = False,
) -> None:
    """Measure per-head γ, sink mass and phase of MODEL on a corpus; write a run directory."""

    from gammalens.measurement import measure as run_measure
    from gammalens.summary import print_summary

    config = opt.measure_config(locals())  # every MeasureConfig field is a flag of the same name
    with _ctrl_c_is_an_error():
        result = run_measure(config=config, out=out, progress=not (quiet or as_json), report=not no_report,
                             record=not no_atlas, atlas=atlas)
    if as_json:
        import json

        from gammalens.summary import summary_dict

        print(json.dumps(summary_dict(result), indent=2, ensure_ascii=False))
    elif quiet:
        print(result.run_dir)
    else:
        print_summary(result)


@app.command()
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
    from gammalens.sinks.run import SinkConfig, measure_sinks

    config = opt.measure_config(locals())  # the measurement's flags are measure's, defined once
    sink_config = SinkConfig(eps=sink_eps, massive_abs=massive_abs, massive_ratio=massive_ratio,
                             ablate=ablate_massive, bos_variant=bos_variant)
    with _ctrl_c_is_an_error():
        result = measure_sinks(config=config, sinks=sink_config, out=out, progress=not (quiet or as_json),
                               report=not no_report, record=not no_atlas, atlas=atlas)
    if as_json:
        import json

        from gammalens.sinks.console import sinks_summary

        print(json.dumps(sinks_summary(result), indent=2, ensure_ascii=False))
        return
    if quiet:
        print(result.run_dir)
        return
    from gammalens.sinks.console import print_sinks
    from gammalens.sinks.correlation import across_models

    models = None
    if not no_atlas:
        from gammalens.atlas import AtlasError

        with contextlib.suppress(AtlasError):
            models = across_models(atlas, sink_tokens=sink_tokens)[0]
    print_sinks(result, heads=heads, models=models)


@app.command()
def verify(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `gammalens measure`.")],
    tolerance: Annotated[float, typer.Option(help="Largest accepted |Δγ| per head and for the model.")] = 1e-3,
) -> None:
    """Re-run a measurement from its manifest and check that γ matches: the run's receipt."""
    from gammalens.verify import print_verdict, verify_run

    with _ctrl_c_is_an_error():
        verdict = verify_run(run_dir, tolerance=tolerance)
    print_verdict(verdict)
    if not verdict.ok:
        raise typer.Exit(1)


@contextlib.contextmanager
def _ctrl_c_is_an_error() -> Iterator[None]:
    """Turn Ctrl-C into a GammalensError here: click would otherwise swallow it in non-standalone mode."""
    try:
        yield
    except KeyboardInterrupt:
        raise GammalensError("interrupted; no partial output was left behind") from None


@app.command()
def card(
    model: Annotated[str, typer.Argument(help="A config.json, a directory holding one, or a hub id (online).")],
    context: Annotated[int | None, typer.Option(help="Context length T in tokens. Default: the config's "
                                                "max_position_embeddings.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Weights dtype: fp32, bf16, fp16, fp8, int8 or int4. "
                                              "Default: the config's torch_dtype, else bf16.")] = None,
    kv_dtype: Annotated[str | None, typer.Option(help="KV-cache dtype. Default: the weights dtype.")] = None,
    batch: Annotated[int, typer.Option(help="Sequences held in the KV cache at once.")] = 1,
    gpu_mem: Annotated[float, typer.Option(help="GPU memory in GiB.")] = 80.0,
    activation_gib: Annotated[float | None, typer.Option(help="Memory kept for activations, CUDA context and "
                                                         "fragmentation, in GiB. Default: 10% of --gpu-mem.")] = None,
    eps: Annotated[float, typer.Option(help="Mass fraction outside the predicted KV window D_f.")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print the card as JSON.")] = False,
) -> None:
    """Predict from a config alone: attention type, RoPE scales, γ_Padé, regime, KV cache and GPU fit."""
    import json

    from gammalens.card.config_card import build_card, render

    with _ctrl_c_is_an_error():
        result = build_card(model, context=context, dtype=dtype, kv_dtype=kv_dtype, batch=batch,
                            gpu_mem_gib=gpu_mem, activation_gib=activation_gib, eps=eps)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        render(result)


atlas_app = typer.Typer(name="atlas", help="The atlas: every recorded run, the published γ atlas, comparisons, "
                        "sharing.", no_args_is_help=True)
app.add_typer(atlas_app, name="atlas")

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


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more run directories written by `gammalens measure`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path("report.html"),
    atlas: Annotated[Path | None, typer.Option("--atlas", help="Atlas whose reference rows go on the atlas map. "
                                               "Default: the default atlas, when there is one.")] = None,
) -> None:
    """Write one self-contained HTML report (opens offline) of one or several runs."""
    from gammalens.atlas.store import default_atlas_path
    from gammalens.report import write_report

    if atlas is None and default_atlas_path().is_file():
        path = write_report(run_dirs, output, atlas=default_atlas_path(), atlas_required=False)
    else:
        path = write_report(run_dirs, output, atlas=atlas)
    print(path)


zoo_app = typer.Typer(name="zoo", help="The zoo: small RoPE models trained here on stdlib text (θ × T grid), "
                      "measured against γ_Padé and our kernel predictor.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise GammalensError(f"expected comma-separated numbers, e.g. 1e2,1e4 (got {text!r})") from None


@zoo_app.command("train")
def zoo_train(
    out: Annotated[Path, typer.Option(help="Output folder: tokenizer/, heldout/, one model directory per grid point.")]
    = Path("zoo"),
    thetas: Annotated[str, typer.Option(help="RoPE bases θ, comma-separated.")] = "1e2,1e3,1e4,1e5,1e6",
    contexts: Annotated[str, typer.Option(help="Training contexts T (tokens), comma-separated.")] = "128,512",
    steps: Annotated[int, typer.Option(help="Optimizer steps per model.")] = 400,
    tokens_per_step: Annotated[int, typer.Option(help="Stream tokens per step (a multiple of 512).")] = 2048,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 3e-3,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and of the data order.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    threads: Annotated[int, typer.Option(help="CPU threads for torch.")] = 1,
    force: Annotated[bool, typer.Option(help="Retrain models already trained with the same settings.")] = False,
) -> None:
    """Train the zoo: a BPE tokenizer and one small Llama per (θ, T), same data, seed, size and steps."""
    from gammalens.zoo.grid import GridConfig, train_grid
    from gammalens.zoo.train import TrainConfig

    base = TrainConfig(steps=steps, tokens_per_step=tokens_per_step, lr=lr, seed=seed, device=device,
                       threads=threads)
    cfg = GridConfig(out=out, thetas=_floats(thetas), contexts=tuple(int(t) for t in _floats(contexts)), base=base,
                     force=force)
    with _ctrl_c_is_an_error():
        train_grid(cfg)


@zoo_app.command("measure")
def zoo_measure(
    zoo: Annotated[Path, typer.Option(help="Folder written by `gammalens zoo train`.")] = Path("zoo"),
    docs: Annotated[Path, typer.Option(help="Where zoo.md, zoo.csv and zoo_layers.csv are written.")] = Path("docs"),
    windows: Annotated[int, typer.Option(help="Windows per measurement.")] = 16,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CI.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of windows, random tokens and bootstrap.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    runs: Annotated[Path | None, typer.Option(help="Write run directories here (needed for --atlas).")] = None,
    atlas: Annotated[Path | None, typer.Option(help="Record every run in this atlas.")] = None,
) -> None:
    """Measure every zoo model on held-out text and random tokens; compare γ_Padé and our predictor."""
    from gammalens.zoo.measure import ZooMeasureConfig, measure_zoo
    from gammalens.zoo.report import write_zoo_report

    cfg = ZooMeasureConfig(zoo=zoo, windows=windows, bootstrap=bootstrap, seed=seed, device=device, runs=runs,
                           atlas=atlas)
    with _ctrl_c_is_an_error():
        table = measure_zoo(cfg)
    for path in write_zoo_report(table, docs):
        print(path)


@zoo_app.command("rescale")
def zoo_rescale(
    models: Annotated[list[Path], typer.Argument(help="One or more trained zoo model directories.")],
    corpus: Annotated[str, typer.Option(help="Corpus to measure on (e.g. zoo/heldout).")] = "zoo/heldout",
    factors: Annotated[str, typer.Option(help="θ multipliers, comma-separated.")] = "0.0625,0.25,1,4,16,64,256",
    windows: Annotated[int, typer.Option(help="Windows per measurement.")] = 16,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CI.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of windows and bootstrap.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    docs: Annotated[Path, typer.Option(help="Where zoo_rescale.csv and the rescale table of zoo.md go.")]
    = Path("docs"),
    beta: Annotated[float | None, typer.Option(help="β of γ_kernel = β·S(θ, T), as calibrated by `zoo measure`.")]
    = None,
    c_weights: Annotated[float | None, typer.Option(help="c of γ_weights, as calibrated by `zoo measure`.")] = None,
) -> None:
    """The θ-rescale control: measure models with their RoPE θ multiplied at inference, weights unchanged."""
    from gammalens.zoo.report import write_rescale_report
    from gammalens.zoo.rescale import RescaleConfig, rescale_sweep

    rows = []
    with _ctrl_c_is_an_error():
        for model in models:
            rows += rescale_sweep(RescaleConfig(model=model, corpus=corpus, factors=_floats(factors), windows=windows,
                                                bootstrap=bootstrap, seed=seed, device=device, beta=beta,
                                                c_weights=c_weights))
    for path in write_rescale_report(rows, docs):
        print(path)


@app.command()
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
    from gammalens.sweep import run_sweep
    from gammalens.sweep.console import print_sweep

    with _ctrl_c_is_an_error():
        result = run_sweep(spec, dry_run=dry_run, progress=not quiet, executor=executor, address=address,
                           max_parallel=max_parallel)
    print_sweep(result)
    if result.failed:
        raise typer.Exit(1)


from gammalens.claims.commands import claims_app  # noqa: E402  (the ledger of claims; its own module)

app.add_typer(claims_app, name="claims")

from gammalens.grok.cli import grok_app  # noqa: E402  (grokking early warning; its own module)

app.add_typer(grok_app, name="grok")

from gammalens.kv.cli import kv_app  # noqa: E402  (KV plans, the γ-window cache; its own package)

app.add_typer(kv_app, name="kv")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app; every failure the user can act on (bad input, a usage error,
    Ctrl-C or SIGTERM, a full disk) becomes one line on stderr and exit code 2 (:mod:`gammalens.failure`)."""
    from gammalens.failure import clean_exit

    with clean_exit():
        try:
            # non-standalone click returns typer.Exit's code; the name in usage hints is always `gammalens`
            rc = app(args=argv, prog_name="gammalens", standalone_mode=False)
        except typer.Exit as ex:
            rc = ex.exit_code
        sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
