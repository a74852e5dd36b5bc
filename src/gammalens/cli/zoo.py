"""``gammalens zoo``: train, measure, rescale.

Every count, size and positive quantity is checked by its option (typer's ``min=``, or
:func:`~gammalens.cli.options.within` for a bound that excludes 0); the comma-separated lists by :func:`_numbers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gammalens.cli import options as opt
from gammalens.cli.failure import ctrl_c_is_an_error
from gammalens.cli.options import within
from gammalens.errors import GammalensError

zoo_app = typer.Typer(name="zoo", help="The zoo: small RoPE models trained here on stdlib text (θ × T grid), "
                      "measured against γ_Padé and our kernel predictor.", no_args_is_help=True)

# shared by `zoo measure` and `zoo rescale`
Windows = Annotated[int, typer.Option(min=1, help="Windows per measurement.")]
Bootstrap = Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the 95% CI (0: no CI).")]
Seed = Annotated[int, typer.Option(min=0, help="Seed of windows, random tokens and bootstrap.")]


def _numbers(text: str, flag: str, *, integers: bool = False) -> tuple[float, ...]:
    """The positive numbers of a comma-separated list (whole numbers with ``integers``), else one line naming FLAG."""
    kind = "whole numbers" if integers else "numbers"
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = None
    if values is None or any(not (v > 0 and v != float("inf")) or (integers and v != int(v)) for v in values):
        example = "128,512" if integers else "1e2,1e4"
        raise GammalensError(f"{flag} expects comma-separated positive {kind}, e.g. {example} (got {text!r})")
    return values


@zoo_app.command("train")
def zoo_train(
    out: Annotated[Path, typer.Option(help="Output folder: tokenizer/, heldout/, one model directory per grid point.")]
    = Path("zoo"),
    thetas: Annotated[str, typer.Option(help="RoPE bases θ, comma-separated.")] = "1e2,1e3,1e4,1e5,1e6",
    contexts: Annotated[str, typer.Option(help="Training contexts T (tokens), comma-separated.")] = "128,512",
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps per model.")] = 400,
    tokens_per_step: Annotated[int, typer.Option(min=1, help="Stream tokens per step (a multiple of 512).")] = 2048,
    lr: Annotated[float, typer.Option(callback=within(0, low_open=True), help="Peak AdamW learning rate (> 0).")]
    = 3e-3,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the initial weights and of the data order.")] = 0,
    device: opt.TorchDevice = "cpu",
    threads: opt.Threads = 1,
    force: Annotated[bool, typer.Option(help="Retrain models already trained with the same settings.")] = False,
) -> None:
    """Train the zoo: a BPE tokenizer and one small Llama per (θ, T), same data, seed, size and steps."""
    from gammalens.zoo.grid import GridConfig, train_grid
    from gammalens.zoo.train import TrainConfig

    base = TrainConfig(steps=steps, tokens_per_step=tokens_per_step, lr=lr, seed=seed, device=device,
                       threads=threads)
    cfg = GridConfig(out=out, thetas=_numbers(thetas, "--thetas"),
                     contexts=tuple(int(t) for t in _numbers(contexts, "--contexts", integers=True)), base=base,
                     force=force)
    cfg.points()  # every grid point's TrainConfig checks itself (θ > 1, T ≥ 8 …) before the tokenizer is trained
    with ctrl_c_is_an_error():
        train_grid(cfg)


@zoo_app.command("measure")
def zoo_measure(
    zoo: Annotated[Path, typer.Option(help="Folder written by `gammalens zoo train`.")] = Path("zoo"),
    docs: Annotated[Path, typer.Option(help="Where zoo.md, zoo.csv and zoo_layers.csv are written.")] = Path("docs"),
    windows: Windows = 16,
    bootstrap: Bootstrap = 200,
    seed: Seed = 0,
    device: opt.TorchDevice = "cpu",
    runs: Annotated[Path | None, typer.Option(help="Write run directories here (needed for --atlas).")] = None,
    atlas: Annotated[Path | None, typer.Option(help="Record every run in this atlas.")] = None,
) -> None:
    """Measure every zoo model on held-out text and random tokens; compare γ_Padé and our predictor."""
    from gammalens.zoo.measure import ZooMeasureConfig, measure_zoo
    from gammalens.zoo.report import write_zoo_report

    cfg = ZooMeasureConfig(zoo=zoo, windows=windows, bootstrap=bootstrap, seed=seed, device=device, runs=runs,
                           atlas=atlas)
    with ctrl_c_is_an_error():
        table = measure_zoo(cfg)
    for path in write_zoo_report(table, docs):
        print(path)


@zoo_app.command("rescale")
def zoo_rescale(
    models: Annotated[list[Path], typer.Argument(help="One or more trained zoo model directories.")],
    corpus: Annotated[str, typer.Option(help="Corpus to measure on (e.g. zoo/heldout).")] = "zoo/heldout",
    factors: Annotated[str, typer.Option(help="θ multipliers, comma-separated.")] = "0.0625,0.25,1,4,16,64,256",
    windows: Windows = 16,
    bootstrap: Bootstrap = 200,
    seed: Annotated[int, typer.Option(min=0, help="Seed of windows and bootstrap.")] = 0,
    device: opt.TorchDevice = "cpu",
    docs: Annotated[Path, typer.Option(help="Where zoo_rescale.csv and the rescale table of zoo.md go.")]
    = Path("docs"),
    beta: Annotated[float | None, typer.Option(callback=within(0, low_open=True),
                                               help="β of γ_kernel = β·S(θ, T), as calibrated by `zoo measure` (> 0).")]
    = None,
    c_weights: Annotated[float | None, typer.Option(callback=within(0, low_open=True),
                                                    help="c of γ_weights, as calibrated by `zoo measure` (> 0).")]
    = None,
) -> None:
    """The θ-rescale control: measure models with their RoPE θ multiplied at inference, weights unchanged."""
    from gammalens.zoo.report import write_rescale_report
    from gammalens.zoo.rescale import RescaleConfig, rescale_sweep

    configs = [RescaleConfig(model=model, corpus=corpus, factors=_numbers(factors, "--factors"), windows=windows,
                             bootstrap=bootstrap, seed=seed, device=device, beta=beta, c_weights=c_weights)
               for model in models]
    rows = []
    with ctrl_c_is_an_error():
        for config in configs:
            rows += rescale_sweep(config)
    for path in write_rescale_report(rows, docs):
        print(path)


def register(app: typer.Typer) -> None:
    """Add the ``zoo`` group to APP."""
    app.add_typer(zoo_app, name="zoo")
